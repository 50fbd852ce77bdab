//! The deployment artefacts under `deploy/` stay loadable and stay in step with the code:
//! every YAML and JSON file parses, the alert rules and the Grafana dashboard only query
//! metrics that the services actually register, `promtool` accepts (and unit-tests) the
//! rules when it is installed, and the kustomize base names only files that exist.
//!
//! These tests need no Postgres or RabbitMQ; they read files relative to the repository
//! root, found from this crate's manifest directory (`tests/`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

/// The repository root: the parent of this crate's directory (`tests/`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the test crate lives one level below the repository root")
        .to_path_buf()
}

fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// Every file under `dir` (recursively) whose name ends with one of `extensions`, sorted.
fn files_with_extension(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot read an entry of {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                walk(&path, extensions, out);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e))
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, extensions, &mut out);
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// All documents of a (possibly multi-document) YAML file.
fn load_yaml(path: &Path) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    let files = files_with_extension(&deploy_dir(), &["yml", "yaml"]);
    let names: Vec<String> = files.iter().map(|p| relative(p)).collect();
    for expected in [
        "deploy/prometheus/alerts.yml",
        "deploy/k8s/kustomization.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} is missing; found {names:?}"
        );
    }

    let mut failures = Vec::new();
    for path in &files {
        match YamlLoader::load_from_str(&read(path)) {
            Err(e) => failures.push(format!("{}: {e}", relative(path))),
            // A file of nothing but comments loads as zero documents: almost certainly a
            // mistake in a deployment directory.
            Ok(docs) if docs.iter().all(|d| matches!(d, Yaml::Null)) => {
                failures.push(format!("{}: no YAML document in it", relative(path)));
            }
            Ok(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "YAML files that do not load:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_json_file_under_deploy_parses() {
    let files = files_with_extension(&deploy_dir(), &["json"]);
    assert!(
        files.iter().any(|p| p.ends_with("grafana/dashboard.json")),
        "deploy/grafana/dashboard.json is missing; found {files:?}"
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| {
            serde_json::from_str::<serde_json::Value>(&read(path))
                .err()
                .map(|e| format!("{}: {e}", relative(path)))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "JSON files that do not parse:\n{}",
        failures.join("\n")
    );
}

/// The `expr` of every rule in a Prometheus rule file (`groups[].rules[].expr`).
fn alert_exprs(path: &Path) -> Vec<String> {
    let mut exprs = Vec::new();
    for doc in load_yaml(path) {
        let groups = doc["groups"]
            .as_vec()
            .unwrap_or_else(|| panic!("{}: no `groups:` list", relative(path)));
        for group in groups {
            let rules = group["rules"].as_vec().unwrap_or_else(|| {
                panic!(
                    "{}: group {:?} has no `rules:` list",
                    relative(path),
                    group["name"]
                )
            });
            for rule in rules {
                let expr = rule["expr"].as_str().unwrap_or_else(|| {
                    panic!("{}: rule {rule:?} has no string `expr`", relative(path))
                });
                exprs.push(expr.to_owned());
            }
        }
    }
    exprs
}

/// The `expr` of every query anywhere in a Grafana dashboard (panels, rows' nested
/// panels, library panels alike).
fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// The names in a PromQL expression that look like our metrics: identifiers starting with
/// `wf_` or `process_`. Quoted strings (label values, regexes) are skipped, and so are
/// numbers and durations (`5m`) and Grafana variables' names (`$__rate_interval` gives
/// `__rate_interval`, which matches neither prefix).
fn metric_tokens(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            // A string literal: skip to its closing quote, honouring backslash escapes
            // (backtick strings have none, but a backslash in one is harmless here).
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
            {
                i += 1;
            }
            let token: String = chars[start..i].iter().collect();
            if token.starts_with("wf_") || token.starts_with("process_") {
                names.insert(token);
            }
        } else if c.is_ascii_digit() {
            // A number or a duration such as 5m or 1h30m: never a metric name.
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '_'))
            {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Whether `name` (as written in a query) is one of `registered` family names, allowing
/// the series suffixes a histogram or summary family exposes.
fn is_registered(name: &str, registered: &BTreeSet<String>) -> bool {
    registered.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|family| registered.contains(family))
        })
}

#[test]
fn metric_token_scanner_ignores_strings_functions_and_durations() {
    let expr = r#"histogram_quantile(0.99, sum by (le) (rate(wf_event_to_delivery_seconds_bucket{job=~".*wf_fake.*", q='wf_also_fake'}[$__rate_interval])))
        / on (instance) process_resident_memory_bytes offset 5m and my_wf_thing > 1e3"#;
    let tokens: Vec<String> = metric_tokens(expr).into_iter().collect();
    assert_eq!(
        tokens,
        [
            "process_resident_memory_bytes",
            "wf_event_to_delivery_seconds_bucket"
        ]
    );

    let registered: BTreeSet<String> = ["wf_event_to_delivery_seconds", "wf_jobs_count"]
        .map(String::from)
        .into();
    assert!(is_registered(
        "wf_event_to_delivery_seconds_bucket",
        &registered
    ));
    assert!(is_registered(
        "wf_event_to_delivery_seconds_count",
        &registered
    ));
    assert!(is_registered("wf_jobs_count", &registered));
    assert!(!is_registered(
        "wf_event_to_delivery_second_bucket",
        &registered
    ));
}

