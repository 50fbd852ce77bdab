//! A minimal HTTP/1.1 client for the plain-HTTP ports under test (the API, `/metrics`,
//! `/healthz`, `/readyz`): one request per connection (`Connection: close`), so a server
//! that shuts down is never kept waiting by an idle keep-alive connection of a test.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// A whole exchange takes at most this long.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why there is no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{method} {path} on {addr}: {source}")]
    Exchange {
        addr: SocketAddr,
        method: String,
        path: String,
        source: hyper::Error,
    },
    #[error("{method} {path} on {addr}: no response within {TIMEOUT:?}")]
    Timeout {
        addr: SocketAddr,
        method: String,
        path: String,
    },
    #[error("bad request {method} {path}: {source}")]
    Request {
        method: String,
        path: String,
        source: http::Error,
    },
}

/// A response, read to its end.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The header's value, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, or as a JSON string of its text when it is not JSON (so that an
    /// unexpected plain-text answer still shows in an assertion message).
    pub fn json_or_text(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| Value::String(self.text()))
    }
}

/// Sends `method path` with `headers` (and `body`, as is) to `addr`.
///
/// # Errors
/// When nothing listens, the exchange breaks, or it takes longer than 30 s.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Response, HttpError> {
    let exchange_error = |source| HttpError::Exchange {
        addr,
        method: method.to_owned(),
        path: path.to_owned(),
        source,
    };
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("connection", "close");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|source| HttpError::Request {
            method: method.to_owned(),
            path: path.to_owned(),
            source,
        })?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| HttpError::Connect { addr, source })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(exchange_error)?;
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.map_err(exchange_error)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(exchange_error)?
            .to_bytes();
        Ok(Response {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(HttpError::Timeout {
                addr,
                method: method.to_owned(),
                path: path.to_owned(),
            })
        })
}

/// `GET path`.
///
/// # Errors
/// As [`request`].
pub async fn get(addr: SocketAddr, path: &str) -> Result<Response, HttpError> {
    request(addr, "GET", path, &[], None).await
}
