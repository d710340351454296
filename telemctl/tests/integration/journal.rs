//! `telemctl journal`: byte-identical to the C telem_journal (§6.4), plus the additions.

use libtelemetry::journal::JournalEntry;
use telemetrics_tests::TestRoot;

use crate::common::{run, telemctl};

const BOOT: &str = "23156fd8-5386-4bfa-ae58-eb2136e72a04";
const OTHER_BOOT: &str = "0e0ff0a4-68f1-4ab1-8c2b-1a2c3d4e5f60";
const RID: &str = "57b918ce6644c4b2ab11a25310871fb8";
const EID: &str = "5de9de8d5f3c6a7d445d75ba01cc3322";

/// The header line of `-V`, with its padding spaces.
const HEADER: &str = "Classification                 Time stamp                  Record ID                        Event ID                         Boot ID                             \n";

fn entry(rid: &str, ts: i64, class: &str, eid: &str, boot: &str) -> JournalEntry {
    JournalEntry::new(rid.into(), ts, class, eid, boot).unwrap()
}

fn rid(i: usize) -> String {
    format!("{i:032x}")
}

fn write_journal(root: &TestRoot, entries: &[JournalEntry], extra: &str) {
    let mut text: String = entries.iter().map(|e| e.to_line()).collect();
    text.push_str(extra);
    std::fs::create_dir_all(root.paths.log_dir()).unwrap();
    std::fs::write(root.paths.journal_file(), text).unwrap();
}

/// `strftime("%a %Y-%m-%d %H:%M:%S %Z")` in UTC, computed independently of the C library.
fn utc(t: i64) -> String {
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
        [t.div_euclid(86_400).rem_euclid(7) as usize];
    format!("{weekday} {}", telemetrics_tests::collector::utc_text(t))
}

#[test]
fn utc_oracle() {
    assert_eq!(utc(1522691281), "Mon 2018-04-02 17:48:01 UTC");
    assert_eq!(utc(0), "Thu 1970-01-01 00:00:00 UTC");
}

/// `telemctl journal <args>` with `env` must exit 0 and print exactly `expected`.
fn check(root: &TestRoot, args: &[&str], expected: &str) {
    check_env(root, args, &[], expected)
}

fn check_env(root: &TestRoot, args: &[&str], env: &[(&str, &str)], expected: &str) {
    let mut c = telemctl(root);
    c.arg("journal").args(args).envs(env.iter().copied());
    let r = run(c);
    assert_eq!(r.code, 0, "journal {args:?}: stderr {}", r.stderr);
    assert_eq!(r.stdout, expected, "journal {args:?}");
}

#[test]
fn spec_example_is_byte_identical() {
    let root = TestRoot::new();
    write_journal(
        &root,
        &[entry(
            RID,
            1522691281,
            "org.clearlinux/hello/world",
            EID,
            BOOT,
        )],
        "",
    );
    let line =
        format!("org.clearlinux/hello/world     Mon 2018-04-02 17:48:01 UTC {RID} {EID} {BOOT}\n");
    check(&root, &[], &line);
    check(&root, &["-V"], &format!("{HEADER}{line}Total records: 1\n"));
    check(
        &root,
        &["--verbose"],
        &format!("{HEADER}{line}Total records: 1\n"),
    );
    // Local time follows TZ (a POSIX TZ string needs no zone database).
    check_env(
        &root,
        &[],
        &[("TZ", "ABC-2")],
        &format!("org.clearlinux/hello/world     Mon 2018-04-02 19:48:01 ABC {RID} {EID} {BOOT}\n"),
    );
    // No match still exits 0.
    check(
        &root,
        &["-V", "-r", "0"],
        &format!("{HEADER}Total records: 0\n"),
    );
}

