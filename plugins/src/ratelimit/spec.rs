//! The numbers of a limit, as the gateway hands them to the limiter: parsed from the config's
//! strings (`"100/s"`, `"100000/day"`), validated by construction.

use std::num::NonZeroU32;
use std::time::Duration;

use super::gcra::GcraParams;
use super::quota::QuotaWindow;

/// Why a rate, quota or limit could not be built. The message is meant to follow a config
/// path (`plans.pro.rate: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Not `COUNT/UNIT`.
    #[error("expected COUNT/UNIT (e.g. {example:?}), got {got:?}")]
    Format {
        /// An example of the expected form.
        example: &'static str,
        /// What was given.
        got: String,
    },
    /// The count is zero or not a number in range.
    #[error("count must be a whole number from 1 to {max}, got {got:?}")]
    Count {
        /// The largest accepted count.
        max: u64,
        /// What was given.
        got: String,
    },
    /// The unit is not one of the accepted ones.
    #[error("unknown unit {got:?}: expected one of {expected}")]
    Unit {
        /// The accepted units.
        expected: &'static str,
        /// What was given.
        got: String,
    },
    /// `burst` is zero.
    #[error("burst must be > 0")]
    ZeroBurst,
}

/// A sustained rate: `count` requests (cost units) per `per`.
///
/// Invariant (kept by [`parse_rate`] and [`RateSpec::new`]): `per` is not zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateSpec {
    /// How many cost units per period.
    pub count: NonZeroU32,
    /// The period.
    pub per: Duration,
}

impl RateSpec {
    /// `count` per `per`; `None` if either is zero.
    pub fn new(count: u32, per: Duration) -> Option<Self> {
        let count = NonZeroU32::new(count)?;
        (!per.is_zero()).then_some(RateSpec { count, per })
    }

    /// The time one cost unit takes to refill (`per / count`, at least 1 ns).
    pub fn emission_interval(&self) -> Duration {
        (self.per / self.count.get()).max(Duration::from_nanos(1))
    }
}

/// Parses `"100/s"`, `"5/m"`, `"1000/h"`, `"20000/d"` (also `sec`/`second`, `min`/`minute`,
/// `hour`, `day`). Fails with a message for the config path on anything else, on a zero count
/// and on a count above `u32::MAX`.
pub fn parse_rate(text: &str) -> Result<RateSpec, SpecError> {
    const EXAMPLE: &str = "100/s";
    const UNITS: &str = "s, sec, second, m, min, minute, h, hour, d, day";
    let (count, unit) = split_count_unit(text, EXAMPLE)?;
    let count: u32 = count
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| SpecError::Count {
            max: u64::from(u32::MAX),
            got: count.to_string(),
        })?;
    let per = match unit {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        _ => {
            return Err(SpecError::Unit {
                expected: UNITS,
                got: unit.to_string(),
            });
        }
    };
    RateSpec::new(count, per).ok_or_else(|| SpecError::Format {
        example: EXAMPLE,
        got: text.to_string(),
    })
}

/// Whose counter a quota draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QuotaScope {
    /// One counter per consumer (and window kind), shared by every route: a plan's quota.
    #[default]
    Consumer,
    /// One counter per consumer × route (and window kind): a route that overrides the quota.
    Route,
}

/// A budget of `count` cost units per fixed UTC window (hour, day or calendar month).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaSpec {
    /// Cost units per window. At most [`QuotaSpec::MAX_COUNT`].
    pub count: u64,
    /// The window kind; counters reset when the window changes.
    pub window: QuotaWindow,
    /// Which counter the quota draws from.
    pub scope: QuotaScope,
}

impl QuotaSpec {
    /// The largest count [`parse_quota`] accepts (2^53, exact in every JSON number).
    pub const MAX_COUNT: u64 = 1 << 53;
}

/// Parses `"100000/day"` (units `hour`/`h`, `day`/`d`, `month`/`mo`) into a consumer-scoped
/// quota. Fails with a message for the config path on anything else or on a zero count.
pub fn parse_quota(text: &str) -> Result<QuotaSpec, SpecError> {
    const EXAMPLE: &str = "100000/day";
    let (count, unit) = split_count_unit(text, EXAMPLE)?;
    let count: u64 = count
        .parse()
        .ok()
        .filter(|&n| n > 0 && n <= QuotaSpec::MAX_COUNT)
        .ok_or_else(|| SpecError::Count {
            max: QuotaSpec::MAX_COUNT,
            got: count.to_string(),
        })?;
    let window = match unit {
        "h" | "hour" => QuotaWindow::Hour,
        "d" | "day" => QuotaWindow::Day,
        "mo" | "month" => QuotaWindow::Month,
        _ => {
            return Err(SpecError::Unit {
                expected: "h, hour, d, day, mo, month",
                got: unit.to_string(),
            });
        }
    };
    Ok(QuotaSpec {
        count,
        window,
        scope: QuotaScope::Consumer,
    })
}

