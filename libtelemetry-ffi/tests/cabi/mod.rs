//! Shared helpers: compile each C program of `tests/c/` once per test process, run it in a
//! `TestRoot`.

mod check_libtelemetry;
mod const_config;
mod dlopen;
mod elf;
mod errors;
mod installed;
mod pkgconfig;
mod sample;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use telemetrics_tests::cabi::{compile_c, compile_c_unlinked, compile_cxx, find_libtelemetry_so};
use telemetrics_tests::TestRoot;

/// How a test program is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    C,
    Cxx,
    /// C, not linked with libtelemetry (it dlopens the library).
    CUnlinked,
    /// C, linked against the library `install.sh` installs ([`installed_libdir`]).
    CInstalled,
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
        Lang::CInstalled => {
            let lib = installed_libdir();
            compile_c_unlinked(
                &src,
                &tmp,
                &[
                    &format!("-L{}", lib.display()),
                    &format!("-Wl,-rpath,{}", lib.display()),
                    // DT_RPATH, not DT_RUNPATH: it wins over the LD_LIBRARY_PATH cargo sets
                    // for tests, which leads to the cdylib in target/<profile>.
                    "-Wl,--disable-new-dtags",
                    "-ltelemetry",
                ],
            )
        }
    }
    std::fs::rename(&tmp, &out).expect("rename test program");
    map.insert((name.to_string(), lang), out.clone());
    out
}

/// `install.sh` run on this build into a prefix under the work dir (once per test process):
/// `libtelemetry.so.4.0.1` linked by `cc` from the `libtelemetry.a` next to the cdylib.
/// Returns the prefix; see [`installed_libdir`].
pub fn install_prefix() -> &'static Path {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let prefix = work_dir().join("installed/usr");
        run_install_sh(&[
            "--prefix",
            &prefix.display().to_string(),
            "--lib",
            &staticlib().display().to_string(),
        ]);
        prefix
    })
}

/// `<install_prefix>/lib`, the installed `libtelemetry.so*`.
pub fn installed_libdir() -> PathBuf {
    install_prefix().join("lib")
}

/// The crate's staticlib, built next to the cdylib (`deps/` under `cargo test`).
pub fn staticlib() -> PathBuf {
    let a = find_libtelemetry_so().with_file_name("libtelemetry.a");
    assert!(a.is_file(), "{} not built", a.display());
    a
}

/// Run `libtelemetry-ffi/install.sh` with `args`; panics with its output on failure.
pub fn run_install_sh(args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh");
    let out = Command::new("sh")
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "install.sh {args:?}: {:?}\n{}{}",
        out.status,
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
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
