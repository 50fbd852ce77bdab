//! The delivery client against a real HTTPS server: classification of every outcome,
//! the SSRF guards, redirects, timeouts, body caps and `Retry-After`.

use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use hyper_util::client::legacy::connect::dns::Name;
use tower::ServiceExt;
use wf_core::url_policy::{AllowedCidrs, WebhookUrl};
use wf_worker::client::{
    AttemptKind, ClientConfig, DeliveryClient, ResolveError, SsrfResolver, SNIPPET_LEN,
};

use wf_testkit::{unique, Receiver, Reply};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Size of the `/big` response body.
const BIG_BODY: usize = 200 * 1024;

/// A receiver whose paths each behave one way:
/// - `/ok` → 200 `ok`; `/status/N` → status N, body `status N` (N of the tests below);
/// - `/redirect` → 302 to `/ok` on the same server;
/// - `/slow` → never answers; `/slow-body` → 200 headers, then a body that never ends;
/// - `/big` → 200 with [`BIG_BODY`] bytes;
/// - `/429` → 429 `Retry-After: 7`; `/503-date` → 503 with an HTTP-date 120 s ahead.
async fn server() -> Receiver {
    let srv = Receiver::start().await;
    for code in [204, 400, 410, 500, 502] {
        srv.respond(
            &format!("/status/{code}"),
            Reply::status(code).body(format!("status {code}")),
        );
    }
    srv.respond(
        "/redirect",
        Reply::status(302)
            .header("location", &srv.url("/ok"))
            .body(""),
    );
    srv.hang("/slow");
    srv.respond("/slow-body", Reply::status(200).endless_body());
    srv.respond("/big", Reply::status(200).body(vec![b'x'; BIG_BODY]));
    srv.respond(
        "/429",
        Reply::status(429)
            .header("retry-after", "7")
            .body("slow down"),
    );
    let at = chrono::Utc::now() + chrono::Duration::seconds(120);
    srv.respond(
        "/503-date",
        Reply::status(503)
            .header(
                "retry-after",
                &at.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            )
            .body("maintenance"),
    );
    srv
}

fn loopback() -> AllowedCidrs {
    AllowedCidrs::parse("127.0.0.0/8,::1/128").expect("cidrs")
}

fn url(s: &str) -> WebhookUrl {
    WebhookUrl::parse(s, &loopback()).expect("test URL")
}

/// A client that trusts `srv`'s certificate and may connect to loopback.
fn client_for(srv: &Receiver, timeout: Duration) -> DeliveryClient {
    DeliveryClient::new(ClientConfig {
        timeout,
        allowed: loopback(),
        extra_root_ca: Some(srv.ca_path().to_owned()),
        user_agent: "WorkFlows-Webhooks/test".to_owned(),
        max_idle_per_host: 4,
        max_idle_total: 64,
    })
    .expect("client")
}

async fn post(client: &DeliveryClient, u: &str) -> wf_worker::client::AttemptOutcome {
    client
        .post(
            &url(u),
            HeaderMap::new(),
            Bytes::from_static(b"{\"event\":\"x\"}"),
        )
        .await
}

#[tokio::test]
async fn ok_is_success_and_sends_headers_and_body() {
    let srv = server().await;
    let client = client_for(&srv, TIMEOUT);
    let mut headers = HeaderMap::new();
    headers.insert("x-workflows-event", "alert.created".parse().unwrap());
    let body = Bytes::from_static(b"{\"event\":\"alert.created\"}");
    let out = client
        .post(&url(&srv.url("/ok")), headers, body.clone())
        .await;
    assert_eq!(out.kind, AttemptKind::Success, "{out:?}");
    assert!(out.kind.is_success());
    assert_eq!(out.status, Some(200));
    assert_eq!(out.error, None);
    assert_eq!(out.response_snippet.as_deref(), Some("ok"));
    assert_eq!(out.retry_after, None);
    assert!(out.duration > Duration::ZERO);

    let seen = srv.all_requests();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert_eq!(seen[0].body, body);
    assert_eq!(h["user-agent"], "WorkFlows-Webhooks/test");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-workflows-event"], "alert.created");
    assert_eq!(h["content-length"], body.len().to_string().as_str());
    // Origin-form target, the authority in Host.
    assert_eq!(seen[0].path, "/ok");
    assert_eq!(h["host"], srv.url("").trim_start_matches("https://"));
}

