//! Host facts written into record headers (§2.2–2.4): uname, os-release, DMI, cpuinfo.
//!
//! Fixed C bugs: an unreadable os-release gives `system_name: unknown` (C: empty value);
//! a DMI value without a trailing newline keeps its last character; long cpu model names are
//! not cut by one character. An unreadable `/proc/cpuinfo` gives `cpu_model: unknown`
//! instead of failing the whole record.
//!
//! Every value is bounded here to the bytes the C client's buffers kept (cut at a UTF-8
//! character boundary), and control characters other than tab become `?`: telemprobd
//! refuses a header value that is too long or holds a control character
//! (`Headers::validate` in `record`), so one odd host file would
//! otherwise make every record of the host unsendable. The largest composite value,
//! `host_type`, stays under 250 bytes, the backend collector's limit.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::header_value::is_forbidden_header_char;
use crate::paths::Paths;

/// Bytes read from any one host file.
const MAX_HOST_FILE: u64 = 256 * 1024;
/// DMI values: C read a 79-byte first line.
pub const DMI_VALUE_MAX: usize = 79;
/// `system_name` is cut to this many bytes, as in C.
pub const SYSTEM_NAME_MAX: usize = 79;
/// `build`: C copied `VERSION_ID` into a 40-byte buffer (and overflowed it beyond that).
pub const BUILD_MAX: usize = 39;
/// `cpu_model`: C's 80-byte line buffer held 66 value bytes after `model name\t: ` (then
/// dropped one more, the bug fixed here).
pub const CPU_MODEL_MAX: usize = 66;
/// `arch` and `kernel_version`: a `utsname` field holds 64 bytes and a NUL.
pub const UTS_VALUE_MAX: usize = 64;

/// Header values that describe the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    pub arch: String,
    pub host_type: String,
    pub build: String,
    pub kernel_version: String,
    pub system_name: String,
    pub board_name: String,
    pub cpu_model: String,
    pub bios_version: String,
}

impl HostInfo {
    /// Read every fact under `paths.host_root()`.
    pub fn collect(paths: &Paths) -> HostInfo {
        let (machine, release) = uname();
        let dmi = paths.dmi_dir();
        let os = read_os_release(paths);
        HostInfo {
            arch: machine,
            host_type: format!(
                "{}|{}|{}",
                dmi_value(&dmi, "sys_vendor", "sv"),
                dmi_value(&dmi, "product_name", "pn"),
                dmi_value(&dmi, "product_version", "pvr")
            ),
            build: os.build,
            kernel_version: release,
            system_name: os.system_name,
            board_name: format!(
                "{}|{}",
                dmi_value(&dmi, "board_name", "bn"),
                dmi_value(&dmi, "board_vendor", "bv")
            ),
            cpu_model: cpu_model(&paths.cpuinfo_file()),
            bios_version: dmi_value(&dmi, "bios_version", "bv"),
        }
    }

    /// Constant values for unit tests.
    pub fn fixed_for_tests() -> HostInfo {
        HostInfo {
            arch: "x86_64".into(),
            host_type: "no_sv_file|no_pn_file|no_pvr_file".into(),
            build: "0".into(),
            kernel_version: "6.1.0".into(),
            system_name: "unknown".into(),
            board_name: "no_bn_file|no_bv_file".into(),
            cpu_model: "blank".into(),
            bios_version: "no_bv_file".into(),
        }
    }
}

/// Read at most [`MAX_HOST_FILE`] bytes of `path`, not following a final symlink when
/// `nofollow` (the C client opened os-release with `O_NOFOLLOW`). Opened `O_NONBLOCK`, so
/// a FIFO in place of a host file cannot hang record creation.
pub fn read_host_file(path: &Path, nofollow: bool) -> std::io::Result<Vec<u8>> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    opts.custom_flags(flags);
    let mut buf = Vec::new();
    opts.open(path)?.take(MAX_HOST_FILE).read_to_end(&mut buf)?;
    Ok(buf)
}