#[test]
fn filters_combine_and_only_the_last_100_lines_count() {
    let root = TestRoot::new();
    let mut entries = Vec::new();
    for i in 0..120 {
        let class = match i % 3 {
            0 => "org.clearlinux/crash/clr",
            1 => "org.clearlinux/crash/unknown",
            _ => "org.clearlinux/hello/world",
        };
        let boot = if i < 110 { BOOT } else { OTHER_BOOT };
        let eid = if i == 115 {
            "ffffffffffffffffffffffffffffffff"
        } else {
            EID
        };
        entries.push(entry(
            &rid(i),
            1_600_000_000 + i as i64 * 60,
            class,
            eid,
            boot,
        ));
    }
    // Malformed lines are skipped, never fatal.
    write_journal(&root, &entries, "garbage\nnot\u{1e}a\u{1e}line\n");
    let line = |i: usize| {
        let e = &entries[i];
        let t = 1_600_000_000 + i as i64 * 60;
        let time = utc(t);
        format!(
            "{:<30} {time} {} {} {}\n",
            e.classification, e.record_id, e.event_id, e.boot_id
        )
    };
    let lines = |idx: &[usize]| idx.iter().map(|&i| line(i)).collect::<String>();

    let out = run({
        let mut c = telemctl(&root);
        c.args(["journal"]);
        c
    });
    assert_eq!(out.stdout.lines().count(), 100);
    assert_eq!(
        out.stdout.lines().next().unwrap().to_string() + "\n",
        line(20)
    );

    // -r is exact; entries older than the last 100 lines are not considered (C behaviour).
    check(&root, &["-r", &rid(50)], &lines(&[50]));
    check(&root, &["-r", &rid(5)], "");
    check(&root, &["--record_id", &rid(50)], &lines(&[50]));
    check(&root, &["--record-id", &rid(50)], &lines(&[50]));
    check(
        &root,
        &["-e", "ffffffffffffffffffffffffffffffff"],
        &lines(&[115]),
    );
    check(
        &root,
        &["--event_id", "ffffffffffffffffffffffffffffffff"],
        &lines(&[115]),
    );
    check(
        &root,
        &["-b", OTHER_BOOT],
        &lines(&(110..120).collect::<Vec<_>>()),
    );
    check(
        &root,
        &["-b", OTHER_BOOT, "-c", "org.clearlinux/hello/world"],
        &lines(&[110, 113, 116, 119]),
    );
    check(
        &root,
        &["--boot_id", OTHER_BOOT, "-c", "org.clearlinux/crash/*"],
        &lines(&[111, 112, 114, 115, 117, 118]),
    );
    check(&root, &["-b", OTHER_BOOT, "-c", "org.clearlinux/crash"], "");
    check(
        &root,
        &["-b", OTHER_BOOT, "-c", "org.clearlinux/*"],
        &lines(&(110..120).collect::<Vec<_>>()),
    );
    check(
        &root,
        &["-V", "-b", OTHER_BOOT, "-c", "org.clearlinux/hello/world"],
        &format!("{HEADER}{}Total records: 4\n", lines(&[110, 113, 116, 119])),
    );
    // Additions: -n, --since/--until.
    check(&root, &["-b", OTHER_BOOT, "-n", "2"], &lines(&[118, 119]));
    check(&root, &["--lines", "1"], &lines(&[119]));
    let at = |i: usize| format!("@{}", 1_600_000_000 + i as i64 * 60);
    check(&root, &["--since", &at(117)], &lines(&[117, 118, 119]));
    check(
        &root,
        &["--since", &at(100), "--until", &at(101)],
        &lines(&[100, 101]),
    );
    check(&root, &["--until", &at(21)], &lines(&[20, 21]));
}

