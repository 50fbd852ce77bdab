//! Configuration from `WF_*` environment variables (README, "Configuration").
//!
//! Every variable has a working local default, so `wf-ingestor` and `wf-worker` start on a
//! developer machine with no environment at all. A value that is set but wrong is a
//! start-up error naming the variable and the value ([`ConfigError`]), never a silent
//! fallback to the default: an operator who typed `WF_DELIVERY_TIMEOUT=10` meant something.
//!
//! This module does no I/O beyond the caller-supplied lookup: [`Config::from_lookup`] is the
//! testable core and [`Config::from_env`] feeds it `std::env`. In particular
//! `WF_EXTRA_ROOT_CA` is only checked to be a path here; the delivery client reads the file
//! and reports an unreadable one.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::duration::{parse_duration, RetrySchedule};
pub use crate::secret_keys::SecretKeys;
use crate::url_policy::AllowedCidrs;

/// Queue type for the declared queues (`WF_QUEUE_TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum QueueType {
    #[default]
    Quorum,
    Classic,
}

impl QueueType {
    /// The `x-queue-type` argument value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

/// Which process is reading the configuration. Only defaults differ by role: the ingestor
/// and the worker get different metrics ports so both can run on one machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Ingestor,
    Worker,
    Cli,
}

/// Log output format (`WF_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// The value as written in `WF_LOG_FORMAT`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// A variable that is set to a value we cannot use.
///
/// Displays as ``invalid WF_X=`value`: reason``. Secret material never appears in `value`:
/// `WF_SECRET_KEY` is shown as `<redacted>` and URL passwords as `***`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}=`{value}`: {reason}")]
pub struct ConfigError {
    /// The variable's name, e.g. `WF_DELIVERY_TIMEOUT`.
    pub variable: &'static str,
    /// The value as given (redacted where it could hold a secret).
    pub value: String,
    /// What is wrong and what would be accepted.
    pub reason: String,
}

/// The whole configuration of one process, parsed and valid by construction.
#[derive(Clone)]
pub struct Config {
    /// `WF_DATABASE_URL`: Postgres connection URL.
    pub database_url: String,
    /// `WF_AMQP_URL`: RabbitMQ node URLs, comma-separated, each checked.
    pub amqp_url: String,
    /// `WF_QUORUM_GROUP_SIZE`: replicas of each quorum queue declared
    /// (`x-quorum-initial-group-size`).
    pub quorum_group_size: u16,
    /// `WF_HTTP_ADDR`: the ingestor's API listen address.
    pub http_addr: SocketAddr,
    /// `WF_METRICS_ADDR`: `/metrics`, `/healthz`, `/readyz`.
    pub metrics_addr: SocketAddr,
    /// `WF_ALLOWED_TARGET_CIDRS`: ranges exempt from the private-address block.
    pub allowed_target_cidrs: AllowedCidrs,
    /// `WF_EXTRA_ROOT_CA`: PEM file of extra trusted roots (not read here).
    pub extra_root_ca: Option<PathBuf>,
    /// `WF_RETRY_SCHEDULE`: delays before retry 1..N.
    pub retry_schedule: RetrySchedule,
    /// `WF_DELIVERY_TIMEOUT`: whole-request timeout of one delivery attempt.
    pub delivery_timeout: Duration,
    /// `WF_WORKER_CONCURRENCY`: deliveries in flight per worker. The worker's AMQP prefetch
    /// is twice this: finished deliveries stay unacked until the delivery log has them.
    pub worker_concurrency: u16,
    /// `WF_ENDPOINT_MAX_CONCURRENCY`: the upper bound of each endpoint's adaptive
    /// concurrency limit (deliveries in flight to one endpoint from one worker).
    pub endpoint_max_concurrency: u16,
    /// `WF_WORKER_IDLE_CONNECTIONS`: idle keep-alive connections a worker keeps over all
    /// endpoints; the least recently used is closed first.
    pub worker_idle_connections: u32,
    /// `WF_SECRET_KEY`: the keys of webhook secrets at rest, newest first; the first
    /// encrypts, any decrypts (a comma-separated list during a rotation).
    pub secret_key: SecretKeys,
    /// True when `secret_key`'s first key, the one that encrypts, is the publicly known
    /// development key.
    pub secret_key_is_default: bool,
    /// `WF_QUEUE_TYPE`: `x-queue-type` of the declared queues.
    pub queue_type: QueueType,
    /// `WF_SHUTDOWN_GRACE`: drain time on SIGTERM.
    pub shutdown_grace: Duration,
    /// `WF_LOG`: tracing filter directives (validated by the telemetry crate).
    pub log: String,
    /// `WF_LOG_FORMAT`: text or JSON logs.
    pub log_format: LogFormat,
    /// `WF_DELIVERY_LOG_RETENTION`: how long delivery-log rows are kept (the log is dropped
    /// a whole UTC day at a time, once all of the day is older than this).
    pub delivery_log_retention: Duration,
    /// `WF_AUTO_DISABLE_AFTER`: a webhook with no `2xx` for this long, and at least
    /// [`AUTO_DISABLE_MIN_FAILURES`] failed attempts since its last one, is disabled with
    /// the reason `failing`.
    pub auto_disable_after: Duration,
    /// `WF_HTTP_*` and `WF_API_RATE_LIMIT_*`: what the ingestor's API grants one client
    /// (see [`ApiLimits`]).
    pub api_limits: ApiLimits,
}

/// Failed attempts (since the last `2xx`) a webhook needs, besides failing for
/// `WF_AUTO_DISABLE_AFTER`, to be disabled: one failed event in a quiet week is not a
/// dead endpoint.
pub const AUTO_DISABLE_MIN_FAILURES: u32 = 10;

impl fmt::Debug for Config {
    /// Hand-written so that the secret key and URL passwords never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url_password(&self.database_url))
            .field("amqp_url", &redact_url_list(&self.amqp_url))
            .field("quorum_group_size", &self.quorum_group_size)
            .field("http_addr", &self.http_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field("allowed_target_cidrs", &self.allowed_target_cidrs)
            .field("extra_root_ca", &self.extra_root_ca)
            .field("retry_schedule", &self.retry_schedule.to_string())
            .field("delivery_timeout", &self.delivery_timeout)
            .field("worker_concurrency", &self.worker_concurrency)
            .field("endpoint_max_concurrency", &self.endpoint_max_concurrency)
            .field("worker_idle_connections", &self.worker_idle_connections)
            .field("secret_key", &REDACTED)
            .field("secret_key_is_default", &self.secret_key_is_default)
            .field("queue_type", &self.queue_type)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .field("delivery_log_retention", &self.delivery_log_retention)
            .field("auto_disable_after", &self.auto_disable_after)
            .field("api_limits", &self.api_limits)
            .finish()
    }
}

/// Placeholder for secret values in errors and debug output.
const REDACTED: &str = "<redacted>";

/// The built-in development key. It is public (it is in this source file), so anything
/// encrypted with it is only obfuscated: [`Config::warnings`] says so loudly. It is fixed
/// rather than random so that an ingestor and a worker started without configuration can
/// still read each other's secrets.
const DEV_SECRET_KEY: [u8; 32] = *b"workflows-dev-key-NOT-FOR-PROD!!";

/// What a variable is when it is not set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultValue {
    /// This value, for every process.
    Same(&'static str),
    /// A value per process.
    ByRole {
        ingestor: &'static str,
        worker: &'static str,
        cli: &'static str,
    },
    /// No value; the words say what happens instead (shown as they are, not as a value).
    Absent(&'static str),
}

/// One `WF_*` variable: its name, its default and what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variable {
    pub name: &'static str,
    pub default: DefaultValue,
    /// One sentence, shown by `--help`.
    pub meaning: &'static str,
}

