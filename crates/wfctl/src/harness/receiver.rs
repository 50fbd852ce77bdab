//! The subscriber side of the benchmark: an HTTPS server on loopback (HTTP/1.1 keep-alive)
//! that verifies every `X-WorkFlows-Signature`, counts distinct `X-WorkFlows-Delivery` ids
//! and records the event-to-delivery latency of each first delivery.
//!
//! It can play many endpoints at once: endpoint `e` is its own loopback address
//! (`127.0.0.1`, `127.0.0.2`, …), so each is a distinct `scheme://host:port` to the
//! workers, with its own TLS connections and its own certificate (issued on first use by
//! a bench CA, whose certificate the workers trust). The first `slow` endpoints answer
//! after a delay. Figures are kept apart for the slow endpoints and the healthy ones.
//!
//! For `wfctl chaos` it can also misbehave on purpose ([`Faults`]): a random share of
//! requests answered 500, left unanswered past the workers' timeout, or cut with a TCP
//! reset; only a request answered 200 counts as a delivery.
//!
//! Not wf-testkit's receiver: that is a test-only crate; this ships in wfctl, built for load.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use sha2::Sha256;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::https;

/// A running receiver. Webhook `i` is served at `/w/<i>` on endpoint `i % endpoints`, so
/// the receiver knows which secret signs what it gets.
pub struct Receiver {
    pub port: u16,
    /// The bench CA's certificate as PEM, for the workers' `WF_EXTRA_ROOT_CA`.
    pub cert_path: PathBuf,
    endpoints: usize,
    state: Arc<State>,
    stop: CancellationToken,
}

/// How the receiver's endpoints behave.
#[derive(Clone, Copy, Debug)]
pub struct Endpoints {
    /// Distinct endpoints (loopback addresses), at least 1.
    pub count: usize,
    /// The first `slow` endpoints answer after `delay`.
    pub slow: usize,
    pub delay: Duration,
}

/// The two groups figures are kept for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Healthy,
    Slow,
}

impl Default for Endpoints {
    /// One healthy endpoint.
    fn default() -> Self {
        Endpoints {
            count: 1,
            slow: 0,
            delay: Duration::ZERO,
        }
    }
}

/// How a misbehaving receiver answers: each request independently, by these shares (the
/// rest, 200).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Share of requests answered 500.
    pub error: f64,
    /// Share of requests held for [`Faults::hang`], then answered 500 (the worker has
    /// given up by then: a timeout).
    pub timeout: f64,
    /// Share of requests whose connection is reset (RST) instead of answered.
    pub reset: f64,
    /// How long a timed-out request is held.
    pub hang: std::time::Duration,
}

/// What [`Faults`] did to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Error,
    Timeout,
    Reset,
}

impl Faults {
    /// The fault for a request drawn `roll` (uniform in [0, 1)), if any.
    fn pick(&self, roll: f64) -> Option<Fault> {
        if roll < self.error {
            Some(Fault::Error)
        } else if roll < self.error + self.timeout {
            Some(Fault::Timeout)
        } else if roll < self.error + self.timeout + self.reset {
            Some(Fault::Reset)
        } else {
            None
        }
    }
}

/// The error that makes hyper drop a connection without answering (a reset, since
/// connections of a receiver that may fault linger 0).
#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset on purpose")
    }
}

impl std::error::Error for ResetConnection {}

#[derive(Default)]
struct State {
    /// Connections close with a reset (SO_LINGER 0), so that a [`Fault::Reset`] is one.
    may_fault: bool,
    faults: RwLock<Option<Faults>>,
    /// Requests answered with a fault: 500, timeout, reset.
    faulted: [AtomicU64; 3],
    /// The whole `whsec_…` string of webhook `i`, as bytes (the HMAC key).
    secrets: RwLock<Vec<Vec<u8>>>,
    endpoints: Endpoints,
    counts: Mutex<Counts>,
    requests: AtomicU64,
    signature_failures: AtomicU64,
    /// Requests to an unknown path, without a delivery id, or with a body that is not the
    /// expected JSON.
    malformed: AtomicU64,
}

#[derive(Default)]
struct Counts {
    /// Every delivery id ever seen (warm-up included, so a late duplicate of a warm-up
    /// delivery is not mistaken for a new one).
    seen: HashSet<Box<str>>,
    /// Distinct ids first seen since the last reset.
    distinct: u64,
    /// Requests since the last reset whose id had been seen before.
    duplicates: u64,
    /// When the last new delivery id arrived.
    last_new: Option<Instant>,
    healthy: GroupCounts,
    slow: GroupCounts,
}

