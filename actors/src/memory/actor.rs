//! The memory actor. Store work runs in tasks beside the mailbox (ingest, search and consolidation never
//! wait for one another); a store failure makes the actor fail, so its supervisor restarts it and the table
//! is reopened.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use lancedb::Table;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::store::{self, NewRow, SearchKnobs};
use super::{chunk, ConsolidateReport, IngestItem, MemError, MemStats, SearchResult};
use crate::events::{Event, EventHub};
use crate::llm::{ChatMessage, LlmBackend, Role};
use crate::personas::{Personas, ProtoMsg, ThinkRequest};
use crate::settings::{MemorySettings, Settings};

/// How `memory_search` runs stage 2: exact over the chosen summaries' details (BENCHMARKS.md, memory).
const STAGE2: store::Stage2 = store::Stage2::Exact;

/// Details not yet under a summary.
const UNPARENTED: &str = "kind = 'detail' AND parent_id IS NULL";

/// Global name of the memory actor.
pub const MEMORY_NAME: &str = "memory";

/// The memory organ.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryActor;

/// Start-up arguments.
#[derive(Clone)]
pub struct MemoryArgs {
    /// `data_dir/memory`.
    pub dir: PathBuf,
    /// Live settings.
    pub settings: Arc<ArcSwap<Settings>>,
    /// Embeddings come from here.
    pub backend: Arc<dyn LlmBackend>,
    /// Summaries are written by a persona.
    pub personas: Arc<Personas>,
    /// Event bus.
    pub hub: Arc<EventHub>,
}

/// Messages the memory actor handles.
pub enum MemoryMsg {
    /// Store items; answers the number of rows written, once they are committed.
    Ingest(Vec<IngestItem>, RpcReplyPort<Result<usize, MemError>>),
    /// Two-stage retrieval.
    Search {
        /// Query text.
        query: String,
        /// Details wanted (default from settings).
        k: Option<usize>,
        /// Include the stage-2 query plan.
        explain: bool,
        /// Answer.
        reply: RpcReplyPort<Result<SearchResult, MemError>>,
    },
    /// Run one consolidation pass (also sent by the actor's own timer, without a reply port).
    Consolidate(Option<RpcReplyPort<Result<ConsolidateReport, MemError>>>),
    /// Table statistics.
    Stats(RpcReplyPort<Result<MemStats, MemError>>),
    /// From a background operation: the store failed; fail so the supervisor restarts and reopens it.
    StoreFailed(String),
    /// Fault injection: panic.
    Crash,
}

/// An open table and its embedding width.
struct Store {
    table: Table,
    dim: usize,
}

/// Shared between the actor and its background operations.
struct Ctx {
    args: MemoryArgs,
    consolidating: AtomicBool,
    indexing: Coalesce,
    rows_at_last_build: AtomicU64,
}

