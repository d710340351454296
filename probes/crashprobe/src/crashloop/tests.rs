use super::*;

/// A payload as crashprobe prints it: the crashing thread first, then another thread.
fn payload(program: &str, frames: &[&str]) -> String {
    let mut p = format!("Process: {program}\nPID: 4242\nSignal: 11\n\nBacktrace (TID 4242):\n");
    for (i, f) in frames.iter().enumerate() {
        p.push_str(&format!("#{} {f}\n", i + 1));
    }
    p.push_str("\nBacktrace (TID 4243):\n#1 pause() - [libc.so.6]\n#2 worker() - [prog]\n");
    p
}

fn crash_frames() -> Vec<&'static str> {
    vec![
        "crash() - [prog] - /src/prog.c:12",
        "inlined_helper() - [prog] - /src/prog.c:20",
        "main() - [prog] - /src/prog.c:30",
        "__libc_start_call_main() - [libc.so.6]",
        "__libc_start_main_impl() - [libc.so.6]",
        "_start() - [prog]",
    ]
}

const LIMIT: Limit = Limit {
    records: 5,
    interval: 3600,
};

#[test]
fn signature_is_the_executable_and_the_first_frames_of_the_crashing_thread() {
    let sig = Signature::of_payload(&payload("/usr/bin/prog", &crash_frames())).unwrap();
    assert_eq!(sig.executable, "/usr/bin/prog");
    assert_eq!(
        sig.frames,
        [
            ("crash()", "prog"),
            ("inlined_helper()", "prog"),
            ("main()", "prog"),
            ("__libc_start_call_main()", "libc.so.6"),
            ("__libc_start_main_impl()", "libc.so.6"),
        ]
        .map(|(f, m)| (f.to_string(), m.to_string()))
    );
    assert_eq!(
        sig.frames_text(),
        "crash() [prog] < inlined_helper() [prog] < main() [prog] < \
         __libc_start_call_main() [libc.so.6] < __libc_start_main_impl() [libc.so.6]"
    );
    // File and line do not matter; the sixth frame does not either.
    let mut moved = crash_frames();
    moved[0] = "crash() - [prog] - /src/prog.c:99";
    moved[5] = "other() - [prog]";
    assert_eq!(
        Signature::of_payload(&payload("/usr/bin/prog", &moved)).unwrap(),
        sig
    );
    // Another program, another function, another module: another signature.
    let other = |program: &str, frames: &[&str]| {
        Signature::of_payload(&payload(program, frames))
            .unwrap()
            .hash
    };
    assert_ne!(other("/usr/bin/other", &crash_frames()), sig.hash);
    let mut f = crash_frames();
    f[2] = "main() - [libprog.so]";
    assert_ne!(other("/usr/bin/prog", &f), sig.hash);
    // Fields cannot run into each other.
    assert_ne!(other("/a", &["bc() - [d]"]), other("/ab", &["c() - [d]"]));
    // Frames without symbols, unverified modules.
    let odd = Signature::of_payload(&payload(
        "p",
        &[
            "(no symbols)",
            "libfoo.so.1+0x1a2b() - [libfoo.so.1] - build-id ab01",
            "??? - [libbar.so]",
        ],
    ))
    .unwrap();
    assert_eq!(
        odd.frames_text(),
        "(no symbols) < libfoo.so.1+0x1a2b() [libfoo.so.1] < ??? [libbar.so]"
    );
    // No backtrace (a crash/error record): the executable alone.
    let error = Signature::of_payload("Process: /usr/bin/p\nPID: 1\nError: bad core\n").unwrap();
    assert!(error.frames.is_empty());
    // The privacy filters' records have no Process: line.
    assert_eq!(Signature::of_payload("Crash from third party\n"), None);
}

