//! Dropping root once the privileged work (opening `/dev/kmsg`) is done.

use nix::unistd::{geteuid, setgid, setgroups, setuid, Uid, User};

use crate::error::ProbeError;

/// The account the probes run as after dropping root.
pub const DEFAULT_USER: &str = "telemetry";

/// If running as root, become `user` (its uid, primary gid and no supplementary groups) for
/// good. Returns the uid switched to, or `None` when there was nothing to drop (not root, or
/// `user` is root itself).
pub fn drop_root(user: &str) -> Result<Option<Uid>, ProbeError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    let account = User::from_name(user)
        .map_err(|source| ProbeError::DropPrivileges {
            user: user.to_string(),
            source,
        })?
        .ok_or_else(|| ProbeError::UnknownUser(user.to_string()))?;
    if account.uid.is_root() {
        return Ok(None);
    }
    let fail = |source| ProbeError::DropPrivileges {
        user: user.to_string(),
        source,
    };
    // Groups first: after setuid we could no longer change them.
    setgroups(&[account.gid]).map_err(fail)?;
    setgid(account.gid).map_err(fail)?;
    setuid(account.uid).map_err(fail)?;
    // setuid from root sets all three uids; getting root back must now be impossible.
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err(fail(nix::errno::Errno::EPERM));
    }
    Ok(Some(account.uid))
}
