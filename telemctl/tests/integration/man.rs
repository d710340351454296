//! Every man page in `man/` (the probes' too) lints clean, and the pages cover the suite.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{have, installed_binaries, repo};

/// `man/<name>.<section>` files, sorted.
pub fn pages() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("man"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && section(p).is_some())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no man pages in man/");
    v
}

/// The section digit of `name.N`.
pub fn section(p: &Path) -> Option<char> {
    let ext = p.extension()?.to_str()?;
    let mut c = ext.chars();
    let s = c.next()?;
    (c.next().is_none() && ('1'..='9').contains(&s)).then_some(s)
}

fn lint(prog: &str, args: &[&str], page: &Path) -> Option<String> {
    let out = Command::new(prog).args(args).arg(page).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (!out.status.success() || !text.is_empty())
        .then(|| format!("{prog} {}:\n{text}", page.display()))
}

#[test]
fn every_page_lints_clean() {
    let mandoc = have("mandoc");
    let groff = have("groff");
    assert!(
        mandoc || groff,
        "neither mandoc nor groff is installed (make check installs them: apt-get install mandoc groff)"
    );
    let mut problems = Vec::new();
    for page in pages() {
        if mandoc {
            problems.extend(lint("mandoc", &["-Tlint", "-W", "warning"], &page));
        }
        if groff {
            problems.extend(lint("groff", &["-man", "-ww", "-z"], &page));
        }
        // The title line names the file.
        let text = std::fs::read_to_string(&page).unwrap();
        let th = text
            .lines()
            .find(|l| l.starts_with(".TH "))
            .unwrap_or_else(|| panic!("{}: no .TH", page.display()));
        let mut f = th.split_whitespace().skip(1);
        let (title, sect) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        let stem = page.file_stem().unwrap().to_string_lossy().to_uppercase();
        assert_eq!(
            title.trim_matches('"'),
            stem,
            "{}: .TH title",
            page.display()
        );
        assert_eq!(
            sect,
            section(&page).unwrap().to_string(),
            "{}",
            page.display()
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn pages_cover_binaries_library_and_config() {
    let man = repo().join("man");
    let mut missing = Vec::new();
    for bin in installed_binaries() {
        if !man.join(format!("{bin}.1")).is_file() {
            missing.push(format!("{bin}.1"));
        }
    }
    for page in [
        "telemetry.3",
        "tm_create_record.3",
        "tm_set_payload.3",
        "tm_set_event_id.3",
        "tm_send_record.3",
        "tm_free_record.3",
        "tm_set_config_file.3",
        "tm_is_opted_in.3",
        "telemetrics.conf.5",
    ] {
        if !man.join(page).is_file() {
            missing.push(page.to_string());
        }
    }
    assert!(missing.is_empty(), "missing man pages: {missing:?}");
}

#[test]
fn config_page_documents_every_key_of_the_default_file() {
    let conf = std::fs::read_to_string(repo().join("etc/telemetrics.conf")).unwrap();
    let page = std::fs::read_to_string(repo().join("man/telemetrics.conf.5")).unwrap();
    let keys: Vec<&str> = conf
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    assert!(keys.len() >= 18, "{keys:?}");
    for key in keys {
        let documented = page.lines().any(|l| {
            l.trim_start_matches(".B ").trim_start_matches(".TP").trim() == key
                || l == format!(".B {key}")
        });
        assert!(documented, "telemetrics.conf(5) has no entry for {key}");
    }
}
