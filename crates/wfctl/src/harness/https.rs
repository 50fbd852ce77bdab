//! The HTTPS accept loop of every receiver wfctl runs (`wfctl listen`, the bench and chaos
//! receiver): TCP accept, TLS, then HTTP/1 with keep-alive, one task per connection.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// What a receiver decides: which connections it serves, with which certificate, and the
/// answer to each request.
pub trait Site: Send + Sync + 'static {
    /// Failing a request closes its connection.
    type Error: Into<Box<dyn StdError + Send + Sync>>;

    /// The TLS acceptor for a connection from `peer`; `None` drops the connection.
    fn tls_for(&self, tcp: &TcpStream, peer: SocketAddr) -> Option<TlsAcceptor>;

    /// Answers one request.
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> impl Future<Output = Result<Response<Full<Bytes>>, Self::Error>> + Send;

    /// Told when an accept or a TLS handshake failed. Silent unless overridden.
    fn failed(&self, what: fmt::Arguments<'_>) {
        let _ = what;
    }
}

/// Serves `site` on `listener` until `stop` is cancelled; open connections end then too.
pub async fn serve<S: Site>(listener: TcpListener, site: Arc<S>, stop: CancellationToken) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    site.failed(format_args!("accept: {e}"));
                    // Out of file descriptors, say: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let site = site.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let Some(acceptor) = site.tls_for(&tcp, peer) else {
                return;
            };
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    site.failed(format_args!("TLS handshake with {peer} failed: {e}"));
                    return;
                }
            };
            let svc =
                hyper::service::service_fn(move |req: Request<Incoming>| site.clone().handle(req));
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}
