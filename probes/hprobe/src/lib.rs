//! `hprobe`: the heartbeat probe. Sends one `org.clearlinux/hello/world` record (or
//! `org.clearlinux/heartbeat/ping` with `-H`) whose payload is `hello\n`, optionally followed
//! by the locale (`-l`), the uptime (`-u`) and the installed bundles (`-b`). The timer unit
//! runs `hprobe -Hlu`.
//!
//! Options, messages and exit codes are those of the C probe (getopt_long `f:hHVlub`; an
//! unknown option exits 1). Host facts are read under `TELEMETRICS_HOST_ROOT`: the bundles
//! directory `/usr/share/clear/bundles`, and the uptime from `/proc/uptime` (falling back
//! to sysinfo(2) when that file cannot be read). `--config-file` is accepted as a synonym
//! of `--config_file`.

use std::ffi::{CStr, CString, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libtelemetry::client::send_record;
use libtelemetry::config::check_config_path;
use libtelemetry::getopt::{Getopt, LongOpt};
use libtelemetry::record::MAX_PAYLOAD;
use libtelemetry::{Config, HostInfo, Paths, Record};

pub const EXIT_FAILURE: u8 = 1;
pub const CLASS_HELLO: &str = "org.clearlinux/hello/world";
pub const CLASS_HEARTBEAT: &str = "org.clearlinux/heartbeat/ping";
/// Directory listed by `-b`, under the host root.
pub const BUNDLES_DIR: &str = "/usr/share/clear/bundles";
/// The payload fits the C probe's 8192-byte buffer, NUL included.
const PAYLOAD_LIMIT: usize = MAX_PAYLOAD - 1;
/// Marker that replaces the end of a bundle list too long for the payload.
const CUT_MARKER: &str = "\n...";

const SHORT_OPTS: &str = "f:hHVlub";
const LONG_OPTS: &[LongOpt] = &[
    LongOpt::with_arg("config_file", 'f'),
    LongOpt::with_arg("config-file", 'f'),
    LongOpt::flag("heartbeat", 'H'),
    LongOpt::flag("help", 'h'),
    LongOpt::flag("version", 'V'),
    LongOpt::flag("locale", 'l'),
    LongOpt::flag("uptime", 'u'),
    LongOpt::flag("bundles", 'b'),
];

pub fn usage(prog: &str) -> String {
    format!(
        "{prog}: Usage
  -f,  --config_file    Configuration file. This overides the other parameters
  -H,  --heartbeat      Create a \"heartbeat\" record instead
  -h,  --help           Display this help message
  -l,  --locale         Include locale in the record
  -u,  --uptime         Include uptime in the record
  -b,  --bundles        Include installed bundles in the record
  -V,  --version        Print the program version
"
    )
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub config_file: Option<PathBuf>,
    pub heartbeat: bool,
    pub locale: bool,
    pub uptime: bool,
    pub bundles: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Options),
    /// Print on stdout, exit 0.
    Exit(String),
    /// Print on stderr, exit 1.
    Fail(String),
}

pub fn parse_args(prog: &str, args: Vec<OsString>) -> Parsed {
    let mut o = Options::default();
    for item in Getopt::new(args, SHORT_OPTS, LONG_OPTS) {
        let opt = match item {
            Ok(opt) => opt,
            Err(e) => return Parsed::Fail(format!("{prog}: {e}\n")),
        };
        match opt.short {
            'f' => {
                let path = PathBuf::from(opt.arg.unwrap_or_default());
                if check_config_path(&path).is_err() {
                    return Parsed::Fail("Configuration file path not valid\n".into());
                }
                o.config_file = Some(path);
            }
            'H' => o.heartbeat = true,
            'l' => o.locale = true,
            'u' => o.uptime = true,
            'b' => o.bundles = true,
            'h' => return Parsed::Exit(usage(prog)),
            'V' => return Parsed::Exit(format!("{}\n", libtelemetry::VERSION)),
            _ => {}
        }
    }
    Parsed::Run(o)
}

