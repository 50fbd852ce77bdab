//! Errors of this crate. Each variant says whether trying again can help, so callers can
//! decide between retrying, nacking for redelivery, and giving up loudly.

use lapin::ErrorKind;

/// AMQP reply codes we react to.
pub(crate) mod code {
    pub(crate) const ACCESS_REFUSED: u16 = 403;
    pub(crate) const NOT_FOUND: u16 = 404;
    pub(crate) const PRECONDITION_FAILED: u16 = 406;
    pub(crate) const NOT_ALLOWED: u16 = 530;
}

/// Anything that went wrong talking to RabbitMQ, except publishing (see [`PublishError`]).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The AMQP URL does not parse. Not retryable.
    #[error("invalid AMQP URL `{url}`: {detail}")]
    InvalidUrl {
        /// The URL with its password replaced by `***`.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// RabbitMQ could not be reached (or refused us) within the allotted time. Retryable
    /// when the broker was merely down; see `detail` for refusals such as bad credentials.
    #[error("could not connect to RabbitMQ at {url} within {waited_secs}s: {detail}")]
    Connect {
        /// The URL with its password replaced by `***`.
        url: String,
        /// How long we kept trying.
        waited_secs: u64,
        /// The last error seen.
        detail: String,
        /// False when the broker refused us (credentials, vhost): waiting will not help.
        retryable: bool,
    },
    /// The connection is down and did not come back within the allotted time. Retryable.
    #[error("RabbitMQ at {url} is not reachable right now (reconnecting in the background)")]
    Unavailable {
        /// The URL with its password replaced by `***`.
        url: String,
    },
    /// [`crate::Broker::close`] was called. Not retryable.
    #[error("the RabbitMQ connection was closed by this process")]
    Closed,
    /// A queue or exchange already exists with other arguments than the ones declared
    /// (typically another `WF_QUEUE_TYPE`, delivery limit or TTL). Not retryable: an
    /// operator has to delete it.
    #[error(
        "RabbitMQ {kind} `{name}` already exists with different arguments ({detail}); \
         it was declared by another version or with another WF_QUEUE_TYPE. Move its messages \
         elsewhere if needed, delete it (e.g. `rabbitmqctl delete_queue {name}` for a queue) \
         and declare the topology again"
    )]
    TopologyConflict {
        /// `queue` or `exchange`.
        kind: &'static str,
        /// The queue or exchange name.
        name: String,
        /// RabbitMQ's explanation.
        detail: String,
    },
    /// The queue or exchange does not exist. Not retryable until the topology is declared.
    #[error("RabbitMQ {kind} `{name}` does not exist ({detail}); declare the topology first")]
    NotFound {
        /// `queue` or `exchange`.
        kind: &'static str,
        /// The queue or exchange name.
        name: String,
        /// RabbitMQ's explanation.
        detail: String,
    },
    /// A name is not valid in AMQP (longer than 255 bytes). Not retryable.
    #[error("invalid AMQP name `{name}`: {detail}")]
    InvalidName {
        /// The offending name, truncated.
        name: String,
        /// Why it is invalid.
        detail: String,
    },
    /// An ack or nack could not be sent: the delivery's channel is gone (the broker will
    /// redeliver the message), or it was already settled. Not retryable for this
    /// delivery; the redelivered copy is what gets processed.
    #[error("could not {op} the delivery: {detail}")]
    Settle {
        /// `ack` or `nack`.
        op: &'static str,
        /// Why.
        detail: String,
    },
    /// An AMQP operation failed on the channel or connection. Retryable unless the
    /// broker refused it for permissions.
    #[error("RabbitMQ {op} failed: {detail}")]
    Operation {
        /// The operation (`queue.declare`, `basic.consume`, …), with its target.
        op: String,
        /// lapin's or the broker's explanation.
        detail: String,
        /// Whether trying again (on a fresh channel) can help.
        retryable: bool,
    },
}

impl BrokerError {
    /// Whether trying the same thing again later can succeed without an operator.
    pub fn is_retryable(&self) -> bool {
        match self {
            BrokerError::Connect { retryable, .. } | BrokerError::Operation { retryable, .. } => {
                *retryable
            }
            BrokerError::Unavailable { .. } => true,
            BrokerError::InvalidUrl { .. }
            | BrokerError::Closed
            | BrokerError::TopologyConflict { .. }
            | BrokerError::NotFound { .. }
            | BrokerError::InvalidName { .. }
            | BrokerError::Settle { .. } => false,
        }
    }

    /// Maps a lapin error of an operation on `kind` `name` (a queue or exchange).
    pub(crate) fn on_object(op: &str, kind: &'static str, name: &str, e: &lapin::Error) -> Self {
        match amqp_code(e) {
            Some(code::PRECONDITION_FAILED) => BrokerError::TopologyConflict {
                kind,
                name: name.to_owned(),
                detail: amqp_message(e),
            },
            Some(code::NOT_FOUND) => BrokerError::NotFound {
                kind,
                name: name.to_owned(),
                detail: amqp_message(e),
            },
            _ => BrokerError::operation(&format!("{op} {name}"), e),
        }
    }

    pub(crate) fn operation(op: &str, e: &lapin::Error) -> Self {
        BrokerError::Operation {
            op: op.to_owned(),
            detail: e.to_string(),
            retryable: !matches!(amqp_code(e), Some(code::ACCESS_REFUSED | code::NOT_ALLOWED)),
        }
    }
}

/// Why a publish was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The broker refused the message (`basic.nack`), e.g. a quorum queue with
    /// `x-overflow: reject-publish` that is full. Retryable later.
    #[error("RabbitMQ nacked the message")]
    Nacked,
    /// `mandatory` was set and no queue is bound for this exchange and routing key: the
    /// topology is missing or wrong. Not retryable until the topology is fixed.
    #[error("the message was unroutable (no queue bound for its exchange and routing key)")]
    Unroutable,
    /// The channel or connection failed before the broker confirmed; the message may or
    /// may not have been enqueued (publish again: delivery is at least once). Retryable;
    /// the next publish uses a fresh channel.
    #[error("RabbitMQ connection problem while publishing: {0}")]
    Connection(String),
    /// The message cannot be expressed in AMQP (a name or header key over 255 bytes).
    /// Not retryable.
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl PublishError {
    /// Whether publishing the same message again later can succeed without an operator.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PublishError::Nacked | PublishError::Connection(_))
    }
}

/// The AMQP reply code carried by a lapin error, if it is a protocol error.
pub(crate) fn amqp_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        ErrorKind::ProtocolError(p) => Some(p.get_id()),
        _ => None,
    }
}

fn amqp_message(e: &lapin::Error) -> String {
    match e.kind() {
        ErrorKind::ProtocolError(p) => p.get_message().to_string(),
        _ => e.to_string(),
    }
}

/// Replaces the password of an AMQP URL with `***`, so URLs can go into errors and logs.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..rest_start],
        &userinfo[..colon],
        &rest[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password_only() {
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("amqps://u:p%40ss@host/vh?heartbeat=10"),
            "amqps://u:***@host/vh?heartbeat=10"
        );
        assert_eq!(
            redact_url("amqp://127.0.0.1:5672/%2f"),
            "amqp://127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://user@host/"), "amqp://user@host/");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn retryability() {
        assert!(PublishError::Nacked.is_retryable());
        assert!(PublishError::Connection("x".into()).is_retryable());
        assert!(!PublishError::Unroutable.is_retryable());
        assert!(BrokerError::Unavailable { url: "u".into() }.is_retryable());
        assert!(!BrokerError::Closed.is_retryable());
    }
}
