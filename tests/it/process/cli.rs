//! The binaries' command lines: `--help` lists every `WF_*` variable with the default that
//! process uses, `--version` names the release, and an unknown argument is refused with
//! exit status 2. None of it reads the configuration or connects to anything.

use std::collections::BTreeMap;
use std::net::TcpListener;

use wf_core::config::{help, Role, VARIABLES};

use super::support::*;

/// Runs `bin args…` with every dependency pointing at `trap` and an invalid
/// `WF_WORKER_CONCURRENCY`: reading the configuration would fail, connecting would show on
/// `trap`. Returns (exit code, stdout, stderr).
async fn run(bin: &str, args: &[&str], trap: &TcpListener) -> (Option<i32>, String, String) {
    let at = trap.local_addr().unwrap();
    let env: BTreeMap<String, String> = [
        ("WF_DATABASE_URL", format!("postgres://postgres@{at}/none")),
        ("WF_AMQP_URL", format!("amqp://guest:guest@{at}/%2f")),
        ("WF_WORKER_CONCURRENCY", "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        command(bin, &env).await.args(args).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{bin} {args:?} did not exit"))
    .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Nothing connected to `trap` (a connection attempt, even one given up at once, is
/// completed by the kernel and waits to be accepted).
fn assert_untouched(trap: &TcpListener, what: &str) {
    match trap.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("{what} connected to a dependency (from {from})"),
        Err(e) => panic!("accept: {e}"),
    }
}

fn trap() -> TcpListener {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

#[tokio::test(flavor = "multi_thread")]
async fn help_lists_every_variable_with_the_process_default() {
    for (bin, role) in [
        (INGESTOR, Role::Ingestor),
        (WORKER, Role::Worker),
        (WFCTL, Role::Cli),
    ] {
        let trap = trap();
        for flag in ["--help", "-h"] {
            let (code, stdout, stderr) = run(bin, &[flag], &trap).await;
            assert_eq!(code, Some(0), "{bin} {flag}: {stderr}");
            // The same text as the table renders, whole.
            assert!(
                stdout.contains(&help(role)),
                "{bin} {flag} lacks the configuration section:\n{stdout}"
            );
            for v in VARIABLES {
                assert!(stdout.contains(v.name), "{bin} {flag}: no {}", v.name);
            }
        }
        assert_untouched(&trap, bin);
    }
    // Each process shows its own default.
    let trap = trap();
    let (_, ingestor, _) = run(INGESTOR, &["--help"], &trap).await;
    let (_, worker, _) = run(WORKER, &["--help"], &trap).await;
    let (_, wfctl, _) = run(WFCTL, &["--help"], &trap).await;
    assert!(ingestor.contains("WF_METRICS_ADDR  [default: 127.0.0.1:9464]"));
    assert!(worker.contains("WF_METRICS_ADDR  [default: 127.0.0.1:9465]"));
    assert!(wfctl.contains("WF_LOG  [default: warn]"));
    assert!(ingestor.contains("openapi"), "{ingestor}");
    assert_untouched(&trap, "--help");
}

#[tokio::test(flavor = "multi_thread")]
async fn version_names_the_release() {
    let trap = trap();
    for bin in [INGESTOR, WORKER, WFCTL] {
        for flag in ["--version", "-V"] {
            let (code, stdout, stderr) = run(bin, &[flag], &trap).await;
            assert_eq!(code, Some(0), "{bin} {flag}: {stderr}");
            assert_eq!(stdout, format!("{bin} {}\n", env!("CARGO_PKG_VERSION")));
        }
    }
    assert_untouched(&trap, "--version");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_argument_is_refused_with_status_2() {
    let trap = trap();
    let cases: &[(&str, &[&str], &str)] = &[
        (INGESTOR, &["--no-such-flag"], "--no-such-flag"),
        (INGESTOR, &["serve"], "serve"),
        (INGESTOR, &["openapi", "--pretty"], "--pretty"),
        (WORKER, &["--no-such-flag"], "--no-such-flag"),
        (WORKER, &["run"], "run"),
        (WFCTL, &["--no-such-flag"], "--no-such-flag"),
        (WFCTL, &["frobnicate"], "frobnicate"),
        (WFCTL, &["dlq", "list", "--limit", "many"], "many"),
    ];
    for (bin, args, named) in cases {
        let (code, stdout, stderr) = run(bin, args, &trap).await;
        assert_eq!(code, Some(2), "{bin} {args:?}: {stdout}{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(named),
            "{bin} {args:?} does not say what is wrong: {stderr}"
        );
        assert!(stderr.contains("--help"), "{bin} {args:?}: {stderr}");
        assert!(stdout.is_empty(), "{bin} {args:?}: {stdout}");
    }
    assert_untouched(&trap, "an unknown argument");
    // `openapi` still prints the document, without configuration or connections.
    let (code, stdout, stderr) = run(INGESTOR, &["openapi"], &trap).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with('{') && stdout.contains("\"openapi\""),
        "{stdout}"
    );
    assert_untouched(&trap, "wf-ingestor openapi");
}
