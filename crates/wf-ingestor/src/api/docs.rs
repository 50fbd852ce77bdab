//! The OpenAPI document's frame: its info, tags, the Bearer scheme and the responses every
//! authenticated route shares, and `GET /api/v1/openapi.json`, which serves it.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::content::Content;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi, Ref, RefOr};

use super::schema;

/// The frame the routes are added to (see `api::routes`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "WorkFlows webhooks API",
        description = "Manage webhooks and API keys, ingest events, and follow deliveries. \
                       Authenticate with `Authorization: Bearer wf_live_…`; every read and \
                       write is scoped to the key's organisation. Reference: docs/api.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    tags(
        (name = "webhooks", description = "Webhooks of the caller's organisation"),
        (name = "deliveries", description = "The delivery log: find, retry, replay, test"),
        (name = "events", description = "Event intake and the event type catalog"),
        (name = "api-keys", description = "API keys of the caller's organisation"),
        (name = "meta", description = "This document")
    ),
    components(schemas(schema::ErrorBody))
)]
pub struct ApiDoc;

/// The name of the security scheme in the document.
pub const BEARER: &str = "bearer";

/// Adds the Bearer scheme; to every operation that requires it the responses all
/// authenticated routes share: `401` (with `WWW-Authenticate`), `429` (with
/// `Retry-After`), `500` and `503`; and to every operation the limits' `408` and `413`.
pub fn finish(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("wf_live_<key>")
                .description(Some("An API key: `Authorization: Bearer wf_live_…`"))
                .build(),
        ),
    );
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.patch,
            &mut item.delete,
            &mut item.put,
        ]
        .into_iter()
        .flatten()
        {
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                add_shared_responses(op);
            }
            add_limit_responses(op);
        }
    }
}

fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
    )
}

fn add_shared_responses(op: &mut Operation) {
    let responses = &mut op.responses.responses;
    responses.entry("401".into()).or_insert_with(|| {
        RefOr::T(
            error_response(
                "`missing_api_key`: no `Authorization` header; `invalid_api_key`: not \
                 `Bearer wf_live_…`, or an unknown or revoked key",
            )
            .header(
                "WWW-Authenticate",
                Header::new(Object::with_type(Type::String)),
            )
            .build(),
        )
    });
    responses.entry("429".into()).or_insert_with(|| {
        RefOr::T(
            error_response(
                "`rate_limited`: this API key spent its budget (`POST /events` has one, every \
                 other route shares another); `Retry-After` says in how many seconds to \
                 try again",
            )
            .header("Retry-After", Header::new(Object::with_type(Type::Integer)))
            .build(),
        )
    });
    responses.entry("500".into()).or_insert_with(|| {
        RefOr::T(error_response("`internal_error`: a failure of ours, logged").build())
    });
    responses.entry("503".into()).or_insert_with(|| {
        RefOr::T(
            error_response("`service_unavailable`: Postgres or RabbitMQ unavailable; try again")
                .build(),
        )
    });
}

/// The responses of the limits every route has: `408` (no response within
/// `WF_HTTP_REQUEST_TIMEOUT`) and `413` (a `Content-Length` over 1 MiB; routes that read
/// a body say so themselves, with their own description).
fn add_limit_responses(op: &mut Operation) {
    let responses = &mut op.responses.responses;
    responses.entry("408".into()).or_insert_with(|| {
        RefOr::T(
            error_response(
                "`request_timeout`: the request (body included) took longer than the \
                 server's request timeout",
            )
            .build(),
        )
    });
    responses.entry("413".into()).or_insert_with(|| {
        RefOr::T(
            error_response("`payload_too_large`: a body over 1 MiB (this route takes none)")
                .build(),
        )
    });
}

/// The OpenAPI 3.1 document of this API. No authentication.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    operation_id = "getOpenApi",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn serve() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], super::openapi_json())
}
