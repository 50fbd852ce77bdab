//! The request bodies of the management and ingest API and their rules, as pure functions
//! from bytes (or the parsed object) to a validated value or a [`RequestError`].
//!
//! The ingestor's handlers act only on what these return, so each body's rules (types
//! first, `400 invalid_json`; then each field's rule in field order, `422` naming the
//! field) live in one place, testable and fuzzable with arbitrary input and no server,
//! database or broker.

use chrono::{DateTime, Utc};
use serde_json::{Map, Number, Value};

use crate::envelope::{Event, EventRejection, MAX_EVENT_BYTES};
use crate::events::{EventFilters, EventFiltersError};
use crate::headers::CustomHeaders;
use crate::ids::OrgId;
use crate::time::parse_rfc3339;
use crate::url_policy::{AllowedCidrs, WebhookUrl};

/// Longest name (webhook or API key), in Unicode scalar values, after trimming.
pub const MAX_NAME_CHARS: usize = 100;

/// A body the API refuses: the HTTP status (`400`, `413` or `422`), the stable snake_case
/// code and human message of the error body, and the JSON field at fault when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RequestError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub field: Option<&'static str>,
}

impl RequestError {
    /// `400 invalid_json`: not JSON, or a field of the wrong type.
    pub fn bad_json(message: impl Into<String>) -> Self {
        RequestError {
            status: 400,
            code: "invalid_json",
            message: message.into(),
            field: None,
        }
    }

    /// `422`: a rule of the API was broken by `field`.
    pub fn invalid(code: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        RequestError {
            status: 422,
            code,
            message: message.into(),
            field: Some(field),
        }
    }

    /// `413 payload_too_large`.
    pub fn too_large(message: impl Into<String>) -> Self {
        RequestError {
            status: 413,
            code: "payload_too_large",
            message: message.into(),
            field: None,
        }
    }

    fn with_field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }
}

/// Parses a request body as a JSON object.
///
/// # Errors
/// `400 invalid_json` for malformed JSON, an empty body, or a non-object.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, RequestError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError::bad_json(
            "request body is empty; expected a JSON object",
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(RequestError::bad_json("request body must be a JSON object")),
        Err(e) => Err(RequestError::bad_json(format!("malformed JSON: {e}"))),
    }
}

/// A webhook to create (`POST /webhooks`), every field checked; `url` in its normalised
/// form and `events` de-duplicated, which is what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookCreate {
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub is_active: bool,
    /// Deliveries per second at most, across the fleet; `None`: no limit.
    pub rate_limit: Option<u32>,
    /// Custom request headers (empty: none).
    pub headers: CustomHeaders,
}

/// A webhook update (`PATCH /webhooks/{id}`): `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUpdate {
    pub name: Option<String>,
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub is_active: Option<bool>,
    /// `Some(None)` removes the rate limit.
    pub rate_limit: Option<Option<u32>>,
    /// The whole new set of custom headers (`null` or `{}` remove them all).
    pub headers: Option<CustomHeaders>,
}

/// `POST /webhooks`: `{"name", "url", "events", "isActive"?, "rateLimit"?, "headers"?}`.
///
/// # Errors
/// `400 invalid_json` for a field of the wrong type, then `422` for the first field whose
/// rule is broken (`name`, `url`, `events`, `rateLimit`, `headers`, in that order).
pub fn webhook_create(
    body: &Map<String, Value>,
    allowed: &AllowedCidrs,
) -> Result<WebhookCreate, RequestError> {
    // Type errors first (400), then rules in field order (422).
    let name = opt_string(body, "name")?;
    let url = opt_string(body, "url")?;
    let events = opt_string_array(body, "events")?;
    let is_active = opt_bool(body, "isActive")?;
    let rate_limit = opt_rate_limit(body)?;
    let headers = opt_string_map(body, "headers")?;
    Ok(WebhookCreate {
        name: parse_name(name)?,
        url: parse_url(allowed, url)?,
        events: parse_events(events)?,
        is_active: is_active.unwrap_or(true),
        rate_limit: parse_rate_limit(rate_limit)?.flatten(),
        headers: parse_headers(headers)?,
    })
}

