//! `wfctl listen`: a local HTTPS webhook receiver for trying WorkFlows webhooks out, and
//! for developing a subscriber against real deliveries.
//!
//! It makes its own self-signed certificate (written as PEM for the worker's
//! `WF_EXTRA_ROOT_CA`), answers every request with the status asked for, and prints one line
//! per request on stdout: the event type, the delivery id, the attempt, and whether both
//! signatures (`X-WorkFlows-Signature` and the Standard Webhooks `webhook-signature`) verify
//! against the webhook's secret. Start-up information goes to stderr.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use wf_core::signing::WebhookSecret;

use crate::harness::https;

/// Largest body read; a delivery is at most 256 KiB.
const MAX_BODY: usize = 4 << 20;

#[derive(clap::Args, Debug)]
pub struct ListenArgs {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, default_value = "127.0.0.1:8443")]
    addr: SocketAddr,
    /// Where to write the certificate (PEM); give it to the worker as WF_EXTRA_ROOT_CA.
    /// Default: wfctl-listen-<port>.pem in the temporary directory.
    #[arg(long, value_name = "PATH")]
    cert_out: Option<PathBuf>,
    /// The webhook's signing secret (whsec_…): both signatures of every request are
    /// checked against it.
    #[arg(long, value_name = "whsec_…", value_parser = parse_secret, conflicts_with = "secret_file")]
    secret: Option<WebhookSecret>,
    /// A file holding the secret (whsec_…), read again for every request: it may be
    /// written or replaced after the receiver started.
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// The status every request is answered with.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(100..=599))]
    status: u16,
    /// Also print each request's body, on the line after its summary.
    #[arg(long)]
    print_body: bool,
}

fn parse_secret(s: &str) -> Result<WebhookSecret, String> {
    WebhookSecret::parse(s.trim()).map_err(|e| e.to_string())
}

/// Where the secret comes from.
enum Secret {
    None,
    Fixed(WebhookSecret),
    File(PathBuf),
}

impl Secret {
    /// The secret for one request, or why there is none.
    fn current(&self) -> Result<WebhookSecret, String> {
        match self {
            Secret::None => Err("no secret".to_owned()),
            Secret::Fixed(s) => Ok(s.clone()),
            Secret::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("secret file {}: {e}", path.display()))?;
                WebhookSecret::parse(text.trim())
                    .map_err(|e| format!("secret file {}: {e}", path.display()))
            }
        }
    }
}

struct State {
    acceptor: TlsAcceptor,
    secret: Secret,
    status: StatusCode,
    print_body: bool,
}

/// Runs the receiver until SIGINT or SIGTERM.
pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("listening on {}", args.addr))?;
    let addr = listener.local_addr()?;
    let cert_path = args
        .cert_out
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("wfctl-listen-{}.pem", addr.port())));
    let acceptor = tls_acceptor(addr.ip(), &cert_path)?;
    let status = StatusCode::from_u16(args.status).context("--status")?;
    let secret = match (args.secret, args.secret_file) {
        (Some(s), _) => Secret::Fixed(s),
        (None, Some(path)) => Secret::File(path),
        (None, None) => Secret::None,
    };

    let host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    let checking = match &secret {
        Secret::None => "not checked (no --secret)".to_owned(),
        Secret::Fixed(_) => "checked against --secret".to_owned(),
        Secret::File(p) => format!("checked against the secret in {}", p.display()),
    };
    eprintln!(
        "wfctl listen: listening on https://{host}:{}/ (any path), answering {}\n\
         certificate: {} (trust it in the worker: WF_EXTRA_ROOT_CA={}, and allow the \
         address: WF_ALLOWED_TARGET_CIDRS={}/32)\n\
         signatures: {checking}",
        addr.port(),
        status.as_u16(),
        cert_path.display(),
        cert_path.display(),
        if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            addr.ip().to_string()
        },
    );

    let state = Arc::new(State {
        acceptor,
        secret,
        status,
        print_body: args.print_body,
    });
    let stop = wf_telemetry::cancel_on_shutdown_signal();
    https::serve(listener, state, stop).await;
    Ok(())
}

/// A fresh self-signed leaf certificate for `localhost`, `127.0.0.1`, `::1` and the listen
/// address, written to `cert_path` as PEM; the TLS acceptor serving it.
fn tls_acceptor(ip: IpAddr, cert_path: &Path) -> anyhow::Result<TlsAcceptor> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    let ck = rcgen::generate_simple_self_signed(names).context("generating the certificate")?;
    std::fs::write(cert_path, ck.cert.pem())
        .with_context(|| format!("writing the certificate to {}", cert_path.display()))?;
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
        ck.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(tls)))
}

impl https::Site for State {
    type Error = Infallible;

