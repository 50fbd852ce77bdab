//! `wfctl bench`, the load generator, end to end: it builds its own deployment.

use std::collections::BTreeMap;

use super::support::*;

/// Runs `wfctl bench` with only the given arguments and `WF_*` defaults (it makes and
/// removes its own vhost and database); `HOME` so that `rabbitmqctl` finds its cookie.
async fn bench(args: &[&str]) -> (bool, String, String) {
    let mut env = BTreeMap::new();
    if let Some(home) = std::env::var_os("HOME") {
        env.insert("HOME".to_owned(), home.to_string_lossy().into_owned());
    }
    let out = command(WFCTL, &env)
        .await
        .arg("bench")
        .args(args)
        .output()
        .await
        .expect("running wfctl bench");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of `name: value` in the bench's output.
fn figure(stdout: &str, name: &str) -> Option<f64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.parse().ok())
}

/// A small benchmark end to end against the real binaries: every delivery arrives with a
/// valid signature, and every figure is printed, both broker ceilings included. Timings
/// are not asserted, only that they were measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_delivers_everything_and_prints_every_figure() {
    let (ok, stdout, stderr) =
        bench(&["--events", "300", "--warmup", "20", "--webhooks", "2"]).await;
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        figure(&stdout, "deliveries_received"),
        Some(600.0),
        "{stdout}"
    );
    assert_eq!(figure(&stdout, "signature_failures"), Some(0.0), "{stdout}");
    for name in [
        "deliveries_per_sec",
        "event_to_delivery_p99_ms",
        "worker_cpu_seconds_per_1000_deliveries",
        "worker_peak_rss_mib",
        "broker_ceiling_msgs_per_sec",
        "ratio_to_ceiling",
        "broker_topic_ceiling_msgs_per_sec",
        "ratio_to_topic_ceiling",
    ] {
        let v = figure(&stdout, name).unwrap_or_else(|| panic!("no `{name}` in:\n{stdout}"));
        assert!(v > 0.0, "{name} = {v}\n{stdout}");
    }
    // One endpoint: connections are kept alive, at most one per request in flight.
    let opened = figure(&stdout, "connections_opened_per_attempt")
        .unwrap_or_else(|| panic!("no `connections_opened_per_attempt` in:\n{stdout}"));
    assert!(opened < 0.5, "{opened}\n{stdout}");
}

/// Bad options stop the bench before it creates anything, with a message naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_rejects_bad_options_before_starting() {
    let (ok, _, stderr) = bench(&["--queue-type", "lazy"]).await;
    assert!(!ok);
    assert!(stderr.contains("--queue-type"), "{stderr}");

    let (ok, _, stderr) = bench(&["--events", "10", "--idle-connections", "lots"]).await;
    assert!(!ok);
    assert!(stderr.contains("WF_WORKER_IDLE_CONNECTIONS"), "{stderr}");

    let (ok, _, stderr) = bench(&["--events", "10", "--bin-dir", "/nonexistent/wf"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("wf-worker not found at /nonexistent/wf/wf-worker"),
        "{stderr}"
    );
}
