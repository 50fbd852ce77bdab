//! A RabbitMQ vhost per test: its own exchanges, queues and connections, so tests run in
//! parallel against the one broker and never touch anybody else's queues.

use std::process::Command;

use crate::unique;

/// The test broker, without a vhost.
pub const AMQP_SERVER_URL: &str = "amqp://guest:guest@127.0.0.1:5672";

/// Runs `rabbitmqctl -q <args>` and returns its standard output.
///
/// # Panics
/// When it cannot run or fails (with its standard error).
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running rabbitmqctl (make services installs it): {e}"));
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A vhost (`wf_test_…`) on which `guest` may do everything; deleted, with everything in
/// it, when the value is dropped.
#[derive(Debug)]
pub struct Vhost {
    pub name: String,
}

impl Vhost {
    /// `rabbitmqctl add_vhost` and `set_permissions` (about a second each).
    ///
    /// # Panics
    /// When `rabbitmqctl` fails.
    pub fn create() -> Vhost {
        let vhost = Vhost {
            name: unique("wf_test"),
        };
        rabbitmqctl(&["add_vhost", &vhost.name]);
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ]);
        vhost
    }

    /// `amqp://guest:guest@127.0.0.1:5672/<name>`.
    pub fn url(&self) -> String {
        format!("{AMQP_SERVER_URL}/{}", self.name)
    }

    /// `(queue name, <column>)` for every queue of the vhost, as `rabbitmqctl list_queues`
    /// reports them (`type`, `messages_unacknowledged`, …).
    pub fn queue_column(&self, column: &str) -> Vec<(String, String)> {
        rabbitmqctl(&[
            "list_queues",
            "-p",
            &self.name,
            "--no-table-headers",
            "name",
            column,
        ])
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
    }

    /// Deletes the vhost now (as a broker that lost it would), with its queues and
    /// connections.
    pub fn delete(&self) {
        rabbitmqctl(&["delete_vhost", &self.name]);
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        // Already gone after `delete`: nothing to report then.
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "delete_vhost", &self.name])
            .output();
    }
}
