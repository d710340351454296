//! HTTP details shared by the delivery protocols, with no dependency on them: header-line
//! checks and `Retry-After` parsing.

use std::time::{Duration, SystemTime};

/// Longest wait a `Retry-After` may ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Header-line checks: one implementation, in libtelemetry's config (it checks the
/// `otlp_headers` key with it).
pub use libtelemetry::config::{
    is_http_header_value as valid_header_value, is_http_token as is_token, split_header_line,
};

/// `Retry-After` as delay-seconds or an HTTP date (IMF-fixdate, and the obsolete RFC 850
/// and asctime forms RFC 9110 requires recipients to accept), relative to `now`, capped at
/// [`MAX_RETRY_AFTER`]. A date in the past is no wait; anything else is `None`.
pub fn parse_retry_after_at(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// [`parse_retry_after_at`] now.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    parse_retry_after_at(v, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_forms() {
        // Sun, 06 Nov 1994 08:49:37 GMT = 784111777.
        let now = at(784_111_777 - 120);
        let two_minutes = Some(Duration::from_secs(120));
        assert_eq!(parse_retry_after_at("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after_at(" 99999 ", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after_at("Sun, 06 Nov 1994 08:49:37 GMT", now),
            two_minutes,
            "IMF-fixdate"
        );
        assert_eq!(
            parse_retry_after_at("Sunday, 06-Nov-94 08:49:37 GMT", now),
            two_minutes,
            "RFC 850"
        );
        assert_eq!(
            parse_retry_after_at("Sun Nov  6 08:49:37 1994", now),
            two_minutes,
            "asctime"
        );
        assert_eq!(
            parse_retry_after_at("Sun, 06 Nov 1994 08:49:37 GMT", at(784_111_777 + 5)),
            Some(Duration::ZERO),
            "in the past"
        );
        assert_eq!(
            parse_retry_after_at("Sat, 06 Nov 2094 08:49:37 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        for bad in [
            "soon",
            "",
            "-5",
            "Tue, 31 Feb 2026 25:61:61 GMT",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 32 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after_at(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn header_lines() {
        assert_eq!(split_header_line("X-A:  b "), Some(("X-A", "b")));
        assert_eq!(split_header_line("X A: b"), None);
        assert_eq!(split_header_line("no colon"), None);
        assert_eq!(split_header_line("X-A: b\u{1}"), None);
        assert!(is_token("X-Telemetry-TID") && !is_token("") && !is_token("a:b"));
        assert!(valid_header_value("") && valid_header_value("a\tb") && !valid_header_value("é"));
    }
}
