//! The API's HTTP/1 server: an accept loop that bounds open connections, gives each
//! request's headers `WF_HTTP_HEADER_TIMEOUT` to arrive, and drains gracefully.
//!
//! `axum::serve` has neither a connection bound nor a header timeout, hence this loop on
//! hyper's connection builder. The whole-request timeout (`WF_HTTP_REQUEST_TIMEOUT`) is a
//! middleware of the router (`api::router`), so its `408` has the API's error shape.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use wf_core::config::ApiLimits;
use wf_telemetry::metrics;

/// What a connection over the bound gets before it is closed: the API's error shape.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 90\r\n\
\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many open connections; try again\"}}";

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops accepting and
/// waits for open connections to finish their requests (idle ones are closed at once).
/// Accept errors (the process out of file descriptors, a connection reset before it was
/// accepted) are logged and the loop goes on.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ApiLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let m = metrics();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // EMFILE and the like: back off a little instead of spinning.
                    warn!(error = %e, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            m.http_connections_refused.inc();
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        m.http_connections_open.inc();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                if e.is_timeout() {
                    m.http_header_timeouts.inc();
                }
                debug!(error = %e, "API connection ended with an error");
            }
            m.http_connections_open.dec();
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers `503` as far as the socket takes it without waiting, then closes: a client
/// over the bound learns why at once, and never holds a task or a buffer of ours.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(REFUSED);
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::REFUSED;

    #[test]
    fn refusal_is_a_complete_response_with_the_error_shape() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "too_many_connections");
    }
}