fn uname() -> (String, String) {
    // SAFETY: `utsname` is plain C data (byte arrays), for which all zeroes is valid.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uname` fills the properly sized struct it is given; the fields are
    // NUL-terminated.
    if unsafe { libc::uname(&mut u) } != 0 {
        return ("unknown".into(), "unknown".into());
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        host_value(&String::from_utf8_lossy(&bytes), UTS_VALUE_MAX)
    };
    (field(&u.machine), field(&u.release))
}

struct OsRelease {
    build: String,
    system_name: String,
}

fn read_os_release(paths: &Paths) -> OsRelease {
    let text = paths
        .os_release_files()
        .iter()
        .find_map(|p| read_host_file(p, true).ok());
    let Some(text) = text else {
        return OsRelease {
            build: "0".into(),
            system_name: "unknown".into(),
        };
    };
    parse_os_release(&String::from_utf8_lossy(&text))
}

fn parse_os_release(text: &str) -> OsRelease {
    let first = |key: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        })
    };
    let id = first("ID=").filter(|v| !v.is_empty());
    let variant = first("VARIANT_ID=").filter(|v| !v.is_empty());
    let build = first("VERSION_ID=").filter(|v| !v.is_empty());
    let system_name = match (id, variant) {
        (Some(id), Some(var)) => format!("{id}_{var}"),
        (Some(id), None) => id,
        (None, _) => "unknown".into(),
    };
    OsRelease {
        build: build.map_or_else(|| "0".into(), |b| host_value(&b, BUILD_MAX)),
        system_name: host_value(&system_name, SYSTEM_NAME_MAX),
    }
}

/// `raw` as a header value: control characters (other than tab) replaced by `?`, then cut
/// to at most `max_bytes` bytes at a character boundary.
pub fn host_value(raw: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(raw.len().min(max_bytes));
    for c in raw.chars() {
        let c = if is_forbidden_header_char(c) { '?' } else { c };
        if out.len() + c.len_utf8() > max_bytes {
            break;
        }
        out.push(c);
    }
    out
}

/// First line of a DMI file: `no_<short>_file` when missing, `blank` when empty or spaces.
fn dmi_value(dmi_dir: &Path, file: &str, short: &str) -> String {
    let Ok(bytes) = read_host_file(&dmi_dir.join(file), false) else {
        return format!("no_{short}_file");
    };
    let text = String::from_utf8_lossy(&bytes);
    let line = text.lines().next().unwrap_or("");
    let line = host_value(line, DMI_VALUE_MAX);
    if line.trim_matches(' ').is_empty() {
        "blank".into()
    } else {
        line
    }
}

