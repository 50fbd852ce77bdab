//! Test harness: a real stack per test. Each [`Stack`] gets its own RabbitMQ vhost and
//! Postgres database (so tests run in parallel without seeing each other's queues), an
//! HTTPS receiver on loopback with a fresh rcgen certificate, and the real ingestor and
//! worker started in-process on port 0.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wf_core::config::{Config, Role};

pub fn unique(prefix: &str) -> String {
    let mut rng = rand::rng();
    let s: String = (0..10)
        .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
        .collect();
    format!("{prefix}_{s}")
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn sh(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A RabbitMQ vhost that lives as long as the value.
pub struct Vhost {
    pub name: String,
}

impl Vhost {
    pub fn create() -> Vhost {
        let name = unique("wf_test");
        sh("rabbitmqctl", &["-q", "add_vhost", &name]);
        sh(
            "rabbitmqctl",
            &[
                "-q",
                "set_permissions",
                "-p",
                &name,
                "guest",
                ".*",
                ".*",
                ".*",
            ],
        );
        Vhost { name }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }
}

/// Unbinds `workflows.fanout` from `workflows.events` in `vhost`: every event publish is
/// then unroutable (and, being mandatory, refused) until the topology is declared again,
/// as when the broker lost its bindings. Returns the connection used; close it when done.
pub async fn refuse_events(vhost: &Vhost) -> lapin::Connection {
    let conn = lapin::Connection::connect(&vhost.url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_unbind(
            wf_broker::names::FANOUT_QUEUE.into(),
            wf_broker::names::EVENTS_EXCHANGE.into(),
            "#".into(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    conn
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["-q", "delete_vhost", &self.name])
            .output();
    }
}

/// A Postgres database name that is dropped with the value (the services create it).
pub struct Database {
    pub name: String,
}

impl Database {
    pub fn new() -> Database {
        Database {
            name: unique("wf_test"),
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("receiver got JSON")
    }
}

#[derive(Default)]
struct ReceiverState {
    requests: Vec<Recorded>,
    /// Per path: statuses to answer, in order; then 200.
    plans: HashMap<String, VecDeque<u16>>,
    /// Per path: status to answer once the plan is used up.
    defaults: HashMap<String, u16>,
    /// Per path: how long to wait before answering (see [`Receiver::delay`]).
    delays: HashMap<String, Duration>,
}

/// An HTTPS receiver on loopback (svix's TestReceiver, in spirit): records every request
/// and answers with the status the test chose.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub ca_path: PathBuf,
    state: Arc<Mutex<ReceiverState>>,
    acceptor: tokio_rustls::TlsAcceptor,
    _dir: Arc<TempDir>,
}

pub struct TempDir(pub PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("rcgen");
        let dir = std::env::temp_dir().join(unique("wf_recv"));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ck.cert.pem()).unwrap();
        let cert = ck.cert.der().clone();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(
            rustls_pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        Receiver::serve(acceptor, ca_path, Arc::new(TempDir(dir))).await
    }

    /// Another receiver with the same (trusted) certificate on another port: another
    /// endpoint, as far as the worker is concerned.
    pub async fn another_port(&self) -> Receiver {
        Receiver::serve(
            self.acceptor.clone(),
            self.ca_path.clone(),
            self._dir.clone(),
        )
        .await
    }

    async fn serve(
        acceptor: tokio_rustls::TlsAcceptor,
        ca_path: PathBuf,
        dir: Arc<TempDir>,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let st = state.clone();
        let accept = acceptor.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = accept.clone();
                let st = st.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(st, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            ca_path,
            state,
            acceptor,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{}", self.addr.port(), path)
    }

    /// Answers these statuses on `path`, in order, then `then`.
    pub fn plan(&self, path: &str, statuses: &[u16], then: u16) {
        let mut s = self.state.lock().unwrap();
        s.plans
            .insert(path.to_owned(), statuses.iter().copied().collect());
        s.defaults.insert(path.to_owned(), then);
    }

    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Recorded> {
        eventually(
            &format!("{n} requests on {path}"),
            Duration::from_secs(20),
            || async {
                let r = self.requests(path);
                (r.len() >= n).then_some(r)
            },
        )
        .await
    }
}

async fn handle(st: Arc<Mutex<ReceiverState>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (status, delay) = {
        let mut s = st.lock().unwrap();
        s.requests.push(Recorded {
            path: path.clone(),
            headers,
            body,
        });
        let planned = s.plans.get_mut(&path).and_then(VecDeque::pop_front);
        let status = planned.unwrap_or_else(|| s.defaults.get(&path).copied().unwrap_or(200));
        (status, s.delays.get(&path).copied())
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .body(Full::new(Bytes::from_static(b"ok")))
        .unwrap()
}

/// Options for a stack.
#[derive(Clone)]
pub struct StackOpts {
    pub retry_schedule: &'static str,
    pub delivery_timeout: &'static str,
    pub queue_type: &'static str,
    pub extra: Vec<(&'static str, String)>,
}

impl Default for StackOpts {
    fn default() -> Self {
        StackOpts {
            retry_schedule: "1s,2s",
            delivery_timeout: "3s",
            queue_type: "quorum",
            extra: Vec::new(),
        }
    }
}

/// A running ingestor + worker + receiver on their own vhost and database.
pub struct Stack {
    pub api: SocketAddr,
    pub ingestor_ops: SocketAddr,
    pub worker_ops: SocketAddr,
    pub receiver: Receiver,
    pub opts: StackOpts,
    pub store: wf_store::Store,
    ingestor_stop: CancellationToken,
    worker_stop: CancellationToken,
    worker: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    ingestor: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Dropped last: the services must stop before their vhost and database go.
    pub db: Database,
    pub vhost: Vhost,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(StackOpts::default()).await
    }

    pub fn config(&self, role: Role) -> Config {
        config_for(role, &self.db, &self.vhost, &self.receiver, &self.opts)
    }

    pub async fn start_with(opts: StackOpts) -> Stack {
        let _ = wf_telemetry::init_tracing("warn", wf_core::config::LogFormat::Text);
        let vhost = Vhost::create();
        let db = Database::new();
        let receiver = Receiver::start().await;

        let ingestor_stop = CancellationToken::new();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (api, ingestor_ops) = (l.local_addr().unwrap(), ops.local_addr().unwrap());
        let ingestor = tokio::spawn(wf_ingestor::run(
            config_for(Role::Ingestor, &db, &vhost, &receiver, &opts),
            l,
            ops,
            ingestor_stop.clone(),
        ));
        wait_ready(ingestor_ops, &ingestor).await;
        let store = wf_store::Store::connect(
            &db.url(),
            config_for(Role::Cli, &db, &vhost, &receiver, &opts).secret_key,
            4,
        )
        .await
        .expect("store");

        let mut stack = Stack {
            api,
            ingestor_ops,
            worker_ops: ingestor_ops,
            receiver,
            opts,
            store,
            ingestor_stop,
            worker_stop: CancellationToken::new(),
            worker: None,
            ingestor: Some(ingestor),
            db,
            vhost,
        };
        stack.start_worker().await;
        stack
    }

    /// Starts a worker (after [`stop_worker`](Self::stop_worker), a new one).
    pub async fn start_worker(&mut self) {
        let ops = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.worker_ops = ops.local_addr().unwrap();
        self.worker_stop = CancellationToken::new();
        let handle = tokio::spawn(wf_worker::run(
            self.config(Role::Worker),
            ops,
            self.worker_stop.clone(),
        ));
        wait_ready(self.worker_ops, &handle).await;
        self.worker = Some(handle);
    }

    /// Stops the worker gracefully and waits for it.
    pub async fn stop_worker(&mut self) {
        self.worker_stop.cancel();
        if let Some(h) = self.worker.take() {
            h.await.expect("worker task").expect("worker result");
        }
    }

    /// A fresh API key for a fresh organisation.
    pub async fn new_org(&self) -> (String, String) {
        let org = unique("org");
        let (_, token) = self
            .store
            .create_api_key(&wf_core::ids::OrgId::parse(&org).unwrap(), "test")
            .await
            .unwrap();
        (org, token)
    }

    pub async fn api(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let raw = body.map(|b| b.to_string().into_bytes());
        self.api_raw(method, path, key, raw).await
    }

    pub async fn api_raw(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        http_request(self.api, method, path, key, body).await
    }

    /// Registers a webhook pointing at `path` on the receiver; returns (id, secret).
    pub async fn webhook(&self, key: &str, path: &str, events: &[&str]) -> (String, String) {
        let (status, body) = self
            .api(
                "POST",
                "/api/v1/webhooks",
                Some(key),
                Some(serde_json::json!({"name": "test hook", "url": self.receiver.url(path), "events": events})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["data"]["id"].as_str().unwrap().to_owned(),
            body["data"]["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// A publisher straight onto this stack's broker (for AMQP producers).
    pub async fn broker(&self) -> wf_broker::Broker {
        wf_broker::Broker::connect(&self.vhost.url())
            .await
            .expect("broker")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.worker_stop.cancel();
        self.ingestor_stop.cancel();
        if let Some(h) = self.worker.take() {
            h.abort();
        }
        if let Some(h) = self.ingestor.take() {
            h.abort();
        }
    }
}

pub fn config_for(
    role: Role,
    db: &Database,
    vhost: &Vhost,
    receiver: &Receiver,
    opts: &StackOpts,
) -> Config {
    let mut vars: HashMap<&str, String> = HashMap::from([
        ("WF_DATABASE_URL", db.url()),
        ("WF_AMQP_URL", vhost.url()),
        ("WF_HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("WF_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ("WF_ALLOWED_TARGET_CIDRS", "127.0.0.0/8".to_owned()),
        ("WF_EXTRA_ROOT_CA", receiver.ca_path.display().to_string()),
        ("WF_RETRY_SCHEDULE", opts.retry_schedule.to_owned()),
        ("WF_DELIVERY_TIMEOUT", opts.delivery_timeout.to_owned()),
        ("WF_QUEUE_TYPE", opts.queue_type.to_owned()),
        ("WF_WORKER_CONCURRENCY", "32".to_owned()),
        ("WF_SHUTDOWN_GRACE", "5s".to_owned()),
    ]);
    for (k, v) in &opts.extra {
        vars.insert(k, v.clone());
    }
    Config::from_lookup(role, |k| vars.get(k).cloned()).expect("test config")
}

async fn wait_ready(ops: SocketAddr, task: &tokio::task::JoinHandle<anyhow::Result<()>>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if task.is_finished() {
            panic!("service exited during start-up (see log above)");
        }
        let (status, _) = http_request(ops, "GET", "/readyz", None, None).await;
        if status == 200 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "service at {ops} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal HTTP/1.1 client for the API and ops ports (plain HTTP on loopback).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return (0, Value::Null);
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
    else {
        return (0, Value::Null);
    };
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    let Ok(resp) = sender.send_request(req).await else {
        return (0, Value::Null);
    };
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// The seed's Python verification, transcribed: `"sha256=" + hmac(secret.encode(), body)`,
/// compared in full (the Node snippet's timingSafeEqual also needs equal lengths).
pub fn seed_verify(body: &[u8], secret: &str, signature: &str) -> bool {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    expected.len() == signature.len() && expected == signature
}

/// The Standard Webhooks verification: any of the space-separated `v1,` signatures.
pub fn standard_verify(r: &Recorded, secret: &str) -> bool {
    use base64::Engine;
    use hmac::{Hmac, KeyInit, Mac};
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.trim_start_matches("whsec_")).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(
        format!(
            "{}.{}.",
            r.header("webhook-id"),
            r.header("webhook-timestamp")
        )
        .as_bytes(),
    );
    mac.update(&r.body);
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    r.header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

impl Receiver {
    /// Answers every request on `path` only after `delay` (a slow subscriber). The request
    /// is recorded when it arrives.
    pub fn delay(&self, path: &str, delay: Duration) {
        self.state
            .lock()
            .unwrap()
            .delays
            .insert(path.to_owned(), delay);
    }
}
