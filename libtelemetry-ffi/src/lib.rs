//! `libtelemetry.so.4`: the C ABI of the telemetrics suite, a drop-in replacement for the C
//! library of telemetrics-client 2.4.3 (same SONAME, the same 7 symbols with the same
//! symbol versions, the same `struct telem_record` layout).
//!
//! Everything here is a thin shim over the `libtelemetry` crate. Differences from the C
//! library, on purpose:
//! * nothing ever exits, aborts, or lets a panic cross into C: every entry point runs under
//!   `catch_unwind` and fails with a negative errno instead (a configuration file that does
//!   not parse makes `tm_send_record` return `-EINVAL`, where C called `exit(1)`);
//! * `*t_ref` is NULL after a failed `tm_create_record` (C left a dangling pointer);
//! * every pointer argument is NULL-checked;
//! * sending never raises SIGPIPE (`MSG_NOSIGNAL`) and never blocks more than ~1 s; it waits
//!   for the daemon's one-byte acknowledgement, and a daemon that closes without replying
//!   (the C telemprobd) counts as success;
//! * a second `tm_set_payload` frees the first copy (C leaked it); an unreadable
//!   `/proc/cpuinfo` gives `cpu_model: unknown` instead of failing the record;
//! * `tm_set_config_file` after a send makes the next send re-read the configuration.

use std::ffi::{c_char, c_int, CStr, OsStr};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use libtelemetry::client::{send_frame, SEND_TIMEOUT};
use libtelemetry::config::check_config_path;
use libtelemetry::frame::{encode_frame, is_forbidden_cfg_char, MAX_CFG_PATH};
use libtelemetry::record::MAX_PAYLOAD;
use libtelemetry::{is_opted_in, Paths, Record};

mod crecord;
mod state;

use crecord::RecordBox;
pub use crecord::{TelemRecord, TelemRef};

// Bind each export to its version node (defined by `telemetry.sym`, see build.rs); rust-lld
// would otherwise put every symbol in rustc's anonymous version. `@@@` renames the symbol
// rather than adding a versioned alias: GNU ld, which links the installed library from the
// staticlib (install.sh), binds the plain names by the script alone and would reject an
// alias as a second definition.
#[cfg(target_os = "linux")]
core::arch::global_asm!(
    ".symver tm_set_config_file, tm_set_config_file@@@TM_1_0_0",
    ".symver tm_free_record, tm_free_record@@@TM_2_0_0",
    ".symver tm_create_record, tm_create_record@@@TM_3_0_0",
    ".symver tm_set_payload, tm_set_payload@@@TM_3_0_0",
    ".symver tm_send_record, tm_send_record@@@TM_3_0_0",
    ".symver tm_set_event_id, tm_set_event_id@@@TM_4_0_0",
    ".symver tm_is_opted_in, tm_is_opted_in@@@TM_4_1_0",
);

/// Run an entry point's body; a panic becomes `on_panic` instead of crossing into C.
fn guarded(on_panic: c_int, body: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(on_panic)
}

/// A diagnostic on the caller's stderr, as the C library printed (write errors ignored:
/// a closed stderr must not turn into a panic).
fn diag(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "libtelemetry: {args}");
}

/// The bytes of a C string argument, or None for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
unsafe fn c_bytes<'a>(p: *const c_char) -> Option<&'a [u8]> {
    if p.is_null() {
        None
    } else {
        // SAFETY: non-NULL and NUL-terminated per the caller's contract.
        Some(unsafe { CStr::from_ptr(p) }.to_bytes())
    }
}

/// The record behind a handle, or None if the handle or its record is NULL.
///
/// # Safety
/// `t_ref` is NULL or a live handle from `tm_create_record`.
unsafe fn record_of<'a>(t_ref: *mut TelemRef) -> Option<&'a mut RecordBox> {
    if t_ref.is_null() {
        return None;
    }
    // SAFETY: non-NULL live handle per the caller's contract.
    let rec = unsafe { (*t_ref).record };
    if rec.is_null() {
        return None;
    }
    // SAFETY: `rec` was made by `RecordBox::into_raw` in `tm_create_record`.
    Some(unsafe { RecordBox::from_ptr(rec) })
}

/// `int tm_set_config_file(const char *c_file)` (`const` since C 2.1.0): use `c_file` (absolute path of a regular file)
/// as the configuration file. 0, or -EINVAL / the negative errno of stat(2).
///
/// # Safety
/// `c_file` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tm_set_config_file(c_file: *const c_char) -> c_int {
    guarded(-libc::EIO, || {
        // SAFETY: per this function's contract.
        let Some(bytes) = (unsafe { c_bytes(c_file) }) else {
            return -libc::EINVAL;
        };
        if bytes.len() > MAX_CFG_PATH {
            return -libc::ENAMETOOLONG;
        }
        // The path travels on the frame's one-line CFG: field, which the daemon refuses to
        // split: refuse it here, not at every later send.
        if String::from_utf8_lossy(bytes)
            .chars()
            .any(is_forbidden_cfg_char)
        {
            return -libc::EINVAL;
        }
        if let Err(e) = check_config_path(Path::new(OsStr::from_bytes(bytes))) {
            return -e.errno();
        }
        // The path travels in the frame's CFG: field, which this suite keeps UTF-8.
        let Ok(path) = std::str::from_utf8(bytes) else {
            return -libc::EINVAL;
        };
        state::set_config_file(path.to_owned());
        0
    })
}

