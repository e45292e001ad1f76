//! The supervision tree, wired: which organ runs under which supervisor, in which order, with which
//! restart type. Boot builds the organs' arguments; this file alone decides the shape.
//!
//! ```text
//! root (one_for_one)                                   restart: permanent everywhere below
//! ├── codex            owns codex.toml and settings.toml: amendments, commits, reloads, recorded swaps
//! ├── personas (one_for_one)
//! │   └── ALFRED  BABS  BRICK  ROBIN                   Proto actors; a swap installs a new generation
//! │         └── think jobs                             one per model call (crate::job)
//! ├── tools (one_for_one)
//! │   ├── sandbox      warm pool of gVisor sandboxes
//! │   └── toolforge    └── forge jobs
//! ├── memory           LanceDB store └── ingest / search / consolidate / index jobs
//! ├── curator          golden datasets └── judge job (one at a time)   (when curator.enabled)
//! ├── trainer          LoRA training queue └── run job (one at a time) (when trainer.enabled)
//! ├── orchestrator     task table    └── task/<id> jobs: one run per task, resumed or failed on a crash
//! ├── motivator        goals of its own └── forward, tick, phrase/start jobs  (when motivator.enabled)
//! ├── exam             the machine-checked exam └── run job (one at a time)
//! ├── life             an unattended life measured by the exam └── life job (one at a time)
//! ├── image            the living image: periodic saves, exports, the event numbers' reservation └── tick job
//! └── gateway          ZeroMQ command and event sockets
//! ```
//!
//! Start order is top to bottom (each organ finds the ones above it running); stop order is the reverse,
//! so the gateway closes first and the codex, which owns the files, last. Jobs are ractor children of their
//! organ, not supervisor children: their failures are the organ's to judge (see `batos_actors::job`).

use std::sync::Arc;
use std::time::Duration;

use batos_actors::cluster::{ClusterActor, ClusterArgs, CLUSTER_NAME};
use batos_actors::codex::{CodexActor, CodexArgs, CODEX_NAME};
use batos_actors::curator::{CuratorActor, CuratorArgs, CURATOR_NAME};
use batos_actors::events::EventHub;
use batos_actors::exam::{ExamActor, ExamArgs, EXAM_NAME};
use batos_actors::image::{ImageActor, ImageArgs, IMAGE_NAME};
use batos_actors::life::{LifeActor, LifeArgs, LIFE_NAME};
use batos_actors::memory::{MemoryActor, MemoryArgs, MEMORY_NAME};
use batos_actors::motivator::{MotivatorActor, MotivatorArgs, MOTIVATOR_NAME};
use batos_actors::orchestrator::{Cognition, Orchestrator, OrchestratorArgs, ORCHESTRATOR_NAME};
use batos_actors::personas::{Personas, SUPERVISOR_NAME as PERSONAS_NAME};
use batos_actors::settings::Settings;
use batos_actors::supervisor::{ChildSpec, Restart, Strategy, SupervisorConfig};
use batos_actors::tools::forge::{ForgeArgs, ToolForge, FORGE_NAME};
use batos_actors::tools::sandbox::pool::{PoolArgs, SandboxPool, SANDBOX_NAME};
use batos_actors::trainer::{TrainerActor, TrainerArgs, TRAINER_NAME};

use crate::gateway::{Gateway, GATEWAY_NAME};

/// Global name of the root supervisor.
pub const ROOT_NAME: &str = "root";

/// What each organ starts from.
pub struct Organs<'a> {
    /// Settings at start (supervision intensity and timeouts).
    pub settings: &'a Settings,
    /// Where `actor.*` events go.
    pub hub: &'a Arc<EventHub>,
    /// The cluster organ's arguments; `None` unless this daemon is a home node (`[cluster] enabled`).
    pub cluster: Option<ClusterArgs>,
    /// The codex governor's arguments.
    pub codex: CodexArgs,
    /// The persona machinery (its supervisor's children come from it).
    pub personas: Arc<Personas>,
    /// The sandbox pool's arguments.
    pub sandbox: PoolArgs,
    /// The ToolForge's arguments (registry, store under `data_dir/tools`, personas, live settings).
    pub forge: ForgeArgs,
    /// The memory organ's arguments.
    pub memory: MemoryArgs,
    /// The Curator's arguments; `None` when `curator.enabled` is false (no Curator runs).
    pub curator: Option<CuratorArgs>,
    /// The trainer's arguments; `None` when `trainer.enabled` is false.
    pub trainer: Option<TrainerArgs>,
    /// The Motivator's arguments; `None` when `motivator.enabled` is false.
    pub motivator: Option<MotivatorArgs>,
    /// The exam organ's arguments.
    pub exam: ExamArgs,
    /// The life organ's arguments.
    pub life: LifeArgs,
    /// The image organ's arguments.
    pub image: ImageArgs,
    /// What the orchestrator's task runs share.
    pub cognition: Arc<Cognition>,
    /// What gateway commands may touch.
    pub gateway: Arc<crate::gateway::Organs>,
}