/// `PATCH /webhooks/{id}`: any of `name`, `url`, `events`, `isActive`, `rateLimit`,
/// `headers`. A field that is present is checked by the same rule as on create, so
/// `"name": null` is refused, not ignored; `"rateLimit": null` removes the limit, and
/// `"headers"` replaces the whole set (`null` or `{}` remove every header).
///
/// # Errors
/// As [`webhook_create`]; `isActive: null` is a type error.
pub fn webhook_update(
    body: &Map<String, Value>,
    allowed: &AllowedCidrs,
) -> Result<WebhookUpdate, RequestError> {
    let present = |f: &str| body.contains_key(f);
    let name = opt_string(body, "name")?;
    let url = opt_string(body, "url")?;
    let events = opt_string_array(body, "events")?;
    let is_active = opt_bool(body, "isActive")?;
    if present("isActive") && is_active.is_none() {
        return Err(RequestError::bad_json("`isActive` must be a boolean").with_field("isActive"));
    }
    let rate_limit = opt_rate_limit(body)?;
    let headers = opt_string_map(body, "headers")?;
    Ok(WebhookUpdate {
        name: if present("name") {
            Some(parse_name(name)?)
        } else {
            None
        },
        url: if present("url") {
            Some(parse_url(allowed, url)?)
        } else {
            None
        },
        events: if present("events") {
            Some(parse_events(events)?)
        } else {
            None
        },
        is_active,
        rate_limit: parse_rate_limit(rate_limit)?,
        headers: if present("headers") {
            Some(parse_headers(headers)?)
        } else {
            None
        },
    })
}

/// `POST /api-keys`: `{"name"}`; the name, by the same rule as a webhook's.
///
/// # Errors
/// `400` when `name` is not a string, `422` when it is missing, blank or too long.
pub fn api_key_create(body: &Map<String, Value>) -> Result<String, RequestError> {
    parse_name(opt_string(body, "name")?)
}

/// `POST /events`: the event of `org` (a body `orgId` is ignored). It must also fit
/// [`MAX_EVENT_BYTES`] in the form it is published in, which can be longer than the body
/// (the id and timestamp are filled in).
///
/// # Errors
/// The [`EventRejection`], whose reason labels `wf_events_rejected_total`;
/// [`event_rejection`] turns it into the API error.
pub fn event(body: Map<String, Value>, org: &OrgId) -> Result<Event, EventRejection> {
    let event = Event::from_value(Value::Object(body), Some(org), None)?;
    if event.to_wire().len() > MAX_EVENT_BYTES {
        return Err(EventRejection::TooLarge);
    }
    Ok(event)
}

/// The API error for a rejected event: `413` when too large, `422` naming the field for a
/// broken rule, `400` when the body is not an event object at all.
pub fn event_rejection(r: &EventRejection) -> RequestError {
    let (code, field) = match r {
        EventRejection::MissingEvent => ("event_required", "event"),
        EventRejection::UnknownEvent(_) => ("unknown_event", "event"),
        EventRejection::InvalidId => ("invalid_event_id", "id"),
        EventRejection::InvalidTimestamp => ("invalid_timestamp", "timestamp"),
        EventRejection::InvalidData => ("invalid_data", "data"),
        EventRejection::TooLarge => {
            return RequestError::too_large(format!("event exceeds {MAX_EVENT_BYTES} bytes"))
        }
        other => return RequestError::bad_json(other.to_string()),
    };
    let message = if matches!(r, EventRejection::UnknownEvent(_)) {
        format!("{r}; see GET /api/v1/event-types")
    } else {
        r.to_string()
    };
    RequestError::invalid(code, field, message)
}

/// The window of `POST /webhooks/{id}/replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Deliveries created at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Deliveries created before this instant; after `since` when both are given.
    pub until: Option<DateTime<Utc>>,
}

/// `POST /webhooks/{id}/replay`: `{"status": "dead", "since"?, "until"?}`.
///
/// # Errors
/// `400` for a field of the wrong type; `422` for a missing or other `status`, a
/// timestamp that is not RFC 3339, or `until` not after `since`.
pub fn replay(body: &Map<String, Value>) -> Result<ReplayWindow, RequestError> {
    match opt_string(body, "status")?.as_deref() {
        Some("dead") => {}
        None => {
            return Err(RequestError::invalid(
                "status_required",
                "status",
                "`status` is required (\"dead\")",
            ))
        }
        Some(_) => {
            return Err(RequestError::invalid(
                "invalid_status",
                "status",
                "only dead deliveries can be replayed: `status` must be \"dead\"",
            ))
        }
    }
    let since = opt_time(body, "since")?;
    let until = opt_time(body, "until")?;
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(RequestError::invalid(
                "invalid_time_range",
                "until",
                "`until` must be after `since`",
            ));
        }
    }
    Ok(ReplayWindow { since, until })
}

