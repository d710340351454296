//! The settings telempostd derives from a config, checked once (at start-up and at each
//! reload) so that the scheduler only ever sees valid values.

use std::sync::Arc;
use std::time::Duration;

use libtelemetry::Config;

use super::concurrency::ConcurrencyMode;
use super::delivery::Target;
use super::error::PostdError;

/// Records in flight at once unless `delivery_max_in_flight` says otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: usize = libtelemetry::config::DEFAULT_DELIVERY_MAX_IN_FLIGHT;
/// Upper bound of `delivery_max_in_flight` (checked by `Config::check_delivery`).
pub const MAX_IN_FLIGHT_LIMIT: usize =
    *libtelemetry::config::DELIVERY_MAX_IN_FLIGHT_RANGE.end() as usize;

/// Settings derived from a config, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cfg: Config,
    pub target: Arc<Target>,
    pub max_in_flight: usize,
    pub keep_alive: bool,
    /// `delivery_concurrency`: adaptive (up to `max_in_flight`) or fixed.
    pub concurrency: ConcurrencyMode,
    /// `record_expiry` (checked non-negative at start-up).
    pub expiry: Duration,
    /// Bytes; `None` = unlimited.
    pub quota: Option<u64>,
    /// Backoff cap and rescan interval (`spool_process_time`).
    pub cap: Duration,
}

impl Settings {
    pub fn from_config(cfg: Config) -> Result<Settings, PostdError> {
        cfg.check_delivery()?;
        let target = Target::from_config(&cfg)?;
        let max_in_flight = cfg.delivery_max_in_flight;
        let keep_alive = cfg.delivery_keep_alive;
        let concurrency = cfg.delivery_concurrency;
        Ok(Settings {
            target: Arc::new(target),
            max_in_flight,
            keep_alive,
            concurrency,
            expiry: cfg.record_expiry.unwrap_or_default(),
            quota: cfg.spool_max_bytes,
            cap: cfg.spool_process_time,
            cfg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libtelemetry::Paths;
    use std::path::Path;

    #[test]
    fn settings_checks() {
        let paths = Paths::default();
        let mut c = Config::defaults(&paths);
        let s = Settings::from_config(c.clone()).unwrap();
        assert_eq!(s.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(s.quota, Some(5120 * 1024));
        assert_eq!(s.expiry, Duration::from_secs(1200 * 60));
        let bad = Config::parse(
            "[settings]\ndelivery_max_in_flight=0\n",
            Path::new("t.conf"),
            &paths,
        )
        .unwrap();
        assert!(Settings::from_config(bad).is_err());
        c.delivery_max_in_flight = 8;
        c.delivery_keep_alive = false;
        let s = Settings::from_config(c.clone()).unwrap();
        assert_eq!((s.max_in_flight, s.keep_alive), (8, false));
        assert_eq!(s.concurrency, ConcurrencyMode::Adaptive);
        c.delivery_concurrency = ConcurrencyMode::Fixed;
        assert_eq!(
            Settings::from_config(c.clone()).unwrap().concurrency,
            ConcurrencyMode::Fixed
        );
        let bad = Config::parse(
            "[settings]\ndelivery_concurrency=sometimes\n",
            Path::new("t.conf"),
            &paths,
        )
        .unwrap();
        assert!(Settings::from_config(bad).is_err());
        c.delivery_concurrency = ConcurrencyMode::Adaptive;
        let window = c.record_limit.window;
        c.record_limit.window = Err(libtelemetry::config::OutOfRange);
        assert!(matches!(
            Settings::from_config(c.clone()),
            Err(PostdError::Config(_))
        ));
        c.record_limit.window = window;
        c.spool_max_bytes = None;
        assert_eq!(Settings::from_config(c).unwrap().quota, None);
    }
}
