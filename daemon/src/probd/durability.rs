//! When a record is acknowledged relative to the disk: the `durability` key of
//! `[settings]` in telemetrics.conf(5).
//!
//! * `strict`: `A` only once the record and its directory entry are durable (they survive
//!   a power loss). A batch costs one round of flushes, not one per record: all its files
//!   are written to the temporary directory, then flushed together — `fdatasync` for a
//!   lone record, one `syncfs` for two or more — then renamed into the spool, then the
//!   spool directory is fsynced once. Measured on ext4 (virtio disk, 700-byte records,
//!   median of 5): 8 records 23.9 ms with serial `fsync`s, 22.1 ms with `fdatasync`s
//!   overlapped by `sync_file_range(SYNC_FILE_RANGE_WRITE)` first (each `fdatasync` of a
//!   new file still waits for its own journal commit), 7.9 ms with `syncfs`; 64 records
//!   155 ms, 156 ms and 15 ms. `syncfs` commits the journal once for the whole batch. Its
//!   cost is that it also writes other processes' dirty data on the same filesystem; a
//!   lone record, the common case of a quiet host, is flushed with `fdatasync` alone.
//! * `batched` (the default): `A` once the record is complete under its final name, which
//!   survives any crash or kill of a process; a background `syncfs` of the spool's
//!   filesystem starts at most [`BATCHED_SYNC_INTERVAL`] after the first record left
//!   unsynced, so after a power loss only records acknowledged within that interval (plus
//!   the time of the flush itself) before the cut may be missing, or present but empty
//!   or cut short (telempostd quarantines those). A batch holding a record of severity 4
//!   (crashes and other critical records) is committed as in `strict`: those are rare and
//!   the ones most worth a flush.
//! * `none`: `A` once the record is complete under its final name, never flushed by the
//!   daemon (the C daemon's behaviour); for a spool on tmpfs, where flushes cost nothing
//!   but nothing survives a reboot anyway, or where the kernel's writeback is enough.
//!
//! In every mode a final name only ever appears by rename of a complete file, so a crash
//! of the daemon (kill -9) never leaves a partial record under a final name.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Longest time from a record's acknowledgement in `batched` mode to the start of the
/// flush that makes it durable.
pub const BATCHED_SYNC_INTERVAL: Duration = Duration::from_millis(100);

pub use libtelemetry::config::Durability;

/// A `durability` value telemprobd cannot run with.
#[derive(Debug, thiserror::Error)]
#[error("{location}: durability={value:?} is not strict, batched or none")]
pub struct BadDurability {
    pub location: String,
    pub value: String,
}

/// The mode a configuration asks for (the default when the key is absent); a bad value is
/// an error here, though not for the probes and telempostd reading the same file.
pub fn durability_of(config: &libtelemetry::Config) -> Result<Durability, BadDurability> {
    match config.deferred_error("durability") {
        Some(e) => Err(BadDurability {
            location: e.location(),
            value: e.value.clone(),
        }),
        None => Ok(config.durability),
    }
}

/// Write every dirty page and inode of the filesystem holding `fd` (`syncfs(2)`).
pub fn sync_filesystem(fd: &File) -> io::Result<()> {
    // SAFETY: a valid open fd; syncfs takes nothing else.
    if unsafe { libc::syncfs(fd.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        let paths = libtelemetry::Paths::new("/nonexistent", "/");
        let parse = |text: &str| {
            let c =
                libtelemetry::Config::parse(text, std::path::Path::new("/t.conf"), &paths).unwrap();
            durability_of(&c)
        };
        assert_eq!(parse("[settings]\n").unwrap(), Durability::Batched);
        assert_eq!(
            parse("[settings]\ndurability=strict\n").unwrap(),
            Durability::Strict
        );
        assert_eq!(
            parse("[settings]\ndurability=none\n").unwrap(),
            Durability::None
        );
        let e = parse("[settings]\ndurability=fsync\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/t.conf:2: durability=\"fsync\" is not strict, batched or none"
        );
    }
}
