//! Local time: the journal's `strftime` column and the `--since` / `--until` parser.
//!
//! Both go through the C library (`localtime_r`, `strftime`, `mktime`) so `TZ` and the
//! system time zone database are honoured exactly as the C `telem_journal` honoured them.
//! Hand-written on purpose: the column and the accepted dates are a compatibility contract
//! with the C tool's output and scripts, which a Rust date crate (its own `%Z`, its own
//! zone data) would not keep.

use std::ffi::CStr;

extern "C" {
    // Not exported by the libc crate on Linux; POSIX `void tzset(void)`.
    fn tzset();
}

/// The journal's time format (§6.4).
pub const JOURNAL_TIME_FORMAT: &CStr = c"%a %Y-%m-%d %H:%M:%S %Z";

/// Read `TZ` once, before any conversion (`localtime_r` is not required to).
pub fn init_timezone() {
    // SAFETY: tzset only reads the environment and sets libc's time zone globals; it is
    // called before any other thread exists.
    unsafe { tzset() };
}

/// `t` broken down in local time.
fn local_tm(t: i64) -> Option<libc::tm> {
    // time_t is i64 on the 64-bit targets, narrower elsewhere.
    #[allow(clippy::useless_conversion)]
    let tt: libc::time_t = t.try_into().ok()?;
    // SAFETY: an all-zero `tm` is a valid value (integers and a null zone pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r writes only into `tm`.
    let r = unsafe { libc::localtime_r(&tt, &mut tm) };
    (!r.is_null()).then_some(tm)
}

/// `strftime(format)` of `t` in local time; `None` when the time cannot be converted or the
/// result is empty (the C journal skipped such entries).
pub fn format_local(t: i64, format: &CStr) -> Option<String> {
    let tm = local_tm(t)?;
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length, `format` is NUL-terminated and `tm` valid.
    let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), &tm) };
    (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The journal's time column for `t`.
pub fn journal_time(t: i64) -> Option<String> {
    format_local(t, JOURNAL_TIME_FORMAT)
}

/// Seconds since the epoch of a local date and time (`mktime`, DST resolved by the C library).
fn local_to_epoch(year: i64, mon: i64, day: i64, h: i64, m: i64, s: i64) -> Option<i64> {
    // SAFETY: an all-zero `tm` is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = (year - 1900).try_into().ok()?;
    tm.tm_mon = (mon - 1).try_into().ok()?;
    tm.tm_mday = day.try_into().ok()?;
    tm.tm_hour = h.try_into().ok()?;
    tm.tm_min = m.try_into().ok()?;
    tm.tm_sec = s.try_into().ok()?;
    tm.tm_isdst = -1;
    // SAFETY: `tm` is a valid, initialised struct; mktime normalises it in place.
    let t = unsafe { libc::mktime(&mut tm) };
    (t != -1).then_some(t as i64)
}

/// Midnight (local) of the day containing `now`, shifted by `days`.
fn local_midnight(now: i64, days: i64) -> Option<i64> {
    let tm = local_tm(now)?;
    local_to_epoch(
        tm.tm_year as i64 + 1900,
        tm.tm_mon as i64 + 1,
        tm.tm_mday as i64 + days,
        0,
        0,
        0,
    )
}

/// Parse a `--since` / `--until` value into seconds since the epoch.
///
/// Accepted: `now`, `today`, `yesterday`, `tomorrow`; `@<epoch seconds>`; a relative age such
/// as `2h`, `90s`, `1d12h`, `30min`, `-2h` or `2h ago` (all meaning "that long before now",
/// `+2h` is in the future); a local date `YYYY-MM-DD` optionally followed by ` ` or `T` and
/// `HH:MM` or `HH:MM:SS`.
pub fn parse_time_spec(spec: &str, now: i64) -> Result<i64, String> {
    let s = spec.trim();
    let bad = || {
        format!("invalid time {spec:?}: expected YYYY-MM-DD[ HH:MM[:SS]], @EPOCH, now, today, yesterday or a relative time like 2h")
    };
    match s {
        "now" => return Ok(now),
        "today" => return local_midnight(now, 0).ok_or_else(bad),
        "yesterday" => return local_midnight(now, -1).ok_or_else(bad),
        "tomorrow" => return local_midnight(now, 1).ok_or_else(bad),
        _ => {}
    }
    if let Some(epoch) = s.strip_prefix('@') {
        return epoch.parse::<i64>().map_err(|_| bad());
    }
    match parse_date_time(s) {
        Some(Ok(t)) => return Ok(t),
        Some(Err(e)) => return Err(format!("invalid time {spec:?}: {e}")),
        None => {}
    }
    let (sign, rest) = if let Some(r) = s.strip_prefix('+') {
        (1, r)
    } else if let Some(r) = s.strip_prefix('-') {
        (-1, r)
    } else {
        (-1, s)
    };
    let rest = rest.strip_suffix("ago").map_or(rest, str::trim_end);
    let secs = parse_duration(rest).ok_or_else(bad)?;
    Ok(now.saturating_add(sign * secs))
}

/// `1d12h`, `90s`, `30 min`, `2 hours` → seconds.
fn parse_duration(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let mult = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "h" | "hr" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 7 * 86_400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(mult)?)?;
    }
    Some(total)
}