/// Memory state.
pub struct MemoryState {
    ctx: Arc<Ctx>,
    store: Option<Arc<Store>>,
    _timer: Option<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Ctx {
    fn settings(&self) -> MemorySettings {
        self.args.settings.load().memory.clone()
    }

    fn embed_model(&self) -> String {
        self.args.settings.load().llm.embed_model.clone()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemError> {
        self.args
            .backend
            .embed(&self.embed_model(), texts)
            .await
            .map_err(|e| MemError::Embed(e.to_string()))
    }

    fn knobs(&self) -> SearchKnobs {
        let s = self.settings();
        SearchKnobs {
            nprobes: s.nprobes,
            refine_factor: s.refine_factor,
        }
    }
}

fn now_micros() -> i64 {
    (crate::events::unix_now() * 1e6) as i64
}

impl MemoryState {
    /// Opens the table on first use: the embedding width is only known once the model answers, and a model
    /// that is down at start must not keep the actor (and the daemon) from starting.
    async fn store(&mut self) -> Result<Arc<Store>, MemError> {
        if let Some(s) = &self.store {
            return Ok(s.clone());
        }
        let probe = self.ctx.embed(&["dimension probe".to_string()]).await?;
        let dim = probe
            .first()
            .map(Vec::len)
            .filter(|d| *d > 0)
            .ok_or_else(|| MemError::Embed("empty embedding".into()))?;
        let table = store::open(&self.ctx.args.dir, &self.ctx.settings().table, dim).await?;
        let rows = store::count(&table, None).await?;
        let st = store::index_state(&table).await?;
        if st.vector_indexed_rows > 0 {
            self.ctx
                .rows_at_last_build
                .store(st.vector_indexed_rows, Ordering::SeqCst);
        }
        tracing::info!(event = "memory.opened", dir = %self.ctx.args.dir.display(), dim, rows, "memory table open");
        let s = Arc::new(Store { table, dim });
        self.store = Some(s.clone());
        Ok(s)
    }
}

/// Reports a store failure to the actor (which fails and is restarted) and passes the error on.
fn escalate<T>(me: &ActorRef<MemoryMsg>, r: Result<T, MemError>) -> Result<T, MemError> {
    if let Err(MemError::Store(e)) = &r {
        let _ = me.cast(MemoryMsg::StoreFailed(e.clone()));
    }
    r
}

impl Actor for MemoryActor {
    type Msg = MemoryMsg;
    type State = MemoryState;
    type Arguments = MemoryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MemoryMsg>,
        args: MemoryArgs,
    ) -> Result<MemoryState, ActorProcessingErr> {
        std::fs::create_dir_all(&args.dir)?;
        let period = Duration::from_millis(args.settings.load().memory.consolidate_interval_ms);
        let me = myself.clone();
        let timer = tokio::spawn(async move {
            let mut t = tokio::time::interval(period);
            t.tick().await;
            loop {
                t.tick().await;
                if me.cast(MemoryMsg::Consolidate(None)).is_err() {
                    return;
                }
            }
        });
        let mut state = MemoryState {
            ctx: Arc::new(Ctx {
                args,
                consolidating: AtomicBool::new(false),
                indexing: Coalesce::default(),
                rows_at_last_build: AtomicU64::new(0),
            }),
            store: None,
            _timer: Some(AbortOnDrop(timer)),
        };
        if let Err(e) = state.store().await {
            // Not fatal: the next request tries again.
            tracing::warn!(event = "memory.degraded", error = %e, "memory table not open yet");
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<MemoryMsg>,
        msg: MemoryMsg,
        state: &mut MemoryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MemoryMsg::Ingest(items, reply) => {
                let store = match state.store().await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return Ok(());
                    }
                };
                let ctx = state.ctx.clone();
                tokio::spawn(async move {
                    let r = escalate(&myself, ingest(&ctx, &store, items).await);
                    if r.is_ok() {
                        maintain(ctx, store, myself);
                    }
                    let _ = reply.send(r);
                });
            }
            MemoryMsg::Search {
                query,
                k,
                explain,
                reply,
            } => {
                let store = match state.store().await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return Ok(());
                    }
                };
                let ctx = state.ctx.clone();
                tokio::spawn(async move {
                    let _ = reply.send(escalate(
                        &myself,
                        search(&ctx, &store, &query, k, explain).await,
                    ));
                });
            }
            MemoryMsg::Consolidate(reply) => {
                let store = match state.store().await {
                    Ok(s) => s,
                    Err(e) => {
                        if let Some(r) = reply {
                            let _ = r.send(Err(e));
                        }
                        return Ok(());
                    }
                };
                if state.ctx.consolidating.swap(true, Ordering::SeqCst) {
                    if let Some(r) = reply {
                        let _ = r.send(Ok(ConsolidateReport::default()));
                    }
                    return Ok(());
                }
                let ctx = state.ctx.clone();
                tokio::spawn(async move {
                    let r = escalate(&myself, consolidate(&ctx, &store, reply.is_some()).await);
                    ctx.consolidating.store(false, Ordering::SeqCst);
                    if let Ok(rep) = &r {
                        if rep.summaries > 0 {
                            maintain(ctx.clone(), store.clone(), myself.clone());
                        }
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(r);
                    }
                });
            }
            MemoryMsg::Stats(reply) => {
                let r = match state.store().await {
                    Ok(s) => stats(&state.ctx, &s).await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(escalate(&myself, r));
            }
            MemoryMsg::StoreFailed(e) => {
                return Err(format!("memory store failed: {e}").into());
            }
            MemoryMsg::Crash => panic!("debug_crash requested for memory"),
        }
        Ok(())
    }
}

