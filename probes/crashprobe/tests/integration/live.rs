//! The crashed process still exists while the kernel pipes its core: with `-P PID` the probe
//! reads the files the process mapped (through `/proc/PID/map_files/`, opened as root before
//! dropping privileges), not whatever is at their paths now.
//!
//! Here gdb holds the crashed process stopped at its fatal signal, writes its core and
//! waits while the test changes the files and runs the probe.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::backtraces::LEVELS_C;
use crate::support::*;

/// A crashed process kept stopped under gdb, with its core written.
struct Held {
    gdb: Child,
    core: PathBuf,
    done: PathBuf,
}

impl Held {
    fn new(lab: &Lab, exe: &Path) -> Held {
        let core = lab.path("held.core");
        let ready = lab.path("held.ready");
        let done = lab.path("held.done");
        let wait = format!(
            "shell touch {}; while [ ! -e {} ]; do sleep 0.05; done",
            ready.display(),
            done.display()
        );
        let gdb = gdb()
            .args(["-ex", "run", "-ex"])
            .arg(format!("generate-core-file {}", core.display()))
            .args(["-ex", &wait])
            .arg("--args")
            .arg(exe)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gdb");
        let start = Instant::now();
        while !ready.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "gdb did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Held { gdb, core, done }
    }

    fn pid(&self) -> u32 {
        let img = crashprobe::CoreImage::from_vec(std::fs::read(&self.core).unwrap()).unwrap();
        img.notes.pid.expect("pid in core")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.done, "");
        let _ = self.gdb.wait();
    }
}

fn payload_with_pid(held: &Held, pid: Option<u32>) -> String {
    let root = unfiltered_root();
    let listener = Listener::start(&root);
    let pid = pid.map(|p| p.to_string());
    let mut args = vec!["-p", "held", "-s", "11"];
    if let Some(p) = &pid {
        args.extend(["-P", p]);
    }
    let bytes = to_notes_first(&std::fs::read(&held.core).unwrap());
    let run = probe(&root, &args, Input::Pipe(&bytes), None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    payload(&listener.next())
}

#[test]
fn deleted_binary_is_read_through_map_files() {
    let lab = Lab::new();
    let exe = lab.cc("deleted", LEVELS_C, &["-O0", "-g"]);
    let held = Held::new(&lab, &exe);
    std::fs::remove_file(&exe).unwrap();
    let text = payload_with_pid(&held, Some(held.pid()));
    for f in ["level3", "level2", "level1", "main"] {
        assert!(text.contains(&format!(" {f}() - [")), "{f}\n{text}");
    }
    // Without the pid the file is gone: no names for it.
    let text = payload_with_pid(&held, None);
    assert!(!text.contains(" level3() - ["), "{text}");
}

#[test]
fn replaced_binary_without_build_id_is_not_named_by_the_new_file() {
    let lab = Lab::new();
    let exe = lab.cc("replaced", LEVELS_C, &["-O0", "-g", "-Wl,--build-id=none"]);
    let held = Held::new(&lab, &exe);
    // A new "package" at the same path (a new inode, as package managers install).
    let other = lab.cc(
        "other",
        &LEVELS_C.replace("level", "renamed"),
        &["-O0", "-g", "-Wl,--build-id=none"],
    );
    std::fs::rename(&other, &exe).unwrap();
    let text = payload_with_pid(&held, Some(held.pid()));
    for f in ["level3", "level2", "level1", "main"] {
        assert!(text.contains(&format!(" {f}() - [")), "{f}\n{text}");
    }
    assert!(!text.contains("renamed"), "{text}");
}

#[test]
fn a_pid_that_is_not_the_cores_is_ignored() {
    let lab = Lab::new();
    let exe = lab.cc("notmine", LEVELS_C, &["-O0", "-g"]);
    let held = Held::new(&lab, &exe);
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let text = payload_with_pid(&held, Some(sleeper.id()));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(text.contains(" level3() - ["), "{text}");
    assert!(!text.contains("sleep"), "{text}");
}
