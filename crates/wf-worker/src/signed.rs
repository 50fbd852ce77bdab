//! The headers a subscriber receives with every delivery (docs/api.md, "What a subscriber
//! receives"): the event, the delivery id, the attempt number and both signatures of the
//! exact body sent.

use http::{HeaderMap, HeaderName, HeaderValue};
use wf_core::messages::DeliveryJobV1;
use wf_store::Subscription;

/// The signed headers of one attempt of `j` to `sub`, at `unix_ts` (seconds). During a
/// secret rotation the Standard Webhooks signature carries both signatures, new first.
/// `Content-Type` and `User-Agent` are the HTTP client's: it sets them on every request.
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
    let mut h = HeaderMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        // Every value is ASCII built above (ids, numbers, hex, base64): never invalid.
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(k), v);
        }
    }
    h
}
