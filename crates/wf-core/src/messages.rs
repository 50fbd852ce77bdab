//! Queue message types. These cross process versions during a rolling upgrade, so they are
//! a versioned serde enum: adding a version is a compatibility change, editing one is not
//! allowed.

use serde::{Deserialize, Serialize};

use crate::events::EventType;
use crate::ids::{DeliveryId, EventId, OrgId, WebhookId};

/// One delivery of one event to one webhook, on `workflows.deliveries` and the retry
/// queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "v")]
pub enum DeliveryJob {
    #[serde(rename = "1")]
    V1(DeliveryJobV1),
}

/// Version 1 of [`DeliveryJob`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryJobV1 {
    pub delivery_id: DeliveryId,
    pub webhook_id: WebhookId,
    pub org_id: OrgId,
    pub event_id: EventId,
    pub event: EventType,
    /// Event timestamp, milliseconds since the epoch (for event-to-delivery latency).
    pub event_ts_ms: i64,
    /// The attempt this message asks for (1 for the first). It keeps counting up across
    /// manual retries and replays, so `X-WorkFlows-Attempt` never repeats.
    pub attempt: u32,
    /// Attempts made before the current retry schedule started: 0 for a fanned-out
    /// delivery; for a replay, the attempts already spent, so the replay gets the whole
    /// schedule again. Optional on the wire (absent = 0), so older jobs still decode.
    #[serde(default)]
    pub retry_base: u32,
    /// The payload, serialised once at fan-out: every attempt sends these exact bytes.
    pub body: String,
}

impl DeliveryJob {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serialising a job cannot fail")
    }

    /// # Errors
    /// The serde error when the bytes are not a known job version.
    pub fn decode(bytes: &[u8]) -> Result<DeliveryJob, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn v1(&self) -> &DeliveryJobV1 {
        match self {
            DeliveryJob::V1(j) => j,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_version() {
        let job = DeliveryJob::V1(DeliveryJobV1 {
            delivery_id: DeliveryId::generate(),
            webhook_id: WebhookId::generate(),
            org_id: OrgId::parse("org_a").unwrap(),
            event_id: EventId::generate(),
            event: EventType::AlertCreated,
            event_ts_ms: 1,
            attempt: 1,
            retry_base: 0,
            body: "{}".into(),
        });
        let bytes = job.encode();
        assert!(String::from_utf8_lossy(&bytes).starts_with(r#"{"v":"1""#));
        assert_eq!(DeliveryJob::decode(&bytes).unwrap(), job);
        assert!(DeliveryJob::decode(br#"{"v":"9"}"#).is_err());
        assert!(DeliveryJob::decode(b"garbage").is_err());
        // A job written before `retryBase` existed still decodes, with 0.
        let old = br#"{"v":"1","deliveryId":"dlv_a","webhookId":"whk_a","orgId":"o","eventId":"e","event":"alert.created","eventTsMs":1,"attempt":2,"body":"{}"}"#;
        assert_eq!(DeliveryJob::decode(old).unwrap().v1().retry_base, 0);
    }
}
