//! Events as producers send them, the validation every edge applies, and the payload
//! envelope a subscriber receives (`{"event","orgId","timestamp","data"}`, in that order).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::events::EventType;
use crate::ids::{EventId, OrgId};
use crate::time::{format_ms, now_ms, parse_event_timestamp};

/// Largest accepted event message (docs/api.md, "Event intake"): anything bigger is
/// rejected, never delivered.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Why an event was rejected. [`reason`](Self::reason) is the `x-wf-reason` header and the
/// `reason` label of `wf_events_rejected_total`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventRejection {
    #[error("event is larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
    #[error("event is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("event must be a JSON object")]
    NotAnObject,
    #[error("missing `event`")]
    MissingEvent,
    #[error("unknown event type `{0}`")]
    UnknownEvent(String),
    #[error("missing `orgId`")]
    MissingOrgId,
    #[error("invalid `orgId`")]
    InvalidOrgId,
    #[error("invalid `id`")]
    InvalidId,
    #[error("invalid `timestamp` (expected RFC 3339, years 0000 to 9999 in UTC)")]
    InvalidTimestamp,
    #[error("`data` must be a JSON object")]
    InvalidData,
}

impl EventRejection {
    /// Stable snake_case reason.
    pub fn reason(&self) -> &'static str {
        match self {
            EventRejection::TooLarge => "too_large",
            EventRejection::InvalidJson(_) => "invalid_json",
            EventRejection::NotAnObject => "not_an_object",
            EventRejection::MissingEvent => "missing_event",
            EventRejection::UnknownEvent(_) => "unknown_event",
            EventRejection::MissingOrgId => "missing_org_id",
            EventRejection::InvalidOrgId => "invalid_org_id",
            EventRejection::InvalidId => "invalid_id",
            EventRejection::InvalidTimestamp => "invalid_timestamp",
            EventRejection::InvalidData => "invalid_data",
        }
    }

    /// The JSON field at fault, for API error bodies.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            EventRejection::MissingEvent | EventRejection::UnknownEvent(_) => Some("event"),
            EventRejection::MissingOrgId | EventRejection::InvalidOrgId => Some("orgId"),
            EventRejection::InvalidId => Some("id"),
            EventRejection::InvalidTimestamp => Some("timestamp"),
            EventRejection::InvalidData => Some("data"),
            _ => None,
        }
    }
}

/// A validated event: the unit that is fanned out.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub event: EventType,
    pub org_id: OrgId,
    pub timestamp: DateTime<Utc>,
    /// Always a JSON object; key order as the producer sent it.
    pub data: Map<String, Value>,
}

/// The message on `workflows.events` (docs/api.md, "Over AMQP").
#[derive(Serialize)]
struct WireEvent<'a> {
    id: &'a str,
    event: &'a str,
    #[serde(rename = "orgId")]
    org_id: &'a str,
    timestamp: String,
    data: &'a Map<String, Value>,
}

/// The body a subscriber receives, in the field order of the docs.
#[derive(Serialize)]
struct Payload<'a> {
    event: &'a str,
    #[serde(rename = "orgId")]
    org_id: &'a str,
    timestamp: String,
    data: &'a Map<String, Value>,
}

/// Input fields that every edge (HTTP or AMQP) may carry.
#[derive(Deserialize)]
struct RawEvent {
    id: Option<Value>,
    event: Option<Value>,
    #[serde(rename = "orgId")]
    org_id: Option<Value>,
    timestamp: Option<Value>,
    data: Option<Value>,
}

impl Event {
    /// Validates an event message from the broker (docs/api.md, "Over AMQP"). `message_id`
    /// is the AMQP
    /// property, used when the body has no `id`; with neither, a fresh id is minted.
    ///
    /// # Errors
    /// An [`EventRejection`] naming the first rule broken.
    pub fn from_amqp(body: &[u8], message_id: Option<&str>) -> Result<Event, EventRejection> {
        if body.len() > MAX_EVENT_BYTES {
            return Err(EventRejection::TooLarge);
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| EventRejection::InvalidJson(e.to_string()))?;
        Event::from_value(value, None, message_id)
    }