/// `POST /webhooks/{id}/test`: `{"event"?}`, the event type to send (its rules are the
/// webhook's: checked by the caller against what it subscribes to).
///
/// # Errors
/// `400 invalid_json` when `event` is not a string.
pub fn test_send(body: &Map<String, Value>) -> Result<Option<String>, RequestError> {
    opt_string(body, "event")
}

/// An optional string field; `null` counts as absent.
fn opt_string(m: &Map<String, Value>, field: &'static str) -> Result<Option<String>, RequestError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => {
            Err(RequestError::bad_json(format!("`{field}` must be a string")).with_field(field))
        }
    }
}

/// An optional boolean field; `null` counts as absent.
fn opt_bool(m: &Map<String, Value>, field: &'static str) -> Result<Option<bool>, RequestError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => {
            Err(RequestError::bad_json(format!("`{field}` must be a boolean")).with_field(field))
        }
    }
}

/// An optional array-of-strings field; `null` counts as absent.
fn opt_string_array(
    m: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<Vec<String>>, RequestError> {
    let wrong = || {
        RequestError::bad_json(format!("`{field}` must be an array of strings")).with_field(field)
    };
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(wrong))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(wrong()),
    }
}

/// An optional object of string values, in the order given; `null` counts as absent.
fn opt_string_map(
    m: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<Vec<(String, String)>>, RequestError> {
    let wrong = || {
        RequestError::bad_json(format!("`{field}` must be an object of string values"))
            .with_field(field)
    };
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(items)) => items
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|v| (k.clone(), v.to_owned()))
                    .ok_or_else(wrong)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(wrong()),
    }
}

/// `headers`' rules (see [`crate::headers`]).
fn parse_headers(raw: Option<Vec<(String, String)>>) -> Result<CustomHeaders, RequestError> {
    CustomHeaders::parse(raw.unwrap_or_default())
        .map_err(|e| RequestError::invalid(e.code(), "headers", e.to_string()))
}

/// The largest `rateLimit`, deliveries per second.
pub const MAX_RATE_LIMIT: u64 = 10_000;

/// The `rateLimit` field as given: absent (`None`), `null` (`Some(None)`) or a number.
fn opt_rate_limit(m: &Map<String, Value>) -> Result<Option<Option<&Number>>, RequestError> {
    match m.get("rateLimit") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Number(n)) => Ok(Some(Some(n))),
        Some(_) => Err(
            RequestError::bad_json("`rateLimit` must be an integer or null")
                .with_field("rateLimit"),
        ),
    }
}

/// `rateLimit`: an integer from 1 to 10,000 deliveries per second, or `null` for no limit.
fn parse_rate_limit(field: Option<Option<&Number>>) -> Result<Option<Option<u32>>, RequestError> {
    let Some(value) = field else {
        return Ok(None);
    };
    let Some(n) = value else {
        return Ok(Some(None));
    };
    n.as_u64()
        .filter(|v| (1..=MAX_RATE_LIMIT).contains(v))
        .and_then(|v| u32::try_from(v).ok())
        .map(|v| Some(Some(v)))
        .ok_or_else(|| {
            RequestError::invalid(
                "invalid_rate_limit",
                "rateLimit",
                format!(
                    "`rateLimit` must be an integer from 1 to {MAX_RATE_LIMIT} (deliveries per \
                     second), or null for no limit"
                ),
            )
        })
}