/// Figures of one group since the last reset.
#[derive(Clone, Debug, Default)]
pub struct GroupCounts {
    /// Distinct ids first seen.
    pub distinct: u64,
    /// Event-to-delivery latency of each first delivery, in µs.
    pub latencies_us: Vec<u64>,
    /// When the first and the last new delivery id of the group arrived.
    pub first_new: Option<Instant>,
    pub last_new: Option<Instant>,
}

impl Counts {
    fn group(&mut self, g: Group) -> &mut GroupCounts {
        match g {
            Group::Healthy => &mut self.healthy,
            Group::Slow => &mut self.slow,
        }
    }
}

/// Counters at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub distinct: u64,
    pub duplicates: u64,
    pub signature_failures: u64,
    pub malformed: u64,
    pub requests: u64,
    pub last_new: Option<Instant>,
    /// Requests answered 500, held past the timeout, and reset, on purpose.
    pub faulted: [u64; 3],
}

impl Receiver {
    /// Binds one port for every endpoint and serves until [`Receiver::stop`] (or the
    /// process ends). With one endpoint it listens on 127.0.0.1 only; with more, on every
    /// address of the host, answering only connections made to a loopback address.
    ///
    /// `may_fault`: [`Receiver::set_faults`] will be used (connections then close with a
    /// reset).
    pub async fn start(
        dir: &Path,
        endpoints: Endpoints,
        may_fault: bool,
    ) -> anyhow::Result<Receiver> {
        anyhow::ensure!(
            (1..=MAX_ENDPOINTS).contains(&endpoints.count) && endpoints.slow <= endpoints.count,
            "the receiver plays 1 to {MAX_ENDPOINTS} endpoints, of which at most all are slow"
        );
        let tls = Arc::new(Tls::new()?);
        let cert_path = dir.join("receiver-ca.pem");
        std::fs::write(&cert_path, tls.ca_pem.as_bytes())
            .with_context(|| format!("writing {}", cert_path.display()))?;
        let bind = if endpoints.count == 1 {
            Ipv4Addr::LOCALHOST
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        let listener = TcpListener::bind((bind, 0)).await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State {
            endpoints,
            may_fault,
            ..State::default()
        });
        let stop = CancellationToken::new();
        let site = Arc::new(Site {
            tls,
            state: state.clone(),
        });
        tokio::spawn(https::serve(listener, site, stop.clone()));
        Ok(Receiver {
            port,
            cert_path,
            endpoints: endpoints.count,
            state,
            stop,
        })
    }

    /// The URL of webhook `i`: on endpoint `i % endpoints`.
    pub fn url(&self, i: usize) -> String {
        format!(
            "https://{}:{}/w/{i}",
            endpoint_ip(i % self.endpoints),
            self.port
        )
    }

    /// The group webhook `i` belongs to.
    pub fn group_of(&self, i: usize) -> Group {
        self.state.group_of(i)
    }

    /// Registers the secrets, in webhook order.
    pub fn set_secrets(&self, secrets: Vec<String>) {
        *self
            .state
            .secrets
            .write()
            .unwrap_or_else(PoisonError::into_inner) =
            secrets.into_iter().map(String::into_bytes).collect();
    }

