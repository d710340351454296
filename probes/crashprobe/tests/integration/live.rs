//! The crashed process still exists while the kernel pipes its core: with `-P PID` the probe
//! reads the files the process mapped (through `/proc/PID/map_files/`, opened as root before
//! dropping privileges), not whatever is at their paths now.
//!
//! Here gdb holds the crashed process stopped at its fatal signal, writes its core and
//! waits while the test changes the files and runs the probe.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use telemetrics_tests::TestRoot;

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
        Held::with(lab, exe, gdb())
    }

    /// Run `exe` under `gdb` (a gdb command, maybe wrapped) until its crash.
    fn with(lab: &Lab, exe: &Path, mut gdb: Command) -> Held {
        let core = lab.path("held.core");
        let ready = lab.path("held.ready");
        let done = lab.path("held.done");
        let wait = format!(
            "shell touch {}; while [ ! -e {} ]; do sleep 0.05; done",
            ready.display(),
            done.display()
        );
        let gdb = gdb
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

/// Opening another process's `map_files`, dropping to another user and making a mount
/// namespace need root; without it these tests say so and pass.
fn skipped_without_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("not root: skipped");
    }
    !root
}

fn payload_with_pid(held: &Held, pid: Option<u32>) -> String {
    payload_as(held, pid, None)
}

/// The probe's payload for the held core; `user`: the user it drops root for.
fn payload_as(held: &Held, pid: Option<u32>, user: Option<&str>) -> String {
    payload_in(unfiltered_root(), held, pid, user)
}

fn payload_in(root: TestRoot, held: &Held, pid: Option<u32>, user: Option<&str>) -> String {
    let listener = Listener::start(&root);
    let pid = pid.map(|p| p.to_string());
    let mut args = vec!["-p", "held", "-s", "11"];
    if let Some(p) = &pid {
        args.extend(["-P", p]);
    }
    let bytes = to_notes_first(&std::fs::read(&held.core).unwrap());
    if let Some(u) = user {
        args.extend(["--user", u]);
        // The dropped-to user needs the test root and its socket.
        let _ = Command::new("chmod")
            .args(["-R", "o+rwX"])
            .arg(root.dir())
            .status();
    }
    let run = probe(&root, &args, Input::Pipe(&bytes), None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    payload(&listener.next())
}

#[test]
fn deleted_binary_is_read_through_map_files() {
    if skipped_without_root() {
        return;
    }
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
    if skipped_without_root() {
        return;
    }
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
    // By path only, nothing proves the new file is the crashed one: no names from it.
    let text = payload_with_pid(&held, None);
    assert!(!text.contains("renamed"), "{text}");
    let line0 = text.lines().find(|l| l.starts_with("#0 ")).unwrap_or("");
    let module = exe.display().to_string();
    assert!(
        line0.starts_with(&format!("#0 {module}+0x"))
            && line0.ends_with(&format!("() - [{module}] - file not verified")),
        "{text}"
    );
    // The default style names no function either: `???`, which the backend ranks last.
    let text = payload_in(compatible_root(), &held, None, None);
    let line0 = text.lines().find(|l| l.starts_with("#0 ")).unwrap_or("");
    assert!(
        line0.starts_with(&format!("#0 ??? - [{module}] - offset 0x"))
            && line0.ends_with(", file not verified"),
        "{text}"
    );
}

#[test]
fn unreadable_binary_is_read_through_map_files_before_dropping_root() {
    if skipped_without_root() {
        return;
    }
    let lab = Lab::new();
    let private = lab.path("private");
    std::fs::create_dir(&private).unwrap();
    let exe = lab.cc("private/unreadable", LEVELS_C, &["-O0", "-g"]);
    let held = Held::new(&lab, &exe);
    // Only root may enter the directory; the probe reads as `nobody`.
    let _ = Command::new("chmod")
        .arg("755")
        .arg(lab.dir.path())
        .status();
    let _ = Command::new("chmod").arg("700").arg(&private).status();
    let text = payload_as(&held, Some(held.pid()), Some("nobody"));
    for f in ["level3", "level2", "level1", "main"] {
        assert!(text.contains(&format!(" {f}() - [")), "{f}\n{text}");
    }
    let text = payload_as(&held, None, Some("nobody"));
    assert!(!text.contains(" level3() - ["), "{text}");
    assert!(text.contains(&format!("#0 {}+0x", exe.display())), "{text}");
}

/// A process in its own mount and PID namespaces, whose executable is on a tmpfs only that
/// namespace sees; its core records its PID in its own namespace.
fn held_in_mount_namespace(lab: &Lab) -> (Held, PathBuf) {
    let built = lab.cc("nsbuilt", LEVELS_C, &["-O0", "-g"]);
    let dir = lab.path("ns");
    std::fs::create_dir(&dir).unwrap();
    let exe = dir.join("inside");
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "-p",
        "--fork",
        "--mount-proc",
        "--propagation",
        "private",
        "sh",
        "-c",
    ])
    .arg(format!(
        "mount -t tmpfs none {d} && cp {b} {e} && exec \"$0\" \"$@\"",
        d = dir.display(),
        b = built.display(),
        e = exe.display()
    ))
    .arg("gdb");
    for a in gdb().get_args() {
        cmd.arg(a);
    }
    cmd.env("DEBUGINFOD_URLS", "");
    (Held::with(lab, &exe, cmd), exe)
}

