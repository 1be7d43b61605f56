//! `ferry serve` as a child process, shared by the binary's test files.

#![allow(dead_code, reason = "each test file uses part of the harness")]

pub(crate) mod cluster;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ferry_test_support::wait;

/// The binary under test.
pub(crate) const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
/// How long a node may take to print its address.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node may take to exit after a signal.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A `ferry serve` child process, killed if the test ends without stopping it.
pub(crate) struct Node {
    /// The process.
    pub(crate) child: Child,
    /// The address it printed.
    pub(crate) address: SocketAddr,
    lines: mpsc::Receiver<String>,
}

impl Node {
    /// Starts `ferry serve` with `args` and waits for its address line.
    pub(crate) fn start(args: &[&str]) -> Self {
        Self::start_with(args, &[], Stdio::inherit())
    }

    /// Starts `ferry serve` with `args`, the environment variables `env` and its standard error
    /// (its logs) sent to `stderr`, and waits for its address line.
    pub(crate) fn start_with(args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Self {
        let mut child = Command::new(FERRY)
            .arg("serve")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn ferry serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::sync_channel(64);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = Self {
            child,
            address: "0.0.0.0:0".parse().expect("an address"),
            lines,
        };
        let line = node.wait_for_line("listening on ");
        node.address = line["listening on ".len()..]
            .parse()
            .expect("a socket address");
        node
    }

    /// Waits for the next standard-output line starting with `prefix`, and returns it.
    pub(crate) fn wait_for_line(&mut self, prefix: &str) -> String {
        self.wait_for_line_within(prefix, START_TIMEOUT)
            .unwrap_or_else(|error| {
                let _ = self.child.kill();
                panic!("{error}")
            })
    }

    /// Waits up to `timeout` for the next standard-output line starting with `prefix`, and
    /// returns it, or why it did not come (the deadline passed, or the process closed its
    /// output: it exited). The process is left running either way.
    pub(crate) fn wait_for_line_within(
        &mut self,
        prefix: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Ok(line),
                Ok(_) => {}
                Err(error) => {
                    return Err(format!(
                        "ferry serve printed no {prefix:?} line within {timeout:?}: {error}"
                    ));
                }
            }
        }
    }

    /// Returns the node's URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Sends the signal `name` (TERM, INT, KILL) to the process.
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits until the process exits.
    pub(crate) async fn wait_for_exit(&mut self) -> ExitStatus {
        let child = &mut self.child;
        wait::until("ferry serve exits", STOP_TIMEOUT, || {
            let exited = child.try_wait().expect("poll child");
            async move { exited }
        })
        .await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `ferry` with `args` to completion.
pub(crate) fn ferry(args: &[&str]) -> Output {
    Command::new(FERRY).args(args).output().expect("run ferry")
}

/// Returns output bytes as text.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
