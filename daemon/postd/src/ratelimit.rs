//! Rate limiting with the C daemon's 60-slot windows (§5.7).
//!
//! Two arrays of 60 slots (records, bytes), one slot per minute. A check sums the `W` slots
//! ending at the current minute; an update after a successful POST adds to the current slot
//! and zeroes the `60 − W` slots after it. [`check`] and [`update`] are the C helpers, exact.
//!
//! Differences from the C daemon, on purpose:
//! * the byte limiter counts the record's real size (C added 4 per record);
//! * minutes come from a monotonic clock (minutes since start), so wall-clock jumps do not
//!   shift the windows, and a slot last written an hour or more ago counts as empty (the C
//!   arrays kept stale counts when nothing was sent for a long time);
//! * records in flight are reserved, so parallel deliveries cannot overshoot a limit;
//! * per-sender shares: records of unprivileged senders (see
//!   [`super::spool::unprivileged_sender`]) also count against a limiter of all of them
//!   together, at [`UNPRIVILEGED_SHARE`] of each burst limit, and one of their uid alone, at
//!   [`PER_UID_SHARE`]; so however much one user sends, privileged records (root, the system
//!   probes) always find a quarter of the limits, and two users share what is left.
//!
//! Hand-written on purpose: the slot arithmetic decides which records a configured limit
//! lets through, a compatibility contract with the C daemon that a generic rate-limiting
//! crate (token bucket, GCRA) would not keep.

use libtelemetry::config::{OutOfRange, RateLimit, WindowMinutes};

/// Slots per array: one per minute of an hour.
pub const SLOTS: usize = 60;
/// Share of each burst limit all unprivileged senders together may use (numerator,
/// denominator).
pub const UNPRIVILEGED_SHARE: (u64, u64) = (3, 4);
/// Share of each burst limit one unprivileged uid may use.
pub const PER_UID_SHARE: (u64, u64) = (1, 2);
/// Per-uid limiters kept; past it, idle ones are forgotten.
const MAX_UID_LIMITERS: usize = 4096;

/// `limit` × `share`, at least 1 for a positive limit; 0 and a disabled limit stay so.
fn share_of(limit: Option<u64>, (num, den): (u64, u64)) -> Option<u64> {
    limit.map(|l| match l {
        0 => 0,
        l => (l.saturating_mul(num) / den).max(1),
    })
}

/// What the limits say about one more record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    Allowed,
    /// The global limits: nothing is sent until they allow it.
    Global,
    /// The sender's share (or that of all unprivileged senders) is used up: only this
    /// sender waits.
    Sender,
}

/// The C `rate_limit_check`: does adding `inc` at `minute` stay within `limit` over a window
/// of `window` minutes? `window` is 0..=59 (checked at start-up).
pub fn check(slots: &[u64; SLOTS], minute: usize, limit: u64, window: usize, inc: u64) -> bool {
    let minute = minute % SLOTS;
    let window = window.min(SLOTS - 1);
    let start = (SLOTS + minute - window + 1) % SLOTS;
    let mut sum: u64 = 0;
    for i in 0..window {
        let slot = slots[(start + i) % SLOTS];
        // C: any slot + inc >= SIZE_MAX fails the check.
        match slot.checked_add(inc) {
            Some(v) if v < u64::MAX => {}
            _ => return false,
        }
        sum = sum.saturating_add(slot);
    }
    sum.checked_add(inc).is_some_and(|total| total <= limit)
}

/// The C `rate_limit_update`: add `inc` to `minute`'s slot, then zero the `60 − window`
/// slots after it (with `window` 0 that is all 60, the current one included).
pub fn update(slots: &mut [u64; SLOTS], minute: usize, window: usize, inc: u64) {
    let minute = minute % SLOTS;
    let window = window.min(SLOTS - 1);
    slots[minute] = slots[minute].saturating_add(inc);
    for i in 1..=(SLOTS - window) {
        slots[(minute + i) % SLOTS] = 0;
    }
}

/// One limiter (records or bytes) over live time.
#[derive(Debug, Clone)]
struct Limiter {
    /// `None` = disabled (a negative burst limit).
    limit: Option<u64>,
    window: usize,
    slots: [u64; SLOTS],
    /// Absolute minute each slot was last written.
    stamps: [u64; SLOTS],
    /// Increments of deliveries in flight.
    reserved: u64,
}

impl Limiter {
    fn new(limit: Option<u64>, window: Result<WindowMinutes, OutOfRange>) -> Limiter {
        // An out-of-range window never gets here: `Config::check_delivery` refuses it.
        let window = window.map_or(0, |w| usize::from(w.minutes()));
        Limiter {
            limit,
            window: window.min(SLOTS - 1),
            slots: [0; SLOTS],
            stamps: [0; SLOTS],
            reserved: 0,
        }
    }

