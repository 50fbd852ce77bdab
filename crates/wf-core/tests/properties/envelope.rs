//! The event envelope: whatever `Event::from_amqp` accepts, serialised to its wire form
//! (what the ingestor publishes, what the worker parses), parses back to the same event.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike};
use proptest::prelude::*;
use serde_json::{json, Map, Number, Value};
use wf_core::envelope::{Event, EventRejection};
use wf_core::events::EventType;

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        ".{0,24}".prop_map(Value::String),
    ]
}

/// Any JSON value, nested a few levels, with arbitrary Unicode in keys and strings.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((".{0,12}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn data() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((".{0,12}", json_value()), 0..6).prop_map(|kv| kv.into_iter().collect())
}

/// Producer ids: 1..=128 of `[A-Za-z0-9_.:-]`.
fn producer_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:-]{1,128}"
}

/// A local date and time anywhere RFC 3339 can write one (years 0000 to 9999), biased
/// towards both ends, where an offset can push the instant out of that range.
fn local_time() -> impl Strategy<Value = NaiveDateTime> {
    let start = NaiveDate::from_ymd_opt(0, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let end = NaiveDate::from_ymd_opt(9999, 12, 31)
        .unwrap()
        .and_hms_nano_opt(23, 59, 59, 999_999_999)
        .unwrap();
    let span = (end - start).num_seconds();
    let edge = 2 * 86_400;
    prop_oneof![0..=span, 0..edge, (span - edge)..=span,].prop_flat_map(move |secs| {
        (0u32..1_000_000_000).prop_map(move |nanos| {
            (start + Duration::seconds(secs))
                .with_nanosecond(nanos)
                .unwrap()
        })
    })
}

/// An RFC 3339 string for `t`: 0 to 9 fraction digits, `Z` or an offset up to ±23:59.
fn rfc3339() -> impl Strategy<Value = String> {
    (
        local_time(),
        0usize..=9,
        prop::option::of(-1439i32..=1439),
        any::<bool>(),
    )
        .prop_map(|(t, digits, offset, lower)| {
            let mut s = format!(
                "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}",
                t.year(),
                t.month(),
                t.day(),
                if lower { 't' } else { 'T' },
                t.hour(),
                t.minute(),
                t.second()
            );
            if digits > 0 {
                let frac = format!("{:09}", t.nanosecond());
                s.push('.');
                s.push_str(&frac[..digits]);
            }
            match offset {
                None => s.push('Z'),
                Some(m) => s.push_str(&format!(
                    "{}{:02}:{:02}",
                    if m < 0 { '-' } else { '+' },
                    m.abs() / 60,
                    m.abs() % 60
                )),
            }
            s
        })
}

/// A producer's event message, every field valid on its own.
fn event_message() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(EventType::ALL),
        producer_id(),
        prop::option::of(producer_id()),
        prop::option::of(rfc3339()),
        prop::option::of(data()),
    )
        .prop_map(|(event, org, id, timestamp, data)| {
            let mut m = Map::new();
            if let Some(id) = id {
                m.insert("id".into(), json!(id));
            }
            m.insert("event".into(), json!(event.as_str()));
            m.insert("orgId".into(), json!(org));
            if let Some(t) = timestamp {
                m.insert("timestamp".into(), json!(t));
            }
            if let Some(d) = data {
                m.insert("data".into(), Value::Object(d));
            }
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The AMQP edge accepts a well-formed event unless its instant cannot be written as
    /// an RFC 3339 timestamp in UTC, and the wire form of what it accepts is the same event.
    #[test]
    fn wire_form_round_trips(message in event_message(), message_id in prop::option::of(producer_id())) {
        let body = serde_json::to_vec(&message).unwrap();
        match Event::from_amqp(&body, message_id.as_deref()) {
            Ok(event) => {
                let wire = event.to_wire();
                let again = Event::from_amqp(&wire, None);
                prop_assert_eq!(again.as_ref(), Ok(&event), "wire form: {}", String::from_utf8_lossy(&wire));
                // The wire form is canonical: serialising again changes nothing.
                prop_assert_eq!(again.unwrap().to_wire(), wire);
            }
            Err(EventRejection::InvalidTimestamp) => {
                let ts = message["timestamp"].as_str().unwrap();
                let utc = chrono::DateTime::parse_from_rfc3339(ts).unwrap().naive_utc();
                prop_assert!(!(0..=9999).contains(&utc.year()), "{} rejected", ts);
            }
            Err(other) => prop_assert!(false, "valid event rejected: {} ({})", other, message),
        }
    }

    /// The payload carries the event as the wire form does, in the documented order.
    #[test]
    fn payload_matches_the_event(message in event_message()) {
        let body = serde_json::to_vec(&message).unwrap();
        if let Ok(event) = Event::from_amqp(&body, None) {
            let payload: Map<String, Value> = serde_json::from_slice(&event.payload()).unwrap();
            let keys: Vec<&str> = payload.keys().map(String::as_str).collect();
            prop_assert_eq!(keys, ["event", "orgId", "timestamp", "data"]);
            let wire: Map<String, Value> = serde_json::from_slice(&event.to_wire()).unwrap();
            for k in ["event", "orgId", "timestamp", "data"] {
                prop_assert_eq!(&payload[k], &wire[k]);
            }
        }
    }
}
