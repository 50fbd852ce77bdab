//! Conversion between our small header model and AMQP field tables.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use std::collections::BTreeMap;

/// A message header value. Deliberately small: the system only ever sets strings and
/// integers, and keeping lapin's types out of the API keeps lapin inside this crate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    /// A UTF-8 string (AMQP long string).
    Str(String),
    /// A signed 64-bit integer (AMQP long-long-int).
    Int(i64),
}

/// Builds an AMQP short string (exchange, routing key, header key, message id) without
/// panicking on overlong input, which lapin's `From` impls would do.
pub(crate) fn short(s: &str) -> Result<ShortString, String> {
    ShortString::try_new(s).map_err(|e| format!("`{}`: {e}", truncate(s, 64)))
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub(crate) fn to_field_table(headers: &[(String, HeaderValue)]) -> Result<FieldTable, String> {
    let mut table = FieldTable::default();
    for (key, value) in headers {
        let value = match value {
            HeaderValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
            HeaderValue::Int(i) => AMQPValue::LongLongInt(*i),
        };
        table.insert(short(key)?, value);
    }
    Ok(table)
}

/// Best-effort conversion of received headers: strings and integers are kept, anything
/// else (booleans, floats, nested tables such as `x-death`, arrays) is skipped because
/// nothing in the system reads it through this API.
pub(crate) fn from_field_table(table: Option<&FieldTable>) -> BTreeMap<String, HeaderValue> {
    let mut out = BTreeMap::new();
    let Some(table) = table else {
        return out;
    };
    for (key, value) in table.inner() {
        if let Some(v) = convert(value) {
            out.insert(key.as_str().to_owned(), v);
        }
    }
    out
}

fn convert(value: &AMQPValue) -> Option<HeaderValue> {
    Some(match value {
        AMQPValue::LongString(s) => {
            HeaderValue::Str(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::ShortString(s) => HeaderValue::Str(s.as_str().to_owned()),
        AMQPValue::ShortShortInt(i) => HeaderValue::Int(i64::from(*i)),
        AMQPValue::ShortShortUInt(i) => HeaderValue::Int(i64::from(*i)),
        AMQPValue::ShortInt(i) => HeaderValue::Int(i64::from(*i)),
        AMQPValue::ShortUInt(i) => HeaderValue::Int(i64::from(*i)),
        AMQPValue::LongInt(i) => HeaderValue::Int(i64::from(*i)),
        AMQPValue::LongUInt(i) => HeaderValue::Int(i64::from(*i)),
        AMQPValue::LongLongInt(i) => HeaderValue::Int(*i),
        AMQPValue::Timestamp(t) => HeaderValue::Int(i64::try_from(*t).ok()?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_strings_and_ints() {
        let headers = vec![
            (
                "x-wf-reason".to_owned(),
                HeaderValue::Str("not_json".into()),
            ),
            ("x-wf-attempt".to_owned(), HeaderValue::Int(-3)),
        ];
        let table = to_field_table(&headers).unwrap();
        let back = from_field_table(Some(&table));
        assert_eq!(back.len(), 2);
        assert_eq!(back["x-wf-reason"], HeaderValue::Str("not_json".into()));
        assert_eq!(back["x-wf-attempt"], HeaderValue::Int(-3));
    }

    #[test]
    fn skips_what_it_cannot_represent() {
        let mut table = FieldTable::default();
        table.insert(
            "x-death".into(),
            AMQPValue::FieldTable(FieldTable::default()),
        );
        table.insert("flag".into(), AMQPValue::Boolean(true));
        table.insert("x-delivery-count".into(), AMQPValue::LongInt(2));
        table.insert("ts".into(), AMQPValue::Timestamp(u64::MAX));
        let back = from_field_table(Some(&table));
        assert_eq!(back.len(), 1);
        assert_eq!(back["x-delivery-count"], HeaderValue::Int(2));
    }

    #[test]
    fn rejects_overlong_keys_instead_of_panicking() {
        let headers = vec![("k".repeat(300), HeaderValue::Int(1))];
        assert!(to_field_table(&headers).is_err());
        assert!(short(&"é".repeat(200)).is_err());
        assert_eq!(truncate("éé", 3), "é…");
    }
}
