//! The 30 event types of the public docs, in their 6 categories, and subscription filters
//! (`alert.created` or a category wildcard `alert.*`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the six categories of the public docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Alerts,
    Data,
    Projects,
    Users,
    Billing,
    WebhooksAndApiKeys,
}

impl Category {
    /// Display name as on the docs page.
    pub fn name(self) -> &'static str {
        match self {
            Category::Alerts => "Alerts",
            Category::Data => "Data",
            Category::Projects => "Projects",
            Category::Users => "Users",
            Category::Billing => "Billing",
            Category::WebhooksAndApiKeys => "Webhooks & API Keys",
        }
    }
}

macro_rules! event_types {
    ($( $variant:ident = $name:literal, $cat:ident, $desc:literal; )*) => {
        /// An event type: exactly one of the 30 of the public docs.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType { $( $variant, )* }

        impl EventType {
            /// Every event type, in the order of the docs.
            pub const ALL: &'static [EventType] = &[ $( EventType::$variant, )* ];

            /// The exact wire string, e.g. `alert.created`.
            pub fn as_str(self) -> &'static str {
                match self { $( EventType::$variant => $name, )* }
            }

            /// The category the docs list it under.
            pub fn category(self) -> Category {
                match self { $( EventType::$variant => Category::$cat, )* }
            }

            /// The one-line description of the docs.
            pub fn description(self) -> &'static str {
                match self { $( EventType::$variant => $desc, )* }
            }

            /// Parses the exact wire string; anything else is `None`.
            pub fn parse(s: &str) -> Option<EventType> {
                match s { $( $name => Some(EventType::$variant), )* _ => None }
            }
        }
    };
}

event_types! {
    AlertCreated = "alert.created", Alerts, "A new alert was created";
    AlertAcknowledged = "alert.acknowledged", Alerts, "An alert was acknowledged";
    AlertAssigned = "alert.assigned", Alerts, "An alert was assigned to a user";
    AlertResolved = "alert.resolved", Alerts, "An alert was resolved";
    AlertCritical = "alert.critical", Alerts, "A critical alert was triggered";
    AlertDeleted = "alert.deleted", Alerts, "An alert was deleted";
    CsvUploaded = "csv.uploaded", Data, "A CSV file was uploaded to a project";
    DataDbImport = "data.db_import", Data, "Data was imported from a database connection";
    QueryCompleted = "query.completed", Data, "An AI query finished processing";
    QueryDeleted = "query.deleted", Data, "A query was deleted";
    ProjectCreated = "project.created", Projects, "A project was created";
    ProjectUpdated = "project.updated", Projects, "A project was updated";
    ProjectDeleted = "project.deleted", Projects, "A project was deleted";
    DbConnectionCreated = "db_connection.created", Projects, "A DB connection was added";
    DbConnectionUpdated = "db_connection.updated", Projects, "A DB connection was modified";
    DbConnectionDeleted = "db_connection.deleted", Projects, "A DB connection was removed";
    UserInvited = "user.invited", Users, "A user was invited to the organization";
    UserJoined = "user.joined", Users, "A user accepted an invitation";
    UserActivated = "user.activated", Users, "A user account was activated";
    UserDeactivated = "user.deactivated", Users, "A user account was deactivated";
    BillingSubscriptionActivated = "billing.subscription_activated", Billing, "A subscription was activated";
    BillingSubscriptionCancelled = "billing.subscription_cancelled", Billing, "A subscription was cancelled";
    BillingTrialExpired = "billing.trial_expired", Billing, "A free trial expired";
    BillingPaymentFailed = "billing.payment_failed", Billing, "A payment failed";
    WebhookCreated = "webhook.created", WebhooksAndApiKeys, "A webhook was registered";
    WebhookEnabled = "webhook.enabled", WebhooksAndApiKeys, "A webhook was enabled";
    WebhookDisabled = "webhook.disabled", WebhooksAndApiKeys, "A webhook was disabled";
    WebhookDeleted = "webhook.deleted", WebhooksAndApiKeys, "A webhook was deleted";
    ApiKeyCreated = "api_key.created", WebhooksAndApiKeys, "An API key was generated";
    ApiKeyDeleted = "api_key.deleted", WebhooksAndApiKeys, "An API key was revoked";
}

impl EventType {
    /// The part before the dot (`alert` for `alert.created`), which is what a wildcard names.
    pub fn prefix(self) -> &'static str {
        let s = self.as_str();
        &s[..s.find('.').unwrap_or(s.len())]
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a string that is not one of the 30 event types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type `{0}`")]
pub struct UnknownEvent(pub String);

impl FromStr for EventType {
    type Err = UnknownEvent;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::parse(s).ok_or_else(|| UnknownEvent(s.to_owned()))
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EventType::parse(&s).ok_or_else(|| serde::de::Error::custom(UnknownEvent(s.into_owned())))
    }
}

/// What a webhook subscribes to: one event type, or every event whose type starts with
/// `prefix.` (`alert.*`). Wildcard prefixes are the ones the 30 event types use
/// (`alert`, `csv`, `data`, `query`, `project`, `db_connection`, `user`, `billing`,
/// `webhook`, `api_key`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventFilter {
    Exact(EventType),
    Wildcard(&'static str),
}

