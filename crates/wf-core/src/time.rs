//! Timestamps as the API and payloads show them: RFC 3339, UTC, milliseconds, `Z`.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};

/// Formats as `2026-05-19T12:00:00.000Z`.
pub fn format_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses any RFC 3339 timestamp (any offset) into UTC.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses an event's timestamp (RFC 3339, any offset) into the instant its payload shows:
/// UTC, truncated to the milliseconds [`format_ms`] writes, so that the event published in
/// its wire form and parsed again by the worker is the same event. An instant outside the
/// years 0000 to 9999 in UTC (an offset can push a valid local time there, as in
/// `0000-01-01T00:00:00+01:00`) is refused: RFC 3339 cannot write it, so the worker would
/// reject the wire form of an event the ingestor had already accepted.
pub fn parse_event_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let t = parse_rfc3339(s)?;
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    DateTime::from_timestamp_millis(t.timestamp_millis())
}

/// Now, truncated to what [`format_ms`] shows, so a value round-trips exactly.
pub fn now_ms() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_docs() {
        let t = parse_rfc3339("2026-05-19T14:00:00+02:00").unwrap();
        assert_eq!(format_ms(t), "2026-05-19T12:00:00.000Z");
        assert!(parse_rfc3339("yesterday").is_none());
    }
}
