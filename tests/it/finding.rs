//! Finding deliveries through the API: filters of a webhook's log, one delivery, one
//! event across the organisation's webhooks, and cursors that hold while deliveries are
//! written.

use std::collections::HashSet;

use serde_json::{json, Value};
use wf_core::events::EventType;
use wf_core::ids::{DeliveryId, EventId, OrgId, WebhookId};
use wf_store::NewDelivery;

use crate::harness::{assert_error, post_event, wait_status, Stack};

fn ids(b: &Value) -> Vec<String> {
    b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_lookups_and_their_errors() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let (_, other) = stack.new_org().await;
    stack.receiver.plan("/a", &[], 200);
    let (a, _) = stack.webhook(&key, "/a", &["alert.*", "csv.*"]).await;
    let (b, _) = stack.webhook(&key, "/b", &["alert.created"]).await;
    post_event(&stack, &key, "alert.created", json!({"n": 1})).await;
    wait_status(&stack, &key, &a, "delivered", 1).await;
    let between = wf_core::time::format_ms(chrono::Utc::now());
    post_event(&stack, &key, "csv.uploaded", json!({"n": 2})).await;
    post_event(&stack, &key, "alert.critical", json!({"n": 3})).await;
    let all = wait_status(&stack, &key, &a, "delivered", 3).await;
    wait_status(&stack, &key, &b, "delivered", 1).await;
    let list = |q: String| {
        let (stack, key, a) = (&stack, &key, &a);
        async move {
            stack
                .api(
                    "GET",
                    &format!("/api/v1/webhooks/{a}/deliveries?{q}"),
                    Some(key),
                    None,
                )
                .await
        }
    };
    let (s, r) = list("event=csv.uploaded".into()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["data"].as_array().unwrap().len(), 1);
    assert_eq!(r["data"][0]["event"], "csv.uploaded");
    assert_eq!(r["data"][0]["webhookId"], a.as_str());
    let (_, r) = list(format!("since={between}")).await;
    assert_eq!(r["data"].as_array().unwrap().len(), 2, "{r}");
    let (_, r) = list(format!("until={between}")).await;
    assert_eq!(r["data"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["data"][0]["event"], "alert.created");
    let (_, r) = list(format!(
        "since={between}&event=alert.critical&status=delivered"
    ))
    .await;
    assert_eq!(r["data"].as_array().unwrap().len(), 1, "{r}");
    let (_, r) = list(format!("since={between}&event=alert.created")).await;
    assert_eq!(r["data"], json!([]));
    let (_, r) = list("status=failed".into()).await;
    assert_eq!(r["data"], json!([]));

    for (q, code, field) in [
        ("status=sent", "invalid_status", "status"),
        ("event=alert.nope", "unknown_event", "event"),
        ("event=alert.*", "unknown_event", "event"),
        ("since=yesterday", "invalid_timestamp", "since"),
        ("until=2026-13-01T00:00:00Z", "invalid_timestamp", "until"),
        (
            "since=2026-05-19T12:00:00Z&until=2026-05-19T12:00:00Z",
            "invalid_time_range",
            "until",
        ),
        ("limit=0", "invalid_limit", "limit"),
        ("cursor=nope", "invalid_cursor", "cursor"),
    ] {
        let (s, r) = list(q.into()).await;
        assert_error(s, &r, 422, code);
        assert_eq!(r["error"]["field"], field, "{q}: {r}");
    }
    let (s, r) = list("limit=1&limit=2".into()).await;
    assert_error(s, &r, 400, "invalid_query");

    // One delivery, of any webhook of the organisation.
    let first = all.last().unwrap();
    let id = first["id"].as_str().unwrap();
    let (s, r) = stack
        .api("GET", &format!("/api/v1/deliveries/{id}"), Some(&key), None)
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(&r["data"], first);
    for (k, missing) in [(&other, id), (&key, "dlv_nope"), (&key, "not an id")] {
        let (s, r) = stack
            .api(
                "GET",
                &format!("/api/v1/deliveries/{}", missing.replace(' ', "%20")),
                Some(k),
                None,
            )
            .await;
        assert_error(s, &r, 404, "not_found");
    }

    // One event, with its deliveries to both webhooks.
    let event_id = first["eventId"].as_str().unwrap();
    let (s, r) = stack
        .api(
            "GET",
            &format!("/api/v1/events/{event_id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["data"]["id"], event_id);
    assert_eq!(r["data"]["event"], "alert.created");
    assert!(r["data"]["timestamp"].as_str().unwrap().ends_with('Z'));
    let hooks: HashSet<&str> = r["data"]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["webhookId"].as_str().unwrap())
        .collect();
    assert_eq!(hooks, HashSet::from([a.as_str(), b.as_str()]));
    for (k, missing) in [(&other, event_id), (&key, "evt_never")] {
        let (s, r) = stack
            .api("GET", &format!("/api/v1/events/{missing}"), Some(k), None)
            .await;
        assert_error(s, &r, 404, "not_found");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cursors_hold_while_deliveries_are_written() {
    let stack = Stack::start().await;
    let (org, key) = stack.new_org().await;
    let (w, _) = stack.webhook(&key, "/p", &["alert.*"]).await;
    let org = OrgId::parse(&org).unwrap();
    let webhook = WebhookId::parse(&w).unwrap();
    let base = wf_core::time::now_ms() - chrono::Duration::minutes(30);
    let make = |at| {
        let event_id = EventId::generate();
        NewDelivery {
            id: DeliveryId::derive(&org, &event_id, &webhook),
            org_id: org.clone(),
            webhook_id: webhook.clone(),
            event_id,
            event: EventType::AlertCreated,
            created_at: at,
        }
    };
    // 30 deliveries, three per millisecond.
    let before: Vec<NewDelivery> = (0..30)
        .map(|i| make(base + chrono::Duration::milliseconds(i / 3)))
        .collect();
    stack.store.insert_deliveries(&before).await.unwrap();
    let existing: HashSet<String> = before.iter().map(|d| d.id.as_str().to_owned()).collect();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut round = 0i64;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/webhooks/{w}/deliveries?limit=4&cursor={c}"),
            None => format!("/api/v1/webhooks/{w}/deliveries?limit=4"),
        };
        let (s, page) = stack.api("GET", &path, Some(&key), None).await;
        assert_eq!(s, 200, "{page}");
        seen.extend(ids(&page));
        // Meanwhile: deliveries at the instants of existing ones (before, on and after
        // the cursor), newer ones and older ones.
        round += 1;
        let more: Vec<NewDelivery> = [
            base + chrono::Duration::milliseconds(round % 10),
            base + chrono::Duration::milliseconds(9 - round % 10),
            wf_core::time::now_ms(),
            base - chrono::Duration::milliseconds(round),
        ]
        .into_iter()
        .map(make)
        .collect();
        stack.store.insert_deliveries(&more).await.unwrap();
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let old: Vec<&String> = seen.iter().filter(|id| existing.contains(*id)).collect();
    let unique: HashSet<&String> = old.iter().copied().collect();
    assert_eq!(unique.len(), old.len(), "a delivery came twice");
    assert_eq!(unique.len(), existing.len(), "a delivery was skipped");
    assert!(round >= 8);
}
