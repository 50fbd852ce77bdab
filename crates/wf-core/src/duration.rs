//! Durations as operators write them (`500ms`, `5s`, `2m`, `1h`, `7d`) and the retry
//! schedule, which can never be empty.

use std::fmt;
use std::time::Duration;

/// Error for a duration string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{0}` (expected e.g. 500ms, 5s, 2m, 1h, 7d)")]
pub struct InvalidDuration(pub String);

/// Parses `<integer><unit>` with unit `ms`, `s`, `m`, `h` or `d`. Zero is allowed here;
/// callers that need a positive value check it.
///
/// # Errors
/// [`InvalidDuration`] for anything else (no unit, a fraction, overflow, spaces inside).
pub fn parse_duration(s: &str) -> Result<Duration, InvalidDuration> {
    let err = || InvalidDuration(s.to_owned());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(err());
    }
    let n: u64 = num.parse().map_err(|_| err())?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(err()),
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(err)
}

/// Formats in the largest unit up to hours that divides the duration exactly (`2m`, `90s`,
/// `1500ms`, `24h`). Retry queue names are built from this, so it is part of the
/// topology's contract: the default schedule's last tier is `workflows.retry.24h`, as an
/// operator wrote it, not `1d`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000)] {
        if ms != 0 && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// The delays before retry 1..N. Never empty; every delay is positive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

/// Why a retry schedule was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSchedule {
    #[error("retry schedule is empty")]
    Empty,
    #[error(transparent)]
    Duration(#[from] InvalidDuration),
    #[error("retry delay `{0}` must be positive")]
    Zero(String),
}

impl RetrySchedule {
    /// Parses a comma-separated list such as `5s,30s,2m`.
    ///
    /// # Errors
    /// [`InvalidSchedule`] when empty, when an entry is not a duration, or is zero.
    pub fn parse(s: &str) -> Result<Self, InvalidSchedule> {
        let mut out = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(if s.trim().is_empty() {
                    InvalidSchedule::Empty
                } else {
                    InvalidSchedule::Duration(InvalidDuration(s.to_owned()))
                });
            }
            let d = parse_duration(part)?;
            if d.is_zero() {
                return Err(InvalidSchedule::Zero(part.to_owned()));
            }
            out.push(d);
        }
        if out.is_empty() {
            return Err(InvalidSchedule::Empty);
        }
        Ok(RetrySchedule(out))
    }

    /// The delays, in order.
    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// The delay before retry number `retry` (1-based), or `None` after the last one.
    pub fn delay_before_retry(&self, retry: usize) -> Option<Duration> {
        retry.checked_sub(1).and_then(|i| self.0.get(i).copied())
    }

    /// The whole schedule's span: the sum of its delays. A delivery whose endpoint stays
    /// unavailable for longer than this is given up (`endpoint_unavailable`), just as one
    /// whose attempts all failed is after about this long.
    pub fn span(&self) -> Duration {
        self.0.iter().sum()
    }

    /// The distinct delays, sorted: one retry queue each.
    pub fn distinct_delays(&self) -> Vec<Duration> {
        let mut v = self.0.clone();
        v.sort();
        v.dedup();
        v
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|d| format_duration(*d)).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            "-5s",
            "1.5s",
            "5sec",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "24h");
        assert_eq!(format_duration(Duration::from_secs(7 * 86_400)), "168h");
    }

    #[test]
    fn default_schedule() {
        let s = RetrySchedule::parse("5s,30s,2m,10m,30m,1h,2h,4h,8h,16h,24h").unwrap();
        assert_eq!(s.delays().len(), 11);
        assert_eq!(s.delay_before_retry(1), Some(Duration::from_secs(5)));
        assert_eq!(s.delay_before_retry(11), Some(Duration::from_secs(86_400)));
        assert_eq!(s.delay_before_retry(12), None);
        assert_eq!(s.delay_before_retry(0), None);
        assert!(RetrySchedule::parse("").is_err());
        assert!(RetrySchedule::parse("5s,,2m").is_err());
        assert!(RetrySchedule::parse("0s").is_err());
        assert_eq!(
            RetrySchedule::parse("2s,1s,2s").unwrap().distinct_delays(),
            vec![Duration::from_secs(1), Duration::from_secs(2)]
        );
    }
}
