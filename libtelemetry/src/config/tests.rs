use super::*;

fn paths() -> Paths {
    Paths::default()
}

const EXAMPLE: &str = "\
[settings]
server=http://127.0.0.1
cainfo=/tmp/cacert.crt
tidheader=X-Telemetry-TID:\\s6907c830-eed9-4ce9-81ae-76daf8d88f0f
socket_path=/tmp/test_telem_socket
record_expiry=1200
spool_dir=/tmp/spool
spool_max_size=1024
spool_process_time=180
record_burst_limit=100
record_window_length = 15
byte_burst_limit=1000
byte_window_length=20
rate_limit_enabled=true
rate_limit_strategy=spool
daemon_recycling_enabled=true
";

#[test]
fn example_conf_values() {
    let c = Config::parse(EXAMPLE, Path::new("example.conf"), &paths()).unwrap();
    assert_eq!(c.server, "http://127.0.0.1");
    assert_eq!(c.cainfo, "/tmp/cacert.crt");
    assert_eq!(c.tidheader, DEFAULT_TIDHEADER);
    assert_eq!(c.socket_path, Path::new("/tmp/test_telem_socket"));
    assert_eq!(c.spool_dir, Path::new("/tmp/spool"));
    assert_eq!(c.record_expiry, Ok(Duration::from_secs(1200 * 60)));
    assert_eq!(c.spool_max_bytes, Some(1024 * 1024));
    assert_eq!(c.spool_process_time, Duration::from_secs(180));
    assert_eq!(c.record_limit, RateLimit::new(Some(100), window(15)));
    assert_eq!(c.byte_limit, RateLimit::new(Some(1000), window(20)));
    assert_eq!(
        c.c_numbers(),
        CNumbers {
            record_expiry: 1200,
            spool_max_size: 1024,
            spool_process_time: 180,
            record_window_length: 15,
            byte_window_length: 20,
            record_burst_limit: 100,
            byte_burst_limit: 1000,
        }
    );
    assert!(c.rate_limit_enabled);
    assert_eq!(c.rate_limit_strategy, RateLimitStrategy::Spool);
    assert!(c.daemon_recycling_enabled);
    assert!(!c.record_retention_enabled);
    assert!(c.record_server_delivery_enabled);
}

#[test]
fn missing_keys_take_builtin_defaults() {
    let text = "[settings]\nserver=http://example.com/v2/collector\ncainfo=/x\n";
    let c = Config::parse(text, Path::new("example.2.conf"), &paths()).unwrap();
    let mut expected = Config::defaults(&paths());
    expected.server = "http://example.com/v2/collector".into();
    expected.cainfo = "/x".into();
    expected.raw = c.raw.clone();
    assert_eq!(c, expected);
}

#[test]
fn builtin_defaults_match_the_c_table() {
    let c = Config::defaults(&paths());
    assert_eq!(c.server, DEFAULT_SERVER);
    assert_eq!(c.socket_path, Path::new("/run/telem-0"));
    assert_eq!(c.spool_dir, Path::new("/var/spool/telemetry"));
    assert_eq!(c.cainfo, "");
    assert_eq!(
        c.c_numbers(),
        CNumbers {
            record_expiry: 1200,
            spool_max_size: 5120,
            spool_process_time: 120,
            record_window_length: 15,
            byte_window_length: 20,
            record_burst_limit: 1000,
            byte_burst_limit: -1,
        }
    );
    assert!(c.rate_limit_enabled && c.daemon_recycling_enabled);
    assert!(!c.record_retention_enabled && c.record_server_delivery_enabled);
}

#[test]
fn example1_retention_and_no_delivery() {
    let text = format!(
        "{}record_server_delivery_enabled=false\nrecord_retention_enabled=true\n",
        EXAMPLE.replace("spool_process_time=180", "spool_process_time=900")
    );
    let c = Config::parse(&text, Path::new("example.1.conf"), &paths()).unwrap();
    assert!(c.record_retention_enabled);
    assert!(!c.record_server_delivery_enabled);
    assert_eq!(
        c.spool_process_time,
        Duration::from_secs(300),
        "clamped to 120..300"
    );
}

/// Data-driven: (file text, expected error line or None, check on the config).
fn check(text: &str, expected_err_line: Option<usize>) -> Option<Config> {
    match Config::parse(text, Path::new("t.conf"), &paths()) {
        Ok(c) => {
            assert_eq!(expected_err_line, None, "expected an error for {text:?}");
            Some(c)
        }
        Err(e) => {
            let line = match &e {
                ConfigError::Syntax { line, .. } | ConfigError::Value { line, .. } => *line,
                other => panic!("unexpected error {other}"),
            };
            assert_eq!(Some(line), expected_err_line, "{e}");
            assert!(e.to_string().starts_with("t.conf:"), "{e}");
            None
        }
    }
}

