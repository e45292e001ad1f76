//! The personas organ: four Proto actors (ALFRED, BABS, BRICK, ROBIN) under their own supervisor, the
//! persona registry that tasks route through, and the cognitive atomic swap.
//!
//! The registry is an `ArcSwap` of persona handles. A task takes one snapshot when it starts and talks only to
//! those handles for its whole life. A swap starts a new Proto actor with the new model and installs it with
//! one atomic store; the old actor drains: its handle carries a [`RetireGuard`] that stops the actor when the
//! last snapshot holding it is dropped.

mod handle;
mod proto;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use ractor::{Actor, ActorCell};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::ports::think::{ThinkRequest, Thought};
pub use handle::{PersonaError, PersonaHandle, RetireGuard};
pub use proto::{Editable, Proto, ProtoArgs, ProtoMsg};

use crate::events::{Event, EventHub};
use crate::llm::{LlmBackend, LlmError, Sampling, SamplingTable};
use crate::ports::{ModelRecorder, PortError, Think};
use crate::principles::{Codex, PersonaCodex};
use crate::supervisor::{ChildSpec, Restart, SupervisorError, SupervisorHandle};

/// Global name of the personas supervisor.
pub const SUPERVISOR_NAME: &str = "personas";

/// Everything a persona actor is started from; kept outside the actor so restarts and swaps reuse it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PersonaConfig {
    /// `ALFRED`, `BABS`, `BRICK` or `ROBIN`; also the child id under `root/personas`.
    pub name: String,
    /// Model the next (re)start uses: set by a swap before the new actor starts, restored if it fails.
    pub model: String,
    /// Its codex entry (role, system prompt, principles); a codex reload replaces it.
    pub codex: PersonaCodex,
    /// Cognitive-surgery state.
    pub editable: Editable,
}

/// Name → handle, as one immutable snapshot.
pub type PersonaMap = HashMap<String, Arc<PersonaHandle>>;

/// The shared persona machinery: registry, configs, backend.
pub struct Personas {
    registry: ArcSwap<PersonaMap>,
    configs: Mutex<BTreeMap<String, PersonaConfig>>,
    generation: AtomicU64,
    backend: Arc<dyn LlmBackend>,
    /// Personas that think through a backend of their own (set once at boot): a worker node's when `[cluster]`
    /// routes them, or their own Ollama host (`[personas.<NAME>] ollama_url`; README, "Beyond one machine").
    routes: std::sync::OnceLock<HashMap<String, Arc<dyn LlmBackend>>>,
    sampling: Mutex<SamplingTable>,
    hub: Arc<EventHub>,
    recorder: Option<Arc<dyn ModelRecorder>>,
    call_timeout: Duration,
    /// Serialises swaps so two swaps of one persona cannot interleave their steps.
    swap_lock: tokio::sync::Mutex<()>,
    /// Where `update_persona`'s overrides are kept across daemon restarts (and so in the living image);
    /// `None`: in memory only (tests, benches).
    overrides: Mutex<Option<std::path::PathBuf>>,
}