#[tokio::test]
async fn caller_headers_win_over_defaults() {
    let srv = server().await;
    let client = client_for(&srv, TIMEOUT);
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        "application/cloudevents+json".parse().unwrap(),
    );
    headers.insert("user-agent", "custom/1".parse().unwrap());
    let out = client
        .post(&url(&srv.url("/ok")), headers, Bytes::new())
        .await;
    assert_eq!(out.kind, AttemptKind::Success, "{out:?}");
    let seen = srv.all_requests();
    assert_eq!(
        seen[0].headers["content-type"],
        "application/cloudevents+json"
    );
    assert_eq!(seen[0].headers["user-agent"], "custom/1");
}

#[tokio::test]
async fn statuses_are_classified() {
    let srv = server().await;
    let client = client_for(&srv, TIMEOUT);
    for (code, kind, label) in [
        (204, AttemptKind::Success, "2xx"),
        (400, AttemptKind::Status4xx, "4xx"),
        (410, AttemptKind::Status4xx, "4xx"),
        (500, AttemptKind::Status5xx, "5xx"),
        (502, AttemptKind::Status5xx, "5xx"),
    ] {
        let out = post(&client, &srv.url(&format!("/status/{code}"))).await;
        assert_eq!(out.kind, kind, "{code}: {out:?}");
        assert_eq!(out.kind.label(), label);
        assert_eq!(out.status, Some(code));
    }
    let out = post(&client, &srv.url("/status/500")).await;
    assert_eq!(out.response_snippet.as_deref(), Some("status 500"));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let srv = server().await;
    let client = client_for(&srv, TIMEOUT);
    let out = post(&client, &srv.url("/redirect")).await;
    assert_eq!(out.kind, AttemptKind::Status3xx, "{out:?}");
    assert!(!out.kind.is_success());
    assert_eq!(out.status, Some(302));
    let error = out.error.expect("3xx explains itself");
    assert!(error.contains("not followed"), "{error}");
    let paths: Vec<String> = srv.all_requests().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/redirect"]);
}

#[tokio::test]
async fn slow_server_times_out() {
    let srv = server().await;
    let client = client_for(&srv, Duration::from_millis(300));
    let out = post(&client, &srv.url("/slow")).await;
    assert_eq!(out.kind, AttemptKind::Timeout, "{out:?}");
    assert_eq!(out.kind.label(), "timeout");
    assert_eq!(out.status, None);
    assert!(out.duration >= Duration::from_millis(300), "{out:?}");
    assert!(out.duration < TIMEOUT, "{out:?}");
}

#[tokio::test]
async fn endless_body_times_out_but_keeps_the_status() {
    let srv = server().await;
    let client = client_for(&srv, Duration::from_millis(300));
    let out = post(&client, &srv.url("/slow-body")).await;
    assert_eq!(out.kind, AttemptKind::Timeout, "{out:?}");
    assert_eq!(out.status, Some(200));
}

#[tokio::test]
async fn closed_port_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let client = DeliveryClient::new(ClientConfig {
        allowed: loopback(),
        ..ClientConfig::new(TIMEOUT)
    })
    .expect("client");
    let out = post(&client, &format!("https://127.0.0.1:{port}/")).await;
    assert_eq!(out.kind, AttemptKind::ConnectError, "{out:?}");
    assert_eq!(out.kind.label(), "connect_error");
    let error = out.error.expect("error text");
    assert!(error.to_lowercase().contains("refused"), "{error}");
}

#[tokio::test]
async fn untrusted_certificate_is_a_tls_error() {
    let srv = server().await;
    // Public roots only: the self-signed test certificate is not trusted.
    let client = DeliveryClient::new(ClientConfig {
        allowed: loopback(),
        ..ClientConfig::new(TIMEOUT)
    })
    .expect("client");
    let out = post(&client, &srv.url("/ok")).await;
    assert_eq!(out.kind, AttemptKind::TlsError, "{out:?}");
    assert_eq!(out.kind.label(), "tls_error");
    let error = out.error.expect("error text");
    assert!(error.contains("certificate"), "{error}");
    assert!(srv.all_requests().is_empty());
}

