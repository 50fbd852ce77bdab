use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use wf_testkit::{Receiver, Reply};

/// An HTTP/1.1 connection to `r` over TLS that trusts only `r`'s certificate, checked
/// against `server_name`.
async fn connect(r: &Receiver, server_name: &str) -> SendRequest<Full<Bytes>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(r.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(server_name.to_owned()).unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS as {server_name}: {e}"));
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn post(path: &str, body: &'static str) -> http::Request<Full<Bytes>> {
    http::Request::post(path)
        .header("host", "127.0.0.1")
        .header("x-test", "yes")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn send(c: &mut SendRequest<Full<Bytes>>, path: &str) -> (u16, http::HeaderMap, Bytes) {
    let resp = c.send_request(post(path, "{\"n\":1}")).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status.as_u16(),
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn answers_the_plan_then_the_reply_and_records_everything() {
    let r = Receiver::start().await;
    r.plan("/p", &[500, 410], 204);
    r.respond(
        "/custom",
        Reply::status(429)
            .header("retry-after", "7")
            .body("slow down"),
    );
    // Both SANs: the IP literal and `localhost`.
    let mut c = connect(&r, "127.0.0.1").await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(&mut c, "/p").await.0);
    }
    assert_eq!(statuses, [500, 410, 204, 204]);
    let mut c = connect(&r, "localhost").await;
    let (status, headers, body) = send(&mut c, "/custom").await;
    assert_eq!((status, &body[..]), (429, &b"slow down"[..]));
    assert_eq!(headers["retry-after"], "7");
    let (status, _, body) = send(&mut c, "/unplanned").await;
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));

    let got = r.wait_for("/p", 4).await;
    assert_eq!(got.len(), 4);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].header("x-test"), "yes");
    assert_eq!(got[0].header("missing"), "");
    assert_eq!(got[0].json()["n"], 1);
    assert_eq!(r.requests("/custom").len(), 1);
    assert_eq!(r.all_requests().len(), 6);
    assert_eq!(r.accepts(), 2);
}

#[tokio::test]
async fn delays_hangs_and_endless_bodies() {
    let r = Receiver::start().await;
    r.delay("/slow", Duration::from_millis(50));
    r.hang("/never");
    r.respond("/endless", Reply::status(200).endless_body());
    let mut c = connect(&r, "127.0.0.1").await;
    assert_eq!(send(&mut c, "/slow").await.0, 200);

    let mut c = connect(&r, "127.0.0.1").await;
    let never = tokio::time::timeout(
        Duration::from_millis(300),
        c.send_request(post("/never", "")),
    );
    assert!(never.await.is_err(), "a hanging path answered");
    assert_eq!(r.requests("/never").len(), 1, "recorded when it arrived");

    let mut c = connect(&r, "127.0.0.1").await;
    let resp = c.send_request(post("/endless", "")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(Duration::from_millis(300), resp.into_body().collect());
    assert!(body.await.is_err(), "an endless body ended");
}

#[tokio::test]
async fn another_port_is_another_endpoint_with_the_same_certificate() {
    let r = Receiver::start().await;
    let other = r.another_port().await;
    assert_ne!(r.addr, other.addr);
    assert_eq!(r.ca_pem(), other.ca_pem());
    assert_eq!(
        r.url("/x"),
        format!("https://127.0.0.1:{}/x", r.addr.port())
    );
    let mut c = connect(&other, "127.0.0.1").await;
    send(&mut c, "/x").await;
    assert_eq!(other.requests("/x").len(), 1);
    assert!(r.requests("/x").is_empty());

    let path = r.ca_path().to_owned();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), r.ca_pem());
    drop(r);
    assert!(path.is_file(), "still used by the other port");
    drop(other);
    assert!(
        !path.exists(),
        "the certificate file outlived its receivers"
    );
}
