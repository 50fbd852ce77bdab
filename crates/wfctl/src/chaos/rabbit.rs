//! Private RabbitMQ nodes beside the machine's own: each with its own node name, AMQP and
//! Erlang distribution ports (free ones, never 5672/25672), its own config, data and logs
//! under the chaos run's folder, no plugins (so no management listener), started as the
//! `rabbitmq` user so that it shares the Erlang cookie and can form a cluster with its
//! siblings. The machine's node, its data and its cluster membership are never touched;
//! epmd (port 4369) is shared, as it is meant to be.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::system::{self, RunAs};
use crate::harness::procs;

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";
/// How long a node may take to start (a restarted cluster member waits for its peers).
const START_TIMEOUT_SECS: u32 = 120;

/// One private node.
pub struct RabbitNode {
    /// `name@localhost`.
    pub node: String,
    pub amqp_port: u16,
    dist_port: u16,
    dir: PathBuf,
    run_as: RunAs,
    /// The `rabbitmq-server` process (through `runuser` when we are root), while running.
    child: Option<tokio::process::Child>,
}

impl RabbitNode {
    /// Creates the node's folders under `root` and starts it; returns once it runs.
    pub async fn start(root: &Path, name: &str) -> anyhow::Result<RabbitNode> {
        anyhow::ensure!(
            Path::new(SERVER).is_file(),
            "{SERVER} not found: wfctl chaos runs private RabbitMQ nodes from the local \
             installation (make services installs it)"
        );
        let run_as = RunAs::lookup("rabbitmq")?;
        let dir = root.join(name);
        run_as.make_dir(&dir)?;
        for sub in ["mnesia", "log"] {
            run_as.make_dir(&dir.join(sub))?;
        }
        let amqp_port = procs::free_port()?;
        let mut dist_port = procs::free_port()?;
        while dist_port == amqp_port {
            dist_port = procs::free_port()?;
        }
        run_as.write_file(
            &dir.join("rabbitmq.conf"),
            &format!(
"listeners.tcp.1 = 127.0.0.1:{amqp_port}\n"
            ),
        )?;
        // Read instead of /etc/rabbitmq/rabbitmq-env.conf, which names the machine's node.
        run_as.write_file(&dir.join("rabbitmq-env.conf"), "")?;
        run_as.write_file(&dir.join("enabled_plugins"), "[].\n")?;
        let mut node = RabbitNode {
            node: format!("{name}@localhost"),
            amqp_port,
            dist_port,
            dir,
            run_as,
            child: None,
        };
        node.start_again().await?;
        Ok(node)
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("node.pid")
    }

    /// The node's Erlang VM (`beam.smp`), from its pid file.
    pub fn os_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Starts the node (again, after [`RabbitNode::stop`] or [`RabbitNode::kill`], with the
    /// same name, ports and data) and waits until RabbitMQ runs on it.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is running already", self.node);
        let _ = std::fs::remove_file(self.pid_file());
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.out"))
            .context("opening the node's output file")?;
        let err = out.try_clone()?;
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let child = self
            .run_as
            .command(Path::new(SERVER))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", d("node.pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting RabbitMQ node {}", self.node))?;
        self.child = Some(child);
        let timeout = START_TIMEOUT_SECS.to_string();
        let pid_file = self.pid_file().display().to_string();
        if let Err(e) = self.ctl(&["wait", "--timeout", &timeout, &pid_file]).await {
            anyhow::bail!(
                "RabbitMQ node {} did not start: {e:#}\nits output ({}):\n{}",
                self.node,
                self.dir.display(),
                procs::tail(&self.dir.join("server.out"), 15)
            );
        }
        Ok(())
    }

    /// `rabbitmqctl -n <node> args…`, its stdout.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", self.node.as_str()];
        all.extend_from_slice(args);
        let mut cmd = self.run_as.command(Path::new(CTL));
        cmd.args(&all)
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"));
        let out = tokio::time::timeout(Duration::from_secs(u64::from(START_TIMEOUT_SECS) + 30), cmd.output())
            .await
            .with_context(|| format!("rabbitmqctl {} did not finish", all.join(" ")))?
            .context("running rabbitmqctl")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        anyhow::ensure!(
            out.status.success(),
            "rabbitmqctl {} failed: {} {}",
            all.join(" "),
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(stdout)
    }

