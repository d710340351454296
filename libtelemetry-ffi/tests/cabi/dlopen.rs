//! The mcelog pattern: `dlopen("…/libtelemetry.so.4")`, `dlsym` of the functions and
//! `dlvsym` of every symbol at its version.

use libtelemetry::client::Ack;
use libtelemetry::record::Header;
use telemetrics_tests::cabi::{lib_dir, RecordListener};
use telemetrics_tests::TestRoot;

use super::{program, run_in, stdout, Lang};

#[test]
fn dlopen_by_full_name_and_dlsym() {
    let root = TestRoot::new();
    let listener = RecordListener::bind(&root.socket_path(), Some(Ack::Accepted.byte()));
    let so = lib_dir().join("libtelemetry.so.4");
    let out = run_in(
        &root,
        &program("dlopen", Lang::CUnlinked),
        &[&so.display().to_string()],
    );
    assert!(
        out.status.success(),
        "{:?}\n{}{}",
        out.status,
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "send=0\n");
    let frame = listener.recv_frame();
    assert_eq!(
        frame.record.headers.get(Header::Classification),
        "org.clearlinux/mce/x86_64"
    );
    assert_eq!(frame.record.payload, b"MCE payload\n");
}
