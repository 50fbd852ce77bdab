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

use prometheus::IntCounter;
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

impl<T: Clone> Entry<T> {
    fn fresh(&self) -> Option<T> {
        (self.at.elapsed() < MAX_AGE).then(|| self.value.clone())
    }
}

/// One organisation's subscriptions, by event type.
type OrgEntries = HashMap<EventType, Entry<Arc<Vec<Subscription>>>>;

#[derive(Default)]
struct Maps {
    /// Per organisation, then per event type: looked up with borrowed keys, so a hit
    /// allocates nothing.
    by_event: HashMap<OrgId, OrgEntries>,
    by_webhook: HashMap<WebhookId, Entry<Option<Arc<Subscription>>>>,
}

/// The cache; cheap to clone.
#[derive(Clone)]
pub struct SubscriptionCache {
    store: wf_store::Store,
    maps: Arc<RwLock<Maps>>,
    generation: Arc<AtomicU64>,
    hits: IntCounter,
    misses: IntCounter,
}

impl SubscriptionCache {
    pub fn new(store: wf_store::Store) -> Self {
        let requests = &metrics().subscription_cache;
        SubscriptionCache {
            store,
            maps: Arc::default(),
            generation: Arc::default(),
            hits: requests.with_label_values(&["hit"]),
            misses: requests.with_label_values(&["miss"]),
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
        self.get_or_load(
            org,
            |m| m.by_event.get(org)?.get(&event)?.fresh(),
            async { Ok(Arc::new(self.store.subscriptions(org, event).await?)) },
            |m, entry| {
                m.by_event
                    .entry(org.clone())
                    .or_default()
                    .insert(event, entry);
            },
        )
        .await
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
        self.get_or_load(
            org,
            |m| m.by_webhook.get(id)?.fresh(),
            async {
                Ok(self
                    .store
                    .subscription(id)
                    .await?
                    .filter(|s| &s.org_id == org)
                    .map(Arc::new))
            },
            |m, entry| {
                m.by_webhook.insert(id.clone(), entry);
            },
        )
        .await
    }

    /// The cached value if fresh; otherwise `load`s it and caches it, unless an
    /// invalidation landed while the read was in flight (then the value is returned but
    /// not kept: it may predate the change).
    async fn get_or_load<V: Clone>(
        &self,
        org: &OrgId,
        cached: impl FnOnce(&Maps) -> Option<V>,
        load: impl std::future::Future<Output = Result<V, StoreError>>,
        insert: impl FnOnce(&mut Maps, Entry<V>),
    ) -> Result<V, StoreError> {
        if let Some(v) = cached(&self.maps.read().expect("cache lock")) {
            self.hits.inc();
            return Ok(v);
        }
        self.misses.inc();
        let gen = self.generation.load(Ordering::Acquire);
        let value = load.await?;
        let mut maps = self.maps.write().expect("cache lock");
        if self.generation.load(Ordering::Acquire) == gen {
            insert(
                &mut maps,
                Entry {
                    value: value.clone(),
                    org: org.clone(),
                    at: Instant::now(),
                },
            );
        }
        Ok(value)
    }

    /// Drops every entry of `org`.
    pub fn invalidate_org(&self, org: &OrgId) {
        let mut maps = self.maps.write().expect("cache lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        maps.by_event.remove(org);
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