/// `setlocale(LC_ALL, "")` then the resulting `setlocale(LC_ALL, NULL)`, as the C probe
/// reported it (e.g. `C.UTF-8`, or `LC_CTYPE=...;LC_NUMERIC=...` when categories differ).
pub fn locale_from_env() -> String {
    // SAFETY: setlocale with a valid NUL-terminated string; this is a single-threaded
    // program and nothing else reads the locale concurrently.
    unsafe { libc::setlocale(libc::LC_ALL, c"".as_ptr()) };
    // SAFETY: a NULL locale only queries; the result is NULL or a NUL-terminated string.
    let current = unsafe { libc::setlocale(libc::LC_ALL, std::ptr::null()) };
    if current.is_null() {
        return "C".into();
    }
    // SAFETY: non-NULL, NUL-terminated, copied before any other setlocale call.
    unsafe { CStr::from_ptr(current) }
        .to_string_lossy()
        .into_owned()
}

/// Whole seconds since boot: `/proc/uptime` under the host root, else sysinfo(2).
pub fn uptime_seconds(paths: &Paths) -> i64 {
    let from_file = std::fs::read_to_string(paths.under_host("/proc/uptime"))
        .ok()
        .and_then(|t| {
            let first = t.split_whitespace().next()?;
            let whole = first.split('.').next()?;
            whole.parse::<i64>().ok()
        });
    if let Some(s) = from_file {
        return s;
    }
    // SAFETY: sysinfo fills a zeroed struct of the right type.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a sysinfo struct.
    if unsafe { libc::sysinfo(&mut info) } == 0 {
        info.uptime as i64
    } else {
        0
    }
}

/// Entries of `dir` not starting with `.`, sorted like scandir's `alphasort` (strcoll in the
/// current locale).
pub fn list_bundles(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut names: Vec<CString> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let bytes = name.as_bytes();
        if bytes.first() == Some(&b'.') {
            continue;
        }
        if let Ok(c) = CString::new(bytes) {
            names.push(c);
        }
    }
    // SAFETY: strcoll on two valid NUL-terminated strings.
    names.sort_by(|a, b| unsafe { libc::strcoll(a.as_ptr(), b.as_ptr()) }.cmp(&0));
    Ok(names.into_iter().map(CString::into_bytes).collect())
}

/// The payload: `hello\n`, then the requested facts. A bundle list that does not fit in
/// 8191 bytes is cut and ends in `\n...`, as in the C probe.
pub fn build_payload(
    locale: Option<&str>,
    uptime: Option<i64>,
    bundles: Option<&[Vec<u8>]>,
) -> Vec<u8> {
    let mut p = b"hello\n".to_vec();
    if let Some(l) = locale {
        p.extend_from_slice(format!("LC_ALL: {l}\n").as_bytes());
    }
    if let Some(u) = uptime {
        p.extend_from_slice(format!("uptime: {u}\n").as_bytes());
    }
    if let Some(names) = bundles {
        p.extend_from_slice(format!("\nBundles ({}):\n", names.len()).as_bytes());
        for n in names {
            p.extend_from_slice(n);
            p.push(b'\n');
            if p.len() > PAYLOAD_LIMIT {
                let mut keep = PAYLOAD_LIMIT - CUT_MARKER.len();
                // Never split a UTF-8 character of a bundle name.
                while keep > 0 && (p[keep] & 0xC0) == 0x80 {
                    keep -= 1;
                }
                p.truncate(keep);
                p.extend_from_slice(CUT_MARKER.as_bytes());
                break;
            }
        }
    }
    p
}

fn errno_text(errno: i32) -> String {
    let e = std::io::Error::from_raw_os_error(errno).to_string();
    // "No such file or directory (os error 2)" → strerror's text.
    match e.rfind(" (os error") {
        Some(i) => e[..i].to_string(),
        None => e,
    }
}