    /// Misbehaves from now on as `faults` says (`None`: answers 200 again).
    pub fn set_faults(&self, faults: Option<Faults>) {
        *self
            .state
            .faults
            .write()
            .unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// How many of `ids` were delivered (answered 200 at least once).
    pub fn count_delivered<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> u64 {
        let c = self.state.lock_counts();
        ids.into_iter().filter(|id| c.seen.contains(*id)).count() as u64
    }

    /// Starts a new measurement: counts, latencies and failures back to zero (the set of
    /// ids seen so far is kept, see [`Counts::seen`]).
    pub fn reset(&self) {
        let mut c = self.state.lock_counts();
        c.distinct = 0;
        c.duplicates = 0;
        c.last_new = None;
        c.healthy = GroupCounts::default();
        c.slow = GroupCounts::default();
        drop(c);
        self.state.requests.store(0, Ordering::Relaxed);
        self.state.signature_failures.store(0, Ordering::Relaxed);
        self.state.malformed.store(0, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let c = self.state.lock_counts();
        Snapshot {
            distinct: c.distinct,
            duplicates: c.duplicates,
            signature_failures: self.state.signature_failures.load(Ordering::Relaxed),
            malformed: self.state.malformed.load(Ordering::Relaxed),
            requests: self.state.requests.load(Ordering::Relaxed),
            last_new: c.last_new,
            faulted: self
                .state
                .faulted
                .each_ref()
                .map(|n| n.load(Ordering::Relaxed)),
        }
    }

    /// The figures of one group since the last reset (latencies unsorted).
    pub fn group(&self, g: Group) -> GroupCounts {
        self.state.lock_counts().group(g).clone()
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl State {
    fn lock_counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn group_of(&self, webhook: usize) -> Group {
        if webhook % self.endpoints.count < self.endpoints.slow {
            Group::Slow
        } else {
            Group::Healthy
        }
    }
}

/// The most endpoints one receiver plays (addresses 127.0.0.1 to 127.1.x.y).
pub const MAX_ENDPOINTS: usize = 100_000;

/// The loopback address of endpoint `e`: 127.0.0.1, 127.0.0.2, …, skipping the addresses
/// ending in .0 and .255, which some resolvers and firewalls treat specially.
pub fn endpoint_ip(e: usize) -> Ipv4Addr {
    let per_block = 254usize;
    let block = e / per_block;
    let host = (e % per_block + 1) as u8;
    Ipv4Addr::new(127, (block >> 8) as u8, (block & 0xff) as u8, host)
}

/// TLS for every endpoint: a bench CA, and for each loopback address a leaf certificate
/// with that address as its IP SAN, issued on the first connection to it. Clients send no
/// SNI for an IP address, so the certificate is chosen by the connection's local address.
struct Tls {
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
    /// One key for every leaf (the bench measures delivery, not key generation).
    leaf_key: rcgen::KeyPair,
    provider: Arc<rustls::crypto::CryptoProvider>,
    configs: Mutex<HashMap<IpAddr, Arc<rustls::ServerConfig>>>,
}

impl Tls {
    fn new() -> anyhow::Result<Tls> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wfctl bench CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate().context("generating the bench CA key")?;
        let ca_cert = params
            .self_signed(&ca_key)
            .context("self-signing the bench CA")?;
        Ok(Tls {
            ca: rcgen::Issuer::new(params, ca_key),
            ca_pem: ca_cert.pem(),
            leaf_key: rcgen::KeyPair::generate().context("generating the leaf key")?,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            configs: Mutex::default(),
        })
    }

    /// The server configuration for connections to `ip`.
    fn config_for(&self, ip: IpAddr) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut configs = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = configs.get(&ip) {
            return Ok(c.clone());
        }
        let params = rcgen::CertificateParams::new(vec![ip.to_string()])?;
        let cert = params.signed_by(&self.leaf_key, &self.ca)?;
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(
            rustls_pki_types::PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()),
        );
        let mut tls = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = Arc::new(tls);
        configs.insert(ip, tls.clone());
        Ok(tls)
    }
}

/// The receiver as [`https::Site`]: the certificate of the address a connection came to.
struct Site {
    tls: Arc<Tls>,
    state: Arc<State>,
}

impl https::Site for Site {
    type Error = ResetConnection;

    fn tls_for(&self, tcp: &TcpStream, peer: SocketAddr) -> Option<TlsAcceptor> {
        // Bound to every address with many endpoints: loopback clients only.
        let local = tcp.local_addr().ok()?;
        if !local.ip().is_loopback() || !peer.ip().is_loopback() {
            return None;
        }
        let _ = tcp.set_nodelay(true);
        if self.state.may_fault {
            let _ = tcp.set_zero_linger();
        }
        let config = self.tls.config_for(local.ip()).ok()?;
        Some(TlsAcceptor::from(config))
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, ResetConnection> {
        handle(&self.state, req).await
    }
}

/// The parts of a delivery body the receiver reads.
#[derive(Deserialize)]
struct Body {
    timestamp: Option<String>,
    data: Option<BodyData>,
}

#[derive(Deserialize)]
struct BodyData {
    #[serde(rename = "sentAtMicros")]
    sent_at_micros: Option<i64>,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

async fn handle(
    state: &State,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ResetConnection> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let index = req
        .uri()
        .path()
        .strip_prefix("/w/")
        .and_then(|i| i.parse::<usize>().ok());
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let signature = header("x-workflows-signature");
    let delivery = header("x-workflows-delivery");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST)),
    };
    let received = now_micros();
    let faults = *state.faults.read().unwrap_or_else(PoisonError::into_inner);
    if let Some(faults) = faults {
        if let Some(fault) = faults.pick(rand::random::<f64>()) {
            state.faulted[fault as usize].fetch_add(1, Ordering::Relaxed);
            return match fault {
                Fault::Error => Ok(reply(StatusCode::INTERNAL_SERVER_ERROR)),
                Fault::Timeout => {
                    tokio::time::sleep(faults.hang).await;
                    Ok(reply(StatusCode::INTERNAL_SERVER_ERROR))
                }
                Fault::Reset => Err(ResetConnection),
            };
        }
    }

