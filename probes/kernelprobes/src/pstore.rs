//! pstoreprobe and pstoreclean: kernel logs saved in persistent storage across a crash.
//!
//! At boot, pstoreclean (root) moves every pstore entry into the cache directory, which
//! frees the firmware/RAM slots for the next crash; pstoreprobe (the telemetry user) then
//! reassembles the `dmesg` dumps there and reports each oops found in them:
//!
//! * `dmesg-efi-<id>` (and `dmesg-efi_pstore-<id>`): `id = (time * 100 + part) * 1000 +
//!   count`, parts counted from 1, part 1 holding the end of the log;
//! * `dmesg-ramoops-<n>`: one complete dump per file, count `n + 1`.
//!
//! Each file starts with a `Oops#1 Part1`-style header line, which is dropped. The parts of a
//! dump are joined from the highest part number to the lowest. Unlike the C probe, a
//! single-part dump (every ramoops dump) is handled, and a dump whose last line has no
//! `\n` is parsed to its end.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use libtelemetry::fsutil::{is_hidden_name, write_atomic};

use crate::error::ProbeError;
use crate::oops::{parse_text, Oops};

/// Largest dump file read by pstoreprobe (EFI parts are about 1 KiB, ramoops records a few
/// dozen KiB).
pub const MAX_DUMP_FILE: u64 = 1024 * 1024;
/// Largest pstore entry pstoreclean copies; anything larger is left in place.
pub const MAX_PSTORE_ENTRY: u64 = 16 * 1024 * 1024;

/// The storage a dump came from; dumps of different backends never mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Backend {
    Efi,
    Ramoops,
}

/// Where one file belongs: its dump and its part number (1 = the end of the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpName {
    pub backend: Backend,
    pub count: u64,
    pub part: u64,
}

/// Parse a pstore file name; `None` for entries that are not `dmesg` dumps (console,
/// pmsg, compressed `.enc.z` copies) or carry an impossible part number.
pub fn parse_dump_name(name: &str) -> Option<DumpName> {
    let digits = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if let Some(id) = name
        .strip_prefix("dmesg-efi-")
        .or_else(|| name.strip_prefix("dmesg-efi_pstore-"))
        .and_then(digits)
    {
        let part = (id / 1000) % 100;
        return (part > 0).then_some(DumpName {
            backend: Backend::Efi,
            count: id % 1000,
            part,
        });
    }
    let n = name.strip_prefix("dmesg-ramoops-").and_then(digits)?;
    Some(DumpName {
        backend: Backend::Ramoops,
        count: n.checked_add(1)?,
        part: 1,
    })
}

/// A file's log text without its `<Reason>#<n> Part<m>` header line.
pub fn strip_header(contents: &[u8]) -> &[u8] {
    let nl = contents.iter().position(|&b| b == b'\n');
    let first = &contents[..nl.unwrap_or(contents.len())];
    if is_dump_header(first) {
        nl.map_or(&[][..], |i| &contents[i + 1..])
    } else {
        contents
    }
}

/// `Oops#1 Part1`, `Panic#2 Part13`, …
fn is_dump_header(line: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    let line = line.trim_end_matches('\r');
    let Some((reason, rest)) = line.split_once('#') else {
        return false;
    };
    let Some((count, part)) = rest.split_once(" Part") else {
        return false;
    };
    !reason.is_empty()
        && reason.bytes().all(|b| b.is_ascii_alphabetic())
        && !count.is_empty()
        && count.bytes().all(|b| b.is_ascii_digit())
        && !part.is_empty()
        && part.bytes().all(|b| b.is_ascii_digit())
}

/// One file of a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub name: DumpName,
    pub path: PathBuf,
    /// The text after the header line.
    pub text: Vec<u8>,
}

/// A complete dump: its text in log order and the files it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub backend: Backend,
    pub count: u64,
    pub text: Vec<u8>,
    pub files: Vec<PathBuf>,
}

/// Group chunks into dumps. A dump is complete when parts 1..=max are all present and
/// non-empty; the files of incomplete dumps are returned separately.
pub fn assemble(chunks: Vec<Chunk>) -> (Vec<Dump>, Vec<PathBuf>) {
    let mut groups: BTreeMap<(Backend, u64), BTreeMap<u64, Chunk>> = BTreeMap::new();
    let mut incomplete = Vec::new();
    for chunk in chunks {
        let parts = groups
            .entry((chunk.name.backend, chunk.name.count))
            .or_default();
        if let Some(dup) = parts.insert(chunk.name.part, chunk) {
            incomplete.push(dup.path);
        }
    }
    let mut dumps = Vec::new();
    for ((backend, count), parts) in groups {
        let max = parts.keys().copied().max().unwrap_or(0);
        let complete = (1..=max).all(|p| parts.get(&p).is_some_and(|c| !c.text.is_empty()));
        if !complete {
            tracing::info!(count, "pstore dump has missing parts; skipped");
            incomplete.extend(parts.into_values().map(|c| c.path));
            continue;
        }
        let mut text = Vec::new();
        let mut files = Vec::new();
        for chunk in parts.into_values().rev() {
            text.extend_from_slice(&chunk.text);
            files.push(chunk.path);
        }
        dumps.push(Dump {
            backend,
            count,
            text,
            files,
        });
    }
    (dumps, incomplete)
}

