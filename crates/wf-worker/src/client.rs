//! The delivery HTTP client: the only way this system makes outbound HTTP requests.
//!
//! Why a dedicated client rather than a general-purpose one:
//! - **SSRF.** Webhook URLs come from customers. A public name can resolve to
//!   `169.254.169.254` or `10.0.0.5` (DNS rebinding), so the address policy of
//!   [`wf_core::url_policy`] is enforced *where the connection is made*: the
//!   [`SsrfResolver`] inside the connector drops every forbidden address it resolves, so
//!   there is no gap between check and use. hyper-util's connector never calls the
//!   resolver for IP-literal hosts, so [`DeliveryClient::post`] checks those itself.
//! - **No redirects.** A redirect could point anywhere, including at internal hosts; a
//!   `3xx` is simply a failed attempt ([`AttemptKind::Status3xx`]).
//! - **Bounded everything.** One timeout covers connect, TLS, headers and body; at most
//!   64 KiB of a response body is read, so a hostile receiver cannot stall a worker or
//!   exhaust its memory.
//! - **HTTPS only**, with rustls on the `ring` provider, the public webpki roots plus
//!   optional extra roots (`WF_EXTRA_ROOT_CA`).
//! - **Keep-alive, bounded.** One pool shared by every clone, because most traffic goes
//!   to a small set of busy endpoints and TLS handshakes dominate the cost of small POSTs.
//!   The pool ([`crate::pool`]) is bounded per host *and* over all hosts, so a worker
//!   talking to ten thousand endpoints keeps a configured number of idle connections,
//!   not one per endpoint. (hyper-util's pool bounds idle connections only per host,
//!   which is why this client drives hyper's HTTP/1 connections itself.)

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use http::header::{CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER, USER_AGENT};
use http::uri::{PathAndQuery, Uri};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tower::ServiceExt;
use wf_core::url_policy::{ip_permitted, AllowedCidrs, WebhookUrl};

use crate::pool::{IdlePool, Limits};

/// At most this much of a response body is read. Reading (rather than dropping) the
/// body lets the connection go back to the keep-alive pool; the cap stops a receiver
/// that streams forever from holding a worker until the timeout.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Length of the response excerpt kept for the delivery log.
pub const SNIPPET_LEN: usize = 1024;

/// How long an idle keep-alive connection is kept. Most load balancers close idle
/// connections after 60–120 s; reusing one they already closed costs a failed write.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// What the client needs to know; built from the worker's configuration.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Whole-attempt deadline: connect + TLS + response headers + body
    /// (`WF_DELIVERY_TIMEOUT`).
    pub timeout: Duration,
    /// Private ranges that may nevertheless be connected to (`WF_ALLOWED_TARGET_CIDRS`).
    pub allowed: AllowedCidrs,
    /// PEM file of extra trusted roots (`WF_EXTRA_ROOT_CA`), for receivers with a
    /// private CA and for tests.
    pub extra_root_ca: Option<PathBuf>,
    /// Sent as `User-Agent` unless the caller's headers carry one.
    pub user_agent: String,
    /// Idle keep-alive connections kept per host.
    pub max_idle_per_host: usize,
    /// Idle keep-alive connections kept over all hosts (`WF_WORKER_IDLE_CONNECTIONS`);
    /// the least recently used is closed first.
    pub max_idle_total: usize,
}

impl ClientConfig {
    /// Production defaults: 10 s timeout, nothing exempt, webpki roots only,
    /// `WorkFlows-Webhooks/<version>`.
    pub fn new(timeout: Duration) -> Self {
        ClientConfig {
            timeout,
            allowed: AllowedCidrs::default(),
            extra_root_ca: None,
            user_agent: format!("WorkFlows-Webhooks/{}", wf_core::VERSION),
            max_idle_per_host: 32,
            max_idle_total: 1024,
        }
    }
}

/// How one delivery attempt ended. The label is the `result` of
/// `wf_delivery_attempts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttemptKind {
    /// A `2xx` status.
    Success,
    /// A `3xx` status: redirects are never followed (they could lead to internal hosts).
    Status3xx,
    /// A `4xx` status (`410 Gone` additionally disables the webhook; the caller checks).
    Status4xx,
    /// A `5xx` status.
    Status5xx,
    /// Any other status (`1xx` that reached us, `600..=999`): a receiver bug.
    OtherStatus,
    /// No complete response within the timeout.
    Timeout,
    /// DNS failure, refused/reset connection, or a broken HTTP exchange.
    ConnectError,
    /// TLS handshake or certificate failure.
    TlsError,
    /// The target address is private/internal and not allowed; nothing was sent.
    Blocked,
}