    /// Forget slots written an hour or more before `abs_minute`.
    fn age(&mut self, abs_minute: u64) {
        for i in 0..SLOTS {
            if self.slots[i] != 0 && abs_minute.saturating_sub(self.stamps[i]) >= SLOTS as u64 {
                self.slots[i] = 0;
            }
        }
    }

    fn allows(&mut self, abs_minute: u64, inc: u64) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        self.age(abs_minute);
        check(
            &self.slots,
            (abs_minute % SLOTS as u64) as usize,
            limit,
            self.window,
            inc.saturating_add(self.reserved),
        )
    }

    /// Nothing counted or reserved: it can be forgotten.
    fn is_idle(&self, abs_minute: u64) -> bool {
        self.reserved == 0
            && (0..SLOTS).all(|i| {
                self.slots[i] == 0 || abs_minute.saturating_sub(self.stamps[i]) >= SLOTS as u64
            })
    }

    fn copy_counts(&mut self, from: &Limiter) {
        self.slots = from.slots;
        self.stamps = from.stamps;
        self.reserved = from.reserved;
    }

    fn record(&mut self, abs_minute: u64, inc: u64) {
        if self.limit.is_none() {
            return;
        }
        self.age(abs_minute);
        let m = (abs_minute % SLOTS as u64) as usize;
        update(&mut self.slots, m, self.window, inc);
        // Every slot the C update zeroed or wrote now belongs to this hour.
        self.stamps[m] = abs_minute;
        for i in 1..=(SLOTS - self.window) {
            let slot = (m + i) % SLOTS;
            self.stamps[slot] = abs_minute;
        }
    }
}

/// A record limiter and a byte limiter.
#[derive(Debug, Clone)]
struct Pair {
    records: Limiter,
    bytes: Limiter,
}

impl Pair {
    fn new(limits: &Limits, share: (u64, u64)) -> Pair {
        let (records, bytes) = limits;
        Pair {
            records: Limiter::new(share_of(records.burst, share), records.window),
            bytes: Limiter::new(share_of(bytes.burst, share), bytes.window),
        }
    }

    fn allows(&mut self, abs_minute: u64, size: u64) -> bool {
        self.records.allows(abs_minute, 1) && self.bytes.allows(abs_minute, size)
    }

    fn reserve(&mut self, size: u64) {
        self.records.reserved += 1;
        self.bytes.reserved = self.bytes.reserved.saturating_add(size);
    }

    fn finish(&mut self, abs_minute: u64, size: u64, sent: bool) {
        self.records.reserved = self.records.reserved.saturating_sub(1);
        self.bytes.reserved = self.bytes.reserved.saturating_sub(size);
        if sent {
            self.records.record(abs_minute, 1);
            self.bytes.record(abs_minute, size);
        }
    }

    fn copy_counts(&mut self, from: &Pair) {
        self.records.copy_counts(&from.records);
        self.bytes.copy_counts(&from.bytes);
    }
}

/// The record limit and the byte limit.
type Limits = (RateLimit, RateLimit);

/// The record and byte limiters together, with the C "both disabled → off" rule, and the
/// shares of unprivileged senders.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    enabled: bool,
    records: Limiter,
    bytes: Limiter,
    limits: Limits,
    unprivileged: Pair,
    per_uid: std::collections::HashMap<u32, Pair>,
}

impl RateLimiter {
    pub fn new(enabled: bool, record_limit: RateLimit, byte_limit: RateLimit) -> RateLimiter {
        let records = Limiter::new(record_limit.burst, record_limit.window);
        let bytes = Limiter::new(byte_limit.burst, byte_limit.window);
        // C: rate limiting with both burst limits disabled is switched off.
        let enabled = enabled && (records.limit.is_some() || bytes.limit.is_some());
        let limits = (record_limit, byte_limit);
        RateLimiter {
            enabled,
            records,
            bytes,
            limits,
            unprivileged: Pair::new(&limits, UNPRIVILEGED_SHARE),
            per_uid: std::collections::HashMap::new(),
        }
    }

    pub fn from_config(c: &libtelemetry::Config) -> RateLimiter {
        RateLimiter::new(c.rate_limit_enabled, c.record_limit, c.byte_limit)
    }

    /// Keep the counts of `old` (a config reload must not reset the windows).
    pub fn inherit(&mut self, old: &RateLimiter) {
        self.records.slots = old.records.slots;
        self.records.stamps = old.records.stamps;
        self.records.reserved = old.records.reserved;
        self.bytes.slots = old.bytes.slots;
        self.bytes.stamps = old.bytes.stamps;
        self.bytes.reserved = old.bytes.reserved;
        self.unprivileged.copy_counts(&old.unprivileged);
        for (uid, pair) in &old.per_uid {
            let mut p = Pair::new(&self.limits, PER_UID_SHARE);
            p.copy_counts(pair);
            self.per_uid.insert(*uid, p);
        }
    }

