//! The /dev/mcelog reader: record length from the ioctl, partial records, overflow flag.

use std::io;
use std::io::Write;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mceprobe::device::{DeviceError, McelogIoctls, McelogReader, DEFAULT_LOG_LEN};

use crate::fixtures::{blob, cases, short_case};

/// Answers like the kernel device with a fixed record length; overflows on chosen reads.
struct FakeKernel {
    record_len: usize,
    log_len: usize,
    overflow_on: Vec<usize>,
    calls: Arc<AtomicUsize>,
}

impl McelogIoctls for FakeKernel {
    fn record_len(&self, _: BorrowedFd<'_>) -> io::Result<usize> {
        Ok(self.record_len)
    }
    fn log_len(&self, _: BorrowedFd<'_>) -> io::Result<usize> {
        Ok(self.log_len)
    }
    fn getclear_overflow(&self, _: BorrowedFd<'_>) -> io::Result<bool> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.overflow_on.contains(&n))
    }
}

#[test]
fn record_length_comes_from_the_ioctl_and_overflow_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("mcelog");
    let (short, _) = short_case();
    std::fs::write(&dev, &short).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let fake = FakeKernel {
        record_len: 88,
        log_len: 4,
        overflow_on: vec![0],
        calls: calls.clone(),
    };
    // The fallback (128) must not be used: the "kernel" said 88.
    let mut r = McelogReader::open_with(&dev, 128, Box::new(fake)).unwrap();
    assert!(r.is_device());
    assert_eq!((r.record_len(), r.log_len()), (88, 4));
    let b = r.read_batch().unwrap();
    assert_eq!(b.records.len(), 1);
    assert_eq!(b.records[0].record_len, 88);
    assert!(b.overflow, "MCE_GETCLEAR_FLAGS overflow must be reported");
    let b = r.read_batch().unwrap();
    assert_eq!((b.bytes, b.records.len(), b.overflow), (0, 0, false));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "flags read only after data"
    );
}

#[test]
fn a_plain_file_uses_the_given_record_length_and_keeps_partial_records() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("replay");
    let all = blob();
    std::fs::write(&dev, &all[..200]).unwrap();
    let mut r = McelogReader::open(&dev, 128).unwrap();
    assert!(!r.is_device());
    assert_eq!(r.log_len(), DEFAULT_LOG_LEN);
    let b = r.read_batch().unwrap();
    assert_eq!(b.records.len(), 1);
    // The rest of record 2 arrives later (an appended replay file).
    let mut f = std::fs::OpenOptions::new().append(true).open(&dev).unwrap();
    f.write_all(&all[200..]).unwrap();
    let mut got = Vec::new();
    loop {
        let b = r.read_batch().unwrap();
        if b.bytes == 0 {
            break;
        }
        got.extend(b.records);
    }
    assert_eq!(got.len(), cases().len() - 1);
    assert_eq!(got[0], cases()[1].mce);
}

fn check_open_error(record_len: usize, kernel: Option<(usize, usize)>, want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("mcelog");
    std::fs::write(&dev, b"").unwrap();
    let r = match kernel {
        Some((rl, ll)) => McelogReader::open_with(
            &dev,
            record_len,
            Box::new(FakeKernel {
                record_len: rl,
                log_len: ll,
                overflow_on: vec![],
                calls: Arc::default(),
            }),
        ),
        None => McelogReader::open(&dev, record_len),
    };
    let e = r.err().unwrap_or_else(|| panic!("{want}: opened"));
    assert!(e.to_string().contains(want), "{e}");
    assert!(matches!(
        e,
        DeviceError::Record { .. } | DeviceError::BadLogLen { .. }
    ));
}

#[test]
fn insane_lengths_are_refused() {
    check_open_error(10, None, "record length 10");
    check_open_error(128, Some((1 << 20, 32)), "record length 1048576");
    check_open_error(128, Some((128, 0)), "log length 0");
    check_open_error(128, Some((128, 1 << 20)), "log length 1048576");
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        McelogReader::open(&dir.path().join("absent"), 128),
        Err(DeviceError::Open { .. })
    ));
}
