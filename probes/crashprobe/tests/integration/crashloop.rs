//! Crash-loop control end to end: a gdb-made core fed to crashprobe again and again.

use libtelemetry::crashloop::{read_state, utc_timestamp};
use libtelemetry::fsutil::write_atomic;

use crate::backtraces::LEVELS_C;
use crate::support::*;

/// What the backend's crash parser (`parse_backtrace` in telemetrics-backend's
/// `utils/shared_utils/crash.py`) reads from a payload: `^Process: (.*)$`, `^PID: ([0-9]+)$`,
/// `^Signal: ([0-9]+)$`, and the lines of the first `^Backtrace \(TID ([0-9]+)\):$` block
/// matching `^(#\d+ )(.+)( - \[(.*)\](.*))$`; every other line is ignored.
fn backend_view(payload: &str) -> (String, String, String, Vec<String>) {
    let (mut program, mut pid, mut signal) = (String::new(), String::new(), String::new());
    let mut frames = Vec::new();
    let mut headers = 0;
    for line in payload.lines() {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if let Some(p) = line.strip_prefix("Process: ") {
            program = p.to_string();
        } else if let Some(p) = line.strip_prefix("PID: ").filter(|p| digits(p)) {
            pid = p.to_string();
        } else if let Some(s) = line.strip_prefix("Signal: ").filter(|s| digits(s)) {
            signal = s.to_string();
        } else if line
            .strip_prefix("Backtrace (TID ")
            .and_then(|r| r.strip_suffix("):"))
            .is_some_and(digits)
        {
            headers += 1;
            if headers > 1 {
                break;
            }
        } else if line.starts_with('#') && line.contains(" - [") {
            frames.push(line.to_string());
        }
    }
    (program, pid, signal, frames)
}

/// 100 crashes of one program in a row (well within the default window of an hour) with
/// the default limit: 5 records, 95 crashes counted; the next record, in the next window,
/// says 95 were suppressed since the first of them.
#[test]
fn a_crash_loop_sends_the_limit_then_reports_what_it_held_back() {
    const CRASHES: usize = 100;
    const LIMIT: usize = 5;
    let lab = Lab::new();
    let looping = lab.cc("looping", LEVELS_C, &["-O0", "-g"]);
    let core = lab.gdb_core(&looping, &[]);
    let root = unfiltered_root();
    let listener = Listener::start(&root);
    let args = ["-p", "looping", "-s", "11"];
    let mut first = None;
    for i in 0..CRASHES {
        let run = probe(&root, &args, Input::File(&core), None);
        assert_eq!(run.code, 0, "{}", run.stderr);
        if i < LIMIT {
            let p = payload(&listener.next());
            assert!(!p.contains("Crash loop:"), "{p}");
            first.get_or_insert(p);
        } else {
            assert!(
                run.stderr.contains("record counted, not sent"),
                "{}",
                run.stderr
            );
        }
    }
    assert!(listener.none(), "only the limit was sent");
    let state_file = root.paths.crash_loop_file();
    let mut state = read_state(&state_file).unwrap();
    let counts = &mut state.entries[0];
    assert_eq!(
        (counts.seen, counts.suppressed, counts.held_back),
        (
            CRASHES as u64,
            (CRASHES - LIMIT) as u64,
            (CRASHES - LIMIT) as u64
        )
    );
    assert_eq!(counts.executable, "looping");
    assert!(
        counts.frames.starts_with("level3() [") && counts.frames.contains("level1() ["),
        "{}",
        counts.frames
    );
    let since = counts.held_back_since.unwrap();
    // An hour later (the window moved back rather than waiting for it).
    counts.window_start -= 3600;
    write_atomic(&state_file, state.encode().as_bytes(), 0o640).unwrap();
    let run = probe(&root, &args, Input::File(&core), None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let noted = payload(&listener.next());
    let note = format!(
        "Crash loop: suppressed {} since {}\n",
        CRASHES - LIMIT,
        utc_timestamp(since)
    );
    assert!(
        noted.contains(&format!("\nSignal: 11\n{note}\nBacktrace (TID ")),
        "{noted}"
    );
    // The backend reads the same program, pid, signal and frames as without the note.
    let first = first.unwrap();
    assert_eq!(backend_view(&noted), backend_view(&first));
    assert_eq!(noted.replace(&note, ""), first);

    // Another program crashing meanwhile is not affected.
    let other = lab.cc("other", LEVELS_C, &["-O0", "-g"]);
    let other_core = lab.gdb_core(&other, &[]);
    let run = probe(
        &root,
        &["-p", "other", "-s", "11"],
        Input::File(&other_core),
        None,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let p = payload(&listener.next());
    assert!(
        p.starts_with("Process: other\n") && !p.contains("Crash loop:"),
        "{p}"
    );
    assert_eq!(read_state(&state_file).unwrap().entries.len(), 2);
}

#[test]
fn concurrent_crashprobes_count_every_crash() {
    let lab = Lab::new();
    let exe = lab.cc("parallel", LEVELS_C, &["-O0", "-g"]);
    let core = lab.gdb_core(&exe, &[]);
    let mut root = unfiltered_root();
    root.set("crash_loop_limit", "2");
    let listener = Listener::start(&root);
    let root = std::sync::Arc::new(root);
    let runs: Vec<_> = (0..6)
        .map(|_| {
            let (root, core) = (root.clone(), core.clone());
            std::thread::spawn(move || probe(&root, &["-p", "parallel"], Input::File(&core), None))
        })
        .collect();
    let stderr: Vec<String> = runs
        .into_iter()
        .map(|r| {
            let r = r.join().unwrap();
            assert_eq!(r.code, 0, "{}", r.stderr);
            r.stderr
        })
        .collect();
    // A crashprobe that could not get the lock in time sends its record unlimited.
    let unlimited = stderr
        .iter()
        .filter(|s| s.contains("sent unlimited"))
        .count();
    let suppressed = stderr.iter().filter(|s| s.contains("not sent")).count();
    for _ in 0..2 + unlimited {
        listener.next();
    }
    assert!(listener.none());
    let counts = read_state(&root.paths.crash_loop_file()).unwrap().entries[0].clone();
    assert_eq!(counts.seen as usize, 6 - unlimited);
    assert_eq!(counts.suppressed as usize, suppressed);
    assert_eq!(suppressed + 2 + unlimited, 6);
}
