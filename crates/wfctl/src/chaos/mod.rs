//! `wfctl chaos`: fault injection with loss accounting. Each scenario runs the real
//! services (release binaries) as child processes, streams events to them, breaks
//! something mid-stream, and then accounts for every delivery the stream owed:
//!
//! ```text
//! lost = sent × webhooks − delivered − dead
//! ```
//!
//! where `sent` counts the events the broker (or the API) confirmed, `delivered` the
//! distinct `X-WorkFlows-Delivery` ids the HTTPS receiver answered 200, and `dead` the
//! deliveries the delivery log marks dead (and the receiver never took). Anything but
//! `lost: 0` fails the run. Delivery rates before, during and after the fault show what
//! the fault cost while it lasted.
//!
//! Infrastructure: a fresh vhost and database on the machine's RabbitMQ and Postgres
//! (as `wfctl bench` uses), except where the fault is the infrastructure itself: a
//! private RabbitMQ node, a private three-node RabbitMQ cluster or a private Postgres
//! server, started for the scenario in a temporary folder and removed after it. The
//! machine's servers are never stopped or reconfigured.

mod postgres;
mod rabbit;
mod system;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use wf_broker::{names, Broker};
use wf_core::config::Config;
use wf_core::ids::OrgId;
use wf_store::{DeliveryStatus, NewWebhook, ReplayFilter, Store};

use crate::harness::isolation;
use crate::harness::load::{self, EventFactory, LoadReport, Plan, EVENT_TYPE};
use crate::harness::procs::{self, Service, ServiceVars};
use crate::harness::receiver::{Faults, Receiver, Snapshot};
use postgres::PrivatePostgres;
use rabbit::RabbitNode;

/// Options of `wfctl chaos`.
#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    /// Scenarios to run (repeatable; default: all, in this order).
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<Scenario>,
    /// A reduced run (fewer events, shorter outages), as `make test` runs it.
    #[arg(long)]
    pub short: bool,
    /// Events each scenario streams at least (default 4000, 1000 with --short); the stream
    /// goes on until a few seconds after its fault is over.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: Option<u64>,
    /// Events per second of the stream.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Webhooks subscribed to every event (each event owes this many deliveries).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhooks: u32,
    /// Directory holding the wf-worker and wf-ingestor binaries (default: the directory of
    /// this wfctl, i.e. target/release).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
}

/// What breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A worker SIGKILLed ten times while delivering, restarted each time.
    #[value(alias = "a")]
    WorkerKill,
    /// A (private) RabbitMQ node stopped and started again mid-stream.
    #[value(alias = "b")]
    RabbitmqRestart,
    /// A (private) Postgres server stopped hard and started again mid-stream.
    #[value(alias = "c")]
    PostgresRestart,
    /// The endpoint answers a random mix of 500s, timeouts and connection resets for a while.
    #[value(alias = "d")]
    EndpointFaults,
    /// A three-node RabbitMQ cluster loses (SIGKILL) the node holding most connections,
    /// and a worker is SIGKILLed, while two ingestors and three workers stream.
    #[value(alias = "e")]
    ClusterFailover,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::WorkerKill,
        Scenario::RabbitmqRestart,
        Scenario::PostgresRestart,
        Scenario::EndpointFaults,
        Scenario::ClusterFailover,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::WorkerKill => "worker-kill",
            Scenario::RabbitmqRestart => "rabbitmq-restart",
            Scenario::PostgresRestart => "postgres-restart",
            Scenario::EndpointFaults => "endpoint-faults",
            Scenario::ClusterFailover => "cluster-failover",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Scenario::WorkerKill => "a worker SIGKILLed ten times while delivering, restarted each time",
            Scenario::RabbitmqRestart => "RabbitMQ (a private node) stopped and started mid-stream",
            Scenario::PostgresRestart => {
                "Postgres (a private server) stopped hard (immediate) and started mid-stream"
            }
            Scenario::EndpointFaults => {
                "the endpoint answers a random mix of 500s, timeouts and connection resets for a while"
            }
            Scenario::ClusterFailover => {
                "3-node RabbitMQ cluster: the node with most connections SIGKILLed and restarted, a worker SIGKILLed"
            }
        }
    }

    fn workers(self) -> usize {
        match self {
            Scenario::ClusterFailover => 3,
            _ => 2,
        }
    }

    /// Ingestors; with any, half the events go through `POST /api/v1/events`.
    fn ingestors(self) -> usize {
        match self {
            Scenario::WorkerKill | Scenario::EndpointFaults => 0,
            Scenario::RabbitmqRestart | Scenario::PostgresRestart => 1,
            Scenario::ClusterFailover => 2,
        }
    }

    /// Private RabbitMQ nodes (0: a vhost on the machine's broker).
    fn rabbit_nodes(self) -> usize {
        match self {
            Scenario::RabbitmqRestart => 1,
            Scenario::ClusterFailover => 3,
            _ => 0,
        }
    }

    fn private_postgres(self) -> bool {
        self == Scenario::PostgresRestart
    }
}

