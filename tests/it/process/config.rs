//! Start-up and readiness: bad configuration stops every binary with an error naming
//! the variable, and `/readyz` follows RabbitMQ.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use wf_testkit::eventually;

use crate::harness::http_request;

use super::support::*;

/// A bad `WF_*` value is a start-up error naming the variable (and the value, unless it is
/// secret) with a nonzero exit, from every binary.
#[tokio::test(flavor = "multi_thread")]
async fn bad_config_is_a_startup_error_naming_the_variable() {
    // (variable, value, text the error must show, text it must never show)
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("WF_RETRY_SCHEDULE", "5x", "5x", None),
        ("WF_WORKER_CONCURRENCY", "0", "0", None),
        ("WF_QUEUE_TYPE", "stream", "stream", None),
        ("WF_DELIVERY_TIMEOUT", "10", "10", None),
        ("WF_SHUTDOWN_GRACE", "soon", "soon", None),
        ("WF_LOG_FORMAT", "xml", "xml", None),
        ("WF_HTTP_ADDR", "localhost", "localhost", None),
        (
            "WF_ALLOWED_TARGET_CIDRS",
            "10.0.0.0/33",
            "10.0.0.0/33",
            None,
        ),
        ("WF_DATABASE_URL", "mysql://db/x", "mysql://db/x", None),
        (
            "WF_AMQP_URL",
            "http://guest:hunter2pw@127.0.0.1:5672/",
            "WF_AMQP_URL",
            Some("hunter2pw"),
        ),
        (
            // A list of nodes is checked node by node, every password hidden.
            "WF_AMQP_URL",
            "amqp://guest:pw1secret@127.0.0.1:1/%2f,amqp://guest:pw2secret@/%2f",
            "node 2 of 2",
            Some("secret"),
        ),
        ("WF_QUORUM_GROUP_SIZE", "9", "9", None),
        ("WF_SECRET_KEY", "short", "WF_SECRET_KEY", Some("short`")),
        (
            // base64 of 16 bytes: valid base64, wrong length
            "WF_SECRET_KEY",
            "c2VjcmV0LXRvby1zaG9ydA==",
            "WF_SECRET_KEY",
            Some("c2VjcmV0LXRvby1zaG9ydA"),
        ),
        (
            "WF_SECRET_KEY",
            "not base64 at all: s3cr3t!",
            "WF_SECRET_KEY",
            Some("s3cr3t"),
        ),
        (
            // A list during a rotation: the bad entry is named by its position.
            "WF_SECRET_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,s3cr3t-not-a-key",
            "key 2 of 2",
            Some("s3cr3t"),
        ),
    ];
    let runs = cases.iter().flat_map(|case| {
        [
            (INGESTOR, &[][..]),
            (WORKER, &[][..]),
            (WFCTL, &["migrate"][..]),
        ]
        .map(|(bin, args)| async move {
            let (var, value, shown, hidden) = *case;
            // Unreachable dependencies and free ports: should the bad value be accepted,
            // the process fails for another reason, touching nothing shared.
            let env: BTreeMap<String, String> = [
                (
                    "WF_DATABASE_URL",
                    "postgres://postgres@127.0.0.1:1/none".to_owned(),
                ),
                (
                    "WF_AMQP_URL",
                    "amqp://guest:guest@127.0.0.1:1/%2f".to_owned(),
                ),
                ("WF_HTTP_ADDR", free_addr().to_string()),
                ("WF_METRICS_ADDR", free_addr().to_string()),
                (var, value.to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let mut cmd = command(bin, &env).await;
            let started = Instant::now();
            let out = tokio::time::timeout(Duration::from_secs(20), cmd.args(args).output())
                .await
                .unwrap_or_else(|_| panic!("{bin} with {var}={value:?} did not exit"))
                .expect("run");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let mut problems = Vec::new();
            if out.status.success() {
                problems.push("exited 0".to_owned());
            }
            if !stderr.contains(var) || !stderr.contains(shown) {
                problems.push(format!("stderr does not name {var} and {shown:?}"));
            }
            if hidden.is_some_and(|h| stderr.contains(h)) {
                problems.push(format!("stderr shows the secret {hidden:?}"));
            }
            if started.elapsed() > Duration::from_secs(5) {
                problems.push(format!("took {:?}", started.elapsed()));
            }
            (!problems.is_empty()).then(|| {
                format!(
                    "{bin} {var}={value:?}: {}\n    stderr: {}",
                    problems.join("; "),
                    stderr.trim()
                )
            })
        })
    });
    let failures: Vec<String> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A worker whose RabbitMQ vhost is deleted stays alive (`/healthz` 200) but is not ready
/// (`/readyz` 503), and still shuts down cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_is_503_when_rabbitmq_vhost_is_gone() {
    let d = Deployment::new(&[("WF_SHUTDOWN_GRACE", "2s")]).await;
    let mut worker = d.start(WORKER).await;
    d.vhost.delete();

    let ops = worker.ops;
    let body = eventually("/readyz 503", Duration::from_secs(30), || async {
        let (s, b) = http_request(ops, "GET", "/readyz", None, None).await;
        (s == 503).then_some(b)
    })
    .await;
    println!("/readyz: {body}");
    let (s, _) = http_request(ops, "GET", "/healthz", None, None).await;
    assert_eq!(s, 200, "/healthz while RabbitMQ is unusable");

    let took = worker.stop(d.grace() + EXIT_MARGIN).await;
    println!("worker without RabbitMQ exited 0 {took:?} after SIGTERM");
}
