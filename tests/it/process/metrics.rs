//! `/metrics`, `/healthz` and `/readyz` of fresh processes (every counter starts at 0)
//! after real deliveries.

use serde_json::json;
use wf_testkit::prometheus::CONTRACT_METRICS;

use crate::harness::http_request;

use super::support::*;

/// Fresh processes, so every counter starts at 0: after one webhook got two 200s and
/// another a 500 then a 200, both `/metrics` show exactly that.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_real_deliveries() {
    let d = Deployment::new(&[]).await;
    let ingestor = d.start(INGESTOR).await;
    let worker = d.start(WORKER).await;
    let key = d.api_key().await;
    d.webhook(&ingestor, &key, "/ok", &["alert.created"]).await;
    d.webhook(&ingestor, &key, "/flaky", &["alert.resolved"])
        .await;
    d.receiver.plan("/flaky", &[500], 200);

    for event in ["alert.created", "alert.created", "alert.resolved"] {
        let body = json!({"event": event, "data": {"alertId": "alt_1"}});
        let (s, b) = post(ingestor.api, "/api/v1/events", &key, &body).await;
        assert_eq!(s, 202, "{b}");
    }
    d.receiver.wait_for("/ok", 2).await;
    d.receiver.wait_for("/flaky", 2).await;

    let expected_worker: &[Expected] = &[
        ("wf_deliveries_total", &[("outcome", "delivered")], 3.0),
        ("wf_deliveries_total", &[("outcome", "retried")], 1.0),
        ("wf_deliveries_total", &[("outcome", "dead")], 0.0),
        ("wf_deliveries_total", &[("outcome", "dropped")], 0.0),
        ("wf_delivery_attempts_total", &[("result", "2xx")], 3.0),
        ("wf_delivery_attempts_total", &[("result", "5xx")], 1.0),
        ("wf_delivery_attempts_total", &[("result", "3xx")], 0.0),
        ("wf_delivery_attempts_total", &[("result", "4xx")], 0.0),
        ("wf_delivery_attempts_total", &[("result", "timeout")], 0.0),
        (
            "wf_delivery_attempts_total",
            &[("result", "connect_error")],
            0.0,
        ),
        (
            "wf_delivery_attempts_total",
            &[("result", "tls_error")],
            0.0,
        ),
        ("wf_delivery_attempts_total", &[("result", "blocked")], 0.0),
        ("wf_delivery_duration_seconds_count", &[], 4.0),
        (
            "wf_delivery_duration_seconds_bucket",
            &[("le", "+Inf")],
            4.0,
        ),
        ("wf_event_to_delivery_seconds_count", &[], 3.0),
        (
            "wf_event_to_delivery_seconds_bucket",
            &[("le", "+Inf")],
            3.0,
        ),
        ("wf_deliveries_in_flight", &[], 0.0),
        ("wf_circuit_open_endpoints", &[], 0.0),
        // Nothing was published straight to the exchange.
        (
            "wf_events_ingested_total",
            &[("source", "amqp"), ("event", "alert.created")],
            0.0,
        ),
    ];
    let expected_ingestor: &[Expected] = &[
        (
            "wf_events_ingested_total",
            &[("source", "http"), ("event", "alert.created")],
            2.0,
        ),
        (
            "wf_events_ingested_total",
            &[("source", "http"), ("event", "alert.resolved")],
            1.0,
        ),
        (
            "wf_events_ingested_total",
            &[("source", "amqp"), ("event", "alert.created")],
            0.0,
        ),
        // Its own registry: it delivers nothing.
        ("wf_deliveries_total", &[("outcome", "delivered")], 0.0),
        ("wf_delivery_attempts_total", &[("result", "2xx")], 0.0),
    ];
    for (proc, expected) in [(&worker, expected_worker), (&ingestor, expected_ingestor)] {
        metrics_settle(proc, expected).await;
    }

    let w = worker.metrics().await;
    // Four attempts to one receiver: at least one connection, kept alive afterwards.
    let opened = w.value("wf_delivery_connections_opened_total", &[]);
    let idle = w.value("wf_delivery_connections_idle", &[]);
    assert!(
        (1.0..=4.0).contains(&opened),
        "connections opened: {opened}"
    );
    assert!(
        idle >= 1.0 && idle <= opened,
        "idle {idle} of {opened} opened"
    );
    let cache = w.sum("wf_subscription_cache_requests_total");
    assert!(cache >= 3.0, "subscription lookups for 3 events: {cache}");
    // Buckets reach past the delivery timeout (the default 10 s; here 5 s).
    let max_le = w
        .samples
        .keys()
        .filter(|(n, _)| n == "wf_delivery_duration_seconds_bucket")
        .filter_map(|(_, l)| l["le"].parse::<f64>().ok())
        .filter(|le| le.is_finite())
        .fold(0.0, f64::max);
    assert!(max_le > 10.0, "largest finite bucket {max_le}");

    for proc in [&worker, &ingestor] {
        for path in ["/healthz", "/readyz"] {
            let (s, b) = http_request(proc.ops, "GET", path, None, None).await;
            assert_eq!(s, 200, "{} {path}: {b}", proc.name);
        }
        let m = proc.metrics().await;
        let process_metrics = [
            ("process_cpu_seconds_total", "counter"),
            ("process_resident_memory_bytes", "gauge"),
        ];
        for (name, kind) in CONTRACT_METRICS.into_iter().chain(process_metrics) {
            assert_eq!(
                m.types.get(name).map(String::as_str),
                Some(kind),
                "# TYPE of {name} on {}",
                proc.name
            );
        }
        assert!(m.value("process_resident_memory_bytes", &[]) > 0.0);
        assert!(
            m.series("wf_events_ingested_total") >= 60,
            "30 events × 2 sources"
        );
        // Cardinality: no label value is an id, a URL or an address.
        let port = d.receiver.addr.port().to_string();
        for (name, labels) in m.samples.keys() {
            for (k, v) in labels {
                let id_like = ["whk_", "org_", "evt_", "dlv_", "key_", "wf_live_"]
                    .iter()
                    .any(|p| v.starts_with(p));
                let url_like = v.contains("://") || v.contains("127.0.0.1") || v.contains(&port);
                assert!(
                    !id_like && !url_like,
                    "{}: {name}{{{k}=\"{v}\"}} carries an id or URL",
                    proc.name
                );
            }
        }
    }
}
