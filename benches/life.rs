//! The learning curve (issue 28): lives of the household on the embedded model from an empty mind, each with
//! the shipped curriculum (config/life/curriculum.jsonl) and the life's exam (config/life/exam.jsonl: the full
//! set at both ends, its held-out subset every `BATOS_BENCH_LIFE_EVERY` tasks), on the shipped settings — the
//! full household twice (the noise) and one ablation per loop. Prints each life's curve and the report (each
//! loop's share of the gain, what the loops did and cost) and draws the curves as an SVG.
//!
//! Each life keeps its own folder under `BATOS_BENCH_LIFE_DIR` (default `target/life-bench`): its config, its
//! data and its record. Interrupt the bench at any time; the next run restarts that life's daemon and the life
//! resumes where it stood (a finished life is not run again). So the runs may be spread over several days.
//!
//! `cargo bench --profile dev --bench life` (`BATOS_BENCH_LIFE_RUNS`: which lives, in order, default
//! `full,memory,full,tools,trainer,motivator`; `BATOS_BENCH_LIFE_LIMIT`: the first N curriculum tasks, default
//! all 60; `BATOS_BENCH_LIFE_REPORT_ONLY=1`: only the report and chart of the lives finished so far); under
//! `cargo test` one life of two tasks with a two-question exam, a smoke test of the same code. Every life starts
//! from the same image: an empty mind on the shipped settings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/e2e/support/daemon.rs"]
mod daemon;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use batos_protocol::life::{report, LifeRecord};
use serde_json::json;

use daemon::{free_port, log_level, model_path, repo, shipped, Daemon, Edit};