/// The whole probe; returns the exit status.
pub fn run(args: Vec<OsString>, stdout: &mut dyn Write, stderr: &mut dyn Write) -> u8 {
    let mut args = args.into_iter();
    let prog = args
        .next()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "hprobe".into());
    let o = match parse_args(&prog, args.collect()) {
        Parsed::Run(o) => o,
        Parsed::Exit(text) => {
            let _ = stdout.write_all(text.as_bytes());
            return 0;
        }
        Parsed::Fail(text) => {
            let _ = stderr.write_all(text.as_bytes());
            return EXIT_FAILURE;
        }
    };
    let mut fail = |msg: String| {
        let _ = writeln!(stderr, "{msg}");
        EXIT_FAILURE
    };
    let paths = Paths::from_env();
    let locale = locale_from_env();
    let bundles = if o.bundles {
        match list_bundles(&paths.under_host(BUNDLES_DIR)) {
            Ok(b) => Some(b),
            Err(e) => {
                return fail(format!(
                    "ERROR: scandir failed: {}",
                    errno_text(e.raw_os_error().unwrap_or(libc::EIO))
                ))
            }
        }
    } else {
        None
    };
    let payload = build_payload(
        o.locale.then_some(locale.as_str()),
        o.uptime.then(|| uptime_seconds(&paths)),
        bundles.as_deref(),
    );
    let class = if o.heartbeat {
        CLASS_HEARTBEAT
    } else {
        CLASS_HELLO
    };
    let mut record = match Record::new(1, class, 1, &HostInfo::collect(&paths)) {
        Ok(r) => r,
        Err(e) => {
            return fail(format!(
                "Failed to create record: {}",
                errno_text(e.errno())
            ))
        }
    };
    if let Err(e) = record.set_payload(&payload) {
        return fail(format!(
            "Failed to set record payload: {}",
            errno_text(e.errno())
        ));
    }
    let cfg = match Config::load(&paths, o.config_file.as_deref()) {
        Ok((cfg, _)) => cfg,
        // The file and line at fault, then the C probe's message.
        Err(e) => {
            return fail(format!(
                "{e}\nFailed to send record to daemon: {}",
                errno_text(e.errno())
            ))
        }
    };
    let cfg_path = o
        .config_file
        .as_deref()
        .map(|p| p.to_string_lossy().into_owned());
    match send_record(&paths, &cfg.socket_path, &record, cfg_path.as_deref()) {
        Ok(_) => {
            let _ = writeln!(stdout, "Successfully sent record to daemon.");
            0
        }
        Err(e) => fail(format!(
            "Failed to send record to daemon: {}",
            errno_text(e.errno())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_shapes() {
        assert_eq!(build_payload(None, None, None), b"hello\n");
        assert_eq!(
            build_payload(Some("C.UTF-8"), Some(518), None),
            b"hello\nLC_ALL: C.UTF-8\nuptime: 518\n"
        );
        let names = vec![b"editors".to_vec(), b"os-core".to_vec()];
        assert_eq!(
            build_payload(None, None, Some(&names)),
            b"hello\n\nBundles (2):\neditors\nos-core\n"
        );
    }

    #[test]
    fn long_bundle_list_is_cut_at_8191_bytes() {
        let names: Vec<Vec<u8>> = (0..2000)
            .map(|i| format!("bundle-{i:04}").into_bytes())
            .collect();
        let p = build_payload(None, None, Some(&names));
        assert_eq!(p.len(), PAYLOAD_LIMIT);
        assert!(p.ends_with(b"\n..."));
        // Exactly fitting lists are not cut.
        let header = "hello\n\nBundles (1):\n".len();
        let exact = vec![vec![b'x'; PAYLOAD_LIMIT - header - 1]];
        let p = build_payload(None, None, Some(&exact));
        assert_eq!(p.len(), PAYLOAD_LIMIT);
        assert!(p.ends_with(b"x\n"));
    }

    #[test]
    fn options() {
        let parse = |a: &[&str]| parse_args("hprobe", a.iter().map(OsString::from).collect());
        assert_eq!(
            parse(&["-Hlub"]),
            Parsed::Run(Options {
                heartbeat: true,
                locale: true,
                uptime: true,
                bundles: true,
                config_file: None
            })
        );
        assert_eq!(
            parse(&["-x"]),
            Parsed::Fail("hprobe: invalid option -- 'x'\n".into())
        );
        assert_eq!(
            parse(&["-f", "rel.conf"]),
            Parsed::Fail("Configuration file path not valid\n".into())
        );
    }
}
