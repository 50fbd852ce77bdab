//! A small HTTPS receiver on `127.0.0.1:0` for client tests: a fresh rcgen leaf
//! certificate (IP SAN 127.0.0.1) per server, behaviour chosen by request path, and a
//! record of connections and requests so tests can assert what reached the wire.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Size of the `/big` response body.
pub const BIG_BODY: usize = 200 * 1024;

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// PEM of the server's self-signed leaf certificate (usable as a trust root).
    pub cert_pem: String,
    accepts: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server. Paths:
    /// - `/ok` → 200 `ok`; `/status/N` → status N;
    /// - `/redirect` → 302 to `/ok` on the same server;
    /// - `/slow` → never answers; `/slow-body` → 200 headers, then a body that never ends;
    /// - `/big` → 200 with [`BIG_BODY`] bytes;
    /// - `/429` → 429 `Retry-After: 7`; `/503-date` → 503 with an HTTP-date 120 s ahead.
    pub async fn start() -> TestServer {
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("rcgen certificate");
        let cert_der = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key)
        .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let accepts = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (accepts, seen) = (accepts.clone(), seen.clone());
            async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    accepts.fetch_add(1, Ordering::SeqCst);
                    let (acceptor, seen) = (acceptor.clone(), seen.clone());
                    tokio::spawn(async move {
                        // Handshake failures are expected in the untrusted-cert test.
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = service_fn(move |req| handle(req, addr, seen.clone()));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            }
        });
        TestServer {
            addr,
            cert_pem: certified.cert.pem(),
            accepts,
            seen,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.addr, path)
    }

    /// TCP connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Requests that reached a handler so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn response(status: u16, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).expect("status");
    r
}

async fn handle(
    req: Request<Incoming>,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    seen.lock().expect("lock").push(Seen {
        path: path.clone(),
        headers,
        body,
    });

    let resp = match path.as_str() {
        "/ok" => response(200, full("ok")),
        "/redirect" => {
            let mut r = response(302, full(""));
            let location = format!("https://{addr}/ok");
            r.headers_mut()
                .insert("location", location.parse().expect("location"));
            r
        }
        "/slow" => std::future::pending().await,
        "/slow-body" => {
            let never = futures::stream::pending::<Result<Frame<Bytes>, Infallible>>();
            response(200, StreamBody::new(never).boxed())
        }
        "/big" => response(200, full(vec![b'x'; BIG_BODY])),
        "/429" => {
            let mut r = response(429, full("slow down"));
            r.headers_mut()
                .insert("retry-after", "7".parse().expect("header"));
            r
        }
        "/503-date" => {
            let at = chrono::Utc::now() + chrono::Duration::seconds(120);
            let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            let mut r = response(503, full("maintenance"));
            r.headers_mut()
                .insert("retry-after", date.parse().expect("header"));
            r
        }
        p => match p.strip_prefix("/status/").and_then(|s| s.parse().ok()) {
            Some(code) => response(code, full(format!("status {code}"))),
            None => response(404, full("no such path")),
        },
    };
    Ok(resp)
}

/// A file removed on drop, for `extra_root_ca`.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn with_contents(contents: &str) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "wf-worker-it-{}-{}.pem",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
