//! An HTTPS subscriber on loopback (svix's `TestReceiver`, in spirit): it records the
//! method, path, headers and body of every request, and answers what the test chose for
//! the path — a plan of statuses then a default reply, after a delay, or never.
//!
//! Its certificate is a fresh rcgen leaf (not a CA: rustls refuses a CA as an end entity)
//! with SANs for `127.0.0.1` and `localhost`; the PEM, in a file, is what the worker gets
//! as `WF_EXTRA_ROOT_CA`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::{eventually, unique};

/// How long [`Receiver::wait_for`] waits.
const WAIT: Duration = Duration::from_secs(20);

/// One request the receiver got, recorded when it arrived (before any delay).
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    /// The header's value, `""` when it is missing (or not visible ASCII).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// When it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the receiver got a body that is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// What the receiver answers on a path once its plan of statuses is used up.
#[derive(Clone, Debug)]
pub struct Reply {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: ReplyBody,
}

#[derive(Clone, Debug)]
enum ReplyBody {
    Full(Bytes),
    /// The headers, then a body that never ends.
    Endless,
}

impl Reply {
    /// `code` with the body `ok`.
    ///
    /// # Panics
    /// When `code` is not an HTTP status code.
    pub fn status(code: u16) -> Reply {
        Reply {
            status: StatusCode::from_u16(code)
                .unwrap_or_else(|_| panic!("{code} is not an HTTP status")),
            headers: Vec::new(),
            body: ReplyBody::Full(Bytes::from_static(b"ok")),
        }
    }

    /// Adds a response header.
    ///
    /// # Panics
    /// When the name or value is not valid in HTTP.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|_| panic!("bad header name {name:?}"));
        let value =
            HeaderValue::from_str(value).unwrap_or_else(|_| panic!("bad header value {value:?}"));
        self.headers.push((name, value));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = ReplyBody::Full(body.into());
        self
    }

    /// Sends the status and headers, then a body that never ends.
    pub fn endless_body(mut self) -> Reply {
        self.body = ReplyBody::Endless;
        self
    }
}

/// How one path answers.
struct Route {
    /// Statuses to answer first, in order (body `ok`).
    plan: VecDeque<u16>,
    /// Then this.
    reply: Reply,
    /// Waited before answering.
    delay: Option<Duration>,
    /// Never answer at all.
    hang: bool,
}

impl Default for Route {
    fn default() -> Route {
        Route {
            plan: VecDeque::new(),
            reply: Reply::status(200),
            delay: None,
            hang: false,
        }
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    routes: HashMap<String, Route>,
    accepts: usize,
}

/// The certificate's PEM, in a directory removed once no receiver uses it.
struct CertFile {
    dir: PathBuf,
    path: PathBuf,
    pem: String,
}

impl Drop for CertFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running receiver; it stops accepting connections when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    acceptor: TlsAcceptor,
    cert: Arc<CertFile>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Listens on `127.0.0.1:0` with a fresh certificate.
    ///
    /// # Panics
    /// When the certificate cannot be made or written, or nothing can be bound.
    pub async fn start() -> Receiver {
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("rcgen certificate");
        let dir = std::env::temp_dir().join(unique("wf_receiver"));
        std::fs::create_dir_all(&dir).expect("temporary directory for the certificate");
        let path = dir.join("cert.pem");
        let pem = certified.cert.pem();
        std::fs::write(&path, &pem).expect("write the certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("server certificate");
        let cert = Arc::new(CertFile { dir, path, pem });
        Receiver::serve(TlsAcceptor::from(Arc::new(tls)), cert).await
    }

    /// Another receiver with the same certificate (trusted wherever this one is) on
    /// another port: another endpoint, as far as the worker is concerned.
    pub async fn another_port(&self) -> Receiver {
        Receiver::serve(self.acceptor.clone(), self.cert.clone()).await
    }

    async fn serve(acceptor: TlsAcceptor, cert: Arc<CertFile>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(accept_loop(listener, acceptor.clone(), state.clone()));
        Receiver {
            addr,
            state,
            acceptor,
            cert,
            task,
        }
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// The certificate, PEM: trust it as a root to reach this receiver.
    pub fn ca_pem(&self) -> &str {
        &self.cert.pem
    }

    /// A file holding [`ca_pem`](Self::ca_pem), for `WF_EXTRA_ROOT_CA`; it exists as long
    /// as the receiver (or another port of it) does.
    pub fn ca_path(&self) -> &Path {
        &self.cert.path
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Answers these statuses on `path`, in order, then `then` every time after.
    pub fn plan(&self, path: &str, statuses: &[u16], then: u16) {
        let mut state = self.state();
        let route = state.routes.entry(path.to_owned()).or_default();
        route.plan = statuses.iter().copied().collect();
        route.reply = Reply::status(then);
    }

    /// Answers `reply` on `path` (after what is left of its plan).
    pub fn respond(&self, path: &str, reply: Reply) {
        self.state()
            .routes
            .entry(path.to_owned())
            .or_default()
            .reply = reply;
    }

    /// Answers every request on `path` only after `delay` (a slow subscriber).
    pub fn delay(&self, path: &str, delay: Duration) {
        self.state()
            .routes
            .entry(path.to_owned())
            .or_default()
            .delay = Some(delay);
    }

    /// Never answers on `path` (the connection stays open).
    pub fn hang(&self, path: &str) {
        self.state().routes.entry(path.to_owned()).or_default().hang = true;
    }

    /// The requests on `path` so far, in arrival order.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Every request so far, in arrival order.
    pub fn all_requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// TCP connections accepted so far (TLS handshakes that failed included).
    pub fn accepts(&self) -> usize {
        self.state().accepts
    }

    /// Waits (20 s at most) until `path` got at least `n` requests; returns them all.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Recorded> {
        eventually(&format!("{n} requests on {path}"), WAIT, || async {
            let got = self.requests(path);
            if got.len() >= n {
                Ok(got)
            } else {
                Err(format!("{} so far", got.len()))
            }
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A poisoned lock only means another test thread panicked; the state is still usable.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<Mutex<State>>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors, say: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        lock(&state).accepts += 1;
        let (acceptor, state) = (acceptor.clone(), state.clone());
        tokio::spawn(async move {
            // A failed handshake is what a test of an untrusted certificate expects.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| answer(req, state.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (reply, delay, hang) = {
        let mut state = lock(&state);
        state.requests.push(Recorded {
            method,
            path: path.clone(),
            headers,
            body,
            at: std::time::Instant::now(),
        });
        let route = state.routes.entry(path).or_default();
        let reply = match route.plan.pop_front() {
            Some(status) => Reply::status(status),
            None => route.reply.clone(),
        };
        (reply, route.delay, route.hang)
    };
    if hang {
        std::future::pending::<()>().await;
    }
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let body = match reply.body {
        ReplyBody::Full(bytes) => Full::new(bytes).boxed(),
        ReplyBody::Endless => {
            StreamBody::new(futures::stream::pending::<Result<Frame<Bytes>, Infallible>>()).boxed()
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = reply.status;
    for (name, value) in reply.headers {
        response.headers_mut().append(name, value);
    }
    Ok(response)
}