/// A name (webhook or API key): trimmed, 1..=100 Unicode scalar values.
fn parse_name(raw: Option<String>) -> Result<String, RequestError> {
    let name = raw.as_deref().map(str::trim).unwrap_or("");
    if name.is_empty() {
        return Err(RequestError::invalid(
            "name_required",
            "name",
            "`name` is required",
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(RequestError::invalid(
            "name_too_long",
            "name",
            format!("`name` must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

/// The URL in its normalised form, which is what is stored and shown.
fn parse_url(allowed: &AllowedCidrs, raw: Option<String>) -> Result<String, RequestError> {
    let raw =
        raw.ok_or_else(|| RequestError::invalid("url_required", "url", "`url` is required"))?;
    WebhookUrl::parse(&raw, allowed)
        .map(|u| u.as_str().to_owned())
        .map_err(|e| RequestError::invalid(e.code(), "url", e.to_string()))
}

fn parse_events(raw: Option<Vec<String>>) -> Result<Vec<String>, RequestError> {
    let raw = raw.unwrap_or_default();
    EventFilters::parse(&raw)
        .map(|f| f.to_strings())
        .map_err(|e| match e {
            EventFiltersError::Empty => RequestError::invalid(
                "events_required",
                "events",
                "`events` must list at least one event type",
            ),
            EventFiltersError::Unknown(u) => RequestError::invalid(
                "unknown_event",
                "events",
                format!("{u}; see GET /api/v1/event-types"),
            ),
        })
}

fn opt_time(
    body: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<DateTime<Utc>>, RequestError> {
    match opt_string(body, field)? {
        None => Ok(None),
        Some(s) => parse_rfc3339(&s).map(Some).ok_or_else(|| {
            RequestError::invalid(
                "invalid_timestamp",
                field,
                format!("`{field}` must be an RFC 3339 timestamp"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test bodies are objects"),
        }
    }

    fn err_of<T: std::fmt::Debug>(
        r: Result<T, RequestError>,
    ) -> (u16, &'static str, Option<&'static str>) {
        let e = r.unwrap_err();
        (e.status, e.code, e.field)
    }

    #[test]
    fn bodies_that_are_not_objects_are_400() {
        for body in [&b""[..], b"  \n", b"[1]", b"\"x\"", b"{", b"null"] {
            assert_eq!(
                err_of(parse_object(body)),
                (400, "invalid_json", None),
                "{body:?}"
            );
        }
        assert!(parse_object(br#"{"a":1}"#).is_ok());
    }

    #[test]
    fn webhook_create_checks_types_then_rules_in_field_order() {
        let none = AllowedCidrs::default();
        let ok = webhook_create(
            &obj(json!({"name": " Slack ", "url": "HTTPS://Example.COM/h",
                        "events": ["alert.*", "alert.*", "csv.uploaded"]})),
            &none,
        )
        .unwrap();
        assert_eq!(
            ok,
            WebhookCreate {
                name: "Slack".into(),
                url: "https://example.com/h".into(),
                events: vec!["alert.*".into(), "csv.uploaded".into()],
                is_active: true,
                rate_limit: None,
                headers: CustomHeaders::default(),
            }
        );
        // A type error anywhere wins over a rule broken earlier.
        let body = obj(json!({"name": "", "url": "http://x", "events": "alert.created"}));
        assert_eq!(
            err_of(webhook_create(&body, &none)),
            (400, "invalid_json", Some("events"))
        );
        let body = obj(json!({"name": "", "url": "http://x", "events": []}));
        assert_eq!(
            err_of(webhook_create(&body, &none)),
            (422, "name_required", Some("name"))
        );
        let body = obj(json!({"name": "n", "url": "https://10.0.0.1/", "events": []}));
        assert_eq!(
            err_of(webhook_create(&body, &none)),
            (422, "url_private_address", Some("url"))
        );
        let body = obj(json!({"name": "n", "url": "https://example.com/", "events": []}));
        assert_eq!(
            err_of(webhook_create(&body, &none)),
            (422, "events_required", Some("events"))
        );
        let long = "é".repeat(MAX_NAME_CHARS + 1);
        let body = obj(json!({"name": long, "url": "https://example.com/", "events": ["alert.*"]}));
        assert_eq!(
            err_of(webhook_create(&body, &none)),
            (422, "name_too_long", Some("name"))
        );
    }

    #[test]
    fn rate_limits_are_integers_from_1_to_10000_or_null() {
        let none = AllowedCidrs::default();
        let create = |rate: Value| {
            webhook_create(
                &obj(
                    json!({"name": "n", "url": "https://example.com/", "events": ["alert.*"], "rateLimit": rate}),
                ),
                &none,
            )
        };
        assert_eq!(create(json!(1)).unwrap().rate_limit, Some(1));
        assert_eq!(create(json!(10_000)).unwrap().rate_limit, Some(10_000));
        assert_eq!(create(Value::Null).unwrap().rate_limit, None);
        for bad in [json!(0), json!(10_001), json!(-1), json!(1.5), json!(1e12)] {
            assert_eq!(
                err_of(create(bad)),
                (422, "invalid_rate_limit", Some("rateLimit"))
            );
        }
        for wrong in [json!("5"), json!(true), json!([5])] {
            assert_eq!(
                err_of(create(wrong)),
                (400, "invalid_json", Some("rateLimit"))
            );
        }
        // A type error wins over a rule broken earlier.
        let body = obj(json!({"name": "", "url": "x", "events": [], "rateLimit": "5"}));
        assert_eq!(
            err_of(webhook_create(&body, &none)),
            (400, "invalid_json", Some("rateLimit"))
        );
        let update = |body: Value| webhook_update(&obj(body), &none);
        assert_eq!(update(json!({})).unwrap().rate_limit, None);
        assert_eq!(
            update(json!({"rateLimit": null})).unwrap().rate_limit,
            Some(None)
        );
        assert_eq!(
            update(json!({"rateLimit": 7})).unwrap().rate_limit,
            Some(Some(7))
        );
        assert_eq!(
            err_of(update(json!({"rateLimit": 0}))),
            (422, "invalid_rate_limit", Some("rateLimit"))
        );
    }

    #[test]
    fn webhook_update_checks_only_what_is_present() {
        let none = AllowedCidrs::default();
        let empty = webhook_update(&Map::new(), &none).unwrap();
        assert_eq!(
            empty,
            WebhookUpdate {
                name: None,
                url: None,
                events: None,
                is_active: None,
                rate_limit: None,
                headers: None,
            }
        );
        let body = obj(json!({"isActive": null}));
        assert_eq!(
            err_of(webhook_update(&body, &none)),
            (400, "invalid_json", Some("isActive"))
        );
        let body = obj(json!({"name": null}));
        assert_eq!(
            err_of(webhook_update(&body, &none)),
            (422, "name_required", Some("name"))
        );
        let body = obj(json!({"url": null}));
        assert_eq!(
            err_of(webhook_update(&body, &none)),
            (422, "url_required", Some("url"))
        );
        let body = obj(json!({"isActive": false, "events": ["user.*"]}));
        let update = webhook_update(&body, &none).unwrap();
        assert_eq!(update.is_active, Some(false));
        assert_eq!(update.events, Some(vec!["user.*".to_owned()]));
    }

    #[test]
    fn replay_window_rules() {
        let body = obj(json!({"status": "dead", "since": "2026-05-01T00:00:00Z"}));
        assert!(replay(&body).unwrap().until.is_none());
        assert_eq!(
            err_of(replay(&Map::new())),
            (422, "status_required", Some("status"))
        );
        let body = obj(json!({"status": "failed"}));
        assert_eq!(
            err_of(replay(&body)),
            (422, "invalid_status", Some("status"))
        );
        let body = obj(json!({"status": "dead", "until": "soon"}));
        assert_eq!(
            err_of(replay(&body)),
            (422, "invalid_timestamp", Some("until"))
        );
        let body = obj(json!({"status": "dead", "since": "2026-05-02T00:00:00Z",
                              "until": "2026-05-01T00:00:00Z"}));
        assert_eq!(
            err_of(replay(&body)),
            (422, "invalid_time_range", Some("until"))
        );
    }

    #[test]
    fn events_take_the_org_of_the_key_and_map_rejections() {
        let org = OrgId::parse("org_key").unwrap();
        let e = event(
            obj(json!({"event": "alert.created", "orgId": "org_other"})),
            &org,
        )
        .unwrap();
        assert_eq!(e.org_id, org);
        let cases = [
            (json!({}), (422, "event_required", Some("event"))),
            (
                json!({"event": "alert.*"}),
                (422, "unknown_event", Some("event")),
            ),
            (
                json!({"event": "alert.created", "id": 7}),
                (422, "invalid_event_id", Some("id")),
            ),
            (
                json!({"event": "alert.created", "data": []}),
                (422, "invalid_data", Some("data")),
            ),
            // Valid RFC 3339, but before year 0 in UTC: the worker could not read it back.
            (
                json!({"event": "alert.created", "timestamp": "0000-01-01T00:30:00+01:00"}),
                (422, "invalid_timestamp", Some("timestamp")),
            ),
        ];
        for (body, want) in cases {
            let r = event(obj(body.clone()), &org).unwrap_err();
            let e = event_rejection(&r);
            assert_eq!((e.status, e.code, e.field), want, "{body}");
        }
        let unknown = event_rejection(&EventRejection::UnknownEvent("x".into()));
        assert!(
            unknown.message.ends_with("see GET /api/v1/event-types"),
            "{unknown}"
        );
        assert_eq!(event_rejection(&EventRejection::TooLarge).status, 413);
        assert_eq!(event_rejection(&EventRejection::NotAnObject).status, 400);
    }

    #[test]
    fn an_event_whose_wire_form_is_too_large_is_413() {
        let org = OrgId::parse("org_key").unwrap();
        // Fits as sent, but the id and timestamp filled in push the wire form over.
        let pad = MAX_EVENT_BYTES - 60;
        let body = obj(json!({"event": "alert.created", "data": {"p": "x".repeat(pad)}}));
        assert!(serde_json::to_vec(&body).unwrap().len() <= MAX_EVENT_BYTES);
        assert_eq!(event(body, &org).unwrap_err(), EventRejection::TooLarge);
    }
}
