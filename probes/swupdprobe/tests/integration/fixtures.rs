//! swupd telemetry files as swupd-client writes them, for every class of its table.

use std::io::Write;
use std::path::Path;

/// `(file name, classification, severity, payload_format_version, content)`.
pub struct SwupdFile {
    pub name: &'static str,
    pub classification: &'static str,
    pub severity: u32,
    pub version: u32,
    pub content: String,
}

const HEAD: &str = "PACKAGE_NAME=swupd-client\nPACKAGE_VERSION=5.1.0\n";

/// One file per class of swupd-client's table, plus an old-version file.
pub fn every_class() -> Vec<SwupdFile> {
    let f = |name, class, severity, version, body: &str| SwupdFile {
        name,
        classification: class,
        severity,
        version,
        content: format!("{HEAD}{body}"),
    };
    vec![
        f(
            "2.update.1.a8Kq2Z",
            "org.clearlinux/swupd-client/update",
            1,
            2,
            "current_version=39000\nserver_version=39010\nresult=0\ntime= 42.5\nbytes=73455616\n",
        ),
        f(
            "2.update.4.Zz09Ab",
            "org.clearlinux/swupd-client/update",
            4,
            2,
            "current_version=39010\nserver_version=39020\nresult=16\ntime=  3.1\nbytes=0\n",
        ),
        f(
            "2.bundleadd.1.Qw3rTy",
            "org.clearlinux/swupd-client/bundleadd",
            1,
            2,
            "bundles=editors dev-utils\ncurrent_version=39010\nresult=0\nbytes=1048576\n",
        ),
        f(
            "2.bundleadd.2.Mn4bVc",
            "org.clearlinux/swupd-client/bundleadd",
            2,
            2,
            "bundles=no-such-bundle\ncurrent_version=39010\nresult=3\nbytes=0\n",
        ),
        f(
            "2.bundleremove.4.Lk8jHg",
            "org.clearlinux/swupd-client/bundleremove",
            4,
            2,
            "bundle=editors\ncurrent_version=39010\nresult=7\nbytes=0\n",
        ),
        f(
            "2.verify.4.Pp0oIi",
            "org.clearlinux/swupd-client/verify",
            4,
            2,
            "fix=1\nret=1\ncurrent_version=39010\nfile_replaced_count=2\n\
file_not_replaced_count=0\nfile_missing_count=1\nfile_fixed_count=3\nfile_not_fixed_count=0\n\
file_deleted_count=0\nfile_not_deleted_count=0\nfile_mismatch_count=3\n\
file_extraneous_count=0\nbytes=4096\n",
        ),
        f(
            "2.inconsistent-file-hash.4.Uu7yTt",
            "org.clearlinux/swupd-client/inconsistent-file-hash",
            4,
            2,
            "filename=/usr/bin/vim\nhash1=8a5fd34ab2fc7b4e9c3c6b1f0e2d4a6b\nversion1=39000\n\
hash2=0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a\nversion2=39010\n",
        ),
        f(
            "2.unexpected-condition.4.Rr6eWw",
            "org.clearlinux/swupd-client/unexpected-condition",
            4,
            2,
            "file=src/swupd_lib/manifest.c\nline=412\n",
        ),
        // An older writer's version: class unknown, severity still the third token.
        f(
            "1.update.3.Oo1dVv",
            "org.clearlinux/swupd-client/unknown",
            3,
            1,
            "current_version=30000\nserver_version=30010\n",
        ),
    ]
}

/// Publish like swupd does: write a temporary file, then rename it into `dir`.
pub fn publish(dir: &Path, name: &str, content: &[u8]) {
    let tmp = dir.join(format!(".{name}.part"));
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(content).unwrap();
    drop(f);
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// The backend's (removed) update matrix: `lines[2]` = `current_version=N`,
/// `lines[3]` = `server_version=N`.
pub fn backend_update_versions(payload: &str) -> Option<(u64, u64)> {
    let lines: Vec<&str> = payload.split('\n').collect();
    let from = lines
        .get(2)?
        .strip_prefix("current_version=")?
        .parse()
        .ok()?;
    let to = lines
        .get(3)?
        .strip_prefix("server_version=")?
        .parse()
        .ok()?;
    Some((from, to))
}