#[tokio::test]
async fn private_literal_is_blocked_without_connecting() {
    let srv = server().await;
    // Trusts the server, but 127.0.0.0/8 is not allowed.
    let client = DeliveryClient::new(ClientConfig {
        extra_root_ca: Some(srv.ca_path().to_owned()),
        ..ClientConfig::new(TIMEOUT)
    })
    .expect("client");
    let out = post(&client, &srv.url("/ok")).await;
    assert_eq!(out.kind, AttemptKind::Blocked, "{out:?}");
    assert_eq!(out.kind.label(), "blocked");
    assert_eq!(out.status, None);
    assert!(out.error.expect("error text").contains("127.0.0.1"));
    assert_eq!(srv.accepts(), 0, "no connection may be made");

    // Same for IPv6 literals, including the mapped form of 127.0.0.1.
    for u in ["https://[::1]:9/", "https://[::ffff:127.0.0.1]:9/"] {
        let out = post(&client, u).await;
        assert_eq!(out.kind, AttemptKind::Blocked, "{u}: {out:?}");
    }
}

#[tokio::test]
async fn big_body_is_capped_and_snippet_truncated() {
    let srv = server().await;
    let client = client_for(&srv, TIMEOUT);
    let out = post(&client, &srv.url("/big")).await;
    assert_eq!(out.kind, AttemptKind::Success, "{out:?}");
    let snippet = out.response_snippet.expect("snippet");
    assert_eq!(snippet.len(), SNIPPET_LEN);
    assert!(snippet.bytes().all(|b| b == b'x'));
}

#[tokio::test]
async fn retry_after_is_parsed_on_429_and_503() {
    let srv = server().await;
    let client = client_for(&srv, TIMEOUT);
    let out = post(&client, &srv.url("/429")).await;
    assert_eq!(out.kind, AttemptKind::Status4xx, "{out:?}");
    assert_eq!(out.status, Some(429));
    assert_eq!(out.retry_after, Some(Duration::from_secs(7)));

    let out = post(&client, &srv.url("/503-date")).await;
    assert_eq!(out.kind, AttemptKind::Status5xx, "{out:?}");
    let ra = out.retry_after.expect("HTTP-date parsed");
    assert!(
        ra > Duration::from_secs(100) && ra <= Duration::from_secs(120),
        "{ra:?}"
    );
}

#[tokio::test]
async fn connections_are_kept_alive() {
    let srv = server().await;
    let client = client_for(&srv, TIMEOUT);
    let clone = client.clone();
    for i in 0..5 {
        let c = if i % 2 == 0 { &client } else { &clone };
        assert!(post(c, &srv.url("/ok")).await.kind.is_success());
    }
    assert_eq!(srv.all_requests().len(), 5);
    // A connection goes back to the pool as soon as its response has been read.
    assert_eq!(srv.accepts(), 1);
    assert_eq!(client.idle_connections(), 1);
}

#[tokio::test]
async fn a_connection_the_receiver_closes_is_not_reused() {
    let srv = server().await;
    srv.respond(
        "/close",
        Reply::status(200).header("connection", "close").body("bye"),
    );
    let client = client_for(&srv, TIMEOUT);
    for _ in 0..3 {
        let out = post(&client, &srv.url("/close")).await;
        assert_eq!(out.kind, AttemptKind::Success, "{out:?}");
    }
    assert_eq!(srv.accepts(), 3, "each request needed a new connection");
    // A healthy exchange afterwards is kept alive as usual.
    assert!(post(&client, &srv.url("/ok")).await.kind.is_success());
    assert!(post(&client, &srv.url("/ok")).await.kind.is_success());
    assert_eq!(srv.accepts(), 4);
}

#[tokio::test]
async fn an_unread_response_closes_its_connection() {
    let srv = server().await;
    let client = client_for(&srv, TIMEOUT);
    // The body is over the read cap: the connection cannot carry another request.
    assert!(post(&client, &srv.url("/big")).await.kind.is_success());
    assert_eq!(client.idle_connections(), 0);
    assert!(post(&client, &srv.url("/ok")).await.kind.is_success());
    assert_eq!(srv.accepts(), 2);
}