/// A supervisor's settings: the tree-wide intensity, period and timeouts of `[supervision]`.
pub fn supervisor_config(
    s: &Settings,
    hub: &Arc<EventHub>,
    path: &str,
    name: &str,
    strategy: Strategy,
) -> SupervisorConfig {
    SupervisorConfig {
        path: path.into(),
        name: Some(name.into()),
        strategy,
        intensity: s.supervision.intensity,
        period: Duration::from_millis(s.supervision.period_ms),
        shutdown_timeout: Duration::from_millis(s.supervision.shutdown_timeout_ms),
        restart_backoff: Duration::from_millis(s.supervision.restart_backoff_ms),
        hub: hub.clone(),
    }
}

/// The root supervisor's children, in start order.
pub fn children(o: Organs<'_>) -> Vec<ChildSpec> {
    let (settings, hub) = (o.settings, o.hub);
    let (codex, sandbox, forge, memory) = (o.codex, o.sandbox, o.forge, o.memory);
    let (cog, gateway) = (o.cognition, o.gateway);
    let curator = o.curator.map(|args| {
        ChildSpec::worker(
            "curator",
            Restart::Permanent,
            Some(CURATOR_NAME.into()),
            move || (CuratorActor, args.clone()),
        )
    });
    // First: a node that joins early is ready before the first persona call asks for it.
    let cluster = o.cluster.map(|args| {
        ChildSpec::worker(
            "cluster",
            Restart::Permanent,
            Some(CLUSTER_NAME.into()),
            move || (ClusterActor, args.clone()),
        )
    });
    let mut specs: Vec<ChildSpec> = cluster.into_iter().collect();
    specs.extend([
        ChildSpec::worker(
            "codex",
            Restart::Permanent,
            Some(CODEX_NAME.into()),
            move || (CodexActor, codex.clone()),
        ),
        ChildSpec::supervisor(
            "personas",
            Restart::Permanent,
            supervisor_config(
                settings,
                hub,
                "root/personas",
                PERSONAS_NAME,
                Strategy::OneForOne,
            ),
            o.personas.child_specs(),
        ),
        ChildSpec::supervisor(
            "tools",
            Restart::Permanent,
            supervisor_config(settings, hub, "root/tools", "tools", Strategy::OneForOne),
            vec![
                ChildSpec::worker(
                    "sandbox",
                    Restart::Permanent,
                    Some(SANDBOX_NAME.into()),
                    move || (SandboxPool, sandbox.clone()),
                ),
                ChildSpec::worker(
                    "toolforge",
                    Restart::Permanent,
                    Some(FORGE_NAME.into()),
                    move || (ToolForge, forge.clone()),
                ),
            ],
        ),
        ChildSpec::worker(
            "memory",
            Restart::Permanent,
            Some(MEMORY_NAME.into()),
            move || (MemoryActor, memory.clone()),
        ),
    ]);
    // Before the orchestrator: it hands finished tasks to the Curator as soon as it starts.
    specs.extend(curator);
    specs.extend(o.trainer.map(|args| {
        ChildSpec::worker(
            "trainer",
            Restart::Permanent,
            Some(TRAINER_NAME.into()),
            move || (TrainerActor, args.clone()),
        )
    }));
    specs.extend([ChildSpec::worker(
        "orchestrator",
        Restart::Permanent,
        Some(ORCHESTRATOR_NAME.into()),
        move || (Orchestrator, OrchestratorArgs { cog: cog.clone() }),
    )]);
    // After the orchestrator: it starts goal tasks there, and reconciles its running goals at start.
    specs.extend(o.motivator.map(|args| {
        ChildSpec::worker(
            "motivator",
            Restart::Permanent,
            Some(MOTIVATOR_NAME.into()),
            move || (MotivatorActor, args.clone()),
        )
    }));
    // After the orchestrator (its questions are tasks) and the Curator (its judge's agreement goes there); a
    // run found unfinished at start resumes once it is up.
    let exam = o.exam;
    specs.extend([ChildSpec::worker(
        "exam",
        Restart::Permanent,
        Some(EXAM_NAME.into()),
        move || (ExamActor, exam.clone()),
    )]);
    // After the exam (a life is measured by it), the trainer and the codex; a life found unfinished at start
    // resumes once it is up.
    let life = o.life;
    specs.extend([ChildSpec::worker(
        "life",
        Restart::Permanent,
        Some(LIFE_NAME.into()),
        move || (LifeActor, life.clone()),
    )]);
    // After every organ whose state it pictures (it asks memory and reads the personas).
    let image = o.image;
    specs.extend([ChildSpec::worker(
        "image",
        Restart::Permanent,
        Some(IMAGE_NAME.into()),
        move || (ImageActor, image.clone()),
    )]);
    specs.extend([ChildSpec::worker(
        "gateway",
        Restart::Permanent,
        Some(GATEWAY_NAME.into()),
        move || (Gateway, gateway.clone()),
    )]);
    specs
}