/// Days in `month` (1..=12) of `year`, Gregorian.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS]]` in local time. `None` when `s` is not of that form;
/// `Some(Err)` for a date that does not exist (`mktime` would roll `2024-02-30` over to
/// March 1) or that cannot be converted.
fn parse_date_time(s: &str) -> Option<Result<i64, String>> {
    let (y, mo, day, h, m, sec) = date_time_fields(s)?;
    let days = days_in_month(y, mo);
    if day > days {
        return Some(Err(format!("{y:04}-{mo:02} has only {days} days")));
    }
    Some(
        local_to_epoch(y, mo, day, h, m, sec)
            .ok_or_else(|| "not a representable local time".to_string()),
    )
}

/// The numbers of `YYYY-MM-DD[( |T)HH:MM[:SS]]`, each within its range (the day within 1..=31).
fn date_time_fields(s: &str) -> Option<(i64, i64, i64, i64, i64, i64)> {
    let (date, time) = match s.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t.trim())),
        None => (s, None),
    };
    let mut d = date.split('-');
    let (Some(y), Some(mo), Some(day), None) = (d.next(), d.next(), d.next(), d.next()) else {
        return None;
    };
    let num = |v: &str, max_len: usize| -> Option<i64> {
        (!v.is_empty() && v.len() <= max_len && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.parse().ok())
            .flatten()
    };
    let (y, mo, day) = (num(y, 4)?, num(mo, 2)?, num(day, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) {
        return None;
    }
    let (h, m, sec) = match time {
        None => (0, 0, 0),
        Some(t) => {
            let mut p = t.split(':');
            let h = num(p.next()?, 2)?;
            let m = num(p.next()?, 2)?;
            let sec = match p.next() {
                Some(v) => num(v, 2)?,
                None => 0,
            };
            if p.next().is_some() || h > 23 || m > 59 || sec > 60 {
                return None;
            }
            (h, m, sec)
        }
    };
    Some((y, mo, day, h, m, sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_522_691_281; // Mon 2018-04-02 17:48:01 UTC

    fn check(spec: &str, expected: Option<i64>) {
        assert_eq!(parse_time_spec(spec, NOW).ok(), expected, "{spec}");
    }

    #[test]
    fn time_specs() {
        // These tests use whatever TZ the process has for absolute dates, so compare those
        // through the same conversion.
        check("now", Some(NOW));
        check("@1500000000", Some(1_500_000_000));
        check("2h", Some(NOW - 7200));
        check("-2h", Some(NOW - 7200));
        check("+2h", Some(NOW + 7200));
        check("2h ago", Some(NOW - 7200));
        check("1d12h", Some(NOW - 86_400 - 43_200));
        check("30 min", Some(NOW - 1800));
        check("90", Some(NOW - 90));
        check("1w", Some(NOW - 604_800));
        check("2x", None);
        check("h", None);
        check("", None);
        check("2018-13-01", None);
        check("2018-04-02 25:00", None);
        check("yesterday-ish", None);
        let d = parse_time_spec("2018-04-02", NOW).unwrap();
        assert_eq!(parse_time_spec("2018-04-02 00:00:00", NOW).unwrap(), d);
        assert_eq!(
            parse_time_spec("2018-04-02T17:48", NOW).unwrap(),
            d + 17 * 3600 + 48 * 60
        );
        assert_eq!(parse_time_spec("today", d + 3600).unwrap(), d);
        assert_eq!(parse_time_spec("yesterday", d + 3600).unwrap(), d - 86_400);
    }

    #[test]
    fn dates_that_do_not_exist_are_refused() {
        for (spec, exists) in [
            ("2024-02-29", true),
            ("2024-02-30", false),
            ("2023-02-29", false),
            ("2000-02-29", true),
            ("1900-02-29", false),
            ("2024-04-30", true),
            ("2024-04-31", false),
            ("2024-06-31 10:00", false),
            ("2024-12-31T23:59:59", true),
            ("2024-01-31", true),
            ("2024-02-00", false),
        ] {
            let r = parse_time_spec(spec, NOW);
            assert_eq!(r.is_ok(), exists, "{spec}: {r:?}");
        }
        let e = parse_time_spec("2024-02-30", NOW).unwrap_err();
        assert!(e.contains("2024-02 has only 29 days"), "{e}");
        // The first of the next month is still what it was.
        assert_eq!(
            parse_time_spec("2024-03-01", NOW).unwrap(),
            parse_time_spec("2024-02-29", NOW).unwrap() + 86_400
        );
    }

    #[test]
    fn out_of_range_times_do_not_format() {
        assert_eq!(journal_time(i64::MAX), None);
        assert!(journal_time(0).is_some());
    }
}
