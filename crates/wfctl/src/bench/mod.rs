//! `wfctl bench` (BENCHMARKS.md): the real services as child processes, on a fresh vhost and
//! database, delivering to a loopback HTTPS receiver; one machine-greppable line per
//! figure on stdout (progress and diagnostics go to stderr).
//!
//! Flow: isolate (vhost + database) → receiver → workers (and an ingestor with
//! `--via http`) → API key and W webhooks → warm-up → N events at the chosen rate →
//! wait for N×W distinct deliveries → CPU / RSS from `/proc` → broker ceiling in the
//! same vhost → figures → SIGTERM the services → delete vhost and database.

mod ceiling;
mod counters;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde_json::{json, Value};
use wf_broker::Broker;
use wf_core::config::Config;
use wf_core::ids::OrgId;
use wf_store::{NewWebhook, Store};

use crate::harness::load::{self, EventFactory, LoadReport, EVENT_TYPE};
use crate::harness::procs::{self, CpuSample, Service, ServiceVars};
use crate::harness::receiver::{self, Receiver};
use crate::harness::{http, isolation};
use counters::WorkerCounters;

/// Options of `wfctl bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Events to publish in the measured phase.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Events per second; 0 publishes as fast as the broker confirms.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Webhooks in the organisation, each subscribed to the event type (fan-out).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub webhooks: u32,
    /// Distinct endpoints the webhooks are spread over (webhook i on endpoint i mod E): each
    /// its own loopback address, TLS connections and certificate. At most --webhooks.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=receiver::MAX_ENDPOINTS as i64))]
    pub endpoints: u32,
    /// How many of the endpoints are slow: they answer after --slow-ms. Their figures are
    /// printed apart from the healthy ones' (`slow_…`, `healthy_…`).
    #[arg(long, default_value_t = 0)]
    pub slow_endpoints: u32,
    /// How long a slow endpoint takes to answer, in milliseconds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub slow_ms: u64,
    /// Approximate size of each delivery body in bytes (the event's `data` is padded).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=200_000))]
    pub payload_bytes: u64,
    /// Queue type the services declare (WF_QUEUE_TYPE), also used for the ceiling.
    #[arg(long, value_enum, default_value_t = QueueKind::Quorum)]
    pub queue_type: QueueKind,
    /// Worker processes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// Publish straight to the `workflows.events` exchange, or through a wf-ingestor's
    /// `POST /api/v1/events`.
    #[arg(long, value_enum, default_value_t = Via::Amqp)]
    pub via: Via,
    /// WF_WORKER_CONCURRENCY of each worker.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// WF_RETRY_SCHEDULE of the workers (default: theirs).
    #[arg(long, value_name = "DELAYS")]
    pub retry_schedule: Option<String>,
    /// WF_DELIVERY_TIMEOUT of the workers (default: theirs).
    #[arg(long, value_name = "DURATION")]
    pub delivery_timeout: Option<String>,
    /// WF_WORKER_IDLE_CONNECTIONS of the workers (default: theirs).
    #[arg(long, value_name = "N")]
    pub idle_connections: Option<String>,
    /// Warm-up events, delivered and discarded before the measured phase.
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// Directory holding the wf-worker and wf-ingestor binaries to measure (default: the
    /// directory of this wfctl, i.e. target/release), e.g. a build of another commit.
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Keep the bench vhost, database and files (printed at the start) instead of
    /// deleting them at the end.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueKind {
    Quorum,
    Classic,
}

impl QueueKind {
    fn as_str(self) -> &'static str {
        match self {
            QueueKind::Quorum => "quorum",
            QueueKind::Classic => "classic",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    Amqp,
    Http,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Amqp => "amqp",
            Via::Http => "http",
        }
    }
}

/// How long after publishing ended the bench waits without any new delivery before it
/// gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything the bench creates, so that it can all be removed whatever happens.
struct Env {
    name: String,
    amqp_url: String,
    db_url: String,
    server_db_url: String,
    dir: PathBuf,
    vhost_created: bool,
    db_created: bool,
    services: Vec<Service>,
    receiver: Option<Receiver>,
}

