//! Request bodies: read as bytes (so oversize is our `413` and bad JSON our `400`), then
//! parsed into a JSON object whose fields handlers check one by one, with the field named
//! in the error.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::ApiError;

/// A JSON object body.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        parse_object(&bytes).map(JsonObject)
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
        parse_object(&bytes).map(OptionalJsonObject)
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body exceeds {} bytes", super::MAX_BODY_BYTES),
            )
        } else {
            ApiError::new(rej.status(), "invalid_body", rej.body_text())
        }
    })
}

/// Parses bytes as a JSON object.
///
/// # Errors
/// `400 invalid_json` for malformed JSON, an empty body, or a non-object.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_json(
            "request body is empty; expected a JSON object",
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_json("request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_json(format!("malformed JSON: {e}"))),
    }
}

/// An optional string field; `null` counts as absent.
///
/// # Errors
/// `400 invalid_json` naming the field when present with another type.
pub fn opt_string(m: &Map<String, Value>, field: &'static str) -> Result<Option<String>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_json(format!("`{field}` must be a string")).with_field(field)),
    }
}

/// An optional boolean field; `null` counts as absent.
///
/// # Errors
/// `400 invalid_json` naming the field when present with another type.
pub fn opt_bool(m: &Map<String, Value>, field: &'static str) -> Result<Option<bool>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => {
            Err(ApiError::bad_json(format!("`{field}` must be a boolean")).with_field(field))
        }
    }
}

/// An optional array-of-strings field; `null` counts as absent.
///
/// # Errors
/// `400 invalid_json` naming the field when present with another type.
pub fn opt_string_array(
    m: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<Vec<String>>, ApiError> {
    let wrong =
        || ApiError::bad_json(format!("`{field}` must be an array of strings")).with_field(field);
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(wrong))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(wrong()),
    }
}

/// An optional object of string values, in the order given; `null` counts as absent.
///
/// # Errors
/// `400 invalid_json` naming the field when it is not an object of strings.
pub fn opt_string_map(
    m: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<Vec<(String, String)>>, ApiError> {
    let wrong = || {
        ApiError::bad_json(format!("`{field}` must be an object of string values"))
            .with_field(field)
    };
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(items)) => items
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|v| (k.clone(), v.to_owned()))
                    .ok_or_else(wrong)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(wrong()),
    }
}