#[test]
fn alerts_and_dashboard_only_use_registered_metrics() {
    let registered: BTreeSet<String> = wf_telemetry::metric_names().into_iter().collect();
    assert!(
        registered.contains("wf_deliveries_total"),
        "wf_telemetry::metric_names() looks incomplete: {registered:?}"
    );

    let alerts_path = deploy_dir().join("prometheus/alerts.yml");
    let dashboard_path = deploy_dir().join("grafana/dashboard.json");
    let alerts = alert_exprs(&alerts_path);
    let dashboard: serde_json::Value = serde_json::from_str(&read(&dashboard_path))
        .unwrap_or_else(|e| panic!("{}: {e}", relative(&dashboard_path)));
    let mut panels = Vec::new();
    dashboard_exprs(&dashboard, &mut panels);

    let mut missing = Vec::new();
    for (path, exprs) in [(&alerts_path, &alerts), (&dashboard_path, &panels)] {
        let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_tokens(e)).collect();
        // Guards against a walker that silently finds nothing to check.
        assert!(
            used.iter().any(|m| m.starts_with("wf_")),
            "{}: found no wf_* metric in {} expressions",
            relative(path),
            exprs.len()
        );
        missing.extend(
            used.iter()
                .filter(|m| !is_registered(m, &registered))
                .map(|m| format!("{}: {m}", relative(path))),
        );
    }
    assert!(
        missing.is_empty(),
        "queried metrics that no service registers (known: {registered:?}):\n{}",
        missing.join("\n")
    );
}

/// `promtool` from `PATH`. `make test` installs it (`scripts/services.sh test-tools`,
/// Debian package `prometheus`): without it the alert rules would go unchecked, so its
/// absence fails the test rather than skipping it.
fn promtool() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|candidate| candidate.is_file())
        .expect(
            "promtool is not on PATH: `make test` installs it \
             (scripts/services.sh test-tools, Debian package prometheus)",
        )
}

