//! The default backend: gVisor's `runsc` driven directly with a generated OCI bundle.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use super::{check_rootfs, read_capped, tail, Backend, Limits, Output, Prepared, SandboxError};
use crate::settings::ToolsSettings;

/// Bytes of stderr kept for error messages.
const STDERR_KEEP: usize = 4096;
/// How long stderr may trail stdout once the reply is in.
const STDERR_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// `runsc` with an OCI bundle per sandbox.
#[derive(Debug, Clone)]
pub struct Runsc {
    runsc: PathBuf,
    rootfs: PathBuf,
    state: PathBuf,
}

impl Runsc {
    /// From settings.
    pub fn new(s: &ToolsSettings) -> Self {
        Runsc {
            runsc: s.runsc_path.clone(),
            rootfs: s.rootfs.clone(),
            state: s.state_dir.clone(),
        }
    }

    fn base(&self) -> Command {
        let mut c = Command::new(&self.runsc);
        c.arg("--root").arg(self.state.join("runsc"));
        c
    }
}

/// The OCI runtime spec of one sandbox (see sandbox/README.md for why each setting is what it is).
pub fn oci_config(rootfs: &Path, id: &str, l: &Limits) -> Value {
    let rlimit = |t: &str, v: u64| json!({"type": t, "hard": v, "soft": v});
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 1000, "gid": 1000, "additionalGids": []},
            "args": ["/usr/bin/python3", "-I", "-S", "/opt/batos/runner.py"],
            "env": ["PATH=/usr/bin", "HOME=/tmp", "LANG=C.UTF-8", "TMPDIR=/tmp", "MALLOC_ARENA_MAX=2"],
            "cwd": "/tmp",
            "capabilities": {"bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []},
            "rlimits": [
                rlimit("RLIMIT_NOFILE", l.nofile),
                rlimit("RLIMIT_NPROC", l.pids),
                rlimit("RLIMIT_FSIZE", l.tmpfs_bytes),
                rlimit("RLIMIT_CORE", 0),
                rlimit("RLIMIT_AS", l.memory_bytes),
            ],
            "noNewPrivileges": true
        },
        "root": {"path": rootfs, "readonly": true},
        "hostname": "tool",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "noexec", format!("size={}", l.tmpfs_bytes), "mode=1777"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "resources": {
                "memory": {"limit": l.memory_bytes},
                "cpu": {"quota": (l.cpus * 100_000.0) as i64, "period": 100_000},
                "pids": {"limit": l.pids}
            },
            "cgroupsPath": format!("/batos/{id}")
        }
    })
}

#[async_trait]
impl Backend for Runsc {
    fn name(&self) -> &'static str {
        "runsc"
    }

    async fn check(&self) -> Result<(), SandboxError> {
        let out = Command::new(&self.runsc).arg("--version").output().await.map_err(|e| {
            SandboxError::Unavailable(format!(
                "cannot run {} ({e}): install gVisor with `apt-get install runsc`, or set tools.backend = \"docker\"",
                self.runsc.display()
            ))
        })?;
        if !out.status.success() {
            return Err(SandboxError::Unavailable(format!(
                "{} --version failed",
                self.runsc.display()
            )));
        }
        check_rootfs(&self.rootfs)
    }

    async fn prepare(&self, limits: &Limits) -> Result<Box<dyn Prepared>, SandboxError> {
        let id = format!("batos-{}", uuid::Uuid::new_v4().simple());
        let bundle = self.state.join("bundles").join(&id);
        tokio::fs::create_dir_all(&bundle).await.map_err(|e| {
            SandboxError::Failed(format!("cannot create bundle {}: {e}", bundle.display()))
        })?;
        let config = serde_json::to_vec_pretty(&oci_config(&self.rootfs, &id, limits))
            .map_err(|e| SandboxError::Failed(e.to_string()))?;
        tokio::fs::write(bundle.join("config.json"), config)
            .await
            .map_err(|e| SandboxError::Failed(format!("cannot write the OCI config: {e}")))?;
        let mut cmd = self.base();
        cmd.arg("--network=none")
            .arg(format!(
                "--panic-log={}",
                bundle.join("panic.log").display()
            ))
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            SandboxError::Unavailable(format!("cannot start {}: {e}", self.runsc.display()))
        })?;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        match (stdin, stdout, stderr) {
            (Some(stdin), Some(stdout), Some(stderr)) => Ok(Box::new(RunscSandbox {
                owner: self.clone(),
                id,
                bundle,
                child: Some(child),
                stdin: Some(stdin),
                stdout,
                stderr: Some(stderr),
            })),
            _ => Err(SandboxError::Failed("runsc started without pipes".into())),
        }
    }
}