/// The configuration table: every variable any process reads, in the order `--help` and
/// the README list them. [`Config::from_lookup`] takes each default from here and reads no
/// variable that is not listed (a unit test holds it to that), `--help` is rendered from it
/// ([`help`]), and a test checks the README's configuration table against it.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "WF_DATABASE_URL",
        default: DefaultValue::Same("postgres://postgres@127.0.0.1:5432/workflows"),
        meaning: "Postgres connection URL (the database is created if missing)",
    },
    Variable {
        name: "WF_AMQP_URL",
        default: DefaultValue::Same("amqp://guest:guest@127.0.0.1:5672/%2f"),
        meaning: "RabbitMQ: the amqp:// or amqps:// URL of each node, comma-separated \
                  (connects to any of them, fails over to the others); connections ask \
                  for 32 KiB frames unless a URL sets ?frame_max=",
    },
    Variable {
        name: "WF_QUORUM_GROUP_SIZE",
        default: DefaultValue::Absent("the number of WF_AMQP_URL nodes, at most 3"),
        meaning: "replicas of each quorum queue (x-quorum-initial-group-size), 1 to 7; \
                  applies to queues declared from now on, existing queues keep theirs",
    },
    Variable {
        name: "WF_HTTP_ADDR",
        default: DefaultValue::Same("127.0.0.1:8080"),
        meaning: "the ingestor's API listen address (IP:port)",
    },
    Variable {
        name: "WF_METRICS_ADDR",
        default: DefaultValue::ByRole {
            ingestor: "127.0.0.1:9464",
            worker: "127.0.0.1:9465",
            cli: "127.0.0.1:9465",
        },
        meaning: "listen address of /metrics, /healthz and /readyz (IP:port)",
    },
    Variable {
        name: "WF_ALLOWED_TARGET_CIDRS",
        default: DefaultValue::Absent("empty"),
        meaning: "comma-separated CIDRs exempt from the private-address block (tests, \
                  on-prem receivers); logged loudly when set",
    },
    Variable {
        name: "WF_EXTRA_ROOT_CA",
        default: DefaultValue::Absent("unset"),
        meaning: "PEM file of extra trusted roots for delivery TLS (added to the public \
                  webpki roots)",
    },
    Variable {
        name: "WF_RETRY_SCHEDULE",
        default: DefaultValue::Same("5s,30s,2m,10m,30m,1h,2h,4h,8h,16h,24h"),
        meaning: "delays before retry 1..N; after the last one fails the delivery is dead",
    },
    Variable {
        name: "WF_DELIVERY_TIMEOUT",
        default: DefaultValue::Same("10s"),
        meaning: "whole-request timeout of a delivery attempt (connect, TLS, headers, \
                  body); below 25m",
    },
    Variable {
        name: "WF_WORKER_CONCURRENCY",
        default: DefaultValue::Same("256"),
        meaning: "deliveries in flight per worker, whatever the fan-out (the AMQP \
                  prefetch is twice it), 1 to 65535",
    },
    Variable {
        name: "WF_ENDPOINT_MAX_CONCURRENCY",
        default: DefaultValue::Same("64"),
        meaning: "upper bound of each endpoint's adaptive concurrency limit (deliveries \
                  in flight to one scheme://host:port from one worker), 1 to 10000",
    },
    Variable {
        name: "WF_WORKER_IDLE_CONNECTIONS",
        default: DefaultValue::Same("1024"),
        meaning: "idle keep-alive connections a worker keeps over all endpoints (about \
                  35 KiB each; the least recently used closes first), 0 to 100000",
    },
    Variable {
        name: "WF_SECRET_KEY",
        default: DefaultValue::Absent("built-in development key (loud warning)"),
        meaning: "comma-separated keys, each base64 of 32 bytes, new first: the first \
                  encrypts webhook secrets and custom headers at rest, any listed key \
                  decrypts; the same list on every process of a deployment",
    },
    Variable {
        name: "WF_QUEUE_TYPE",
        default: DefaultValue::Same("quorum"),
        meaning: "type of the declared queues: quorum or classic",
    },
    Variable {
        name: "WF_SHUTDOWN_GRACE",
        default: DefaultValue::Same("30s"),
        meaning: "drain time on SIGTERM",
    },
    Variable {
        name: "WF_LOG",
        default: DefaultValue::ByRole {
            ingestor: "info",
            worker: "info",
            cli: "warn",
        },
        meaning: "tracing filter, e.g. info or wf_worker=debug,info",
    },
    Variable {
        name: "WF_LOG_FORMAT",
        default: DefaultValue::Same("text"),
        meaning: "log format: text, or json for structured logs",
    },
    Variable {
        name: "WF_DELIVERY_LOG_RETENTION",
        default: DefaultValue::Same("7d"),
        meaning: "how long deliveries, attempts and payloads are kept in Postgres",
    },
    Variable {
        name: "WF_HTTP_HEADER_TIMEOUT",
        default: DefaultValue::Same("10s"),
        meaning: "ingestor: time for a request's headers to arrive (and for an idle \
                  keep-alive connection), then the connection is closed; up to 1h",
    },
    Variable {
        name: "WF_HTTP_REQUEST_TIMEOUT",
        default: DefaultValue::Same("30s"),
        meaning: "ingestor: time from the headers to the response, body read included, \
                  then 408 request_timeout; up to 1h",
    },
    Variable {
        name: "WF_HTTP_MAX_CONNECTIONS",
        default: DefaultValue::Same("10000"),
        meaning: "ingestor: open API connections, 1 to 1000000; one more is answered 503 \
                  too_many_connections and closed",
    },
    Variable {
        name: "WF_API_RATE_LIMIT_EVENTS",
        default: DefaultValue::Same("5000,10000"),
        meaning: "ingestor: POST /api/v1/events per API key, <per second>[,<burst>]; 0 \
                  turns it off; over it, 429 with Retry-After",
    },
    Variable {
        name: "WF_API_RATE_LIMIT_MANAGEMENT",
        default: DefaultValue::Same("100,200"),
        meaning: "ingestor: every other authenticated route per API key, a budget of its \
                  own, same syntax",
    },
    Variable {
        name: "WF_AUTO_DISABLE_AFTER",
        default: DefaultValue::Same("5d"),
        meaning: "a webhook with no 2xx for this long, and at least 10 failed attempts \
                  since its last one, is disabled",
    },
];

/// The variable of that name in [`VARIABLES`].
pub fn variable(name: &str) -> Option<&'static Variable> {
    VARIABLES.iter().find(|v| v.name == name)
}

impl Variable {
    /// The value used when the variable is unset in a process of `role`; `None` when
    /// there is none (see [`DefaultValue::Absent`]).
    pub fn default_for(&self, role: Role) -> Option<&'static str> {
        match self.default {
            DefaultValue::Same(v) => Some(v),
            DefaultValue::ByRole {
                ingestor,
                worker,
                cli,
            } => Some(match role {
                Role::Ingestor => ingestor,
                Role::Worker => worker,
                Role::Cli => cli,
            }),
            DefaultValue::Absent(_) => None,
        }
    }

    /// The default as the README's configuration table writes it: values in backticks,
    /// per-process values named by process (`ingestor `a`, worker and wfctl `b``), words
    /// as they are.
    pub fn default_markdown(&self) -> String {
        match self.default {
            DefaultValue::Same(v) => format!("`{v}`"),
            DefaultValue::Absent(words) => words.to_owned(),
            DefaultValue::ByRole {
                ingestor,
                worker,
                cli,
            } => {
                let mut groups: Vec<(Vec<&str>, &str)> = Vec::new();
                for (who, value) in [("ingestor", ingestor), ("worker", worker), ("wfctl", cli)] {
                    match groups.iter_mut().find(|(_, v)| *v == value) {
                        Some((names, _)) => names.push(who),
                        None => groups.push((vec![who], value)),
                    }
                }
                groups
                    .iter()
                    .map(|(names, value)| format!("{} `{value}`", names.join(" and ")))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        }
    }
}

