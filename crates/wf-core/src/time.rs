//! Timestamps as the API and payloads show them: RFC 3339, UTC, milliseconds, `Z`.

use chrono::{DateTime, SecondsFormat, Utc};

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
