//! The tool sandbox: untrusted, LLM-written Python runs only inside gVisor.
//!
//! Two backends behind one trait — `runsc` driven directly with an OCI bundle (default; no daemon needed)
//! and Docker with `runtime=runsc` through bollard — and a pool actor that keeps sandboxes pre-started
//! (Python already loaded, waiting on stdin) so a call pays only for its own work. Every sandbox serves
//! exactly one call and is then destroyed. Policy for both: no network, read-only root, small tmpfs,
//! memory/CPU/pids limits, rlimits, no capabilities, no-new-privileges, uid/gid 1000, wall-clock timeout,
//! capped output.

pub mod docker;
pub mod pool;
pub mod runsc;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sha2::Digest;

use crate::settings::ToolsSettings;

/// The in-sandbox runner this build speaks to (the rootfs must carry the same file).
pub const RUNNER: &str = include_str!("../../../../sandbox/runner.py");

/// Why a sandbox could not run a request.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SandboxError {
    /// The backend is not installed or not usable here; the message says what to install or run.
    #[error("sandbox unavailable: {0}")]
    Unavailable(String),
    /// Starting or talking to the sandbox failed.
    #[error("sandbox failure: {0}")]
    Failed(String),
    /// The sandbox pool did not answer.
    #[error(transparent)]
    Unreachable(#[from] crate::ask::AskError),
}

/// Limits applied to one run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Memory (bytes) for the whole sandbox, and the address-space rlimit of the process.
    pub memory_bytes: u64,
    /// CPU share (1.0 = one core).
    pub cpus: f64,
    /// Host pids limit of the sandbox.
    pub pids: u64,
    /// `/tmp` tmpfs size.
    pub tmpfs_bytes: u64,
    /// Open files.
    pub nofile: u64,
    /// Wall-clock limit from the moment the request is written.
    pub timeout: Duration,
    /// Largest stdout accepted; more means the tool flooded its output.
    pub max_output_bytes: usize,
}

impl Limits {
    /// Limits from `[tools]`, with MiB converted to bytes.
    pub fn from_settings(s: &ToolsSettings) -> Self {
        Limits {
            memory_bytes: s.memory_mb * 1024 * 1024,
            cpus: s.cpus,
            pids: s.pids_limit,
            tmpfs_bytes: s.tmpfs_mb * 1024 * 1024,
            nofile: s.nofile,
            timeout: Duration::from_millis(s.timeout_ms),
            max_output_bytes: s.max_output_bytes,
        }
    }
}

/// What came back from one run. It crosses the node link when a worker node ran it (`[cluster]`, role
/// `tools`), read there with serde like every reply from a worker.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// The runner's reply: the last non-empty stdout line, parsed.
    pub reply: Option<Value>,
    /// The last stdout line when it was not JSON (the tool corrupted its result).
    pub garbage: Option<String>,
    /// Exit status of the sandboxed process, when known.
    pub exit: Option<i32>,
    /// The end of stderr.
    pub stderr_tail: String,
    /// The wall-clock limit was hit and the sandbox killed.
    pub timed_out: bool,
    /// Stdout exceeded the cap and the sandbox was killed.
    pub overflow: bool,
    /// Why the sandbox itself died, when it says (e.g. a gVisor panic log).
    pub note: Option<String>,
}

impl Output {
    /// Splits captured stdout into the reply (last non-empty line).
    pub fn parse_stdout(stdout: &[u8]) -> (Option<Value>, Option<String>) {
        let text = String::from_utf8_lossy(stdout);
        let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
            return (None, None);
        };
        match serde_json::from_str::<Value>(last) {
            Ok(v) if v.is_object() => (Some(v), None),
            _ => (None, Some(batos_protocol::truncate(last, 200).to_string())),
        }
    }
}

/// A sandbox started and waiting for its one request.
#[async_trait]
pub trait Prepared: Send {
    /// Sends the request, collects the reply, and destroys the sandbox.
    async fn run(self: Box<Self>, request: &Value, limits: &Limits)
        -> Result<Output, SandboxError>;
}

/// A way to make sandboxes.
#[async_trait]
pub trait Backend: Send + Sync {
    /// `runsc` or `docker`.
    fn name(&self) -> &'static str;
    /// Whether this backend works here; the error says what to install.
    async fn check(&self) -> Result<(), SandboxError>;
    /// Starts a sandbox with the runner waiting on stdin.
    async fn prepare(&self, limits: &Limits) -> Result<Box<dyn Prepared>, SandboxError>;
}

/// Checks the rootfs was built by `sandbox/build-rootfs.sh` with the runner this build speaks to.
pub fn check_rootfs(rootfs: &Path) -> Result<(), SandboxError> {
    let fix = format!(
        "run `sandbox/build-rootfs.sh {}` (scripts/setup.sh does it)",
        rootfs.display()
    );
    let stamp = std::fs::read_to_string(rootfs.join(".batos-stamp")).map_err(|_| {
        SandboxError::Unavailable(format!(
            "no sandbox root filesystem at {}: {fix}",
            rootfs.display()
        ))
    })?;
    let want = format!("{:x}", sha2::Sha256::digest(RUNNER.as_bytes()));
    let have = stamp
        .lines()
        .find_map(|l| l.strip_prefix("runner_sha256="))
        .unwrap_or_default()
        .trim()
        .to_string();
    if have != want {
        return Err(SandboxError::Unavailable(format!(
            "the sandbox root filesystem at {} carries a different runner than this build: {fix}",
            rootfs.display()
        )));
    }
    Ok(())
}

/// The sandbox backend the settings ask for.
pub fn backend(s: &ToolsSettings) -> std::sync::Arc<dyn Backend> {
    match s.backend {
        crate::settings::SandboxChoice::Runsc => std::sync::Arc::new(runsc::Runsc::new(s)),
        crate::settings::SandboxChoice::Docker => {
            std::sync::Arc::new(docker::DockerSandbox::new(s))
        }
    }
}

/// Reads at most `cap` bytes from `r`; returns the bytes and whether there was more.
pub(crate) async fn read_capped<R: tokio::io::AsyncRead + Unpin>(
    mut r: R,
    cap: usize,
) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return (buf, false),
            Ok(n) => {
                if buf.len() + n > cap {
                    let room = cap - buf.len();
                    buf.extend_from_slice(&chunk[..room]);
                    return (buf, true);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// The last `n` bytes of a text, on a char boundary.
pub(crate) fn tail(bytes: &[u8], n: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() <= n {
        return s.into_owned();
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_is_the_last_json_line() {
        let (r, g) = Output::parse_stdout(b"junk\n{\"value\": 3}\n\n");
        assert_eq!(r, Some(serde_json::json!({"value": 3})));
        assert!(g.is_none());
        let (r, g) = Output::parse_stdout(b"{\"value\": 3}\nnot json");
        assert!(r.is_none());
        assert_eq!(g.as_deref(), Some("not json"));
        assert_eq!(Output::parse_stdout(b""), (None, None));
    }

    #[test]
    fn tails_cut_on_char_boundaries() {
        assert_eq!(tail("héllo".as_bytes(), 4), "llo");
        assert_eq!(tail(b"ab", 10), "ab");
    }
}
