//! `/dev/mcelog` (`CONFIG_X86_MCELOG_LEGACY`): record and log length from ioctls, reads of
//! whole batches (the kernel hands out and clears every finished record at once), overflow
//! from `MCE_GETCLEAR_FLAGS`.
//!
//! The same reader replays captured records from a regular file or FIFO (`--from-file`,
//! fixtures): those answer the ioctls with `ENOTTY`, and the record length then comes from
//! the caller (`--record-len`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::mce::{self, Mce, MceError};

/// Log length assumed when the source is not the kernel device (the kernel's historical
/// `MCE_LOG_LEN`).
pub const DEFAULT_LOG_LEN: usize = 32;
/// Largest log length believed (bounds the read buffer with [`mce::MAX_RECORD_LEN`]).
pub const MAX_LOG_LEN: usize = 4096;
/// Largest read buffer.
const MAX_READ_BUFFER: usize = 1 << 20;
/// Bit of `MCE_GETCLEAR_FLAGS` set when the kernel log overflowed.
const MCE_OVERFLOW: libc::c_int = 0;

nix::ioctl_read!(mce_get_record_len, b'M', 1, libc::c_int);
nix::ioctl_read!(mce_get_log_len, b'M', 2, libc::c_int);
nix::ioctl_read!(mce_getclear_flags, b'M', 3, libc::c_int);

#[derive(Debug, Error)]
pub enum DeviceError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {what} ioctl failed: {source}")]
    Ioctl {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}: kernel log length {len} is outside 1..={MAX_LOG_LEN}", .path.display())]
    BadLogLen { path: PathBuf, len: usize },
    #[error("{path}: {source}")]
    Record {
        path: PathBuf,
        #[source]
        source: MceError,
    },
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The ioctls of the kernel device, behind a trait so the overflow path can be exercised
/// without the device.
pub trait McelogIoctls: Send {
    fn record_len(&self, fd: BorrowedFd<'_>) -> io::Result<usize>;
    fn log_len(&self, fd: BorrowedFd<'_>) -> io::Result<usize>;
    /// Read and clear the flags; true when `MCE_OVERFLOW` was set.
    fn getclear_overflow(&self, fd: BorrowedFd<'_>) -> io::Result<bool>;
}

/// The real ioctls.
pub struct KernelIoctls;

impl McelogIoctls for KernelIoctls {
    fn record_len(&self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let mut v: libc::c_int = 0;
        // SAFETY: valid fd; the kernel writes one int into `v`.
        unsafe { mce_get_record_len(fd.as_raw_fd(), &mut v) }.map_err(io::Error::from)?;
        Ok(v.max(0) as usize)
    }

    fn log_len(&self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let mut v: libc::c_int = 0;
        // SAFETY: valid fd; the kernel writes one int into `v`.
        unsafe { mce_get_log_len(fd.as_raw_fd(), &mut v) }.map_err(io::Error::from)?;
        Ok(v.max(0) as usize)
    }

    fn getclear_overflow(&self, fd: BorrowedFd<'_>) -> io::Result<bool> {
        let mut v: libc::c_int = 0;
        // SAFETY: valid fd; the kernel writes one int into `v`.
        unsafe { mce_getclear_flags(fd.as_raw_fd(), &mut v) }.map_err(io::Error::from)?;
        Ok(v & (1 << MCE_OVERFLOW) != 0)
    }
}

/// What one read returned.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<Mce>,
    /// The kernel reported that its log overflowed (records were lost).
    pub overflow: bool,
    /// Bytes read (0: nothing pending, or end of a replay file).
    pub bytes: usize,
}

/// A reader of `struct mce` records from the device or a replay file.
pub struct McelogReader {
    path: PathBuf,
    file: File,
    ioctls: Box<dyn McelogIoctls>,
    /// True when the source answered the ioctls (the kernel device).
    is_device: bool,
    record_len: usize,
    log_len: usize,
    /// Bytes of a record not yet complete (replay files being appended to).
    carry: Vec<u8>,
    buf: Vec<u8>,
}

impl McelogReader {
    /// Open `path` non-blocking. Record and log length come from the ioctls; when the
    /// source is not the device (`ENOTTY`), from `fallback_record_len` and
    /// [`DEFAULT_LOG_LEN`].
    pub fn open(path: &Path, fallback_record_len: usize) -> Result<McelogReader, DeviceError> {
        McelogReader::open_with(path, fallback_record_len, Box::new(KernelIoctls))
    }

    pub fn open_with(
        path: &Path,
        fallback_record_len: usize,
        ioctls: Box<dyn McelogIoctls>,
    ) -> Result<McelogReader, DeviceError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| DeviceError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let ioctl_err = |what, source| DeviceError::Ioctl {
            path: path.to_path_buf(),
            what,
            source,
        };
        let (is_device, record_len, log_len) = match ioctls.record_len(file.as_fd()) {
            Ok(rl) => {
                let ll = ioctls
                    .log_len(file.as_fd())
                    .map_err(|e| ioctl_err("MCE_GET_LOG_LEN", e))?;
                (true, rl, ll)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
                (false, fallback_record_len, DEFAULT_LOG_LEN)
            }
            Err(e) => return Err(ioctl_err("MCE_GET_RECORD_LEN", e)),
        };
        mce::check_record_len(record_len).map_err(|source| DeviceError::Record {
            path: path.to_path_buf(),
            source,
        })?;
        if log_len == 0 || log_len > MAX_LOG_LEN {
            return Err(DeviceError::BadLogLen {
                path: path.to_path_buf(),
                len: log_len,
            });
        }
        let buf_len = (record_len * log_len).min(MAX_READ_BUFFER / record_len * record_len);
        Ok(McelogReader {
            path: path.to_path_buf(),
            file,
            ioctls,
            is_device,
            record_len,
            log_len,
            carry: Vec::new(),
            buf: vec![0; buf_len],
        })
    }

    pub fn record_len(&self) -> usize {
        self.record_len
    }

    pub fn log_len(&self) -> usize {
        self.log_len
    }

    pub fn is_device(&self) -> bool {
        self.is_device
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Bytes of an incomplete record read so far (a truncated replay file).
    pub fn partial_bytes(&self) -> usize {
        self.carry.len()
    }

    /// One read of up to `log_len × record_len` bytes (the kernel insists on a buffer that
    /// large), then the overflow flag. Never blocks.
    pub fn read_batch(&mut self) -> Result<Batch, DeviceError> {
        let n = loop {
            match self.file.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
                Err(source) => {
                    return Err(DeviceError::Read {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        };
        let mut batch = Batch {
            bytes: n,
            ..Batch::default()
        };
        if n > 0 {
            self.carry.extend_from_slice(&self.buf[..n]);
            let (records, rest) =
                mce::split_records(&self.carry, self.record_len).map_err(|source| {
                    DeviceError::Record {
                        path: self.path.clone(),
                        source,
                    }
                })?;
            batch.records = records;
            let rest = rest.to_vec();
            self.carry = rest;
        }
        if self.is_device && n > 0 {
            match self.ioctls.getclear_overflow(self.file.as_fd()) {
                Ok(overflow) => batch.overflow = overflow,
                Err(e) => tracing::warn!("{}: MCE_GETCLEAR_FLAGS: {e}", self.path.display()),
            }
        }
        Ok(batch)
    }
}
