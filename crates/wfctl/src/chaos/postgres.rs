//! A private Postgres server beside the machine's own: a fresh cluster made by Debian's
//! `initdb` in the chaos run's folder, on a free loopback port, with its socket in that
//! folder, run by `pg_ctl` as the `postgres` user. It can be stopped hard and started
//! again without disturbing anybody else's database.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::system::RunAs;
use crate::harness::procs;

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb` and `pg_ctl`.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let base = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(base)
        .with_context(|| format!("listing {}", base.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
        .filter(|(_, p)| p.join("bin/initdb").is_file() && p.join("bin/pg_ctl").is_file())
        .max_by_key(|(v, _)| *v)
        .with_context(|| {
            format!(
                "no {}/<version>/bin/initdb: wfctl chaos runs a private Postgres from the \
                 local installation (make services installs it)",
                base.display()
            )
        })?;
    Ok(newest.1.join("bin"))
}

/// A private Postgres server.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    run_as: RunAs,
    running: bool,
}

impl PrivatePostgres {
    /// `initdb` under `root` (trust authentication, user `postgres`) and start.
    pub async fn start(root: &Path) -> anyhow::Result<PrivatePostgres> {
        let bin = bin_dir()?;
        let run_as = RunAs::lookup("postgres")?;
        let dir = root.join("postgres");
        run_as.make_dir(&dir)?;
        let data = dir.join("data").display().to_string();
        run_as
            .run(
                &bin.join("initdb"),
                &[
                    "-D",
                    &data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            )
            .await
            .context("initdb")?;
        let mut pg = PrivatePostgres {
            port: procs::free_port()?,
            dir,
            bin,
            run_as,
            running: false,
        };
        pg.start_again().await?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self) -> PathBuf {
        self.bin.join("pg_ctl")
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.running = true;
        self.run_as
            .run(
                &self.pg_ctl(),
                &[
                    "-D",
                    &self.data(),
                    "-l",
                    &log,
                    "-o",
                    &opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            )
            .await
            .with_context(|| {
                format!(
                    "starting the private Postgres; its log:\n{}",
                    procs::tail(&self.dir.join("server.log"), 15)
                )
            })?;
        Ok(())
    }

    /// Stops the server: `immediate` aborts every process at once, as a crash would (the
    /// next start recovers from the WAL); otherwise a fast, clean shutdown.
    pub async fn stop(&mut self, immediate: bool) -> anyhow::Result<()> {
        let mode = if immediate { "immediate" } else { "fast" };
        self.run_as
            .run(
                &self.pg_ctl(),
                &["-D", &self.data(), "-m", mode, "-w", "-t", "60", "stop"],
            )
            .await
            .context("stopping the private Postgres")?;
        self.running = false;
        Ok(())
    }

    /// Stops the server and deletes its data; its log too unless `keep_log`.
    pub async fn remove(mut self, keep_log: bool) {
        if self.running {
            if let Err(e) = self.stop(true).await {
                eprintln!("chaos: warning: {e:#}");
            }
        }
        let _ = if keep_log {
            std::fs::remove_dir_all(self.dir.join("data"))
        } else {
            std::fs::remove_dir_all(&self.dir)
        };
    }
}

impl Drop for PrivatePostgres {
    /// Last resort (a panic, an early return): never leave the server running.
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .run_as
                .blocking_command(&self.pg_ctl())
                .args(["-D", &self.data(), "-m", "immediate", "stop"])
                .output();
        }
    }
}
