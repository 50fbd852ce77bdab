//! Wire shapes that more than one process emits: the Webhook object (docs/api.md) appears in
//! API responses (ingestor) and in `webhook.*` event payloads (ingestor and worker), with
//! custom header values masked.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::time::format_ms;

/// Fields of a webhook as the API shows them (never the secret).
pub struct WebhookView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub url: &'a str,
    pub events: &'a [String],
    pub is_active: bool,
    pub disabled_reason: Option<&'a str>,
    pub rate_limit: Option<u32>,
    /// Names of the custom request headers; their values are never part of the view.
    pub header_names: &'a [String],
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl WebhookView<'_> {
    /// The JSON object, keys in the documented order.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("name".into(), json!(self.name));
        m.insert("url".into(), json!(self.url));
        m.insert("events".into(), json!(self.events));
        m.insert("isActive".into(), json!(self.is_active));
        m.insert("disabledReason".into(), json!(self.disabled_reason));
        m.insert("rateLimit".into(), json!(self.rate_limit));
        m.insert(
            "headers".into(),
            Value::Object(crate::headers::masked(
                self.header_names.iter().map(String::as_str),
            )),
        );
        m.insert("createdAt".into(), json!(format_ms(self.created_at)));
        m.insert("updatedAt".into(), json!(format_ms(self.updated_at)));
        m
    }
}