impl BenchArgs {
    /// The workers' own variables the options set.
    fn worker_vars(&self) -> Vec<(&'static str, &String)> {
        [
            ("WF_RETRY_SCHEDULE", self.retry_schedule.as_ref()),
            ("WF_DELIVERY_TIMEOUT", self.delivery_timeout.as_ref()),
            ("WF_WORKER_IDLE_CONNECTIONS", self.idle_connections.as_ref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// Runs the benchmark. Exits with an error (after cleaning up) when it could not
/// measure, or when not every delivery arrived in time.
pub async fn run(args: BenchArgs, config: &Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate.is_finite() && args.rate >= 0.0,
        "--rate must be a number of events per second, 0 for as fast as possible"
    );
    // Checked here, before anything is created, as the workers would check them.
    let worker_vars = args.worker_vars();
    Config::from_lookup(wf_core::config::Role::Worker, |name| {
        worker_vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).clone())
    })
    .map_err(|e| {
        anyhow::anyhow!("--retry-schedule / --delivery-timeout / --idle-connections: {e}")
    })?;
    anyhow::ensure!(
        args.endpoints <= args.webhooks,
        "--endpoints ({}) cannot exceed --webhooks ({}): each endpoint needs a webhook",
        args.endpoints,
        args.webhooks
    );
    anyhow::ensure!(
        args.slow_endpoints <= args.endpoints,
        "--slow-endpoints ({}) cannot exceed --endpoints ({})",
        args.slow_endpoints,
        args.endpoints
    );
    // Before creating anything: are the services built?
    let bin_dir = args.bin_dir.as_deref();
    let worker_bin = procs::service_binary(bin_dir, "wf-worker")?;
    let ingestor_bin = match args.via {
        Via::Http => Some(procs::service_binary(bin_dir, "wf-ingestor")?),
        Via::Amqp => None,
    };
    for bin in std::iter::once(&worker_bin).chain(ingestor_bin.as_ref()) {
        if let Some(note) = procs::staleness_note(bin) {
            eprintln!("bench: {note}");
        }
    }
    let name = isolation::run_name("wf_bench");
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut env = Env {
        amqp_url: isolation::with_path(&config.amqp_url, &name, "WF_AMQP_URL")?,
        db_url: isolation::with_path(&config.database_url, &name, "WF_DATABASE_URL")?,
        server_db_url: config.database_url.clone(),
        name,
        dir,
        vhost_created: false,
        db_created: false,
        services: Vec::new(),
        receiver: None,
    };
    eprintln!(
        "bench: vhost and database {}, service logs in {}",
        env.name,
        env.dir.display()
    );

    let outcome = tokio::select! {
        r = bench(&args, &mut env, &worker_bin, ingestor_bin.as_deref()) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let failed = !matches!(outcome, Ok(true));
    teardown(env, args.keep, failed).await;
    match outcome {
        Ok(true) => Ok(()),
        Ok(false) => anyhow::bail!("not every delivery arrived (see the TIMED OUT line above)"),
        Err(e) => Err(e),
    }
}

async fn teardown(mut env: Env, keep: bool, failed: bool) {
    for service in env.services.drain(..) {
        if let Some(complaint) = service.stop().await {
            eprintln!("bench: warning: {complaint}");
        }
    }
    if let Some(r) = env.receiver.take() {
        r.stop();
    }
    if keep {
        eprintln!(
            "bench: kept vhost {0}, database {0} and {1} (--keep)",
            env.name,
            env.dir.display()
        );
        return;
    }
    if env.vhost_created {
        if let Err(e) = isolation::delete_vhost(&env.name) {
            eprintln!("bench: warning: {e:#}");
        }
    }
    if env.db_created {
        if let Err(e) = isolation::drop_database(&env.server_db_url, &env.name).await {
            eprintln!("bench: warning: {e:#}");
        }
    }
    if failed {
        eprintln!("bench: service logs kept in {}", env.dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&env.dir);
    }
}

/// The measured phase; `Ok(false)` when it timed out (figures were printed anyway).
async fn bench(
    args: &BenchArgs,
    env: &mut Env,
    worker_bin: &std::path::Path,
    ingestor_bin: Option<&std::path::Path>,
) -> anyhow::Result<bool> {
    // 1. Isolation.
    // Flagged first: a half-done creation is still cleaned up.
    env.vhost_created = true;
    isolation::create_vhost(&env.name)?;
    env.db_created = true;
    isolation::create_database(&env.server_db_url, &env.name).await?;

    // 2. Receiver.
    let receiver = Receiver::start(
        &env.dir,
        receiver::Endpoints {
            count: args.endpoints as usize,
            slow: args.slow_endpoints as usize,
            delay: Duration::from_millis(args.slow_ms),
        },
        false,
    )
    .await?;
    let common = ServiceVars::new(&env.db_url, &env.amqp_url, &receiver.cert_path)
        .set("WF_QUEUE_TYPE", args.queue_type.as_str())
        .set("WF_WORKER_CONCURRENCY", args.concurrency.to_string())
        .set("WF_LOG", "warn");
    let secret_key = common.secret_key;
    let receiver = env.receiver.insert(receiver);

    // 3. Services.
    let worker_vars: Vec<(&str, String)> = args
        .worker_vars()
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect();
    for i in 0..args.workers {
        let service = common
            .start(
                &format!("wf-worker #{i}"),
                worker_bin,
                &worker_vars,
                env.dir.join(format!("wf-worker-{i}.log")),
            )
            .await?;
        env.services.push(service);
    }
    let worker_pids: Vec<u32> = env.services.iter().map(|s| s.pid).collect();
    let worker_ops: Vec<std::net::SocketAddr> = env.services.iter().map(|s| s.ops).collect();
    let mut api = None;
    if let Some(bin) = ingestor_bin {
        let http = std::net::SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
        // The load (webhooks, then events) comes from one API key, as fast as the ingestor
        // takes it: no budgets.
        let extra = [
            ("WF_HTTP_ADDR", http.to_string()),
            ("WF_API_RATE_LIMIT_EVENTS", "0".to_owned()),
            ("WF_API_RATE_LIMIT_MANAGEMENT", "0".to_owned()),
        ];
        let service = common
            .start("wf-ingestor", bin, &extra, env.dir.join("wf-ingestor.log"))
            .await?;
        env.services.push(service);
        api = Some(http);
    }
    let ingestor_pid = api.and(env.services.last().map(|s| s.pid));
    eprintln!(
        "bench: {} worker(s) ready{}",
        args.workers,
        if api.is_some() {
            ", ingestor ready"
        } else {
            ""
        }
    );

    // 4. API key and webhooks (the workers have migrated the database by now).
    let store = Store::connect(&env.db_url, secret_key, 4).await?;
    let org = OrgId::parse(&format!("org_{}", env.name)).context("organisation id")?;
    let (_, token) = store.create_api_key(&org, "wfctl bench").await?;
    let token: Arc<str> = Arc::from(token);
    let mut secrets = Vec::with_capacity(args.webhooks as usize);
    let mut slow_webhooks = Vec::new();
    for i in 0..args.webhooks as usize {
        let (id, secret) = match api {
            None => {
                let (webhook, secret) = store
                    .create_webhook(
                        &org,
                        NewWebhook {
                            name: format!("bench {i}"),
                            url: receiver.url(i),
                            events: vec![EVENT_TYPE.to_owned()],
                            is_active: true,
                            rate_limit: None,
                        },
                    )
                    .await?;
                (webhook.id.to_string(), secret.expose().to_owned())
            }
            Some(api) => create_webhook_via_api(api, &token, i, &receiver.url(i)).await?,
        };
        secrets.push(secret);
        if receiver.group_of(i) == receiver::Group::Slow {
            slow_webhooks.push(id);
        }
    }
    receiver.set_secrets(secrets);
    store.close();

    let factory = Arc::new(EventFactory::new(org.as_str(), args.payload_bytes as usize));
    let broker = Broker::connect(&env.amqp_url).await?;
    let publisher = broker.publisher().await?;
    let fanout = u64::from(args.webhooks);
    let sender = Sender {
        via: args.via,
        publisher,
        api,
        token,
        factory: factory.clone(),
    };

    // 5. Warm-up.
    if args.warmup > 0 {
        let report =
            tokio::time::timeout(Duration::from_secs(60), sender.send(0, args.warmup, 0.0))
                .await
                .context("warm-up: publishing did not finish within 60 s")?;
        check_load("warm-up", &report)?;
        let want = args.warmup * fanout;
        let deadline = Instant::now() + Duration::from_secs(60);
        while receiver.snapshot().distinct < want {
            anyhow::ensure!(
                Instant::now() < deadline,
                "warm-up: only {} of {want} deliveries arrived within 60 s; see the service logs in {}",
                receiver.snapshot().distinct,
                env.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        receiver.reset();
        eprintln!("bench: warm-up done ({} deliveries)", want);
    }

    // 6–7. Measured phase.
    let ticks = procs::clock_ticks_per_second();
    let rabbit_pids = procs::pids_named("beam.smp");
    let rss_after_warmup = max_rss_kib(&worker_pids);
    let mut rss_at_half = None;
    let load_before = procs::load_average();
    let management = counters::ManagementApi::from_amqp_url(&env.amqp_url)?;
    let broker_before = management.queue_counts().await;
    let counters_before = WorkerCounters::scrape(&worker_ops).await?;
    let mut dead = 0u64;
    let mut dead_checked = Instant::now();
    let cpu_before = Samples::take(&worker_pids, ingestor_pid, &rabbit_pids);
    let expected = args.events * fanout;
    let t0 = Instant::now();
    let sending = {
        let sender = sender.clone();
        let (first, n, rate) = (args.warmup, args.events, args.rate);
        tokio::spawn(async move { sender.send(first, n, rate).await })
    };
    let publish_budget = if args.rate > 0.0 {
        Duration::from_secs_f64(args.events as f64 / args.rate)
    } else {
        Duration::ZERO
    };
    let deadline =
        t0 + publish_budget + Duration::from_secs(60) + Duration::from_millis(expected * 5);
    let mut last_progress = Instant::now();
    let mut load_report: Option<LoadReport> = None;
    let mut sending = Some(sending);
    let timed_out = loop {
        let snap = receiver.snapshot();
        if snap.distinct + dead >= expected {
            break None;
        }
        // Dead-lettered deliveries never arrive: the run ends when every delivery arrived
        // or was given up.
        if dead_checked.elapsed() >= Duration::from_secs(1) {
            dead_checked = Instant::now();
            if let Ok(now) = WorkerCounters::scrape(&worker_ops).await {
                dead = now.since(&counters_before).get(DEAD_OUTCOME) as u64;
            }
        }
        if rss_at_half.is_none() && snap.distinct >= expected / 2 {
            rss_at_half = Some(max_rss_kib(&worker_pids));
        }
        if let Some(handle) = sending.as_mut().filter(|h| h.is_finished()) {
            load_report = Some(handle.await.context("the publishing task")?);
            sending = None;
        }
        let now = Instant::now();
        if now > deadline {
            break Some(format!("the deadline of {:?}", deadline - t0));
        }
        if load_report.is_some() {
            let quiet_since = snap.last_new.unwrap_or(t0).max(t0);
            if now.duration_since(quiet_since) > STALL_TIMEOUT
                && now.duration_since(t0) > STALL_TIMEOUT
            {
                break Some(format!("{STALL_TIMEOUT:?} without a new delivery"));
            }
        }
        if now.duration_since(last_progress) >= Duration::from_secs(5) {
            last_progress = now;
            eprintln!(
                "bench: {:>6.1}s {} of {expected} deliveries, {dead} dead",
                now.duration_since(t0).as_secs_f64(),
                snap.distinct
            );
        }
        for s in &mut env.services {
            anyhow::ensure!(
                s.is_running(),
                "{} exited during the run; its log {}:\n{}",
                s.name,
                s.log.display(),
                procs::tail(&s.log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let snap = receiver.snapshot();
    let end = snap.last_new.unwrap_or_else(Instant::now).max(t0);
    let elapsed = end.duration_since(t0);
    let cpu_after = Samples::take(&worker_pids, ingestor_pid, &rabbit_pids);
    let load_report = match (load_report, sending) {
        (Some(r), _) => r,
        (None, Some(handle)) => tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .context("publishing did not finish")?
            .context("the publishing task")?,
        (None, None) => LoadReport::default(),
    };
    let healthy = receiver.group(receiver::Group::Healthy);
    let slow = receiver.group(receiver::Group::Slow);
    let counters = WorkerCounters::scrape(&worker_ops)
        .await?
        .since(&counters_before);
    let dead_slow = count_dead(&env.db_url, &slow_webhooks).await?;
    // The management API's statistics are refreshed every 5 s.
    let broker_counts = match broker_before {
        Some(before) => {
            tokio::time::sleep(Duration::from_secs(6)).await;
            management
                .queue_counts()
                .await
                .map(|after| after.since(before))
        }
        None => None,
    };
    let peak_rss_kib = worker_pids
        .iter()
        .filter_map(|&p| procs::peak_rss_kib(p))
        .max()
        .unwrap_or(0);
    let end_rss_kib = max_rss_kib(&worker_pids);
    drop(sender);
    broker.close().await;

    // 9. Broker ceilings, once the services are idle: straight to a queue, and through a
    // topic exchange as events travel.
    let mut ceilings = Vec::new();
    for route in [ceiling::Route::Direct, ceiling::Route::Topic] {
        eprintln!(
            "bench: measuring the broker ceiling ({} messages, {route:?})",
            args.events
        );
        let before = Samples::take(&[], None, &rabbit_pids);
        let result = ceiling::measure(
            &env.amqp_url,
            args.queue_type.as_str(),
            route,
            args.events,
            factory.amqp_body(0),
            Duration::from_secs(60) + Duration::from_millis(args.events * 5),
        )
        .await;
        let after = Samples::take(&[], None, &rabbit_pids);
        ceilings.push(CeilingRun {
            result,
            rabbit_cpu: after.rabbit.seconds_since(&before.rabbit, ticks),
            client_cpu: after.me.seconds_since(&before.me, ticks),
            machine_busy: after
                .machine
                .zip(before.machine)
                .map(|(a, b)| a.saturating_sub(b) as f64 / ticks),
        });
    }
    let topic_ceiling = ceilings.pop().expect("two ceiling runs");
    let ceiling = ceilings.pop().expect("two ceiling runs");

    // 10. Figures.
    let figures = Figures {
        args,
        expected,
        snap,
        elapsed,
        t0,
        healthy,
        slow,
        counters,
        dead_slow,
        broker: broker_counts,
        load: load_report,
        worker_cpu: cpu_after.workers.seconds_since(&cpu_before.workers, ticks),
        ingestor_cpu: ingestor_pid.map(|_| {
            cpu_after
                .ingestor
                .seconds_since(&cpu_before.ingestor, ticks)
        }),
        rabbit_cpu: cpu_after.rabbit.seconds_since(&cpu_before.rabbit, ticks),
        machine_busy: cpu_after
            .machine
            .zip(cpu_before.machine)
            .map(|(a, b)| a.saturating_sub(b) as f64 / ticks),
        load_before,
        postgres_cpu: cpu_after
            .postgres
            .seconds_since(&cpu_before.postgres, ticks),
        bench_cpu: cpu_after.me.seconds_since(&cpu_before.me, ticks),
        peak_rss_kib,
        rss_after_warmup,
        rss_at_half,
        end_rss_kib,
        ceiling,
        topic_ceiling,
        timed_out,
    };
    let complete = figures.timed_out.is_none();
    figures.print();
    Ok(complete)
}

/// The `outcome="dead"` series of `wf_deliveries_total`.
const DEAD_OUTCOME: &str = "wf_deliveries_total{outcome=dead}";

/// Dead deliveries of the given webhooks, from the delivery log.
async fn count_dead(db_url: &str, webhooks: &[String]) -> anyhow::Result<u64> {
    if webhooks.is_empty() {
        return Ok(0);
    }
    let (client, conn) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*) FROM deliveries WHERE status = 'dead' AND webhook_id = ANY($1)",
            &[&webhooks],
        )
        .await
        .context("counting dead deliveries")?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// The largest current RSS among the workers, in KiB.
fn max_rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| procs::rss_kib(p))
        .max()
        .unwrap_or(0)
}

/// `(id, secret)` of the new webhook.
async fn create_webhook_via_api(
    api: std::net::SocketAddr,
    token: &str,
    i: usize,
    url: &str,
) -> anyhow::Result<(String, String)> {
    let body = json!({"name": format!("bench {i}"), "url": url, "events": [EVENT_TYPE]});
    let (status, resp) = http::HttpConn::new(api)
        .request(
            hyper::Method::POST,
            "/api/v1/webhooks",
            Some(token),
            Some(Bytes::from(body.to_string())),
        )
        .await?;
    let resp: Value = serde_json::from_slice(&resp).unwrap_or(Value::Null);
    anyhow::ensure!(
        status == 201,
        "POST /api/v1/webhooks answered {status}: {resp}"
    );
    let field = |name: &str| {
        resp["data"][name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("POST /api/v1/webhooks returned no {name}"))
    };
    Ok((field("id")?, field("secret")?))
}

fn check_load(what: &str, r: &LoadReport) -> anyhow::Result<()> {
    anyhow::ensure!(
        r.failed == 0,
        "{what}: {} of {} publishes failed; first error: {}",
        r.failed,
        r.failed + r.published,
        r.first_error.as_deref().unwrap_or("?")
    );
    Ok(())
}

/// Publishes bench events over the chosen path.
#[derive(Clone)]
struct Sender {
    via: Via,
    publisher: wf_broker::Publisher,
    api: Option<std::net::SocketAddr>,
    token: Arc<str>,
    factory: Arc<EventFactory>,
}

impl Sender {
    async fn send(&self, first_seq: u64, n: u64, rate: f64) -> LoadReport {
        match (self.via, self.api) {
            (Via::Http, Some(api)) => {
                load::publish_http(
                    &[api],
                    self.token.clone(),
                    self.factory.clone(),
                    first_seq,
                    &load::Plan::fixed(n, rate),
                )
                .await
            }
            _ => {
                let factory = self.factory.clone();
                load::publish_amqp(
                    &self.publisher,
                    Arc::from(wf_broker::names::EVENTS_EXCHANGE),
                    Arc::from(EVENT_TYPE),
                    &load::Plan::fixed(n, rate),
                    move |i| factory.amqp_body(first_seq + i),
                )
                .await
            }
        }
    }
}

/// CPU of everything on the machine that takes part, at one moment.
struct Samples {
    workers: CpuSample,
    ingestor: CpuSample,
    rabbit: CpuSample,
    postgres: CpuSample,
    me: CpuSample,
    machine: Option<u64>,
}

impl Samples {
    fn take(workers: &[u32], ingestor: Option<u32>, rabbit: &[u32]) -> Samples {
        Samples {
            workers: CpuSample::take(workers),
            ingestor: CpuSample::take(&ingestor.into_iter().collect::<Vec<_>>()),
            rabbit: CpuSample::take(rabbit),
            postgres: CpuSample::take(&procs::pids_named("postgres")),
            me: CpuSample::take(&[std::process::id()]),
            machine: procs::machine_busy_ticks(),
        }
    }
}

struct Figures<'a> {
    args: &'a BenchArgs,
    expected: u64,
    snap: receiver::Snapshot,
    elapsed: Duration,
    t0: Instant,
    healthy: receiver::GroupCounts,
    slow: receiver::GroupCounts,
    /// The workers' counters over the measured phase.
    counters: WorkerCounters,
    /// Dead deliveries of slow endpoints' webhooks, from the delivery log.
    dead_slow: u64,
    /// RabbitMQ's own counts over the measured phase, when its management API answers.
    broker: Option<counters::BrokerCounts>,
    load: LoadReport,
    worker_cpu: f64,
    ingestor_cpu: Option<f64>,
    rabbit_cpu: f64,
    machine_busy: Option<f64>,
    load_before: Option<f64>,
    postgres_cpu: f64,
    bench_cpu: f64,
    peak_rss_kib: u64,
    rss_after_warmup: u64,
    rss_at_half: Option<u64>,
    end_rss_kib: u64,
    /// Through the default exchange.
    ceiling: CeilingRun,
    /// Through a topic exchange, the route events take.
    topic_ceiling: CeilingRun,
    timed_out: Option<String>,
}

/// One ceiling run and the CPU it used.
struct CeilingRun {
    result: anyhow::Result<ceiling::Ceiling>,
    rabbit_cpu: f64,
    /// This process: the ceiling's publisher and consumer.
    client_cpu: f64,
    machine_busy: Option<f64>,
}

impl CeilingRun {
    /// `broker_<name>_…` lines and `ratio_to_<name>`.
    fn print(&self, name: &str, per_sec: f64) {
        match &self.result {
            Ok(c) => {
                println!("broker_{name}_msgs_per_sec: {:.1}", c.msgs_per_sec());
                println!("ratio_to_{name}: {:.2}", per_sec / c.msgs_per_sec());
                println!("broker_{name}_seconds: {:.2}", c.elapsed.as_secs_f64());
                println!("broker_{name}_rabbitmq_cpu_seconds: {:.2}", self.rabbit_cpu);
                println!("broker_{name}_client_cpu_seconds: {:.2}", self.client_cpu);
                if let Some(busy) = self.machine_busy {
                    println!(
                        "broker_{name}_other_processes_cpu_seconds: {:.2}",
                        (busy - self.rabbit_cpu - self.client_cpu).max(0.0)
                    );
                }
                if c.publish_failures > 0 {
                    println!("broker_{name}_publish_failures: {}", c.publish_failures);
                }
            }
            Err(e) => {
                println!("broker_{name}_msgs_per_sec: n/a");
                println!("ratio_to_{name}: n/a");
                eprintln!("bench: the {name} run failed: {e:#}");
            }
        }
    }
}

/// `<prefix>event_to_delivery_p50_ms` … `_max_ms` of `latencies` (µs; sorted here).
fn print_latencies(prefix: &str, latencies: &mut [u64]) {
    latencies.sort_unstable();
    for p in [50u32, 95, 99] {
        match percentile(latencies, f64::from(p)) {
            Some(us) => println!(
                "{prefix}event_to_delivery_p{p}_ms: {:.1}",
                us as f64 / 1000.0
            ),
            None => println!("{prefix}event_to_delivery_p{p}_ms: n/a"),
        }
    }
    if let Some(max) = latencies.last() {
        println!(
            "{prefix}event_to_delivery_max_ms: {:.1}",
            *max as f64 / 1000.0
        );
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl Figures<'_> {
    /// Dead letters, held-back deliveries and broker churn; with slow endpoints, the
    /// healthy and the slow ones' figures apart.
    fn print_pressure(&mut self, delivered: u64) {
        let a = self.args;
        let c = &self.counters;
        let dead = c.get(DEAD_OUTCOME) as u64;
        let per = |n: f64| n / (delivered + dead).max(1) as f64;
        println!("dead_lettered: {dead}");
        println!("attempts_sent: {}", c.get(counters::ATTEMPTS) as u64);
        let opened = c.get(counters::CONNECTIONS_OPENED);
        println!("connections_opened: {}", opened as u64);
        println!(
            "connections_opened_per_attempt: {:.3}",
            opened / c.get(counters::ATTEMPTS).max(1.0)
        );
        println!("retries_scheduled: {}", c.get(counters::RETRIES) as u64);
        println!("deferrals: {}", c.get(counters::DEFERRED) as u64);
        println!(
            "deferrals_per_delivery: {:.3}",
            per(c.get(counters::DEFERRED))
        );
        println!("republished: {}", c.get(counters::REPUBLISHED) as u64);
        println!(
            "republished_per_delivery: {:.3}",
            per(c.get(counters::REPUBLISHED))
        );
        match self.broker {
            Some(b) => {
                println!("rabbitmq_retry_queue_messages: {}", b.retry_queues);
                println!("rabbitmq_deliveries_queue_messages: {}", b.deliveries_queue);
                println!("rabbitmq_dead_queue_messages: {}", b.dead_queue);
                println!(
                    "rabbitmq_job_messages_per_delivery: {:.3}",
                    per((b.retry_queues + b.deliveries_queue) as f64)
                );
            }
            None => println!(
                "rabbitmq_job_messages_per_delivery: n/a (RabbitMQ's management API did not answer)"
            ),
        }
        if a.slow_endpoints == 0 {
            return;
        }
        let t0 = self.t0;
        let dead_slow = self.dead_slow;
        for (name, g, dead) in [
            ("healthy", &mut self.healthy, dead.saturating_sub(dead_slow)),
            ("slow", &mut self.slow, dead_slow),
        ] {
            let secs = g
                .last_new
                .map_or(0.0, |t| t.duration_since(t0).as_secs_f64());
            println!("{name}_deliveries_received: {}", g.distinct);
            println!("{name}_dead_lettered: {dead}");
            println!("{name}_elapsed_seconds: {secs:.2}");
            println!(
                "{name}_deliveries_per_sec: {:.1}",
                g.distinct as f64 / secs.max(1e-9)
            );
            print_latencies(&format!("{name}_"), &mut g.latencies_us);
        }
        // The best a worker can do: every slot of every slow endpoint busy all the time.
        let slow_webhooks = (0..a.webhooks as usize)
            .filter(|i| (*i % a.endpoints as usize) < a.slow_endpoints as usize)
            .count() as u64;
        // The workers run with the default WF_ENDPOINT_MAX_CONCURRENCY.
        let endpoint_max = Config::from_lookup(wf_core::config::Role::Worker, |_| None)
            .map_or(1, |c| u64::from(c.endpoint_max_concurrency));
        let slots = u64::from(a.workers)
            * u64::from(a.concurrency).min(u64::from(a.slow_endpoints) * endpoint_max);
        let ideal = (a.events * slow_webhooks) as f64 * a.slow_ms as f64 / 1000.0 / slots as f64;
        println!("slow_ideal_drain_seconds: {ideal:.2}");
    }

    fn print(mut self) {
        let a = self.args;
        let rate = if a.rate > 0.0 {
            format!("{}", a.rate)
        } else {
            "max".to_owned()
        };
        println!(
            "bench: events={} webhooks={} endpoints={} slow_endpoints={} slow_ms={} deliveries={} payload_bytes={} queue={} workers={} via={} rate={} concurrency={}",
            a.events,
            a.webhooks,
            a.endpoints,
            a.slow_endpoints,
            a.slow_ms,
            self.expected,
            a.payload_bytes,
            a.queue_type.as_str(),
            a.workers,
            a.via.as_str(),
            rate,
            a.concurrency
        );
        if let Some(why) = &self.timed_out {
            println!(
                "bench: TIMED OUT after {why}: {} of {} deliveries arrived; figures below are partial",
                self.snap.distinct, self.expected
            );
        }
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let delivered = self.snap.distinct;
        let per_sec = delivered as f64 / secs;
        println!("deliveries_received: {delivered}");
        println!("requests_received: {}", self.snap.requests);
        println!("elapsed_seconds: {secs:.2}");
        println!("deliveries_per_sec: {per_sec:.1}");
        println!("publish_seconds: {:.2}", self.load.elapsed.as_secs_f64());
        println!("publish_failures: {}", self.load.failed);
        if let Some(e) = &self.load.first_error {
            eprintln!("bench: first publish error: {e}");
        }
        let mut latencies: Vec<u64> = self
            .healthy
            .latencies_us
            .iter()
            .chain(&self.slow.latencies_us)
            .copied()
            .collect();
        print_latencies("", &mut latencies);
        self.print_pressure(delivered);
        println!("worker_cpu_seconds: {:.2}", self.worker_cpu);
        if delivered > 0 {
            println!(
                "worker_cpu_seconds_per_1000_deliveries: {:.3}",
                self.worker_cpu * 1000.0 / delivered as f64
            );
        }
        println!(
            "worker_peak_rss_mib: {:.1}",
            self.peak_rss_kib as f64 / 1024.0
        );
        // Memory flat after warm-up: these three should agree on a long run.
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "worker_rss_after_warmup_mib: {:.1}",
            mib(self.rss_after_warmup)
        );
        if let Some(half) = self.rss_at_half {
            println!("worker_rss_at_half_mib: {:.1}", mib(half));
        }
        println!("worker_rss_at_end_mib: {:.1}", mib(self.end_rss_kib));
        if let Some(cpu) = self.ingestor_cpu {
            println!("ingestor_cpu_seconds: {cpu:.2}");
        }
        println!("rabbitmq_cpu_seconds: {:.2}", self.rabbit_cpu);
        println!("postgres_cpu_seconds: {:.2}", self.postgres_cpu);
        println!("bench_process_cpu_seconds: {:.2}", self.bench_cpu);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!("machine_cpu_cores: {cores}");
        println!("machine_cpu_seconds_available: {:.2}", secs * cores as f64);
        if let Some(busy) = self.machine_busy {
            let ours = self.worker_cpu
                + self.ingestor_cpu.unwrap_or(0.0)
                + self.rabbit_cpu
                + self.postgres_cpu
                + self.bench_cpu;
            println!("machine_cpu_busy_seconds: {busy:.2}");
            // Anything else running meanwhile (a compiler, another test): noise to note.
            println!("other_processes_cpu_seconds: {:.2}", (busy - ours).max(0.0));
        }
        if let Some(load) = self.load_before {
            println!("load_average_1m_before: {load:.2}");
        }
        self.ceiling.print("ceiling", per_sec);
        self.topic_ceiling.print("topic_ceiling", per_sec);
        println!("signature_failures: {}", self.snap.signature_failures);
        println!("duplicates: {}", self.snap.duplicates);
        if self.snap.malformed > 0 {
            println!("malformed_requests: {}", self.snap.malformed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 95.0), Some(95));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