fn split_count_unit<'a>(
    text: &'a str,
    example: &'static str,
) -> Result<(&'a str, &'a str), SpecError> {
    let format = || SpecError::Format {
        example,
        got: text.to_string(),
    };
    let (count, unit) = text.trim().split_once('/').ok_or_else(format)?;
    let (count, unit) = (count.trim(), unit.trim());
    if count.is_empty() || unit.is_empty() {
        return Err(format());
    }
    Ok((count, unit))
}

/// Everything one limit says: a GCRA rate with its burst, and optionally an in-flight cap and
/// a windowed quota. Used for a consumer × route (the plan, with route overrides applied by
/// the gateway) and for a model's global limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitSpec {
    /// The sustained rate.
    pub rate: RateSpec,
    /// How many cost units may pass at once after an idle period (the bucket size).
    pub burst: NonZeroU32,
    /// At most this many requests in flight (per consumer, or per model for a global limit);
    /// `Some(0)` refuses everything.
    pub concurrency: Option<u32>,
    /// A budget per fixed window.
    pub quota: Option<QuotaSpec>,
}

impl LimitSpec {
    /// A rate and burst, no concurrency cap, no quota. Fails if `burst` is zero.
    pub fn new(rate: RateSpec, burst: u32) -> Result<Self, SpecError> {
        let burst = NonZeroU32::new(burst).ok_or(SpecError::ZeroBurst)?;
        Ok(LimitSpec {
            rate,
            burst,
            concurrency: None,
            quota: None,
        })
    }

    /// The same limit with an in-flight cap.
    pub fn with_concurrency(self, cap: u32) -> Self {
        LimitSpec {
            concurrency: Some(cap),
            ..self
        }
    }

    /// The same limit with a quota.
    pub fn with_quota(self, quota: QuotaSpec) -> Self {
        LimitSpec {
            quota: Some(quota),
            ..self
        }
    }

    /// The GCRA parameters (emission interval and burst) of this limit.
    pub fn gcra(&self) -> GcraParams {
        GcraParams {
            emission: self.rate.emission_interval(),
            burst: self.burst,
        }
    }

    /// Whether a request of `cost` can never be admitted: it exceeds the burst, or a whole
    /// quota window.
    pub fn never_fits(&self, cost: u32) -> bool {
        cost > self.burst.get() || self.quota.is_some_and(|q| u64::from(cost) > q.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        let r = parse_rate("100/s").unwrap();
        assert_eq!((r.count.get(), r.per), (100, Duration::from_secs(1)));
        assert_eq!(r.emission_interval(), Duration::from_millis(10));
        assert_eq!(parse_rate(" 5 / m ").unwrap().per, Duration::from_secs(60));
        assert_eq!(parse_rate("1000/h").unwrap().per, Duration::from_secs(3600));
        assert_eq!(
            parse_rate("7/day").unwrap().per,
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn bad_rates_say_why() {
        assert!(matches!(parse_rate("100"), Err(SpecError::Format { .. })));
        assert!(matches!(parse_rate("/s"), Err(SpecError::Format { .. })));
        assert!(matches!(parse_rate("0/s"), Err(SpecError::Count { .. })));
        assert!(matches!(parse_rate("-1/s"), Err(SpecError::Count { .. })));
        assert!(matches!(
            parse_rate("99999999999/s"),
            Err(SpecError::Count { .. })
        ));
        let err = parse_rate("10/fortnight").unwrap_err();
        assert!(err.to_string().contains("fortnight"), "{err}");
    }

    #[test]
    fn quotas_parse() {
        let q = parse_quota("100000/day").unwrap();
        assert_eq!(
            (q.count, q.window, q.scope),
            (100_000, QuotaWindow::Day, QuotaScope::Consumer)
        );
        assert_eq!(parse_quota("5/hour").unwrap().window, QuotaWindow::Hour);
        assert_eq!(parse_quota("5/month").unwrap().window, QuotaWindow::Month);
        assert!(matches!(parse_quota("5/week"), Err(SpecError::Unit { .. })));
        assert!(matches!(parse_quota("0/day"), Err(SpecError::Count { .. })));
    }

    #[test]
    fn limit_spec_checks_burst_and_fit() {
        let rate = parse_rate("10/s").unwrap();
        assert_eq!(LimitSpec::new(rate, 0), Err(SpecError::ZeroBurst));
        let spec = LimitSpec::new(rate, 5).unwrap();
        assert!(!spec.never_fits(5));
        assert!(spec.never_fits(6));
        let spec = spec.with_quota(parse_quota("3/day").unwrap());
        assert!(spec.never_fits(4));
    }
}
