//! `wfctl dlq` against a real deployment: list and replay dead deliveries.

use std::time::Duration;

use serde_json::json;
use wf_testkit::eventually;

use super::support::*;

/// `wfctl dlq list` shows what is dead (in Postgres and in the queue); `wfctl dlq replay`
/// re-queues it once the endpoint recovers, drains the queue, and a second replay finds
/// nothing.
#[tokio::test(flavor = "multi_thread")]
async fn wfctl_dlq_lists_and_replays_dead_deliveries() {
    let d = Deployment::new(&[("WF_RETRY_SCHEDULE", "1s")]).await;
    let ingestor = d.start(INGESTOR).await;
    let _worker = d.start(WORKER).await;
    let key = d.api_key().await;
    let hook = d.webhook(&ingestor, &key, "/dlq", &["alert.created"]).await;
    d.receiver.plan("/dlq", &[], 500);
    for n in 0..2 {
        let (s, b) = post(
            ingestor.api,
            "/api/v1/events",
            &key,
            &json!({"event": "alert.created", "data": {"n": n}}),
        )
        .await;
        assert_eq!(s, 202, "{b}");
    }
    let dead = eventually("two dead deliveries", Duration::from_secs(30), || async {
        let dead = deliveries(ingestor.api, &key, &hook, "dead").await;
        (dead.len() == 2).then_some(dead)
    })
    .await;

    let wfctl = |args: &'static [&'static str]| {
        let env = d.env.clone();
        async move {
            let out = command(WFCTL, &env)
                .await
                .args(args)
                .output()
                .await
                .expect("running wfctl");
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "wfctl {args:?}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        }
    };
    let listed = eventually(
        "both dead letters in the queue",
        Duration::from_secs(10),
        || async {
            let out = wfctl(&["dlq", "list"]).await;
            out.contains("workflows.deliveries.dead: 2 message(s)")
                .then_some(out)
        },
    )
    .await;
    for del in &dead {
        assert!(listed.contains(del["id"].as_str().unwrap()), "{listed}");
    }
    assert!(listed.contains("2 dead deliveries"), "{listed}");

    d.receiver.plan("/dlq", &[], 200);
    let out = wfctl(&["dlq", "replay"]).await;
    assert!(out.contains("re-queued 2"), "{out}");
    let got = d.receiver.wait_for("/dlq", 6).await;
    let replayed: Vec<&str> = got[4..]
        .iter()
        .map(|r| r.header("x-workflows-attempt"))
        .collect();
    assert_eq!(
        replayed,
        ["3", "3"],
        "replays are numbered after the two failed attempts"
    );
    eventually("both delivered", Duration::from_secs(20), || async {
        (deliveries(ingestor.api, &key, &hook, "delivered")
            .await
            .len()
            == 2)
            .then_some(())
    })
    .await;
    let out = wfctl(&["dlq", "list"]).await;
    assert!(
        out.contains("workflows.deliveries.dead: 0 message(s)")
            && out.contains("0 dead deliveries"),
        "{out}"
    );
    let out = wfctl(&["dlq", "replay"]).await;
    assert!(out.contains("re-queued 0"), "{out}");
}
