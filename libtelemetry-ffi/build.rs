//! Link `libtelemetry.so` as the C library was linked: SONAME `libtelemetry.so.4` and the
//! version nodes of `telemetry.sym`; then stage the build output for C users.
//!
//! rustc adds its own anonymous version script and links with rust-lld, which then binds
//! every export to the anonymous node; the `.symver` directives in `src/lib.rs` bind each
//! symbol to its node, and the script below defines the nodes. (GNU ld refuses to combine
//! the two scripts, so keep rustc's default linker.) rust-lld writes no version-node
//! parents: the library users install is linked instead by `install.sh` with `cc` (GNU ld)
//! from the crate's staticlib, and has them. `tests/cabi/elf.rs` and
//! `tests/cabi/installed.rs` read the built files to check the result.
//!
//! Staging: next to the `libtelemetry.so` that `cargo build` places in `target/<profile>/`,
//! this writes `libtelemetry.so.4 -> libtelemetry.so` and `libtelemetry.pc` (pointing at
//! that directory and at `include/`), so that
//! `PKG_CONFIG_PATH=target/<profile> pkg-config --cflags --libs libtelemetry` works on the
//! build output (`install.sh --stage target/<profile>` then links the parent-carrying
//! `libtelemetry.so.4.0.1` there and points `libtelemetry.so.4` at it). `install.sh`
//! installs under a real prefix.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=telemetry.sym");
    println!("cargo::rerun-if-changed=libtelemetry.pc.in");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    println!("cargo::rustc-cdylib-link-arg=-Wl,-soname,libtelemetry.so.4");
    println!(
        "cargo::rustc-cdylib-link-arg=-Wl,--version-script={}",
        manifest.join("telemetry.sym").display()
    );
    if let Some(profile_dir) = profile_dir() {
        if let Err(e) = stage_build_output(&manifest, &profile_dir) {
            println!(
                "cargo::warning=cannot stage libtelemetry.pc in {}: {e}",
                profile_dir.display()
            );
        }
    }
}

/// `target/<profile>` (or `target/<triple>/<profile>`): `OUT_DIR` is
/// `<profile dir>/build/<package>-<hash>/out`.
fn profile_dir() -> Option<PathBuf> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR")?);
    let build = out.parent()?.parent()?;
    if build.file_name()? != "build" {
        return None;
    }
    Some(build.parent()?.to_path_buf())
}

fn stage_build_output(manifest: &Path, profile_dir: &Path) -> std::io::Result<()> {
    let template = std::fs::read_to_string(manifest.join("libtelemetry.pc.in"))?;
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let pc = template
        .replace("@prefix@", &profile_dir.display().to_string())
        .replace("@libdir@", "${prefix}")
        .replace(
            "@includedir@",
            &manifest.join("include").display().to_string(),
        )
        .replace("@version@", &version)
        // Uninstalled library: let programs find it without LD_LIBRARY_PATH.
        .replace("@extra_libs@", " -Wl,-rpath,${libdir}");
    write_if_changed(&profile_dir.join("libtelemetry.pc"), &pc)?;
    let link = profile_dir.join("libtelemetry.so.4");
    if std::fs::read_link(&link).is_err() {
        let tmp = profile_dir.join(format!(".libtelemetry.so.4.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink("libtelemetry.so", &tmp)?;
        std::fs::rename(&tmp, &link)?;
    }
    Ok(())
}

/// Parallel cargo invocations (build, clippy, test) may run this at once: write a temp file
/// and rename it over the target, and only when the content changes.
fn write_if_changed(path: &Path, content: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(content) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("pc.{}", std::process::id()));
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}
