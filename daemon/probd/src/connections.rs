//! Who may hold how many connections.
//!
//! Accepting never waits: the listener drains the kernel's backlog as fast as clients
//! connect and decides at once, from the sender's uid ([`super::peer`]), whether a
//! connection is served or answered `O` (overloaded) and closed unread. A client that holds connections open, or
//! sends half a frame and stalls, thus never keeps another user's probe waiting in the
//! backlog:
//!
//! * every uid but root may hold at most its *share* of connections at once,
//!   `max(64, cap / 8)` (512 with the default cap of 4096): a probe holds its connection
//!   for well under a millisecond, so 64 at once is far beyond any legitimate burst of
//!   one user, and eight uids at their full share are needed to fill the cap;
//! * the cap (4096, fewer when the fd limit is lower) bounds all connections together;
//! * root (the system's probes, crash reports) is not bound by a share and has
//!   [`ROOT_RESERVE`] connections beyond the cap, so no number of unprivileged users can
//!   keep it out.
//!
//! A connection over its uid's share or over the cap is answered `O` and closed at once
//! (one non-blocking send; a close without a byte would read as the C daemon's silent
//! success, `tm_send_record` returns `-EAGAIN` instead): the newest
//! connections of the heaviest sender go, the connections already served stay (each is
//! bounded by the frame deadline). Memory per connection is bounded by the frame size, and
//! once a busy period ends (no connection left after at least [`TRIM_AFTER_PEAK`] at
//! once) the allocator's free pages are returned to the kernel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections root may hold beyond the cap.
pub const ROOT_RESERVE: usize = 64;
/// Least share of connections of one uid.
pub const MIN_SHARE: usize = 64;
/// Connections at once that make a busy period worth giving memory back after.
pub const TRIM_AFTER_PEAK: usize = 64;

/// The share of connections of one unprivileged uid under `cap`.
pub fn share_of(cap: usize) -> usize {
    MIN_SHARE.max(cap / 8)
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its uid holds this many connections already, its whole share.
    OverShare { held: usize, share: usize },
    /// Every connection of the cap is in use.
    Full { cap: usize },
}

#[derive(Default)]
struct Table {
    per_uid: HashMap<u32, usize>,
    open: usize,
    peak: usize,
}

/// The open connections, per uid.
pub struct Connections {
    /// One permit per connection, so that shutdown can wait for every one to end.
    permits: Arc<Semaphore>,
    total_permits: usize,
    table: Mutex<Table>,
    cap: usize,
    share: usize,
    root_reserve: usize,
}

impl Connections {
    pub fn new(cap: usize, share: usize, root_reserve: usize) -> Arc<Connections> {
        let cap = cap.max(1);
        let total_permits = (cap + root_reserve).min(Semaphore::MAX_PERMITS);
        Arc::new(Connections {
            permits: Arc::new(Semaphore::new(total_permits)),
            total_permits,
            table: Mutex::new(Table::default()),
            cap,
            share: share.max(1),
            root_reserve,
        })
    }

    /// Admit a connection of `uid`, or say why not.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Result<ConnPermit, Refusal> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let held = t.per_uid.get(&uid).copied().unwrap_or(0);
        let limit = if uid == 0 {
            self.cap + self.root_reserve
        } else {
            if held >= self.share {
                return Err(Refusal::OverShare {
                    held,
                    share: self.share,
                });
            }
            self.cap
        };
        if t.open >= limit {
            return Err(Refusal::Full { cap: self.cap });
        }
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full { cap: self.cap })?;
        *t.per_uid.entry(uid).or_default() += 1;
        t.open += 1;
        t.peak = t.peak.max(t.open);
        Ok(ConnPermit {
            connections: self.clone(),
            uid,
            _permit: permit,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.table.lock().map_or(0, |t| t.open)
    }

    /// Wait until every connection is closed.
    pub async fn all_closed(&self) {
        let all = u32::try_from(self.total_permits).unwrap_or(u32::MAX);
        let _ = self.permits.acquire_many(all).await;
    }

    fn release(&self, uid: u32) {
        let trim = {
            let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = t.per_uid.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    t.per_uid.remove(&uid);
                }
            }
            t.open = t.open.saturating_sub(1);
            let trim = t.open == 0 && t.peak >= TRIM_AFTER_PEAK;
            if t.open == 0 {
                t.peak = 0;
                if trim {
                    t.per_uid.shrink_to_fit();
                }
            }
            trim
        };
        if trim {
            release_free_memory();
        }
    }
}

/// One admitted connection; dropping it gives the place back.
pub struct ConnPermit {
    connections: Arc<Connections>,
    uid: u32,
    _permit: OwnedSemaphorePermit,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.connections.release(self.uid);
    }
}

/// Give the allocator's free pages back to the kernel: after many connections at once
/// (each with a frame buffer and a task), the heap would otherwise keep its peak size.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no pointers
    // and is thread-safe in glibc.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cap_and_root_reserve() {
        assert_eq!(share_of(4096), 512);
        assert_eq!(share_of(100), 64);
        let c = Connections::new(4, 2, 1);
        let a1 = c.admit(1000).unwrap();
        let _a2 = c.admit(1000).unwrap();
        assert_eq!(
            c.admit(1000).err(),
            Some(Refusal::OverShare { held: 2, share: 2 })
        );
        let _b1 = c.admit(1001).unwrap();
        let _b2 = c.admit(1001).unwrap();
        assert_eq!(c.admit(1002).err(), Some(Refusal::Full { cap: 4 }));
        // Root still gets in, once.
        let r = c.admit(0).unwrap();
        assert_eq!(c.admit(0).err(), Some(Refusal::Full { cap: 4 }));
        assert_eq!(c.open(), 5);
        drop(a1);
        // The cap is still full (root's place counts).
        assert_eq!(c.admit(1000).err(), Some(Refusal::Full { cap: 4 }));
        drop(r);
        let _a3 = c.admit(1000).unwrap();
        assert_eq!(c.open(), 4);
    }
}