async fn ingest(ctx: &Ctx, store: &Store, items: Vec<IngestItem>) -> Result<usize, MemError> {
    let s = ctx.settings();
    let mut texts = Vec::new();
    let mut meta = Vec::new();
    for item in &items {
        if item.text.trim().is_empty() {
            return Err(MemError::Invalid("cannot remember an empty text".into()));
        }
        if let Some(t) = &item.task_id {
            store::sql_id(t)?;
        }
        for c in chunk(&item.text, s.chunk_chars) {
            texts.push(c);
            meta.push(item);
        }
    }
    let vectors = ctx.embed(&texts).await?;
    let now = now_micros();
    let rows: Vec<NewRow> = texts
        .into_iter()
        .zip(vectors)
        .zip(meta)
        .map(|((text, vector), item)| NewRow {
            id: uuid::Uuid::new_v4().simple().to_string(),
            parent_id: None,
            kind: "detail",
            text,
            vector,
            persona: item.persona.clone().unwrap_or_else(|| "ALFRED".into()),
            task_id: item.task_id.clone(),
            created_at: now,
        })
        .collect();
    store::add(&store.table, &rows, store.dim).await?;
    let tasks: Vec<&str> = items.iter().filter_map(|i| i.task_id.as_deref()).collect();
    tracing::info!(event = "memory.ingested", rows = rows.len(), tasks = ?tasks, "memory rows committed");
    Ok(rows.len())
}