    fn uid_pair(&mut self, uid: u32, abs_minute: u64) -> &mut Pair {
        if !self.per_uid.contains_key(&uid) && self.per_uid.len() >= MAX_UID_LIMITERS {
            self.per_uid
                .retain(|_, p| !(p.records.is_idle(abs_minute) && p.bytes.is_idle(abs_minute)));
        }
        let limits = self.limits;
        self.per_uid
            .entry(uid)
            .or_insert_with(|| Pair::new(&limits, PER_UID_SHARE))
    }

    /// May a record of `size` bytes from `uid` (`None`: a privileged sender) be sent at
    /// `abs_minute`, counting those in flight?
    pub fn check(&mut self, abs_minute: u64, size: u64, uid: Option<u32>) -> RateVerdict {
        if !self.enabled {
            return RateVerdict::Allowed;
        }
        if !self.allows(abs_minute, size) {
            return RateVerdict::Global;
        }
        let Some(uid) = uid else {
            return RateVerdict::Allowed;
        };
        if !self.unprivileged.allows(abs_minute, size)
            || !self.uid_pair(uid, abs_minute).allows(abs_minute, size)
        {
            return RateVerdict::Sender;
        }
        RateVerdict::Allowed
    }

    /// A delivery of `size` bytes from `uid` starts.
    pub fn reserve_for(&mut self, size: u64, uid: Option<u32>) {
        if !self.enabled {
            return;
        }
        self.reserve(size);
        if let Some(uid) = uid {
            self.unprivileged.reserve(size);
            self.uid_pair(uid, 0).reserve(size);
        }
    }

