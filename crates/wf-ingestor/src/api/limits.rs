//! What one client may take of the API: a request budget per API key
//! (`WF_API_RATE_LIMIT_EVENTS` for `POST /api/v1/events`, `WF_API_RATE_LIMIT_MANAGEMENT`
//! for every other authenticated route) and a whole-request timeout
//! (`WF_HTTP_REQUEST_TIMEOUT`), and the body limit of every route. All answer with the
//! API's error shape.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;
use wf_core::config::{ApiLimits, RateLimit};
use wf_core::ids::ApiKeyId;
use wf_telemetry::metrics;

use super::ApiError;

/// Which budget a request spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// `POST /api/v1/events`.
    Events,
    /// Every other authenticated route.
    Management,
}

impl Budget {
    /// The `wf_http_rate_limited_total{budget}` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Budget::Events => "events",
            Budget::Management => "management",
        }
    }
}

/// The two per-key budgets; `None` is a budget that is off.
pub struct RateLimits {
    events: Option<DefaultKeyedRateLimiter<ApiKeyId>>,
    management: Option<DefaultKeyedRateLimiter<ApiKeyId>>,
}

/// How often keys whose budget is full again are forgotten: the limiter then holds only
/// the keys used in the last moments, whatever the number of keys ever seen.
const EVICT_EVERY: Duration = Duration::from_secs(30);

fn limiter(rate: Option<RateLimit>) -> Option<DefaultKeyedRateLimiter<ApiKeyId>> {
    let rate = rate?;
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst)?;
    Some(RateLimiter::keyed(
        Quota::per_second(per_second).allow_burst(burst),
    ))
}

impl RateLimits {
    pub fn new(limits: &ApiLimits) -> RateLimits {
        RateLimits {
            events: limiter(limits.events_rate),
            management: limiter(limits.management_rate),
        }
    }

    /// Spends one request of `key`'s `budget`; when it is spent, `429 rate_limited` with
    /// `Retry-After` (whole seconds, at least 1), counted.
    pub fn check(&self, budget: Budget, key: &ApiKeyId) -> Result<(), ApiError> {
        let limiter = match budget {
            Budget::Events => &self.events,
            Budget::Management => &self.management,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics()
                .http_rate_limited
                .with_label_values(&[budget.as_str()])
                .inc();
            ApiError::rate_limited(budget, retry_after_seconds(wait))
        })
    }

    /// Keys tracked now (both budgets).
    pub fn tracked_keys(&self) -> usize {
        [&self.events, &self.management]
            .into_iter()
            .flatten()
            .map(|l| l.len())
            .sum()
    }

    /// Forgets keys whose budget is full again (a forgotten key starts full, so nothing
    /// changes for it), every 30 s until `shutdown`.
    pub async fn evict_idle(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(EVICT_EVERY) => {}
            }
            self.evict_now();
        }
    }

    fn evict_now(&self) {
        for l in [&self.events, &self.management].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
fn retry_after_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// Middleware: a request whose `Content-Length` announces more than
/// [`super::MAX_BODY_BYTES`] is `413 payload_too_large` on every route, whether or not
/// the route reads a body, before anything else is done with it. (A body without a
/// length is cut at the same size by the routes that read one.)
pub async fn refuse_oversized(req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > super::MAX_BODY_BYTES as u64) {
        return ApiError::payload_too_large().into_response();
    }
    next.run(req).await
}

/// Middleware: a request that has no response within `WF_HTTP_REQUEST_TIMEOUT` (body read
/// included) gets `408 request_timeout`, and its handler is dropped.
pub async fn request_timeout(
    State(timeout): State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request took longer than {}; send it again",
                wf_core::duration::format_duration(timeout)
            ),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(events: Option<RateLimit>, management: Option<RateLimit>) -> RateLimits {
        RateLimits::new(&ApiLimits {
            header_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            max_connections: 1,
            events_rate: events,
            management_rate: management,
        })
    }

    fn key(n: u8) -> ApiKeyId {
        ApiKeyId::parse(&format!("key_{n:032x}")).unwrap()
    }

    #[test]
    fn a_spent_budget_is_429_with_retry_after_and_other_keys_and_budgets_are_untouched() {
        let slow = RateLimit {
            per_second: 1,
            burst: 2,
        };
        let l = limits(Some(slow), Some(slow));
        let (a, b) = (key(1), key(2));
        assert!(l.check(Budget::Events, &a).is_ok());
        assert!(l.check(Budget::Events, &a).is_ok());
        let err = l.check(Budget::Events, &a).unwrap_err();
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.code, "rate_limited");
        assert_eq!(err.retry_after, Some(1));
        let resp = err.into_response();
        assert_eq!(resp.headers()["retry-after"], "1");
        // Another key, and the same key's other budget, still have theirs.
        assert!(l.check(Budget::Events, &b).is_ok());
        assert!(l.check(Budget::Management, &a).is_ok());
        assert_eq!(l.tracked_keys(), 3);
    }

    #[test]
    fn an_off_budget_never_refuses_and_tracks_nothing() {
        let l = limits(None, None);
        for _ in 0..10_000 {
            assert!(l.check(Budget::Events, &key(1)).is_ok());
            assert!(l.check(Budget::Management, &key(1)).is_ok());
        }
        assert_eq!(l.tracked_keys(), 0);
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let fast = RateLimit {
            per_second: 1_000_000,
            burst: 1,
        };
        let l = limits(Some(fast), None);
        for n in 0..100 {
            l.check(Budget::Events, &key(n)).unwrap();
        }
        assert_eq!(l.tracked_keys(), 100);
        // A million a second: every budget is full again within a microsecond.
        std::thread::sleep(Duration::from_millis(5));
        l.evict_now();
        assert_eq!(l.tracked_keys(), 0);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
    }
}