async fn search(
    ctx: &Ctx,
    store: &Store,
    query: &str,
    k: Option<usize>,
    explain: bool,
) -> Result<SearchResult, MemError> {
    let s = ctx.settings();
    if query.trim().is_empty() {
        return Err(MemError::Invalid("`query` must not be empty".into()));
    }
    let k = k.unwrap_or(s.k_details).clamp(1, s.max_k);
    let q = ctx
        .embed(&[query.to_string()])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| MemError::Embed("no embedding".into()))?;
    let knobs = ctx.knobs();
    // Stage 2 ranks a few hundred candidates at most: exact distances over them (found through the parent_id
    // BTree) cost no more than the prefiltered index and have perfect recall (BENCHMARKS.md, memory).
    // The unconsolidated details are few (consolidation keeps up with them) and may sit in IVF partitions
    // a query does not probe, so they are searched exactly too; both queries run at once.
    let (two, recent) = tokio::join!(
        store::two_stage(&store.table, &q, s.k_summaries, k, knobs, STAGE2),
        store::exact(&store.table, &q, Some(UNPARENTED), s.k_recent),
    );
    let ((summaries, details, filter), recent) = (two?, recent?);
    let plan = if explain && !filter.is_empty() {
        Some(store::explain(&store.table, &q, &filter, k, knobs, STAGE2).await?)
    } else {
        None
    };
    let indexed = ctx.rows_at_last_build.load(Ordering::SeqCst) > 0;
    Ok(SearchResult {
        summaries,
        details,
        recent,
        filter,
        plan,
        indexed,
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Groups unparented details: by task first, then merges groups whose centroids are similar.
pub(crate) fn group(
    rows: Vec<(store::Hit, Vec<f32>)>,
    merge_similarity: f32,
    max: usize,
) -> Vec<Vec<(store::Hit, Vec<f32>)>> {
    let mut by_task: Vec<Vec<(store::Hit, Vec<f32>)>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for r in rows {
        match r.0.task_id.clone() {
            Some(t) => match index.get(&t) {
                Some(&i) => by_task[i].push(r),
                None => {
                    index.insert(t, by_task.len());
                    by_task.push(vec![r]);
                }
            },
            None => by_task.push(vec![r]),
        }
    }
    let centroid = |g: &[(store::Hit, Vec<f32>)]| {
        let dim = g.first().map(|x| x.1.len()).unwrap_or(0);
        let mut c = vec![0f32; dim];
        for (_, v) in g {
            for (a, b) in c.iter_mut().zip(v) {
                *a += b;
            }
        }
        c
    };
    let mut groups: Vec<Vec<(store::Hit, Vec<f32>)>> = Vec::new();
    for g in by_task {
        let c = centroid(&g);
        let target = groups.iter().position(|existing| {
            existing.len() + g.len() <= max && cosine(&centroid(existing), &c) >= merge_similarity
        });
        match target {
            Some(i) => groups[i].extend(g),
            None => groups.push(g),
        }
    }
    groups
}

async fn consolidate(
    ctx: &Ctx,
    store: &Store,
    forced: bool,
) -> Result<ConsolidateReport, MemError> {
    let s = ctx.settings();
    let rows = store::scan(&store.table, UNPARENTED, s.consolidate_batch).await?;
    if rows.is_empty() || (!forced && rows.len() < s.consolidate_min_details) {
        return Ok(ConsolidateReport::default());
    }
    let mut report = ConsolidateReport::default();
    for g in group(rows, s.merge_similarity, s.group_max) {
        let summary = summarise(ctx, &s, &g).await?;
        let vector = ctx
            .embed(std::slice::from_ref(&summary))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| MemError::Embed("no embedding".into()))?;
        let sid = uuid::Uuid::new_v4().simple().to_string();
        let tasks: Vec<&str> = g.iter().filter_map(|(h, _)| h.task_id.as_deref()).collect();
        let row = NewRow {
            id: sid.clone(),
            parent_id: None,
            kind: "summary",
            text: summary,
            vector,
            persona: s.summary_persona.clone(),
            task_id: (tasks.len() == 1).then(|| tasks[0].to_string()),
            created_at: now_micros(),
        };
        store::add(&store.table, std::slice::from_ref(&row), store.dim).await?;
        let ids: Vec<String> = g.iter().map(|(h, _)| h.id.clone()).collect();
        store::set_parent(&store.table, &ids, &sid).await?;
        report.summaries += 1;
        report.details += ids.len();
    }
    let rows = store::count(&store.table, None).await?;
    tracing::info!(
        event = "memory.consolidated",
        summaries = report.summaries,
        details = report.details,
        rows,
        "consolidation pass"
    );
    ctx.args.hub.publish(Event::MemoryUpdated {
        what: format!(
            "consolidated {} details under {} summaries",
            report.details, report.summaries
        ),
        rows,
    });
    Ok(report)
}

/// Asks the summary persona for a summary; if it cannot think right now, the details are joined instead so
/// consolidation never stalls on a model outage.
async fn summarise(
    ctx: &Ctx,
    s: &MemorySettings,
    group: &[(store::Hit, Vec<f32>)],
) -> Result<String, MemError> {
    let mut prompt = String::from(
        "Summarise these memories in two or three sentences, keeping names and facts:\n",
    );
    for (h, _) in group {
        prompt.push_str(&format!("- {}\n", h.text));
    }
    let req = ThinkRequest {
        messages: vec![ChatMessage::new(Role::User, prompt)],
        tools: Vec::new(),
        format: None,
        tokens: None,
    };
    let thought = match ctx.args.personas.current(&s.summary_persona) {
        Ok(h) => h
            .actor
            .call(
                |r| ProtoMsg::Think(Box::new(req), r),
                Some(ctx.args.personas.call_timeout()),
            )
            .await
            .ok(),
        Err(_) => None,
    };
    match thought {
        Some(ractor::rpc::CallResult::Success(Ok(t))) if !t.response.content.trim().is_empty() => {
            Ok(t.response.content)
        }
        _ => {
            tracing::warn!(
                event = "memory.summary_fallback",
                "summary persona unavailable; joining the details"
            );
            Ok(group
                .iter()
                .map(|(h, _)| h.text.as_str())
                .collect::<Vec<_>>()
                .join(" · "))
        }
    }
}

/// Index upkeep after writes: build IVF-PQ + BTree once past the threshold, rebuild when the table has grown
/// by `reindex_growth`, otherwise fold new rows into the existing index. Runs in the background; queries keep
/// working on the previous version meanwhile. A write that asks while upkeep runs is not dropped: upkeep runs
/// once more afterwards, so the last write of a burst is always looked at.
fn maintain(ctx: Arc<Ctx>, store: Arc<Store>, me: ActorRef<MemoryMsg>) {
    if !ctx.indexing.request() {
        return;
    }
    tokio::spawn(async move {
        loop {
            ctx.indexing.begin();
            let r = upkeep(&ctx, &store).await;
            if let Err(e) = r {
                ctx.indexing.abandon();
                tracing::error!(event = "memory.index_failed", error = %e, "index upkeep failed");
                let _ = escalate::<()>(&me, Err(e));
                return;
            }
            if !ctx.indexing.finish() {
                return;
            }
        }
    });
}

/// Coalesces requests for a background job: at most one run at a time, and a request made while it runs
/// is not lost but answered by one more run afterwards.
#[derive(Debug, Default)]
pub(crate) struct Coalesce {
    running: AtomicBool,
    again: AtomicBool,
}

impl Coalesce {
    /// Asks for a run: true if the caller must start it, false if a running one will cover the request.
    pub(crate) fn request(&self) -> bool {
        self.again.store(true, Ordering::SeqCst);
        !self.running.swap(true, Ordering::SeqCst)
    }

    /// The runner starts a run's work: requests so far are covered by it.
    pub(crate) fn begin(&self) {
        self.again.store(false, Ordering::SeqCst);
    }

    /// The runner finished a run: true if it must run again for a request made meanwhile.
    pub(crate) fn finish(&self) -> bool {
        self.running.store(false, Ordering::SeqCst);
        // A request after the release starts its own run; one before it (still flagged) is ours.
        self.again.load(Ordering::SeqCst) && !self.running.swap(true, Ordering::SeqCst)
    }

    /// The run failed: release without running again (the actor restarts).
    pub(crate) fn abandon(&self) {
        self.running.store(false, Ordering::SeqCst);
    }

    /// Whether a run is in progress.
    pub(crate) fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
}

async fn upkeep(ctx: &Ctx, store: &Store) -> Result<(), MemError> {
    let s = ctx.settings();
    let fragments = store::fragment_count(&store.table).await?;
    if fragments >= s.compact_min_fragments {
        let started = std::time::Instant::now();
        store::compact(&store.table).await?;
        tracing::info!(
            event = "memory.compacted",
            fragments,
            ms = started.elapsed().as_millis() as u64,
            "merged small data files"
        );
    }
    let rows = store::count(&store.table, None).await?;
    if rows < s.index_min_rows {
        return Ok(());
    }
    let last = ctx.rows_at_last_build.load(Ordering::SeqCst);
    if last == 0 || rows as f64 >= last as f64 * s.reindex_growth {
        let (parts, subs) =
            store::ivf_pq_shape(rows, store.dim, s.index_partitions, s.index_sub_vectors);
        let started = std::time::Instant::now();
        tracing::info!(
            event = "memory.index_build",
            rows,
            partitions = parts,
            sub_vectors = subs,
            "building IVF-PQ index"
        );
        store::build_indexes(&store.table, parts, subs).await?;
        ctx.rows_at_last_build.store(rows, Ordering::SeqCst);
        tracing::info!(
            event = "memory.index_built",
            rows,
            ms = started.elapsed().as_millis() as u64,
            "IVF-PQ index ready"
        );
        ctx.args.hub.publish(Event::MemoryUpdated {
            what: format!(
                "IVF-PQ index built over {rows} rows ({parts} partitions, {subs} sub-vectors)"
            ),
            rows,
        });
    } else {
        let st = store::index_state(&store.table).await?;
        if st.vector_unindexed_rows >= s.optimize_min_unindexed {
            store::optimize_indexes(&store.table).await?;
        }
    }
    Ok(())
}

async fn stats(ctx: &Ctx, store: &Store) -> Result<MemStats, MemError> {
    Ok(MemStats {
        rows: store::count(&store.table, None).await?,
        summaries: store::count(&store.table, Some("kind = 'summary'")).await?,
        details: store::count(&store.table, Some("kind = 'detail'")).await?,
        unparented: store::count(&store.table, Some(UNPARENTED)).await?,
        dim: store.dim,
        index: store::index_state(&store.table).await?,
        indexing: ctx.indexing.running(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, task: Option<&str>) -> store::Hit {
        store::Hit {
            id: id.into(),
            parent_id: None,
            kind: "detail".into(),
            text: id.into(),
            task_id: task.map(str::to_string),
            score: 0.0,
        }
    }

    #[test]
    fn a_request_during_a_run_gets_one_more_run_and_never_two_runners() {
        let c = Coalesce::default();
        assert!(c.request(), "the first request starts a run");
        c.begin();
        assert!(
            !c.request(),
            "a request during the run does not start a second runner"
        );
        assert!(!c.request());
        assert!(c.running());
        assert!(
            c.finish(),
            "the requests made during the run get one more run"
        );
        c.begin();
        assert!(!c.finish(), "nothing new was asked: stop");
        assert!(!c.running());
        assert!(
            c.request(),
            "after the runner stopped, a request starts a new one"
        );
        c.begin();
        c.abandon();
        assert!(!c.running());
        assert!(c.request());
    }

    #[test]
    fn grouping_by_task_then_similarity() {
        let rows = vec![
            (hit("a1", Some("A")), vec![1.0, 0.0]),
            (hit("b1", Some("B")), vec![0.0, 1.0]),
            (hit("a2", Some("A")), vec![1.0, 0.1]),
            (hit("c1", Some("C")), vec![0.95, 0.05]),
        ];
        let groups = group(rows, 0.9, 8);
        let ids: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|(h, _)| h.id.as_str()).collect())
            .collect();
        assert_eq!(ids, vec![vec!["a1", "a2", "c1"], vec!["b1"]]);
        let rows = vec![
            (hit("a1", Some("A")), vec![1.0, 0.0]),
            (hit("c1", Some("C")), vec![1.0, 0.0]),
        ];
        assert_eq!(group(rows, 0.9, 1).len(), 2, "group_max caps merges");
    }
}