/// The configuration section of a binary's `--help`: every variable of [`VARIABLES`] with
/// its default in a process of `role` and its meaning.
pub fn help(role: Role) -> String {
    let mut out = String::from("Configuration (environment variables):\n");
    wrap(
        &mut out,
        "  ",
        "Every variable has a working local default; a value that is set but invalid \
         stops the process with an error naming the variable.",
    );
    for v in VARIABLES {
        let default = match (v.default_for(role), v.default) {
            (Some(value), _) => value,
            (None, DefaultValue::Absent(words)) => words,
            (None, _) => "",
        };
        out.push_str(&format!("  {}  [default: {default}]\n", v.name));
        wrap(&mut out, "          ", v.meaning);
    }
    out
}

/// Appends `text` as lines of at most 90 columns, each starting with `indent`.
fn wrap(out: &mut String, indent: &str, text: &str) {
    const WIDTH: usize = 90;
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > WIDTH {
            out.push_str(&format!("{indent}{line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&format!("{indent}{line}\n"));
}

/// RabbitMQ closes a channel whose delivery stays unacked for `consumer_timeout` (30 minutes
/// by default); a delivery attempt must finish well inside it, so the timeout is capped.
const MAX_DELIVERY_TIMEOUT: Duration = Duration::from_secs(25 * 60);

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// A value that is not valid UTF-8 is passed on lossily and then fails validation, so it
    /// is reported rather than ignored.
    ///
    /// # Errors
    /// [`ConfigError`] for the first variable whose value is invalid.
    pub fn from_env(role: Role) -> Result<Config, ConfigError> {
        Self::from_lookup(role, |name| {
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
        })
    }

    /// Reads the configuration through `lookup` (name → value, `None` when unset).
    ///
    /// # Errors
    /// [`ConfigError`] for the first variable whose value is invalid. An empty value is
    /// invalid, except for `WF_ALLOWED_TARGET_CIDRS` and `WF_EXTRA_ROOT_CA`, where it means
    /// unset.
    pub fn from_lookup(
        role: Role,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let get = |name: &'static str| Var::new(name, role, lookup(name));

        let database_url = get("WF_DATABASE_URL").url(
            &["postgres://", "postgresql://"],
            "expected a Postgres URL starting with postgres:// or postgresql://",
        )?;
        let (amqp_url, amqp_nodes) = get("WF_AMQP_URL").amqp_nodes()?;
        let quorum_group_size = get("WF_QUORUM_GROUP_SIZE").quorum_group_size(amqp_nodes)?;
        let http_addr = get("WF_HTTP_ADDR").socket_addr()?;
        let metrics_addr = get("WF_METRICS_ADDR").socket_addr()?;

        let cidrs = get("WF_ALLOWED_TARGET_CIDRS");
        let allowed_target_cidrs = match cidrs.value_or_unset_if_blank() {
            None => AllowedCidrs::default(),
            Some(v) => AllowedCidrs::parse(v).map_err(|bad| {
                cidrs.error(format!(
                    "`{bad}` is not a CIDR or IP address (expected e.g. 10.0.0.0/8,::1/128)"
                ))
            })?,
        };

        let extra_root_ca = get("WF_EXTRA_ROOT_CA")
            .value_or_unset_if_blank()
            .map(PathBuf::from);

        let sched = get("WF_RETRY_SCHEDULE");
        let retry_schedule = RetrySchedule::parse(sched.value_or_default()?).map_err(|e| {
            sched.error(format!(
                "{e} (expected comma-separated delays such as {})",
                sched.default.unwrap_or_default()
            ))
        })?;

        let timeout = get("WF_DELIVERY_TIMEOUT");
        let delivery_timeout = timeout.duration()?;
        if delivery_timeout.is_zero() || delivery_timeout >= MAX_DELIVERY_TIMEOUT {
            return Err(timeout.error(
                "must be positive and below 25m (RabbitMQ closes a channel whose delivery \
                 stays unacked for consumer_timeout, 30m by default)",
            ));
        }

        let conc = get("WF_WORKER_CONCURRENCY");
        let worker_concurrency = conc.integer(1..=u16::MAX)?;

        let emc = get("WF_ENDPOINT_MAX_CONCURRENCY");
        let endpoint_max_concurrency = emc.integer(1..=10_000)?;

        let idle = get("WF_WORKER_IDLE_CONNECTIONS");
        let worker_idle_connections = idle.integer(0..=100_000)?;

        let key = get("WF_SECRET_KEY");
        let secret_key = match key.value()? {
            None => SecretKeys::single(DEV_SECRET_KEY),
            Some(v) => SecretKeys::parse(v).map_err(|reason| key.error(reason))?,
        };
        let secret_key_is_default = *secret_key.primary() == DEV_SECRET_KEY;

        let qt = get("WF_QUEUE_TYPE");
        let queue_type = match qt.value_or_default()?.trim() {
            v if v.eq_ignore_ascii_case("quorum") => QueueType::Quorum,
            v if v.eq_ignore_ascii_case("classic") => QueueType::Classic,
            _ => return Err(qt.error("expected `quorum` or `classic`")),
        };

        let shutdown_grace = get("WF_SHUTDOWN_GRACE").duration()?;

        let log = get("WF_LOG").value_or_default()?.trim().to_owned();

        let lf = get("WF_LOG_FORMAT");
        let log_format = match lf.value_or_default()?.trim() {
            v if v.eq_ignore_ascii_case("text") => LogFormat::Text,
            v if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => return Err(lf.error("expected `text` or `json`")),
        };

        let ret = get("WF_DELIVERY_LOG_RETENTION");
        let delivery_log_retention = ret.duration()?;
        if delivery_log_retention.is_zero() {
            return Err(ret.error("must be positive"));
        }

        let ada = get("WF_AUTO_DISABLE_AFTER");
        let auto_disable_after = ada.duration()?;
        if auto_disable_after.is_zero() {
            return Err(ada.error("must be positive"));
        }

        Ok(Config {
            database_url,
            amqp_url,
            quorum_group_size,
            http_addr,
            metrics_addr,
            allowed_target_cidrs,
            extra_root_ca,
            retry_schedule,
            delivery_timeout,
            worker_concurrency,
            endpoint_max_concurrency,
            worker_idle_connections,
            secret_key,
            secret_key_is_default,
            queue_type,
            shutdown_grace,
            log,
            log_format,
            delivery_log_retention,
            auto_disable_after,
            api_limits: ApiLimits::from_vars(&get)?,
        })
    }

    /// Start-up warnings that must be logged loudly (at `warn`), one message each: the
    /// built-in development secret key is in use; `WF_ALLOWED_TARGET_CIDRS` opens holes in
    /// the private-address block (the ranges are listed).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.secret_key_is_default {
            out.push(
                "WF_SECRET_KEY is not set (or its first key is the built-in development key): \
                 webhook secrets are encrypted with the built-in development key, which is \
                 public. Set WF_SECRET_KEY to the base64 of 32 random bytes (e.g. \
                 `openssl rand -base64 32`), the same on every ingestor and worker of the \
                 deployment"
                    .to_owned(),
            );
        } else if self.secret_key.all().contains(&DEV_SECRET_KEY) {
            out.push(
                "WF_SECRET_KEY lists the built-in development key as an old key: values still \
                 encrypted with it are readable by anyone with a copy of the database. Run \
                 `wfctl rekey`, then remove it from WF_SECRET_KEY"
                    .to_owned(),
            );
        }
        if !self.allowed_target_cidrs.is_empty() {
            let nets: Vec<String> = self
                .allowed_target_cidrs
                .nets()
                .iter()
                .map(ToString::to_string)
                .collect();
            out.push(format!(
                "WF_ALLOWED_TARGET_CIDRS is set: webhooks may target these otherwise blocked \
                 ranges: {}. Only for tests and on-prem receivers",
                nets.join(", ")
            ));
        }
        out
    }
}