    let (Some(index), Some(delivery)) = (index, delivery) else {
        state.malformed.fetch_add(1, Ordering::Relaxed);
        return Ok(reply(StatusCode::NOT_FOUND));
    };
    let group = state.group_of(index);
    if group == Group::Slow {
        tokio::time::sleep(state.endpoints.delay).await;
    }
    let verified = {
        let secrets = state.secrets.read().unwrap_or_else(PoisonError::into_inner);
        match (secrets.get(index), signature) {
            (Some(secret), Some(sig)) => verify(secret, &body, &sig),
            _ => false,
        }
    };
    if !verified {
        state.signature_failures.fetch_add(1, Ordering::Relaxed);
    }
    let sent = match serde_json::from_slice::<Body>(&body) {
        Ok(b) => b.data.and_then(|d| d.sent_at_micros).or_else(|| {
            b.timestamp
                .as_deref()
                .and_then(wf_core::time::parse_rfc3339)
                .map(|t| t.timestamp_micros())
        }),
        Err(_) => None,
    };
    if sent.is_none() {
        state.malformed.fetch_add(1, Ordering::Relaxed);
    }

    let mut c = state.lock_counts();
    if c.seen.insert(delivery.into_boxed_str()) {
        let now = Instant::now();
        c.distinct += 1;
        c.last_new = Some(now);
        let g = c.group(group);
        g.distinct += 1;
        g.first_new.get_or_insert(now);
        g.last_new = Some(now);
        if let Some(sent) = sent {
            g.latencies_us
                .push(u64::try_from(received.saturating_sub(sent)).unwrap_or(0));
        }
    } else {
        c.duplicates += 1;
    }
    drop(c);
    Ok(reply(StatusCode::OK))
}

/// `sha256=<hex>` of the body under the whole secret string, as the docs' snippets check.
fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    if hex_sig.len() != 64 {
        return false;
    }
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::{endpoint_ip, verify, Fault, Faults};
    use std::net::Ipv4Addr;

    #[test]
    fn endpoints_get_distinct_loopback_addresses() {
        assert_eq!(endpoint_ip(0), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(endpoint_ip(253), Ipv4Addr::new(127, 0, 0, 254));
        assert_eq!(endpoint_ip(254), Ipv4Addr::new(127, 0, 1, 1));
        let all: std::collections::HashSet<_> =
            (0..super::MAX_ENDPOINTS).map(endpoint_ip).collect();
        assert_eq!(all.len(), super::MAX_ENDPOINTS);
        assert!(all
            .iter()
            .all(|ip| ip.is_loopback() && ![0, 255].contains(&ip.octets()[3])));
    }

    #[test]
    fn faults_by_share() {
        let f = Faults {
            error: 0.25,
            timeout: 0.25,
            reset: 0.25,
            hang: std::time::Duration::from_secs(1),
        };
        assert_eq!(f.pick(0.0), Some(Fault::Error));
        assert_eq!(f.pick(0.3), Some(Fault::Timeout));
        assert_eq!(f.pick(0.6), Some(Fault::Reset));
        assert_eq!(f.pick(0.8), None);
        assert_eq!(Faults::default().pick(0.0), None);
    }

    #[test]
    fn verifies_like_the_docs() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"event":"alert.created"}"#;
        let good = wf_core::signing::workflows_signature(secret.as_bytes(), body);
        assert!(verify(secret.as_bytes(), body, &good));
        assert!(!verify(secret.as_bytes(), b"{}", &good));
        assert!(!verify(b"whsec_other", body, &good));
        assert!(!verify(secret.as_bytes(), body, &good[1..]));
        assert!(!verify(secret.as_bytes(), body, "sha256=zz"));
    }
}
