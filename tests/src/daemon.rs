//! `TestDaemon`: one of the suite's daemons (or any long-running binary) as a child process
//! in a [`TestRoot`], with its stdout/stderr captured to a log file that is printed when the
//! test fails, and killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::root::TestRoot;

pub struct TestDaemon {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl TestDaemon {
    /// Start `bin` (a suite binary name) with `args` and the root's env. Output goes to
    /// `<root dir>/<bin>.<n>.log`.
    pub fn spawn(root: &TestRoot, bin: &str, args: &[&str]) -> TestDaemon {
        let mut cmd = root.command(bin);
        cmd.args(args);
        TestDaemon::spawn_command(root, bin, cmd)
    }

    /// Start a prepared command (env, args and fds already set by the caller).
    pub fn spawn_command(root: &TestRoot, name: &str, mut cmd: Command) -> TestDaemon {
        let mut n = 0;
        let log = loop {
            let p = root.dir().join(format!("{name}.{n}.log"));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log fd");
        // Logs go to the captured stderr, whatever the environment of the test run.
        cmd.env_remove("JOURNAL_STREAM");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        TestDaemon {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as libc::pid_t, signal) };
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut()?;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait until `socket` accepts connections; panics (with the log) if the process exits
    /// first or `timeout` passes.
    pub fn wait_for_socket(&mut self, socket: &Path, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return;
            }
            if !self.is_running() {
                panic!(
                    "{} exited before listening on {}:\n{}",
                    self.name,
                    socket.display(),
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} not listening on {} after {timeout:?}:\n{}",
                    self.name,
                    socket.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait up to `timeout` for `needle` to appear in the log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// Send SIGTERM and wait up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait_timeout(timeout)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- log of {} ({}) ---\n{}",
                self.name,
                self.log.display(),
                self.log()
            );
        }
        self.kill9();
    }
}

/// Poll `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
