//! Service control through `systemctl` and `systemd-tmpfiles`, always run with an argument
//! vector (never a shell).
//!
//! Both programs can be replaced through the environment (`TELEMCTL_SYSTEMCTL`,
//! `TELEMCTL_TMPFILES`), which the tests use to record what would be run. In a relocated
//! root (`TELEMETRICS_ROOT` set) the system's units do not belong to that root, so nothing is
//! run unless the variables name a program explicitly.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use libtelemetry::Paths;

use crate::error::CtlError;

/// Program run instead of `systemctl`.
pub const SYSTEMCTL_ENV: &str = "TELEMCTL_SYSTEMCTL";
/// Program run instead of `systemd-tmpfiles`.
pub const TMPFILES_ENV: &str = "TELEMCTL_TMPFILES";

/// Units `start` starts and `stop` stops first, in the C client's order: the activation
/// units (timer, socket, path) and the long-running probes, then the units of the probes
/// this suite added.
pub const SPECIAL_UNITS: &[&str] = &[
    "hprobe.timer",
    "telemprobd.socket",
    "telempostd.path",
    "klogscanner.service",
    "journal-probe-tail.service",
    "mceprobe.service",
    "thermalprobe.service",
    "swupdprobe.path",
];

/// Units `stop` stops after [`SPECIAL_UNITS`], in the C client's order.
pub const SERVICES: &[&str] = &[
    "hprobe.service",
    "pstore-probe.service",
    "telemprobd.service",
    "telempostd.service",
    "journal-probe.service",
    "swupdprobe.service",
];

/// `systemctl` exit status for a unit that is not installed (LSB "program not installed"):
/// optional probes may be absent, which is not a failure.
const STATUS_UNIT_NOT_FOUND: i32 = 5;

/// The tmpfiles.d file `start` applies (C: hard-coded in telemctl).
pub const TMPFILES_CONF: &str = "/usr/lib/tmpfiles.d/telemetrics-dirs.conf";

#[derive(Debug, Clone)]
pub struct Services {
    /// `None`: services are not managed (relocated root without an explicit program).
    systemctl: Option<OsString>,
    tmpfiles: Option<OsString>,
    tmpfiles_conf: PathBuf,
}

impl Services {
    pub fn from_env(paths: &Paths) -> Services {
        let pick = |var: &str, default: &str| match std::env::var_os(var) {
            Some(v) if !v.is_empty() => Some(v),
            _ if paths.is_relocated() => None,
            _ => Some(OsString::from(default)),
        };
        Services {
            systemctl: pick(SYSTEMCTL_ENV, "systemctl"),
            tmpfiles: pick(TMPFILES_ENV, "systemd-tmpfiles"),
            tmpfiles_conf: paths.under_root(TMPFILES_CONF),
        }
    }

    /// Whether `systemctl` is run at all.
    pub fn managed(&self) -> bool {
        self.systemctl.is_some()
    }

    fn note_unmanaged(err: &mut dyn Write) {
        let _ = writeln!(
            err,
            "TELEMETRICS_ROOT is set: system services are not managed (set {SYSTEMCTL_ENV} to manage them)."
        );
    }

    /// `systemctl <action> <unit>` for each unit. A unit fails when the call exits non-zero
    /// (other than "unit not installed") or prints anything; its output and
    /// `Failed to <action> <unit>. Continuing...` go to `err` and the next unit is tried.
    fn act(&self, action: &str, units: &[&str], err: &mut dyn Write) -> Result<(), CtlError> {
        let Some(systemctl) = &self.systemctl else {
            Self::note_unmanaged(err);
            return Ok(());
        };
        let mut ok = true;
        for unit in units {
            let out = Command::new(systemctl)
                .args([action, unit])
                .stdin(Stdio::null())
                .output();
            let failed_output = match out {
                Ok(o) if o.status.code() == Some(STATUS_UNIT_NOT_FOUND) => None,
                Ok(o) if o.status.success() && o.stdout.is_empty() && o.stderr.is_empty() => None,
                Ok(o) => Some([o.stdout, o.stderr].concat()),
                Err(e) => Some(format!("{}: {e}\n", systemctl.to_string_lossy()).into_bytes()),
            };
            if let Some(text) = failed_output {
                ok = false;
                let _ = err.write_all(&text);
                let _ = writeln!(err, "Failed to {action} {unit}. Continuing...");
            }
        }
        if ok {
            Ok(())
        } else {
            Err(CtlError::ServiceFailed)
        }
    }

    /// Stop every unit of the suite.
    pub fn stop(&self, err: &mut dyn Write) -> Result<(), CtlError> {
        let units: Vec<&str> = SPECIAL_UNITS.iter().chain(SERVICES).copied().collect();
        self.act("stop", &units, err)
    }

    /// Create the suite's directories, then start the activation units. The caller checks
    /// opt-in first.
    pub fn start(&self, err: &mut dyn Write) -> Result<(), CtlError> {
        let mut ok = true;
        if let Some(tmpfiles) = &self.tmpfiles {
            // Its output goes to stderr, as in C; a failure is reported but the units are
            // still started (they may already have their directories).
            match Command::new(tmpfiles)
                .arg("--create")
                .arg(&self.tmpfiles_conf)
                .stdin(Stdio::null())
                .output()
            {
                Ok(o) => {
                    let _ = err.write_all(&o.stdout);
                    let _ = err.write_all(&o.stderr);
                    ok &= o.status.success();
                }
                Err(e) => {
                    let _ = writeln!(err, "{}: {e}", tmpfiles.to_string_lossy());
                    ok = false;
                }
            }
        }
        let started = self.act("start", SPECIAL_UNITS, err);
        if ok {
            started
        } else {
            Err(CtlError::ServiceFailed)
        }
    }

    /// Stop, then start whatever stop reported: the C client skipped the start when any
    /// unit failed to stop.
    pub fn restart(&self, err: &mut dyn Write) -> Result<(), CtlError> {
        let stopped = self.stop(err);
        let started = self.start(err);
        stopped.and(started)
    }

    /// The last line `systemctl is-active <unit>` printed, or `None` when services are not
    /// managed or systemctl cannot be run.
    pub fn is_active(&self, unit: &str) -> Option<String> {
        let systemctl = self.systemctl.as_ref()?;
        let out = Command::new(systemctl)
            .args(["is-active", unit])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().last().map(|l| l.trim().to_string())
    }
}
