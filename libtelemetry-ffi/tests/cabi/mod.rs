//! Shared helpers: compile each C program of `tests/c/` once per test process, run it in a
//! `TestRoot`.

mod check_libtelemetry;
mod dlopen;
mod elf;
mod errors;
mod pkgconfig;
mod sample;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use telemetrics_tests::cabi::{compile_c, compile_c_unlinked, compile_cxx};
use telemetrics_tests::TestRoot;

/// How a test program is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    C,
    Cxx,
    /// C, not linked with libtelemetry (it dlopens the library).
    CUnlinked,
}

pub fn c_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(name)
}

pub fn work_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cabi");
    std::fs::create_dir_all(&d).expect("create work dir");
    d
}

/// The executable built from `tests/c/<name>.c`, compiled on first use.
pub fn program(name: &str, lang: Lang) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<(String, Lang), PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let map = built.get_or_insert_with(HashMap::new);
    if let Some(p) = map.get(&(name.to_string(), lang)) {
        return p.clone();
    }
    let src = c_source(&format!("{name}.c"));
    // Build under a private name, then rename: test processes running at once never run a
    // half-written file, and reruns replace rather than accumulate executables.
    let out = work_dir().join(format!("{name}-{lang:?}"));
    let tmp = work_dir().join(format!(".{name}-{lang:?}.{}", std::process::id()));
    match lang {
        Lang::C => compile_c(&src, &tmp, &[]),
        Lang::Cxx => compile_cxx(&src, &tmp, &[]),
        Lang::CUnlinked => compile_c_unlinked(&src, &tmp, &["-ldl"]),
    }
    std::fs::rename(&tmp, &out).expect("rename test program");
    map.insert((name.to_string(), lang), out.clone());
    out
}

/// Run `exe` with `args` and the root's environment.
pub fn run_in(root: &TestRoot, exe: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    root.apply_env(&mut cmd);
    cmd.output()
        .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Assert a TAP program passed, showing its output otherwise.
pub fn assert_tap_passed(o: &Output) {
    let text = stdout(o);
    assert!(
        o.status.success() && !text.contains("not ok") && text.contains("1.."),
        "status {:?}\nstdout:\n{text}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The `rc=` values printed by the sample program.
pub fn send_results(o: &Output) -> Vec<i32> {
    stdout(o)
        .lines()
        .filter_map(|l| l.strip_prefix("rc="))
        .map(|v| v.parse().expect("rc value"))
        .collect()
}

/// The `ms=` value printed by the sample program.
pub fn elapsed_ms(o: &Output) -> u64 {
    stdout(o)
        .lines()
        .find_map(|l| l.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no ms= line in {}", stdout(o)))
}
