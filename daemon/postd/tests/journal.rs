//! Journal entries and retention copies written by telempostd (§6).

use std::time::Duration;

use libtelemetry::journal::{append_journal, write_retention_copy, JournalEntry};
use libtelemetry::status::now_secs;
use telemetrics_tests::collector::Collector;

use super::*;

const BOOT_ID: &str = "23156fd8-5386-4bfa-ae58-eb2136e72a04";

#[test]
fn journal_and_retention_contents() {
    let c = Collector::start();
    let mut root = root_for(&c, "/v2/collector");
    root.set("record_retention_enabled", "true");
    let before = now_secs();
    for i in 0..3 {
        stage(&root, i, Duration::from_secs(10 - i as u64));
    }
    let _d = spawn(&root);
    assert!(c.wait_for(3, SOON));
    assert!(wait_until(SOON, || journal(&root).len() == 3));
    let text = std::fs::read_to_string(root.paths.journal_file()).unwrap();
    assert_eq!(text.lines().count(), 3);
    let mut seen = Vec::new();
    for e in journal(&root) {
        let i = index_of(&e.classification);
        seen.push(i);
        let rec = record(i);
        assert_eq!(e.classification, format!("org.test/postd/r{i}"));
        assert_eq!(e.event_id, rec.headers.0[14]);
        assert_eq!(e.boot_id, BOOT_ID);
        assert!(
            e.timestamp >= before && e.timestamp <= now_secs(),
            "processing time"
        );
        assert_eq!(e.record_id.len(), 32);
        assert!(text.contains(&e.to_line()), "RS-separated line");
        let copy = root.paths.records_dir().join(&e.record_id);
        assert_eq!(
            std::fs::read(copy).unwrap(),
            format!("record {i}\nline \"two\"\t/\n\n").into_bytes(),
            "body + '\\n', as the C daemon wrote it"
        );
    }
    seen.sort();
    assert_eq!(seen, [0, 1, 2]);
}

#[test]
fn journal_is_pruned_with_its_retention_copies() {
    let c = Collector::start();
    let mut root = root_for(&c, "/v2/collector");
    root.set("record_retention_enabled", "true");
    let records = root.paths.records_dir();
    let old: Vec<JournalEntry> = (0..150)
        .map(|i| {
            JournalEntry::new(
                format!("{i:032x}"),
                1520054957,
                "t/t/t",
                "3bc17766547776eb7fc478eb0eb43e43",
                BOOT_ID,
            )
            .unwrap()
        })
        .collect();
    for e in &old {
        write_retention_copy(&records, &e.record_id, b"old\n").unwrap();
    }
    append_journal(&root.paths.journal_file(), &old, None).unwrap();
    stage(&root, 0, Duration::ZERO);
    let _d = spawn(&root);
    assert!(c.wait_for(1, SOON));
    assert!(wait_until(SOON, || journal(&root).len() == 100));
    let j = journal(&root);
    assert_eq!(j[0], old[51], "the oldest 51 entries were pruned");
    assert_eq!(j[99].classification, "org.test/postd/r0");
    let copies = || {
        let mut v: Vec<String> = std::fs::read_dir(&records)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let mut expected: Vec<String> = j.iter().map(|e| e.record_id.clone()).collect();
    expected.sort();
    // The copies go right after the journal is replaced.
    wait_until(SOON, || copies() == expected);
    assert_eq!(copies(), expected, "copies pruned with their entries");
}
