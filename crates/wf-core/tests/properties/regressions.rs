//! Inputs the properties and the fuzz targets found, kept as plain examples so they are
//! checked on every run whatever the generators draw.

use wf_core::envelope::{Event, EventRejection};
use wf_core::time::{format_ms, parse_event_timestamp};

/// A sub-millisecond timestamp is kept as the payload shows it (milliseconds), so the
/// event parsed from its own wire form is the same event.
#[test]
fn sub_millisecond_timestamps_round_trip() {
    let body =
        br#"{"event":"alert.created","orgId":"a","timestamp":"0000-01-01T00:00:00.000000001Z"}"#;
    let event = Event::from_amqp(body, None).unwrap();
    assert_eq!(format_ms(event.timestamp), "0000-01-01T00:00:00.000Z");
    assert_eq!(Event::from_amqp(&event.to_wire(), None).unwrap(), event);

    let t = parse_event_timestamp("2026-05-19T12:05:00.123456789+02:00").unwrap();
    assert_eq!(format_ms(t), "2026-05-19T10:05:00.123Z");
    assert_eq!(t.timestamp_subsec_nanos(), 123_000_000);
}

/// A local time that is valid RFC 3339 but whose offset moves it before year 0 or after
/// year 9999 in UTC has no RFC 3339 form in UTC: it is refused at the edge, instead of
/// being accepted (202) by the ingestor and then refused by the worker as invalid.
#[test]
fn timestamps_outside_rfc3339_years_in_utc_are_refused() {
    for ts in [
        "0000-01-01T00:00:00+01:00",
        "0000-01-01T00:59:59.999+01:00",
        "9999-12-31T23:59:59-00:01",
        "9999-12-31T23:30:00-23:59",
    ] {
        let body = format!(r#"{{"event":"alert.created","orgId":"org_a","timestamp":"{ts}"}}"#);
        assert_eq!(
            Event::from_amqp(body.as_bytes(), None),
            Err(EventRejection::InvalidTimestamp),
            "{ts}"
        );
        assert_eq!(parse_event_timestamp(ts), None, "{ts}");
    }
    for (ts, utc) in [
        ("0000-01-01T01:00:00+01:00", "0000-01-01T00:00:00.000Z"),
        ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
        ("9999-12-31T23:59:59+00:00", "9999-12-31T23:59:59.000Z"),
    ] {
        let t = parse_event_timestamp(ts).unwrap();
        assert_eq!(format_ms(t), utc, "{ts}");
        let body = format!(r#"{{"event":"alert.created","orgId":"org_a","timestamp":"{ts}"}}"#);
        let event = Event::from_amqp(body.as_bytes(), None).unwrap();
        assert_eq!(Event::from_amqp(&event.to_wire(), None).unwrap(), event);
    }
}

/// Numbers in `data` are parsed exactly (correctly rounded): the subscriber receives the
/// producer's number, and the event parsed from its wire form is the same event.
#[test]
fn numbers_in_data_are_parsed_exactly() {
    let body =
        br#"{"event":"alert.created","orgId":"a","data":{"x":1.391522541172808e+287,"y":0.1}}"#;
    let event = Event::from_amqp(body, None).unwrap();
    assert_eq!(event.data["x"].as_f64(), Some(1.391522541172808e287));
    assert_eq!(event.data["y"].as_f64(), Some(0.1));
    assert_eq!(Event::from_amqp(&event.to_wire(), None).unwrap(), event);
    let payload = String::from_utf8(event.payload()).unwrap();
    assert!(
        payload.contains(r#""data":{"x":1.391522541172808e+287,"y":0.1}"#),
        "{payload}"
    );
}
