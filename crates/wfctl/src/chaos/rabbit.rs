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
/// How long a node may take to start (a restarted cluster member waits for its peers; a
/// loaded machine is slow to boot an Erlang VM).
const START_TIMEOUT: Duration = Duration::from_secs(240);
/// How long one `rabbitmqctl` call may take (it boots an Erlang VM of its own).
const CTL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

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
            &format!("listeners.tcp.1 = 127.0.0.1:{amqp_port}\n"),
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
        self.wait_ready().await
    }

    /// Waits until the node has written its pid file and accepts AMQP connections (its
    /// listener opens at the end of the boot), failing early if the process exits.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.amqp_port));
        loop {
            let exited = match self.child.as_mut() {
                Some(c) => c.try_wait()?.is_some(),
                None => true,
            };
            let why = if exited {
                Some("it exited".to_owned())
            } else if tokio::time::Instant::now() > deadline {
                Some(format!(
                    "it did not accept AMQP connections within {START_TIMEOUT:?}"
                ))
            } else {
                None
            };
            if let Some(why) = why {
                anyhow::bail!(
                    "RabbitMQ node {} did not start: {why}; its output ({}):\n{}",
                    self.node,
                    self.dir.display(),
                    procs::tail(&self.dir.join("server.out"), 15)
                );
            }
            if self.os_pid().is_some() && tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `rabbitmqctl -n <node> args…`, its stdout.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", self.node.as_str()];
        all.extend_from_slice(args);
        let mut cmd = self.run_as.command(Path::new(CTL));
        cmd.args(&all)
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"));
        cmd.kill_on_drop(true);
        let out = tokio::time::timeout(CTL_TIMEOUT, cmd.output())
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

    /// This node's view of the client connections: one `name<TAB>port` line each, the
    /// port being the AMQP port of the node the connection goes to.
    pub async fn list_connections(&self) -> anyhow::Result<String> {
        self.ctl(&[
            "-q",
            "list_connections",
            "--no-table-headers",
            "name",
            "port",
        ])
        .await
    }

    /// A clean stop: SIGTERM to the node's VM, which RabbitMQ handles as
    /// `rabbitmqctl stop` does (without needing the CLI, slow on a loaded machine); SIGKILL
    /// if it has not exited within a minute. Waits for the exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = self.os_pid();
        if let Some(pid) = pid {
            system::signal(pid, "TERM");
        }
        let clean = tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .is_ok()
            && pid.is_none_or(|p| !system::alive(p));
        if !clean {
            self.kill_vm();
            let _ = child.kill().await;
        }
        anyhow::ensure!(
            pid.is_some() && clean,
            "{} did not stop within {STOP_TIMEOUT:?} of SIGTERM and was killed",
            self.node
        );
        Ok(())
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

    /// Stops the node (a clean stop, a kill if that fails) and deletes its data; its logs
    /// too unless `keep_logs`.
    pub async fn remove(mut self, keep_logs: bool) {
        if let Err(e) = self.stop().await {
            eprintln!("chaos: warning: stopping {}: {e:#}", self.node);
        }
        self.kill_vm();
        let _ = if keep_logs {
            std::fs::remove_dir_all(self.dir.join("mnesia"))
        } else {
            std::fs::remove_dir_all(&self.dir)
        };
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

/// How many client connections go to each of `ports` (the nodes' AMQP ports), from the
/// `list_connections` output of any nodes (each connection counted once, however many
/// nodes listed it).
pub fn connections_per_port(ports: &[u16], listings: &[String]) -> Vec<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut counts = vec![0; ports.len()];
    for line in listings.iter().flat_map(|l| l.lines()).map(str::trim) {
        let Some(port) = line.rsplit('\t').next().and_then(|p| p.parse::<u16>().ok()) else {
            continue;
        };
        if !seen.insert(line) {
            continue;
        }
        if let Some(i) = ports.iter().position(|&p| p == port) {
            counts[i] += 1;
        }
    }
    counts
}

/// Established TCP connections whose local port is one of `ports` (the nodes' AMQP
/// ports), from `/proc/net/tcp` text: what the kernel says, when the nodes' CLI is too slow
/// to answer (a loaded machine).
pub fn established_per_port(ports: &[u16], proc_net_tcp: &str) -> Vec<usize> {
    let mut counts = vec![0; ports.len()];
    for line in proc_net_tcp.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(&"01")) = (fields.get(1), fields.get(3)) else {
            continue;
        };
        let Some(port) = local
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if let Some(i) = ports.iter().position(|&p| p == port) {
            counts[i] += 1;
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
        pending.push(tokio::spawn(async move {
            RabbitNode::start(&root, &name).await
        }));
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
            node.remove(true).await;
        }
        return Err(e);
    }
    if let Some((seed, rest)) = started.split_first() {
        for node in rest {
            if let Err(e) = node.join(seed).await {
                for node in started {
                    node.remove(true).await;
                }
                return Err(e.context("forming the cluster"));
            }
        }
    }
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::{connections_per_port, established_per_port};

    #[test]
    fn connections_are_counted_per_node_once() {
        let listings = [
            "wf-worker pid 1\t5001\nwf-worker pid 2\t5002\nwfctl pid 3\t5001\n".to_owned(),
            // Another node's view lists the same connections again, and a malformed line.
            "wf-worker pid 1\t5001\nwf-ingestor pid 4\t5001\nnot a connection\n".to_owned(),
        ];
        assert_eq!(
            connections_per_port(&[5001, 5002, 5003], &listings),
            vec![3, 1, 0]
        );
        assert_eq!(connections_per_port(&[5001], &[]), vec![0]);
    }

    #[test]
    fn established_connections_by_local_port() {
        // 0x1389 = 5001, 0x138A = 5002; state 01 is ESTABLISHED, 0A LISTEN.
        let text = "  sl  local_address rem_address   st tx_queue rx_queue\n\
            0: 0100007F:1389 00000000:0000 0A 00000000:00000000\n\
            1: 0100007F:1389 0100007F:D431 01 00000000:00000000\n\
            2: 0100007F:1389 0100007F:D432 01 00000000:00000000\n\
            3: 0100007F:D431 0100007F:1389 01 00000000:00000000\n\
            4: 0100007F:138A 0100007F:D433 01 00000000:00000000\n\
            garbage\n";
        assert_eq!(
            established_per_port(&[5001, 5002, 5003], text),
            vec![2, 1, 0]
        );
    }
}