/// How long things last, full or `--short`.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    events: u64,
    rate: f64,
    /// How long a stopped server stays down.
    down: Duration,
    /// How long the endpoint misbehaves.
    fault_window: Duration,
    /// The stream goes on at least this long after the fault is over.
    after: Duration,
}

impl Sizes {
    fn new(args: &ChaosArgs) -> Sizes {
        let (events, down, fault_window, after) = if args.short {
            (1000, 3, 4, 3)
        } else {
            (4000, 8, 10, 6)
        };
        Sizes {
            events: args.events.unwrap_or(events),
            rate: args.rate,
            down: Duration::from_secs(down),
            fault_window: Duration::from_secs(fault_window),
            after: Duration::from_secs(after),
        }
    }
}

/// How long a publisher keeps trying one event before counting it failed.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(300);
/// How long the accounting waits without any delivery or dead letter before it gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(90);
/// Kills of the worker-kill scenario.
const WORKER_KILLS: usize = 10;
/// The retry schedule of the endpoint-faults scenario: short, so that what fails for
/// good is dead within seconds.
const FAULTS_RETRY_SCHEDULE: &str = "200ms,500ms,1s";
/// The delivery timeout of the endpoint-faults scenario; the receiver holds a timed-out
/// request longer.
const FAULTS_DELIVERY_TIMEOUT: Duration = Duration::from_secs(1);
/// The retry schedule elsewhere: an endpoint that always answers 200 never needs the
/// default hours, and a retry caused by a fault comes back quickly.
const RETRY_SCHEDULE: &str = "1s,2s,5s,10s,30s,1m";

/// Runs the chosen scenarios one after the other; fails when any lost a delivery or
/// could not run.
pub async fn run(args: ChaosArgs, config: &Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a positive number of events per second"
    );
    let bin_dir = args.bin_dir.as_deref();
    let bins = Binaries {
        worker: procs::service_binary(bin_dir, "wf-worker")?,
        ingestor: procs::service_binary(bin_dir, "wf-ingestor")?,
    };
    for bin in [&bins.worker, &bins.ingestor] {
        if let Some(note) = procs::staleness_note(bin) {
            eprintln!("chaos: {note}");
        }
    }
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    let sizes = Sizes::new(&args);
    let mut results = Vec::new();
    for scenario in scenarios {
        let mut lab = Lab::new(config)?;
        println!("== chaos {}: {}", scenario.name(), scenario.what());
        eprintln!(
            "chaos: {}: vhost/database {}, files in {}",
            scenario.name(),
            lab.name,
            lab.dir.display()
        );
        let outcome = tokio::select! {
            r = run_scenario(scenario, &args, sizes, &bins, &mut lab) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        let interrupted = matches!(&outcome, Err(e) if e.to_string() == "interrupted");
        let failed = !matches!(&outcome, Ok(a) if a.lost() == 0);
        lab.teardown(failed).await;
        match outcome {
            Ok(a) => {
                a.print(scenario);
                results.push((scenario, Ok(a)));
            }
            Err(e) => {
                println!("{} result: FAILED: {e:#}", scenario.name());
                results.push((scenario, Err(e)));
            }
        }
        if interrupted {
            break;
        }
    }
    print_summary(&results);
    let bad: Vec<&str> = results
        .iter()
        .filter(|(_, r)| !matches!(r, Ok(a) if a.lost() == 0))
        .map(|(s, _)| s.name())
        .collect();
    anyhow::ensure!(
        bad.is_empty(),
        "chaos failed: {} (see above)",
        bad.join(", ")
    );
    Ok(())
}

struct Binaries {
    worker: PathBuf,
    ingestor: PathBuf,
}

