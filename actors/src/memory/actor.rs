//! The memory actor. Store work runs in supervised jobs beside the mailbox (ingest, search, consolidation
//! and index upkeep never wait for one another, and a panic in one is an `actor.failed` event, not a silent
//! loss); a store failure makes the actor fail, so its supervisor restarts it and the table is reopened.
//! The jobs die with the actor. Consolidation lives in `consolidate.rs` and index upkeep in `upkeep.rs`;
//! this file holds the mailbox, the state the jobs share, and ingest and search.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::consolidate::consolidate;
use super::ctx::{escalate, now_micros, Ctx, Store, UNPARENTED};
use super::messages::{MemoryArgs, MemoryMsg};
use super::store::{self, NewRow};
use super::upkeep::maintain;
use super::{
    chunk, ConsolidateReport, IngestItem, MemError, MemStats, MemorySnapshot, SearchResult,
};
use crate::events::Event;
use crate::job::Coalesce;
use crate::job::Jobs;

/// How `memory_search` runs stage 2: exact over the chosen summaries' details (BENCHMARKS.md, memory).
const STAGE2: store::Stage2 = store::Stage2::Exact;

/// Global name of the memory actor.
pub const MEMORY_NAME: &str = "memory";

/// The memory organ.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryActor;

/// Memory state.
pub struct MemoryState {
    ctx: Arc<Ctx>,
    store: Option<Arc<Store>>,
    jobs: Jobs,
    /// Since when the store is broken (a failed open or a LanceDB error), and why: requests are answered
    /// `unavailable` until `memory.reopen_backoff_ms` has passed, then the table is opened again.
    broken: Option<(std::time::Instant, String)>,
    _timer: Option<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl MemoryState {
    /// Opens the table on first use: the embedding width is only known once the model answers, and a model
    /// that is down at start must not keep the actor (and the daemon) from starting.
    async fn store(&mut self) -> Result<Arc<Store>, MemError> {
        if let Some(s) = &self.store {
            return Ok(s.clone());
        }
        let backoff = Duration::from_millis(self.ctx.settings().reopen_backoff_ms);
        if let Some((since, why)) = &self.broken {
            if since.elapsed() < backoff {
                return Err(MemError::Degraded(why.clone()));
            }
        }
        match self.open().await {
            Ok(s) => {
                if self.broken.take().is_some() {
                    tracing::info!(event = "memory.recovered", "memory table open again");
                }
                Ok(s)
            }
            // Whatever broke the open (the model for the width probe, LanceDB), memory is unavailable.
            Err(e) => {
                self.broken = Some((std::time::Instant::now(), e.to_string()));
                Err(MemError::Degraded(e.to_string()))
            }
        }
    }

    async fn open(&mut self) -> Result<Arc<Store>, MemError> {
        std::fs::create_dir_all(&self.ctx.args.dir).map_err(|e| {
            MemError::Store(format!(
                "cannot create {}: {e}",
                self.ctx.args.dir.display()
            ))
        })?;
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
        let mib = self.ctx.settings().summary_tier_mib;
        let tier = store::SummaryTier::load(&table, dim, mib.saturating_mul(1 << 20)).await?;
        let tier_summaries = tier.as_ref().map_or(0, store::SummaryTier::len);
        tracing::info!(
            event = "memory.opened",
            dir = %self.ctx.args.dir.display(),
            dim,
            rows,
            summary_tier = tier.is_some(),
            tier_summaries,
            "memory table open"
        );
        let family_bytes = self.ctx.settings().family_map_mib.saturating_mul(1 << 20);
        // A shortcut, not a way in: a table whose families cannot be read still opens (planned reads).
        let (families, outgrown) = match store::Families::load(&table, family_bytes).await {
            Ok(f) => {
                let outgrown = f.is_none() && family_bytes > 0;
                (f, outgrown)
            }
            Err(e) => {
                tracing::warn!(event = "memory.families_load_failed", error = %e, "stage 2 and the recent details are planned until a write's refresh reads the families");
                (None, false)
            }
        };
        tracing::info!(
            event = "memory.families_loaded",
            on = families.is_some(),
            outgrown,
            details = families.as_ref().map_or(0, store::Families::len),
            "detail row ids by parent"
        );
        let s = Arc::new(Store::new(table, dim, tier, families, outgrown));
        self.store = Some(s.clone());
        Ok(s)
    }
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
        let period = Duration::from_millis(args.settings.load().memory.consolidate_interval_ms);
        let me = myself.clone();
        // A plain tokio task: a ticker that only casts a message; it cannot fail, and it is aborted with the
        // actor's state.
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
        let hub = args.hub.clone();
        let state = MemoryState {
            jobs: Jobs::new(format!("root/{MEMORY_NAME}"), hub),
            ctx: Arc::new(Ctx {
                args,
                consolidating: AtomicBool::new(false),
                indexing: Coalesce::default(),
                rows_at_last_build: AtomicU64::new(0),
            }),
            store: None,
            broken: None,
            _timer: Some(AbortOnDrop(timer)),
        };
        // Opening needs an embedding call (for the width) and LanceDB: slow work, done once the actor is up so
        // the supervisor is never held by it.
        myself.cast(MemoryMsg::Open)?;
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
                let me = myself.clone();
                state
                    .jobs
                    .spawn(&myself.get_cell(), "ingest", async move {
                        let r = escalate(&me, ingest(&ctx, &store, items).await);
                        if r.is_ok() {
                            let _ = me.cast(MemoryMsg::Upkeep);
                        }
                        let _ = reply.send(r);
                    })
                    .await?;
            }
            MemoryMsg::Lexical {
                words,
                limit,
                reply,
            } => {
                let Some(filter) = lexical_filter(&words) else {
                    let _ = reply.send(Ok(Vec::new()));
                    return Ok(());
                };
                let store = match state.store().await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return Ok(());
                    }
                };
                let me = myself.clone();
                state
                    .jobs
                    .spawn(&myself.get_cell(), "lexical", async move {
                        let found = store::scan(&store.table, &filter, limit)
                            .await
                            .map(|rows| rows.into_iter().map(|r| r.hit).collect());
                        let _ = reply.send(escalate(&me, found));
                    })
                    .await?;
            }
            MemoryMsg::Search {
                query,
                k,
                explain,
                report_gap,
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
                let me = myself.clone();
                state
                    .jobs
                    .spawn(&myself.get_cell(), "search", async move {
                        let found = search(&ctx, &store, &query, k, explain).await;
                        if let (Ok(r), true) = (&found, report_gap) {
                            ctx.report_gap(&query, r);
                        }
                        let _ = reply.send(escalate(&me, found));
                    })
                    .await?;
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
                let me = myself.clone();
                let job = state
                    .jobs
                    .spawn(&myself.get_cell(), "consolidate", async move {
                        let r = escalate(&me, consolidate(&ctx, &store, reply.is_some()).await);
                        ctx.consolidating.store(false, Ordering::SeqCst);
                        if matches!(&r, Ok(rep) if rep.summaries > 0) {
                            let _ = me.cast(MemoryMsg::Upkeep);
                        }
                        if let Some(reply) = reply {
                            let _ = reply.send(r);
                        }
                    })
                    .await;
                if let Err(e) = job {
                    state.ctx.consolidating.store(false, Ordering::SeqCst);
                    return Err(e.into());
                }
            }
            MemoryMsg::Stats(reply) => {
                let r = match state.store().await {
                    Ok(s) => stats(&state.ctx, &s).await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(escalate(&myself, r));
            }
            MemoryMsg::Snapshot { rows, reply } => {
                let store = match state.store().await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return Ok(());
                    }
                };
                let name = state.ctx.args.settings.load().memory.table.clone();
                // A job: reading every row of a large table must not hold up searches.
                state
                    .jobs
                    .spawn(&myself.get_cell(), "snapshot", async move {
                        let r = store::image::dump(&store.table, rows).await.map(
                            |(version, rows, ipc)| MemorySnapshot {
                                table: name,
                                version,
                                rows,
                                ipc,
                            },
                        );
                        let _ = reply.send(r);
                    })
                    .await?;
            }
            MemoryMsg::Remembers(task_id, reply) => {
                let r = match (state.store().await, store::sql_id(&task_id)) {
                    (Ok(s), Ok(id)) => store::count(&s.table, Some(&format!("task_id = {id}")))
                        .await
                        .map(|n| n > 0),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                let _ = reply.send(escalate(&myself, r));
            }
            MemoryMsg::Upkeep => {
                if let Some(store) = state.store.clone() {
                    if state.ctx.indexing.request() {
                        let (ctx, me) = (state.ctx.clone(), myself.clone());
                        state
                            .jobs
                            .spawn(&myself.get_cell(), "index", maintain(ctx, store, me))
                            .await?;
                    }
                }
            }
            MemoryMsg::Open => {
                if let Err(e) = state.store().await {
                    // Not fatal: requests answer `unavailable` and the next one after the backoff tries again.
                    tracing::warn!(event = "memory.degraded", error = %e, "memory table not open yet");
                }
            }
            // A broken store degrades the organ instead of failing it: a persistent LanceDB error would
            // otherwise restart memory until the root supervisor gives up and the daemon exits.
            MemoryMsg::StoreFailed(e) => {
                tracing::error!(event = "memory.degraded", error = %e, "memory store failed; answering unavailable until it reopens");
                state.store = None;
                state.broken = Some((std::time::Instant::now(), e));
            }
            MemoryMsg::Crash => panic!("debug_crash requested for memory"),
        }
        Ok(())
    }

    /// A job that panicked is reported (`actor.failed`) by [`Jobs::supervise`]; its caller gets `Stopped`.
    /// A crashed index job leaves its coalescing flag set, so it is released here for the next write.
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<MemoryMsg>,
        event: SupervisionEvent,
        state: &mut MemoryState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((label, crate::job::JobEnd::Failed(_))) = state.jobs.supervise(&event) {
            match label.as_str() {
                "index" => state.ctx.indexing.abandon(),
                "consolidate" => state.ctx.consolidating.store(false, Ordering::SeqCst),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Most words one lexical query looks for.
const LEXICAL_WORDS: usize = 8;

/// The SQL filter of a lexical query: detail rows whose lower-cased text holds any of `words`. Only words of
/// lower-case ASCII letters and digits, three or more long, are used (nothing else ever reaches the SQL);
/// `None` when none is left.
pub(super) fn lexical_filter(words: &[String]) -> Option<String> {
    let ok: Vec<&String> = words
        .iter()
        .filter(|w| {
            w.len() >= 3
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        .take(LEXICAL_WORDS)
        .collect();
    if ok.is_empty() {
        return None;
    }
    let any: Vec<String> = ok
        .iter()
        .map(|w| format!("lower(text) LIKE '%{w}%'"))
        .collect();
    Some(format!("kind = 'detail' AND ({})", any.join(" OR ")))
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
    // Before answering, so whoever remembered finds it in the next search.
    store.refresh_families(ctx.family_bytes()).await;
    let tasks: Vec<&str> = items.iter().filter_map(|i| i.task_id.as_deref()).collect();
    tracing::info!(event = "memory.ingested", rows = rows.len(), tasks = ?tasks, "memory rows committed");
    let total = store::count(&store.table, None).await.unwrap_or(0);
    ctx.args.hub.publish(Event::MemoryUpdated {
        what: format!(
            "stored {} row(s) of task(s) {}",
            rows.len(),
            tasks.join(", ")
        ),
        rows: total,
    });
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
    let tier = store.tier.load_full();
    let families = store.families.load_full();
    let recent = async {
        match families.as_deref() {
            Some(f) => {
                store::by_family(f, &q, None, s.k_recent, || {
                    store::exact(&store.table, &q, Some(UNPARENTED), s.k_recent)
                })
                .await
            }
            None => store::exact(&store.table, &q, Some(UNPARENTED), s.k_recent).await,
        }
    };
    let (two, recent) = tokio::join!(
        store::two_stage(
            &store.table,
            tier.as_deref(),
            families.as_deref(),
            &q,
            s.k_summaries,
            k,
            knobs,
            STAGE2
        ),
        recent,
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

async fn stats(ctx: &Ctx, store: &Store) -> Result<MemStats, MemError> {
    Ok(MemStats {
        rows: store::count(&store.table, None).await?,
        summaries: store::count(&store.table, Some("kind = 'summary'")).await?,
        details: store::count(&store.table, Some("kind = 'detail'")).await?,
        unparented: store::count(&store.table, Some(UNPARENTED)).await?,
        dim: store.dim,
        index: store::index_state(&store.table).await?,
        indexing: ctx.indexing.running(),
        summary_tier: store.tier.load().as_ref().map(|t| t.len() as u64),
        families: store.families.load().as_ref().map(|f| f.len() as u64),
    })
}
