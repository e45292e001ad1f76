//! The second backend: Docker Engine with `runtime=runsc`, through bollard. Same policy as the runsc
//! backend; the image is made from the same root filesystem with `docker import` (sandbox/build-docker-image.sh).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::OnceLock;

use async_trait::async_trait;
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::models::{ContainerCreateBody, HostConfig, ResourcesUlimits};
use bollard::query_parameters::{
    AttachContainerOptions, InspectContainerOptions, KillContainerOptions, RemoveContainerOptions,
    StartContainerOptions,
};
use bollard::Docker;
use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{tail, Backend, Limits, Output, Prepared, SandboxError};
use crate::settings::ToolsSettings;

const STDERR_KEEP: usize = 4096;

/// Docker + gVisor.
pub struct DockerSandbox {
    image: String,
    allow_runc: bool,
    runtime: OnceLock<String>,
}

impl DockerSandbox {
    /// From settings.
    pub fn new(s: &ToolsSettings) -> Self {
        Self {
            image: s.docker_image.clone(),
            allow_runc: s.allow_runc,
            runtime: OnceLock::new(),
        }
    }
}

fn connect() -> Result<Docker, SandboxError> {
    Docker::connect_with_local_defaults().map_err(|e| {
        SandboxError::Unavailable(format!(
            "no Docker daemon ({e}): install docker.io and run sandbox/start-dockerd.sh, or set tools.backend = \"runsc\""
        ))
    })
}

fn ulimit(name: &str, v: u64) -> ResourcesUlimits {
    ResourcesUlimits {
        name: Some(name.into()),
        soft: Some(v as i64),
        hard: Some(v as i64),
    }
}

#[async_trait]
impl Backend for DockerSandbox {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn check(&self) -> Result<(), SandboxError> {
        let docker = connect()?;
        docker.ping().await.map_err(|e| {
            SandboxError::Unavailable(format!(
                "the Docker daemon does not answer ({e}): run sandbox/start-dockerd.sh"
            ))
        })?;
        let info = docker
            .info()
            .await
            .map_err(|e| SandboxError::Unavailable(format!("docker info failed: {e}")))?;
        let has_runsc = info
            .runtimes
            .as_ref()
            .is_some_and(|m| m.contains_key("runsc"));
        let runtime = if has_runsc {
            "runsc"
        } else if self.allow_runc {
            tracing::warn!(event = "sandbox.weak_isolation", "runsc is not registered with Docker; tools.allow_runc = true, so tools run under runc");
            "runc"
        } else {
            return Err(SandboxError::Unavailable(
                "gVisor (runsc) is not a registered Docker runtime: run sandbox/start-dockerd.sh (it registers it), or set tools.allow_runc = true to accept weaker isolation".into(),
            ));
        };
        let _ = self.runtime.set(runtime.to_string());
        docker.inspect_image(&self.image).await.map_err(|_| {
            SandboxError::Unavailable(format!(
                "the sandbox image {} is missing: run sandbox/build-docker-image.sh",
                self.image
            ))
        })?;
        Ok(())
    }