    /// Validates a JSON value. `org` overrides (HTTP: the organisation comes from the API
    /// key, and a body `orgId` is ignored); `fallback_id` is used when the body has no `id`.
    ///
    /// # Errors
    /// An [`EventRejection`] naming the first rule broken.
    pub fn from_value(
        value: Value,
        org: Option<&OrgId>,
        fallback_id: Option<&str>,
    ) -> Result<Event, EventRejection> {
        if !value.is_object() {
            return Err(EventRejection::NotAnObject);
        }
        let raw: RawEvent = serde_json::from_value(value)
            .map_err(|e| EventRejection::InvalidJson(e.to_string()))?;
        let event = match raw.event {
            None | Some(Value::Null) => return Err(EventRejection::MissingEvent),
            Some(Value::String(s)) => {
                EventType::parse(&s).ok_or(EventRejection::UnknownEvent(s))?
            }
            Some(other) => return Err(EventRejection::UnknownEvent(other.to_string())),
        };
        let org_id = match org {
            Some(o) => o.clone(),
            None => match raw.org_id {
                None | Some(Value::Null) => return Err(EventRejection::MissingOrgId),
                Some(Value::String(s)) if s.is_empty() => return Err(EventRejection::MissingOrgId),
                Some(Value::String(s)) => {
                    OrgId::parse(&s).map_err(|_| EventRejection::InvalidOrgId)?
                }
                Some(_) => return Err(EventRejection::InvalidOrgId),
            },
        };
        let id = match raw.id {
            None | Some(Value::Null) => match fallback_id.filter(|s| !s.is_empty()) {
                Some(m) => EventId::parse(m).map_err(|_| EventRejection::InvalidId)?,
                None => EventId::generate(),
            },
            Some(Value::String(s)) => EventId::parse(&s).map_err(|_| EventRejection::InvalidId)?,
            Some(_) => return Err(EventRejection::InvalidId),
        };
        let timestamp = match raw.timestamp {
            None | Some(Value::Null) => now_ms(),
            Some(Value::String(s)) => {
                parse_event_timestamp(&s).ok_or(EventRejection::InvalidTimestamp)?
            }
            Some(_) => return Err(EventRejection::InvalidTimestamp),
        };
        let data = match raw.data {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(EventRejection::InvalidData),
        };
        Ok(Event {
            id,
            event,
            org_id,
            timestamp,
            data,
        })
    }

    /// The canonical message for `workflows.events` (with the id filled in).
    pub fn to_wire(&self) -> Vec<u8> {
        serde_json::to_vec(&WireEvent {
            id: self.id.as_str(),
            event: self.event.as_str(),
            org_id: self.org_id.as_str(),
            timestamp: format_ms(self.timestamp),
            data: &self.data,
        })
        .expect("serialising a JSON map cannot fail")
    }

    /// The delivery body, serialised once: this exact byte string is signed and sent.
    /// Its capacity is its length: the buffer outlives the call (it is logged and may wait
    /// in the delivery log's buffer), and the serialiser's doubling would otherwise leave
    /// up to half of it unused.
    pub fn payload(&self) -> Vec<u8> {
        let mut body = serde_json::to_vec(&Payload {
            event: self.event.as_str(),
            org_id: self.org_id.as_str(),
            timestamp: format_ms(self.timestamp),
            data: &self.data,
        })
        .expect("serialising a JSON map cannot fail");
        body.shrink_to_fit();
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_matches_docs_order_and_format() {
        let e = Event::from_amqp(
            br#"{"id":"evt_1","event":"alert.created","orgId":"org_abc123","timestamp":"2026-05-19T12:05:00Z","data":{"z":1,"a":"x"}}"#,
            None,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(e.payload()).unwrap(),
            r#"{"event":"alert.created","orgId":"org_abc123","timestamp":"2026-05-19T12:05:00.000Z","data":{"z":1,"a":"x"}}"#
        );
        let again = Event::from_amqp(&e.to_wire(), None).unwrap();
        assert_eq!(again, e);
    }

    #[test]
    fn rejections_have_reasons() {
        let cases: Vec<(&[u8], &str)> = vec![
            (b"not json", "invalid_json"),
            (b"[1,2]", "not_an_object"),
            (br#"{"orgId":"org_a"}"#, "missing_event"),
            (br#"{"event":"nope","orgId":"org_a"}"#, "unknown_event"),
            (br#"{"event":"alert.created"}"#, "missing_org_id"),
            (br#"{"event":"alert.created","orgId":""}"#, "missing_org_id"),
            (br#"{"event":"alert.created","orgId":5}"#, "invalid_org_id"),
            (
                br#"{"event":"alert.created","orgId":"o","timestamp":"x"}"#,
                "invalid_timestamp",
            ),
            (
                br#"{"event":"alert.created","orgId":"o","data":[1]}"#,
                "invalid_data",
            ),
            (
                br#"{"event":"alert.created","orgId":"o","id":"a b"}"#,
                "invalid_id",
            ),
        ];
        for (body, reason) in cases {
            let err = Event::from_amqp(body, None).unwrap_err();
            assert_eq!(err.reason(), reason, "{}", String::from_utf8_lossy(body));
        }
        let big = vec![b' '; MAX_EVENT_BYTES + 1];
        assert_eq!(
            Event::from_amqp(&big, None).unwrap_err().reason(),
            "too_large"
        );
    }

    #[test]
    fn ids_from_body_then_property_then_minted() {
        let body = br#"{"event":"csv.uploaded","orgId":"org_a"}"#;
        assert_eq!(
            Event::from_amqp(body, Some("evt_m")).unwrap().id.as_str(),
            "evt_m"
        );
        assert!(Event::from_amqp(body, None)
            .unwrap()
            .id
            .as_str()
            .starts_with("evt_"));
        let org = OrgId::parse("org_key").unwrap();
        let e = Event::from_value(
            json!({"event":"csv.uploaded","orgId":"org_other"}),
            Some(&org),
            None,
        )
        .unwrap();
        assert_eq!(e.org_id, org);
    }
}
