//! Rotating `WF_SECRET_KEY` on a running deployment, the README's steps with the real
//! binaries: every delivery before, during and after the rotation carries signatures that
//! verify and its custom header intact, and the old key is removed at the end.

use base64::Engine as _;
use serde_json::json;
use wf_testkit::signature::{seed_verify, standard_verify};

use super::support::*;

struct Hook {
    id: String,
    secret: String,
    path: &'static str,
    api_key_header: &'static str,
}

/// Creates a webhook for `alert.created` on `path` with an `X-Api-Key` custom header.
async fn hook(
    d: &Deployment,
    ingestor: &Proc,
    key: &str,
    path: &'static str,
    hv: &'static str,
) -> Hook {
    let body = json!({
        "name": path,
        "url": d.receiver.url(path),
        "events": ["alert.created"],
        "headers": {"X-Api-Key": hv},
    });
    let (s, b) = post(ingestor.api, "/api/v1/webhooks", key, &body).await;
    assert_eq!(s, 201, "{b}");
    Hook {
        id: b["data"]["id"].as_str().unwrap().to_owned(),
        secret: b["data"]["secret"].as_str().unwrap().to_owned(),
        path,
        api_key_header: hv,
    }
}

/// Publishes event number `step` and checks that every hook in `hooks` receives it signed
/// with its secret (both schemes) and with its custom header; `seen` is how many requests
/// each hook's path had before.
async fn deliver_and_verify(
    d: &Deployment,
    ingestor: &Proc,
    key: &str,
    step: i64,
    hooks: &[&Hook],
) {
    let before: Vec<usize> = hooks
        .iter()
        .map(|h| d.receiver.requests(h.path).len())
        .collect();
    let (s, b) = post(
        ingestor.api,
        "/api/v1/events",
        key,
        &json!({"event": "alert.created", "data": {"step": step}}),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    for (h, n) in hooks.iter().zip(before) {
        let got = d.receiver.wait_for(h.path, n + 1).await;
        let r = got
            .iter()
            .find(|r| r.json()["data"]["step"] == step)
            .unwrap_or_else(|| panic!("step {step} not delivered to {}", h.path));
        assert_eq!(
            r.header("x-api-key"),
            h.api_key_header,
            "step {step}, {}",
            h.path
        );
        assert!(
            seed_verify(&r.body, &h.secret, r.header("x-workflows-signature")),
            "step {step}: seed signature of {} ({}) does not verify",
            h.path,
            h.id
        );
        assert!(
            standard_verify(r, &h.secret),
            "step {step}: Standard Webhooks signature of {} does not verify",
            h.path
        );
    }
}

/// `wfctl rekey <args>` with the deployment's environment: (exit success, stdout, stderr).
async fn wfctl_rekey(d: &Deployment, args: &[&str]) -> (bool, String, String) {
    let out = command(WFCTL, &d.env)
        .await
        .arg("rekey")
        .args(args)
        .output()
        .await
        .expect("running wfctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_verify_through_a_key_rotation() {
    let b64 = |k: [u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
    let (a, b) = (b64(rand::random()), b64(rand::random()));
    let mut d = Deployment::new(&[("WF_SECRET_KEY", a.as_str())]).await;
    let stop = d.grace() + EXIT_MARGIN;

    // Key A only.
    let mut ingestor = d.start(INGESTOR).await;
    let mut worker = d.start(WORKER).await;
    let key = d.api_key().await;
    let old = hook(&d, &ingestor, &key, "/old", "old-gw-key").await;
    deliver_and_verify(&d, &ingestor, &key, 1, &[&old]).await;

    // Step 1: B listed as a second key, one process at a time; A still encrypts.
    d.env.insert("WF_SECRET_KEY".into(), format!("{a},{b}"));
    worker.stop(stop).await;
    worker = d.start(WORKER).await;
    deliver_and_verify(&d, &ingestor, &key, 2, &[&old]).await;
    ingestor.stop(stop).await;
    ingestor = d.start(INGESTOR).await;
    deliver_and_verify(&d, &ingestor, &key, 3, &[&old]).await;

    // Step 2: B first. The ingestor switches while the worker still lists A first: what
    // the ingestor seals with B, the worker opens.
    d.env.insert("WF_SECRET_KEY".into(), format!("{b},{a}"));
    ingestor.stop(stop).await;
    ingestor = d.start(INGESTOR).await;
    let new = hook(&d, &ingestor, &key, "/new", "new-gw-key").await;
    deliver_and_verify(&d, &ingestor, &key, 4, &[&old, &new]).await;
    worker.stop(stop).await;
    worker = d.start(WORKER).await;
    deliver_and_verify(&d, &ingestor, &key, 5, &[&old, &new]).await;

    // Step 3: the check counts what still needs A; rekey re-encrypts it; the check passes.
    let (ok, out, err) = wfctl_rekey(&d, &["--check"]).await;
    assert!(
        !ok,
        "--check must fail while a row needs the old key: {out}{err}"
    );
    assert!(out.contains("rows still needing an old key: 1"), "{out}");
    assert!(!out.contains(&a) && !out.contains(&b), "{out}");
    let (ok, out, err) = wfctl_rekey(&d, &["--batch-size", "1"]).await;
    assert!(ok, "wfctl rekey: {out}{err}");
    assert!(
        out.contains("scanned 2, re-encrypted 1, already current 1, failed to decrypt 0"),
        "{out}"
    );
    let (ok, out, err) = wfctl_rekey(&d, &["--check"]).await;
    assert!(ok, "wfctl rekey --check after rekey: {out}{err}");
    assert!(out.contains("rows still needing an old key: 0"), "{out}");
    deliver_and_verify(&d, &ingestor, &key, 6, &[&old, &new]).await;

    // Step 4: A removed.
    d.env.insert("WF_SECRET_KEY".into(), b.clone());
    worker.stop(stop).await;
    worker = d.start(WORKER).await;
    ingestor.stop(stop).await;
    ingestor = d.start(INGESTOR).await;
    deliver_and_verify(&d, &ingestor, &key, 7, &[&old, &new]).await;

    // A bad list is refused at start-up, naming the position and never the key.
    let mut bad = d.env.clone();
    bad.insert("WF_SECRET_KEY".into(), format!("{b},{b}"));
    let out = command(WFCTL, &bad)
        .await
        .args(["rekey", "--check"])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("keys 1 and 2 of 2 are the same key"), "{err}");
    assert!(!err.contains(&b), "{err}");

    worker.stop(stop).await;
    ingestor.stop(stop).await;
}