impl AttemptKind {
    /// Classifies an HTTP status.
    pub fn for_status(status: u16) -> AttemptKind {
        match status {
            200..=299 => AttemptKind::Success,
            300..=399 => AttemptKind::Status3xx,
            400..=499 => AttemptKind::Status4xx,
            500..=599 => AttemptKind::Status5xx,
            _ => AttemptKind::OtherStatus,
        }
    }

    /// The metric label. [`AttemptKind::OtherStatus`] is counted as `4xx`: the documented
    /// label set has no slot for it, and like a `4xx` it means the receiver answered
    /// but not with anything we understand as success — it is not a server outage,
    /// which is what `5xx` dashboards and alerts are about.
    pub fn label(self) -> &'static str {
        match self {
            AttemptKind::Success => "2xx",
            AttemptKind::Status3xx => "3xx",
            AttemptKind::Status4xx | AttemptKind::OtherStatus => "4xx",
            AttemptKind::Status5xx => "5xx",
            AttemptKind::Timeout => "timeout",
            AttemptKind::ConnectError => "connect_error",
            AttemptKind::TlsError => "tls_error",
            AttemptKind::Blocked => "blocked",
        }
    }

    /// Whether the attempt counts as delivered (any `2xx`).
    pub fn is_success(self) -> bool {
        self == AttemptKind::Success
    }
}

impl fmt::Display for AttemptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Everything the delivery log and the retry logic need to know about one attempt.
#[derive(Clone, Debug)]
pub struct AttemptOutcome {
    /// The classification.
    pub kind: AttemptKind,
    /// The HTTP status, when response headers arrived (also on a timeout while the body
    /// was still being read).
    pub status: Option<u16>,
    /// Human-readable cause for failures without a usable status (and for `3xx`), for
    /// the `error` field of the delivery's attempt record.
    pub error: Option<String>,
    /// Wall time of the attempt.
    pub duration: Duration,
    /// The first [`SNIPPET_LEN`] bytes of the response body, lossily decoded as UTF-8;
    /// `None` when the body was empty or never arrived.
    pub response_snippet: Option<String>,
    /// The receiver's `Retry-After` on `429` and `503`, as a delay from now.
    pub retry_after: Option<Duration>,
}

impl AttemptOutcome {
    /// An attempt refused before anything was sent, e.g. because the stored URL no
    /// longer passes the policy. Counted as `blocked`.
    pub fn blocked(error: impl Into<String>) -> Self {
        AttemptOutcome {
            kind: AttemptKind::Blocked,
            status: None,
            error: Some(error.into()),
            duration: Duration::ZERO,
            response_snippet: None,
            retry_after: None,
        }
    }

    fn failed(kind: AttemptKind, error: String, started: Instant) -> Self {
        AttemptOutcome {
            kind,
            status: None,
            error: Some(error),
            duration: started.elapsed(),
            response_snippet: None,
            retry_after: None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Resolver
// ---------------------------------------------------------------------------------------

/// Why [`SsrfResolver`] produced no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Every address the name resolved to is forbidden by the URL policy.
    #[error("`{host}` resolves only to private or reserved addresses ({addrs})")]
    Blocked {
        /// The name that was looked up.
        host: String,
        /// The refused addresses, comma-separated, for the delivery log.
        addrs: String,
    },
    /// The lookup itself failed (NXDOMAIN, no resolver, …).
    #[error("DNS lookup of `{host}` failed")]
    Lookup {
        /// The name that was looked up.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// The lookup succeeded with an empty answer.
    #[error("`{host}` has no addresses")]
    NoAddresses {
        /// The name that was looked up.
        host: String,
    },
}

/// A DNS resolver for hyper-util's `HttpConnector` that drops every resolved address the
/// URL policy forbids (unless inside the allowed CIDRs). Filtering here, inside the
/// connector, means the addresses checked are exactly the addresses connected to.
#[derive(Clone, Debug)]
pub struct SsrfResolver {
    allowed: Arc<AllowedCidrs>,
}

impl SsrfResolver {
    /// A resolver that lets through public addresses and those inside `allowed`.
    pub fn new(allowed: AllowedCidrs) -> Self {
        SsrfResolver {
            allowed: Arc::new(allowed),
        }
    }

    /// Resolves `host` with the system resolver (getaddrinfo on tokio's blocking pool)
    /// and keeps the permitted addresses. Ports are 0: the connector sets the real one.
    ///
    /// # Errors
    /// [`ResolveError::Blocked`] when every address is forbidden,
    /// [`ResolveError::Lookup`] / [`ResolveError::NoAddresses`] when there is none.
    pub async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|source| ResolveError::Lookup {
                host: host.to_owned(),
                source,
            })?
            .collect();
        if resolved.is_empty() {
            return Err(ResolveError::NoAddresses {
                host: host.to_owned(),
            });
        }
        let (permitted, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
            .into_iter()
            .partition(|a| ip_permitted(a.ip(), &self.allowed));
        if !refused.is_empty() {
            let addrs = refused
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            if permitted.is_empty() {
                return Err(ResolveError::Blocked {
                    host: host.to_owned(),
                    addrs,
                });
            }
            tracing::warn!(host, refused = %addrs, "dropped private addresses of a webhook host");
        }
        Ok(permitted)
    }
}

impl tower::Service<Name> for SsrfResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ResolveError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.resolve(name.as_str()).await.map(Vec::into_iter) })
    }
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