impl EventFilter {
    /// Parses `alert.created` or `alert.*`; anything else is an [`UnknownEvent`].
    pub fn parse(s: &str) -> Result<EventFilter, UnknownEvent> {
        if let Some(prefix) = s.strip_suffix(".*") {
            return EventType::ALL
                .iter()
                .map(|e| e.prefix())
                .find(|p| *p == prefix)
                .map(EventFilter::Wildcard)
                .ok_or_else(|| UnknownEvent(s.to_owned()));
        }
        EventType::parse(s)
            .map(EventFilter::Exact)
            .ok_or_else(|| UnknownEvent(s.to_owned()))
    }

    /// Whether an event of this type matches the filter.
    pub fn matches(&self, event: EventType) -> bool {
        match self {
            EventFilter::Exact(e) => *e == event,
            EventFilter::Wildcard(p) => event.prefix() == *p,
        }
    }

    /// The event type that stands for this filter (what a test send delivers): the type
    /// itself, or for a wildcard the first type with its prefix in the order of the docs
    /// (`alert.*` → `alert.created`).
    pub fn first_type(&self) -> Option<EventType> {
        match self {
            EventFilter::Exact(e) => Some(*e),
            EventFilter::Wildcard(p) => EventType::ALL.iter().copied().find(|e| e.prefix() == *p),
        }
    }

    /// The wire string (`alert.created` or `alert.*`).
    pub fn as_string(&self) -> String {
        match self {
            EventFilter::Exact(e) => e.as_str().to_owned(),
            EventFilter::Wildcard(p) => format!("{p}.*"),
        }
    }
}

/// A non-empty, duplicate-free list of filters, in the order first given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFilters(Vec<EventFilter>);

/// Why a list of event filters was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventFiltersError {
    #[error("at least one event is required")]
    Empty,
    #[error(transparent)]
    Unknown(#[from] UnknownEvent),
}

impl EventFilters {
    /// Parses each entry, removes duplicates (keeping the first), and refuses an empty list.
    ///
    /// # Errors
    /// [`EventFiltersError::Empty`] for no entries, [`EventFiltersError::Unknown`] for the
    /// first entry that is neither an event type nor a category wildcard.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<EventFilters, EventFiltersError> {
        if items.is_empty() {
            return Err(EventFiltersError::Empty);
        }
        let mut out: Vec<EventFilter> = Vec::with_capacity(items.len());
        for item in items {
            let f = EventFilter::parse(item.as_ref())?;
            if !out.contains(&f) {
                out.push(f);
            }
        }
        Ok(EventFilters(out))
    }

    /// Whether any filter matches the event.
    pub fn matches(&self, event: EventType) -> bool {
        self.0.iter().any(|f| f.matches(event))
    }

    /// The wire strings, in order.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(EventFilter::as_string).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &EventFilter> {
        self.0.iter()
    }

    /// The event type a test send uses by default: the first filter's
    /// [`first_type`](EventFilter::first_type).
    pub fn first_type(&self) -> Option<EventType> {
        self.0.first().and_then(EventFilter::first_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_events_in_six_categories() {
        assert_eq!(EventType::ALL.len(), 30);
        let mut cats: Vec<_> = EventType::ALL.iter().map(|e| e.category()).collect();
        cats.dedup();
        assert_eq!(cats.len(), 6);
        for e in EventType::ALL {
            assert_eq!(EventType::parse(e.as_str()), Some(*e));
        }
    }

    #[test]
    fn exact_strings_only() {
        assert_eq!(EventType::parse("Alert.Created"), None);
        assert_eq!(EventType::parse("alert.created "), None);
        assert_eq!(EventType::parse("alert"), None);
        assert_eq!(
            EventType::parse("data.db_import"),
            Some(EventType::DataDbImport)
        );
    }

    #[test]
    fn wildcards() {
        let f = EventFilter::parse("alert.*").unwrap();
        assert!(f.matches(EventType::AlertCritical));
        assert!(!f.matches(EventType::CsvUploaded));
        assert!(EventFilter::parse("billing.*").is_ok());
        assert!(EventFilter::parse("db_connection.*").is_ok());
        assert!(EventFilter::parse("nope.*").is_err());
        assert!(EventFilter::parse("*").is_err());
        assert!(EventFilter::parse("alert.").is_err());
    }

    #[test]
    fn first_types() {
        let first = |items: &[&str]| EventFilters::parse(items).unwrap().first_type();
        assert_eq!(
            first(&["csv.uploaded", "alert.*"]),
            Some(EventType::CsvUploaded)
        );
        assert_eq!(first(&["alert.*"]), Some(EventType::AlertCreated));
        assert_eq!(first(&["data.*"]), Some(EventType::DataDbImport));
        assert_eq!(
            first(&["db_connection.*"]),
            Some(EventType::DbConnectionCreated)
        );
        assert_eq!(first(&["api_key.*"]), Some(EventType::ApiKeyCreated));
        for e in EventType::ALL {
            let wildcard = format!("{}.*", e.prefix());
            assert!(first(&[&wildcard]).is_some_and(|f| f.prefix() == e.prefix()));
        }
    }

    #[test]
    fn filters_dedupe_and_refuse_empty() {
        let f = EventFilters::parse(&["alert.created", "csv.uploaded", "alert.created"]).unwrap();
        assert_eq!(f.to_strings(), vec!["alert.created", "csv.uploaded"]);
        assert_eq!(
            EventFilters::parse::<&str>(&[]),
            Err(EventFiltersError::Empty)
        );
        assert!(matches!(
            EventFilters::parse(&["alert.created", "bogus.event"]),
            Err(EventFiltersError::Unknown(_))
        ));
    }
}
