//! Memory benchmark (issue 5), a bench binary: at each size, ingest rate, index build time, and query
//! latency p50/p95 with recall@10 for
//! - two-stage retrieval (`store::two_stage`, the code path of `memory_search`), stage 2 by prefiltered IVF-PQ
//!   and by exact distances over the candidates, for several `nprobes`/`refine_factor`;
//! - the same with stage 1 answered by the in-memory summary tier (`store::SummaryTier`, the shipped path
//!   while the summaries fit `memory.summary_tier_mib`), and that stage 1 alone;
//! - flat single-stage IVF-PQ over all details;
//! - exact brute force over all details (the baseline, and the ground truth of the flat recall).
//!
//! Recall of a two-stage query is measured against exact search over the same candidates (the details of the
//! summaries stage 1 chose) and against exact search over all details (the true top 10); recall of a flat
//! query against exact search over all details. Stage 1 is also timed alone. Methods are interleaved query by
//! query (rotating order, several passes) so a shared machine's load drifts fall on all of them alike; brute
//! force runs once per query, first. The table is compacted before the indexes are built, as the memory
//! actor's upkeep does.
//!
//! Data (synthetic, clustered, seeded): one summary per 100 details (1% summaries). Each summary is a random
//! unit vector (Gaussian, normalised); its 99 details and the queries aimed at it are that centre plus Gaussian
//! noise of norm ≈ 0.6, normalised (cosine to the centre ≈ 0.86; random centres are ≈ 0 apart).
//!
//! `BATOS_BENCH_SIZES=100000,1000000 BATOS_BENCH_QUERIES=100 cargo bench --workspace --bench memory`
//! (`BATOS_BENCH_TABLES=DIR` keeps and reuses each size's indexed table; `BATOS_BENCH_SHIPPED=1` times the
//! shipped path alone.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use batos_actors::memory::store::{self, Families, NewRow, SearchKnobs, Stage2, SummaryTier};

const DIM: usize = 384;
const DETAILS_PER_SUMMARY: usize = 99;
const NOISE: f32 = 0.6;
const BATCH: usize = 10_000;
const K: usize = 10;
const K_SUMMARIES: usize = 3;
/// (nprobes, refine_factor) settings compared.
const CONFIGS: [(usize, u32); 4] = [(10, 0), (10, 5), (20, 5), (50, 10)];
/// Passes over the queries (each query runs every method once per pass); one in the smoke test.
const PASSES: usize = 3;

/// One way of answering a query.
#[derive(Clone, Copy)]
enum Method {
    /// IVF-PQ over all details.
    Flat(SearchKnobs),
    /// Stage 1 alone: the summaries.
    Stage1(SearchKnobs),
    /// `store::two_stage`, the code path of `memory_search`.
    Two(SearchKnobs, Stage2),
    /// Stage 1 alone from the summary tier.
    TierStage1,
    /// `store::two_stage` with the summary tier and exact stage 2 through LanceDB's planner (the shipped path
    /// before the families, and theirs when they are off or outgrown).
    TierTwo,
    /// `store::two_stage` with the summary tier and stage 2 taken by row id through the families (the
    /// shipped path).
    FamilyTwo,
}

impl Method {
    fn name(&self) -> String {
        let k = |k: &SearchKnobs| format!("nprobes={} refine={}", k.nprobes, k.refine_factor);
        match self {
            Method::Flat(knobs) => format!("flat IVF-PQ {}", k(knobs)),
            Method::Stage1(knobs) => {
                format!("stage 1 alone (summaries; nearest found) {}", k(knobs))
            }
            Method::Two(knobs, stage2) => {
                format!("two-stage, stage 2 {stage2:?}, {}", k(knobs))
            }
            Method::TierStage1 => "stage 1 alone from the summary tier (nearest found)".into(),
            Method::TierTwo => "two-stage, stage 1 summary tier, stage 2 Exact (planned)".into(),
            Method::FamilyTwo => {
                "two-stage, stage 1 summary tier, stage 2 by row id (shipped)".into()
            }
        }
    }
}

