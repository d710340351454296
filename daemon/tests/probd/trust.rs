//! What a sender is trusted with: its identity as the kernel reports it, and the `CFG:`
//! path it may name.

use libtelemetry::client::Ack;
use libtelemetry::{encode_frame, parse_staged_name, StagedSender};
use telemetrics_tests::TestRoot;

use super::{allow_other_users, is_root, new_record, send_as, start, SentAs};

/// The uid of `nobody`, used as an unprivileged second user.
const NOBODY: u32 = 65534;

fn senders(root: &TestRoot) -> Vec<StagedSender> {
    root.staged_files()
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            parse_staged_name(name).unwrap_or_else(|| panic!("not a staged name: {name}"))
        })
        .collect()
}

#[test]
fn staged_names_record_the_senders_uid() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to send as a second user");
        return;
    }
    let root = TestRoot::new();
    let _d = start(&root);
    allow_other_users(&root);
    let frame = encode_frame(&new_record(&root, "from nobody"), None);
    assert_eq!(
        send_as(NOBODY, NOBODY, &root.socket_path(), &frame),
        SentAs::Reply(Ack::Accepted.byte())
    );
    let frame = encode_frame(&new_record(&root, "from root"), None);
    assert_eq!(
        send_as(0, 0, &root.socket_path(), &frame),
        SentAs::Reply(Ack::Accepted.byte())
    );
    let mut got = senders(&root);
    got.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(got, vec![StagedSender::Uid(0), StagedSender::Uid(NOBODY)]);
}