impl std::fmt::Debug for Personas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Personas")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Personas {
    /// Builds the organ's shared state from the codex and the model map of settings.toml.
    pub fn new(
        codex: &Codex,
        models: &BTreeMap<String, String>,
        backend: Arc<dyn LlmBackend>,
        sampling: SamplingTable,
        hub: Arc<EventHub>,
        recorder: Option<Arc<dyn ModelRecorder>>,
        call_timeout: Duration,
    ) -> Result<Arc<Self>, PersonaError> {
        let mut configs = BTreeMap::new();
        for name in crate::PERSONAS {
            let codex = codex
                .persona(name)
                .cloned()
                .ok_or_else(|| PersonaError::Invalid(format!("codex has no entry for {name}")))?;
            let model = models.get(*name).cloned().ok_or_else(|| {
                PersonaError::Invalid(format!("settings have no model for {name}"))
            })?;
            configs.insert(
                name.to_string(),
                PersonaConfig {
                    name: name.to_string(),
                    model,
                    codex,
                    editable: Editable::default(),
                },
            );
        }
        Ok(Arc::new(Self {
            registry: ArcSwap::from_pointee(HashMap::new()),
            configs: Mutex::new(configs),
            generation: AtomicU64::new(0),
            backend,
            routes: std::sync::OnceLock::new(),
            sampling: Mutex::new(sampling),
            hub,
            recorder,
            call_timeout,
            swap_lock: tokio::sync::Mutex::new(()),
            overrides: Mutex::new(None),
        }))
    }

    /// The backend personas think through.
    pub fn backend(&self) -> Arc<dyn LlmBackend> {
        self.backend.clone()
    }

    /// Sends each named persona's model calls through its own backend from its next start on (the others keep
    /// the daemon's); set once, before the tree starts. `false` when it was already set.
    pub fn route(&self, routes: HashMap<String, Arc<dyn LlmBackend>>) -> bool {
        self.routes.set(routes).is_ok()
    }

    /// The backend `persona` thinks through: its own route, else the daemon's backend.
    pub fn backend_for(&self, persona: &str) -> Arc<dyn LlmBackend> {
        self.routes
            .get()
            .and_then(|r| r.get(persona))
            .cloned()
            .unwrap_or_else(|| self.backend.clone())
    }

    /// Timeout for one persona call (the model request plus queueing).
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The registry as it is now: hold it for a task's whole life.
    pub fn snapshot(&self) -> Arc<PersonaMap> {
        self.registry.load_full()
    }

    /// The current handle of one persona.
    pub fn current(&self, name: &str) -> Result<Arc<PersonaHandle>, PersonaError> {
        self.registry
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| PersonaError::Unknown(name.to_string()))
    }

    /// The stored configuration of a persona (what a restart starts from).
    pub fn config(&self, name: &str) -> Option<PersonaConfig> {
        self.lock_configs().get(name).cloned()
    }

    /// `persona`'s sampling defaults (`[llm]` with its `[personas.<name>]` overrides) as now in force (live),
    /// before its editable overrides.
    pub fn sampling(&self, persona: &str) -> Sampling {
        self.sampling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(persona)
    }

    /// Changes the sampling defaults (live settings reload), for running and future persona actors.
    pub fn set_sampling(&self, table: SamplingTable) {
        *self.sampling.lock().unwrap_or_else(|p| p.into_inner()) = table.clone();
        for (name, h) in self.snapshot().iter() {
            h.tell(ProtoMsg::SetSampling(table.get(name)));
        }
    }

    fn lock_configs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PersonaConfig>> {
        self.configs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The child specs for the personas supervisor, one per persona in start order.
    pub fn child_specs(self: &Arc<Self>) -> Vec<ChildSpec> {
        crate::PERSONAS
            .iter()
            .map(|name| self.child_spec(name))
            .collect()
    }

    /// The child spec of one persona: every (re)start reads the persona's current config, so a restarted
    /// persona keeps the current model and surgery, and installs itself in the registry.
    fn child_spec(self: &Arc<Self>, name: &str) -> ChildSpec {
        let me = self.clone();
        let name = name.to_string();
        ChildSpec {
            id: name.clone(),
            restart: Restart::Permanent,
            is_supervisor: false,
            start: Arc::new(move |sup: ActorCell| {
                let me = me.clone();
                let name = name.clone();
                Box::pin(async move { me.start_generation(&name, sup).await })
            }),
        }
    }

    async fn start_generation(
        self: Arc<Self>,
        name: &str,
        sup: ActorCell,
    ) -> Result<ActorCell, ractor::SpawnErr> {
        let config = self.config(name).ok_or_else(|| {
            ractor::SpawnErr::StartupFailed(format!("no config for persona {name}").into())
        })?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let args = ProtoArgs {
            config: config.clone(),
            generation,
            backend: self.backend_for(name),
            sampling: self.sampling(name),
            hub: self.hub.clone(),
        };
        let (actor, _) = Proto::spawn_linked(None, Proto, args, sup).await?;
        let handle = Arc::new(PersonaHandle {
            name: name.to_string(),
            model: config.model.clone(),
            generation,
            backend: self.backend_for(name).kind(),
            actor: actor.clone(),
            _guard: RetireGuard(actor.clone()),
        });
        // The atomic store: every snapshot taken from here on sees the new actor.
        self.registry.rcu(|m| {
            let mut m = PersonaMap::clone(m);
            m.insert(name.to_string(), handle.clone());
            m
        });
        self.hub.publish(Event::PersonaState {
            persona: name.to_string(),
            model: config.model.clone(),
            backend: self.backend_for(name).kind().to_string(),
            state: config.editable.to_value(generation),
        });
        Ok(actor.get_cell())
    }

    /// The cognitive atomic swap: moves `persona` to `model`. In-flight tasks finish on the old actor; every
    /// task that starts after this returns routes to the new one. The new model is recorded in settings.toml.
    pub async fn swap_model(
        self: &Arc<Self>,
        persona: &str,
        model: &str,
    ) -> Result<SwapOutcome, PersonaError> {
        let model = model.trim();
        if model.is_empty() || model.len() > 256 || model.chars().any(|c| c.is_control()) {
            return Err(PersonaError::Invalid(
                "model name must be 1..=256 printable characters".into(),
            ));
        }
        let _serial = self.swap_lock.lock().await;
        let from = self.current(persona)?.model.clone();
        // Refused before anything changes: a model the backend cannot serve would break every later task.
        if let Err(e) = self.backend_for(persona).check_model(model).await {
            return Err(match e {
                LlmError::ModelNotFound { .. } => PersonaError::Invalid(e.to_string()),
                other => PersonaError::Swap(format!("cannot check model `{model}`: {other}")),
            });
        }
        let previous = {
            let mut configs = self.lock_configs();
            let c = configs
                .get_mut(persona)
                .ok_or_else(|| PersonaError::Unknown(persona.to_string()))?;
            std::mem::replace(&mut c.model, model.to_string())
        };
        let spec = self.child_spec(persona);
        let replaced = SupervisorHandle::named("personas supervisor", SUPERVISOR_NAME)
            .replace_child(spec, self.call_timeout)
            .await;
        if let Err(e) = replaced {
            self.restore_model(persona, previous);
            return Err(match e {
                SupervisorError::Unreachable(source) => PersonaError::Unreachable {
                    persona: persona.to_string(),
                    source,
                },
                SupervisorError::Refused(why) => PersonaError::Swap(why),
            });
        }
        let generation = self.current(persona)?.generation;
        self.hub.publish(Event::ModelSwapped {
            persona: persona.to_string(),
            from: from.clone(),
            to: model.to_string(),
            generation,
        });
        let mut persisted = true;
        if let Some(recorder) = &self.recorder {
            if let Err(e) = recorder.record_model(persona, model).await {
                persisted = false;
                tracing::error!(event = "settings.write_failed", persona, error = %e, "swap done but not recorded in settings.toml");
            }
        }
        Ok(SwapOutcome {
            persona: persona.to_string(),
            from,
            to: model.to_string(),
            generation,
            persisted,
        })
    }

    fn restore_model(&self, persona: &str, model: String) {
        if let Some(c) = self.lock_configs().get_mut(persona) {
            c.model = model;
        }
    }

    /// Keeps `update_persona`'s overrides in `path` from now on, and applies those it holds (call before the
    /// personas start). A missing file is no override; an unreadable one is an error naming it.
    pub fn keep_overrides(&self, path: &std::path::Path) -> Result<(), PersonaError> {
        let saved: BTreeMap<String, Editable> = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                PersonaError::Invalid(format!(
                    "{} is not a persona override file: {e}",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(PersonaError::Invalid(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        let mut configs = self.lock_configs();
        for (name, editable) in saved {
            if let Some(c) = configs.get_mut(&name) {
                c.editable = editable;
            }
        }
        *self.overrides.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.to_path_buf());
        Ok(())
    }

    /// Writes every persona's overrides to the override file, if one is kept.
    fn save_overrides(&self) -> Result<(), PersonaError> {
        let Some(path) = self
            .overrides
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return Ok(());
        };
        let all: BTreeMap<String, Editable> = self
            .lock_configs()
            .iter()
            .filter(|(_, c)| c.editable != Editable::default())
            .map(|(n, c)| (n.clone(), c.editable.clone()))
            .collect();
        let bytes =
            serde_json::to_vec_pretty(&all).map_err(|e| PersonaError::Store(e.to_string()))?;
        crate::fsutil::atomic_write(&path, &bytes).map_err(|e| {
            PersonaError::Store(format!(
                "the override could not be kept in {}: {e}",
                path.display()
            ))
        })
    }

    /// Cognitive surgery: changes one editable field of a persona, live, and keeps it across restarts
    /// (of the actor always; of the daemon when an override file is kept: written before the change applies).
    pub async fn update(
        &self,
        persona: &str,
        field: &str,
        value: &Value,
    ) -> Result<Value, PersonaError> {
        let handle = self.current(persona)?;
        let mut editable = self
            .config(persona)
            .ok_or_else(|| PersonaError::Unknown(persona.to_string()))?
            .editable;
        editable.set(field, value).map_err(PersonaError::Invalid)?;
        let before = self.config(persona).map(|c| c.editable);
        if let Some(c) = self.lock_configs().get_mut(persona) {
            c.editable = editable.clone();
        }
        if let Err(e) = self.save_overrides() {
            // Not kept, so not made: the config goes back to what the file still says.
            if let (Some(c), Some(b)) = (self.lock_configs().get_mut(persona), before) {
                c.editable = b;
            }
            return Err(e);
        }
        handle.set_editable(editable, self.call_timeout).await
    }

    /// Gives every live persona its (possibly new) codex entry; later restarts use it too.
    pub fn apply_codex(&self, codex: &Codex) {
        let mut changed = Vec::new();
        {
            let mut configs = self.lock_configs();
            for (name, c) in configs.iter_mut() {
                if let Some(entry) = codex.persona(name) {
                    if &c.codex != entry {
                        c.codex = entry.clone();
                        changed.push((name.clone(), entry.clone()));
                    }
                }
            }
        }
        let snap = self.snapshot();
        for (name, entry) in changed {
            if let Some(h) = snap.get(&name) {
                h.tell(ProtoMsg::SetCodex(entry));
            }
        }
    }

    /// One persona's live state, answered by its actor.
    pub async fn state(&self, persona: &str) -> Result<Value, PersonaError> {
        self.current(persona)?.state(self.call_timeout).await
    }

    /// One model call by the persona's current generation (for organs that do not hold a task's snapshot:
    /// the codex inquiry, the ToolForge, memory consolidation).
    pub async fn think(&self, persona: &str, req: ThinkRequest) -> Result<Thought, PersonaError> {
        self.current(persona)?.think(req, self.call_timeout).await
    }

    /// Models and backends per persona, for `status`.
    pub fn models(&self) -> BTreeMap<String, Value> {
        self.snapshot()
            .iter()
            .map(|(n, h)| {
                (
                    n.clone(),
                    serde_json::json!({"model": h.model, "backend": h.backend.to_string(), "generation": h.generation}),
                )
            })
            .collect()
    }
}

/// What a swap did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SwapOutcome {
    /// Persona that was swapped, as named in `swap_model`.
    pub persona: String,
    /// Old model.
    pub from: String,
    /// New model.
    pub to: String,
    /// Generation of the new actor.
    pub generation: u64,
    /// Whether settings.toml now records the new model.
    pub persisted: bool,
}

/// The registry is the [`Think`] port: a persona's current generation answers.
#[async_trait::async_trait]
impl Think for Personas {
    async fn think(&self, persona: &str, req: ThinkRequest) -> Result<Thought, PortError> {
        Personas::think(self, persona, req)
            .await
            .map_err(|e| match e {
                PersonaError::Unreachable { source, .. } => PortError::Unreachable(source),
                other => PortError::Refused(other.to_string()),
            })
    }
}