#[test]
fn include_record_json_and_csv() {
    let root = TestRoot::new();
    let entries = [
        entry(&rid(1), 1522691281, "org.clearlinux/hello/world", EID, BOOT),
        entry(&rid(2), 1522691341, "a/b,c/d", EID, BOOT),
    ];
    write_journal(&root, &entries, "");
    std::fs::create_dir_all(root.paths.records_dir()).unwrap();
    std::fs::write(root.paths.records_dir().join(rid(1)), "hello\n\n").unwrap();

    let l1 = format!(
        "org.clearlinux/hello/world     Mon 2018-04-02 17:48:01 UTC {} {EID} {BOOT}\n",
        rid(1)
    );
    let l2 = format!(
        "a/b,c/d                        Mon 2018-04-02 17:49:01 UTC {} {EID} {BOOT}\n",
        rid(2)
    );
    // -i copies the retained file raw; a missing one is only reported on stderr.
    let mut c = telemctl(&root);
    c.args(["journal", "-i"]);
    let r = run(c);
    assert_eq!(r.code, 0);
    assert_eq!(r.stdout, format!("{l1}hello\n\n{l2}"));
    assert!(r.stderr.contains(&rid(2)), "{}", r.stderr);

    let mut c = telemctl(&root);
    c.args(["journal", "--json", "-i"]);
    let r = run(c);
    assert_eq!(r.code, 0);
    let objs: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs.len(), 2);
    assert_eq!(objs[0]["classification"], "org.clearlinux/hello/world");
    assert_eq!(objs[0]["timestamp"], 1522691281);
    assert_eq!(objs[0]["time"], "Mon 2018-04-02 17:48:01 UTC");
    assert_eq!(objs[0]["record_id"], rid(1).as_str());
    assert_eq!(objs[0]["event_id"], EID);
    assert_eq!(objs[0]["boot_id"], BOOT);
    assert_eq!(objs[0]["record"], "hello\n\n");
    assert!(objs[1]["record"].is_null());

    check(
        &root,
        &["--csv"],
        &format!(
            "classification,timestamp,time,record_id,event_id,boot_id\n\
             org.clearlinux/hello/world,1522691281,Mon 2018-04-02 17:48:01 UTC,{},{EID},{BOOT}\n\
             \"a/b,c/d\",1522691341,Mon 2018-04-02 17:49:01 UTC,{},{EID},{BOOT}\n",
            rid(1),
            rid(2)
        ),
    );
    // Not a terminal: never colours, never a pager.
    check_env(
        &root,
        &["-V"],
        &[("TELEMCTL_PAGER", "false")],
        &format!("{HEADER}{l1}{l2}Total records: 2\n"),
    );
}

/// Piped output is the C tool's, control characters and escape sequences included (only a
/// terminal gets them replaced; see the unit tests of `journal::render`).
#[test]
fn piped_output_keeps_control_characters_raw() {
    let root = TestRoot::new();
    let class = "org.evil/\x1b]0;owned\x07/\x1b[2J\ry";
    let boot = "boot\x1b[31m\x7f";
    write_journal(&root, &[entry(RID, 1522691281, class, EID, boot)], "");
    std::fs::create_dir_all(root.paths.records_dir()).unwrap();
    std::fs::write(root.paths.records_dir().join(RID), "a\x1b[31m\r\n").unwrap();
    let line = format!("{class:<30} Mon 2018-04-02 17:48:01 UTC {RID} {EID} {boot}\n");
    check(&root, &[], &line);
    check(
        &root,
        &["-V", "-i"],
        &format!("{HEADER}{line}a\x1b[31m\r\nTotal records: 1\n"),
    );
}

#[test]
fn errors_and_usage() {
    let root = TestRoot::new();
    // No journal file.
    let mut c = telemctl(&root);
    c.arg("journal");
    let r = run(c);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (1, "", "Unable to open journal\n")
    );

    write_journal(&root, &[], "");
    for (args, code) in [
        (&["journal", "-x"][..], 2),
        (&["journal", "--since", "soon"], 2),
        (&["journal", "--since", "2024-02-30"], 2),
        (&["journal", "--until", "2023-02-29 10:00"], 2),
        (&["journal", "--until", "2024-02-29"], 0),
        (&["journal", "--json", "--csv"], 2),
        (&["journal", "-n", "many"], 2),
        (&["journal", "-h"], 0),
        (&["journal", "--help"], 0),
    ] {
        let mut c = telemctl(&root);
        c.args(args);
        let r = run(c);
        assert_eq!(r.code, code, "{args:?}: {}{}", r.stdout, r.stderr);
    }
    let mut c = telemctl(&root);
    c.args(["journal", "--since", "2024-02-30"]);
    let r = run(c);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (
            2,
            "",
            "invalid time \"2024-02-30\": 2024-02 has only 29 days\n"
        )
    );
    let mut c = telemctl(&root);
    c.args(["journal", "-h"]);
    let r = run(c);
    assert!(r.stdout.starts_with("Usage:\n  telemctl journal [-Vi] [-r <record_id>] [-e <event_id>] [-c <classification>] [-b <boot_id>]\n"));
    assert!(r.stdout.contains("\nWhere:\n"));
}