type Connector = HttpsConnector<HttpConnector<SsrfResolver>>;

/// A request handle of one HTTP/1 connection; dropping it closes the connection.
type Sender = http1::SendRequest<Full<Bytes>>;

/// Why a request got no response.
#[derive(Debug)]
enum SendError {
    /// Resolving, connecting or the TLS handshake failed.
    Connect(Box<dyn StdError + Send + Sync>),
    /// The HTTP exchange failed (connection reset, malformed response, …).
    Http(hyper::Error),
}

impl SendError {
    /// The underlying error, whose cause chain says what happened.
    fn cause(&self) -> &(dyn StdError + 'static) {
        match self {
            SendError::Connect(e) => &**e,
            SendError::Http(e) => e,
        }
    }
}

/// A connection checked out of the pool for one request.
struct Checkout {
    host: Arc<str>,
    sender: Sender,
}

/// The delivery client. Cheap to clone: clones share one keep-alive pool and one TLS
/// configuration.
#[derive(Clone)]
pub struct DeliveryClient {
    connector: Connector,
    idle: Arc<Mutex<IdlePool<Sender>>>,
    timeout: Duration,
    allowed: Arc<AllowedCidrs>,
    user_agent: HeaderValue,
}

impl fmt::Debug for DeliveryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryClient")
            .field("timeout", &self.timeout)
            .field("allowed", &self.allowed)
            .field("user_agent", &self.user_agent)
            .finish_non_exhaustive()
    }
}

impl DeliveryClient {
    /// Builds the client: TLS roots, SSRF-filtering connector, keep-alive pool.
    ///
    /// # Errors
    /// When `extra_root_ca` cannot be read, holds no certificate, or holds one rustls
    /// rejects (the message names the file); when `user_agent` is not a valid header
    /// value; when the TLS configuration cannot be built.
    pub fn new(cfg: ClientConfig) -> anyhow::Result<Self> {
        let user_agent = HeaderValue::from_str(&cfg.user_agent)
            .with_context(|| format!("invalid User-Agent {:?}", cfg.user_agent))?;

        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &cfg.extra_root_ca {
            add_pem_roots(&mut roots, path)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("building the TLS configuration")?
            .with_root_certificates(roots)
            .with_no_client_auth();

        let allowed = Arc::new(cfg.allowed);
        let mut http = HttpConnector::new_with_resolver(SsrfResolver {
            allowed: Arc::clone(&allowed),
        });
        // The URI scheme is https; the TLS layer above checks that, not this layer.
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);

        Ok(DeliveryClient {
            connector,
            idle: Arc::new(Mutex::new(IdlePool::new(Limits {
                max_per_host: cfg.max_idle_per_host,
                max_total: cfg.max_idle_total,
                idle_timeout: POOL_IDLE_TIMEOUT,
            }))),
            timeout: cfg.timeout,
            allowed,
            user_agent,
        })
    }

