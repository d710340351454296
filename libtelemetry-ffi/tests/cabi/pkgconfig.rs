//! pkg-config: `install.sh` into a temp prefix, then
//! `cc t.c $(pkg-config --cflags --libs libtelemetry)` with `PKG_CONFIG_PATH`; and the
//! `libtelemetry.pc` the build script writes next to the build output.

use std::path::Path;
use std::process::Command;

use telemetrics_tests::cabi::{find_libtelemetry_so, include_dir};
use telemetrics_tests::TestRoot;

use super::c_source;

fn pkg_config(pc_dir: &Path, args: &[&str]) -> String {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libtelemetry")
        .env("PKG_CONFIG_PATH", pc_dir)
        .output()
        .expect("run pkg-config (install pkg-config)");
    assert!(
        out.status.success(),
        "pkg-config {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn installed_pc_file_builds_a_program() {
    let stage = tempfile::tempdir().unwrap();
    let prefix = stage.path().join("usr");
    let install = Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh");
    let so = find_libtelemetry_so();
    let out = Command::new("sh")
        .arg(&install)
        .arg("--prefix")
        .arg(&prefix)
        .arg("--lib")
        .arg(&so)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let libdir = prefix.join("lib");
    for (link, target) in [
        ("libtelemetry.so.4", "libtelemetry.so.4.0.1"),
        ("libtelemetry.so", "libtelemetry.so.4"),
    ] {
        assert_eq!(
            std::fs::read_link(libdir.join(link)).unwrap(),
            Path::new(target)
        );
    }
    assert!(prefix.join("include/telemetry.h").is_file());

    let pc_dir = libdir.join("pkgconfig");
    assert_eq!(
        pkg_config(&pc_dir, &["--modversion"]),
        libtelemetry::VERSION
    );
    let flags = pkg_config(&pc_dir, &["--cflags", "--libs"]);
    assert_eq!(
        flags,
        format!(
            "-I{} -L{} -ltelemetry",
            prefix.join("include").display(),
            libdir.display()
        )
    );

    let exe = stage.path().join("t");
    let mut cc = Command::new("cc");
    cc.args(telemetrics_tests::cabi::STRICT_C_FLAGS)
        .arg(c_source("pkgconfig.c"))
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace());
    let built = cc.output().unwrap();
    assert!(
        built.status.success(),
        "{cc:?}: {}",
        String::from_utf8_lossy(&built.stderr)
    );

    let root = TestRoot::new();
    let mut run = Command::new(&exe);
    root.apply_env(&mut run);
    let ran = run.env("LD_LIBRARY_PATH", &libdir).output().unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "rc=0 opted_in=1\n");
}

#[test]
fn build_output_pc_file_points_at_the_build() {
    let so = find_libtelemetry_so();
    // deps/ → the profile dir, where build.rs writes libtelemetry.pc.
    let deps = so.parent().unwrap();
    let profile = if deps.ends_with("deps") {
        deps.parent().unwrap()
    } else {
        deps
    };
    let flags = pkg_config(profile, &["--cflags", "--libs"]);
    assert_eq!(
        flags,
        format!(
            "-I{} -L{p} -ltelemetry -Wl,-rpath,{p}",
            include_dir().display(),
            p = profile.display()
        )
    );
    // `install.sh --stage` repoints it at the library it links there.
    let link = std::fs::read_link(profile.join("libtelemetry.so.4")).unwrap();
    assert!(
        link == Path::new("libtelemetry.so") || link == Path::new("libtelemetry.so.4.0.1"),
        "{}",
        link.display()
    );
}
