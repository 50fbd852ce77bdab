//! The headers a subscriber receives with every delivery (docs/api.md, "What a subscriber
//! receives"): the webhook's custom headers, then the event, the delivery id, the attempt
//! number and both signatures of the exact body sent. The signatures cover the body (and
//! the Standard Webhooks id and timestamp), not the custom headers.

use http::{HeaderMap, HeaderName, HeaderValue};
use wf_core::headers::is_reserved;
use wf_core::messages::DeliveryJobV1;
use wf_store::Subscription;

/// The headers of one attempt of `j` to `sub`, at `unix_ts` (seconds). During a secret
/// rotation the Standard Webhooks signature carries both signatures, new first.
/// `Content-Type` and `User-Agent` are the HTTP client's: it sets them on every request.
///
/// The webhook's custom headers go in first and ours over them, so ours win. The API
/// refuses reserved names, but a row written some other way must not reach the wire
/// either: a reserved or malformed custom header is skipped here too.
pub fn signed_headers(
    j: &DeliveryJobV1,
    sub: &Subscription,
    body: &[u8],
    unix_ts: i64,
) -> HeaderMap {
    let id = j.delivery_id.as_str();
    let mut std_sig = sub.secret.standard_signature(id, unix_ts, body);
    if let Some(prev) = &sub.previous_secret {
        std_sig.push(' ');
        std_sig.push_str(&prev.standard_signature(id, unix_ts, body));
    }
    let pairs: [(&'static str, String); 7] = [
        (
            "x-workflows-signature",
            sub.secret.workflows_signature(body),
        ),
        ("x-workflows-event", j.event.as_str().to_owned()),
        ("x-workflows-delivery", id.to_owned()),
        ("x-workflows-attempt", j.attempt.to_string()),
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", unix_ts.to_string()),
        ("webhook-signature", std_sig),
    ];
    let mut h = HeaderMap::with_capacity(pairs.len() + sub.headers.len());
    for (name, value) in sub.headers.iter() {
        if is_reserved(name) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.insert(name, value);
        }
    }
    for (k, v) in pairs {
        // Every value is ASCII built above (ids, numbers, hex, base64): never invalid.
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(k), v);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use wf_core::events::EventType;
    use wf_core::headers::CustomHeaders;
    use wf_core::ids::{DeliveryId, EventId, OrgId, WebhookId};
    use wf_core::signing::WebhookSecret;

    fn job() -> DeliveryJobV1 {
        DeliveryJobV1 {
            delivery_id: DeliveryId::generate(),
            webhook_id: WebhookId::generate(),
            org_id: OrgId::parse("org_s").unwrap(),
            event_id: EventId::generate(),
            event: EventType::AlertCreated,
            event_ts_ms: 0,
            attempt: 3,
            retry_base: 0,
            held_since_ms: None,
            unavailable_since_ms: None,
            logged_at_ms: None,
            body: "{}".into(),
        }
    }

    fn sub(headers: CustomHeaders) -> Subscription {
        Subscription {
            webhook_id: WebhookId::generate(),
            org_id: OrgId::parse("org_s").unwrap(),
            url: "https://example.com/".into(),
            secret: WebhookSecret::generate(),
            previous_secret: None,
            rate_limit: None,
            headers,
        }
    }

    #[test]
    fn custom_headers_are_sent_and_ours_cannot_be_overridden() {
        let custom = CustomHeaders::parse([
            ("X-Api-Key".to_owned(), "k-123".to_owned()),
            ("X-Tenant".to_owned(), "acme corp".to_owned()),
        ])
        .unwrap();
        let j = job();
        let h = signed_headers(&j, &sub(custom), b"{}", 1_700_000_000);
        assert_eq!(h["x-api-key"], "k-123");
        assert_eq!(h["x-tenant"], "acme corp");
        assert_eq!(h["x-workflows-attempt"], "3");
        assert_eq!(h.len(), 9);
    }
}