/// Replaces the password in `scheme://user:password@host…` with `***`, so connection URLs
/// can be shown in errors and debug output.
fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

/// [`redact_url_password`] for each URL of a comma-separated list.
fn redact_url_list(list: &str) -> String {
    list.split(',')
        .map(redact_url_password)
        .collect::<Vec<_>>()
        .join(",")
}

/// Largest quorum-queue replica count `WF_QUORUM_GROUP_SIZE` accepts: each replica is a
/// Raft member every write waits for a majority of, and 7 already survives three nodes lost.
const MAX_QUORUM_GROUP_SIZE: u16 = 7;

/// Replicas of each quorum queue when `WF_QUORUM_GROUP_SIZE` is unset and `WF_AMQP_URL`
/// lists at least this many nodes: a quorum of 2 survives one node's loss, and more
/// replicas cost writes and buy little.
const DEFAULT_QUORUM_GROUP_SIZE_CAP: usize = 3;

/// Checks one node URL of `WF_AMQP_URL`: scheme `amqp` or `amqps`, a host, a port that is a
/// port number when given. Returns why not, without the URL (the caller shows it redacted).
fn check_amqp_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw)
        .map_err(|e| format!("not a URL ({e}); expected amqp://user:password@host:port/vhost"))?;
    if !matches!(url.scheme(), "amqp" | "amqps") {
        return Err(format!(
            "scheme `{}`, expected amqp:// or amqps://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host; expected amqp://user:password@host:port/vhost".to_owned());
    }
    if url.port() == Some(0) {
        return Err("port 0; expected a port from 1 to 65535".to_owned());
    }
    Ok(())
}

/// One variable's raw value and default, with the helpers that turn it into a typed value
/// or an error.
struct Var {
    name: &'static str,
    /// From [`VARIABLES`], for the process reading it.
    default: Option<&'static str>,
    raw: Option<String>,
}

impl Var {
    /// # Panics
    /// When `name` is not in [`VARIABLES`]: a variable read must be documented there (the
    /// unit tests read every variable, so this never reaches a release).
    fn new(name: &'static str, role: Role, raw: Option<String>) -> Self {
        let spec = variable(name)
            .unwrap_or_else(|| panic!("{name} is read but not listed in config::VARIABLES"));
        Var {
            name,
            default: spec.default_for(role),
            raw,
        }
    }

    /// An error about this variable's value; the secret key's value is never echoed and
    /// URL passwords are masked.
    fn error(&self, reason: impl Into<String>) -> ConfigError {
        let raw = self.raw.as_deref().unwrap_or_default();
        let value = match self.name {
            "WF_SECRET_KEY" => REDACTED.to_owned(),
            "WF_DATABASE_URL" => redact_url_password(raw),
            "WF_AMQP_URL" => redact_url_list(raw),
            _ => raw.to_owned(),
        };
        ConfigError {
            variable: self.name,
            value,
            reason: reason.into(),
        }
    }

    /// The value, `None` when unset; an empty (or blank) value is an error.
    fn value(&self) -> Result<Option<&str>, ConfigError> {
        match self.raw.as_deref() {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => {
                Err(self.error("empty value (unset the variable to use the default)"))
            }
            Some(v) => Ok(Some(v)),
        }
    }

    /// The value, or the default of [`VARIABLES`] when unset. (Only for variables that
    /// have a default value; the others read [`Var::value`].)
    fn value_or_default(&self) -> Result<&str, ConfigError> {
        Ok(self.value()?.or(self.default).unwrap_or_default())
    }

    /// For the variables where an empty value means unset.
    fn value_or_unset_if_blank(&self) -> Option<&str> {
        self.raw.as_deref().filter(|v| !v.trim().is_empty())
    }

    fn url(&self, schemes: &[&str], reason: &str) -> Result<String, ConfigError> {
        let v = self.value_or_default()?.trim();
        let ok = schemes.iter().any(|s| {
            v.len() > s.len() && v.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s))
        });
        if ok {
            Ok(v.to_owned())
        } else {
            Err(self.error(reason))
        }
    }

    /// `WF_AMQP_URL`: a comma-separated list of node URLs, each checked. Returns the list
    /// (entries trimmed) and how many nodes it names.
    fn amqp_nodes(&self) -> Result<(String, usize), ConfigError> {
        let entries: Vec<&str> = self.value_or_default()?.split(',').map(str::trim).collect();
        let n = entries.len();
        for (i, entry) in entries.iter().enumerate() {
            let which = if n == 1 {
                String::new()
            } else {
                format!("node {} of {n}", i + 1)
            };
            if entry.is_empty() {
                return Err(self.error(format!(
                    "{which} is empty (expected amqp:// or amqps:// URLs separated by commas)"
                )));
            }
            check_amqp_url(entry).map_err(|why| {
                self.error(if n == 1 {
                    why
                } else {
                    format!("{which} (`{}`): {why}", redact_url_password(entry))
                })
            })?;
        }
        Ok((entries.join(","), n))
    }

    /// `WF_QUORUM_GROUP_SIZE`, by default the number of nodes in `WF_AMQP_URL`, at most 3.
    fn quorum_group_size(&self, amqp_nodes: usize) -> Result<u16, ConfigError> {
        match self.value()? {
            None => {
                Ok(u16::try_from(amqp_nodes.clamp(1, DEFAULT_QUORUM_GROUP_SIZE_CAP)).unwrap_or(1))
            }
            Some(_) => self.integer(1..=MAX_QUORUM_GROUP_SIZE),
        }
    }

    /// An integer in `range`, or the default when unset.
    fn integer<N>(&self, range: std::ops::RangeInclusive<N>) -> Result<N, ConfigError>
    where
        N: std::str::FromStr + PartialOrd + fmt::Display,
    {
        match self.value_or_default()?.trim().parse::<N>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(self.error(format!(
                "expected an integer from {} to {}",
                range.start(),
                range.end()
            ))),
        }
    }

    fn socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.value_or_default()?.trim().parse().map_err(|_| {
            self.error("expected IP:port, e.g. 127.0.0.1:8080 or [::1]:8080 (no host names)")
        })
    }

    fn duration(&self) -> Result<Duration, ConfigError> {
        parse_duration(self.value_or_default()?)
            .map_err(|_| self.error("expected a duration such as 500ms, 10s, 2m, 1h or 7d"))
    }
}

// ---------------------------------------------------------------- API limits

/// A per-API-key request budget: `per_second` requests a second on average, up to
/// `burst` at once (`WF_API_RATE_LIMIT_*`, written `<per second>` or
/// `<per second>,<burst>`; the burst defaults to twice the rate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// What the ingestor's API grants one client, so that a slow, greedy or hostile client
/// cannot take the service from the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// `WF_HTTP_HEADER_TIMEOUT`: time to receive a request's headers (also how long an
    /// idle keep-alive connection is kept); then the connection is closed.
    pub header_timeout: Duration,
    /// `WF_HTTP_REQUEST_TIMEOUT`: time from the headers to the response, body read
    /// included; then `408 request_timeout`.
    pub request_timeout: Duration,
    /// `WF_HTTP_MAX_CONNECTIONS`: open API connections; one more is answered `503` and
    /// closed.
    pub max_connections: u32,
    /// `WF_API_RATE_LIMIT_EVENTS`: `POST /api/v1/events` per API key; `None` (`0`): off.
    pub events_rate: Option<RateLimit>,
    /// `WF_API_RATE_LIMIT_MANAGEMENT`: every other authenticated route, per API key, a
    /// budget of its own; `None` (`0`): off.
    pub management_rate: Option<RateLimit>,
}

