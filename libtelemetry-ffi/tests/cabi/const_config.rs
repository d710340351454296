//! `tm_set_config_file(const char *)`, as the C header has declared it since 2.1.0: callers
//! written against that header build with `-Werror` as C and as C++.

use telemetrics_tests::TestRoot;

use super::{program, run_in, stdout, Lang};

fn set_config_result(lang: Lang, path: &str) -> i32 {
    let root = TestRoot::new();
    let out = run_in(&root, &program("const_config", lang), &[path]);
    assert!(out.status.success(), "{:?}\n{}", out.status, stdout(&out));
    stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("rc="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rc= line:\n{}", stdout(&out)))
}

#[test]
fn const_char_caller_builds_as_c_and_cxx_with_werror() {
    let t = tempfile::tempdir().unwrap();
    let conf = t.path().join("telemetrics.conf");
    std::fs::write(&conf, "[settings]\n").unwrap();
    let conf = conf.display().to_string();
    for lang in [Lang::C, Lang::Cxx] {
        assert_eq!(set_config_result(lang, &conf), 0, "{lang:?}");
        assert_eq!(
            set_config_result(lang, "/nonexistent/telemetrics.conf"),
            -libc::ENOENT,
            "{lang:?}"
        );
    }
}