/// `int tm_create_record(struct telem_ref **t_ref, uint32_t severity, char
/// *classification, uint32_t payload_version)`. 0; -EINVAL; -EIO. `*t_ref` is NULL on
/// failure.
///
/// # Safety
/// `t_ref` is NULL or writable; `classification` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tm_create_record(
    t_ref: *mut *mut TelemRef,
    severity: u32,
    classification: *mut c_char,
    payload_version: u32,
) -> c_int {
    if t_ref.is_null() {
        return -libc::EINVAL;
    }
    // SAFETY: non-NULL and writable per this function's contract.
    unsafe { t_ref.write(std::ptr::null_mut()) };
    guarded(-libc::EIO, || {
        // SAFETY: per this function's contract.
        let Some(bytes) = (unsafe { c_bytes(classification) }) else {
            return -libc::EINVAL;
        };
        let Ok(class) = std::str::from_utf8(bytes) else {
            return -libc::EINVAL;
        };
        let paths = Paths::from_env();
        let host = state::host_info(&paths);
        let record = match Record::new(severity, class, payload_version, &host) {
            Ok(r) => r,
            Err(e) => return -e.errno(),
        };
        let handle = Box::new(TelemRef {
            record: RecordBox::into_raw(record),
        });
        // SAFETY: checked non-NULL above; written only once the record is complete.
        unsafe { t_ref.write(Box::into_raw(handle)) };
        0
    })
}

/// `int tm_set_event_id(struct telem_ref *t_ref, char *event_id)`: 0, or -1 (as in C) for
/// NULL arguments or an id that is not 32 characters of `[0-9a-f]`.
///
/// # Safety
/// `t_ref` is NULL or a live handle; `event_id` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tm_set_event_id(t_ref: *mut TelemRef, event_id: *mut c_char) -> c_int {
    guarded(-1, || {
        // SAFETY: per this function's contract.
        let (Some(rec), Some(id)) = (unsafe { record_of(t_ref) }, unsafe { c_bytes(event_id) })
        else {
            return -1;
        };
        match std::str::from_utf8(id).map(|id| rec.set_event_id(id)) {
            Ok(Ok(())) => 0,
            _ => -1,
        }
    })
}

/// `int tm_set_payload(struct telem_ref *t_ref, char *payload)`: copy at most 8192 bytes.
/// 0, or -EINVAL.
///
/// # Safety
/// `t_ref` is NULL or a live handle; `payload` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tm_set_payload(t_ref: *mut TelemRef, payload: *mut c_char) -> c_int {
    guarded(-libc::EIO, || {
        // SAFETY: per this function's contract.
        let Some(rec) = (unsafe { record_of(t_ref) }) else {
            return -libc::EINVAL;
        };
        if payload.is_null() {
            return -libc::EINVAL;
        }
        // Like C: longer payloads are cut, and nothing past the limit is read.
        // SAFETY: `payload` is non-NULL and NUL-terminated or at least MAX_PAYLOAD long.
        let bytes = unsafe {
            let len = libc::strnlen(payload, MAX_PAYLOAD);
            std::slice::from_raw_parts(payload.cast::<u8>(), len)
        };
        match rec.set_payload(bytes) {
            Ok(()) => 0,
            Err(e) => -e.errno(),
        }
    })
}

/// `int tm_send_record(struct telem_ref *t_ref)`: check opt-in, then send the record to
/// telemprobd and wait (bounded) for its reply. 0, or a negative errno.
///
/// # Safety
/// `t_ref` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn tm_send_record(t_ref: *mut TelemRef) -> c_int {
    guarded(-libc::EIO, || {
        // SAFETY: per this function's contract.
        let Some(rec) = (unsafe { record_of(t_ref) }) else {
            return -libc::EINVAL;
        };
        let paths = Paths::from_env();
        if !is_opted_in(&paths) {
            return -libc::ECONNREFUSED;
        }
        let socket = match state::socket_path(&paths) {
            Ok(s) => s,
            Err(e) => {
                diag(format_args!("{e}"));
                return -e.errno();
            }
        };
        let frame = encode_frame(rec.record(), state::config_file().as_deref());
        match send_frame(&socket, &frame, SEND_TIMEOUT) {
            Ok(_) => 0,
            Err(e) => {
                diag(format_args!("{e}"));
                -e.errno()
            }
        }
    })
}

/// `int tm_is_opted_in(void)`: 1 if `/etc/telemetrics/opt-in` exists, else 0.
#[no_mangle]
pub extern "C" fn tm_is_opted_in() -> c_int {
    guarded(0, || c_int::from(is_opted_in(&Paths::from_env())))
}

/// `void tm_free_record(struct telem_ref *t_ref)`: NULL-safe.
///
/// # Safety
/// `t_ref` is NULL or a live handle, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn tm_free_record(t_ref: *mut TelemRef) {
    guarded(0, || {
        if t_ref.is_null() {
            return 0;
        }
        // SAFETY: a live handle made by `Box::into_raw` in `tm_create_record`.
        let handle = unsafe { Box::from_raw(t_ref) };
        if !handle.record.is_null() {
            // SAFETY: made by `RecordBox::into_raw`, freed only here.
            drop(unsafe { RecordBox::from_raw(handle.record) });
        }
        0
    });
}
