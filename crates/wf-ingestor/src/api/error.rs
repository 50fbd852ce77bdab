//! The one error body of the API: `{"error": {"code", "message", "field"?}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::error;
use wf_core::requests::RequestError;

use super::schema::{ErrorBody, ErrorDetail};

/// An API error: status, stable snake_case code, human message, and the JSON field at
/// fault when there is one.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<&'static str>,
    /// Seconds for a `Retry-After` header (`429`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn with_field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    /// `422`: a rule of the API was broken.
    pub fn invalid(code: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message).with_field(field)
    }

    /// `400 invalid_json`: the body is not JSON or a field has the wrong type.
    pub fn bad_json(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// `413 payload_too_large`: a body over [`super::MAX_BODY_BYTES`].
    pub fn payload_too_large() -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds {} bytes", super::MAX_BODY_BYTES),
        )
    }

    /// `429 rate_limited`: the key spent `budget`; try again in `retry_after` seconds.
    pub fn rate_limited(budget: super::limits::Budget, retry_after: u64) -> Self {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "this API key sent too many {} requests; try again in {retry_after}s",
                budget.as_str()
            ),
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// `500`/`503` for failures of our own dependencies; the cause is logged, not shown.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        error!(error = %err, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; it has been logged",
        )
    }

    pub fn unavailable(context: &str, err: impl std::fmt::Display) -> Self {
        error!(error = %err, "{context}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            format!("{context}; try again"),
        )
    }
}

/// A body `wf_core::requests` refused: its status, code, message and field as they are.
impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        ApiError {
            status: StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            code: e.code,
            message: e.message,
            field: e.field,
            retry_after: None,
        }
    }
}

impl From<wf_store::StoreError> for ApiError {
    fn from(e: wf_store::StoreError) -> Self {
        if e.is_retryable() {
            ApiError::unavailable("database unavailable", e)
        } else {
            ApiError::internal("database error", e)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}
