//! API-key authentication: `Authorization: Bearer wf_live_<key>`. The key decides the
//! organisation every read and write is scoped to, and the budget (`api::limits`) the
//! request spends.

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use wf_core::ids::{ApiKeyId, OrgId};

use super::limits::Budget;
use super::ApiError;

/// The route whose requests spend the `events` budget; every other authenticated
/// request spends the `management` one.
const INGEST_ROUTE: &str = "/api/v1/events";
use crate::AppState;

/// The authenticated caller.
pub struct Caller {
    pub org: OrgId,
    #[allow(dead_code)]
    pub key_id: ApiKeyId,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized("missing_api_key", "missing Authorization: Bearer <API key>")
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| t.starts_with("wf_live_") && t.len() > "wf_live_".len())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "invalid_api_key",
                    "malformed Authorization header; expected `Bearer wf_live_…`",
                )
            })?;
        let key = state.store.authenticate(token).await?.ok_or_else(|| {
            ApiError::unauthorized("invalid_api_key", "unknown or revoked API key")
        })?;
        let budget = if parts.method == axum::http::Method::POST
            && parts
                .extensions
                .get::<MatchedPath>()
                .is_some_and(|p| p.as_str() == INGEST_ROUTE)
        {
            Budget::Events
        } else {
            Budget::Management
        };
        state.rate_limits.check(budget, &key.id)?;
        Ok(Caller {
            org: key.org_id,
            key_id: key.id,
        })
    }
}