#[test]
fn syntax_rules() {
    check("[settings\nserver=x\n", Some(1));
    check("server=x\n", Some(1));
    check("[settings]\n\n# c\n; c\njunk\n", Some(5));
    check("[settings]\n=value\n", Some(2));
    check("[settings]\nrate_limit_enabled=maybe\n", Some(2));
    check("[settings]\nrecord_expiry=12x\n", Some(2));
    check("[settings]\nrecord_expiry=99999999999999999999\n", Some(2));
    let c = check(
        "  [settings]  \n\tserver = a\\sb\\c \n[other]\nserver=z\n[settings]\nsocket_path=/s\n",
        None,
    )
    .unwrap();
    assert_eq!(c.server, "a bc");
    assert_eq!(c.socket_path, Path::new("/s"));
    let c = check(
        "[settings]\nserver=one\nserver=two\nrate_limit_strategy=DROP\nRATE_LIMIT_ENABLED=false\n",
        None,
    )
    .unwrap();
    assert_eq!(c.server, "two", "last key wins");
    assert_eq!(c.rate_limit_strategy, RateLimitStrategy::Drop);
    assert!(c.rate_limit_enabled, "keys are case-sensitive");
    let c = check("[settings]\nrate_limit_strategy=bogus\nspool_process_time=5\nrecord_window_length=60\nrecord_expiry=-5\nspool_max_size=-9\n", None).unwrap();
    assert_eq!(c.rate_limit_strategy, RateLimitStrategy::Spool);
    assert_eq!(c.spool_process_time, Duration::from_secs(120));
    assert_eq!(c.record_limit.window, Err(OutOfRange));
    assert_eq!(c.record_expiry, Err(OutOfRange));
    assert_eq!(c.spool_max_bytes, None);
    let n = c.c_numbers();
    assert_eq!(
        (n.record_window_length, n.record_expiry, n.spool_max_size),
        (-1, -1, -1)
    );
    assert!(c.check_delivery().is_err());
    let c = check(
        "[settings]\nrate_limit_enabled=1\ndaemon_recycling_enabled=FALSE\n",
        None,
    )
    .unwrap();
    assert!(c.rate_limit_enabled && !c.daemon_recycling_enabled);
}

#[test]
fn telempostd_keys_are_typed_and_checked_at_delivery() {
    let text = "[settings]\ndelivery_max_in_flight=8\ndelivery_keep_alive=FALSE\n\
otlp_batch_max_records=50\notlp_batch_max_bytes=4096\notlp_linger_ms=0\n\
otlp_compression=GZIP\notlp_headers=Authorization: Bearer abc; X-A: b;\n";
    let c = check(text, None).unwrap();
    assert_eq!(c.delivery_max_in_flight, 8);
    assert!(!c.delivery_keep_alive);
    assert_eq!(c.otlp_batch_max_records, 50);
    assert_eq!(c.otlp_batch_max_bytes, 4096);
    assert_eq!(c.otlp_linger, Duration::ZERO);
    assert_eq!(c.otlp_compression, OtlpCompression::Gzip);
    assert_eq!(
        c.otlp_headers,
        [
            ("Authorization".to_string(), "Bearer abc".to_string()),
            ("X-A".into(), "b".into())
        ]
    );
    assert!(c.warnings.is_empty() && c.check_delivery().is_ok());
    let d = Config::defaults(&paths());
    assert_eq!(
        (
            d.delivery_max_in_flight,
            d.delivery_keep_alive,
            d.otlp_linger
        ),
        (4, true, Duration::from_millis(200))
    );
    // Bad values do not fail the parse (probes only need the socket); telempostd's
    // start-up check names the file and line.
    for (line, expected) in [
        ("delivery_max_in_flight=0", "t.conf:3: invalid value \"0\" for delivery_max_in_flight: expected 1..32"),
        ("delivery_max_in_flight=x", "t.conf:3: invalid value \"x\" for delivery_max_in_flight: expected 1..32"),
        ("delivery_keep_alive=maybe", "t.conf:3: invalid value \"maybe\" for delivery_keep_alive: expected true, false, 1 or 0"),
        ("otlp_batch_max_bytes=100", "t.conf:3: invalid value \"100\" for otlp_batch_max_bytes: expected 4096..67108864"),
        ("otlp_linger_ms=60001", "t.conf:3: invalid value \"60001\" for otlp_linger_ms: expected 0..60000"),
        ("otlp_compression=zstd", "t.conf:3: invalid value \"zstd\" for otlp_compression: expected none or gzip"),
        ("otlp_headers=Bad Name: x", "t.conf:3: invalid value \"Bad Name: x\" for otlp_headers: \"Bad Name: x\" is not a `Name: value` header"),
    ] {
        let c = check(&format!("[settings]\nserver=x\n{line}\n"), None).unwrap();
        assert_eq!(c.check_delivery().unwrap_err().to_string(), expected);
    }
}