#[test]
fn a_hundred_crashes_in_a_minute_send_the_limit_then_report_the_rest() {
    let looping = Signature::of_payload(&payload("/usr/bin/prog", &crash_frames())).unwrap();
    let bystander = Signature::of_payload(&payload("/usr/bin/other", &crash_frames())).unwrap();
    let mut state = CrashLoopState::default();
    let t0 = 1_796_589_000;
    let mut sent = 0;
    let mut first_suppressed = None;
    let mut bystander_sent = 0;
    for i in 0..100u64 {
        let now = t0 + i * 60 / 100;
        match decide(&mut state, &looping, LIMIT, now) {
            Verdict::Send(held) => {
                assert_eq!(held, None);
                sent += 1;
            }
            Verdict::Suppress => {
                first_suppressed.get_or_insert(now);
            }
        }
        // Another program crashing now and then in the same minute is not affected.
        if i % 20 == 0 {
            if let Verdict::Send(None) = decide(&mut state, &bystander, LIMIT, now) {
                bystander_sent += 1;
            }
        }
    }
    assert_eq!(sent, LIMIT.records);
    assert_eq!(bystander_sent, 5);
    let counts = state.get(looping.hash).unwrap();
    assert_eq!(
        (counts.seen, counts.suppressed, counts.held_back),
        (100, 95, 95)
    );
    // Still within the hour: held back.
    assert_eq!(
        decide(&mut state, &looping, LIMIT, t0 + 3599),
        Verdict::Suppress
    );
    // The next window: the record says how many were held back, and since when.
    assert_eq!(
        decide(&mut state, &looping, LIMIT, t0 + 3600),
        Verdict::Send(Some(HeldBack {
            count: 96,
            since: first_suppressed.unwrap()
        }))
    );
    assert_eq!(
        decide(&mut state, &looping, LIMIT, t0 + 3601),
        Verdict::Send(None)
    );
    let counts = state.get(looping.hash).unwrap();
    assert_eq!(
        (counts.seen, counts.suppressed, counts.held_back),
        (103, 96, 0)
    );
    assert_eq!(counts.sent(), 7);
}

#[test]
fn a_clock_that_went_back_starts_a_new_window() {
    let sig = Signature::of_payload(&payload("p", &["f() - [p]"])).unwrap();
    let mut state = CrashLoopState::default();
    let one = Limit {
        records: 1,
        interval: 3600,
    };
    assert_eq!(decide(&mut state, &sig, one, 10_000), Verdict::Send(None));
    assert_eq!(decide(&mut state, &sig, one, 10_001), Verdict::Suppress);
    assert_eq!(
        decide(&mut state, &sig, one, 5_000),
        Verdict::Send(Some(HeldBack {
            count: 1,
            since: 10_001
        }))
    );
}

#[test]
fn a_record_that_was_not_sent_is_held_back_again() {
    let sig = Signature::of_payload(&payload("p", &["f() - [p]"])).unwrap();
    let mut state = CrashLoopState::default();
    let two = Limit {
        records: 2,
        interval: 100,
    };
    assert_eq!(decide(&mut state, &sig, two, 1000), Verdict::Send(None));
    assert_eq!(decide(&mut state, &sig, two, 1001), Verdict::Send(None));
    assert_eq!(decide(&mut state, &sig, two, 1002), Verdict::Suppress);
    let held = HeldBack {
        count: 1,
        since: 1002,
    };
    assert_eq!(
        decide(&mut state, &sig, two, 1100),
        Verdict::Send(Some(held))
    );
    // telemprobd was down: that record and the one its note carried wait for the next.
    unsent(&mut state, sig.hash, Some(held), 1100);
    assert_eq!(
        decide(&mut state, &sig, two, 1101),
        Verdict::Send(Some(HeldBack {
            count: 2,
            since: 1002
        }))
    );
    let c = state.get(sig.hash).unwrap();
    assert_eq!((c.seen, c.suppressed, c.held_back, c.sent()), (5, 2, 0, 3));
}

#[test]
fn the_note_is_the_last_header_line_and_the_payload_stays_bounded() {
    let p = payload("/usr/bin/prog", &crash_frames());
    let note = note_line(HeldBack {
        count: 95,
        since: 1_796_589_296,
    });
    assert_eq!(
        note,
        "Crash loop: suppressed 95 since 2026-12-06T20:34:56Z\n"
    );
    let with = insert_note(&p, &note);
    assert!(with.starts_with(
        "Process: /usr/bin/prog\nPID: 4242\nSignal: 11\nCrash loop: suppressed 95 since 2026-12-06T20:34:56Z\n\nBacktrace (TID 4242):\n#1 crash() - [prog]"
    ), "{with}");
    // The signature (and so the backend's view of the frames) is unchanged by the note.
    assert_eq!(Signature::of_payload(&with), Signature::of_payload(&p));
    // A header without backtraces gets the note at its end.
    assert_eq!(
        insert_note("Process: p\nError: x\n", &note),
        format!("Process: p\nError: x\n{note}")
    );
    // A full payload loses frame lines from its end, and says so.
    let mut full = String::from("Process: p\nPID: 1\n\nBacktrace (TID 1):\n");
    let mut n = 1;
    while full.len() + 40 < MAX_PAYLOAD - SIZE_MARKER.len() {
        full.push_str(&format!("#{n} function_{n}() - [module]\n"));
        n += 1;
    }
    full.push_str(SIZE_MARKER);
    let cut = insert_note(&full, &note);
    assert!(cut.len() <= MAX_PAYLOAD, "{}", cut.len());
    assert!(
        cut.ends_with(&format!("() - [module]\n{SIZE_MARKER}")),
        "{cut}"
    );
    assert_eq!(cut.matches(SIZE_MARKER).count(), 1);
    assert!(cut.contains(&format!(
        "PID: 1\n{note}\nBacktrace (TID 1):\n#1 function_1()"
    )));
}