/// Read the dump files of `dir` (regular files only, never following symlinks).
pub fn read_chunks(dir: &Path) -> Result<Vec<Chunk>, ProbeError> {
    let mut chunks = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| ProbeError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ProbeError::io(dir, e))?;
        let Some(name) = entry.file_name().to_str().and_then(parse_dump_name) else {
            continue;
        };
        let path = entry.path();
        match read_regular_file(&path, MAX_DUMP_FILE) {
            Ok(bytes) => chunks.push(Chunk {
                name,
                text: strip_header(&bytes).to_vec(),
                path,
            }),
            Err(e) => tracing::warn!("skipping {}: {e}", path.display()),
        }
    }
    Ok(chunks)
}

/// The whole of a regular file, refusing symlinks, other file types and files over `max`.
fn read_regular_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    let md = file.metadata()?;
    if !md.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if md.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    let mut bytes = Vec::with_capacity(md.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// What pstoreprobe did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeSummary {
    pub dumps: usize,
    pub oopses: usize,
    pub delivered: usize,
    pub failed: usize,
}

/// pstoreprobe: report every oops of every complete dump in `cache_dir` through `report`
/// (true = handed to telemprobd). The files of a dump are deleted once all its oopses were
/// delivered, so a failed delivery can be retried; incomplete dumps are deleted.
pub fn probe(
    cache_dir: &Path,
    mut report: impl FnMut(&Oops) -> bool,
) -> Result<ProbeSummary, ProbeError> {
    let (dumps, incomplete) = assemble(read_chunks(cache_dir)?);
    let mut summary = ProbeSummary::default();
    for path in incomplete {
        remove_logged(&path);
    }
    for dump in dumps {
        summary.dumps += 1;
        let mut all_sent = true;
        for oops in parse_text(&dump.text) {
            summary.oopses += 1;
            if report(&oops) {
                summary.delivered += 1;
            } else {
                summary.failed += 1;
                all_sent = false;
            }
        }
        if all_sent {
            for path in &dump.files {
                remove_logged(path);
            }
        }
    }
    Ok(summary)
}

fn remove_logged(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!("cannot remove {}: {e}", path.display());
    }
}

/// What pstoreclean does about mounting pstore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountMode {
    /// Create the directory, mount pstore on it, unmount and remove it afterwards.
    Mount,
    /// Read the directory as it is (pstore already mounted there, or a test fixture).
    UseAsIs,
}

/// What pstoreclean did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanSummary {
    pub removed_stale: usize,
    pub copied: usize,
    pub failed: usize,
}

/// pstoreclean: empty `cache_dir`, then move every entry of `pstore_dir` into it (copy
/// durably with mode 0444, then unlink the original, which frees the pstore slot).
pub fn clean(
    pstore_dir: &Path,
    cache_dir: &Path,
    mode: MountMode,
) -> Result<CleanSummary, ProbeError> {
    let mut summary = CleanSummary::default();
    match std::fs::read_dir(cache_dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let path = entry.path();
                let removed = match entry.file_type() {
                    Ok(t) if t.is_dir() => std::fs::remove_dir(&path),
                    _ => std::fs::remove_file(&path),
                };
                match removed {
                    Ok(()) => summary.removed_stale += 1,
                    Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(cache_dir).map_err(|e| ProbeError::io(cache_dir, e))?;
        }
        Err(e) => tracing::warn!("cannot empty {}: {e}", cache_dir.display()),
    }

    let mounted = match mode {
        MountMode::Mount => Some(mount_pstore(pstore_dir)?),
        MountMode::UseAsIs => None,
    };
    let copied = copy_entries(pstore_dir, cache_dir, &mut summary);
    if let Some(created_dir) = mounted {
        if let Err(e) = umount(pstore_dir) {
            tracing::warn!("cannot unmount {}: {e}", pstore_dir.display());
        } else if created_dir {
            let _ = std::fs::remove_dir(pstore_dir);
        }
    }
    copied?;
    if summary.failed > 0 {
        return Err(ProbeError::CopyFailed(summary.failed));
    }
    Ok(summary)
}

