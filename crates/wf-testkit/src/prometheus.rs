//! `/metrics` as a test reads it: the Prometheus text format parsed into samples, and the
//! metric families every service exports (the names dashboards and alerts are built on).

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The families of the metrics contract, with their `# TYPE`: every ingestor and worker
/// exports them all, whatever it does itself.
pub const CONTRACT_METRICS: [(&str, &str); 9] = [
    ("wf_events_ingested_total", "counter"),
    ("wf_events_rejected_total", "counter"),
    ("wf_deliveries_total", "counter"),
    ("wf_delivery_attempts_total", "counter"),
    ("wf_delivery_duration_seconds", "histogram"),
    ("wf_event_to_delivery_seconds", "histogram"),
    ("wf_deliveries_in_flight", "gauge"),
    ("wf_subscription_cache_requests_total", "counter"),
    ("wf_circuit_open_endpoints", "gauge"),
];

/// Labels of a sample, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// One scrape: every sample keyed by name and labels, and the `# TYPE` of each family.
#[derive(Debug, Default)]
pub struct Metrics {
    pub samples: BTreeMap<(String, Labels), f64>,
    pub types: BTreeMap<String, String>,
}

impl Metrics {
    /// Parses the text exposition format (`name{k="v",…} value`, `# TYPE name type`).
    ///
    /// # Panics
    /// On a line that is not in that format.
    pub fn parse(text: &str) -> Metrics {
        let mut m = Metrics::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                m.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), Labels::new()),
                Some((name, rest)) => (
                    name.to_owned(),
                    parse_labels(rest.strip_suffix('}').expect("closing brace")),
                ),
            };
            m.samples.insert((name, labels), value);
        }
        m
    }

    /// The sample with exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// Like [`get`](Self::get), NaN (equal to nothing) when the series is missing.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(f64::NAN)
    }

    /// Sum over every series of `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }

    /// How many series `name` has.
    pub fn series(&self, name: &str) -> usize {
        self.samples.keys().filter(|(n, _)| n == name).count()
    }
}

fn parse_labels(s: &str) -> Labels {
    let mut labels = Labels::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return labels;
        }
        assert_eq!(chars.next(), Some('"'), "label {key} in {s:?}");
        let mut value = String::new();
        loop {
            match chars.next().expect("unterminated label value") {
                '"' => break,
                '\\' => match chars.next().expect("escape") {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        labels.insert(key, value);
    }
}

/// `GET /metrics` on an ops port, parsed.
///
/// # Panics
/// When the port does not answer 200 with the text format.
pub async fn scrape(ops: SocketAddr) -> Metrics {
    let r = crate::http::get(ops, "/metrics")
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(r.status, 200, "GET /metrics on {ops}: {}", r.text());
    Metrics::parse(&r.text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_labels_escapes_and_types() {
        let m = Metrics::parse(
            "# HELP wf_x_total Things.\n# TYPE wf_x_total counter\n\
             wf_x_total{outcome=\"dead\",a=\"q\\\"uote\"} 3\n\
             wf_y_bucket{le=\"+Inf\"} 4\nwf_g -2.5\nwf_h +Inf\n",
        );
        assert_eq!(
            m.get("wf_x_total", &[("a", "q\"uote"), ("outcome", "dead")]),
            Some(3.0)
        );
        assert_eq!(m.value("wf_y_bucket", &[("le", "+Inf")]), 4.0);
        assert_eq!(m.value("wf_g", &[]), -2.5);
        assert_eq!(m.value("wf_h", &[]), f64::INFINITY);
        assert!(m.value("wf_x_total", &[]).is_nan());
        assert_eq!(m.types["wf_x_total"], "counter");
        assert_eq!((m.series("wf_x_total"), m.sum("wf_x_total")), (1, 3.0));
    }
}