/// Largest accepted rate or burst: far beyond what one ingestor serves.
const MAX_RATE: u32 = 1_000_000;

impl ApiLimits {
    fn from_vars(get: &impl Fn(&'static str) -> Var) -> Result<ApiLimits, ConfigError> {
        let positive = |name: &'static str| {
            let var = get(name);
            let v = var.duration()?;
            if v.is_zero() || v > Duration::from_secs(3600) {
                return Err(var.error("must be positive and at most 1h"));
            }
            Ok(v)
        };
        let header_timeout = positive("WF_HTTP_HEADER_TIMEOUT")?;
        let request_timeout = positive("WF_HTTP_REQUEST_TIMEOUT")?;

        let mc = get("WF_HTTP_MAX_CONNECTIONS");
        let max_connections = match mc.value_or_default()?.trim().parse::<u32>() {
            Ok(n) if (1..=1_000_000).contains(&n) => n,
            _ => return Err(mc.error("expected an integer from 1 to 1000000")),
        };

        let rate = |name: &'static str| {
            let var = get(name);
            parse_rate_limit(var.value_or_default()?).map_err(|reason| var.error(reason))
        };
        Ok(ApiLimits {
            header_timeout,
            request_timeout,
            max_connections,
            events_rate: rate("WF_API_RATE_LIMIT_EVENTS")?,
            management_rate: rate("WF_API_RATE_LIMIT_MANAGEMENT")?,
        })
    }
}

/// `<per second>` or `<per second>,<burst>`; `0` is off.
fn parse_rate_limit(v: &str) -> Result<Option<RateLimit>, String> {
    const EXPECTED: &str = "expected requests per second and an optional burst, such as \
                            `100` or `100,200` (at most 1000000 each), or `0` for no limit";
    let number = |s: &str| s.trim().parse::<u32>().ok().filter(|n| *n <= MAX_RATE);
    let (rate, burst) = match v.split_once(',') {
        None => (number(v), None),
        Some((r, b)) => (number(r), Some(number(b))),
    };
    match (rate, burst) {
        (Some(0), None) => Ok(None),
        (Some(per_second @ 1..), None) => Ok(Some(RateLimit {
            per_second,
            burst: per_second.saturating_mul(2).min(MAX_RATE),
        })),
        (Some(per_second @ 1..), Some(Some(burst))) if burst >= 1 => {
            Ok(Some(RateLimit { per_second, burst }))
        }
        _ => Err(EXPECTED.to_owned()),
    }
}

#[cfg(test)]
mod api_limits_tests {
    use super::*;
    use std::collections::HashMap;

