//! What ends in `workflows.deliveries.dead` without going through the whole retry
//! schedule, and with which `x-wf-reason`: a `410 Gone` (which also disables the webhook),
//! a job nobody can decode, a job redelivered up to the broker's limit.

use serde_json::{json, Value};
use wf_testkit::eventually;

use crate::amqp::{header_str, Amqp};
use crate::harness::{post_event, wait_status, Stack};
use crate::process::support::{metrics_settle, post, Deployment, INGESTOR, WORKER};

/// The queues and routing of the contract (README, "Retries, dead letters, replay").
const DELIVERIES: &str = "workflows.deliveries";
const DEAD: &str = "workflows.deliveries.dead";
const DELIVERY_ROUTING_KEY: &str = "delivery";

/// `GET /api/v1/webhooks/{id}` once it shows the webhook inactive.
async fn once_disabled(stack: &Stack, key: &str, id: &str) -> Value {
    let path = format!("/api/v1/webhooks/{id}");
    eventually(
        "the webhook disabled",
        std::time::Duration::from_secs(30),
        || async {
            let (s, b) = stack.api("GET", &path, Some(key), None).await;
            assert_eq!(s, 200, "{b}");
            (b["data"]["isActive"] == false).then(|| b["data"].clone())
        },
    )
    .await
}

/// An endpoint that answers `410 Gone` is gone for good: its webhook is disabled by the
/// system, the organisation hears about it (`webhook.disabled`), and the delivery is dead
/// at once (no retry), in the delivery log and in the dead-letter queue with reason
/// `gone`.
#[tokio::test(flavor = "multi_thread")]
async fn a_410_disables_the_webhook_and_dead_letters_the_delivery() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let (_, watcher_secret) = stack.webhook(&key, "/watch", &["webhook.disabled"]).await;
    let (gone, _) = stack.webhook(&key, "/gone", &["alert.created"]).await;
    stack.receiver.plan("/gone", &[], 410);
    post_event(&stack, &key, "alert.created", json!({"id": "alt_1"})).await;

    let hook = once_disabled(&stack, &key, &gone).await;
    assert!(
        hook["disabledReason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "disabled by the system, so with a reason: {hook}"
    );

    let disabled = stack.receiver.wait_for("/watch", 1).await.remove(0);
    assert_eq!(disabled.header("x-workflows-event"), "webhook.disabled");
    assert!(wf_testkit::signature::seed_verify(
        &disabled.body,
        &watcher_secret,
        disabled.header("x-workflows-signature")
    ));
    let event = disabled.json();
    assert_eq!(event["data"]["id"], gone.as_str());
    assert_eq!(event["data"]["isActive"], false);

    let dead = wait_status(&stack, &key, &gone, "dead", 1).await.remove(0);
    let attempts = dead["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "a 410 is not retried: {dead}");
    assert_eq!(attempts[0]["statusCode"], 410);
    assert_eq!(stack.receiver.requests("/gone").len(), 1);

    let amqp = Amqp::connect(&stack.vhost).await;
    let letter = amqp.next(DEAD).await;
    assert_eq!(header_str(&letter, "x-wf-reason").as_deref(), Some("gone"));
    assert_eq!(
        letter
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str()),
        dead["id"].as_str()
    );
    amqp.close().await;
}

/// The contract names the reason a webhook disabled by a `410` shows: `gone`, in the API
/// and in its `webhook.disabled` event.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_disabled_by_a_410_says_gone() {
    let stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    stack.webhook(&key, "/watch", &["webhook.disabled"]).await;
    let (gone, _) = stack.webhook(&key, "/gone", &["alert.created"]).await;
    stack.receiver.plan("/gone", &[], 410);
    post_event(&stack, &key, "alert.created", json!({})).await;
    let hook = once_disabled(&stack, &key, &gone).await;
    assert_eq!(hook["disabledReason"], "gone", "{hook}");
    let event = stack.receiver.wait_for("/watch", 1).await.remove(0).json();
    assert_eq!(event["data"]["disabledReason"], "gone", "{event}");
}

