//! Helpers shared by the test modules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use telemetrics_tests::TestRoot;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The telemctl binary under test, with the root's env, no pager and fixed TZ.
pub fn telemctl(root: &TestRoot) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_telemctl"));
    root.apply_env(&mut c);
    c.env("TZ", "UTC")
        .env_remove("TELEMCTL_SYSTEMCTL")
        .env_remove("TELEMCTL_TMPFILES");
    c
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(mut c: Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("run telemctl");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Files directly in `dir` whose name ends with one of `suffixes`, sorted.
pub fn files_with_suffix(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    suffixes.iter().any(|s| name.ends_with(s))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Names of the binaries the suite installs: `[[bin]] name`s, `src/main.rs` packages and
/// `src/bin/*.rs` files of the crates `daemon/`, `telemctl/` and `probes/*/` (not the test
/// harness or the benchmarks).
pub fn installed_binaries() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut crates = vec![
        repo().join("daemon/probd"),
        repo().join("daemon/postd"),
        repo().join("telemctl"),
    ];
    if let Ok(rd) = std::fs::read_dir(repo().join("probes")) {
        for sub in rd.flatten() {
            if sub.path().join("Cargo.toml").is_file() {
                crates.push(sub.path());
            }
        }
    }
    for c in crates {
        let manifest = std::fs::read_to_string(c.join("Cargo.toml")).unwrap_or_default();
        let mut in_bin = false;
        let mut in_package = false;
        let mut package = None;
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
                in_package = line == "[package]";
                continue;
            }
            if let Some(v) = line.strip_prefix("name").map(str::trim_start) {
                if let Some(v) = v.strip_prefix('=') {
                    let v = v.trim().trim_matches('"').to_string();
                    if in_bin {
                        names.insert(v);
                    } else if in_package {
                        package = Some(v);
                    }
                }
            }
        }
        if let (Some(p), true) = (package, c.join("src/main.rs").is_file()) {
            names.insert(p);
        }
        if let Ok(rd) = std::fs::read_dir(c.join("src/bin")) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "rs") {
                    names.insert(p.file_stem().unwrap().to_string_lossy().into_owned());
                } else if p.join("main.rs").is_file() {
                    names.insert(p.file_name().unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    names
}

/// Whether `prog` can be run (found on PATH).
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A `libtelemetry.a` holding stand-ins for the 7 entry points, so install.sh can link it.
pub fn stub_staticlib(out: &Path) {
    assert!(
        have("cc") && have("ar"),
        "cc and ar are needed (gcc, binutils)"
    );
    let dir = out.parent().unwrap();
    let src = dir.join("stub.c");
    std::fs::write(
        &src,
        "int tm_set_config_file(const char *c) { (void)c; return 0; }\n\
         void tm_free_record(void *r) { (void)r; }\n\
         int tm_create_record(void **r, unsigned s, char *c, unsigned v) { (void)r; (void)s; (void)c; (void)v; return 0; }\n\
         int tm_set_payload(void *r, char *p) { (void)r; (void)p; return 0; }\n\
         int tm_send_record(void *r) { (void)r; return 0; }\n\
         int tm_set_event_id(void *r, char *e) { (void)r; (void)e; return 0; }\n\
         int tm_is_opted_in(void) { return 0; }\n",
    )
    .unwrap();
    let obj = dir.join("stub.o");
    let ok = Command::new("cc")
        .args(["-fPIC", "-c", "-o"])
        .arg(&obj)
        .arg(&src)
        .status()
        .unwrap()
        .success()
        && Command::new("ar")
            .arg("rcs")
            .arg(out)
            .arg(&obj)
            .status()
            .unwrap()
            .success();
    assert!(ok, "building the stub libtelemetry.a failed");
    std::fs::remove_file(src).unwrap();
    std::fs::remove_file(obj).unwrap();
}
