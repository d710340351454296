//! A throw-away `TELEMETRICS_ROOT` and `TELEMETRICS_HOST_ROOT`.

use std::path::{Path, PathBuf};
use std::process::Command;

use libtelemetry::paths::{HOST_ROOT_ENV, ROOT_ENV};
use libtelemetry::Paths;

/// A temp dir holding `root/` (the suite's files) and `host/` (fixture host facts), with
/// the spool/state/log dirs created, a config file at `root/etc/telemetrics/telemetrics.conf`
/// whose `socket_path` and `spool_dir` point inside the root, and the host opted in.
pub struct TestRoot {
    dir: tempfile::TempDir,
    pub paths: Paths,
    /// Extra `[settings]` lines appended to the generated config.
    extra_settings: Vec<String>,
}

impl TestRoot {
    pub fn new() -> TestRoot {
        // Short base path: AF_UNIX socket paths are limited to 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("tm")
            .tempdir_in(std::env::temp_dir())
            .expect("create temp root");
        let paths = Paths::new(dir.path().join("root"), dir.path().join("host"));
        let t = TestRoot {
            dir,
            paths,
            extra_settings: Vec::new(),
        };
        for d in [
            t.paths.etc_dir(),
            t.paths.default_spool_dir(),
            t.paths.state_dir(),
            t.paths.records_dir(),
            t.paths
                .default_socket_path()
                .parent()
                .unwrap()
                .to_path_buf(),
            t.paths.pstore_cache_dir(),
        ] {
            std::fs::create_dir_all(&d).expect("create dir");
        }
        t.write_host_file("etc/os-release", "ID=testos\nVERSION_ID=42\n");
        t.write_host_file(
            "proc/cpuinfo",
            "processor\t: 0\nmodel name\t: Test CPU @ 1.00GHz\n",
        );
        t.write_host_file(
            "proc/sys/kernel/random/boot_id",
            "23156fd8-5386-4bfa-ae58-eb2136e72a04\n",
        );
        t.opt_in();
        t.write_config();
        t
    }

    /// The temp dir holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.paths.etc_config_file()
    }

    pub fn socket_path(&self) -> PathBuf {
        self.paths.default_socket_path()
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.paths.default_spool_dir()
    }

    /// Add `key=value` to `[settings]` and rewrite the config.
    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.extra_settings
            .retain(|l| !l.starts_with(&format!("{key}=")));
        self.extra_settings.push(format!("{key}={value}"));
        self.write_config();
        self
    }

    fn write_config(&self) {
        let mut text = format!(
            "[settings]\nsocket_path={}\nspool_dir={}\nserver=http://127.0.0.1:9/v2/collector\n",
            self.socket_path().display(),
            self.spool_dir().display()
        );
        for l in &self.extra_settings {
            text.push_str(l);
            text.push('\n');
        }
        std::fs::write(self.config_path(), text).expect("write config");
    }

    pub fn opt_in(&self) {
        std::fs::write(self.paths.opt_in_file(), "").expect("opt in");
    }

    pub fn opt_out(&self) {
        let _ = std::fs::remove_file(self.paths.opt_in_file());
    }

    /// Write `rel` (relative to the host root).
    pub fn write_host_file(&self, rel: &str, content: &str) {
        let p = self.paths.host_root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).expect("host dir");
        std::fs::write(p, content).expect("host file");
    }

    /// A `Command` for one of the suite's binaries with both roots set.
    pub fn command(&self, bin: &str) -> Command {
        let mut c = Command::new(bin_path(bin));
        self.apply_env(&mut c);
        c
    }

    /// Run one of the suite's binaries to completion with `-f <config> args…`.
    pub fn run_with_config(&self, bin: &str, args: &[&str]) -> std::process::Output {
        self.command(bin)
            .arg("-f")
            .arg(self.config_path())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {bin}: {e}"))
    }

    /// Set `TELEMETRICS_ROOT` / `TELEMETRICS_HOST_ROOT` on `c`.
    pub fn apply_env(&self, c: &mut Command) {
        c.env(ROOT_ENV, self.paths.root())
            .env(HOST_ROOT_ENV, self.paths.host_root());
    }

    /// Staged files (not temp/dot files) in the spool dir, sorted by name.
    pub fn staged_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.spool_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// A listing of the whole temp tree, for failure dumps.
    pub fn tree(&self) -> String {
        let mut out = String::new();
        walk(self.dir.path(), self.dir.path(), &mut out, 0);
        out
    }
}

impl Default for TestRoot {
    fn default() -> Self {
        TestRoot::new()
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- test root {} ---\n{}",
                self.dir.path().display(),
                self.tree()
            );
            if std::env::var_os("TELEMETRICS_KEEP_TEST_ROOT").is_some() {
                let p = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
                eprintln!("kept {}", p.display());
            }
        }
    }
}

fn walk(base: &Path, dir: &Path, out: &mut String, depth: usize) {
    if depth > 8 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let rel = p.strip_prefix(base).unwrap_or(&p);
        let md = std::fs::symlink_metadata(&p).ok();
        let len = md.as_ref().map_or(0, |m| m.len());
        out.push_str(&format!("{} ({len} bytes)\n", rel.display()));
        if md.map(|m| m.is_dir()).unwrap_or(false) {
            walk(base, &p, out, depth + 1);
        }
    }
}

/// Path of one of the suite's binaries, built by `cargo test --workspace` into the target
/// profile dir (the parent of this test executable's `deps/` dir).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "binary {} not built; run the tests with `cargo test --workspace`",
        p.display()
    );
    p
}
