//! Test harness: a real stack per test. Each [`Stack`] gets its own RabbitMQ vhost and
//! Postgres database from wf-testkit (so tests run in parallel without seeing each other's
//! queues), the kit's HTTPS receiver on loopback with a fresh certificate, and the real
//! ingestor and worker started in-process on port 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wf_core::config::{Config, Role};
use wf_testkit::{eventually, unique, Database, Receiver, Vhost};

/// The `WF_*` settings every process of a test deployment shares: its database, its vhost,
/// and a receiver on loopback that it may reach (its CIDR allowed, its certificate
/// trusted).
pub fn base_env(db: &Database, vhost: &Vhost, receiver: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("WF_DATABASE_URL", db.url()),
        ("WF_AMQP_URL", vhost.url()),
        ("WF_ALLOWED_TARGET_CIDRS", "127.0.0.0/8".to_owned()),
        ("WF_EXTRA_ROOT_CA", receiver.ca_path().display().to_string()),
    ]
}

/// Waits (60 s at most) until `GET /readyz` on `ops` answers 200; panics as soon as
/// `exited` reports that the service ended instead (with what it says about it).
pub async fn wait_ready(ops: SocketAddr, what: &str, mut exited: impl FnMut() -> Option<String>) {
    eventually(
        &format!("{what} ready on {ops}"),
        Duration::from_secs(60),
        || {
            if let Some(why) = exited() {
                panic!("{what} exited during start-up: {why}");
            }
            async move { http_request(ops, "GET", "/readyz", None, None).await.0 == 200 }
        },
    )
    .await;
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
        // Not created here: the services create their database when it is missing.
        let db = Database::reserve();
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
        wait_ready(ingestor_ops, "the ingestor", || {
            ingestor
                .is_finished()
                .then(|| "see the log above".to_owned())
        })
        .await;
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
        wait_ready(self.worker_ops, "the worker", || {
            handle.is_finished().then(|| "see the log above".to_owned())
        })
        .await;
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
        create_webhook(self, key, &self.receiver.url(path), events).await
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

/// Publishes `event` with `data` over the API, and checks it was accepted.
pub async fn post_event(stack: &Stack, key: &str, event: &str, data: Value) {
    let (s, b) = stack
        .api(
            "POST",
            "/api/v1/events",
            Some(key),
            Some(serde_json::json!({"event": event, "data": data})),
        )
        .await;
    assert_eq!(s, 202, "{b}");
}

/// Polls the delivery log (30 s at most) until `n` deliveries of `webhook` have `status`;
/// returns them.
pub async fn wait_status(
    stack: &Stack,
    key: &str,
    webhook: &str,
    status: &str,
    n: usize,
) -> Vec<Value> {
    eventually(
        &format!("{n} deliveries of {webhook} with status {status}"),
        Duration::from_secs(30),
        || async move {
            let (s, b) = stack
                .api(
                    "GET",
                    &format!("/api/v1/webhooks/{webhook}/deliveries?status={status}"),
                    Some(key),
                    None,
                )
                .await;
            assert_eq!(s, 200, "{b}");
            let items = b["data"].as_array().cloned().unwrap_or_default();
            if items.len() >= n {
                Ok(items)
            } else {
                Err(format!("{} so far", items.len()))
            }
        },
    )
    .await
}

/// Registers a webhook named `test hook` for `events` at `url`; returns (id, secret).
pub async fn create_webhook(
    stack: &Stack,
    key: &str,
    url: &str,
    events: &[&str],
) -> (String, String) {
    let (status, body) = stack
        .api(
            "POST",
            "/api/v1/webhooks",
            Some(key),
            Some(serde_json::json!({"name": "test hook", "url": url, "events": events})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["data"]["id"].as_str().unwrap().to_owned(),
        body["data"]["secret"].as_str().unwrap().to_owned(),
    )
}

pub fn config_for(
    role: Role,
    db: &Database,
    vhost: &Vhost,
    receiver: &Receiver,
    opts: &StackOpts,
) -> Config {
    let mut vars: HashMap<&str, String> = base_env(db, vhost, receiver).into_iter().collect();
    vars.extend([
        ("WF_HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("WF_METRICS_ADDR", "127.0.0.1:0".to_owned()),
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

/// A request to the API or an ops port: the status and the body as JSON (or as a JSON
/// string of its text); `(0, null)` when nothing answers.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = Vec::new();
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    match wf_testkit::http::request(addr, method, path, &headers, body).await {
        Ok(r) => (r.status, r.json_or_text()),
        Err(_) => (0, Value::Null),
    }
}

/// An API error: this status, this `error.code`, and a message.
pub fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}