#[tokio::test]
async fn idle_connections_are_bounded_over_all_hosts() {
    let servers = [server().await, server().await, server().await];
    // One CA per receiver: trust all three.
    let bundle = TempFile::with_contents(
        &servers
            .iter()
            .map(|s| s.ca_pem().to_owned())
            .collect::<String>(),
    );
    let client = DeliveryClient::new(ClientConfig {
        timeout: TIMEOUT,
        allowed: loopback(),
        extra_root_ca: Some(bundle.path().to_owned()),
        user_agent: "WorkFlows-Webhooks/test".to_owned(),
        max_idle_per_host: 4,
        max_idle_total: 2,
    })
    .expect("client");
    for srv in &servers {
        assert!(post(&client, &srv.url("/ok")).await.kind.is_success());
    }
    assert_eq!(
        client.idle_connections(),
        2,
        "the oldest idle one was closed"
    );
    // The two most recent are reused; the first receiver needs a new connection, which
    // in turn pushes out the second's.
    assert!(post(&client, &servers[2].url("/ok"))
        .await
        .kind
        .is_success());
    assert!(post(&client, &servers[0].url("/ok"))
        .await
        .kind
        .is_success());
    assert!(post(&client, &servers[1].url("/ok"))
        .await
        .kind
        .is_success());
    let accepts: Vec<usize> = servers.iter().map(Receiver::accepts).collect();
    assert_eq!(accepts, [2, 2, 1]);
    assert_eq!(client.idle_connections(), 2);

    // With no idle connections allowed, every request opens its own.
    let strict = DeliveryClient::new(ClientConfig {
        max_idle_total: 0,
        extra_root_ca: Some(bundle.path().to_owned()),
        allowed: loopback(),
        ..ClientConfig::new(TIMEOUT)
    })
    .expect("client");
    for _ in 0..2 {
        assert!(post(&strict, &servers[2].url("/ok"))
            .await
            .kind
            .is_success());
    }
    assert_eq!(servers[2].accepts(), 3);
    assert_eq!(strict.idle_connections(), 0);
}

#[tokio::test]
async fn resolver_drops_private_addresses() {
    let strict = SsrfResolver::new(AllowedCidrs::default());
    match strict.resolve("localhost").await {
        Err(ResolveError::Blocked { host, addrs }) => {
            assert_eq!(host, "localhost");
            assert!(
                addrs.contains("127.0.0.1") || addrs.contains("::1"),
                "{addrs}"
            );
        }
        other => panic!("expected Blocked, got {other:?}"),
    }
    // The same through the tower::Service interface hyper-util uses.
    let err = strict
        .clone()
        .oneshot(Name::from_str("localhost").unwrap())
        .await
        .expect_err("blocked");
    assert!(matches!(err, ResolveError::Blocked { .. }), "{err}");

    let lenient = SsrfResolver::new(loopback());
    let addrs = lenient.resolve("localhost").await.expect("allowed");
    assert!(!addrs.is_empty());
    assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    let via_service: Vec<_> = lenient
        .oneshot(Name::from_str("localhost").unwrap())
        .await
        .expect("allowed")
        .collect();
    assert_eq!(via_service.len(), addrs.len());
}

#[test]
fn unreadable_or_empty_root_ca_file_is_named() {
    let missing = std::env::temp_dir().join("wf-worker-it-does-not-exist.pem");
    let err = DeliveryClient::new(ClientConfig {
        extra_root_ca: Some(missing.clone()),
        ..ClientConfig::new(TIMEOUT)
    })
    .expect_err("missing file");
    assert!(
        format!("{err:#}").contains(&missing.display().to_string()),
        "{err:#}"
    );

    let empty = TempFile::with_contents("no certificates here\n");
    let err = DeliveryClient::new(ClientConfig {
        extra_root_ca: Some(empty.path().to_owned()),
        ..ClientConfig::new(TIMEOUT)
    })
    .expect_err("empty file");
    let msg = format!("{err:#}");
    assert!(msg.contains(&empty.path().display().to_string()), "{msg}");
    assert!(msg.contains("no certificate"), "{msg}");
}

/// A file removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn with_contents(contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(unique("wf_worker_it"));
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