#[test]
fn unknown_keys_are_accepted_and_reported() {
    let c = check(
        "[settings]\nserver=x\ndelivery_max_inflight=8\nfrobnicate=1\nSERVER=y\n[other]\nzzz=1\n",
        None,
    )
    .unwrap();
    assert_eq!(c.server, "x");
    assert_eq!(c.delivery_max_in_flight, DEFAULT_DELIVERY_MAX_IN_FLIGHT);
    assert_eq!(
        c.raw.get("delivery_max_inflight").map(String::as_str),
        Some("8")
    );
    let shown: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "t.conf:3: unknown key \"delivery_max_inflight\" ignored (did you mean \"delivery_max_in_flight\"?)",
            "t.conf:4: unknown key \"frobnicate\" ignored",
            "t.conf:5: unknown key \"SERVER\" ignored (did you mean \"server\"?)",
        ]
    );
    assert!(c.check_delivery().is_ok());
    assert_eq!(closest_known_key("otlp_header"), Some("otlp_headers"));
    assert_eq!(closest_known_key("record_expiry_days"), None);
}

fn window(minutes: u32) -> WindowMinutes {
    WindowMinutes::new(minutes).unwrap()
}

#[test]
fn typed_values_and_the_c_numbers_of_their_sentinels() {
    let text = "[settings]\nrecord_burst_limit=-5\nbyte_burst_limit=0\nbyte_window_length=0\n\
                record_expiry=0\nspool_max_size=0\n";
    let c = check(text, None).unwrap();
    assert_eq!(
        c.record_limit,
        RateLimit::new(None, window(15)),
        "negative: off"
    );
    assert_eq!(
        c.byte_limit,
        RateLimit::new(Some(0), window(0)),
        "0: nothing sent"
    );
    assert_eq!(
        (c.record_expiry, c.spool_max_bytes),
        (Ok(Duration::ZERO), Some(0))
    );
    let n = c.c_numbers();
    assert_eq!(
        (
            n.record_burst_limit,
            n.byte_burst_limit,
            n.byte_window_length
        ),
        (-1, 0, 0)
    );
    assert_eq!((n.record_expiry, n.spool_max_size), (0, 0));
    c.check_delivery().unwrap();

    // The largest values the C getters could return survive the round trip.
    let huge = format!(
        "[settings]\nrecord_expiry={max}\nspool_max_size={max}\nrecord_burst_limit={max}\n",
        max = i64::MAX
    );
    let c = check(&huge, None).unwrap();
    let n = c.c_numbers();
    assert_eq!(
        (n.record_expiry, n.spool_max_size, n.record_burst_limit),
        (i64::MAX / 60, i64::MAX / 1024, i64::MAX)
    );
    assert_eq!(c.spool_max_bytes, Some((i64::MAX as u64 / 1024) * 1024));

    for bad in [
        "record_window_length=-1",
        "byte_window_length=60",
        "record_expiry=-1",
    ] {
        let c = check(&format!("[settings]\n{bad}\n"), None).unwrap();
        let key = bad.split('=').next().unwrap();
        assert!(
            matches!(c.check_delivery(), Err(ConfigError::Delivery { key: k, .. }) if k == key),
            "{bad}"
        );
    }
    assert_eq!(WindowMinutes::new(59), Some(WindowMinutes::MAX));
    assert_eq!(WindowMinutes::new(60), None);
}

