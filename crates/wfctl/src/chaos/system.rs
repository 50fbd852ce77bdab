//! Running the servers' own tools as the user that owns them (`rabbitmq`, `postgres`), and
//! sending signals, without unsafe code: `runuser` when `wfctl chaos` runs as root, the
//! tool itself when it already runs as that user.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;

/// A system user that private servers run as.
#[derive(Clone, Debug)]
pub struct RunAs {
    pub user: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    /// We are root and switch with `runuser`; otherwise we are `user` already.
    switch: bool,
}

/// The real uid of this process, from `/proc/self/status`.
fn my_uid() -> anyhow::Result<u32> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no Uid line in /proc/self/status")
}

impl RunAs {
    /// Looks `user` up in `/etc/passwd`. Fails unless this process is root or `user`.
    pub fn lookup(user: &str) -> anyhow::Result<RunAs> {
        let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
        let fields: Vec<&str> = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&user) && f.len() >= 6)
            .with_context(|| {
                format!("no user `{user}` in /etc/passwd (is the server installed?)")
            })?;
        let uid: u32 = fields[2].parse().context("uid in /etc/passwd")?;
        let gid: u32 = fields[3].parse().context("gid in /etc/passwd")?;
        let me = my_uid()?;
        anyhow::ensure!(
            me == 0 || me == uid,
            "wfctl chaos starts private servers as the `{user}` user: run it as root or as `{user}`"
        );
        Ok(RunAs {
            user: user.to_owned(),
            uid,
            gid,
            home: PathBuf::from(fields[5]),
            switch: me != uid,
        })
    }

    /// A command running `program` as this user, with `HOME` set to the user's home (where
    /// RabbitMQ's CLI finds the Erlang cookie).
    pub fn command(&self, program: &Path) -> tokio::process::Command {
        let mut cmd = if self.switch {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", &self.user, "--"]).arg(program);
            c
        } else {
            tokio::process::Command::new(program)
        };
        cmd.env("HOME", &self.home)
            .current_dir(&self.home)
            .stdin(Stdio::null());
        cmd
    }

    /// [`RunAs::command`] for blocking use (in `Drop`, where nothing can be awaited).
    pub fn blocking_command(&self, program: &Path) -> std::process::Command {
        let mut cmd = if self.switch {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", &self.user, "--"]).arg(program);
            c
        } else {
            std::process::Command::new(program)
        };
        cmd.env("HOME", &self.home)
            .current_dir(&self.home)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `program args` as this user to completion; its stdout, or an error with its
    /// output.
    pub async fn run(&self, program: &Path, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .await
            .with_context(|| format!("running {}", program.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        anyhow::ensure!(
            out.status.success(),
            "{} {} failed ({}): {}{}",
            program.display(),
            args.join(" "),
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(stdout)
    }

    /// Creates `dir` (and its parents) and gives it to this user.
    pub fn make_dir(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::os::unix::fs::chown(dir, Some(self.uid), Some(self.gid))
            .with_context(|| format!("giving {} to {}", dir.display(), self.user))
    }

    /// Writes `text` to `path`, owned by this user.
    pub fn write_file(&self, path: &Path, text: &str) -> anyhow::Result<()> {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .with_context(|| format!("giving {} to {}", path.display(), self.user))
    }
}

/// Sends `signal` (`KILL`, `TERM`) to `pid` with `kill(1)`; whether it was delivered.
pub fn signal(pid: u32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_user_is_unknown() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
        let e = RunAs::lookup("no-such-user-wf").unwrap_err().to_string();
        assert!(e.contains("no user `no-such-user-wf`"), "{e}");
    }
}