/// One started `runsc run`.
pub struct RunscSandbox {
    owner: Runsc,
    id: String,
    bundle: PathBuf,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    stderr: Option<ChildStderr>,
}

impl RunscSandbox {
    async fn kill(&self) {
        let _ = self
            .owner
            .base()
            .args(["kill", &self.id, "KILL"])
            .output()
            .await;
    }
}

impl Drop for RunscSandbox {
    fn drop(&mut self) {
        // Destroy in the background: delete the container, its bundle and any cgroup dirs a failed boot left.
        let (owner, id, bundle, child) = (
            self.owner.clone(),
            self.id.clone(),
            self.bundle.clone(),
            self.child.take(),
        );
        let cleanup = async move {
            if let Some(mut c) = child {
                let _ = c.start_kill();
                let _ = c.wait().await;
            }
            let _ = owner.base().args(["delete", "-force", &id]).output().await;
            let _ = tokio::fs::remove_dir_all(&bundle).await;
            if let Ok(mut rd) = tokio::fs::read_dir("/sys/fs/cgroup").await {
                while let Ok(Some(e)) = rd.next_entry().await {
                    let _ = tokio::fs::remove_dir(e.path().join("batos").join(&id)).await;
                }
            }
        };
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(cleanup);
        }
    }
}

#[async_trait]
impl Prepared for RunscSandbox {
    async fn run(
        mut self: Box<Self>,
        request: &Value,
        limits: &Limits,
    ) -> Result<Output, SandboxError> {
        let mut body =
            serde_json::to_vec(request).map_err(|e| SandboxError::Failed(e.to_string()))?;
        body.push(b'\n');
        // The clock starts with the request: a pre-started sandbox has been waiting, not working.
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let mut stdin = self.stdin.take();
        let write = async move {
            if let Some(s) = stdin.as_mut() {
                s.write_all(&body).await?;
                s.flush().await?;
            }
            // Dropping the pipe is what closes it: the runner reads its request to EOF.
            drop(stdin);
            Ok::<(), std::io::Error>(())
        };
        if let Err(e) = tokio::time::timeout_at(deadline, write)
            .await
            .unwrap_or(Ok(()))
        {
            let err = match self.stderr.take() {
                Some(s) => tail(&read_capped(s, STDERR_KEEP * 4).await.0, STDERR_KEEP),
                None => String::new(),
            };
            return Err(SandboxError::Failed(format!(
                "the sandbox did not take the request ({e}): {err}"
            )));
        }
        let cap = limits.max_output_bytes + STDERR_KEEP;
        // Stderr drains on its own task so a chatty tool never blocks on a full pipe.
        let err_task = self
            .stderr
            .take()
            .map(|e| tokio::spawn(read_capped(e, cap)));
        let mut timed_out = false;
        let (stdout, overflow) =
            match tokio::time::timeout_at(deadline, read_capped(&mut self.stdout, cap)).await {
                Ok(r) => r,
                Err(_) => {
                    timed_out = true;
                    (Vec::new(), false)
                }
            };
        if timed_out || overflow {
            self.kill().await;
        }
        let stderr = match err_task {
            Some(t) => match tokio::time::timeout(STDERR_GRACE, t).await {
                Ok(Ok((e, _))) => e,
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        let exit = match self.child.as_mut() {
            Some(c) => match tokio::time::timeout(limits.timeout, c.wait()).await {
                Ok(Ok(s)) => s.code(),
                _ => None,
            },
            None => None,
        };
        let note = match tokio::fs::read_to_string(self.bundle.join("panic.log")).await {
            Ok(p) if p.contains("resource temporarily unavailable") => {
                Some("the sandbox hit its process limit (fork bomb contained)".to_string())
            }
            Ok(p) if !p.trim().is_empty() => Some(format!(
                "gVisor panicked: {}",
                batos_protocol::truncate(p.trim(), 300)
            )),
            _ => None,
        };
        let (reply, garbage) = if timed_out || overflow {
            (None, None)
        } else {
            Output::parse_stdout(&stdout)
        };
        Ok(Output {
            reply,
            garbage,
            exit,
            stderr_tail: tail(&stderr, STDERR_KEEP),
            timed_out,
            overflow,
            note,
        })
    }
}
