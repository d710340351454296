//! Process hardening for a program the kernel starts as root for every crash: a usable fd 2,
//! no core dumps of itself, unprivileged user, and resource budgets.

use std::ffi::CString;
use std::io;
use std::path::Path;
use std::time::Duration;

/// User the probe runs as when started by root.
pub const DEFAULT_USER: &str = "telemetry";
/// Environment variable naming another user (tests; the kernel starts the probe with an
/// empty environment).
pub const USER_ENV: &str = "CRASHPROBE_USER";

/// Resource budgets.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// CPU seconds (RLIMIT_CPU soft limit; SIGXCPU ends the process).
    pub cpu: u64,
    /// Wall-clock limit (alarm; SIGALRM ends the process).
    pub wall: Duration,
    /// Data segment and private anonymous mappings (RLIMIT_DATA).
    pub data_bytes: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            cpu: 60,
            wall: Duration::from_secs(300),
            data_bytes: 512 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HardenError {
    #[error("user {0:?} does not exist")]
    NoUser(String),
    #[error("{what} failed: {source}")]
    Call {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

fn check(rc: libc::c_int, what: &'static str) -> Result<(), HardenError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(HardenError::Call {
            what,
            source: io::Error::last_os_error(),
        })
    }
}

/// Reopen fd 2 (and fd 1) on /dev/null when they are closed, so that messages never land in
/// a file opened later.
pub fn ensure_std_fds() {
    for fd in [1, 2] {
        // SAFETY: F_GETFD only queries the descriptor.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        // SAFETY: plain open of a constant path; the result is checked.
        let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if null >= 0 && null != fd {
            // SAFETY: both descriptors are valid; the temporary one is closed after dup2.
            unsafe {
                libc::dup2(null, fd);
                libc::close(null);
            }
        }
    }
}

/// `prctl(PR_SET_DUMPABLE, 0)`: no core dump of the probe itself, no ptrace by its user.
pub fn set_not_dumpable() -> Result<(), HardenError> {
    // SAFETY: prctl with integer arguments only.
    check(
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) },
        "prctl(PR_SET_DUMPABLE)",
    )
}

/// When running as root, become `user`: chdir to `home`, initgroups, setgid, setuid.
/// Returns whether privileges were dropped.
pub fn drop_privileges(user: &str, home: &Path) -> Result<bool, HardenError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(false);
    }
    let name = CString::new(user).map_err(|_| HardenError::NoUser(user.into()))?;
    let (uid, gid) = lookup_user(&name).ok_or_else(|| HardenError::NoUser(user.into()))?;
    let dir = CString::new(home.as_os_str().as_encoded_bytes())
        .map_err(|_| HardenError::NoUser(user.into()))?;
    // SAFETY: valid NUL-terminated strings and plain ids; each result is checked.
    unsafe {
        check(libc::chdir(dir.as_ptr()), "chdir")?;
        check(libc::initgroups(name.as_ptr(), gid), "initgroups")?;
        check(libc::setgid(gid), "setgid")?;
        check(libc::setuid(uid), "setuid")?;
    }
    Ok(true)
}

fn lookup_user(name: &CString) -> Option<(libc::uid_t, libc::gid_t)> {
    // SAFETY: zeroed passwd is a valid out-parameter; buf outlives the call and the result is
    // only read (uid/gid copied) before buf is dropped.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let mut buf = vec![0 as libc::c_char; 16 << 10];
        let rc = libc::getpwnam_r(
            name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() {
            return None;
        }
        Some((pw.pw_uid, pw.pw_gid))
    }
}

/// Apply the CPU, wall-clock and memory budgets.
pub fn apply_budget(b: &Budget) -> Result<(), HardenError> {
    let set = |res, soft: u64, hard: u64, what| {
        let lim = libc::rlimit {
            rlim_cur: soft as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: a valid rlimit struct for a known resource.
        check(unsafe { libc::setrlimit(res, &lim) }, what)
    };
    set(libc::RLIMIT_CPU, b.cpu, b.cpu + 5, "setrlimit(RLIMIT_CPU)")?;
    set(
        libc::RLIMIT_DATA,
        b.data_bytes,
        b.data_bytes,
        "setrlimit(RLIMIT_DATA)",
    )?;
    // The spill file is bounded by the reader; this is a backstop.
    set(
        libc::RLIMIT_FSIZE,
        2 << 30,
        2 << 30,
        "setrlimit(RLIMIT_FSIZE)",
    )?;
    // SAFETY: alarm has no preconditions.
    unsafe { libc::alarm(b.wall.as_secs().max(1) as libc::c_uint) };
    Ok(())
}

/// Grow the input pipe so the kernel writes the core in fewer, larger steps (best effort).
pub fn grow_pipe(fd: i32) {
    // SAFETY: F_SETPIPE_SZ on an fd we own; failure is harmless.
    unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20) };
}
