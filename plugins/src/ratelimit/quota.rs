//! Quota windows: fixed UTC hours, days and calendar months, computed from unix time (the
//! civil-date conversions are Howard Hinnant's `days_from_civil` / `civil_from_days`).

use std::time::Duration;

use super::gcra::UnixNanos;

const NANOS_PER_SEC: u64 = 1_000_000_000;
const SECS_PER_HOUR: u64 = 3600;
const SECS_PER_DAY: u64 = 86_400;

/// The kind of a fixed UTC window a quota counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaWindow {
    /// `HH:00:00` to the next hour.
    Hour,
    /// `00:00:00` UTC to the next midnight.
    Day,
    /// The first of the month, 00:00:00 UTC, to the first of the next month.
    Month,
}

impl QuotaWindow {
    /// The window containing `unix_secs`, numbered from the epoch (hours, days, or months
    /// since January 1970). Two instants are in the same window iff their indices are equal.
    pub fn index(self, unix_secs: u64) -> u64 {
        match self {
            QuotaWindow::Hour => unix_secs / SECS_PER_HOUR,
            QuotaWindow::Day => unix_secs / SECS_PER_DAY,
            QuotaWindow::Month => {
                let (year, month, _) = civil_from_days((unix_secs / SECS_PER_DAY) as i64);
                // Unix time is never before 1970, so the month count is not negative.
                ((year - 1970) * 12 + i64::from(month) - 1) as u64
            }
        }
    }

    /// The first second of window `index`.
    pub fn start(self, index: u64) -> u64 {
        match self {
            QuotaWindow::Hour => index.saturating_mul(SECS_PER_HOUR),
            QuotaWindow::Day => index.saturating_mul(SECS_PER_DAY),
            QuotaWindow::Month => {
                let year = 1970 + (index / 12) as i64;
                let month = (index % 12) as u32 + 1;
                (days_from_civil(year, month, 1) as u64).saturating_mul(SECS_PER_DAY)
            }
        }
    }

    /// The first second after the window containing `unix_secs`: when its counter resets.
    pub fn end(self, unix_secs: u64) -> u64 {
        self.start(self.index(unix_secs).saturating_add(1))
    }

    /// Time from `now` until the window containing it ends.
    pub fn reset_in(self, now: UnixNanos) -> Duration {
        let end = self.end(now / NANOS_PER_SEC).saturating_mul(NANOS_PER_SEC);
        Duration::from_nanos(end.saturating_sub(now))
    }
}

/// A quota counter's state after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaState {
    /// Cost units left in the current window.
    pub remaining: u64,
    /// Time until the window ends and the counter resets.
    pub reset_in: Duration,
}

/// The result of asking a quota counter for `cost` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaOutcome {
    /// Admitted; the units are counted.
    Allowed(QuotaState),
    /// Refused, nothing counted: the window has fewer than `cost` units left.
    Exhausted(QuotaState),
}

/// Proleptic Gregorian date `(year, month 1..=12, day 1..=31)` of a day number counted from
/// 1970-01-01. Total: every `i64` day in range gives a valid date.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day number (from 1970-01-01) of a proleptic Gregorian date; `month` in 1..=12, `day` in
/// 1..=31. The inverse of [`civil_from_days`].
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400); // [0, 399]
    let month = i64::from(month);
    let doy = (153 * if month > 2 { month - 3 } else { month + 9 } + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(year: i64, month: u32, day: u32, hh: u64, mm: u64, ss: u64) -> u64 {
        days_from_civil(year, month, day) as u64 * SECS_PER_DAY + hh * 3600 + mm * 60 + ss
    }

    #[test]
    fn civil_round_trips() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(days_from_civil(2028, 2, 29)), (2028, 2, 29));
        for days in (-800_000..800_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        // 1_700_000_000 is 2023-11-14T22:13:20Z.
        assert_eq!(unix(2023, 11, 14, 22, 13, 20), 1_700_000_000);
    }

    #[test]
    fn month_boundaries() {
        let w = QuotaWindow::Month;
        let dec = unix(2027, 12, 31, 23, 59, 59);
        let jan = unix(2028, 1, 1, 0, 0, 0);
        assert_eq!(w.index(jan), w.index(dec) + 1);
        assert_eq!(w.end(dec), jan);
        assert_eq!(w.start(w.index(dec)), unix(2027, 12, 1, 0, 0, 0));
        // Leap February 2028: the 29th is still February, March starts after it.
        let feb29 = unix(2028, 2, 29, 23, 59, 59);
        assert_eq!(w.index(feb29), w.index(unix(2028, 2, 1, 0, 0, 0)));
        assert_eq!(w.end(feb29), unix(2028, 3, 1, 0, 0, 0));
        assert_eq!(w.end(feb29) - w.start(w.index(feb29)), 29 * SECS_PER_DAY);
        assert_eq!(
            w.end(unix(2027, 2, 10, 0, 0, 0)) - unix(2027, 2, 1, 0, 0, 0),
            28 * SECS_PER_DAY
        );
    }

    #[test]
    fn hour_and_day_boundaries() {
        let t = unix(2028, 2, 29, 13, 59, 59);
        assert_eq!(QuotaWindow::Hour.end(t), unix(2028, 2, 29, 14, 0, 0));
        assert_eq!(QuotaWindow::Day.end(t), unix(2028, 3, 1, 0, 0, 0));
        assert_eq!(
            QuotaWindow::Hour.index(t + 1),
            QuotaWindow::Hour.index(t) + 1
        );
        let now = t * NANOS_PER_SEC + 500_000_000;
        assert_eq!(QuotaWindow::Hour.reset_in(now), Duration::from_millis(500));
    }
}
