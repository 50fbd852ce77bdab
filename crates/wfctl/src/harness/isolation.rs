//! A bench or chaos run never touches real data: it runs in a fresh RabbitMQ vhost and a
//! fresh Postgres database, both named `wf_bench_<random>` (`wf_chaos_<random>`), deleted
//! at the end.

use anyhow::Context;
use rand::Rng;
use tokio_postgres::NoTls;

/// `<prefix>_` + 10 random lowercase letters.
pub fn run_name(prefix: &str) -> String {
    let mut rng = rand::rng();
    let s: String = (0..10)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect();
    format!("{prefix}_{s}")
}

/// `url` with its path (the vhost or database) replaced by `/name`.
pub fn with_path(url: &str, name: &str, what: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(url).with_context(|| {
        format!("{what} must be a URL (scheme://user@host:port/…) for wfctl bench and chaos")
    })?;
    u.set_path(&format!("/{name}"));
    Ok(u.into())
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("running rabbitmqctl (wfctl bench and chaos need the local RabbitMQ's CLI)")?;
    anyhow::ensure!(
        out.status.success(),
        "rabbitmqctl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Creates vhost `name` and gives `guest` full rights on it.
pub fn create_vhost(name: &str) -> anyhow::Result<()> {
    rabbitmqctl(&["-q", "add_vhost", name])?;
    rabbitmqctl(&[
        "-q",
        "set_permissions",
        "-p",
        name,
        "guest",
        ".*",
        ".*",
        ".*",
    ])
}

pub fn delete_vhost(name: &str) -> anyhow::Result<()> {
    rabbitmqctl(&["-q", "delete_vhost", name])
}

/// Opens a connection to the server's `postgres` database.
async fn admin(server_url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let admin = with_path(server_url, "postgres", "WF_DATABASE_URL")?;
    let (client, conn) = tokio_postgres::connect(&admin, NoTls)
        .await
        .context("connecting to Postgres (the `postgres` database of WF_DATABASE_URL's server)")?;
    tokio::spawn(conn);
    Ok(client)
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the empty database `name`. The services under test apply their own
/// migrations at start-up, so a bench of another build (`--bin-dir`) gets its schema.
pub async fn create_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    admin(server_url)
        .await?
        .batch_execute(&format!("CREATE DATABASE {}", quote(name)))
        .await
        .with_context(|| format!("creating database {name}"))
}

/// Drops database `name` (closing its connections) through the server's `postgres`
/// database.
pub async fn drop_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    admin(server_url)
        .await?
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote(name)
        ))
        .await
        .with_context(|| format!("dropping database {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        let n = run_name("wf_bench");
        assert!(n.starts_with("wf_bench_") && n.len() == 19);
        assert_eq!(
            with_path(
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "wf_bench_x",
                "WF_AMQP_URL"
            )
            .unwrap(),
            "amqp://guest:guest@127.0.0.1:5672/wf_bench_x"
        );
        assert_eq!(
            with_path(
                "postgres://postgres@127.0.0.1:5432/workflows?sslmode=disable",
                "wf_bench_x",
                "WF_DATABASE_URL"
            )
            .unwrap(),
            "postgres://postgres@127.0.0.1:5432/wf_bench_x?sslmode=disable"
        );
        assert!(with_path("host=localhost", "x", "WF_DATABASE_URL").is_err());
    }
}
