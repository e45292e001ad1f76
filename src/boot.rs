//! Daemon start-up: settings, data directory, token, backends, the supervision tree; then wait for a
//! signal or for the root supervisor to give up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use ractor::Actor;

use batos_actors::cluster::{ClusterArgs, ClusterHandle, RemoteBackend};
use batos_actors::codex::inquiry::CodexLink;
use batos_actors::codex::{Codex, CodexArgs, CodexHandle};
use batos_actors::curator::{CuratorArgs, CuratorHandle};
use batos_actors::events::EventHub;
use batos_actors::exam::{ExamArgs, ExamHandle};
use batos_actors::image::{ImageArgs, ImageHandle};
use batos_actors::life::{LifeArgs, LifeHandle};
use batos_actors::llm::{self, SamplingTable};
use batos_actors::memory::{MemoryArgs, MemoryHandle};
use batos_actors::motivator::{MotivatorArgs, MotivatorHandle};
use batos_actors::orchestrator::{CheckpointStore, Cognition, OrchestratorHandle};
use batos_actors::personas::Personas;
use batos_actors::ports::{CuratorHook, ExamGate, ExamTasks, GoalRunner, LifeTasks, TrainerHook};
use batos_actors::settings::LoadedSettings;
use batos_actors::supervisor::{Strategy, Supervisor, SupervisorArgs, SupervisorHandle};
use batos_actors::tools::forge::{ForgeArgs, ForgeHandle};
use batos_actors::tools::sandbox::pool::{PoolArgs, RemoteSandbox};
use batos_actors::tools::store::ToolStore;
use batos_actors::tools::ToolRegistry;
use batos_actors::trainer::{TrainerArgs, TrainerCtx, TrainerHandle};

use crate::gateway::{BackendInfo, Handles, Organs};
use crate::logging::LogHandle;

use crate::tree::supervisor_config;
pub use crate::tree::ROOT_NAME;

/// Why the daemon could not start, split by exit code.
#[derive(Debug)]
pub enum BootError {
    /// Bad configuration (exit 2).
    Config(anyhow::Error),
    /// Anything else (exit 1).
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for BootError {
    fn from(e: anyhow::Error) -> Self {
        BootError::Runtime(e)
    }
}

/// Takes `<data_dir>/batos.lock` for the daemon's life (the kernel releases it when the process dies, even on
/// SIGKILL): two daemons sharing a data folder would overwrite each other's checkpoints and memory table.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("batos.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another batos daemon is running on data_dir {} (it holds {}); stop it or point data_dir elsewhere",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Reads or creates `<data_dir>/gateway.token` (mode 0600).
pub fn ensure_token(data_dir: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join("gateway.token");
    if path.exists() {
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let token = token.trim().to_string();
        if token.is_empty() {
            anyhow::bail!(
                "{} is empty; delete it to have a new token created",
                path.display()
            );
        }
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        if mode != 0o600 {
            tracing::warn!(event = "token.permissions_fixed", path = %path.display(), mode = format!("{mode:o}"), "token file was not 0600; fixed");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        return Ok(token);
    }
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    batos_actors::fsutil::atomic_write_mode(&path, token.as_bytes(), Some(0o600))
        .with_context(|| format!("cannot create {}", path.display()))?;
    tracing::info!(event = "token.created", path = %path.display(), "gateway token created");
    Ok(token)
}

/// Raises the soft limit of open files to the hard limit: every peer, LanceDB fragment and checkpoint is a
/// descriptor, and the common soft default (1024) is reached by a few hundred idle peers.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    // `None` is "unlimited"; the kernel refuses an unlimited soft limit for open files, so only a finite
    // hard limit is copied.
    if let (Some(current), Some(max)) = (limit.current, limit.maximum) {
        if current >= max {
            return;
        }
        limit.current = Some(max);
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => {
                tracing::info!(event = "daemon.nofile_raised", from = ?before, to = ?limit.maximum, "open-file limit raised")
            }
            Err(e) => {
                tracing::warn!(event = "daemon.nofile_unchanged", limit = ?before, error = %e, "open-file limit not raised")
            }
        }
    }
}