fn cpu_model(cpuinfo: &Path) -> String {
    let Ok(bytes) = read_host_file(cpuinfo, false) else {
        return "unknown".into();
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| {
            l.split_once(": ")
                .map(|(_, v)| host_value(v, CPU_MODEL_MAX))
        })
        .unwrap_or_else(|| "blank".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_tree(files: &[(&str, &str)]) -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        for (rel, content) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let paths = Paths::new("/nonexistent-root", dir.path());
        (dir, paths)
    }

    #[test]
    fn empty_host_gives_the_c_fallbacks_with_fixes() {
        let (_d, paths) = host_tree(&[]);
        let h = HostInfo::collect(&paths);
        assert_eq!(h.host_type, "no_sv_file|no_pn_file|no_pvr_file");
        assert_eq!(h.board_name, "no_bn_file|no_bv_file");
        assert_eq!(h.bios_version, "no_bv_file");
        assert_eq!(h.system_name, "unknown");
        assert_eq!(h.build, "0");
        assert_eq!(h.cpu_model, "unknown");
    }

    #[test]
    fn full_host() {
        let (_d, paths) = host_tree(&[
            ("etc/os-release", "NAME=\"Debian\"\nVERSION_ID=\"12\"\nID=debian\nVARIANT_ID=server\nID=other\n"),
            ("sys/class/dmi/id/sys_vendor", "LENOVO\n"),
            ("sys/class/dmi/id/product_name", "20XW"),
            ("sys/class/dmi/id/product_version", "ThinkPad X1 Carbon\n"),
            ("sys/class/dmi/id/board_name", "   \n"),
            ("sys/class/dmi/id/board_vendor", ""),
            ("sys/class/dmi/id/bios_version", "N32ET75W (1.51 )\n"),
            ("proc/cpuinfo", "processor\t: 0\nmodel name\t: Intel(R) Core(TM) i7-1185G7 @ 3.00GHz\nmodel name\t: second\n"),
        ]);
        let h = HostInfo::collect(&paths);
        assert_eq!(h.build, "\"12\"", "quotes kept as in C");
        assert_eq!(h.system_name, "debian_server");
        assert_eq!(
            h.host_type, "LENOVO|20XW|ThinkPad X1 Carbon",
            "no newline: last char kept"
        );
        assert_eq!(h.board_name, "blank|blank");
        assert_eq!(h.bios_version, "N32ET75W (1.51 )");
        assert_eq!(h.cpu_model, "Intel(R) Core(TM) i7-1185G7 @ 3.00GHz");
    }

    #[test]
    fn symlinked_etc_os_release_falls_back_to_usr_lib() {
        let (d, paths) = host_tree(&[(
            "usr/lib/os-release",
            "ID=clear-linux-os\nVERSION_ID=40000\n",
        )]);
        std::os::unix::fs::symlink(
            "../usr/lib/os-release",
            d.path().join("etc-os-release-link"),
        )
        .unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("../usr/lib/os-release", d.path().join("etc/os-release"))
            .unwrap();
        let h = HostInfo::collect(&paths);
        assert_eq!(h.system_name, "clear-linux-os");
        assert_eq!(h.build, "40000");
    }

    #[test]
    fn fifos_in_place_of_host_files_do_not_block() {
        let (d, paths) = host_tree(&[]);
        for rel in [
            "etc/os-release",
            "proc/cpuinfo",
            "sys/class/dmi/id/sys_vendor",
        ] {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(HostInfo::collect(&paths));
        });
        let h = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("HostInfo::collect blocked on a FIFO");
        assert_eq!(h.system_name, "unknown");
        assert_eq!(h.cpu_model, "blank");
        assert!(h.host_type.starts_with("blank|"), "{}", h.host_type);
    }

    /// `content` written to the host file `rel` gives `expected` as the header `get` reads.
    fn check(rel: &str, content: &[u8], get: Getter, expected: &str) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        let h = HostInfo::collect(&Paths::new("/nonexistent-root", dir.path()));
        assert_eq!(
            get(&h),
            expected,
            "{rel}: {:?}",
            String::from_utf8_lossy(content)
        );
    }

    /// Reads one header value of a [`HostInfo`].
    type Getter = fn(&HostInfo) -> &str;

    fn cpu(h: &HostInfo) -> &str {
        &h.cpu_model
    }
    fn build(h: &HostInfo) -> &str {
        &h.build
    }
    fn system_name(h: &HostInfo) -> &str {
        &h.system_name
    }
    fn host_type(h: &HostInfo) -> &str {
        &h.host_type
    }
    fn bios(h: &HostInfo) -> &str {
        &h.bios_version
    }

    #[test]
    fn host_values_are_bounded_and_free_of_control_characters() {
        let x = |n: usize| "x".repeat(n);
        const CPU: &str = "proc/cpuinfo";
        const OS: &str = "etc/os-release";
        const BIOS: &str = "sys/class/dmi/id/bios_version";
        let cases: Vec<(&str, Vec<u8>, Getter, String)> = vec![
            // What the C buffers kept, in bytes.
            (
                CPU,
                format!("model name\t: {}\n", x(100_000)).into(),
                cpu,
                x(CPU_MODEL_MAX),
            ),
            (CPU, format!("model name\t: {}\n", x(66)).into(), cpu, x(66)),
            (
                OS,
                format!("VERSION_ID={}\n", "1".repeat(5000)).into(),
                build,
                "1".repeat(39),
            ),
            (
                OS,
                format!("ID={}\nVARIANT_ID=v\n", x(500)).into(),
                system_name,
                x(79),
            ),
            (
                OS,
                format!("ID=a\nVARIANT_ID={}\n", x(500)).into(),
                system_name,
                format!("a_{}", x(77)),
            ),
            (BIOS, x(100_000).into(), bios, x(DMI_VALUE_MAX)),
            (
                "sys/class/dmi/id/sys_vendor",
                x(100_000).into(),
                host_type,
                format!("{}|no_pn_file|no_pvr_file", x(79)),
            ),
            // Cut at a character boundary, never inside one.
            (
                CPU,
                format!("model name\t: {}\u{e9}\n", x(65)).into(),
                cpu,
                x(65),
            ),
            (
                OS,
                format!("VERSION_ID={}\u{20ac}\n", "1".repeat(38)).into(),
                build,
                "1".repeat(38),
            ),
            (BIOS, "\u{e9}".repeat(100).into(), bios, "\u{e9}".repeat(39)),
            (BIOS, vec![0xff; 100], bios, "\u{fffd}".repeat(26)),
            // Control characters become '?'; tab is allowed in a header value.
            (
                CPU,
                b"model name\t: Intel\x1b[31m CPU\rX\x7f\n".to_vec(),
                cpu,
                "Intel?[31m CPU?X?".into(),
            ),
            (CPU, b"model name\t: a\tb\r\n".to_vec(), cpu, "a\tb".into()),
            (OS, b"VERSION_ID=4\x01x\n".to_vec(), build, "4?x".into()),
            (
                OS,
                b"ID=deb\x1bian\n".to_vec(),
                system_name,
                "deb?ian".into(),
            ),
            (BIOS, "A\rB\u{9b}C\r\n".into(), bios, "A?B?C".into()),
        ];
        for (rel, content, get, expected) in cases {
            check(rel, &content, get, &expected);
        }
    }

    #[test]
    fn an_absurd_host_still_gives_records_the_daemon_accepts() {
        let junk = |prefix: &str| {
            let mut v = prefix.as_bytes().to_vec();
            for i in 0..200_000u32 {
                v.push(match i % 7 {
                    0 => b'\r',
                    1 => 0x1b,
                    2 => 0xc2, // with the next byte: U+0085, a C1 control
                    3 => 0x85,
                    4 => 0xff,
                    5 => b'\t',
                    _ => b'a',
                });
            }
            v
        };
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, content: Vec<u8>| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        };
        write("proc/cpuinfo", junk("model name\t: "));
        let mut os = junk("ID=");
        os.extend(b"\nVARIANT_ID=");
        os.extend(junk(""));
        os.extend(b"\nVERSION_ID=");
        os.extend(junk(""));
        write("etc/os-release", os);
        for f in [
            "sys_vendor",
            "product_name",
            "product_version",
            "board_name",
            "board_vendor",
            "bios_version",
        ] {
            write(&format!("sys/class/dmi/id/{f}"), junk(""));
        }
        let h = HostInfo::collect(&Paths::new("/nonexistent-root", dir.path()));
        let r = crate::record::Record::new(2, "a/b/c", 1, &h).unwrap();
        assert_eq!(r.headers.validate(), Ok(()), "{h:?}");
        for (name, v) in crate::record::HEADER_NAMES.iter().zip(r.headers.0.iter()) {
            assert!(v.len() < 250, "{name}: {} bytes", v.len());
        }
        assert!(h.cpu_model.len() <= CPU_MODEL_MAX && h.build.len() <= BUILD_MAX);
        assert!(h.system_name.len() <= SYSTEM_NAME_MAX && h.bios_version.len() <= DMI_VALUE_MAX);
    }

    #[test]
    fn cpuinfo_without_model_name_is_blank() {
        let (_d, paths) = host_tree(&[("proc/cpuinfo", "processor: 0\n")]);
        assert_eq!(HostInfo::collect(&paths).cpu_model, "blank");
    }
}