    fn limits(vars: &[(&str, &str)]) -> Result<ApiLimits, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(Role::Ingestor, move |k| map.get(k).cloned()).map(|c| c.api_limits)
    }

    fn bad(var: &'static str, value: &str) -> ConfigError {
        let err = limits(&[(var, value)]).expect_err(&format!("{var}={value:?} accepted"));
        assert_eq!(err.variable, var);
        assert!(
            err.to_string().starts_with(&format!("invalid {var}=`")),
            "{err}"
        );
        err
    }

    #[test]
    fn defaults() {
        let l = limits(&[]).unwrap();
        assert_eq!(l.header_timeout, Duration::from_secs(10));
        assert_eq!(l.request_timeout, Duration::from_secs(30));
        assert_eq!(l.max_connections, 10_000);
        assert_eq!(
            l.events_rate,
            Some(RateLimit {
                per_second: 5000,
                burst: 10_000
            })
        );
        assert_eq!(
            l.management_rate,
            Some(RateLimit {
                per_second: 100,
                burst: 200
            })
        );
    }

    #[test]
    fn timeouts() {
        let l = limits(&[
            ("WF_HTTP_HEADER_TIMEOUT", "500ms"),
            ("WF_HTTP_REQUEST_TIMEOUT", "2m"),
        ])
        .unwrap();
        assert_eq!(l.header_timeout, Duration::from_millis(500));
        assert_eq!(l.request_timeout, Duration::from_secs(120));
        for var in ["WF_HTTP_HEADER_TIMEOUT", "WF_HTTP_REQUEST_TIMEOUT"] {
            for v in ["0s", "10", "2h", "", "soon"] {
                bad(var, v);
            }
        }
    }

    #[test]
    fn max_connections() {
        let n = |v| {
            limits(&[("WF_HTTP_MAX_CONNECTIONS", v)])
                .unwrap()
                .max_connections
        };
        assert_eq!(n("1"), 1);
        assert_eq!(n(" 1000000 "), 1_000_000);
        for v in ["0", "1000001", "-1", "many", ""] {
            bad("WF_HTTP_MAX_CONNECTIONS", v);
        }
    }

    #[test]
    fn rate_limits() {
        let r = |v| {
            limits(&[("WF_API_RATE_LIMIT_EVENTS", v)])
                .unwrap()
                .events_rate
        };
        assert_eq!(r("0"), None);
        assert_eq!(
            r("10"),
            Some(RateLimit {
                per_second: 10,
                burst: 20
            })
        );
        assert_eq!(
            r(" 3 , 1 "),
            Some(RateLimit {
                per_second: 3,
                burst: 1
            })
        );
        let m = limits(&[("WF_API_RATE_LIMIT_MANAGEMENT", "0")]).unwrap();
        assert_eq!(m.management_rate, None);
        assert!(m.events_rate.is_some(), "the two budgets are separate");
        for var in ["WF_API_RATE_LIMIT_EVENTS", "WF_API_RATE_LIMIT_MANAGEMENT"] {
            for v in [
                "", "-1", "1.5", "10,", "10,0", "0,5", "1,2,3", "2000000", "x",
            ] {
                let err = bad(var, v);
                if !v.is_empty() {
                    assert!(err.reason.contains("requests per second"), "{err}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use std::collections::HashMap;

    fn cfg(role: Role, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(role, move |k| map.get(k).cloned())
    }

    fn ok(vars: &[(&str, &str)]) -> Config {
        cfg(Role::Worker, vars).unwrap()
    }

    /// Asserts the value is rejected, and that the error names the variable.
    fn bad(var: &'static str, value: &str) -> ConfigError {
        let err = cfg(Role::Worker, &[(var, value)])
            .expect_err(&format!("{var}={value:?} should be rejected"));
        assert_eq!(err.variable, var);
        let text = err.to_string();
        assert!(text.starts_with(&format!("invalid {var}=`")), "{text}");
        err
    }

    #[test]
    fn all_defaults() {
        let c = ok(&[]);
        assert_eq!(
            c.database_url,
            "postgres://postgres@127.0.0.1:5432/workflows"
        );
        assert_eq!(c.amqp_url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(c.quorum_group_size, 1);
        assert_eq!(c.http_addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.metrics_addr, "127.0.0.1:9465".parse().unwrap());
        assert!(c.allowed_target_cidrs.is_empty());
        assert_eq!(c.extra_root_ca, None);
        assert_eq!(
            c.retry_schedule,
            RetrySchedule::parse("5s,30s,2m,10m,30m,1h,2h,4h,8h,16h,24h").unwrap()
        );
        assert_eq!(c.delivery_timeout, Duration::from_secs(10));
        assert_eq!(c.worker_concurrency, 256);
        assert_eq!(c.secret_key, SecretKeys::single(DEV_SECRET_KEY));
        assert!(c.secret_key_is_default);
        assert_eq!(c.queue_type, QueueType::Quorum);
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.log, "info");
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.delivery_log_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(c.auto_disable_after, Duration::from_secs(5 * 86_400));
    }

    #[test]
    fn error_display_format() {
        let err = bad("WF_DELIVERY_TIMEOUT", "10");
        assert_eq!(
            err.to_string(),
            "invalid WF_DELIVERY_TIMEOUT=`10`: expected a duration such as 500ms, 10s, 2m, 1h or 7d"
        );
    }

    #[test]
    fn database_url() {
        assert_eq!(
            ok(&[("WF_DATABASE_URL", "postgresql://u@db:5432/x")]).database_url,
            "postgresql://u@db:5432/x"
        );
        assert_eq!(
            ok(&[("WF_DATABASE_URL", "postgres://u:p@db/x")]).database_url,
            "postgres://u:p@db/x"
        );
        bad("WF_DATABASE_URL", "mysql://root@db/x");
        bad("WF_DATABASE_URL", "postgres://");
        bad("WF_DATABASE_URL", "");
        // The password of a rejected URL is masked.
        let err = bad("WF_DATABASE_URL", "mysql://root:hunter2@db/x");
        assert_eq!(err.value, "mysql://root:***@db/x");
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn amqp_url() {
        assert_eq!(
            ok(&[("WF_AMQP_URL", "amqps://u:p@mq:5671/vh")]).amqp_url,
            "amqps://u:p@mq:5671/vh"
        );
        assert_eq!(ok(&[("WF_AMQP_URL", "amqp://mq")]).amqp_url, "amqp://mq");
        assert_eq!(
            ok(&[("WF_AMQP_URL", " AMQP://mq:5672/%2f ")]).amqp_url,
            "AMQP://mq:5672/%2f"
        );
        bad("WF_AMQP_URL", "http://mq:15672");
        bad("WF_AMQP_URL", "");
        bad("WF_AMQP_URL", "amqp://");
        bad("WF_AMQP_URL", "amqp:///%2f");
        bad("WF_AMQP_URL", "amqp://mq:port/");
        bad("WF_AMQP_URL", "amqp://mq:0/");
        bad("WF_AMQP_URL", "mq:5672");
        let err = bad("WF_AMQP_URL", "amq://guest:s3cret@mq/");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(err.reason.contains("amqp:// or amqps://"), "{err}");
    }

    #[test]
    fn amqp_url_lists() {
        let c = ok(&[(
            "WF_AMQP_URL",
            "amqp://u:p@a:5672/%2f, amqps://u:p@b:5671/%2f ,amqp://c",
        )]);
        assert_eq!(
            c.amqp_url,
            "amqp://u:p@a:5672/%2f,amqps://u:p@b:5671/%2f,amqp://c"
        );
        assert_eq!(c.quorum_group_size, 3);

        // Every entry is checked; the error names the entry and hides every password.
        let list = "amqp://u:pw1@a/%2f,http://u:pw2@b/,amqp://u:pw3@c/%2f";
        let err = bad("WF_AMQP_URL", list);
        assert!(
            err.reason.starts_with("node 2 of 3 (`http://u:***@b/`)"),
            "{err}"
        );
        assert!(err.reason.contains("amqp:// or amqps://"), "{err}");
        assert_eq!(
            err.value,
            "amqp://u:***@a/%2f,http://u:***@b/,amqp://u:***@c/%2f"
        );
        let text = err.to_string();
        for pw in ["pw1", "pw2", "pw3"] {
            assert!(!text.contains(pw), "{text}");
        }
        let err = bad("WF_AMQP_URL", "amqp://a/%2f,,amqp://b/%2f");
        assert!(err.reason.contains("node 2 of 3 is empty"), "{err}");
        let err = bad("WF_AMQP_URL", "amqp://a/%2f,");
        assert!(err.reason.contains("node 2 of 2 is empty"), "{err}");
        let err = bad("WF_AMQP_URL", "amqp://a/%2f,amqp://:5672/%2f");
        assert!(err.reason.contains("node 2 of 2"), "{err}");
        assert!(err.reason.contains("empty host"), "{err}");
    }

    #[test]
    fn quorum_group_size() {
        let size = |vars: &[(&str, &str)]| ok(vars).quorum_group_size;
        let nodes = |n: usize| {
            (0..n)
                .map(|i| format!("amqp://node{i}/%2f"))
                .collect::<Vec<_>>()
                .join(",")
        };
        // By default one replica per listed node, at most 3.
        for (n, expected) in [(1, 1), (2, 2), (3, 3), (4, 3), (7, 3)] {
            assert_eq!(size(&[("WF_AMQP_URL", &nodes(n))]), expected, "{n} nodes");
        }
        // Set, it wins whatever the list (the cluster may have nodes the URL does not
        // list, behind a load balancer; RabbitMQ caps it at the cluster's size).
        assert_eq!(size(&[("WF_QUORUM_GROUP_SIZE", "3")]), 3);
        assert_eq!(
            size(&[("WF_QUORUM_GROUP_SIZE", " 5 "), ("WF_AMQP_URL", &nodes(3))]),
            5
        );
        assert_eq!(
            size(&[("WF_QUORUM_GROUP_SIZE", "1"), ("WF_AMQP_URL", &nodes(3))]),
            1
        );
        assert_eq!(size(&[("WF_QUORUM_GROUP_SIZE", "7")]), 7);
        for v in ["0", "8", "-1", "three", "2.5", ""] {
            let err = bad("WF_QUORUM_GROUP_SIZE", v);
            if !v.is_empty() {
                assert!(err.reason.contains("from 1 to 7"), "{err}");
            }
        }
    }

    #[test]
    fn http_addr() {
        assert_eq!(
            ok(&[("WF_HTTP_ADDR", "0.0.0.0:80")]).http_addr,
            "0.0.0.0:80".parse().unwrap()
        );
        assert_eq!(
            ok(&[("WF_HTTP_ADDR", "[::1]:8081")]).http_addr,
            "[::1]:8081".parse().unwrap()
        );
        bad("WF_HTTP_ADDR", "localhost:8080");
        bad("WF_HTTP_ADDR", "8080");
        bad("WF_HTTP_ADDR", "");
    }

    #[test]
    fn metrics_addr_defaults_by_role() {
        let addr = |role| cfg(role, &[]).unwrap().metrics_addr;
        assert_eq!(addr(Role::Ingestor), "127.0.0.1:9464".parse().unwrap());
        assert_eq!(addr(Role::Worker), "127.0.0.1:9465".parse().unwrap());
        assert_eq!(addr(Role::Cli), "127.0.0.1:9465".parse().unwrap());
        assert_eq!(
            cfg(Role::Ingestor, &[("WF_METRICS_ADDR", "0.0.0.0:9100")])
                .unwrap()
                .metrics_addr,
            "0.0.0.0:9100".parse().unwrap()
        );
        bad("WF_METRICS_ADDR", "0.0.0.0");
        bad("WF_METRICS_ADDR", "127.0.0.1:99999");
        bad("WF_METRICS_ADDR", "");
    }

    #[test]
    fn allowed_target_cidrs() {
        let c = ok(&[("WF_ALLOWED_TARGET_CIDRS", "127.0.0.0/8, ::1/128,10.1.2.3")]);
        assert_eq!(c.allowed_target_cidrs.nets().len(), 3);
        assert!(c
            .allowed_target_cidrs
            .contains("127.0.0.1".parse().unwrap()));
        assert!(c.allowed_target_cidrs.contains("10.1.2.3".parse().unwrap()));
        // Empty means unset for this variable.
        assert!(ok(&[("WF_ALLOWED_TARGET_CIDRS", "")])
            .allowed_target_cidrs
            .is_empty());
        let err = bad("WF_ALLOWED_TARGET_CIDRS", "127.0.0.0/8,not-a-net");
        assert!(err.reason.contains("not-a-net"), "{err}");
        bad("WF_ALLOWED_TARGET_CIDRS", "10.0.0.0/33");
    }

    #[test]
    fn extra_root_ca() {
        assert_eq!(
            ok(&[("WF_EXTRA_ROOT_CA", "/etc/wf/ca.pem")]).extra_root_ca,
            Some(PathBuf::from("/etc/wf/ca.pem"))
        );
        // Empty means unset; no file I/O happens here, so a missing file is not an error.
        assert_eq!(ok(&[("WF_EXTRA_ROOT_CA", "")]).extra_root_ca, None);
        assert_eq!(
            ok(&[("WF_EXTRA_ROOT_CA", "/does/not/exist.pem")]).extra_root_ca,
            Some(PathBuf::from("/does/not/exist.pem"))
        );
    }

    #[test]
    fn retry_schedule() {
        let c = ok(&[("WF_RETRY_SCHEDULE", "1s,2s, 5m")]);
        assert_eq!(
            c.retry_schedule.delays(),
            &[
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(300)
            ]
        );
        bad("WF_RETRY_SCHEDULE", "5s,,2m");
        bad("WF_RETRY_SCHEDULE", "0s");
        bad("WF_RETRY_SCHEDULE", "5 seconds");
        bad("WF_RETRY_SCHEDULE", "");
    }

    #[test]
    fn delivery_timeout() {
        assert_eq!(
            ok(&[("WF_DELIVERY_TIMEOUT", "2500ms")]).delivery_timeout,
            Duration::from_millis(2500)
        );
        assert_eq!(
            ok(&[("WF_DELIVERY_TIMEOUT", "24m")]).delivery_timeout,
            Duration::from_secs(24 * 60)
        );
        bad("WF_DELIVERY_TIMEOUT", "10");
        bad("WF_DELIVERY_TIMEOUT", "0s");
        let err = bad("WF_DELIVERY_TIMEOUT", "25m");
        assert!(err.reason.contains("consumer_timeout"), "{err}");
        bad("WF_DELIVERY_TIMEOUT", "1h");
        bad("WF_DELIVERY_TIMEOUT", "");
    }

    #[test]
    fn worker_concurrency() {
        assert_eq!(ok(&[("WF_WORKER_CONCURRENCY", "1")]).worker_concurrency, 1);
        assert_eq!(
            ok(&[("WF_WORKER_CONCURRENCY", "65535")]).worker_concurrency,
            65535
        );
        for v in ["0", "65536", "-1", "lots", "1.5", ""] {
            bad("WF_WORKER_CONCURRENCY", v);
        }
    }

    #[test]
    fn endpoint_max_concurrency() {
        assert_eq!(ok(&[]).endpoint_max_concurrency, 64);
        assert_eq!(
            ok(&[("WF_ENDPOINT_MAX_CONCURRENCY", "1")]).endpoint_max_concurrency,
            1
        );
        assert_eq!(
            ok(&[("WF_ENDPOINT_MAX_CONCURRENCY", " 10000 ")]).endpoint_max_concurrency,
            10_000
        );
        for v in ["0", "10001", "-1", "many", "2.5"] {
            let err = bad("WF_ENDPOINT_MAX_CONCURRENCY", v);
            assert!(err.reason.contains("1 to 10000"), "{err}");
        }
        bad("WF_ENDPOINT_MAX_CONCURRENCY", "");
    }

    #[test]
    fn worker_idle_connections() {
        assert_eq!(ok(&[]).worker_idle_connections, 1024);
        assert_eq!(
            ok(&[("WF_WORKER_IDLE_CONNECTIONS", "0")]).worker_idle_connections,
            0
        );
        assert_eq!(
            ok(&[("WF_WORKER_IDLE_CONNECTIONS", "100000")]).worker_idle_connections,
            100_000
        );
        for v in ["100001", "-1", "lots", "1e3"] {
            let err = bad("WF_WORKER_IDLE_CONNECTIONS", v);
            assert!(err.reason.contains("0 to 100000"), "{err}");
        }
        bad("WF_WORKER_IDLE_CONNECTIONS", "");
    }

    #[test]
    fn secret_key() {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
        let key = [7u8; 32];
        let c = ok(&[("WF_SECRET_KEY", &STANDARD.encode(key))]);
        assert_eq!(c.secret_key.all(), &[key]);
        assert!(!c.secret_key_is_default);
        assert!(c.warnings().is_empty());
        assert_eq!(
            ok(&[("WF_SECRET_KEY", &STANDARD_NO_PAD.encode(key))])
                .secret_key
                .all(),
            &[key]
        );
        // Explicitly configuring the public development key still counts as the default.
        assert!(ok(&[("WF_SECRET_KEY", &STANDARD.encode(DEV_SECRET_KEY))]).secret_key_is_default);

        let short = STANDARD.encode([1u8; 16]);
        let long = STANDARD.encode([1u8; 33]);
        for v in [short.as_str(), long.as_str(), "!!!not base64!!!", ""] {
            let err = bad("WF_SECRET_KEY", v);
            assert_eq!(err.value, "<redacted>");
            let text = err.to_string();
            assert!(text.contains("`<redacted>`"), "{text}");
            if !v.is_empty() {
                assert!(!text.contains(v), "{text}");
            }
        }
        assert!(bad("WF_SECRET_KEY", &short).reason.contains("16 bytes"));
    }

    #[test]
    fn secret_key_lists() {
        use base64::engine::general_purpose::STANDARD;
        let (a, b) = (STANDARD.encode([1u8; 32]), STANDARD.encode([2u8; 32]));
        let c = ok(&[("WF_SECRET_KEY", &format!("{b}, {a}"))]);
        assert_eq!(c.secret_key.all(), &[[2u8; 32], [1u8; 32]]);
        assert_eq!(c.secret_key.primary(), &[2u8; 32]);
        assert!(!c.secret_key_is_default);
        assert!(c.warnings().is_empty());

        let short = STANDARD.encode([3u8; 16]);
        for (v, reason) in [
            (format!("{b},{short}"), "key 2 of 2: decodes to 16 bytes"),
            (format!("{b},{a},"), "key 3 of 3: empty"),
            (format!("{b},not base64!"), "key 2 of 2: not valid base64"),
            (format!("{a},{b},{a}"), "keys 1 and 3 of 3 are the same key"),
        ] {
            let err = bad("WF_SECRET_KEY", &v);
            assert_eq!(err.value, "<redacted>");
            assert!(err.reason.starts_with(reason), "{err}");
            let text = err.to_string();
            for part in [&a, &b, &short] {
                assert!(!text.contains(part.as_str()), "{text}");
            }
        }

        // The development key first: new secrets are sealed with a public key.
        let dev = STANDARD.encode(DEV_SECRET_KEY);
        let c = ok(&[("WF_SECRET_KEY", &format!("{dev},{a}"))]);
        assert!(c.secret_key_is_default);
        let w = c.warnings();
        assert!(w.len() == 1 && w[0].contains("development key"), "{w:?}");
        // The development key as an old key: sealing is safe, leftovers are not.
        let c = ok(&[("WF_SECRET_KEY", &format!("{a},{dev}"))]);
        assert!(!c.secret_key_is_default);
        let w = c.warnings();
        assert!(w.len() == 1 && w[0].contains("wfctl rekey"), "{w:?}");
    }

    #[test]
    fn queue_type() {
        assert_eq!(
            ok(&[("WF_QUEUE_TYPE", "classic")]).queue_type,
            QueueType::Classic
        );
        assert_eq!(
            ok(&[("WF_QUEUE_TYPE", "quorum")]).queue_type,
            QueueType::Quorum
        );
        bad("WF_QUEUE_TYPE", "stream");
        bad("WF_QUEUE_TYPE", "");
        assert_eq!(QueueType::Classic.as_str(), "classic");
    }

    #[test]
    fn shutdown_grace() {
        assert_eq!(
            ok(&[("WF_SHUTDOWN_GRACE", "2m")]).shutdown_grace,
            Duration::from_secs(120)
        );
        // Zero is allowed: hand everything back at once.
        assert_eq!(
            ok(&[("WF_SHUTDOWN_GRACE", "0s")]).shutdown_grace,
            Duration::ZERO
        );
        bad("WF_SHUTDOWN_GRACE", "30");
        bad("WF_SHUTDOWN_GRACE", "-1s");
        bad("WF_SHUTDOWN_GRACE", "");
    }

    #[test]
    fn log() {
        assert_eq!(
            ok(&[("WF_LOG", "wf_worker=debug,info")]).log,
            "wf_worker=debug,info"
        );
        bad("WF_LOG", "");
        bad("WF_LOG", "  ");
    }

    #[test]
    fn log_format() {
        assert_eq!(ok(&[("WF_LOG_FORMAT", "json")]).log_format, LogFormat::Json);
        assert_eq!(ok(&[("WF_LOG_FORMAT", "text")]).log_format, LogFormat::Text);
        bad("WF_LOG_FORMAT", "yaml");
        bad("WF_LOG_FORMAT", "");
    }

    #[test]
    fn delivery_log_retention() {
        assert_eq!(
            ok(&[("WF_DELIVERY_LOG_RETENTION", "30d")]).delivery_log_retention,
            Duration::from_secs(30 * 86_400)
        );
        bad("WF_DELIVERY_LOG_RETENTION", "0d");
        bad("WF_DELIVERY_LOG_RETENTION", "week");
        bad("WF_DELIVERY_LOG_RETENTION", "");
    }

    #[test]
    fn auto_disable_after() {
        assert_eq!(
            ok(&[("WF_AUTO_DISABLE_AFTER", "2s")]).auto_disable_after,
            Duration::from_secs(2)
        );
        assert_eq!(
            ok(&[("WF_AUTO_DISABLE_AFTER", "12h")]).auto_disable_after,
            Duration::from_secs(12 * 3600)
        );
        bad("WF_AUTO_DISABLE_AFTER", "0s");
        bad("WF_AUTO_DISABLE_AFTER", "5");
        bad("WF_AUTO_DISABLE_AFTER", "five days");
        bad("WF_AUTO_DISABLE_AFTER", "");
    }

    #[test]
    fn warnings() {
        let w = ok(&[]).warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("WF_SECRET_KEY"), "{w:?}");

        let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        let w = ok(&[
            ("WF_SECRET_KEY", key.as_str()),
            ("WF_ALLOWED_TARGET_CIDRS", "127.0.0.0/8,::1/128"),
        ])
        .warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("WF_ALLOWED_TARGET_CIDRS"), "{w:?}");
        assert!(
            w[0].contains("127.0.0.0/8") && w[0].contains("::1/128"),
            "{w:?}"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        let c = ok(&[
            ("WF_SECRET_KEY", key.as_str()),
            ("WF_AMQP_URL", "amqp://guest:topsecret@mq/"),
        ]);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("topsecret"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
        assert!(!dbg.contains("9, 9, 9"), "{dbg}");
    }

    /// The table is the whole truth: every variable read is listed, every listed one is
    /// read, once, and no two rows share a name.
    #[test]
    fn the_table_lists_exactly_the_variables_read() {
        for role in [Role::Ingestor, Role::Worker, Role::Cli] {
            let read = std::cell::RefCell::new(Vec::new());
            Config::from_lookup(role, |name| {
                read.borrow_mut().push(name.to_owned());
                None
            })
            .unwrap();
            let mut read = read.into_inner();
            let listed: Vec<String> = VARIABLES.iter().map(|v| v.name.to_owned()).collect();
            let mut sorted = listed.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), listed.len(), "a name listed twice");
            read.sort();
            assert_eq!(read, sorted, "{role:?}");
        }
        for v in VARIABLES {
            assert!(v.name.starts_with("WF_"), "{}", v.name);
            assert!(!v.meaning.is_empty(), "{}", v.name);
        }
    }

    /// The defaults the table shows are what a process gets with nothing set.
    #[test]
    fn the_table_defaults_are_the_defaults() {
        for role in [Role::Ingestor, Role::Worker, Role::Cli] {
            let defaults: HashMap<&str, &str> = VARIABLES
                .iter()
                .filter_map(|v| Some((v.name, v.default_for(role)?)))
                .collect();
            let from_table =
                Config::from_lookup(role, |k| defaults.get(k).map(|v| (*v).to_owned())).unwrap();
            let unset = Config::from_lookup(role, |_| None).unwrap();
            assert_eq!(format!("{from_table:?}"), format!("{unset:?}"), "{role:?}");
        }
        assert_eq!(
            cfg(Role::Cli, &[]).unwrap().log,
            "warn",
            "wfctl logs warnings only by default"
        );
        assert_eq!(cfg(Role::Ingestor, &[]).unwrap().log, "info");
    }

    #[test]
    fn help_lists_every_variable_with_its_default_for_the_process() {
        let ingestor = help(Role::Ingestor);
        let worker = help(Role::Worker);
        for v in VARIABLES {
            for (role, text) in [(Role::Ingestor, &ingestor), (Role::Worker, &worker)] {
                let shown = match (v.default_for(role), v.default) {
                    (Some(value), _) => value,
                    (None, DefaultValue::Absent(words)) => words,
                    (None, _) => unreachable!(),
                };
                let line = format!("  {}  [default: {shown}]\n", v.name);
                assert!(text.contains(&line), "{line:?} not in\n{text}");
            }
            // The meaning is all there, wrapped.
            let words: Vec<&str> = v.meaning.split_whitespace().collect();
            let at = ingestor.find(&format!("  {}  ", v.name)).unwrap();
            let after: Vec<&str> = ingestor[at..].split_whitespace().collect();
            assert!(
                after.windows(words.len()).any(|w| w == words.as_slice()),
                "{}",
                v.name
            );
        }
        assert!(ingestor.contains("[default: 127.0.0.1:9464]"));
        assert!(worker.contains("[default: 127.0.0.1:9465]"));
        assert!(ingestor.lines().all(|l| l.len() <= 90), "{ingestor}");
    }

    #[test]
    fn defaults_in_markdown() {
        let md = |name| variable(name).unwrap().default_markdown();
        assert_eq!(md("WF_HTTP_ADDR"), "`127.0.0.1:8080`");
        assert_eq!(
            md("WF_METRICS_ADDR"),
            "ingestor `127.0.0.1:9464`, worker and wfctl `127.0.0.1:9465`"
        );
        assert_eq!(md("WF_LOG"), "ingestor and worker `info`, wfctl `warn`");
        assert_eq!(md("WF_EXTRA_ROOT_CA"), "unset");
        assert!(variable("WF_NOPE").is_none());
    }

    #[test]
    fn redacts_url_passwords() {
        assert_eq!(
            redact_url_password("amqp://u:p@h/%2f"),
            "amqp://u:***@h/%2f"
        );
        assert_eq!(
            redact_url_password("postgres://u@h/db"),
            "postgres://u@h/db"
        );
        assert_eq!(
            redact_url_password("postgres://h/db?x=a@b"),
            "postgres://h/db?x=a@b"
        );
        assert_eq!(redact_url_password("no scheme"), "no scheme");
    }
}