/// A job whose message the broker has handed out so often that one more failure would
/// make the quorum queue drop it (workers crashing on it, say) is set aside by the worker
/// with reason `redelivery_limit`, without an attempt. Here the redeliveries come from a
/// consumer that takes the job and hands it back while no worker runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_redelivered_up_to_the_limit_is_dead_lettered_without_an_attempt() {
    let mut stack = Stack::start().await;
    let (_, key) = stack.new_org().await;
    let (hook, _) = stack.webhook(&key, "/poison", &["user.joined"]).await;
    post_event(&stack, &key, "user.joined", json!({"user": "u1"})).await;
    let delivered = wait_status(&stack, &key, &hook, "delivered", 1).await;
    let id = delivered[0]["id"].as_str().unwrap();

    // A valid job on workflows.deliveries, and no worker to take it.
    stack.stop_worker().await;
    let (s, b) = stack
        .api(
            "POST",
            &format!("/api/v1/webhooks/{hook}/deliveries/{id}/retry"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(s, 202, "{b}");

    // The worker treats a job as poison once the broker's next redelivery would be its
    // last (the queue's x-delivery-limit): one hand-back short of the limit.
    let amqp = Amqp::connect(&stack.vhost).await;
    let hand_backs = wf_broker::DELIVERY_LIMIT - 1;
    let mut job = Vec::new();
    for n in 0..hand_backs {
        let m = amqp.next(DELIVERIES).await;
        assert_eq!(
            crate::amqp::header_int(&m, "x-delivery-count").unwrap_or(0),
            n,
            "the broker counts every hand-back"
        );
        job.clone_from(&m.data);
        Amqp::requeue(&m).await;
    }

    stack.start_worker().await;
    let letter = amqp.next(DEAD).await;
    assert_eq!(
        header_str(&letter, "x-wf-reason").as_deref(),
        Some("redelivery_limit")
    );
    assert_eq!(letter.data, job, "the job itself is set aside");
    assert!(amqp.get(DELIVERIES).await.is_none());
    assert_eq!(
        stack.receiver.requests("/poison").len(),
        1,
        "only the first delivery was sent, not the poison job"
    );
    amqp.close().await;
}

/// Jobs nobody can decode (not JSON; a version this worker does not know) published
/// straight to `workflows.deliveries` go to the dead-letter queue with reason
/// `undecodable_job` and are counted as dead, and the worker keeps delivering: a job
/// through the same queue afterwards (a retry) is delivered. Real processes, so that the
/// worker's counters count nothing but this test.
#[tokio::test(flavor = "multi_thread")]
async fn undecodable_jobs_are_dead_lettered_and_counted_and_delivery_goes_on() {
    let d = Deployment::new(&[]).await;
    let ingestor = d.start(INGESTOR).await;
    let worker = d.start(WORKER).await;
    let key = d.api_key().await;
    d.webhook(&ingestor, &key, "/after", &["alert.created"])
        .await;

    let amqp = Amqp::connect(&d.vhost).await;
    let garbage: [&[u8]; 2] = [b"this is not a job", br#"{"v":"9"}"#];
    for body in garbage {
        amqp.publish(DELIVERIES, DELIVERY_ROUTING_KEY, body).await;
    }
    let mut letters = Vec::new();
    for _ in garbage {
        let letter = amqp.next(DEAD).await;
        assert_eq!(
            header_str(&letter, "x-wf-reason").as_deref(),
            Some("undecodable_job")
        );
        assert!(header_str(&letter, "x-wf-last-error").is_some_and(|e| !e.is_empty()));
        letters.push(letter.data.clone());
    }
    letters.sort();
    let mut expected: Vec<Vec<u8>> = garbage.iter().map(|b| b.to_vec()).collect();
    expected.sort();
    assert_eq!(letters, expected);

    // The first attempt fails, so the second one goes through workflows.deliveries.
    d.receiver.plan("/after", &[500], 200);
    let event = json!({"event": "alert.created", "data": {"ok": true}});
    let (s, b) = post(ingestor.api, "/api/v1/events", &key, &event).await;
    assert_eq!(s, 202, "{b}");
    let got = d.receiver.wait_for("/after", 2).await;
    assert_eq!(got[1].header("x-workflows-attempt"), "2");

    metrics_settle(
        &worker,
        &[
            ("wf_deliveries_total", &[("outcome", "dead")], 2.0),
            ("wf_deliveries_total", &[("outcome", "retried")], 1.0),
            ("wf_deliveries_total", &[("outcome", "delivered")], 1.0),
        ],
    )
    .await;
    amqp.close().await;
}