    /// Idle keep-alive connections held now, over all hosts.
    pub fn idle_connections(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// POSTs `body` to `url` once and classifies the result. Never fails: every problem
    /// is an [`AttemptOutcome`], because for the caller each one is just a failed attempt
    /// to record and retry.
    ///
    /// `headers` are sent as given; `User-Agent` (from the config) and
    /// `Content-Type: application/json` are added when absent.
    pub async fn post(&self, url: &WebhookUrl, headers: HeaderMap, body: Bytes) -> AttemptOutcome {
        let started = Instant::now();

        // The connector skips the resolver for IP literals: check them here, before any
        // socket is opened. (The URL was checked when registered, but `allowed` may have
        // changed since, and the URL may come from an old row.)
        if let Some(ip) = url.host_ip() {
            if !ip_permitted(ip, &self.allowed) {
                return AttemptOutcome::failed(
                    AttemptKind::Blocked,
                    format!("address {ip} is private or reserved"),
                    started,
                );
            }
        }

        let (uri, request) = match self.build_request(url, headers, body) {
            Ok(r) => r,
            Err(e) => {
                return AttemptOutcome::failed(
                    AttemptKind::ConnectError,
                    format!("URL cannot be sent as an HTTP request: {e}"),
                    started,
                )
            }
        };

        let mut status = None;
        let exchange = self.exchange(uri, request, &mut status);
        let result = tokio::time::timeout(self.timeout, exchange).await;
        let duration = started.elapsed();
        match result {
            Ok(Ok(mut outcome)) => {
                outcome.duration = duration;
                outcome
            }
            Ok(Err(e)) => AttemptOutcome {
                kind: classify(e.cause()),
                status: None,
                error: Some(error_chain(e.cause())),
                duration,
                response_snippet: None,
                retry_after: None,
            },
            Err(_) => AttemptOutcome {
                kind: AttemptKind::Timeout,
                status,
                error: Some(format!(
                    "no complete response within {} ms",
                    self.timeout.as_millis()
                )),
                duration,
                response_snippet: None,
                retry_after: None,
            },
        }
    }

    /// The request as it goes on the wire (origin-form target, `Host` from the URL),
    /// and the full URI the connection is made to.
    fn build_request(
        &self,
        url: &WebhookUrl,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(Uri, Request<Full<Bytes>>), http::Error> {
        let uri: Uri = url.as_str().parse()?;
        let target = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(Uri::from(target))
            .body(Full::new(body))?;
        let h = request.headers_mut();
        *h = headers;
        if !h.contains_key(HOST) {
            h.insert(HOST, host_header(&uri)?);
        }
        if !h.contains_key(USER_AGENT) {
            h.insert(USER_AGENT, self.user_agent.clone());
        }
        if !h.contains_key(CONTENT_TYPE) {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Ok((uri, request))
    }

    /// Sends the request and reads (part of) the response. `status` is filled in as soon
    /// as headers arrive, so a timeout during the body still reports it. A connection
    /// whose response was read to the end goes back to the pool.
    async fn exchange(
        &self,
        uri: Uri,
        request: Request<Full<Bytes>>,
        status: &mut Option<u16>,
    ) -> Result<AttemptOutcome, SendError> {
        let (conn, response) = self.send(&uri, request).await?;
        let code = response.status();
        *status = Some(code.as_u16());
        let kind = AttemptKind::for_status(code.as_u16());
        let retry_after =
            if code == StatusCode::TOO_MANY_REQUESTS || code == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, Utc::now()))
            } else {
                None
            };
        let error = (kind == AttemptKind::Status3xx).then(|| {
            let location = response
                .headers()
                .get(LOCATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            match location {
                Some(l) => format!("redirect to {l} not followed"),
                None => "redirect not followed".to_owned(),
            }
        });

        let mut body = Limited::new(response.into_body(), MAX_RESPONSE_BODY);
        let mut snippet = Vec::new();
        let mut complete = false;
        loop {
            match body.frame().await {
                None => {
                    complete = true;
                    break;
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = SNIPPET_LEN.saturating_sub(snippet.len());
                        snippet.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                // Over the cap: stop reading; the status has already decided.
                Some(Err(e)) if e.is::<LengthLimitError>() => break,
                // A body cut short after the headers does not change the verdict either
                // (a 2xx means the receiver accepted the event).
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "response body read failed");
                    break;
                }
            }
        }
        // Only a connection whose response was read to the end can carry another
        // request; the others are closed by dropping their handle.
        if complete {
            self.put_back(conn);
        }

        Ok(AttemptOutcome {
            kind,
            status: Some(code.as_u16()),
            error,
            duration: Duration::ZERO,
            response_snippet: (!snippet.is_empty())
                .then(|| String::from_utf8_lossy(&snippet).into_owned()),
            retry_after,
        })
    }