    fn tls_for(&self, _tcp: &TcpStream, _peer: SocketAddr) -> Option<TlsAcceptor> {
        Some(self.acceptor.clone())
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(handle(&self, req).await)
    }

    fn failed(&self, what: std::fmt::Arguments<'_>) {
        eprintln!("wfctl listen: {what}");
    }
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let status = StatusCode::PAYLOAD_TOO_LARGE;
            print_lines(&format!(
                "{} {} {}: body not read ({e}) -> {}",
                now(),
                parts.method,
                parts.uri.path(),
                status.as_u16()
            ));
            return reply(status);
        }
    };
    let mut line = summary(&parts.headers, &body, &state.secret);
    line.push_str(&format!(" -> {}", state.status.as_u16()));
    if state.print_body {
        line.push('\n');
        line.push_str(&String::from_utf8_lossy(&body));
    }
    print_lines(&line);
    reply(state.status)
}

/// `<time> <event> <delivery id> attempt=<n> signatures=<verdict>`; `-` for a missing
/// header.
fn summary(headers: &HeaderMap, body: &[u8], secret: &Secret) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    };
    format!(
        "{} {} {} attempt={} signatures={}",
        now(),
        header("x-workflows-event"),
        header("x-workflows-delivery"),
        header("x-workflows-attempt"),
        verdict(headers, body, secret)
    )
}

/// `verified` when both signatures verify, `INVALID(<the headers that do not>)`, or
/// `unchecked(<why>)` without a secret.
fn verdict(headers: &HeaderMap, body: &[u8], secret: &Secret) -> String {
    let secret = match secret.current() {
        Ok(s) => s,
        Err(why) => return format!("unchecked({why})"),
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let mut bad = Vec::new();
    if !secret.verify_workflows_signature(body, header("x-workflows-signature")) {
        bad.push("X-WorkFlows-Signature");
    }
    if !secret.verify_standard_signature(
        header("webhook-id"),
        header("webhook-timestamp"),
        body,
        header("webhook-signature"),
    ) {
        bad.push("webhook-signature");
    }
    if bad.is_empty() {
        "verified".to_owned()
    } else {
        format!("INVALID({})", bad.join(","))
    }
}

fn now() -> String {
    chrono::Utc::now().format("%H:%M:%S%.3f").to_string()
}

/// Writes `text` and a newline to stdout at once (lines of concurrent requests do not
/// interleave), flushed.
fn print_lines(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn signed(body: &[u8], secret: &WebhookSecret) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-workflows-event", "alert.created".parse().unwrap());
        h.insert("x-workflows-delivery", "dlv_1".parse().unwrap());
        h.insert("x-workflows-attempt", "2".parse().unwrap());
        h.insert(
            "x-workflows-signature",
            secret.workflows_signature(body).parse().unwrap(),
        );
        h.insert("webhook-id", "dlv_1".parse().unwrap());
        h.insert("webhook-timestamp", "1700000000".parse().unwrap());
        h.insert(
            "webhook-signature",
            secret
                .standard_signature("dlv_1", 1_700_000_000, body)
                .parse()
                .unwrap(),
        );
        h
    }

    #[test]
    fn verdicts() {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let fixed = Secret::Fixed(secret.clone());
        let body = br#"{"event":"alert.created"}"#;
        let h = signed(body, &secret);
        assert_eq!(verdict(&h, body, &fixed), "verified");
        assert_eq!(
            verdict(&h, b"{}", &fixed),
            "INVALID(X-WorkFlows-Signature,webhook-signature)"
        );
        let mut one = h.clone();
        one.insert("webhook-id", "dlv_2".parse().unwrap());
        assert_eq!(verdict(&one, body, &fixed), "INVALID(webhook-signature)");
        let other = Secret::Fixed(WebhookSecret::generate());
        assert_eq!(
            verdict(&h, body, &other),
            "INVALID(X-WorkFlows-Signature,webhook-signature)"
        );
        assert_eq!(
            verdict(&HeaderMap::new(), body, &fixed),
            "INVALID(X-WorkFlows-Signature,webhook-signature)"
        );
        assert_eq!(verdict(&h, body, &Secret::None), "unchecked(no secret)");
        let missing = Secret::File(PathBuf::from("/nonexistent/wfctl-listen-secret"));
        assert!(verdict(&h, body, &missing).starts_with("unchecked(secret file /nonexistent"));
    }

    #[test]
    fn summary_line() {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let body = b"{}";
        let line = summary(&signed(body, &secret), body, &Secret::Fixed(secret));
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            fields[1..],
            ["alert.created", "dlv_1", "attempt=2", "signatures=verified"]
        );
        let line = summary(&HeaderMap::new(), body, &Secret::None);
        assert!(
            line.ends_with(" - - attempt=- signatures=unchecked(no secret)"),
            "{line}"
        );
    }
}
