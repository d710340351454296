//! The library users install: `install.sh` links `libtelemetry.so.4.0.1` with `cc` (GNU ld)
//! from the crate's staticlib and `telemetry.sym`, so each version node records its parent
//! as in the C library. (The sample program's byte-exact send against it is in `sample.rs`.)

use std::path::Path;
use std::process::Command;

use super::elf::{assert_c_library_abi, assert_versioned_references, Parents};
use super::{installed_libdir, program, run_install_sh, staticlib, Lang};

#[test]
fn installed_library_has_the_c_version_nodes_with_their_parents() {
    let lib = installed_libdir();
    assert_c_library_abi(&lib.join("libtelemetry.so.4.0.1"), Parents::AsInC);
    for (link, target) in [
        ("libtelemetry.so.4", "libtelemetry.so.4.0.1"),
        ("libtelemetry.so", "libtelemetry.so.4"),
    ] {
        assert_eq!(
            std::fs::read_link(lib.join(link)).unwrap(),
            Path::new(target)
        );
    }
}

#[test]
fn programs_linked_against_the_installed_library_load_it() {
    let exe = program("sample", Lang::CInstalled);
    assert_versioned_references(&exe);
    // What ld.so resolves (ldd's mechanism: the program itself does not run).
    let out = Command::new(&exe)
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "libtelemetry.so.4 => {}",
        installed_libdir().join("libtelemetry.so.4").display()
    );
    assert!(listing.contains(&expected), "{listing}");
}

#[test]
fn stage_links_the_build_output_with_parents() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(staticlib(), dir.path().join("libtelemetry.a")).unwrap();
    run_install_sh(&["--stage", &dir.path().display().to_string()]);
    assert_eq!(
        std::fs::read_link(dir.path().join("libtelemetry.so.4")).unwrap(),
        Path::new("libtelemetry.so.4.0.1")
    );
    assert_c_library_abi(&dir.path().join("libtelemetry.so.4.0.1"), Parents::AsInC);
}

/// The system libraries `install.sh` links are what rustc says a staticlib needs.
#[test]
fn install_sh_links_the_native_libraries_rustc_asks_for() {
    let script =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh")).unwrap();
    let hard_coded = script
        .lines()
        .find_map(|l| l.strip_prefix("native_libs=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("native_libs=\"...\" line in install.sh");

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("empty.rs");
    std::fs::write(&src, "").unwrap();
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--crate-type", "staticlib", "--crate-name", "probe"])
        .args(["--print", "native-static-libs", "-o"])
        .arg(dir.path().join("libprobe.a"))
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("run {rustc:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let printed = stderr
        .lines()
        .find_map(|l| l.strip_prefix("note: native-static-libs: "))
        .unwrap_or_else(|| panic!("no native-static-libs note in {stderr}"));
    assert_eq!(
        hard_coded,
        printed.trim(),
        "update native_libs in install.sh"
    );
}