#[test]
fn values_of_other_types() {
    assert_eq!(DeliveryMode::Otlp.to_string(), "otlp");
    for (text, want) in [
        ("strict", Some(Durability::Strict)),
        (" Batched", Some(Durability::Batched)),
        ("NONE", Some(Durability::None)),
        ("fsync", None),
    ] {
        assert_eq!(Durability::parse(text), want, "{text}");
    }
    assert_eq!(DeliveryMode::Auto.as_str(), "auto");
    assert_eq!(RateLimitStrategy::Drop.to_string(), "drop");
    assert_eq!(OtlpCompression::Gzip.as_str(), "gzip");
    for m in [
        DeliveryMode::Auto,
        DeliveryMode::V2,
        DeliveryMode::V3,
        DeliveryMode::Otlp,
    ] {
        assert_eq!(DeliveryMode::parse(m.as_str()), Some(m));
    }
}

#[test]
fn delivery_mode_from_url() {
    let auto = DeliveryMode::Auto;
    assert_eq!(auto.resolve("https://h/v3/collector"), DeliveryMode::V3);
    assert_eq!(auto.resolve("https://h/v2/collector"), DeliveryMode::V2);
    assert_eq!(auto.resolve("http://127.0.0.1"), DeliveryMode::V2);
    assert_eq!(
        auto.resolve("http://127.0.0.1:4318/v1/logs"),
        DeliveryMode::Otlp
    );
    assert_eq!(
        DeliveryMode::V2.resolve("https://h/v3/collector"),
        DeliveryMode::V2
    );
}

#[test]
fn relative_or_missing_explicit_path_is_rejected() {
    assert!(matches!(
        check_config_path(Path::new("somefile")),
        Err(ConfigError::NotAbsolute(_))
    ));
    let e = check_config_path(Path::new("/nonexistent/telemetrics.conf")).unwrap_err();
    assert_eq!(e.errno(), libc::ENOENT);
    assert!(matches!(
        check_config_path(Path::new("/")),
        Err(ConfigError::NotRegularFile(_))
    ));
}

#[test]
fn selection_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = Paths::new(dir.path(), "/");
    assert_eq!(select_config_file(&p, None), ConfigSource::BuiltIn);
    std::fs::create_dir_all(p.default_config_file().parent().unwrap()).unwrap();
    std::fs::write(p.default_config_file(), "[settings]\nserver=dist\n").unwrap();
    let (c, s) = Config::load(&p, None).unwrap();
    assert_eq!(
        (c.server.as_str(), s),
        ("dist", ConfigSource::Distribution(p.default_config_file()))
    );
    std::fs::create_dir_all(p.etc_dir()).unwrap();
    std::fs::write(p.etc_config_file(), "[settings]\ncainfo=etc\n").unwrap();
    let (c, _) = Config::load(&p, None).unwrap();
    assert_eq!(c.server, DEFAULT_SERVER, "no merging between files");
    assert_eq!(c.cainfo, "etc");
}

#[test]
fn crashprobe_keys_are_typed_and_a_bad_value_keeps_the_default() {
    let text = "[settings]\ncrashprobe_frames=rich\n\
                debuginfod_urls=http://a:8002 env https://b/\n\
                debuginfod_timeout=2\ndebuginfod_cache_max_size=64\n\
                debuginfod_cache_expiry=600\n";
    let c = Config::parse(text, Path::new("c.conf"), &paths()).unwrap();
    assert_eq!(c.crashprobe_frames, CrashFrames::Rich);
    assert_eq!(
        c.debuginfod_urls
            .resolve(Some("http://e1 ftp://x http://a:8002")),
        ["http://a:8002", "https://b/", "http://e1"]
    );
    assert_eq!(c.debuginfod_timeout, Duration::from_secs(2));
    assert_eq!(c.debuginfod_cache_max_bytes, 64 << 20);
    assert_eq!(c.debuginfod_cache_expiry, Duration::from_secs(600));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let without_env = "[settings]\ndebuginfod_urls=http://a\n";
    let c = Config::parse(without_env, Path::new("c.conf"), &paths()).unwrap();
    assert_eq!(c.debuginfod_urls.resolve(Some("http://e1")), ["http://a"]);

    let defaults = Config::defaults(&paths());
    assert_eq!(defaults.debuginfod_urls, DebuginfodUrls::Off);
    assert!(defaults
        .debuginfod_urls
        .resolve(Some("http://e1"))
        .is_empty());
    assert_eq!(defaults.crashprobe_frames, CrashFrames::Compatible);

    let bad = "[settings]\ncrashprobe_frames=fancy\ndebuginfod_urls=file:///x\n\
               debuginfod_timeout=60\ndebuginfod_cache_max_size=0\n\
               debuginfod_cache_expiry=x\n";
    let c = Config::parse(bad, Path::new("c.conf"), &paths()).unwrap();
    assert_eq!(c.crashprobe_frames, defaults.crashprobe_frames);
    assert_eq!(c.debuginfod_urls, DebuginfodUrls::Off);
    assert_eq!(c.debuginfod_timeout, defaults.debuginfod_timeout);
    assert_eq!(
        c.debuginfod_cache_max_bytes,
        defaults.debuginfod_cache_max_bytes
    );
    assert_eq!(c.debuginfod_cache_expiry, defaults.debuginfod_cache_expiry);
    let keys: Vec<_> = c.deferred_errors.iter().map(|e| e.key).collect();
    assert_eq!(
        keys,
        [
            "crashprobe_frames",
            "debuginfod_urls",
            "debuginfod_timeout",
            "debuginfod_cache_max_size",
            "debuginfod_cache_expiry"
        ]
    );
    // crashprobe's keys never stop delivery.
    c.check_delivery().unwrap();
}

