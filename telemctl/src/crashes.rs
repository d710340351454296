//! `telemctl crashes`: crashprobe's crash signatures with their counts, from the crash-loop
//! state file (`libtelemetry::crashloop`), most recently seen first, as text or JSON.

use std::io::Write;

use libtelemetry::crashloop::{read_state, utc_timestamp, CrashLoopState};
use libtelemetry::{Config, Paths};
use serde_json::json;

use crate::error::{self, CtlError};

/// The limit in force (from the configuration) and the state; a missing state file is no
/// signature yet.
pub fn collect(paths: &Paths) -> Result<(Config, CrashLoopState), CtlError> {
    let (config, _) = Config::load(paths, None)?;
    let path = paths.crash_loop_file();
    let state = read_state(&path).map_err(|e| CtlError::CrashLoopState {
        path,
        message: e.to_string(),
    })?;
    Ok((config, sorted(state)))
}

fn sorted(mut state: CrashLoopState) -> CrashLoopState {
    state
        .entries
        .sort_by_key(|e| (std::cmp::Reverse(e.last_seen), e.signature));
    state
}

fn limit_text(config: &Config) -> String {
    if config.crash_loop_limit == 0 {
        "crash-loop limit: off (every crash is sent)".to_string()
    } else {
        format!(
            "crash-loop limit: {} records per signature every {} s",
            config.crash_loop_limit, config.crash_loop_interval
        )
    }
}

pub fn write_text(
    config: &Config,
    state: &CrashLoopState,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let mut text = format!("{}\n", limit_text(config));
    if state.entries.is_empty() {
        text.push_str("no crash signatures recorded\n");
    } else {
        text.push_str(&format!(
            "{:<16}  {:>6}  {:>6}  {:>10}  {:>9}  {:<20}  PROGRAM\n",
            "SIGNATURE", "SEEN", "SENT", "SUPPRESSED", "HELD BACK", "LAST SEEN"
        ));
    }
    for e in &state.entries {
        text.push_str(&format!(
            "{:016x}  {:>6}  {:>6}  {:>10}  {:>9}  {:<20}  {}\n",
            e.signature,
            e.seen,
            e.sent(),
            e.suppressed,
            e.held_back,
            utc_timestamp(e.last_seen),
            e.executable
        ));
        if !e.frames.is_empty() {
            text.push_str(&format!("{:18}frames: {}\n", "", e.frames));
        }
        if let Some(since) = e.held_back_since {
            text.push_str(&format!(
                "{:18}{} held back since {} (reported with the next record sent)\n",
                "",
                e.held_back,
                utc_timestamp(since)
            ));
        }
    }
    out.write_all(text.as_bytes()).map_err(error::output)
}

pub fn write_json(
    config: &Config,
    state: &CrashLoopState,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let signatures: Vec<serde_json::Value> = state
        .entries
        .iter()
        .map(|e| {
            json!({
                "signature": format!("{:016x}", e.signature),
                "program": e.executable,
                "frames": e.frames,
                "seen": e.seen,
                "sent": e.sent(),
                "suppressed": e.suppressed,
                "held_back": e.held_back,
                "held_back_since": e.held_back_since.map(utc_timestamp),
                "first_seen": utc_timestamp(e.first_seen),
                "last_seen": utc_timestamp(e.last_seen),
                "window_start": utc_timestamp(e.window_start),
                "sent_in_window": e.sent_in_window,
            })
        })
        .collect();
    let doc = json!({
        "crash_loop_limit": config.crash_loop_limit,
        "crash_loop_interval": config.crash_loop_interval,
        "signatures": signatures,
    });
    writeln!(out, "{doc}").map_err(error::output)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Config, CrashLoopState) {
        let paths = Paths::new("/r", "/h");
        let mut state = CrashLoopState::default();
        let e = state.entry(
            0xabc,
            "/usr/bin/looping",
            "crash() [looping] < main() [looping]",
            1_796_589_000,
        );
        e.seen = 100;
        e.suppressed = 95;
        e.held_back = 95;
        e.held_back_since = Some(1_796_589_003);
        e.last_seen = 1_796_589_059;
        state.entry(0xdef, "/usr/bin/once", "", 1_796_500_000).seen = 1;
        (Config::defaults(&paths), sorted(state))
    }

    #[test]
    fn text() {
        let (config, state) = sample();
        let mut out = Vec::new();
        write_text(&config, &state, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "crash-loop limit: 5 records per signature every 3600 s
SIGNATURE           SEEN    SENT  SUPPRESSED  HELD BACK  LAST SEEN             PROGRAM
0000000000000abc     100       5          95         95  2026-12-06T20:30:59Z  /usr/bin/looping
                  frames: crash() [looping] < main() [looping]
                  95 held back since 2026-12-06T20:30:03Z (reported with the next record sent)
0000000000000def       1       1           0          0  2026-12-05T19:46:40Z  /usr/bin/once
"
        );
        let mut out = Vec::new();
        let mut off = config.clone();
        off.crash_loop_limit = 0;
        write_text(&off, &CrashLoopState::default(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "crash-loop limit: off (every crash is sent)\nno crash signatures recorded\n"
        );
    }

    #[test]
    fn json() {
        let (config, state) = sample();
        let mut out = Vec::new();
        write_json(&config, &state, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["crash_loop_limit"], 5);
        assert_eq!(v["crash_loop_interval"], 3600);
        let s = &v["signatures"][0];
        assert_eq!(s["signature"], "0000000000000abc");
        assert_eq!(s["program"], "/usr/bin/looping");
        assert_eq!(
            (
                s["seen"].as_u64(),
                s["sent"].as_u64(),
                s["suppressed"].as_u64()
            ),
            (Some(100), Some(5), Some(95))
        );
        assert_eq!(s["held_back"], 95);
        assert_eq!(s["held_back_since"], "2026-12-06T20:30:03Z");
        assert_eq!(
            v["signatures"][1]["held_back_since"],
            serde_json::Value::Null
        );
    }
}
