//! `wfctl listen`, the binary: HTTPS with the certificate it writes, one line per request
//! with the event, delivery id, attempt and the verdict on both signatures, the status asked
//! for, and arguments checked.
//!
//! Requests are signed here from the public description of the two schemes (not with the
//! code the receiver verifies with), so a test checks the contract.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_c2VjcmV0LW9mLWFub3RoZXItd2ViaG9vaw==";
/// Bound on waiting for the receiver, so a broken one fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

/// A scratch directory, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wfctl-listen-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `wfctl listen` and its stdout, line by line.
struct Listen {
    _child: Child,
    port: u16,
    cert: PathBuf,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Listen {
    async fn start(dir: &Path, args: &[&str]) -> Listen {
        let cert = dir.join("listen-cert.pem");
        let mut child = Command::new(env!("CARGO_BIN_EXE_wfctl"))
            .args(["listen", "--addr", "127.0.0.1:0", "--cert-out"])
            .arg(&cert)
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting wfctl listen");
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = stderr.next_line().await.unwrap() {
                if let Some(rest) = line.split("listening on https://127.0.0.1:").nth(1) {
                    return rest.split('/').next().unwrap().parse::<u16>().unwrap();
                }
            }
            panic!("wfctl listen ended without saying where it listens");
        })
        .await
        .expect("wfctl listen started");
        // Keep draining stderr (TLS errors would otherwise fill the pipe).
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        Listen {
            port,
            cert,
            stdout: BufReader::new(child.stdout.take().unwrap()).lines(),
            _child: child,
        }
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(PATIENCE, self.stdout.next_line())
            .await
            .expect("a line from wfctl listen")
            .unwrap()
            .expect("wfctl listen still running")
    }

    /// POSTs `body` with `headers` over HTTPS, trusting only the certificate the receiver
    /// wrote, to the host name `host`; returns the status.
    async fn post(&self, host: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
        let pem = std::fs::read(&self.cert).expect("the certificate file");
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_owned()).unwrap(),
        };
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))
                .await
                .unwrap();
            let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect(server_name, tcp)
                .await
                .expect("TLS with the written certificate");
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut req = http::Request::post("/webhooks/workflows")
                .header("host", host)
                .header("content-type", "application/json");
            for (name, value) in headers {
                req = req.header(*name, value);
            }
            let resp = sender
                .send_request(req.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
                .await
                .unwrap();
            resp.status().as_u16()
        };
        tokio::time::timeout(PATIENCE, exchange)
            .await
            .expect("an answer")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `X-WorkFlows-Signature`: `sha256=` + hex HMAC-SHA256 of the body keyed with the whole
/// secret string.
fn workflows_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac(secret.as_bytes(), &[body])))
}

