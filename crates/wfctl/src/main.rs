//! `wfctl`: the operator CLI. Every command reads the same `WF_*` variables as the
//! services (README, "Configuration"), so it always talks to the deployment they do.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use wf_broker::{Broker, Topology};
use wf_core::config::{Config, Role};
use wf_core::ids::{ApiKeyId, OrgId, WebhookId};
use wf_store::Store;

mod bench;
mod chaos;
mod dlq;
mod harness;
mod listen;
mod rekey;

/// jemalloc, as in the worker: `wfctl bench` runs its TLS receiver and load generator on
/// the same cores as the system it measures, and under glibc malloc their allocations
/// cost about a quarter of the bench process's CPU in a profile, CPU the pipeline then
/// did not get.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Operate WorkFlows outbound webhooks.
///
/// Migrations, topology, API keys, dead letters, a local webhook receiver and load tests.
/// Every command reads the same WF_* variables as the services, so it works on the
/// deployment they do.
#[derive(Parser)]
#[command(name = "wfctl", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations (safe to run concurrently).
    Migrate,
    /// Declare the RabbitMQ exchanges and queues (idempotent).
    Topology,
    /// Manage API keys.
    #[command(name = "api-key", subcommand)]
    ApiKey(ApiKeyCommand),
    /// Load test: real workers deliver to a loopback HTTPS receiver (see BENCHMARKS.md).
    ///
    /// Real worker processes on a fresh vhost and database deliver to a loopback HTTPS
    /// receiver; prints one line per figure. Needs the release build of wf-worker (and
    /// wf-ingestor for --via http) next to wfctl.
    Bench(bench::BenchArgs),
    /// Fault injection with loss accounting: real worker and ingestor processes deliver a
    /// stream of events to a loopback HTTPS receiver while a worker is SIGKILLed,
    /// RabbitMQ or Postgres (private ones) stop, the endpoint misbehaves or a cluster node
    /// dies; every delivery owed must end delivered or dead. Needs the release builds of
    /// wf-worker and wf-ingestor next to wfctl, and root (or the rabbitmq/postgres user)
    /// for the private servers.
    Chaos(chaos::ChaosArgs),
    /// Dead deliveries: list them, or re-queue them once the endpoint has recovered.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Re-encrypt every webhook secret and custom header value with the first key of
    /// WF_SECRET_KEY (in batches, resumable, safe beside live traffic); after it, the
    /// other keys can be removed. `--check` only counts what still needs an old key.
    Rekey(rekey::RekeyArgs),
    /// A local HTTPS webhook receiver: one line per delivery, both signatures checked.
    ///
    /// Serves HTTPS with a fresh self-signed certificate, written as PEM to --cert-out for
    /// the worker's WF_EXTRA_ROOT_CA (the worker also needs WF_ALLOWED_TARGET_CIDRS to
    /// deliver to a loopback address). Answers every request with --status and prints, on
    /// stdout, one line per request: time, event type (X-WorkFlows-Event), delivery id
    /// (X-WorkFlows-Delivery), attempt (X-WorkFlows-Attempt), and whether both signatures
    /// verify against the webhook's secret (signatures=verified, INVALID(<headers>) or
    /// unchecked(<why>)), then the status answered. Reads no WF_* variable.
    #[command(verbatim_doc_comment)]
    Listen(listen::ListenArgs),
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead deliveries (every organisation) and the dead-letter queue's depth.
    List {
        /// Only this webhook's (`whk_…`).
        #[arg(long)]
        webhook: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Re-queue dead deliveries: the next attempt, a fresh retry schedule, signed afresh.
    Replay {
        /// Only this webhook's (`whk_…`).
        #[arg(long)]
        webhook: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100_000)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create a key for an organisation (created if new). The key is printed once.
    Create {
        /// The organisation (`org_…`).
        #[arg(long)]
        org: String,
        /// What the key is for, 1 to 100 characters.
        #[arg(long)]
        name: String,
    },
    /// Revoke a key by id (`key_…`).
    Revoke {
        /// The key's id (`key_…`), as `api-key create` printed it.
        id: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Arguments first: `--help`, `--version` and a bad argument (exit status 2) never read
    // the configuration or connect to anything.
    let matches = Cli::command()
        .after_help(wf_core::config::help(Role::Cli))
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        // The receiver talks to no part of a deployment: it needs no configuration.
        Command::Listen(args) => listen::run(args).await,
        command => {
            let config = Config::from_env(Role::Cli)?;
            wf_telemetry::init_tracing(&config.log, config.log_format)?;
            operate(command, &config).await
        }
    }
}

async fn operate(command: Command, config: &Config) -> anyhow::Result<()> {
    match command {
        Command::Listen(args) => listen::run(args).await?,
        Command::Bench(args) => bench::run(args, config).await?,
        Command::Chaos(args) => chaos::run(args, config).await?,
        Command::Dlq(cmd) => {
            let (webhook, limit, replay) = match cmd {
                DlqCommand::List { webhook, limit } => (webhook, limit, false),
                DlqCommand::Replay { webhook, limit } => (webhook, limit, true),
            };
            let webhook = webhook
                .map(|w| WebhookId::parse(&w).context("--webhook"))
                .transpose()?;
            let store = store(config).await?;
            let broker = Broker::connect(&config.amqp_url).await?;
            broker
                .declare_topology(&Topology::for_config(config))
                .await?;
            let res = if replay {
                dlq::replay(&store, &broker, webhook.as_ref(), limit).await
            } else {
                dlq::list(&store, &broker, webhook.as_ref(), limit).await
            };
            broker.close().await;
            res?;
        }
        Command::Rekey(args) => {
            let store = store(config).await?;
            rekey::run(&store, &config.secret_key, &args).await?;
        }
        Command::Migrate => {
            wf_store::migrate(&config.database_url).await?;
            println!("migrations applied");
        }
        Command::Topology => {
            let broker = Broker::connect(&config.amqp_url).await?;
            broker
                .declare_topology(&Topology::for_config(config))
                .await?;
            broker.close().await;
            println!("topology declared");
        }
        Command::ApiKey(ApiKeyCommand::Create { org, name }) => {
            let org = OrgId::parse(&org).context("--org")?;
            let name = name.trim();
            anyhow::ensure!(
                !name.is_empty() && name.chars().count() <= 100,
                "--name must be 1 to 100 characters"
            );
            let store = store(config).await?;
            let (key, token) = store.create_api_key(&org, name).await?;
            println!("{token}");
            eprintln!(
                "created API key {} for {} (shown once; store it now)",
                key.id, key.org_id
            );
        }
        Command::ApiKey(ApiKeyCommand::Revoke { id }) => {
            let id = ApiKeyId::parse(&id).context("API key id")?;
            let store = store(config).await?;
            match store.revoke_api_key(None, &id).await? {
                Some(k) => println!("revoked {} ({})", k.id, k.name),
                None => anyhow::bail!("no active API key {id}"),
            }
        }
    }
    Ok(())
}

async fn store(config: &Config) -> anyhow::Result<Store> {
    wf_store::migrate(&config.database_url).await?;
    Ok(Store::connect(&config.database_url, config.secret_key.clone(), 2).await?)
}
