//! The Debian packaging (`packaging/`): the maintainer scripts and the unit list they use,
//! and `packaging/build-deb` run on a stand-in build output. The packages themselves are
//! installed, upgraded and purged under systemd by `tests/system/run`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::common::{files_with_suffix, have, installed_binaries, repo, stub_staticlib};

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn enabled_units() -> Vec<String> {
    read(&repo().join("packaging/enabled-units"))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn maintainer_scripts_parse() {
    for script in [
        "packaging/debian/postinst",
        "packaging/debian/prerm",
        "packaging/debian/postrm",
        "packaging/systemd-setup",
    ] {
        let out = Command::new("sh")
            .arg("-n")
            .arg(repo().join(script))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("bash")
        .arg("-n")
        .arg(repo().join("packaging/build-deb"))
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// Every unit with an `[Install]` section is enabled at installation, except the two
/// daemons' services, which their socket and path units start on demand.
#[test]
fn enabled_units_are_the_installable_ones() {
    let enabled: BTreeSet<String> = enabled_units().into_iter().collect();
    let installable: BTreeSet<String> = files_with_suffix(
        &repo().join("systemd"),
        &[".service", ".socket", ".path", ".timer"],
    )
    .into_iter()
    .filter(|u| read(u).lines().any(|l| l.trim() == "[Install]"))
    .map(|u| u.file_name().unwrap().to_string_lossy().into_owned())
    .filter(|u| u != "telemprobd.service" && u != "telempostd.service")
    .collect();
    assert_eq!(enabled, installable);
}

/// `packaging/build-deb --no-build` on a build output of small C programs and a stub
/// library: three packages with the expected files, control fields and filled-in scripts.
#[test]
fn build_deb_lays_out_three_packages() {
    for tool in [
        "dpkg-deb",
        "dpkg-shlibdeps",
        "dpkg-gencontrol",
        "cc",
        "ar",
        "strip",
    ] {
        assert!(
            have(tool),
            "{tool} not found (make check installs dpkg-dev, gcc, binutils)"
        );
    }
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("target");
    std::fs::create_dir_all(&target).unwrap();
    let src = t.path().join("main.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    for bin in installed_binaries() {
        let ok = Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(target.join(&bin))
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    stub_staticlib(&target.join("libtelemetry.a"));

    let out_dir = t.path().join("debs");
    let out = Command::new(repo().join("packaging/build-deb"))
        .args(["--no-build", "--target-dir"])
        .arg(&target)
        .arg("--out")
        .arg(&out_dir)
        .env("TMPDIR", t.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-deb failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = |pkg: &str| {
        let found: Vec<_> = std::fs::read_dir(&out_dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                n.starts_with(&format!("{pkg}_{}_", libtelemetry::VERSION)) && n.ends_with(".deb")
            })
            .collect();
        assert_eq!(found.len(), 1, "{pkg}: {found:?}");
        found[0].clone()
    };
    let contents = |pkg: &str| -> BTreeSet<String> {
        let out = Command::new("dpkg-deb")
            .arg("--fsys-tarfile")
            .arg(deb(pkg))
            .output()
            .unwrap();
        assert!(out.status.success());
        let tar = Command::new("tar")
            .arg("-t")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        tar.stdin.as_ref().unwrap().write_all(&out.stdout).unwrap();
        let listing = tar.wait_with_output().unwrap();
        String::from_utf8_lossy(&listing.stdout)
            .lines()
            .map(|l| l.trim_start_matches("./").to_string())
            .filter(|l| !l.is_empty() && !l.ends_with('/'))
            .collect()
    };
    let field = |pkg: &str, name: &str| -> String {
        let out = Command::new("dpkg-deb")
            .arg("-f")
            .arg(deb(pkg))
            .arg(name)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };

    let main = contents("telemetrics");
    for bin in installed_binaries() {
        assert!(
            main.contains(&format!("usr/bin/{bin}")),
            "{bin} not packaged"
        );
    }
    for unit in files_with_suffix(
        &repo().join("systemd"),
        &[".service", ".socket", ".path", ".timer"],
    ) {
        let name = unit.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            main.contains(&format!("usr/lib/systemd/system/{name}")),
            "{name}"
        );
    }
    for f in [
        "usr/lib/sysusers.d/telemetrics.conf",
        "usr/lib/tmpfiles.d/telemetrics-dirs.conf",
        "usr/lib/sysctl.d/40-crash-probe.conf",
        "usr/lib/systemd/system.conf.d/40-core-ulimit.conf",
        "usr/share/defaults/telemetrics/telemetrics.conf",
        "usr/share/man/man1/telemctl.1.gz",
        "usr/share/man/man5/telemetrics.conf.5.gz",
        "usr/share/doc/telemetrics/copyright",
        "usr/share/doc/telemetrics/changelog.gz",
    ] {
        assert!(main.contains(f), "telemetrics lacks {f}");
    }
    assert!(!main
        .iter()
        .any(|f| f.contains("libtelemetry") || f.contains("man3")));
    let lib = contents("libtelemetry4");
    assert!(lib.iter().any(|f| f.ends_with("/libtelemetry.so.4.0.1")));
    assert!(lib.iter().any(|f| f.ends_with("/libtelemetry.so.4")));
    let dev = contents("libtelemetry-dev");
    for f in [
        "usr/include/telemetry.h",
        "usr/share/man/man3/tm_set_config_file.3.gz",
    ] {
        assert!(dev.contains(f), "libtelemetry-dev lacks {f}");
    }
    assert!(dev.iter().any(|f| f.ends_with("/libtelemetry.so")));
    assert!(dev
        .iter()
        .any(|f| f.ends_with("/pkgconfig/libtelemetry.pc")));

    let depends = field("telemetrics", "Depends");
    assert!(depends.contains("systemd"), "{depends}");
    assert!(depends.contains("libc6"), "{depends}");
    assert!(field("libtelemetry-dev", "Depends")
        .contains(&format!("libtelemetry4 (= {})", libtelemetry::VERSION)));

    // The maintainer scripts, with every unit list filled in.
    let ctrl = t.path().join("ctrl");
    assert!(Command::new("dpkg-deb")
        .arg("-e")
        .arg(deb("telemetrics"))
        .arg(&ctrl)
        .status()
        .unwrap()
        .success());
    for script in ["postinst", "prerm", "postrm"] {
        let text = read(&ctrl.join(script));
        assert!(!text.contains('@'), "{script} has an unfilled placeholder");
    }
    let postinst = read(&ctrl.join("postinst"));
    assert!(postinst.contains(&format!("ENABLED_UNITS=\"{}\"", enabled_units().join(" "))));
    assert!(postinst.contains("systemd-sysusers"));
    assert!(postinst.contains("systemd-tmpfiles"));
    assert!(read(&ctrl.join("postrm")).contains("rm -rf"));
}
