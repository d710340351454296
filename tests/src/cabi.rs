//! C programs against the built `libtelemetry.so.4`, and a stand-in telemprobd socket.
//!
//! `cargo test` leaves the cdylib in `target/<profile>/deps/libtelemetry.so` (only
//! `cargo build` copies it up to `target/<profile>/`); test executables run from that same
//! `deps/` dir. It is built when the `libtelemetry-ffi` package is part of the test run
//! (`cargo test --workspace`, or `-p libtelemetry-ffi`).
//!
//! [`compile_c`] builds a C file with `-std=c99 -Wall -Wextra -Werror -pedantic` against
//! `libtelemetry-ffi/include/telemetry.h` and that library (through a directory holding
//! `libtelemetry.so.4` and `libtelemetry.so` links, recorded as the program's rpath), so the
//! program runs without `LD_LIBRARY_PATH`. [`RecordListener`] (from [`crate::listener`])
//! accepts connections on a socket path, collects each frame and answers with an `Ack` byte.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Flags every C test program is compiled with.
pub const STRICT_C_FLAGS: &[&str] = &["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"];
/// Flags for compiling the same sources as C++.
pub const STRICT_CXX_FLAGS: &[&str] = &[
    "-x",
    "c++",
    "-std=c++11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-pedantic",
];

fn profile_dir_and_deps() -> (PathBuf, PathBuf) {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        (dir.parent().expect("profile dir").to_path_buf(), dir)
    } else {
        (dir.clone(), dir.join("deps"))
    }
}

/// The built `libtelemetry.so`: in `deps/` next to the running test executable, or in the
/// profile dir above it.
pub fn find_libtelemetry_so() -> PathBuf {
    let (profile, deps) = profile_dir_and_deps();
    for dir in [&deps, &profile] {
        let p = dir.join("libtelemetry.so");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "libtelemetry.so not found in {} or {}; run the tests with `cargo test --workspace` \
         (or build it with `cargo build -p libtelemetry-ffi`)",
        deps.display(),
        profile.display()
    );
}

/// `libtelemetry-ffi/include`, the directory of `telemetry.h`.
pub fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace dir")
        .join("libtelemetry-ffi/include")
}

/// A directory holding `libtelemetry.so.4` and `libtelemetry.so`, both links to
/// [`find_libtelemetry_so`] (`target/<profile>/cabi-lib`). Safe to call from parallel tests.
pub fn lib_dir() -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let so = find_libtelemetry_so();
    let (profile, _) = profile_dir_and_deps();
    let dir = profile.join("cabi-lib");
    std::fs::create_dir_all(&dir).expect("create cabi-lib dir");
    for name in ["libtelemetry.so.4", "libtelemetry.so"] {
        let link = dir.join(name);
        if std::fs::read_link(&link).ok().as_deref() == Some(so.as_path()) {
            continue;
        }
        // Link under a unique name, then rename over: atomic for concurrent callers.
        let tmp = dir.join(format!(
            ".{name}.{}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&so, &tmp).expect("symlink libtelemetry");
        std::fs::rename(&tmp, &link).expect("rename libtelemetry link");
    }
    dir
}

fn compile(
    compiler: &str,
    flags: &[&str],
    src: &Path,
    out: &Path,
    extra_args: &[&str],
    link: bool,
) {
    let mut cmd = Command::new(compiler);
    cmd.args(flags)
        .arg("-I")
        .arg(include_dir())
        .arg(src)
        .arg("-o")
        .arg(out)
        .args(extra_args);
    if link {
        let lib = lib_dir();
        cmd.arg(format!("-L{}", lib.display()))
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            // DT_RPATH, not DT_RUNPATH: it wins over the LD_LIBRARY_PATH cargo sets for
            // tests, which leads to whatever libtelemetry.so.4 a past `cargo build` left in
            // target/<profile> instead of the library under test.
            .arg("-Wl,--disable-new-dtags")
            .arg("-ltelemetry");
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e} (install gcc/g++)"));
    assert!(
        output.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Compile and link the C file `src` into `out` with [`STRICT_C_FLAGS`], `telemetry.h` and
/// `-ltelemetry`; `extra_args` go before `-ltelemetry` (e.g. `-DNAME`, `-ldl`). Panics with
/// the compiler's output on failure.
pub fn compile_c(src: &Path, out: &Path, extra_args: &[&str]) {
    compile("cc", STRICT_C_FLAGS, src, out, extra_args, true);
}

/// [`compile_c`] without linking libtelemetry (programs that `dlopen` it).
pub fn compile_c_unlinked(src: &Path, out: &Path, extra_args: &[&str]) {
    compile("cc", STRICT_C_FLAGS, src, out, extra_args, false);
}

/// [`compile_c`] as C++ (`c++ -x c++ -std=c++11`), to check the header's C++ guards.
pub fn compile_cxx(src: &Path, out: &Path, extra_args: &[&str]) {
    compile("c++", STRICT_CXX_FLAGS, src, out, extra_args, true);
}

/// A stand-in telemprobd socket (see [`crate::listener`]).
pub use crate::listener::RecordListener;