#[test]
fn each_bad_value_is_kept_for_the_program_that_reads_the_key() {
    let text = "[settings]\ndurability=fsync\ncrash_loop_limit=x\notlp_linger_ms=-1\n\
                debuginfod_timeout=0\n";
    let c = check(text, None).unwrap();
    let keys = |reader| -> Vec<&str> { c.deferred_errors_for(reader).map(|e| e.key).collect() };
    assert_eq!(
        keys(KeyReader::Crashprobe),
        ["crash_loop_limit", "debuginfod_timeout"]
    );
    assert_eq!(keys(KeyReader::Telemprobd), ["durability"]);
    assert_eq!(keys(KeyReader::Telempostd), ["otlp_linger_ms"]);
    assert_eq!(
        c.check_delivery().unwrap_err().to_string(),
        "t.conf:4: invalid value \"-1\" for otlp_linger_ms: expected 0..60000"
    );
    let without_postd_keys = text.replace("otlp_linger_ms=-1", "otlp_linger_ms=1");
    check(&without_postd_keys, None)
        .unwrap()
        .check_delivery()
        .unwrap();
    // The table names known keys only.
    for (prefix, _) in KEYS_NOT_READ_BY_TELEMPOSTD {
        assert!(KNOWN_KEYS.iter().any(|k| k.starts_with(prefix)), "{prefix}");
    }
    assert_eq!(KeyReader::of("delivery_mode"), KeyReader::Telempostd);
    assert_eq!(KeyReader::of("crash_loop_interval"), KeyReader::Crashprobe);
}

#[test]
fn a_fifo_at_a_config_path_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let p = Paths::new(dir.path(), "/");
    std::fs::create_dir_all(p.etc_dir()).unwrap();
    let fifo = std::ffi::CString::new(p.etc_config_file().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // In a thread, so a regression fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let paths = p.clone();
    std::thread::spawn(move || {
        let _ = tx.send(Config::load(&paths, None).map(|(c, s)| (c.server, s)));
    });
    let loaded = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("Config::load blocked on a FIFO");
    // No writer: it reads as an empty file, i.e. the built-in defaults.
    let (server, source) = loaded.unwrap();
    assert_eq!(server, DEFAULT_SERVER);
    assert_eq!(source, ConfigSource::Etc(p.etc_config_file()));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Lines built from the pieces config files are made of, and some noise.
    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "[settings]",
                "[other]",
                "[settings",
                "# c",
                "; c",
                "",
                "junk",
                "=v",
                "server=http://h/v3/collector",
                "record_expiry=-5",
                "record_expiry=12x",
                "spool_max_size=99999999999999999999",
                "rate_limit_enabled=maybe",
                "record_window_length=60",
                "delivery_mode=otlp",
                "tidheader=a\\sb",
            ])
            .prop_map(str::to_string),
            "[ -~\t\u{e9}\r]{0,40}",
            ("[a-z_]{1,24}", "[ -~]{0,30}").prop_map(|(k, v)| format!("{k}={v}")),
        ]
    }

    proptest! {
        /// Never panics; every error names a line of the input.
        #[test]
        fn errors_name_a_line_of_the_input(
            lines in proptest::collection::vec(line(), 0..30),
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            for text in [lines.join("\n"), String::from_utf8_lossy(&bytes).into_owned()] {
                match Config::parse(&text, Path::new("t.conf"), &paths()) {
                    Err(ConfigError::Syntax { line, .. }) | Err(ConfigError::Value { line, .. }) => {
                        prop_assert!(line >= 1 && line <= text.lines().count().max(1), "{}", line);
                    }
                    _ => {}
                }
            }
        }
    }
}