/// `webhook-signature`: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` keyed with
/// the base64-decoded part of the secret after `whsec_`.
fn standard_signature(secret: &str, id: &str, ts: &str, body: &[u8]) -> String {
    let key = B64.decode(secret.trim_start_matches("whsec_")).unwrap();
    let mac = hmac(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", B64.encode(mac))
}

/// The headers of a delivery of `body`, signed with `secret`.
fn delivery(
    delivery: &str,
    attempt: u32,
    secret: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let ts = "1779192300";
    vec![
        ("x-workflows-event", "alert.created".to_owned()),
        ("x-workflows-delivery", delivery.to_owned()),
        ("x-workflows-attempt", attempt.to_string()),
        ("x-workflows-signature", workflows_signature(secret, body)),
        ("webhook-id", delivery.to_owned()),
        ("webhook-timestamp", ts.to_owned()),
        (
            "webhook-signature",
            standard_signature(secret, delivery, ts, body),
        ),
    ]
}

fn set(headers: &mut [(&'static str, String)], name: &str, value: String) {
    headers.iter_mut().find(|(n, _)| *n == name).unwrap().1 = value;
}

/// Strips the leading time: `<event> <delivery> attempt=<n> signatures=<verdict> -> <status>`.
fn fields(line: &str) -> &str {
    let (time, rest) = line.split_once(' ').unwrap();
    assert!(
        time.len() == 12 && time.as_bytes()[2] == b':' && time.contains('.'),
        "{line}"
    );
    rest
}

#[tokio::test]
async fn each_request_is_printed_with_its_signature_verdict_and_answered_as_asked() {
    let dir = Scratch::new();
    let mut listen = Listen::start(
        &dir.0,
        &["--secret", SECRET, "--status", "202", "--print-body"],
    )
    .await;
    let body = br#"{"event":"alert.created","orgId":"org_abc123","timestamp":"2026-05-19T12:05:00.000Z","data":{"id":"alt_xyz789"}}"#;

    // Both signatures right, over the IP and over the host name of the certificate.
    for (host, id) in [("127.0.0.1", "dlv_good"), ("localhost", "dlv_byname")] {
        let status = listen
            .post(host, &delivery(id, 1, SECRET, body), body)
            .await;
        assert_eq!(status, 202);
        assert_eq!(
            fields(&listen.line().await),
            format!("alert.created {id} attempt=1 signatures=verified -> 202")
        );
        assert_eq!(listen.line().await.as_bytes(), body, "--print-body");
    }

    // During a rotation `webhook-signature` holds one signature per secret.
    let mut rotating = delivery("dlv_rotating", 3, SECRET, body);
    let old = standard_signature(OTHER_SECRET, "dlv_rotating", "1779192300", body);
    let new = standard_signature(SECRET, "dlv_rotating", "1779192300", body);
    set(&mut rotating, "webhook-signature", format!("{old} {new}"));
    assert_eq!(listen.post("127.0.0.1", &rotating, body).await, 202);
    assert_eq!(
        fields(&listen.line().await),
        "alert.created dlv_rotating attempt=3 signatures=verified -> 202"
    );
    listen.line().await;

    // One signature wrong: the line says which.
    let mut one = delivery("dlv_one", 2, SECRET, body);
    set(
        &mut one,
        "x-workflows-signature",
        workflows_signature(OTHER_SECRET, body),
    );
    assert_eq!(listen.post("127.0.0.1", &one, body).await, 202);
    assert_eq!(
        fields(&listen.line().await),
        "alert.created dlv_one attempt=2 signatures=INVALID(X-WorkFlows-Signature) -> 202"
    );
    listen.line().await;
    let mut other = delivery("dlv_other", 2, SECRET, body);
    set(&mut other, "webhook-timestamp", "1779192301".to_owned());
    assert_eq!(listen.post("127.0.0.1", &other, body).await, 202);
    assert_eq!(
        fields(&listen.line().await),
        "alert.created dlv_other attempt=2 signatures=INVALID(webhook-signature) -> 202"
    );
    listen.line().await;

    // A body changed on the way, or signed with another secret: both wrong.
    let tampered = br#"{"event":"alert.created","orgId":"org_evil"}"#;
    assert_eq!(
        listen
            .post(
                "127.0.0.1",
                &delivery("dlv_tampered", 1, SECRET, body),
                tampered
            )
            .await,
        202
    );
    assert_eq!(
        fields(&listen.line().await),
        "alert.created dlv_tampered attempt=1 signatures=INVALID(X-WorkFlows-Signature,webhook-signature) -> 202"
    );
    assert_eq!(listen.line().await.as_bytes(), tampered);
    assert_eq!(
        listen
            .post(
                "127.0.0.1",
                &delivery("dlv_theirs", 1, OTHER_SECRET, body),
                body
            )
            .await,
        202
    );
    assert!(fields(&listen.line().await)
        .ends_with("signatures=INVALID(X-WorkFlows-Signature,webhook-signature) -> 202"));
    listen.line().await;

    // Not a delivery at all: still a line, with `-` for what is missing.
    assert_eq!(listen.post("127.0.0.1", &[], b"hello").await, 202);
    assert_eq!(
        fields(&listen.line().await),
        "- - attempt=- signatures=INVALID(X-WorkFlows-Signature,webhook-signature) -> 202"
    );
    assert_eq!(listen.line().await, "hello");
}

/// With `--secret-file`, the secret is read for each request: it can be written after the
/// receiver started (as `make run` does once the webhook exists) or replaced.
#[tokio::test]
async fn the_secret_file_is_read_for_each_request() {
    let dir = Scratch::new();
    let secret_file = dir.0.join("secret");
    let mut listen = Listen::start(
        &dir.0,
        &[
            "--secret-file",
            secret_file.to_str().unwrap(),
            "--status",
            "500",
        ],
    )
    .await;
    let body = br#"{"event":"alert.created"}"#;

    assert_eq!(
        listen
            .post("127.0.0.1", &delivery("dlv_a", 1, SECRET, body), body)
            .await,
        500
    );
    let line = listen.line().await;
    assert!(
        fields(&line)
            .starts_with("alert.created dlv_a attempt=1 signatures=unchecked(secret file "),
        "{line}"
    );
    assert!(line.ends_with(" -> 500"), "{line}");

    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    assert_eq!(
        listen
            .post("127.0.0.1", &delivery("dlv_b", 2, SECRET, body), body)
            .await,
        500
    );
    assert_eq!(
        fields(&listen.line().await),
        "alert.created dlv_b attempt=2 signatures=verified -> 500"
    );

    std::fs::write(&secret_file, OTHER_SECRET).unwrap();
    assert_eq!(
        listen
            .post("127.0.0.1", &delivery("dlv_c", 3, SECRET, body), body)
            .await,
        500
    );
    assert_eq!(
        fields(&listen.line().await),
        "alert.created dlv_c attempt=3 signatures=INVALID(X-WorkFlows-Signature,webhook-signature) -> 500"
    );

    std::fs::write(&secret_file, "not a secret").unwrap();
    assert_eq!(
        listen
            .post("127.0.0.1", &delivery("dlv_d", 4, SECRET, body), body)
            .await,
        500
    );
    let line = listen.line().await;
    assert!(line.contains("signatures=unchecked(secret file "), "{line}");
}

#[tokio::test]
async fn without_a_secret_nothing_is_checked() {
    let dir = Scratch::new();
    let mut listen = Listen::start(&dir.0, &[]).await;
    let body = b"{}";
    assert_eq!(
        listen
            .post("127.0.0.1", &delivery("dlv_x", 1, SECRET, body), body)
            .await,
        200
    );
    assert_eq!(
        fields(&listen.line().await),
        "alert.created dlv_x attempt=1 signatures=unchecked(no secret) -> 200"
    );
}

#[tokio::test]
async fn bad_arguments_are_refused_with_status_2() {
    let cases: &[&[&str]] = &[
        &["--secret", "sk_not_a_webhook_secret"],
        &["--secret", "whsec_!!!"],
        &["--status", "99"],
        &["--status", "600"],
        &["--status", "ok"],
        &["--addr", "localhost:8443"],
        &["--secret", SECRET, "--secret-file", "/tmp/x"],
        &["--print-body=yes"],
        &["extra"],
    ];
    for args in cases {
        let out = tokio::time::timeout(
            PATIENCE,
            Command::new(env!("CARGO_BIN_EXE_wfctl"))
                .arg("listen")
                .args(*args)
                .env_clear()
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .expect("exits")
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