    /// A delivery of `size` bytes from `uid` ended; `sent` = the backend accepted it.
    pub fn finish_for(&mut self, abs_minute: u64, size: u64, sent: bool, uid: Option<u32>) {
        if !self.enabled {
            return;
        }
        self.finish(abs_minute, size, sent);
        if let Some(uid) = uid {
            self.unprivileged.finish(abs_minute, size, sent);
            self.uid_pair(uid, abs_minute)
                .finish(abs_minute, size, sent);
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// May a record of `size` bytes be sent at `abs_minute` (counting those in flight)?
    pub fn allows(&mut self, abs_minute: u64, size: u64) -> bool {
        !self.enabled || (self.records.allows(abs_minute, 1) && self.bytes.allows(abs_minute, size))
    }

    /// A delivery of `size` bytes starts.
    pub fn reserve(&mut self, size: u64) {
        if self.enabled {
            self.records.reserved += 1;
            self.bytes.reserved = self.bytes.reserved.saturating_add(size);
        }
    }

    /// A delivery of `size` bytes ended; `sent` = the backend accepted it.
    pub fn finish(&mut self, abs_minute: u64, size: u64, sent: bool) {
        if !self.enabled {
            return;
        }
        self.records.reserved = self.records.reserved.saturating_sub(1);
        self.bytes.reserved = self.bytes.reserved.saturating_sub(size);
        if sent {
            self.records.record(abs_minute, 1);
            self.bytes.record(abs_minute, size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(set: &[(usize, u64)]) -> [u64; SLOTS] {
        let mut s = [0; SLOTS];
        for &(i, v) in set {
            s[i] = v;
        }
        s
    }

    /// (minute, limit, window, slots set, inc, expected pass)
    type CheckCase = (usize, u64, usize, &'static [(usize, u64)], u64, bool);

    /// check_postd cases 7–10.
    #[test]
    fn check_cases_of_the_c_suite() {
        let cases: [CheckCase; 4] = [
            (3, 30, 15, &[(1, 10), (7, 10), (10, 20), (55, 10)], 1, true),
            (24, 30, 30, &[(3, 10), (4, 10), (6, 10), (27, 10)], 1, false),
            (
                3,
                64000,
                15,
                &[(1, 32000), (7, 10000), (10, 45000), (55, 11000)],
                20000,
                true,
            ),
            (
                15,
                100000,
                15,
                &[(1, 32000), (7, 10000), (10, 32300), (55, 31000)],
                80000,
                false,
            ),
        ];
        for (minute, limit, window, set, inc, expected) in cases {
            assert_eq!(
                check(&slots(set), minute, limit, window, inc),
                expected,
                "minute {minute} limit {limit} window {window}"
            );
        }
    }

    /// check_postd cases 11–12: updates at minutes 7, 7, 45, 47, 47 with W = 15.
    #[test]
    fn update_cases_of_the_c_suite() {
        for inc in [1, 32000] {
            let mut s = [0; SLOTS];
            for minute in [7, 7, 45, 47, 47] {
                update(&mut s, minute, 15, inc);
            }
            assert_eq!(s, slots(&[(45, inc), (47, 2 * inc)]), "inc {inc}");
        }
    }

    #[test]
    fn window_zero_and_overflow() {
        assert!(
            check(&slots(&[(3, 99)]), 3, 1, 0, 1),
            "W=0: only inc counts"
        );
        assert!(!check(&slots(&[]), 3, 1, 0, 2));
        let mut s = slots(&[(1, 5), (2, 5)]);
        update(&mut s, 2, 0, 1);
        assert_eq!(
            s, [0; SLOTS],
            "W=0 zeroes all 60, the current slot included"
        );
        assert!(!check(&slots(&[(3, u64::MAX - 1)]), 3, u64::MAX, 15, 1));
    }

    /// A limiter as the config file would give it: a negative burst limit is off.
    fn limiter(
        enabled: bool,
        record_burst: i64,
        record_window: u32,
        byte_burst: i64,
        byte_window: u32,
    ) -> RateLimiter {
        let limit = |burst: i64, window: u32| {
            RateLimit::new(
                u64::try_from(burst).ok(),
                WindowMinutes::new(window).unwrap(),
            )
        };
        RateLimiter::new(
            enabled,
            limit(record_burst, record_window),
            limit(byte_burst, byte_window),
        )
    }

    /// check_postd cases 1, 6 and 13–15: enabled limits, the both-disabled rule.
    #[test]
    fn enabling_rules() {
        assert!(limiter(true, 100, 15, 1000, 20).is_enabled());
        assert!(limiter(true, 4, 15, 2999, 20).is_enabled());
        assert!(limiter(true, 0, 15, -1, 20).is_enabled());
        assert!(!limiter(true, -1, 15, -5, 20).is_enabled());
        assert!(!limiter(false, 100, 15, 1000, 20).is_enabled());
    }

    #[test]
    fn live_limiter_counts_reservations_real_bytes_and_forgets_old_slots() {
        let mut r = limiter(true, 2, 15, 1000, 15);
        assert!(r.allows(0, 400));
        r.reserve(400);
        assert!(r.allows(0, 400));
        r.reserve(400);
        assert!(!r.allows(0, 100), "two in flight fill the record limit");
        r.finish(0, 400, true);
        r.finish(0, 400, false);
        assert!(r.allows(0, 500));
        assert!(!r.allows(0, 700), "400 real bytes already sent");
        r.reserve(1);
        r.finish(1, 1, true);
        assert!(!r.allows(14, 1), "two records within 15 minutes");
        assert!(r.allows(16, 1), "minute 0 left the window");
        assert!(r.allows(60, 1), "an hour later the slots are stale");
        let mut bytes_only = limiter(true, -1, 15, 10, 15);
        assert!(bytes_only.allows(0, 10));
        assert!(!bytes_only.allows(0, 11));
        let mut off = limiter(false, 0, 15, 0, 15);
        assert!(off.allows(0, 1 << 20));
    }

    #[test]
    fn unprivileged_senders_get_shares_and_privileged_ones_the_rest() {
        let mut r = limiter(true, 100, 15, -1, 15);
        let sent = |r: &mut RateLimiter, uid: Option<u32>| {
            let v = r.check(0, 10, uid);
            if v == RateVerdict::Allowed {
                r.reserve_for(10, uid);
                r.finish_for(0, 10, true, uid);
            }
            v
        };
        for _ in 0..50 {
            assert_eq!(sent(&mut r, Some(1000)), RateVerdict::Allowed);
        }
        assert_eq!(
            sent(&mut r, Some(1000)),
            RateVerdict::Sender,
            "half for one uid"
        );
        for _ in 0..25 {
            assert_eq!(sent(&mut r, Some(2000)), RateVerdict::Allowed);
        }
        assert_eq!(
            sent(&mut r, Some(2000)),
            RateVerdict::Sender,
            "three quarters for all of them"
        );
        for _ in 0..25 {
            assert_eq!(
                sent(&mut r, None),
                RateVerdict::Allowed,
                "a quarter is left"
            );
        }
        assert_eq!(sent(&mut r, None), RateVerdict::Global);
        assert_eq!(sent(&mut r, Some(3000)), RateVerdict::Global);
        assert_eq!(share_of(None, PER_UID_SHARE), None);
        assert_eq!(share_of(Some(1), PER_UID_SHARE), Some(1));
        assert_eq!(share_of(Some(0), PER_UID_SHARE), Some(0));
        assert_eq!(share_of(Some(100), UNPRIVILEGED_SHARE), Some(75));
    }
}