/// A relocated root with its state dir, and a config with `limit`.
fn lab(limit: u32) -> (tempfile::TempDir, Paths, Config) {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path().join("root"), dir.path().join("host"));
    std::fs::create_dir_all(paths.state_dir()).unwrap();
    let mut config = Config::defaults(&paths);
    config.crash_loop_limit = limit;
    (dir, paths, config)
}

#[test]
fn gate_counts_in_the_state_file() {
    let (_dir, paths, config) = lab(3);
    let p = payload("/usr/bin/prog", &crash_frames());
    let mut outcomes = Vec::new();
    for _ in 0..7 {
        let mut text = p.clone();
        let gate = gate(&paths, &config, &mut text);
        outcomes.push(gate.is_suppressed());
        assert_eq!(text, p, "nothing held back yet");
        gate.finish(&paths, true);
    }
    assert_eq!(outcomes, [false, false, false, true, true, true, true]);
    let state = read_state(&paths.crash_loop_file()).unwrap();
    let c = &state.entries[0];
    assert_eq!((c.seen, c.suppressed, c.held_back), (7, 4, 4));
    assert_eq!(c.executable, "/usr/bin/prog");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(paths.crash_loop_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    // A failed send is held back.
    let mut state = state;
    state.entries[0].window_start -= 3600;
    libtelemetry::fsutil::write_atomic(&paths.crash_loop_file(), state.encode().as_bytes(), 0o640)
        .unwrap();
    let mut text = p.clone();
    let g = gate(&paths, &config, &mut text);
    assert!(text.contains("\nCrash loop: suppressed 4 since "), "{text}");
    g.finish(&paths, false);
    let mut text = p.clone();
    gate(&paths, &config, &mut text).finish(&paths, true);
    assert!(text.contains("\nCrash loop: suppressed 5 since "), "{text}");
    // Limit 0: no state at all.
    let (_dir, paths, config) = lab(0);
    let mut text = p.clone();
    assert!(matches!(gate(&paths, &config, &mut text), Gate::Open));
    assert!(!paths.crash_loop_file().exists());
}

#[test]
fn a_corrupt_state_starts_afresh_and_an_unusable_one_lets_records_through() {
    let (_dir, paths, config) = lab(1);
    let p = payload("/usr/bin/prog", &crash_frames());
    std::fs::write(paths.crash_loop_file(), "garbage\n\0\0").unwrap();
    let mut text = p.clone();
    assert!(matches!(
        gate(&paths, &config, &mut text),
        Gate::Counted { .. }
    ));
    assert_eq!(
        read_state(&paths.crash_loop_file()).unwrap().entries.len(),
        1
    );
    // No state dir: sent, not limited.
    std::fs::remove_dir_all(paths.state_dir()).unwrap();
    for _ in 0..3 {
        let mut text = p.clone();
        assert!(matches!(gate(&paths, &config, &mut text), Gate::Open));
    }
}

#[test]
fn a_held_lock_delays_at_most_the_timeout() {
    let (_dir, paths, config) = lab(1);
    let holder = lock(&paths).unwrap();
    let start = Instant::now();
    let mut text = payload("p", &["f() - [p]"]);
    assert!(matches!(gate(&paths, &config, &mut text), Gate::Open));
    let waited = start.elapsed();
    assert!(waited >= LOCK_TIMEOUT, "{waited:?}");
    drop(holder);
    assert!(matches!(
        gate(&paths, &config, &mut text),
        Gate::Counted { .. }
    ));
}

#[test]
fn concurrent_crashes_are_all_counted() {
    let (_dir, paths, config) = lab(3);
    let p = payload("/usr/bin/prog", &crash_frames());
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (paths, config, p) = (paths.clone(), config.clone(), p.clone());
            std::thread::spawn(move || {
                let mut text = p;
                match gate(&paths, &config, &mut text) {
                    Gate::Open => 0,
                    Gate::Counted { .. } => 1,
                    Gate::Suppressed => 2,
                }
            })
        })
        .collect();
    let outcomes: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let counted = outcomes.iter().filter(|o| **o == 1).count() as u64;
    let suppressed = outcomes.iter().filter(|o| **o == 2).count() as u64;
    // On a loaded machine a crashprobe may give up on the lock and send unlimited (Open);
    // every crash that took the lock is counted exactly.
    let c = read_state(&paths.crash_loop_file()).unwrap().entries[0].clone();
    assert_eq!(c.seen, counted + suppressed);
    assert_eq!(counted, c.seen.min(3));
    assert_eq!(c.suppressed, suppressed);
}