/// mkdir (if needed) and mount; returns whether the directory was created here.
fn mount_pstore(dir: &Path) -> Result<bool, ProbeError> {
    let created = match std::fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(ProbeError::io(dir, e)),
    };
    if let Err(source) = mount(dir) {
        if created {
            let _ = std::fs::remove_dir(dir);
        }
        return Err(ProbeError::Mount {
            path: dir.to_path_buf(),
            source,
        });
    }
    Ok(created)
}

fn c_path(path: &Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))
}

/// `mount -t pstore -o nosuid,nodev,noexec pstore <dir>`.
fn mount(dir: &Path) -> std::io::Result<()> {
    let target = c_path(dir)?;
    // SAFETY: every pointer is a valid NUL-terminated string or NULL (no mount data) for
    // the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"pstore".as_ptr(),
            target.as_ptr(),
            c"pstore".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn umount(dir: &Path) -> std::io::Result<()> {
    let target = c_path(dir)?;
    // SAFETY: a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::umount(target.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn copy_entries(
    pstore_dir: &Path,
    cache_dir: &Path,
    summary: &mut CleanSummary,
) -> Result<(), ProbeError> {
    let entries = match std::fs::read_dir(pstore_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!("{} does not exist; nothing to copy", pstore_dir.display());
            return Ok(());
        }
        Err(e) => return Err(ProbeError::io(pstore_dir, e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| !is_hidden_name(n)) else {
            continue;
        };
        let src = entry.path();
        let dest = cache_dir.join(name);
        let copied = read_regular_file(&src, MAX_PSTORE_ENTRY)
            .and_then(|bytes| write_atomic(&dest, &bytes, 0o444));
        match copied {
            // Only a safe copy frees the pstore slot.
            Ok(()) => match std::fs::remove_file(&src) {
                Ok(()) => summary.copied += 1,
                Err(e) => {
                    tracing::warn!("copied but cannot remove {}: {e}", src.display());
                    summary.copied += 1;
                }
            },
            Err(e) => {
                tracing::warn!("cannot copy {}: {e}", src.display());
                summary.failed += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_names() {
        let check = |name: &str, expected: Option<(Backend, u64, u64)>| {
            let got = parse_dump_name(name).map(|d| (d.backend, d.count, d.part));
            assert_eq!(got, expected, "{name}");
        };
        check("dmesg-efi-143994262108001", Some((Backend::Efi, 1, 8)));
        check("dmesg-efi-143994262101002", Some((Backend::Efi, 2, 1)));
        check(
            "dmesg-efi_pstore-171234567801003",
            Some((Backend::Efi, 3, 1)),
        );
        check("dmesg-efi-143994262100001", None);
        check("dmesg-ramoops-0", Some((Backend::Ramoops, 1, 1)));
        check("dmesg-ramoops-7", Some((Backend::Ramoops, 8, 1)));
        check("dmesg-ramoops-0.enc.z", None);
        check("console-ramoops-0", None);
        check("dmesg-efi-", None);
        check("dmesg-efi-99999999999999999999999", None);
    }

    #[test]
    fn headers() {
        assert_eq!(strip_header(b"Oops#1 Part1\nline\n"), b"line\n");
        assert_eq!(strip_header(b"Panic#12 Part3\n"), b"");
        assert_eq!(strip_header(b"Oops#1 Part1"), b"");
        assert_eq!(
            strip_header(b"<4>[ 1.0] no header\n"),
            b"<4>[ 1.0] no header\n"
        );
        assert_eq!(strip_header(b""), b"");
    }

    fn chunk(backend: Backend, count: u64, part: u64, text: &str) -> Chunk {
        Chunk {
            name: DumpName {
                backend,
                count,
                part,
            },
            path: PathBuf::from(format!("{backend:?}-{count}-{part}")),
            text: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn parts_join_highest_first_and_gaps_are_incomplete() {
        let (dumps, incomplete) = assemble(vec![
            chunk(Backend::Efi, 1, 1, "c\n"),
            chunk(Backend::Efi, 1, 3, "a\n"),
            chunk(Backend::Efi, 1, 2, "b\n"),
            chunk(Backend::Efi, 2, 2, "x\n"),
            chunk(Backend::Efi, 3, 1, ""),
            chunk(Backend::Ramoops, 1, 1, "r"),
        ]);
        assert_eq!(dumps.len(), 2);
        assert_eq!(dumps[0].text, b"a\nb\nc\n");
        assert_eq!(dumps[0].files.len(), 3);
        assert_eq!(
            (dumps[1].backend, dumps[1].text.as_slice()),
            (Backend::Ramoops, &b"r"[..])
        );
        assert_eq!(incomplete.len(), 2);
    }
}
