//! What a power loss can leave in a spool staged with `durability=batched` or `none`: files
//! under final names that are empty or cut short (their data never reached the disk).
//! telempostd must quarantine them, never crash on them or send them.

use std::time::Duration;

use libtelemetry::status::{COUNTER_DELIVERED, COUNTER_QUARANTINED};
use telemetrics_tests::collector::Collector;

use crate::{record, root_for, spawn, spool_names, stage_bytes, wait_counter, SOON};

#[test]
fn empty_or_cut_staged_files_left_by_a_power_loss_are_quarantined_not_sent() {
    let c = Collector::start();
    let root = root_for(&c, "/v2/collector");
    let old = Duration::from_secs(60);
    let full = libtelemetry::encode_staged(&record(1), None);
    let headers_end = full.len() - record(1).payload.len() - 1;
    stage_bytes(&root, "Good01.u0", &full, old);
    stage_bytes(&root, "Empty1.u0", b"", old);
    // Cut inside the headers, and right after them (no body at all).
    stage_bytes(&root, "CutHd1.u0", &full[..headers_end / 2], old);
    stage_bytes(&root, "CutHd2.u1000", &full[..headers_end], old);
    // Cut inside the payload: the headers are whole, the final newline is missing.
    stage_bytes(&root, "CutPl1.u0", &full[..full.len() - 2], old);
    let _d = spawn(&root);
    assert!(wait_counter(&root, COUNTER_QUARANTINED, 4));
    assert!(wait_counter(&root, COUNTER_DELIVERED, 1));
    assert!(c.wait_for(1, SOON));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.requests().len(), 1, "only the complete record was sent");
    assert!(spool_names(&root).is_empty(), "{:?}", spool_names(&root));
}