    /// Joins the cluster of `seed` (a fresh node only).
    pub async fn join(&self, seed: &RabbitNode) -> anyhow::Result<()> {
        self.ctl(&["stop_app"]).await?;
        self.ctl(&["join_cluster", &seed.node]).await?;
        self.ctl(&["start_app"]).await?;
        self.ctl(&["await_startup"]).await?;
        Ok(())
    }

    /// How many client connections each node of the cluster holds, as seen from this
    /// node: `(node, count)`.
    pub async fn connections_per_node(&self) -> anyhow::Result<Vec<(String, usize)>> {
        let out = self
            .ctl(&["-q", "list_connections", "--no-table-headers", "node"])
            .await?;
        Ok(count_by_node(&out))
    }

    /// A clean stop (`rabbitmqctl stop`), waiting for the process to exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let stopped = self.ctl(&["stop"]).await;
        if tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .is_err()
        {
            self.kill_vm();
            let _ = child.kill().await;
        }
        stopped.map(|_| ())
    }

    /// SIGKILL to the node's VM, as a crash or an OOM kill would; waits for the exit.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        let pid = self.os_pid().context("the node wrote no pid file")?;
        anyhow::ensure!(system::signal(pid, "KILL"), "could not SIGKILL {pid}");
        if let Some(mut child) = self.child.take() {
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        for _ in 0..100 {
            if !system::alive(pid) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("{} (pid {pid}) still runs after SIGKILL", self.node)
    }

    fn kill_vm(&self) {
        if let Some(pid) = self.os_pid() {
            if system::alive(pid) {
                system::signal(pid, "KILL");
            }
        }
    }

    /// Stops the node (a clean stop, a kill if that fails) and deletes its data.
    pub async fn remove(mut self) {
        if let Err(e) = self.stop().await {
            eprintln!("chaos: warning: stopping {}: {e:#}", self.node);
        }
        self.kill_vm();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for RabbitNode {
    /// Last resort (a panic, an early return): never leave a node running.
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill_vm();
        }
    }
}

/// `rabbitmqctl list_connections node` output (one node name per connection) counted per
/// node, in order of first appearance.
fn count_by_node(out: &str) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for node in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match counts.iter_mut().find(|(n, _)| n == node) {
            Some((_, c)) => *c += 1,
            None => counts.push((node.to_owned(), 1)),
        }
    }
    counts
}

/// Starts `n` private nodes named `<prefix>_<i>` and, for more than one, clusters them
/// (each joins the first).
pub async fn start_cluster(root: &Path, prefix: &str, n: usize) -> anyhow::Result<Vec<RabbitNode>> {
    let mut started = Vec::with_capacity(n);
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{prefix}_{}", i + 1);
        let root = root.to_path_buf();
        pending.push(tokio::spawn(async move { RabbitNode::start(&root, &name).await }));
    }
    let mut first_error = None;
    for p in pending {
        match p.await.context("starting a node")? {
            Ok(node) => started.push(node),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        for node in started {
            node.remove().await;
        }
        return Err(e);
    }
    if let Some((seed, rest)) = started.split_first() {
        for node in rest {
            if let Err(e) = node.join(seed).await {
                for node in started {
                    node.remove().await;
                }
                return Err(e.context("forming the cluster"));
            }
        }
    }
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::count_by_node;

    #[test]
    fn connections_are_counted_per_node() {
        let out = "a@localhost\nb@localhost\n\na@localhost\n  a@localhost  \n";
        assert_eq!(
            count_by_node(out),
            vec![("a@localhost".to_owned(), 3), ("b@localhost".to_owned(), 1)]
        );
        assert!(count_by_node("").is_empty());
    }
}
