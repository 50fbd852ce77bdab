//! Auto-disabling webhooks that keep failing (`WF_AUTO_DISABLE_AFTER`): a webhook with no
//! `2xx` for that long and at least [`AUTO_DISABLE_MIN_FAILURES`] failed attempts since
//! its last one is disabled with the reason `failing`, and its organisation gets a
//! `webhook.disabled` event, as after a `410 Gone`. Its queued deliveries are then dropped
//! like those of any inactive webhook.
//!
//! The delivery log keeps each webhook's health in the statement that records attempts,
//! so the hot path pays nothing extra; this periodic check reads only those rows, and
//! runs on one worker at a time (an advisory lock, like the retention pruning).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use wf_broker::Publisher;
use wf_core::config::AUTO_DISABLE_MIN_FAILURES;
use wf_core::envelope::Event;
use wf_core::events::EventType;
use wf_store::Store;

use crate::cache::SubscriptionCache;

/// How often the check runs for a window of `after`: a tenth of it, within 1 s and 60 s.
/// Disabling a few seconds late is harmless; checking more often than that costs a
/// query per worker for nothing.
pub fn check_every(after: Duration) -> Duration {
    (after / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Runs the check every [`check_every`]`(after)` until `stop`.
pub async fn auto_disable_loop(
    store: Store,
    publisher: Publisher,
    cache: SubscriptionCache,
    after: Duration,
    stop: CancellationToken,
) {
    let every = check_every(after);
    let Ok(window) = chrono::Duration::from_std(after) else {
        warn!("WF_AUTO_DISABLE_AFTER is too large to compute with; auto-disable is off");
        return;
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let cutoff = chrono::Utc::now() - window;
        match store
            .try_auto_disable(cutoff, AUTO_DISABLE_MIN_FAILURES)
            .await
        {
            Ok(Some(disabled)) => {
                for w in disabled {
                    warn!(
                        webhook_id = %w.id,
                        "webhook disabled: no 2xx for WF_AUTO_DISABLE_AFTER and at least \
                         {AUTO_DISABLE_MIN_FAILURES} failed attempts"
                    );
                    cache.invalidate_org(&w.org_id);
                    let ev = Event {
                        id: wf_core::ids::EventId::generate(),
                        event: EventType::WebhookDisabled,
                        org_id: w.org_id.clone(),
                        timestamp: wf_core::time::now_ms(),
                        data: w.view().to_json(),
                    };
                    wf_service::outbox::emit(&store, &publisher, &ev, "system").await;
                }
            }
            Ok(None) => debug!("another worker is running the auto-disable check"),
            Err(e) => warn!(error = %e, "auto-disable check failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_interval_follows_the_window_within_bounds() {
        assert_eq!(check_every(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(
            check_every(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
        assert_eq!(
            check_every(Duration::from_secs(5 * 86_400)),
            Duration::from_secs(60)
        );
    }
}
