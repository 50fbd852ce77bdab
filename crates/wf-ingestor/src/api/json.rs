//! Request bodies: read as bytes (so oversize is our `413` and bad JSON our `400`), then
//! parsed into a JSON object that `wf_core::requests` checks field by field, naming the
//! field in the error.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde_json::{Map, Value};
use wf_core::requests::parse_object;

use super::ApiError;

/// A JSON object body.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        parse_object(&bytes).map(JsonObject).map_err(ApiError::from)
    }
}

/// A JSON object body that may be left out: an empty body, or `null`, is `{}`.
pub struct OptionalJsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) || bytes.trim_ascii() == b"null" {
            return Ok(OptionalJsonObject(Map::new()));
        }
        parse_object(&bytes)
            .map(OptionalJsonObject)
            .map_err(ApiError::from)
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large()
        } else {
            ApiError::new(rej.status(), "invalid_body", rej.body_text())
        }
    })
}
