//! The exam (issue 27) on the embedded model: the shipped question set (config/exam/questions.jsonl) through a
//! fresh daemon on the shipped settings, the bare model beside it in the same run, several runs; then the
//! Contrapunto (`orchestrator.route = "full"`) on the first questions of each category, the measurement the
//! direct path was decided by. Prints each run's per-category table, the median per category over the runs,
//! and the Curator judge's agreement with the exam (first run).
//!
//! `cargo bench --bench exam` (`BATOS_BENCH_EXAM_RUNS` runs, default 3; `BATOS_BENCH_EXAM_FULL` questions per
//! category through the Contrapunto, default 4, 0 = skip); under `cargo test` one short run of two questions,
//! a smoke test of the same code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../tests/e2e/support/daemon.rs"]
mod daemon;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use batos_protocol::exam::{parse_set, table, ExamResult};
use serde_json::json;

use daemon::{free_port, log_level, model_path, repo, shipped, Daemon};

/// One exam run on a fresh daemon; `route` is `orchestrator.route`.
async fn run(
    set: &str,
    route: &'static str,
    baseline: bool,
    judge: bool,
) -> (ExamResult, serde_json::Value) {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let model = model_path();
    let d = Daemon::start(
        &closed,
        vec![
            log_level("warn"),
            Box::new(move |doc| {
                doc["llm"]["backend"] = toml_edit::value("embedded");
                doc["llm"]["embedded"]["model_path"] = toml_edit::value(model.as_str());
                doc["orchestrator"]["route"] = toml_edit::value(route);
            }),
            shipped("llm", "request_timeout_ms"),
            shipped("orchestrator", "min_critique_words"),
            shipped("orchestrator", "critique_repeat_similarity"),
            // The judge's agreement is recorded by the Curator.
            shipped("curator", "enabled"),
        ],
    )
    .await;
    let mut c = d.client();
    let r = c
        .request(
            "exam_run",
            json!({"set": set, "name": format!("bench-{route}"), "baseline": if baseline {"bare"} else {"none"}, "judge": judge}),
        )
        .await
        .unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let result = loop {
        let r = c.request("exam_get", json!({ "id": id })).await.unwrap();
        if r["summary"]["status"] != "running" {
            break serde_json::from_value::<ExamResult>(r).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(4 * 3600),
            "the exam did not end"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let stats = c
        .request("curator_stats", json!({}))
        .await
        .unwrap_or_default();
    (result, stats)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("BATOS_BENCH_EXAM_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let per_category: usize = std::env::var("BATOS_BENCH_EXAM_FULL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let text = std::fs::read_to_string(repo().join("config/exam/questions.jsonl")).unwrap();
    let set = parse_set(&text).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if !full {
        let two: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"fact-01\"") || l.contains("\"comp-01\""))
            .collect();
        let (r, _) = rt.block_on(run(&two.join("\n"), "auto", true, false));
        assert_eq!(r.summary.status, "done", "{:?}", r.summary);
        println!("smoke: two questions\n{}", table(&r.summary));
        return;
    }
    let mut per_cat: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut overall = (Vec::new(), Vec::new());
    for i in 0..runs {
        let (r, stats) = rt.block_on(run(&text, "auto", true, i == 0));
        println!(
            "run {} of {runs} ({} questions): {}\n{}",
            i + 1,
            set.len(),
            r.summary.id,
            table(&r.summary)
        );
        if i == 0 {
            println!(
                "curator_stats.judge_agreement: {}\n",
                stats.get("judge_agreement").cloned().unwrap_or_default()
            );
        }
        for c in &r.summary.categories {
            let e = per_cat.entry(c.category.clone()).or_default();
            e.0.push(c.society_pct());
            e.1.push(c.bare_pct().unwrap_or(0.0));
        }
        overall.0.push(r.summary.society_pct);
        overall.1.push(r.summary.bare_pct.unwrap_or(0.0));
    }
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[(v.len() - 1) / 2]
    };
    println!("| category | society (runs) | bare (runs) | median Δ |\n|---|---|---|---|");
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    for (c, (s, b)) in per_cat
        .iter()
        .chain(std::iter::once((&"overall".to_string(), &overall)))
    {
        println!(
            "| {c} | {} | {} | {:+.0} |",
            fmt(s),
            fmt(b),
            med(s) - med(b)
        );
    }
    if per_category > 0 {
        // The same first questions of each category through the Contrapunto and through the shipped route.
        let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
        let subset: Vec<&str> = text
            .lines()
            .filter(|l| {
                let Ok(q) = serde_json::from_str::<serde_json::Value>(l) else {
                    return false;
                };
                let Some(cat) = q["category"].as_str() else {
                    return false;
                };
                let n = taken
                    .entry(
                        set.iter()
                            .find(|x| x.category == cat)
                            .map(|x| x.category.as_str())
                            .unwrap_or(""),
                    )
                    .or_insert(0);
                *n += 1;
                *n <= per_category
            })
            .collect();
        let subset = subset.join("\n");
        let (full_r, _) = rt.block_on(run(&subset, "full", false, false));
        let (auto_r, _) = rt.block_on(run(&subset, "auto", false, false));
        println!(
            "route = \"full\" (the Contrapunto) on {per_category} questions per category:\n{}",
            table(&full_r.summary)
        );
        println!(
            "route = \"auto\" (shipped) on the same questions:\n{}",
            table(&auto_r.summary)
        );
    }
}