    /// Sends on an idle connection to the host when one is usable, else on a new one.
    ///
    /// An idle connection may have been closed by the receiver meanwhile (keep-alive
    /// timeouts); hyper hands the request back when it was not written, and it is sent
    /// on the next connection instead. A request that was written is never sent twice.
    async fn send(
        &self,
        uri: &Uri,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Checkout, Response<Incoming>), SendError> {
        let host: Arc<str> = Arc::from(authority(uri));
        while let Some(mut sender) = self.take_idle(&host) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((Checkout { host, sender }, response)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        let mut sender = self.connect(uri).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(SendError::Http)?;
        Ok((Checkout { host, sender }, response))
    }

    /// Opens a connection (resolve, connect, TLS) and starts its HTTP/1 task.
    async fn connect(&self, uri: &Uri) -> Result<Sender, SendError> {
        wf_telemetry::metrics().delivery_connections_opened.inc();
        let io = self
            .connector
            .clone()
            .oneshot(uri.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, connection) = http1::handshake(io).await.map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "delivery connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn take_idle(&self, host: &str) -> Option<Sender> {
        self.with_idle(|idle, now, closed| idle.take(host, now, closed))
    }

    fn put_back(&self, conn: Checkout) {
        if conn.sender.is_closed() {
            return;
        }
        self.with_idle(|idle, now, closed| idle.put(&conn.host, conn.sender, now, closed));
    }

    /// Runs `f` on the pool under its lock, updates the idle gauge, and drops the
    /// connections `f` closed once the lock is released.
    fn with_idle<R>(
        &self,
        f: impl FnOnce(&mut IdlePool<Sender>, Instant, &mut Vec<Sender>) -> R,
    ) -> R {
        let mut closed = Vec::new();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let result = f(&mut idle, Instant::now(), &mut closed);
        let kept = idle.len();
        drop(idle);
        wf_telemetry::metrics()
            .delivery_connections_idle
            .set(i64::try_from(kept).unwrap_or(i64::MAX));
        drop(closed);
        result
    }
}

/// The authority of an https URI (host, and port unless 443): the pool's key.
fn authority(uri: &Uri) -> &str {
    uri.authority().map_or("", |a| a.as_str())
}

/// The `Host` header: the host, and the port unless it is 443.
fn host_header(uri: &Uri) -> Result<HeaderValue, http::Error> {
    let host = uri.host().unwrap_or_default();
    let value = match uri.port_u16() {
        Some(port) if port != 443 => HeaderValue::try_from(format!("{host}:{port}"))?,
        _ => HeaderValue::try_from(host)?,
    };
    Ok(value)
}

/// Adds every certificate of a PEM file to `roots`.
fn add_pem_roots(roots: &mut RootCertStore, path: &Path) -> anyhow::Result<()> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read extra root CA file {}", path.display()))?;
    let mut added = 0usize;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.with_context(|| format!("invalid PEM in extra root CA file {}", path.display()))?;
        roots.add(cert).with_context(|| {
            format!(
                "unusable certificate in extra root CA file {}",
                path.display()
            )
        })?;
        added += 1;
    }
    if added == 0 {
        bail!(
            "extra root CA file {} contains no certificate",
            path.display()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Error classification
// ---------------------------------------------------------------------------------------

/// The error and its causes. Unlike `source()` alone this descends *into* `io::Error`s:
/// `io::Error::source` skips the error it wraps, and that wrapped error is exactly where
/// tokio-rustls puts the `rustls::Error` (twice wrapped by hyper-rustls).
fn causes<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |&e: &&'a (dyn StdError + 'static)| match e
        .downcast_ref::<io::Error>()
    {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
        None => e.source(),
    })
    .take(16)
}

fn classify(err: &(dyn StdError + 'static)) -> AttemptKind {
    let mut kind = AttemptKind::ConnectError;
    for cause in causes(err) {
        if let Some(ResolveError::Blocked { .. }) = cause.downcast_ref::<ResolveError>() {
            return AttemptKind::Blocked;
        }
        if cause.is::<rustls::Error>() || cause.is::<rustls_pki_types::InvalidDnsNameError>() {
            kind = AttemptKind::TlsError;
        }
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            // tokio-rustls reports handshake failures as InvalidData.
            if io.kind() == io::ErrorKind::InvalidData {
                kind = AttemptKind::TlsError;
            }
        }
    }
    kind
}

