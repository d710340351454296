//! Forward-only reading of a core on a pipe: [`Stream`] counts its position, reads exactly,
//! and discards what is not wanted (`splice` to /dev/null inside the kernel where it can,
//! else read into a small scratch buffer).
//!
//! Invariant: nothing read is kept here beyond one scratch buffer; callers drain the pipe
//! to EOF with [`Stream::drain`] (the kernel waits for it).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};

use crate::elfcore::CoreError;

/// Chunk size of the copy and discard loops.
pub(super) const IO_CHUNK: usize = 1 << 20;

/// Read `input` to EOF, discarding everything; returns the byte count.
pub fn drain<R: Read>(input: R, splice_fd: Option<RawFd>) -> u64 {
    let mut s = Stream::new(input, splice_fd);
    let _ = s.drain();
    s.pos
}

/// A forward-only reader that counts its position.
pub(super) struct Stream<R> {
    input: R,
    pub(super) pos: u64,
    splice_fd: Option<RawFd>,
    null: Option<File>,
    scratch: Vec<u8>,
    pub(super) eof: bool,
}

impl<R: Read> Stream<R> {
    pub(super) fn new(input: R, splice_fd: Option<RawFd>) -> Stream<R> {
        Stream {
            input,
            pos: 0,
            splice_fd,
            null: None,
            scratch: Vec::new(),
            eof: false,
        }
    }

    /// Read up to `buf.len()` bytes, stopping only at EOF.
    pub(super) fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.input.read(&mut buf[n..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += n as u64;
        Ok(n)
    }

    pub(super) fn read_exact(
        &mut self,
        len: usize,
        what: &'static str,
    ) -> Result<Vec<u8>, CoreError> {
        let mut v = vec![0u8; len];
        let n = self
            .fill(&mut v)
            .map_err(|e| CoreError::Io(e.to_string()))?;
        if n < len {
            return Err(CoreError::Truncated(what));
        }
        Ok(v)
    }

    /// Discard `len` bytes (fewer at EOF).
    fn skip(&mut self, mut len: u64) -> io::Result<()> {
        while len > 0 && !self.eof {
            let chunk = len.min(IO_CHUNK as u64) as usize;
            let n = match self.splice_to_null(chunk) {
                Some(n) => n,
                None => {
                    if self.scratch.is_empty() {
                        self.scratch = vec![0u8; IO_CHUNK / 4];
                    }
                    let k = chunk.min(self.scratch.len());
                    let mut buf = std::mem::take(&mut self.scratch);
                    let r = self.fill(&mut buf[..k]);
                    self.scratch = buf;
                    r?
                }
            };
            if n == 0 {
                break;
            }
            len -= n as u64;
        }
        Ok(())
    }

    /// Move up to `len` bytes from the pipe to /dev/null inside the kernel. `None` when
    /// splicing is not possible here (then the caller reads).
    fn splice_to_null(&mut self, len: usize) -> Option<usize> {
        let fd = self.splice_fd?;
        if self.null.is_none() {
            match File::options().write(true).open("/dev/null") {
                Ok(f) => self.null = Some(f),
                Err(_) => {
                    self.splice_fd = None;
                    return None;
                }
            }
        }
        let null = self.null.as_ref()?.as_raw_fd();
        loop {
            // SAFETY: both fds are open for the duration of the call; null offsets mean
            // "current position", as splice requires for a pipe.
            let n = unsafe {
                libc::splice(
                    fd,
                    std::ptr::null_mut(),
                    null,
                    std::ptr::null_mut(),
                    len,
                    libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE,
                )
            };
            if n >= 0 {
                if n == 0 {
                    self.eof = true;
                }
                self.pos += n as u64;
                return Some(n as usize);
            }
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // Not a pipe, or /dev/null refuses splice: read instead from now on.
            self.splice_fd = None;
            return None;
        }
    }

    pub(super) fn skip_to(&mut self, off: u64) -> io::Result<()> {
        if off > self.pos {
            self.skip(off - self.pos)?;
        }
        Ok(())
    }

    pub(super) fn drain(&mut self) -> io::Result<()> {
        while !self.eof {
            self.skip(u64::MAX)?;
        }
        Ok(())
    }
}
