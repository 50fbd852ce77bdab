//! What the system itself counted during a run: the workers' Prometheus counters (held-back
//! deliveries, re-publishes, retries, dead letters) and, when RabbitMQ's management API is
//! reachable, the broker's own count of messages that entered the delivery and retry
//! queues: the two views of broker churn.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Context;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::harness::http::HttpConn;

/// Sum of every sample of each counter, over all workers.
#[derive(Clone, Debug, Default)]
pub struct WorkerCounters {
    sums: HashMap<String, f64>,
}

/// The counters the bench reports.
pub const DEFERRED: &str = "wf_deliveries_deferred_total";
pub const REPUBLISHED: &str = "wf_deliveries_republished_total";
pub const RETRIES: &str = "wf_retries_scheduled_total";
pub const ATTEMPTS: &str = "wf_delivery_attempts_total";
pub const CONNECTIONS_OPENED: &str = "wf_delivery_connections_opened_total";

impl WorkerCounters {
    /// Scrapes `/metrics` of every worker.
    pub async fn scrape(ops: &[SocketAddr]) -> anyhow::Result<WorkerCounters> {
        let mut all = WorkerCounters::default();
        for &addr in ops {
            let (status, body) = HttpConn::new(addr)
                .request(hyper::Method::GET, "/metrics", None, None)
                .await?;
            anyhow::ensure!(status == 200, "GET {addr}/metrics answered {status}");
            all.add(&String::from_utf8_lossy(&body));
        }
        Ok(all)
    }

    /// Adds the samples of one Prometheus text exposition.
    fn add(&mut self, text: &str) {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let name = series.split('{').next().unwrap_or(series);
            *self.sums.entry(name.to_owned()).or_default() += value;
            if let Some(outcome) = label(series, "outcome") {
                *self
                    .sums
                    .entry(format!("{name}{{outcome={outcome}}}"))
                    .or_default() += value;
            }
        }
    }

    /// `metric` summed over its labels, or one `outcome` of it (`name{outcome=dead}`).
    pub fn get(&self, key: &str) -> f64 {
        self.sums.get(key).copied().unwrap_or(0.0)
    }

    /// The increase of every counter since `before`.
    pub fn since(&self, before: &WorkerCounters) -> WorkerCounters {
        let sums = self
            .sums
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k)))
            .collect();
        WorkerCounters { sums }
    }
}

/// The value of `label` in a series like `name{a="x",label="y"}`.
fn label<'a>(series: &'a str, label: &str) -> Option<&'a str> {
    let labels = series.split_once('{')?.1.strip_suffix('}')?;
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == label).then(|| v.trim_matches('"'))
    })
}

/// Messages RabbitMQ counted into the queues delivery jobs travel through.
#[derive(Clone, Copy, Debug, Default)]
pub struct BrokerCounts {
    /// Into `workflows.deliveries` (queued jobs and jobs back from a retry queue).
    pub deliveries_queue: u64,
    /// Into the `workflows.retry.*` queues (retries after failures, and parked deliveries).
    pub retry_queues: u64,
    /// Into the dead-letter queue.
    pub dead_queue: u64,
}

impl BrokerCounts {
    pub fn since(self, before: BrokerCounts) -> BrokerCounts {
        BrokerCounts {
            deliveries_queue: self
                .deliveries_queue
                .saturating_sub(before.deliveries_queue),
            retry_queues: self.retry_queues.saturating_sub(before.retry_queues),
            dead_queue: self.dead_queue.saturating_sub(before.dead_queue),
        }
    }
}

/// RabbitMQ's management API (`rabbitmq_management` plugin) for the bench's vhost: the
/// AMQP URL's host and credentials on port 15672.
pub struct ManagementApi {
    addr: SocketAddr,
    authorization: String,
    vhost: String,
}

impl ManagementApi {
    pub fn from_amqp_url(amqp_url: &str) -> anyhow::Result<ManagementApi> {
        let u = url::Url::parse(amqp_url).context("WF_AMQP_URL")?;
        let host = u.host_str().unwrap_or("127.0.0.1");
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, 15672))?
            .next()
            .context("resolving the RabbitMQ host")?;
        let user = match u.username() {
            "" => "guest",
            user => user,
        };
        let password = u.password().unwrap_or("guest");
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            decode(user),
            decode(password)
        ));
        Ok(ManagementApi {
            addr,
            authorization: format!("Basic {credentials}"),
            vhost: u.path().trim_start_matches('/').to_owned(),
        })
    }

    /// The vhost's queue counters, or `None` when the API does not answer (the plugin is
    /// not enabled).
    pub async fn queue_counts(&self) -> Option<BrokerCounts> {
        let path = format!("/api/queues/{}?columns=name,message_stats", self.vhost);
        let body = tokio::time::timeout(std::time::Duration::from_secs(5), self.get(&path))
            .await
            .ok()?
            .ok()?;
        let queues: Value = serde_json::from_slice(&body).ok()?;
        let mut counts = BrokerCounts::default();
        for q in queues.as_array()? {
            let name = q["name"].as_str().unwrap_or_default();
            let published = q["message_stats"]["publish"].as_u64().unwrap_or(0);
            if name == wf_broker::names::DELIVERIES_QUEUE {
                counts.deliveries_queue += published;
            } else if name.starts_with(wf_broker::names::RETRY_QUEUE_PREFIX) {
                counts.retry_queues += published;
            } else if name == wf_broker::names::DEAD_QUEUE {
                counts.dead_queue += published;
            }
        }
        Some(counts)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Bytes> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::AUTHORIZATION, &self.authorization)
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        anyhow::ensure!(resp.status() == 200, "{path}: {}", resp.status());
        Ok(resp.into_body().collect().await?.to_bytes())
    }
}

/// Percent-decoding of a URL's user or password.
fn decode(s: &str) -> String {
    // Form decoding turns `+` into a space; in a URL's userinfo it is a plain `+`.
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map_or_else(|| s.to_owned(), |(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::WorkerCounters;

    #[test]
    fn sums_series_over_labels_and_keeps_outcomes() {
        let mut c = WorkerCounters::default();
        c.add(
            "# HELP wf_deliveries_total x\n\
             # TYPE wf_deliveries_total counter\n\
             wf_deliveries_total{outcome=\"delivered\"} 10\n\
             wf_deliveries_total{outcome=\"dead\"} 2\n\
             wf_deliveries_deferred_total{reason=\"busy\"} 3\n\
             wf_deliveries_deferred_total{reason=\"circuit_open\"} 4\n\
             garbage line\n",
        );
        c.add("wf_deliveries_total{outcome=\"dead\"} 1\n");
        assert_eq!(c.get("wf_deliveries_total"), 13.0);
        assert_eq!(c.get("wf_deliveries_total{outcome=dead}"), 3.0);
        assert_eq!(c.get(super::DEFERRED), 7.0);
        assert_eq!(c.get("wf_missing"), 0.0);
        let later = {
            let mut l = c.clone();
            l.add("wf_deliveries_deferred_total{reason=\"busy\"} 5\n");
            l
        };
        assert_eq!(later.since(&c).get(super::DEFERRED), 5.0);
    }
}
