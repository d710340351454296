//! File name rules.

use swupdprobe::name::{is_ignored, NameError, SwupdName};

fn check(name: &str, want: Result<(u32, &str, u32, &str), NameError>) {
    let got = SwupdName::parse(name);
    match want {
        Ok((version, class, severity, classification)) => {
            let n = got.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                (n.version, n.class.as_str(), n.severity),
                (version, class, severity)
            );
            assert_eq!(n.classification(), classification, "{name}");
        }
        Err(e) => assert_eq!(got, Err(e), "{name}"),
    }
}

#[test]
fn names() {
    use NameError::*;
    let c = "org.clearlinux/swupd-client/";
    check(
        "2.update.1.a8Kq2Z",
        Ok((2, "update", 1, &format!("{c}update"))),
    );
    check(
        "2.inconsistent-file-hash.4.X",
        Ok((
            2,
            "inconsistent-file-hash",
            4,
            &format!("{c}inconsistent-file-hash"),
        )),
    );
    // Other versions: class unknown, severity from the third token (the original probe
    // read the second one).
    check(
        "1.update.3.abc",
        Ok((1, "update", 3, &format!("{c}unknown"))),
    );
    check(
        "3.verify.2.abc",
        Ok((3, "verify", 2, &format!("{c}unknown"))),
    );
    check(
        "02.update.1.abc",
        Ok((2, "update", 1, &format!("{c}update"))),
    );
    check("2.update.1", Err(Parts(3)));
    check("2.update", Err(Parts(2)));
    check("2.update.1.abc.def", Err(Parts(5)));
    check("update", Err(Parts(1)));
    check("x.update.1.abc", Err(Version("x".into())));
    check(".update.1.abc", Err(Version("".into())));
    check("9999999999.update.1.abc", Err(Version("9999999999".into())));
    check("2..1.abc", Err(Class("".into())));
    check("2.up date.1.abc", Err(Class("up date".into())));
    check("2.üpdate.1.abc", Err(Class("üpdate".into())));
    let long = "c".repeat(41);
    check(&format!("2.{long}.1.abc"), Err(Class(long.clone())));
    check(
        &format!("2.{}.1.abc", &long[..40]),
        Ok((2, &long[..40], 1, &format!("{c}{}", &long[..40]))),
    );
    check("2.update.0.abc", Err(Severity("0".into())));
    check("2.update.5.abc", Err(Severity("5".into())));
    check("2.update.01.abc", Err(Severity("01".into())));
    check("2.update.high.abc", Err(Severity("high".into())));
    check("2.update.1.", Err(Random("".into())));
    check("2.update.1.a b", Err(Random("a b".into())));
    check(
        &format!("2.update.1.{}", "r".repeat(65)),
        Err(Random("r".repeat(65))),
    );
}

#[test]
fn ignored_names() {
    // Exactly what systemd's DirectoryNotEmpty= does not count.
    for name in [
        ".hidden",
        ".quarantine",
        ".tmp-2.update.1.abc.123",
        "2.update.1.abc~",
        "x.swp",
        "a.rpmnew",
        "b.dpkg-old",
        "c.ucf-dist",
        "d.bak",
        "e.old",
        "f.new",
        "..",
        ".",
    ] {
        assert!(is_ignored(name), "{name}");
    }
    for name in [
        "2.update.1.abc",
        "garbage",
        "2.update.1.tmp",
        "2.update.1.newer",
        "x.tmp",
    ] {
        assert!(!is_ignored(name), "{name}");
    }
}

#[test]
fn arbitrary_names_do_not_panic() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let alphabet: Vec<char> = "0123456789.abcXYZ_- ~é\u{0}/".chars().collect();
    for _ in 0..20_000 {
        let len = next(24) as usize;
        let name: String = (0..len)
            .map(|_| alphabet[next(alphabet.len() as u64) as usize])
            .collect();
        if let Ok(n) = SwupdName::parse(&name) {
            let c = n.classification();
            assert!(
                libtelemetry::record::validate_classification(&c).is_ok(),
                "{name:?}"
            );
            assert!((1..=4).contains(&n.severity));
        }
        let _ = is_ignored(&name);
    }
}