    async fn prepare(&self, l: &Limits) -> Result<Box<dyn Prepared>, SandboxError> {
        let docker = connect()?;
        let runtime = self
            .runtime
            .get()
            .cloned()
            .unwrap_or_else(|| "runsc".into());
        let host = HostConfig {
            runtime: Some(runtime),
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            memory: Some(l.memory_bytes as i64),
            memory_swap: Some(l.memory_bytes as i64),
            nano_cpus: Some((l.cpus * 1e9) as i64),
            pids_limit: Some(l.pids as i64),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                format!("rw,nosuid,nodev,noexec,size={},mode=1777", l.tmpfs_bytes),
            )])),
            ulimits: Some(vec![
                ulimit("nofile", l.nofile),
                ulimit("nproc", l.pids),
                ulimit("fsize", l.tmpfs_bytes),
                ulimit("core", 0),
                ulimit("as", l.memory_bytes),
            ]),
            auto_remove: Some(false),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(vec![
                "/usr/bin/python3".into(),
                "-I".into(),
                "-S".into(),
                "/opt/batos/runner.py".into(),
            ]),
            user: Some("1000:1000".into()),
            working_dir: Some("/tmp".into()),
            env: Some(vec![
                "PATH=/usr/bin".into(),
                "HOME=/tmp".into(),
                "LANG=C.UTF-8".into(),
                "MALLOC_ARENA_MAX=2".into(),
            ]),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            stdin_once: Some(true),
            tty: Some(false),
            network_disabled: Some(true),
            host_config: Some(host),
            ..Default::default()
        };
        let id = docker
            .create_container(None, body)
            .await
            .map_err(|e| SandboxError::Failed(format!("cannot create the sandbox container: {e}")))?
            .id;
        let guard = Remover {
            docker: docker.clone(),
            id: id.clone(),
        };
        let AttachContainerResults { output, input } = docker
            .attach_container(
                &id,
                Some(AttachContainerOptions {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    stream: true,
                    logs: false,
                    detach_keys: None,
                }),
            )
            .await
            .map_err(|e| SandboxError::Failed(format!("cannot attach to the sandbox: {e}")))?;
        docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .map_err(|e| SandboxError::Failed(format!("cannot start the sandbox: {e}")))?;
        Ok(Box::new(DockerPrepared {
            guard,
            output,
            input,
        }))
    }
}

/// Removes the container when the sandbox is done with, whatever happened.
struct Remover {
    docker: Docker,
    id: String,
}

impl Drop for Remover {
    fn drop(&mut self) {
        let (docker, id) = (self.docker.clone(), self.id.clone());
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = docker
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptions {
                            force: true,
                            v: true,
                            link: false,
                        }),
                    )
                    .await;
            });
        }
    }
}

type OutputStream = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

struct DockerPrepared {
    guard: Remover,
    output: OutputStream,
    input: Pin<Box<dyn AsyncWrite + Send>>,
}

#[async_trait]
impl Prepared for DockerPrepared {
    async fn run(mut self: Box<Self>, request: &Value, l: &Limits) -> Result<Output, SandboxError> {
        let mut body =
            serde_json::to_vec(request).map_err(|e| SandboxError::Failed(e.to_string()))?;
        body.push(b'\n');
        let deadline = tokio::time::Instant::now() + l.timeout;
        let mut input = std::mem::replace(&mut self.input, Box::pin(tokio::io::sink()));
        tokio::spawn(async move {
            let _ = input.write_all(&body).await;
            let _ = input.flush().await;
            let _ = input.shutdown().await;
        });
        let cap = l.max_output_bytes + STDERR_KEEP;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (mut timed_out, mut overflow) = (false, false);
        loop {
            match tokio::time::timeout_at(deadline, self.output.next()).await {
                Err(_) => {
                    timed_out = true;
                    break;
                }
                Ok(None) | Ok(Some(Err(_))) => break,
                Ok(Some(Ok(LogOutput::StdOut { message }))) => out.extend_from_slice(&message),
                Ok(Some(Ok(LogOutput::StdErr { message }))) => {
                    if err.len() < cap {
                        err.extend_from_slice(&message);
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
            if out.len() > cap {
                overflow = true;
                break;
            }
        }
        let docker = self.guard.docker.clone();
        let id = self.guard.id.clone();
        if timed_out || overflow {
            let _ = docker
                .kill_container(
                    &id,
                    Some(KillContainerOptions {
                        signal: "SIGKILL".into(),
                    }),
                )
                .await;
        }
        let state = docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|i| i.state);
        let exit = state.as_ref().and_then(|s| s.exit_code).map(|c| c as i32);
        let note = state
            .as_ref()
            .and_then(|s| s.oom_killed)
            .filter(|o| *o)
            .map(|_| "the sandbox was killed: memory limit exceeded".to_string());
        let (reply, garbage) = if timed_out || overflow {
            (None, None)
        } else {
            Output::parse_stdout(&out)
        };
        Ok(Output {
            reply,
            garbage,
            exit,
            stderr_tail: tail(&err, STDERR_KEEP),
            timed_out,
            overflow,
            note,
        })
    }
}