/// Runs the daemon until a signal (exit 0) or until the root supervisor gives up (exit 1).
pub async fn run(loaded: LoadedSettings, log: LogHandle) -> Result<(), BootError> {
    let settings = loaded.settings.clone();
    let data_dir: PathBuf = settings.data_dir.clone();
    // Names renamed in the settings file are read for one release; each is one warning at start.
    if let Ok(text) = std::fs::read_to_string(&loaded.path) {
        for note in batos_actors::settings::deprecations(&text) {
            tracing::warn!(event = "settings.deprecated", path = %loaded.path.display(), note = %note, "the settings file uses an old name");
        }
    }
    // Stored conversations, the token, checkpoints and sockets are the owner's alone: new files are 0600 and
    // directories 0700 whoever creates them (LanceDB included), and data_dir itself is closed to others.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))
        .map_err(BootError::Config)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make data_dir {} private", data_dir.display()))
            .map_err(BootError::Config)?;
    }
    raise_open_file_limit();
    for (key, ep) in [
        ("command_endpoint", &settings.gateway.command_endpoint),
        ("event_endpoint", &settings.gateway.event_endpoint),
    ] {
        if let Ok(addr) = batos_actors::settings::tcp_endpoint(ep) {
            if !addr.ip().is_loopback() {
                tracing::warn!(event = "gateway.public_bind", key, endpoint = %ep, "the gateway listens beyond this machine (CURVE required: only clients with allowed keys get in)");
            }
        }
    }
    let _data_lock = lock_data_dir(&data_dir).map_err(BootError::Config)?;
    for dir in [
        loaded.dir().to_path_buf(),
        data_dir.clone(),
        data_dir.join("checkpoints"),
    ] {
        let n = batos_actors::fsutil::clean_stale_temps(&dir);
        if n > 0 {
            tracing::info!(event = "fs.stale_temps_removed", dir = %dir.display(), count = n, "removed temp files left by an interrupted write");
        }
    }
    // Before any organ reads its files: restore what the folder lost from the newest image that verifies,
    // and reserve this life's event numbers (the hub below starts after them).
    let booted =
        batos_actors::image::boot(&data_dir, settings.image.seq_reserve).map_err(|e| match e {
            e @ batos_actors::image::ImageError::Newer { .. } => {
                BootError::Config(anyhow::anyhow!(e))
            }
            e => BootError::Runtime(anyhow::anyhow!(
                "the living image could not be read at start: {e}"
            )),
        })?;
    tracing::info!(event = "image.booted", generation = booted.newest.as_ref().map(|i| i.generation), restored = ?booted.restored, set_aside = booted.set_aside.len(), first_seq = booted.last_seq + 1, "living image checked");
    let token = ensure_token(&data_dir)?;
    let codex = Codex::load(&settings.codex_path).map_err(|e| {
        BootError::Config(anyhow::anyhow!(
            "{e} (codex_path in {})",
            loaded.path.display()
        ))
    })?;
    let hub = EventHub::bounded_after(
        settings.gateway.event_queue_capacity,
        Some(settings.gateway.view_keep_finished_tasks),
        booted.last_seq,
    );
    hub.set_log_field_chars(settings.log.event_field_chars);
    let selection = llm::select::select(&settings.llm)
        .await
        .map_err(|e| BootError::Config(anyhow::anyhow!(e)))?;
    tracing::info!(event = "llm.backend_selected", backend = %selection.backend.kind(), location = %selection.backend.location(), reason = %selection.reason, "LLM backend selected");
    let backend_info = BackendInfo {
        kind: selection.backend.kind().to_string(),
        location: selection.backend.location(),
        reason: selection.reason.clone(),
    };
    let models = settings
        .personas
        .iter()
        .map(|(k, v)| (k.clone(), v.model.clone()))
        .collect();
    let live = Arc::new(ArcSwap::from_pointee(settings.clone()));
    let handles = Handles {
        orchestrator: OrchestratorHandle::new(live.clone()),
        codex: CodexHandle::new(live.clone()),
        memory: MemoryHandle::new(live.clone()),
        forge: ForgeHandle::new(live.clone()),
        curator: CuratorHandle::new(live.clone()),
        trainer: TrainerHandle::new(live.clone()),
        motivator: MotivatorHandle::new(live.clone()),
        image: ImageHandle::new(live.clone()),
        exam: ExamHandle::new(live.clone()),
        life: LifeHandle::new(live.clone()),
        cluster: handles_cluster(&settings, &live),
        root: SupervisorHandle::named("root supervisor", ROOT_NAME),
    };
    let personas = Personas::new(
        &codex,
        &models,
        selection.backend.clone(),
        SamplingTable::from_settings(&settings),
        hub.clone(),
        // The codex organ owns settings.toml: swaps are recorded through it, never written by personas.
        Some(Arc::new(handles.codex.clone())),
        Duration::from_millis(settings.llm.request_timeout_ms),
    )
    .map_err(|e| BootError::Config(anyhow::anyhow!(e)))?;
    // Each persona's own route (issue 30): a worker node through the cluster organ when `[cluster]` lists it,
    // else its own Ollama host when `[personas.<NAME>] ollama_url` names one, else the daemon's backend.
    let mut routes: HashMap<String, Arc<dyn llm::LlmBackend>> = HashMap::new();
    let mut hosts = HashMap::new();
    for (name, p) in &settings.personas {
        if let Some(url) = &p.ollama_url {
            let timeout = Duration::from_millis(settings.llm.request_timeout_ms);
            let host = llm::ollama::OllamaBackend::new(url, timeout).map_err(|e| {
                BootError::Config(anyhow::anyhow!("personas.{name}.ollama_url: {e}"))
            })?;
            tracing::info!(event = "persona.host", persona = %name, url = %url, "persona thinks on its own Ollama host");
            let host = Arc::new(host);
            routes.insert(name.clone(), host.clone());
            hosts.insert(name.clone(), host);
        }
    }
    let cluster_args = match &handles.cluster {
        Some(cluster) => {
            let path = settings.cluster.cookie_path(&data_dir);
            let cookie = batos_actors::cluster::ensure_cookie(&path)
                .map_err(|e| BootError::Config(anyhow::anyhow!(e)))?;
            let backend: Arc<dyn llm::LlmBackend> = Arc::new(RemoteBackend::new(
                cluster.clone(),
                selection.backend.clone(),
            ));
            let remote: Vec<String> = batos_actors::PERSONAS
                .iter()
                .filter(|p| settings.cluster.is_remote(p))
                .map(|p| p.to_string())
                .collect();
            tracing::info!(event = "cluster.routing", personas = ?remote, when_no_node = ?settings.cluster.when_no_node, "persona model calls go to worker nodes");
            for p in remote {
                routes.insert(p, backend.clone());
            }
            Some(ClusterArgs {
                settings: live.clone(),
                hub: hub.clone(),
                local: selection.backend.clone(),
                cookie,
            })
        }
        None => None,
    };
    personas.route(routes);
    personas
        .keep_overrides(&data_dir.join("personas/overrides.json"))
        .map_err(|e| BootError::Config(anyhow::anyhow!(e)))?;
    let tools = ToolRegistry::with_builtins(hub.clone());
    let store = CheckpointStore::open(&data_dir.join("checkpoints"))
        .context("cannot open the checkpoint directory")?;
    let cog = Arc::new(Cognition {
        personas: personas.clone(),
        tools: tools.clone(),
        hub: hub.clone(),
        settings: live.clone(),
        store,
        memory: Some(Arc::new(handles.memory.clone())),
        forge: Some(Arc::new(handles.forge.clone())),
        inquiry: Some(Arc::new(CodexLink {
            personas: personas.clone(),
            proposer: settings.codex.proposer.clone(),
            codex: handles.codex.clone(),
        })),
        curator: settings
            .curator
            .enabled
            .then(|| Arc::new(handles.curator.clone()) as Arc<dyn CuratorHook>),
    });
    let organs = Arc::new(Organs {
        settings: live.clone(),
        hub: hub.clone(),
        personas: personas.clone(),
        tools: tools.clone(),
        token,
        instance: uuid::Uuid::new_v4().simple().to_string(),
        started: Instant::now(),
        backend: backend_info,
        dedupe: crate::gateway::dedupe::Dedupe::open(
            &data_dir.join("dedupe.journal"),
            Duration::from_millis(settings.gateway.dedupe_window_ms),
            settings.gateway.dedupe_capacity,
            settings.gateway.dedupe_max_bytes,
        )
        .with_context(|| {
            format!(
                "cannot open the dedupe journal {}",
                data_dir.join("dedupe.journal").display()
            )
        })?,
        handles,
    });

    let codex_args = CodexArgs {
        path: settings.codex_path.clone(),
        settings_path: Some(loaded.path.clone()),
        store: data_dir.join("amendments.json"),
        live: live.clone(),
        personas: Some(personas.clone()),
        hub: hub.clone(),
        log_level: Some(Arc::new(move |level: &str| log.set_level(level))),
        tasks: Arc::new(OrchestratorHandle::new(live.clone())),
    };
    let pool_args = PoolArgs {
        settings: settings.tools.clone(),
        // Sandbox runs go to worker nodes serving `tools` first (issue 30), on a home that says so.
        remote: organs
            .handles
            .cluster
            .clone()
            .filter(|_| settings.cluster.remote_tools)
            .map(|c| Arc::new(c) as Arc<dyn RemoteSandbox>),
    };
    let forge_args = ForgeArgs {
        registry: tools.clone(),
        personas: personas.clone(),
        store: ToolStore::new(&data_dir.join("tools")),
        settings: live.clone(),
        hub: hub.clone(),
    };
    let memory_args = MemoryArgs {
        dir: data_dir.join("memory"),
        settings: live.clone(),
        backend: selection.backend.clone(),
        personas: personas.clone(),
        hub: hub.clone(),
    };
    let trainer_args = settings.trainer.enabled.then(|| TrainerArgs {
        ctx: TrainerCtx {
            settings: live.clone(),
            hub: hub.clone(),
            personas: personas.clone(),
            curator: organs.handles.curator.clone(),
            engine: selection.embedded.clone(),
            ollama: selection.ollama.clone(),
            hosts: hosts.clone(),
            dir: data_dir.join("forge"),
            adapters: data_dir.join("adapters"),
            exam: Some(Arc::new(organs.handles.exam.clone()) as Arc<dyn ExamGate>),
            // Training runs go to worker nodes serving `train` first (issue 30), on a home that says so.
            remote: organs
                .handles
                .cluster
                .clone()
                .filter(|_| settings.cluster.remote_training)
                .map(|c| Arc::new(c) as Arc<dyn batos_actors::trainer::RemoteTrainer>),
        },
    });
    let curator_args = settings.curator.enabled.then(|| CuratorArgs {
        dir: data_dir.join("curator"),
        settings: live.clone(),
        personas: personas.clone(),
        hub: hub.clone(),
        trainer: settings
            .trainer
            .enabled
            .then(|| Arc::new(organs.handles.trainer.clone()) as Arc<dyn TrainerHook>),
    });
    let motivator_args = settings.motivator.enabled.then(|| MotivatorArgs {
        dir: data_dir.join("motivator"),
        settings: live.clone(),
        hub: hub.clone(),
        personas: personas.clone(),
        runner: Arc::new(organs.handles.orchestrator.clone()) as Arc<dyn GoalRunner>,
    });
    let exam_args = ExamArgs {
        dir: data_dir.join("exam"),
        settings: live.clone(),
        hub: hub.clone(),
        personas: personas.clone(),
        tools: tools.clone(),
        backend: selection.backend.clone(),
        tasks: Arc::new(organs.handles.orchestrator.clone()) as Arc<dyn ExamTasks>,
        memory: Some(organs.handles.memory.clone()),
        curator: settings
            .curator
            .enabled
            .then(|| organs.handles.curator.clone()),
    };
    let life_args = LifeArgs {
        dir: data_dir.join("life"),
        settings_path: loaded.path.clone(),
        settings: live.clone(),
        hub: hub.clone(),
        tasks: Arc::new(organs.handles.orchestrator.clone()) as Arc<dyn LifeTasks>,
        exam: organs.handles.exam.clone(),
        trainer: settings
            .trainer
            .enabled
            .then(|| organs.handles.trainer.clone()),
        codex: organs.handles.codex.clone(),
        tools: tools.clone(),
        tool_store: ToolStore::new(&data_dir.join("tools")),
    };
    let image_args = ImageArgs {
        data_dir: data_dir.clone(),
        settings_path: loaded.path.clone(),
        settings: live.clone(),
        hub: hub.clone(),
        personas: personas.clone(),
        memory: organs.handles.memory.clone(),
        booted,
    };
    let children = crate::tree::children(crate::tree::Organs {
        settings: &settings,
        hub: &hub,
        cluster: cluster_args,
        codex: codex_args,
        personas: personas.clone(),
        sandbox: pool_args,
        forge: forge_args,
        memory: memory_args,
        curator: curator_args,
        trainer: trainer_args,
        motivator: motivator_args,
        exam: exam_args,
        life: life_args,
        image: image_args,
        cognition: cog,
        gateway: organs,
    });
    let (root, handle) = Supervisor::spawn(
        Some(ROOT_NAME.into()),
        Supervisor,
        SupervisorArgs {
            config: supervisor_config(&settings, &hub, "root", ROOT_NAME, Strategy::OneForOne),
            children,
        },
    )
    .await
    .map_err(|e| BootError::Runtime(anyhow::anyhow!("the supervision tree did not start: {e}")))?;
    tracing::info!(event = "daemon.started", config = %loaded.path.display(), data_dir = %data_dir.display(), "batos is running");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install SIGTERM handler")?;
    tokio::select! {
        _ = handle => {
            let (_, view) = hub.snapshot();
            let why = view.actors.get("root").and_then(|a| a.last_error.clone()).unwrap_or_else(|| "the root supervisor stopped".into());
            tracing::error!(event = "daemon.escalated", reason = %why, "the root supervisor gave up; batos exits");
            return Err(BootError::Runtime(anyhow::anyhow!("the root supervisor gave up: {why}")));
        }
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!(event = "daemon.stopping", "shutting down");
    let grace = Duration::from_millis(settings.supervision.shutdown_timeout_ms * 4);
    if root
        .stop_and_wait(Some("shutdown".into()), Some(grace))
        .await
        .is_err()
    {
        tracing::warn!(event = "daemon.stop_timeout", "tree did not stop in time");
    }
    tracing::info!(event = "daemon.stopped", "batos stopped");
    Ok(())
}

/// The cluster organ's handle when this daemon is a home node (`[cluster] enabled`).
fn handles_cluster(
    settings: &batos_actors::settings::Settings,
    live: &Arc<ArcSwap<batos_actors::settings::Settings>>,
) -> Option<ClusterHandle> {
    settings
        .cluster
        .enabled
        .then(|| ClusterHandle::new(live.clone()))
}