/// The shipped settings on the embedded model (the harness's test-only overrides undone).
fn edits() -> Vec<Edit> {
    let model = model_path();
    let mut v: Vec<Edit> = vec![
        log_level("warn"),
        Box::new(move |doc| {
            doc["llm"]["backend"] = toml_edit::value("embedded");
            doc["llm"]["embedded"]["model_path"] = toml_edit::value(model.as_str());
        }),
    ];
    for (t, k) in [
        ("llm", "request_timeout_ms"),
        ("orchestrator", "route"),
        ("orchestrator", "min_critique_words"),
        ("orchestrator", "critique_repeat_similarity"),
        ("curator", "enabled"),
        ("motivator", "enabled"),
        ("tools", "pool_size"),
        ("tools", "timeout_ms"),
    ] {
        v.push(shipped(t, k));
    }
    v
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// The daemon of the life in `dir`: its config written once (the shipped settings), reused after.
fn daemon_for(dir: &Path) -> Daemon {
    if !dir.join("config/settings.toml").exists() {
        let closed = format!("http://127.0.0.1:{}", free_port());
        let d = Daemon::prepare(&closed, edits());
        copy_dir(&d.dir.path().join("config"), &dir.join("config"));
    }
    let logs = tempfile::TempDir::new_in(dir).unwrap();
    Daemon::at(logs, dir.join("config/settings.toml"))
}

/// Runs (or resumes) the life in `dir` to its end; its record.
async fn live(
    dir: &Path,
    ablate: Option<&str>,
    curriculum: &str,
    exam: &str,
    every: u32,
    limit: Option<u32>,
) -> LifeRecord {
    std::fs::create_dir_all(dir).unwrap();
    let done = dir.join("record.json");
    if let Some(r) = std::fs::read(&done)
        .ok()
        .and_then(|b| serde_json::from_slice::<LifeRecord>(&b).ok())
    {
        println!("{}: finished earlier ({})", dir.display(), r.summary.status);
        return r;
    }
    let mut d = daemon_for(dir);
    d.spawn();
    d.wait_ready().await;
    let mut c = d.client();
    let id_file = dir.join("life.id");
    let id = match std::fs::read_to_string(&id_file) {
        Ok(id) => {
            println!("{}: resuming life {id}", dir.display());
            id.trim().to_string()
        }
        Err(_) => {
            let r = c
                .request(
                    "life_run",
                    json!({"curriculum": curriculum, "exam": exam, "every": every, "limit": limit,
                           "ablate": ablate, "name": if ablate.is_some() { "bench" } else { "bench full" }}),
                )
                .await
                .unwrap();
            let id = r["id"].as_str().unwrap().to_string();
            std::fs::write(&id_file, &id).unwrap();
            println!("{}: life {id} started", dir.display());
            id
        }
    };
    let started = Instant::now();
    let mut seen = (u32::MAX, usize::MAX);
    let rec = loop {
        let v = c.request("life_get", json!({ "id": id })).await.unwrap();
        let r: LifeRecord = serde_json::from_value(v).unwrap();
        if (r.summary.done, r.exams.len()) != seen {
            seen = (r.summary.done, r.exams.len());
            let last = r.exams.last();
            println!(
                "  {:>6.0} s  task {:>2}/{}  exams {}  last point {}",
                started.elapsed().as_secs_f64(),
                r.summary.done,
                r.summary.total,
                r.exams.len(),
                last.map(|e| format!("{} @{}: {:.1} %", e.phase, e.at_task, e.check_pct))
                    .unwrap_or("-".into())
            );
        }
        if r.summary.status != "running" {
            break r;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    std::fs::write(&done, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
    d.terminate();
    rec
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let curriculum = std::fs::read_to_string(repo().join("config/life/curriculum.jsonl")).unwrap();
    let exam = std::fs::read_to_string(repo().join("config/life/exam.jsonl")).unwrap();
    if !full {
        let dir = tempfile::tempdir().unwrap();
        let two: String = exam
            .lines()
            .filter(|l| l.contains("\"life-recall-01\"") || l.contains("\"conv-1\""))
            .collect::<Vec<_>>()
            .join("\n");
        let rec = rt.block_on(live(dir.path(), None, &curriculum, &two, 1, Some(2)));
        assert_eq!(rec.summary.status, "done", "{:?}", rec.summary);
        assert_eq!(rec.exams.len(), 3, "start, one check, end");
        println!(
            "smoke: a life of two tasks\n{}",
            batos_client::life_cli::tables(&report(&[rec]))
        );
        return;
    }
    let root = std::env::var("BATOS_BENCH_LIFE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/life-bench"));
    let runs = std::env::var("BATOS_BENCH_LIFE_RUNS")
        .unwrap_or_else(|_| "full,memory,full,tools,trainer,motivator".into());
    let every: u32 = std::env::var("BATOS_BENCH_LIFE_EVERY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let limit: Option<u32> = std::env::var("BATOS_BENCH_LIFE_LIMIT")
        .ok()
        .and_then(|s| s.parse().ok());
    // `BATOS_BENCH_LIFE_REPORT_ONLY=1`: no life is run or resumed; the report is drawn from the finished ones.
    let report_only = std::env::var("BATOS_BENCH_LIFE_REPORT_ONLY").is_ok_and(|v| v == "1");
    let mut records = Vec::new();
    for (i, label) in runs.split(',').map(str::trim).enumerate() {
        let ablate = (label != "full").then_some(label);
        let dir = root.join(format!("run-{i}-{label}"));
        if report_only {
            if let Some(r) = std::fs::read(dir.join("record.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<LifeRecord>(&b).ok())
            {
                records.push(r);
            }
            continue;
        }
        println!("life {} ({label}) in {}", i + 1, dir.display());
        let rec = rt.block_on(live(&dir, ablate, &curriculum, &exam, every, limit));
        println!(
            "{}",
            batos_client::life_cli::tables(&report(std::slice::from_ref(&rec)))
        );
        records.push(rec);
    }
    let r = report(&records);
    println!("{}", batos_client::life_cli::tables(&r));
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    let chart = root.join("life-curve.svg");
    match batos_client::life_cli::draw(&r, &chart) {
        Ok(()) => println!("chart: {}", chart.display()),
        Err(e) => println!("no chart: {e}"),
    }
}