/// The PID in this (the initial) namespace of the process named `comm` whose PID in its own
/// namespace is `ns_pid`.
fn host_pid(comm: &str, ns_pid: u32) -> u32 {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let name = status.lines().find_map(|l| l.strip_prefix("Name:"));
        let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"));
        let last = nspid.and_then(|l| l.split_whitespace().last()?.parse::<u32>().ok());
        if name.map(str::trim) == Some(comm) && last == Some(ns_pid) && pid != ns_pid {
            return pid;
        }
    }
    panic!("no process {comm} with PID {ns_pid} in its namespace");
}

#[test]
fn binary_only_in_the_processs_mount_namespace_is_read_through_proc() {
    if skipped_without_root() {
        return;
    }
    let lab = Lab::new();
    let (held, exe) = held_in_mount_namespace(&lab);
    assert!(
        !exe.exists(),
        "the probe's namespace must not see the binary"
    );
    // The kernel passes the PID of the initial namespace (%P); the core has its own.
    let pid = host_pid("inside", held.pid());
    let text = payload_with_pid(&held, Some(pid));
    for f in ["level3", "level2", "level1", "main"] {
        assert!(text.contains(&format!(" {f}() - [")), "{f}\n{text}");
    }
    let text = payload_with_pid(&held, None);
    assert!(!text.contains(" level3() - ["), "{text}");
}

#[test]
fn without_map_files_the_process_root_is_used_when_the_inode_matches() {
    if skipped_without_root() {
        return;
    }
    use crashprobe::modules::ProcessFiles;
    let lab = Lab::new();
    let (held, exe) = held_in_mount_namespace(&lab);
    let pid = host_pid("inside", held.pid());
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let exe_line = maps
        .lines()
        .find(|l| l.ends_with(exe.to_str().unwrap()))
        .expect("executable mapped")
        .to_string();
    let range = exe_line.split(' ').next().unwrap().to_string();
    let (a, b) = range.split_once('-').unwrap();
    let (start, end) = (
        u64::from_str_radix(a, 16).unwrap(),
        u64::from_str_radix(b, 16).unwrap(),
    );
    // A /proc without map_files: maps and root only.
    let fake = |maps: &str| {
        let proc_root = lab.path(&format!("proc{}", maps.len()));
        let dir = proc_root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("maps"), maps).unwrap();
        std::os::unix::fs::symlink(format!("/proc/{pid}/root"), dir.join("root")).unwrap();
        ProcessFiles::open(&proc_root, pid)
    };
    let files = fake(&maps);
    assert!(files.file_at(start, end).is_some(), "{maps}");
    // The same path with another inode is not the mapped file.
    let fields: Vec<&str> = exe_line.split_whitespace().collect();
    let wrong = exe_line.replacen(
        &format!(" {} ", fields[4]),
        &format!(" {} ", fields[4].parse::<u64>().unwrap() + 1),
        1,
    );
    let files = fake(&format!("{wrong}\n"));
    assert!(files.file_at(start, end).is_none());
}

#[test]
fn a_pid_that_is_not_the_cores_is_ignored() {
    if skipped_without_root() {
        return;
    }
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
