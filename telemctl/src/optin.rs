//! `opt-in` and `opt-out`.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use libtelemetry::{Config, Paths};

use crate::error::CtlError;
use crate::purge::{purge_dirs, telemetry_ids, Owners, PurgeOutcome};
use crate::services::Services;

/// Create the opt-in file, then start the services (the C client's help promised that but
/// its code did not do it).
pub fn opt_in(paths: &Paths, services: &Services, err: &mut dyn Write) -> Result<(), CtlError> {
    let file = paths.opt_in_file();
    let fail = |source| CtlError::OptIn {
        path: file.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(paths.etc_dir())
        .map_err(fail)?;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        // The C client meant O_NOFOLLOW here but passed it as part of the mode.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&file);
    match created {
        Ok(_) => services.start(err),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = writeln!(err, "Already opted in. Nothing to do.");
            Ok(())
        }
        Err(e) => Err(fail(e)),
    }
}

/// Remove the opt-in file, stop the services and purge the data the suite owns.
pub fn opt_out(paths: &Paths, services: &Services, err: &mut dyn Write) -> Result<(), CtlError> {
    let file = paths.opt_in_file();
    match std::fs::remove_file(&file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = writeln!(err, "Already opted out. Nothing to do.");
            return Ok(());
        }
        Err(source) => return Err(CtlError::OptOut { path: file, source }),
    }
    let stopped = services.stop(err);
    let purged = purge(paths, err);
    stopped.and(purged)
}

/// The directories opt-out empties: the C client's tmpfiles.d list, plus the `spool_dir` of
/// the configuration in effect when it is somewhere else.
pub fn data_dirs(paths: &Paths) -> Vec<PathBuf> {
    let mut dirs = vec![
        paths.state_dir(),
        paths.default_spool_dir(),
        paths.log_dir(),
        paths.records_dir(),
        paths.cache_dir(),
        paths.pstore_cache_dir(),
    ];
    if let Ok((cfg, _)) = Config::load(paths, None) {
        if !dirs.contains(&cfg.spool_dir) {
            dirs.push(cfg.spool_dir);
        }
    }
    dirs
}

fn purge(paths: &Paths, err: &mut dyn Write) -> Result<(), CtlError> {
    let relocated = paths.is_relocated();
    let owners = Owners {
        telemetry: telemetry_ids(),
        current_uid: relocated.then(|| nix::unistd::geteuid().as_raw()),
        confine_to: relocated.then(|| paths.root().to_path_buf()),
    };
    let mut ok = true;
    for (dir, outcome) in purge_dirs(&data_dirs(paths), &owners) {
        match outcome {
            Ok(PurgeOutcome::Purged { .. }) | Ok(PurgeOutcome::Missing) => {}
            Ok(PurgeOutcome::Skipped(why)) => {
                let _ = writeln!(
                    err,
                    "Not removing the contents of {}: {why}.",
                    dir.display()
                );
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(err, "Failed to remove {e}");
            }
        }
    }
    if ok {
        Ok(())
    } else {
        Err(CtlError::PurgeFailed)
    }
}