fn run_promtool(promtool: &Path, args: &[&str]) {
    let output = Command::new(promtool)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    assert!(
        output.status.success(),
        "`promtool {}` failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let promtool = promtool();
    run_promtool(
        &promtool,
        &["check", "rules", "deploy/prometheus/alerts.yml"],
    );
    // The rules' own unit tests: each alert fires on the series it is meant for, and
    // only then.
    run_promtool(
        &promtool,
        &["test", "rules", "deploy/prometheus/alerts.test.yml"],
    );
}

#[test]
fn kustomization_resources_exist() {
    let k8s = deploy_dir().join("k8s");
    let docs = load_yaml(&k8s.join("kustomization.yaml"));
    let kustomization = docs.first().expect("kustomization.yaml has a document");
    let resources: Vec<&str> = kustomization["resources"]
        .as_vec()
        .expect("kustomization.yaml has a `resources:` list")
        .iter()
        .map(|r| r.as_str().expect("each resource is a path string"))
        .collect();
    assert!(
        !resources.is_empty(),
        "kustomization.yaml lists no resources"
    );

    let mut problems = Vec::new();
    for resource in &resources {
        let path = k8s.join(resource);
        if path.is_dir() {
            if !path.join("kustomization.yaml").is_file() {
                problems.push(format!(
                    "{resource}: a directory without kustomization.yaml"
                ));
            }
            continue;
        }
        if !path.is_file() {
            problems.push(format!("{resource}: no such file"));
            continue;
        }
        for (n, doc) in load_yaml(&path).iter().enumerate() {
            if doc["apiVersion"].as_str().is_none() || doc["kind"].as_str().is_none() {
                problems.push(format!("{resource}: document {n} has no apiVersion/kind"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "kustomization.yaml resources:\n{}",
        problems.join("\n")
    );

    // The CPU HPA is the alternative to the KEDA ScaledObject, never an addition: two
    // autoscalers on the worker Deployment fight over its replica count. And the example
    // Secret holds placeholders that must never be applied.
    assert!(
        !(resources.contains(&"hpa.yaml") && resources.contains(&"keda-scaledobject.yaml")),
        "kustomization.yaml lists both hpa.yaml and keda-scaledobject.yaml: use one"
    );
    assert!(
        !resources.contains(&"secret.example.yaml"),
        "secret.example.yaml holds placeholders and must not be a kustomize resource"
    );
}

/// The highly available overlay: every resource and patch it names exists, each patch
/// targets a resource the base defines, the services get every RabbitMQ node and the
/// Postgres operator's URL, and the quorum queues three replicas.
#[test]
fn the_ha_overlay_points_the_services_at_clusters() {
    let overlay = deploy_dir().join("k8s/overlays/ha");
    let docs = load_yaml(&overlay.join("kustomization.yaml"));
    let k = docs.first().expect("the overlay's kustomization.yaml");
    let base_kinds: Vec<(String, String)> = {
        let base = deploy_dir().join("k8s");
        let base_doc = load_yaml(&base.join("kustomization.yaml"));
        base_doc[0]["resources"]
            .as_vec()
            .unwrap()
            .iter()
            .flat_map(|r| load_yaml(&base.join(r.as_str().unwrap())))
            .map(|d| {
                (
                    d["kind"].as_str().unwrap_or_default().to_owned(),
                    d["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    };
    for r in k["resources"].as_vec().expect("resources") {
        let r = r.as_str().unwrap();
        let path = overlay.join(r);
        assert!(path.exists(), "{r}: missing");
        if path.is_file() {
            for d in load_yaml(&path) {
                assert!(
                    d["apiVersion"].as_str().is_some() && d["kind"].as_str().is_some(),
                    "{r}"
                );
            }
        }
    }
    let mut env_patch = String::new();
    for p in k["patches"].as_vec().expect("patches") {
        let file = p["path"].as_str().expect("a patch file");
        let text =
            std::fs::read_to_string(overlay.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!load_yaml(&overlay.join(file)).is_empty(), "{file}: empty");
        let kind = p["target"]["kind"].as_str().expect("target kind");
        let name = p["target"]["name"].as_str().expect("target name");
        let names = name.trim_start_matches("wf-(").trim_end_matches(')');
        let wanted: Vec<String> = if name.contains('(') {
            names.split('|').map(|n| format!("wf-{n}")).collect()
        } else {
            vec![name.to_owned()]
        };
        for n in wanted {
            assert!(
                base_kinds.contains(&(kind.to_owned(), n.clone())),
                "{file} targets {kind} {n}, which the base does not define"
            );
        }
        if file == "services-env.yaml" {
            env_patch = text;
        }
    }
    for node in 0..3 {
        assert!(
            env_patch.contains(&format!(
                "@wf-rabbitmq-server-{node}.wf-rabbitmq-nodes:5672/"
            )),
            "WF_AMQP_URL lists node {node}"
        );
    }
    assert!(env_patch.contains("name: wf-postgres-app"));
    let config = std::fs::read_to_string(overlay.join("config.yaml")).unwrap();
    assert!(config.contains("WF_QUORUM_GROUP_SIZE") && config.contains("\"3\""));
}

/// Every `WF_*` variable the deployment files and the docs set or mention is one the
/// processes read (`wf_core::config::VARIABLES`): a setting the code does not know would be
/// silently ignored. The one exception is a key of the KEDA trigger's Secret.
#[test]
fn deploy_files_and_docs_name_only_known_variables() {
    const NOT_OURS: &[&str] = &["WF_KEDA_AMQP_URL"];
    let known: BTreeSet<&str> = wf_core::config::VARIABLES.iter().map(|v| v.name).collect();
    let mut files = files_with_extension(&deploy_dir(), &["yml", "yaml", "md", "json"]);
    files.extend(files_with_extension(&repo_root().join("docs"), &["md"]));
    files.push(deploy_dir().join("Dockerfile"));
    files.push(repo_root().join("README.md"));
    let mut unknown = Vec::new();
    for file in &files {
        let text = read(file);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("WF_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + name.len().max(3)..];
            // `WF_*`, the family, is not a name.
            let name = name.trim_end_matches('_');
            if name != "WF" && !known.contains(name) && !NOT_OURS.contains(&name) {
                unknown.push(format!("{}: {name}", relative(file)));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "not variables of config::VARIABLES:\n{}",
        unknown.join("\n")
    );
}

/// The HA overlay's node list passes `WF_AMQP_URL`'s start-up checks (with the operator's
/// credentials filled in), and names three nodes: three quorum replicas even without its
/// `WF_QUORUM_GROUP_SIZE`.
#[test]
fn the_ha_overlay_node_list_is_a_valid_amqp_url_list() {
    let patch = load_yaml(&deploy_dir().join("k8s/overlays/ha/services-env.yaml"));
    let list = patch[0]
        .as_vec()
        .expect("a list of JSON patch operations")
        .iter()
        .find(|op| op["value"]["name"].as_str() == Some("WF_AMQP_URL"))
        .and_then(|op| op["value"]["value"].as_str())
        .expect("the overlay sets WF_AMQP_URL")
        .replace("$(RABBITMQ_USER)", "user")
        .replace("$(RABBITMQ_PASSWORD)", "password");
    let config = wf_core::config::Config::from_lookup(wf_core::config::Role::Worker, |k| {
        (k == "WF_AMQP_URL").then(|| list.clone())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.amqp_url.split(',').count(), 3, "{}", config.amqp_url);
    assert_eq!(config.quorum_group_size, 3);
}