fn gaussian(rng: &mut StdRng) -> f32 {
    // Box-Muller; rand 0.9 has no normal distribution without rand_distr.
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let n = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn centre(seed: u64, cluster: usize) -> Vec<f32> {
    let mut rng =
        StdRng::seed_from_u64(seed ^ (cluster as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    normalise((0..DIM).map(|_| gaussian(&mut rng)).collect())
}

fn near(c: &[f32], rng: &mut StdRng) -> Vec<f32> {
    let scale = NOISE / (DIM as f32).sqrt();
    normalise(c.iter().map(|x| x + scale * gaussian(rng)).collect())
}

fn rss() -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    format!("RSS {} MiB (peak {} MiB)", get("VmRSS:"), get("VmHWM:"))
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn recall(got: &[store::Hit], truth: &[store::Hit]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let t: std::collections::HashSet<&str> = truth.iter().map(|h| h.id.as_str()).collect();
    got.iter().filter(|h| t.contains(h.id.as_str())).count() as f64 / truth.len() as f64
}

struct Line {
    name: String,
    times: Vec<Duration>,
    /// Against exact search over the same candidates.
    recall: f64,
    /// Against exact search over all details (the true top 10).
    recall_all: f64,
}

impl Line {
    fn new(name: String) -> Self {
        Line {
            name,
            times: Vec::new(),
            recall: 0.0,
            recall_all: 0.0,
        }
    }

    fn print(mut self, n: usize) {
        let (p50, p95) = (pct(&mut self.times, 0.5), pct(&mut self.times, 0.95));
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.3} | {:.3} |",
            n, self.name, p50, p95, self.recall, self.recall_all
        );
    }
}

async fn run(
    rows: usize,
    queries: usize,
    passes: usize,
    seed: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::var_os("BATOS_BENCH_DIR").map(std::path::PathBuf::from);
    let dir = match base {
        Some(b) => tempfile::tempdir_in(b)?,
        None => tempfile::tempdir()?,
    };
    // BATOS_BENCH_TABLES: keep each size's indexed table in this folder, and where one is already there, query
    // it instead of writing and indexing again (the same seed gives the same rows): two builds then answer the
    // same queries over the same index, and a build whose index build takes long (the dev profile's) is timed
    // on its queries alone.
    let kept = std::env::var_os("BATOS_BENCH_TABLES")
        .map(|k| std::path::PathBuf::from(k).join(rows.to_string()));
    let table_dir = kept.clone().unwrap_or_else(|| dir.path().to_path_buf());
    let reuse = kept.as_ref().is_some_and(|k| k.join("done").exists());
    if let Some(k) = &kept {
        if !reuse {
            let _ = std::fs::remove_dir_all(k);
        }
        std::fs::create_dir_all(k)?;
    }
    let table = store::open(&table_dir, "bench", DIM).await?;
    let clusters = rows.div_ceil(DETAILS_PER_SUMMARY + 1);
    let mut rng = StdRng::seed_from_u64(seed);
    let now = 0i64;
    // ---- ingest: only the writes are timed (generating the vectors is this bench's own code, compiled at the
    // bench's opt-level, and would make the figure a measure of it in a dev build)
    let mut ingest = Duration::ZERO;
    let mut pending: Vec<NewRow> = Vec::with_capacity(BATCH);
    let mut written = 0usize;
    for c in 0..clusters {
        let ctr = centre(seed, c);
        let sid = format!("s{c}");
        pending.push(NewRow {
            id: sid.clone(),
            parent_id: None,
            kind: "summary",
            text: format!("summary {c}"),
            vector: ctr.clone(),
            persona: "BABS".into(),
            task_id: None,
            created_at: now,
        });
        for d in 0..DETAILS_PER_SUMMARY {
            pending.push(NewRow {
                id: format!("d{c}-{d}"),
                parent_id: Some(sid.clone()),
                kind: "detail",
                text: format!("detail {d} of {c}"),
                vector: near(&ctr, &mut rng),
                persona: "BRICK".into(),
                task_id: None,
                created_at: now,
            });
        }
        if pending.len() >= BATCH && reuse {
            written += pending.len();
            pending.clear();
        } else if pending.len() >= BATCH {
            let t = Instant::now();
            store::add(&table, &pending, DIM).await?;
            ingest += t.elapsed();
            written += pending.len();
            pending.clear();
        }
    }
    if reuse {
        println!(
            "\n### {rows} rows ({clusters} summaries)\n\nthe kept table in {} (written, compacted and indexed by an earlier run)",
            table_dir.display()
        );
    } else {
        if !pending.is_empty() {
            let t = Instant::now();
            store::add(&table, &pending, DIM).await?;
            ingest += t.elapsed();
            written += pending.len();
        }
        println!(
            "\n### {rows} rows ({clusters} summaries)\n\ningest: {written} rows written in {:.2} s = {:.0} rows/s (batches of {BATCH}; the writes alone); {}",
            ingest.as_secs_f64(),
            written as f64 / ingest.as_secs_f64(),
            rss()
        );
        // ---- compaction: the memory actor merges small fragments (one per write) past `compact_min_fragments`,
        // so the shipped table has few large files; query the same shape here.
        let fragments = store::fragment_count(&table).await?;
        let t = Instant::now();
        store::compact(&table).await?;
        println!(
            "compaction: {fragments} fragments -> {} in {:.1} s",
            store::fragment_count(&table).await?,
            t.elapsed().as_secs_f64()
        );
        // ---- index
        let (parts, subs) = store::ivf_pq_shape(written as u64, DIM, 0, 0);
        let t = Instant::now();
        store::build_indexes(&table, parts, subs).await?;
        println!(
            "index build: IVF-PQ {parts} partitions × {subs} sub-vectors + parent_id BTree + kind bitmap in {:.1} s; {}",
            t.elapsed().as_secs_f64(),
            rss()
        );
        if let Some(k) = &kept {
            std::fs::write(k.join("done"), b"")?;
        }
    }
    // ---- the summary tier, as the memory actor loads it when the table opens
    let t = Instant::now();
    let tier = SummaryTier::load(&table, DIM, u64::MAX)
        .await?
        .ok_or("no summary tier")?;
    println!(
        "summary tier: {} summaries, {:.1} MiB of vectors, loaded in {:.2} s; {}",
        tier.len(),
        tier.bytes() as f64 / f64::from(1u32 << 20),
        t.elapsed().as_secs_f64(),
        rss()
    );
    // ---- the families (every detail's row id by parent), as the memory actor loads them when the table opens
    let t = Instant::now();
    let families = Families::load(&table, u64::MAX)
        .await?
        .ok_or("no families")?;
    println!(
        "families: {} details by parent, loaded in {:.2} s; {}",
        families.len(),
        t.elapsed().as_secs_f64(),
        rss()
    );
    // ---- queries (the same for every configuration)
    let qs: Vec<Vec<f32>> = (0..queries)
        .map(|_| {
            let c = rng.random_range(0..clusters);
            near(&centre(seed, c), &mut rng)
        })
        .collect();
    println!(
        "\n| rows | method | p50 ms | p95 ms | recall@10, same candidates | recall@10, all details |\n|---|---|---|---|---|---|"
    );
    // Exact brute force over all details: baseline latency and flat ground truth.
    let mut exact_all = Line::new("exact brute force, all details".into());
    exact_all.recall = 1.0;
    exact_all.recall_all = 1.0;
    let mut truth_all = Vec::new();
    for q in &qs {
        let t = Instant::now();
        let h = store::exact(&table, q, Some("kind = 'detail'"), K).await?;
        exact_all.times.push(t.elapsed());
        truth_all.push(h);
    }
    // The exact nearest summary per query: stage 1's ground truth.
    let mut truth_s1 = Vec::new();
    for q in &qs {
        truth_s1.push(store::exact(&table, q, Some("kind = 'summary'"), 1).await?);
    }
    let mut methods = Vec::new();
    // BATOS_BENCH_SHIPPED=1: the summary tier's methods alone (the shipped path and the planned one) — for a profile
    // or a quick comparison of two builds.
    let shipped_only = std::env::var_os("BATOS_BENCH_SHIPPED").is_some_and(|v| v == "1");
    for (nprobes, refine_factor) in CONFIGS.into_iter().filter(|_| !shipped_only) {
        let knobs = SearchKnobs {
            nprobes,
            refine_factor,
        };
        methods.extend([
            Method::Flat(knobs),
            Method::Stage1(knobs),
            Method::Two(knobs, Stage2::Ann),
            Method::Two(knobs, Stage2::Exact),
        ]);
    }
    methods.extend([Method::TierStage1, Method::TierTwo, Method::FamilyTwo]);
    let mut lines: Vec<Line> = methods.iter().map(|m| Line::new(m.name())).collect();
    // Interleaved: each query runs every method back to back, in an order that rotates with the query and the
    // pass, so the load drifts of a shared machine fall on all methods alike. Recall is taken in pass 0.
    for pass in 0..passes {
        for (i, q) in qs.iter().enumerate() {
            for j in 0..methods.len() {
                let m = (i + j + pass) % methods.len();
                let t = Instant::now();
                let (hits, filter) = match methods[m] {
                    Method::Flat(knobs) => (
                        store::knn(&table, q, "kind = 'detail'", K, knobs).await?,
                        None,
                    ),
                    Method::Stage1(knobs) => (
                        store::knn(&table, q, "kind = 'summary'", K_SUMMARIES, knobs).await?,
                        None,
                    ),
                    Method::Two(knobs, stage2) => {
                        let (_, details, filter) =
                            store::two_stage(&table, None, None, q, K_SUMMARIES, K, knobs, stage2)
                                .await?;
                        (details, Some(filter))
                    }
                    Method::TierStage1 => (tier.nearest(q, K_SUMMARIES), None),
                    Method::TierTwo | Method::FamilyTwo => {
                        let knobs = SearchKnobs {
                            nprobes: 0,
                            refine_factor: 0,
                        };
                        let by_id = matches!(methods[m], Method::FamilyTwo).then_some(&families);
                        let (_, details, filter) = store::two_stage(
                            &table,
                            Some(&tier),
                            by_id,
                            q,
                            K_SUMMARIES,
                            K,
                            knobs,
                            Stage2::Exact,
                        )
                        .await?;
                        (details, Some(filter))
                    }
                };
                lines[m].times.push(t.elapsed());
                if pass > 0 {
                    continue;
                }
                let n = queries as f64;
                match (methods[m], filter) {
                    (Method::Stage1(_) | Method::TierStage1, _) => {
                        let r = recall(&hits, &truth_s1[i]) / n;
                        lines[m].recall += r;
                        lines[m].recall_all += r;
                    }
                    (Method::Two(..) | Method::TierTwo | Method::FamilyTwo, Some(f)) => {
                        let same = if f.is_empty() {
                            Vec::new()
                        } else {
                            store::exact(&table, q, Some(&f), K).await?
                        };
                        lines[m].recall += recall(&hits, &same) / n;
                        lines[m].recall_all += recall(&hits, &truth_all[i]) / n;
                    }
                    _ => {
                        let r = recall(&hits, &truth_all[i]) / n;
                        lines[m].recall += r;
                        lines[m].recall_all += r;
                    }
                }
            }
        }
    }
    for line in lines {
        line.print(rows);
    }
    exact_all.print(rows);
    println!("\nafter queries: {}", rss());
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` this runs as a small smoke test of the same code.
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::var("BATOS_BENCH_SIZES")
        .unwrap_or_else(|_| if full { "100000,1000000" } else { "3000" }.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let queries: usize = std::env::var("BATOS_BENCH_QUERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 100 } else { 5 });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("memory bench: cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "memory bench: {DIM}-d, k={K}, k_summaries={K_SUMMARIES}, {queries} queries × {PASSES} passes per method (interleaved), {} threads",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    for rows in sizes {
        if let Err(e) = rt.block_on(run(rows, queries, if full { PASSES } else { 1 }, 7)) {
            eprintln!("memory bench at {rows} rows failed: {e}");
            std::process::exit(1);
        }
    }
}