/// Everything a scenario starts or creates, so that all of it goes away whatever happens.
struct Lab {
    name: String,
    dir: PathBuf,
    system_amqp: String,
    system_db: String,
    /// Created on the machine's broker.
    vhost: Option<String>,
    /// Created on the machine's Postgres.
    database: Option<String>,
    nodes: Vec<RabbitNode>,
    postgres: Option<PrivatePostgres>,
    workers: Vec<Service>,
    ingestors: Vec<Service>,
    receiver: Option<Receiver>,
}

impl Lab {
    fn new(config: &Config) -> anyhow::Result<Lab> {
        let name = isolation::run_name("wf_chaos");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Lab {
            name,
            dir,
            system_amqp: config.amqp_url.clone(),
            system_db: config.database_url.clone(),
            vhost: None,
            database: None,
            nodes: Vec::new(),
            postgres: None,
            workers: Vec::new(),
            ingestors: Vec::new(),
            receiver: None,
        })
    }

    fn services_mut(&mut self) -> impl Iterator<Item = &mut Service> {
        self.workers.iter_mut().chain(self.ingestors.iter_mut())
    }

    /// Fails, with the log's tail, when a service exited that should run.
    fn check_services(&mut self) -> anyhow::Result<()> {
        for s in self.services_mut() {
            anyhow::ensure!(
                s.is_running(),
                "{} exited unexpectedly; its log {}:\n{}",
                s.name,
                s.log.display(),
                procs::tail(&s.log, 30)
            );
        }
        Ok(())
    }

    async fn teardown(mut self, failed: bool) {
        let services: Vec<Service> = self
            .workers
            .drain(..)
            .chain(self.ingestors.drain(..))
            .collect();
        for service in services {
            if let Some(complaint) = service.stop().await {
                eprintln!("chaos: warning: {complaint}");
            }
        }
        if let Some(r) = self.receiver.take() {
            r.stop();
        }
        if let Some(vhost) = self.vhost.take() {
            if let Err(e) = isolation::delete_vhost(&vhost) {
                eprintln!("chaos: warning: {e:#}");
            }
        }
        if let Some(db) = self.database.take() {
            if let Err(e) = isolation::drop_database(&self.system_db, &db).await {
                eprintln!("chaos: warning: {e:#}");
            }
        }
        for node in self.nodes.drain(..) {
            node.remove(failed).await;
        }
        if let Some(pg) = self.postgres.take() {
            pg.remove(failed).await;
        }
        if failed {
            eprintln!(
                "chaos: service and server logs kept in {} (server data removed)",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The accounting of one scenario.
#[derive(Debug, Default)]
struct Account {
    webhooks: u64,
    sent_amqp: u64,
    sent_http: u64,
    publish_failures: u64,
    publish_retries: u64,
    delivered: u64,
    duplicates: u64,
    /// Dead in the delivery log and never answered 200.
    dead: u64,
    /// Dead in the log although the receiver answered 200 (the answer got lost).
    dead_after_delivered: u64,
    dead_letter_queue: Option<u32>,
    signature_failures: u64,
    faulted: [u64; 3],
    before: Rate,
    during: Rate,
    after: Rate,
    notes: Vec<String>,
    /// Why the accounting stopped waiting before everything was accounted for.
    stalled: Option<String>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Rate {
    deliveries: u64,
    seconds: f64,
}

impl Rate {
    fn between(d0: u64, t0: Instant, d1: u64, t1: Instant) -> Rate {
        Rate {
            deliveries: d1.saturating_sub(d0),
            seconds: t1.saturating_duration_since(t0).as_secs_f64(),
        }
    }

    fn show(self) -> String {
        if self.seconds <= 0.0 {
            return "n/a".to_owned();
        }
        format!(
            "{:.1}/s ({} deliveries in {:.1} s)",
            self.deliveries as f64 / self.seconds,
            self.deliveries,
            self.seconds
        )
    }

    fn per_sec(self) -> String {
        if self.seconds <= 0.0 {
            "n/a".to_owned()
        } else {
            format!("{:.0}", self.deliveries as f64 / self.seconds)
        }
    }
}

impl Account {
    fn sent(&self) -> u64 {
        self.sent_amqp + self.sent_http
    }

    fn expected(&self) -> u64 {
        self.sent() * self.webhooks
    }

    /// `sent × webhooks − delivered − dead`; a publish whose outcome is unknown (failed for
    /// good) makes the run fail too, as it cannot be accounted for.
    fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.delivered + self.dead) + self.publish_failures
    }

    fn print(&self, s: Scenario) {
        let n = s.name();
        println!(
            "{n} sent: {} (amqp {}, http {})",
            self.sent(),
            self.sent_amqp,
            self.sent_http
        );
        println!("{n} webhooks: {}", self.webhooks);
        println!("{n} expected: {}", self.expected());
        println!("{n} delivered: {}", self.delivered);
        println!("{n} duplicates: {}", self.duplicates);
        println!("{n} dead: {}", self.dead);
        if self.dead_after_delivered > 0 {
            println!("{n} dead_after_delivered: {}", self.dead_after_delivered);
        }
        if let Some(depth) = self.dead_letter_queue {
            println!("{n} dead_letter_queue: {depth}");
        }
        println!("{n} lost: {}", self.lost());
        println!("{n} rate_before: {}", self.before.show());
        println!("{n} rate_during: {}", self.during.show());
        println!("{n} rate_after: {}", self.after.show());
        println!("{n} publish_retries: {}", self.publish_retries);
        if self.publish_failures > 0 {
            println!("{n} publish_failures: {}", self.publish_failures);
        }
        if self.faulted.iter().any(|&f| f > 0) {
            println!(
                "{n} endpoint_faults: {} x 500, {} timeouts, {} resets",
                self.faulted[0], self.faulted[1], self.faulted[2]
            );
        }
        println!("{n} signature_failures: {}", self.signature_failures);
        for note in &self.notes {
            println!("{n} fault: {note}");
        }
        if let Some(why) = &self.stalled {
            println!("{n} stalled: {why}");
        }
        println!(
            "{n} result: {}",
            if self.lost() == 0 {
                "ok"
            } else {
                "LOST DELIVERIES"
            }
        );
    }
}

fn print_summary(results: &[(Scenario, anyhow::Result<Account>)]) {
    println!("== chaos summary");
    println!(
        "{:<18} {:>6} {:>8} {:>9} {:>10} {:>5} {:>5}  {:>22}  result",
        "scenario",
        "sent",
        "expected",
        "delivered",
        "duplicates",
        "dead",
        "lost",
        "rate/s before/during/after"
    );
    for (s, r) in results {
        match r {
            Ok(a) => println!(
                "{:<18} {:>6} {:>8} {:>9} {:>10} {:>5} {:>5}  {:>22}  {}",
                s.name(),
                a.sent(),
                a.expected(),
                a.delivered,
                a.duplicates,
                a.dead,
                a.lost(),
                format!(
                    "{}/{}/{}",
                    a.before.per_sec(),
                    a.during.per_sec(),
                    a.after.per_sec()
                ),
                if a.lost() == 0 { "ok" } else { "LOST" }
            ),
            Err(_) => println!("{:<18} {:>66}  FAILED", s.name(), "-"),
        }
    }
}

/// One scenario: infrastructure, services, webhooks, the stream, the fault, the account.
async fn run_scenario(
    scenario: Scenario,
    args: &ChaosArgs,
    sizes: Sizes,
    bins: &Binaries,
    lab: &mut Lab,
) -> anyhow::Result<Account> {
    // 1. Infrastructure.
    let amqp_url = if scenario.rabbit_nodes() == 0 {
        lab.vhost = Some(lab.name.clone());
        isolation::create_vhost(&lab.name)?;
        isolation::with_path(&lab.system_amqp, &lab.name, "WF_AMQP_URL")?
    } else {
        eprintln!(
            "chaos: starting {} private RabbitMQ node(s)",
            scenario.rabbit_nodes()
        );
        let prefix = lab.name.clone();
        lab.nodes = rabbit::start_cluster(&lab.dir, &prefix, scenario.rabbit_nodes()).await?;
        lab.nodes
            .iter()
            .map(RabbitNode::url)
            .collect::<Vec<_>>()
            .join(",")
    };
    let db_url = if scenario.private_postgres() {
        eprintln!("chaos: starting a private Postgres");
        let pg = lab.postgres.insert(PrivatePostgres::start(&lab.dir).await?);
        isolation::create_database(&pg.url(), &lab.name).await?;
        isolation::with_path(&pg.url(), &lab.name, "WF_DATABASE_URL")?
    } else {
        lab.database = Some(lab.name.clone());
        isolation::create_database(&lab.system_db, &lab.name).await?;
        isolation::with_path(&lab.system_db, &lab.name, "WF_DATABASE_URL")?
    };

    // 2. Receiver and services.
    let receiver = Receiver::start(
        &lab.dir,
        crate::harness::receiver::Endpoints::default(),
        scenario == Scenario::EndpointFaults,
    )
    .await?;
    let (schedule, timeout) = if scenario == Scenario::EndpointFaults {
        (FAULTS_RETRY_SCHEDULE, FAULTS_DELIVERY_TIMEOUT)
    } else {
        (RETRY_SCHEDULE, Duration::from_secs(5))
    };
    let common = ServiceVars::new(&db_url, &amqp_url, &receiver.cert_path)
        .set("WF_WORKER_CONCURRENCY", "64")
        .set("WF_RETRY_SCHEDULE", schedule)
        .set("WF_DELIVERY_TIMEOUT", format!("{}ms", timeout.as_millis()))
        .set("WF_LOG", "info");
    let secret_key = common.secret_key;
    lab.receiver = Some(receiver);
    for i in 0..scenario.workers() {
        let s = common
            .start(
                &format!("wf-worker #{i}"),
                &bins.worker,
                &[],
                lab.dir.join(format!("wf-worker-{i}.log")),
            )
            .await?;
        lab.workers.push(s);
    }
    let mut apis = Vec::new();
    for i in 0..scenario.ingestors() {
        let http = loopback(procs::free_port()?);
        let s = common
            .start(
                &format!("wf-ingestor #{i}"),
                &bins.ingestor,
                &[("WF_HTTP_ADDR", http.to_string())],
                lab.dir.join(format!("wf-ingestor-{i}.log")),
            )
            .await?;
        lab.ingestors.push(s);
        apis.push(http);
    }
    eprintln!(
        "chaos: {} worker(s) and {} ingestor(s) ready",
        lab.workers.len(),
        lab.ingestors.len()
    );

    // 3. An API key and the webhooks (the services have migrated the database).
    let store = Store::connect(&db_url, secret_key, 2).await?;
    let org = OrgId::parse(&format!("org_{}", lab.name)).context("organisation id")?;
    let (_, token) = store.create_api_key(&org, "wfctl chaos").await?;
    let mut secrets = Vec::new();
    for i in 0..args.webhooks as usize {
        let (_, secret) = store
            .create_webhook(
                &org,
                NewWebhook {
                    name: format!("chaos {i}"),
                    url: lab.receiver.as_ref().context("the receiver")?.url(i),
                    events: vec![EVENT_TYPE.to_owned()],
                    is_active: true,
                    rate_limit: None,
                },
            )
            .await?;
        secrets.push(secret.expose().to_owned());
    }
    lab.receiver
        .as_ref()
        .context("the receiver")?
        .set_secrets(secrets);

    // 4. The stream: AMQP, and the API when there are ingestors, each publish persisted.
    let broker = Broker::connect(&amqp_url).await?;
    let publisher = broker.publisher().await?;
    let factory = Arc::new(EventFactory::new(org.as_str(), 512));
    let sources = if apis.is_empty() { 1 } else { 2 };
    let per_source = sizes.events.div_ceil(sources);
    let rate = sizes.rate / sources as f64;
    // Open-ended until the fault is over (see below).
    let plan = || Plan {
        limit: Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
        rate,
        persist: Some(PUBLISH_PATIENCE),
        confirmed: Arc::new(std::sync::atomic::AtomicU64::new(0)),
    };
    let amqp_plan = plan();
    let amqp_stream = {
        let (publisher, plan, factory) = (publisher.clone(), amqp_plan.clone(), factory.clone());
        tokio::spawn(async move {
            load::publish_amqp(
                &publisher,
                Arc::from(names::EVENTS_EXCHANGE),
                Arc::from(EVENT_TYPE),
                &plan,
                move |i| factory.amqp_body(i),
            )
            .await
        })
    };
    let http_plan = (!apis.is_empty()).then(plan);
    let http_stream = http_plan.clone().map(|plan| {
        let (token, factory): (Arc<str>, _) = (Arc::from(token.as_str()), factory.clone());
        let apis = apis.clone();
        tokio::spawn(async move { load::publish_http(&apis, token, factory, 1 << 32, &plan).await })
    });
    let plans: Vec<Plan> = std::iter::once(amqp_plan.clone())
        .chain(http_plan.clone())
        .collect();
    let confirmed = || -> u64 {
        plans
            .iter()
            .map(|p| p.confirmed.load(Ordering::Relaxed))
            .sum()
    };
    let t0 = Instant::now();

    // 5. Before: a quarter of the stream.
    while confirmed() < sizes.events / 4 {
        lab.check_services()?;
        anyhow::ensure!(
            t0.elapsed() < PUBLISH_PATIENCE,
            "the stream did not get going: {} events confirmed in {:?}",
            confirmed(),
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fault_start = Instant::now();
    let at_fault_start = lab.receiver.as_ref().map_or(0, |r| r.snapshot().distinct);

    // 6. The fault.
    eprintln!("chaos: {}: fault", scenario.name());
    let notes = inject(scenario, sizes, lab).await?;
    let fault_end = Instant::now();
    let at_fault_end = lab.receiver.as_ref().map_or(0, |r| r.snapshot().distinct);
    eprintln!(
        "chaos: {}: fault over after {:.1} s",
        scenario.name(),
        fault_end.duration_since(fault_start).as_secs_f64()
    );
    // The stream goes on for a while after the fault, at its rate, and is at least
    // `--events` long.
    let extra = (rate * sizes.after.as_secs_f64()).ceil() as u64;
    for p in &plans {
        let now = p.confirmed.load(Ordering::Relaxed);
        p.limit
            .store((now + extra).max(per_source), Ordering::Relaxed);
    }

    // 7. After: the stream ends, then everything owed is delivered or dead.
    let mut amqp_stream = Some(amqp_stream);
    let mut http_stream = http_stream;
    let mut amqp_report: Option<LoadReport> = None;
    let mut http_report: Option<LoadReport> = None;
    let mut dead = DeadLog::default();
    let mut last_progress = (0u64, Instant::now());
    let mut last_line = Instant::now();
    let stalled = loop {
        lab.check_services()?;
        if let Some(h) = amqp_stream.take_if(|h| h.is_finished()) {
            amqp_report = Some(h.await.context("the AMQP stream")?);
        }
        if let Some(h) = http_stream.take_if(|h| h.is_finished()) {
            http_report = Some(h.await.context("the HTTP stream")?);
        }
        let streaming = amqp_stream.is_some() || http_stream.is_some();
        let receiver = lab.receiver.as_ref().context("the receiver")?;
        let snap = receiver.snapshot();
        dead.refresh(&store, &org, receiver, false).await;
        let accounted = snap.distinct + dead.not_delivered;
        let owed = confirmed() * u64::from(args.webhooks);
        if !streaming && accounted >= owed {
            break None;
        }
        let now = Instant::now();
        if accounted != last_progress.0 {
            last_progress = (accounted, now);
        } else if !streaming && now.duration_since(last_progress.1) > STALL_TIMEOUT {
            break Some(format!(
                "nothing delivered or dead-lettered for {STALL_TIMEOUT:?}: {accounted} of {owed} accounted for"
            ));
        }
        if now.duration_since(last_line) >= Duration::from_secs(5) {
            last_line = now;
            eprintln!(
                "chaos: {}: {:>6.1}s sent {} delivered {} dead {} of {owed}{}",
                scenario.name(),
                now.duration_since(t0).as_secs_f64(),
                confirmed(),
                snap.distinct,
                dead.not_delivered,
                if streaming { " (streaming)" } else { "" }
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let receiver = lab.receiver.as_ref().context("the receiver")?;
    dead.refresh(&store, &org, receiver, true).await;
    let snap: Snapshot = receiver.snapshot();
    let end = snap.last_new.unwrap_or(fault_end).max(fault_end);
    let dead_letter_queue = broker.queue_depth(names::DEAD_QUEUE).await.ok();
    store.close();
    drop(publisher);
    broker.close().await;
    let amqp = amqp_report.unwrap_or_default();
    let http = http_report.unwrap_or_default();
    Ok(Account {
        webhooks: u64::from(args.webhooks),
        sent_amqp: amqp.published,
        sent_http: http.published,
        publish_failures: amqp.failed + http.failed,
        publish_retries: amqp.retried + http.retried,
        delivered: snap.distinct,
        duplicates: snap.duplicates,
        dead: dead.not_delivered,
        dead_after_delivered: dead.total - dead.not_delivered,
        dead_letter_queue,
        signature_failures: snap.signature_failures,
        faulted: snap.faulted,
        before: Rate::between(0, t0, at_fault_start, fault_start),
        during: Rate::between(at_fault_start, fault_start, at_fault_end, fault_end),
        after: Rate::between(at_fault_end, fault_end, snap.distinct, end),
        notes,
        stalled,
    })
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The dead deliveries of the scenario's organisation, as the delivery log has them.
#[derive(Default)]
struct DeadLog {
    total: u64,
    /// Of those, the ones the receiver never answered 200.
    not_delivered: u64,
    checked: Option<Instant>,
}

impl DeadLog {
    /// Reads them again (at most every 2 s unless `now`). A failed read (Postgres is the
    /// fault) keeps the last figures.
    async fn refresh(&mut self, store: &Store, org: &OrgId, receiver: &Receiver, now: bool) {
        if !now
            && self
                .checked
                .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.checked = Some(Instant::now());
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .replay_items(&ReplayFilter {
                    org: Some(org),
                    status: Some(DeliveryStatus::Dead),
                    after: after.as_ref(),
                    limit: 1000,
                    ..ReplayFilter::default()
                })
                .await;
            let Ok(page) = page else { return };
            let Some(last) = page.last() else { break };
            after = Some(last.delivery_id.clone());
            let full = page.len() == 1000;
            ids.extend(page.into_iter().map(|d| d.delivery_id.to_string()));
            if !full {
                break;
            }
        }
        self.total = ids.len() as u64;
        self.not_delivered = self.total - receiver.count_delivered(ids.iter().map(String::as_str));
    }
}

/// Breaks what the scenario breaks and repairs it; returns what it did, for the report.
async fn inject(scenario: Scenario, sizes: Sizes, lab: &mut Lab) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    match scenario {
        Scenario::WorkerKill => {
            let worker = lab.workers.first_mut().context("no worker")?;
            for k in 1..=WORKER_KILLS {
                let pause = rand::rng().random_range(300..900);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                let pid = worker.pid;
                worker.kill().await?;
                let t = Instant::now();
                worker.restart().await?;
                notes.push(format!(
                    "SIGKILL {} (pid {pid}) #{k} after {pause} ms, ready again in {:.1} s",
                    worker.name,
                    t.elapsed().as_secs_f64()
                ));
            }
        }
        Scenario::RabbitmqRestart => {
            let node = lab.nodes.first_mut().context("no RabbitMQ node")?;
            node.stop().await?;
            notes.push(format!("clean stop (SIGTERM) of {}", node.node));
            tokio::time::sleep(sizes.down).await;
            let t = Instant::now();
            node.start_again().await?;
            notes.push(format!(
                "{} down {:.0} s, started again in {:.1} s",
                node.node,
                sizes.down.as_secs_f64(),
                t.elapsed().as_secs_f64()
            ));
        }
        Scenario::PostgresRestart => {
            let pg = lab.postgres.as_mut().context("no private Postgres")?;
            pg.stop(true).await?;
            notes.push(format!("pg_ctl stop -m immediate (port {})", pg.port));
            tokio::time::sleep(sizes.down).await;
            let t = Instant::now();
            pg.start_again().await?;
            notes.push(format!(
                "Postgres down {:.0} s, accepting connections again in {:.1} s",
                sizes.down.as_secs_f64(),
                t.elapsed().as_secs_f64()
            ));
        }
        Scenario::EndpointFaults => {
            let receiver = lab.receiver.as_ref().context("no receiver")?;
            let faults = Faults {
                error: 0.3,
                timeout: 0.15,
                reset: 0.15,
                hang: FAULTS_DELIVERY_TIMEOUT + Duration::from_millis(500),
            };
            receiver.set_faults(Some(faults));
            notes.push(format!(
                "{:.0}% 500, {:.0}% timeouts ({} ms held), {:.0}% resets for {:.0} s; retry schedule {FAULTS_RETRY_SCHEDULE}",
                faults.error * 100.0,
                faults.timeout * 100.0,
                faults.hang.as_millis(),
                faults.reset * 100.0,
                sizes.fault_window.as_secs_f64()
            ));
            tokio::time::sleep(sizes.fault_window).await;
            receiver.set_faults(None);
        }
        Scenario::ClusterFailover => {
            // The node most connections go to, as the nodes list them (all asked at once,
            // each with a deadline: the CLI is slow on a loaded machine), else as the
            // kernel sees them.
            let ports: Vec<u16> = lab.nodes.iter().map(|n| n.amqp_port).collect();
            let asked = futures::future::join_all(lab.nodes.iter().map(|n| async move {
                tokio::time::timeout(Duration::from_secs(30), n.list_connections()).await
            }))
            .await;
            let listings: Vec<String> = asked
                .into_iter()
                .filter_map(|r| match r {
                    Ok(Ok(l)) => Some(l),
                    Ok(Err(e)) => {
                        eprintln!("chaos: warning: {e:#}");
                        None
                    }
                    Err(_) => None,
                })
                .collect();
            let (per_node, how) = if listings.is_empty() {
                let tcp =
                    std::fs::read_to_string("/proc/net/tcp").context("reading /proc/net/tcp")?;
                (
                    rabbit::established_per_port(&ports, &tcp),
                    "established TCP connections (rabbitmqctl list_connections did not answer in 30 s)",
                )
            } else {
                (
                    rabbit::connections_per_port(&ports, &listings),
                    "rabbitmqctl list_connections",
                )
            };
            let counts: Vec<(String, usize)> = lab
                .nodes
                .iter()
                .map(|n| n.node.clone())
                .zip(per_node)
                .collect();
            let (victim, held) = counts
                .iter()
                .max_by_key(|(_, c)| *c)
                .cloned()
                .filter(|(_, c)| *c > 0)
                .context("no node lists any connection")?;
            let total: usize = counts.iter().map(|(_, c)| c).sum();
            let node = lab
                .nodes
                .iter_mut()
                .find(|n| n.node == victim)
                .context("the busiest node")?;
            node.kill().await?;
            notes.push(format!(
                "SIGKILL RabbitMQ node {victim} holding {held} of {total} connections by {how} ({})",
                counts
                    .iter()
                    .map(|(n, c)| format!("{n}: {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            tokio::time::sleep(sizes.down / 2).await;
            let worker = lab.workers.first_mut().context("no worker")?;
            let pid = worker.pid;
            worker.kill().await?;
            notes.push(format!(
                "SIGKILL {} (pid {pid}) while the node is down",
                worker.name
            ));
            tokio::time::sleep(sizes.down / 2).await;
            let t = Instant::now();
            worker.restart().await?;
            notes.push(format!(
                "{} restarted (ready in {:.1} s) with the node still down",
                worker.name,
                t.elapsed().as_secs_f64()
            ));
            let node = lab
                .nodes
                .iter_mut()
                .find(|n| n.node == victim)
                .context("the killed node")?;
            let t = Instant::now();
            node.start_again().await?;
            notes.push(format!(
                "{victim} restarted, back in the cluster in {:.1} s",
                t.elapsed().as_secs_f64()
            ));
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn scenario_names_are_their_flags() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_str(s.name(), false), Ok(s));
        }
        assert_eq!(Scenario::from_str("a", false), Ok(Scenario::WorkerKill));
        assert_eq!(
            Scenario::from_str("e", false),
            Ok(Scenario::ClusterFailover)
        );
        assert!(Scenario::from_str("everything", false).is_err());
    }

    #[test]
    fn loss_is_what_was_owed_and_neither_delivered_nor_dead() {
        let mut a = Account {
            webhooks: 2,
            sent_amqp: 600,
            sent_http: 400,
            delivered: 1990,
            dead: 10,
            ..Account::default()
        };
        assert_eq!(a.expected(), 2000);
        assert_eq!(a.lost(), 0);
        a.dead = 7;
        assert_eq!(a.lost(), 3);
        // A publish that failed for good cannot be accounted for.
        a.dead = 10;
        a.publish_failures = 1;
        assert_eq!(a.lost(), 1);
    }

    #[test]
    fn rates() {
        let t0 = Instant::now();
        let r = Rate::between(100, t0, 300, t0 + Duration::from_secs(2));
        assert_eq!(r.per_sec(), "100");
        assert_eq!(r.show(), "100.0/s (200 deliveries in 2.0 s)");
        assert_eq!(Rate::between(5, t0, 5, t0).show(), "n/a");
    }
}