/// "a: b: c" from the cause chain, without the repeats that wrapping produces.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in causes(err) {
        let s = cause.to_string();
        if parts.last() != Some(&s) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

// ---------------------------------------------------------------------------------------
// Retry-After
// ---------------------------------------------------------------------------------------

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date in
/// any of its three formats. A date in the past is a zero delay. Returns `None` for
/// anything unparseable: a bad header must not affect the retry schedule.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = parse_http_date(value)?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 2822 parsing accepts `GMT`).
    if let Ok(t) = DateTime::parse_from_rfc2822(value) {
        return Some(t.with_timezone(&Utc));
    }
    // Obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
    // (`Sun Nov  6 08:49:37 1994`) forms, which recipients must still accept.
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("1994-11-06T08:49:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(
            parse_retry_after("120", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-5", now()), None);
        assert_eq!(parse_retry_after("1.5", now()), None);
        assert_eq!(parse_retry_after("", now()), None);
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("99999999999999999999999", now()), None);
    }

    #[test]
    fn retry_after_dates() {
        let want = Some(Duration::from_secs(37));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now()),
            want
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now()),
            want
        );
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994", now()), want);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn labels() {
        assert_eq!(AttemptKind::for_status(204).label(), "2xx");
        assert_eq!(AttemptKind::for_status(302).label(), "3xx");
        assert_eq!(AttemptKind::for_status(410).label(), "4xx");
        assert_eq!(AttemptKind::for_status(503).label(), "5xx");
        assert_eq!(AttemptKind::for_status(101), AttemptKind::OtherStatus);
        assert_eq!(AttemptKind::for_status(600).label(), "4xx");
        assert!(AttemptKind::Success.is_success());
        assert!(!AttemptKind::Status3xx.is_success());
        assert_eq!(AttemptKind::ConnectError.to_string(), "connect_error");
    }

    /// `WebhookUrl` refuses `localhost`, so this goes below `post` to prove the wiring:
    /// connector → `SsrfResolver` → `ResolveError::Blocked` → `AttemptKind::Blocked`.
    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_blocked() {
        let client = DeliveryClient::new(ClientConfig::new(Duration::from_secs(5))).unwrap();
        let uri = Uri::from_static("https://localhost:9/");
        let request = Request::post("/").body(Full::new(Bytes::new())).unwrap();
        let err = client
            .exchange(uri, request, &mut None)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, SendError::Connect(_)), "{err:?}");
        assert_eq!(classify(err.cause()), AttemptKind::Blocked);
        let chain = error_chain(err.cause());
        assert!(chain.contains("private or reserved"), "{chain}");
    }

    #[test]
    fn every_webhook_url_becomes_a_request() {
        let client = DeliveryClient::new(ClientConfig::new(Duration::from_secs(5))).unwrap();
        for (input, uri, host) in [
            (
                "https://example.com/a#frag",
                "https://example.com/a",
                "example.com",
            ),
            (
                "https://example.com:443/a b|c^{d}?q=ü",
                "https://example.com/a%20b|c^%7Bd%7D?q=%C3%BC",
                "example.com",
            ),
            (
                "https://b\u{fc}cher.example:8443/",
                "https://xn--bcher-kva.example:8443/",
                "xn--bcher-kva.example:8443",
            ),
            (
                "https://[2606:4700::1111]/h",
                "https://[2606:4700::1111]/h",
                "[2606:4700::1111]",
            ),
        ] {
            let url = WebhookUrl::parse(input, &AllowedCidrs::default()).unwrap();
            let (full, request) = client
                .build_request(&url, HeaderMap::new(), Bytes::new())
                .unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(full.to_string(), uri, "{input}");
            assert_eq!(request.method(), Method::POST);
            assert_eq!(
                request.uri().path_and_query().map(|p| p.as_str()),
                full.path_and_query().map(|p| p.as_str()),
                "{input}: origin-form target"
            );
            assert!(request.uri().authority().is_none(), "{input}");
            assert_eq!(request.headers()[HOST], host, "{input}");
        }
    }

    #[test]
    fn io_errors_are_descended_into() {
        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let outer = io::Error::other(tls);
        let found: Vec<bool> = causes(&outer).map(|c| c.is::<rustls::Error>()).collect();
        assert_eq!(found, [false, false, true]);
    }
}
