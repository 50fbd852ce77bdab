//! Subscriptions served from memory, invalidated by Postgres `LISTEN/NOTIFY`.
//!
//! Every webhook change fires `pg_notify('wf_webhooks', org_id)`; the change feed turns
//! that into an invalidation of the organisation's entries, and a reconnect of the feed
//! (when notifications may have been missed) flushes everything. A generation counter
//! closes the race between a database read and an invalidation that lands while the read
//! is in flight: a read started before an invalidation is not cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wf_core::events::EventType;
use wf_core::ids::{OrgId, WebhookId};
use wf_store::{ChangeEvent, StoreError, Subscription};
use wf_telemetry::metrics;

/// Safety net: even with a healthy change feed, no entry lives longer than this.
const MAX_AGE: Duration = Duration::from_secs(60);

struct Entry<T> {
    value: T,
    org: OrgId,
    at: Instant,
}

#[derive(Default)]
struct Maps {
    by_event: HashMap<(OrgId, EventType), Entry<Arc<Vec<Subscription>>>>,
    by_webhook: HashMap<WebhookId, Entry<Option<Arc<Subscription>>>>,
}

/// The cache; cheap to clone.
#[derive(Clone)]
pub struct SubscriptionCache {
    store: wf_store::Store,
    maps: Arc<RwLock<Maps>>,
    generation: Arc<AtomicU64>,
}

impl SubscriptionCache {
    pub fn new(store: wf_store::Store) -> Self {
        SubscriptionCache {
            store,
            maps: Arc::default(),
            generation: Arc::default(),
        }
    }

    /// Active webhooks of `org` subscribed to `event`.
    ///
    /// # Errors
    /// The store's error on a miss that cannot be read from Postgres.
    pub async fn for_event(
        &self,
        org: &OrgId,
        event: EventType,
    ) -> Result<Arc<Vec<Subscription>>, StoreError> {
        let key = (org.clone(), event);
        if let Some(e) = self.maps.read().expect("cache lock").by_event.get(&key) {
            if e.at.elapsed() < MAX_AGE {
                metrics()
                    .subscription_cache
                    .with_label_values(&["hit"])
                    .inc();
                return Ok(e.value.clone());
            }
        }
        metrics()
            .subscription_cache
            .with_label_values(&["miss"])
            .inc();
        let gen = self.generation.load(Ordering::Acquire);
        let subs = Arc::new(self.store.subscriptions(org, event).await?);
        let mut maps = self.maps.write().expect("cache lock");
        if self.generation.load(Ordering::Acquire) == gen {
            maps.by_event.insert(
                key,
                Entry {
                    value: subs.clone(),
                    org: org.clone(),
                    at: Instant::now(),
                },
            );
        }
        Ok(subs)
    }

    /// The webhook if it is still active (None once deleted or disabled).
    ///
    /// # Errors
    /// The store's error on a miss that cannot be read from Postgres.
    pub async fn webhook(
        &self,
        org: &OrgId,
        id: &WebhookId,
    ) -> Result<Option<Arc<Subscription>>, StoreError> {
        if let Some(e) = self.maps.read().expect("cache lock").by_webhook.get(id) {
            if e.at.elapsed() < MAX_AGE {
                metrics()
                    .subscription_cache
                    .with_label_values(&["hit"])
                    .inc();
                return Ok(e.value.clone());
            }
        }
        metrics()
            .subscription_cache
            .with_label_values(&["miss"])
            .inc();
        let gen = self.generation.load(Ordering::Acquire);
        let sub = self
            .store
            .subscription(id)
            .await?
            .filter(|s| &s.org_id == org)
            .map(Arc::new);
        let mut maps = self.maps.write().expect("cache lock");
        if self.generation.load(Ordering::Acquire) == gen {
            maps.by_webhook.insert(
                id.clone(),
                Entry {
                    value: sub.clone(),
                    org: org.clone(),
                    at: Instant::now(),
                },
            );
        }
        Ok(sub)
    }

    /// Drops every entry of `org`.
    pub fn invalidate_org(&self, org: &OrgId) {
        let mut maps = self.maps.write().expect("cache lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        maps.by_event.retain(|_, e| &e.org != org);
        maps.by_webhook.retain(|_, e| &e.org != org);
    }

    /// Drops everything (after the change feed reconnected).
    pub fn clear(&self) {
        let mut maps = self.maps.write().expect("cache lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        maps.by_event.clear();
        maps.by_webhook.clear();
    }

    /// Follows the change feed until `shutdown`.
    pub async fn follow(self, mut feed: wf_store::ChangeFeed, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = feed.next() => match ev {
                    ChangeEvent::WebhookChanged(org) => self.invalidate_org(&org),
                    ChangeEvent::Resync => {
                        info!("subscription change feed (re)connected; flushing the cache");
                        self.clear();
                    }
                },
            }
        }
    }
}

/// Logs once that the cache runs without invalidation (the feed could not start).
pub fn warn_no_feed(e: &StoreError) {
    warn!(error = %e, "no subscription change feed; cache entries expire after 60 s instead");
}
