//! Living-image benchmark (issue 17), a bench binary, on the image organ's own code paths:
//! - a periodic save of a mind with `BATOS_BENCH_TASKS` (default 10,000) task checkpoints (memory by pointer):
//!   time and size;
//! - an export of the same mind with `BATOS_BENCH_ROWS` (default 100,000) memory rows of 576 floats (the
//!   embedded SmolLM2's width) in a real LanceDB table: reading the rows out, and the whole file;
//! - boot: from an image into a data folder that lost everything (every file restored) vs. an empty folder
//!   with no image; and an import of the export into a new folder (files, memory rows into a new table).
//!
//! Medians of `RUNS` runs each (1 in the smoke form). Synthetic data, seeded.
//!
//! `cargo bench --profile dev --workspace --bench image` (under `cargo test` it runs a small smoke form).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use batos_actors::image::boot::{boot, dir, image_path};
use batos_actors::image::write::{self, Picture};
use batos_actors::image::MemoryRecord;
use batos_actors::memory::store::{self, NewRow};

const DIM: usize = 576;
const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A checkpoint shaped like the orchestrator's: a task with a few steps of model text.
fn checkpoint(rng: &mut StdRng, i: usize) -> String {
    let words = [
        "the", "keeper", "lamp", "tide", "answer", "draft", "critique", "plan", "river",
    ];
    let mut text = |n: usize| -> String {
        (0..n)
            .map(|_| words[rng.random_range(0..words.len())])
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "{{\"id\":\"task{i:06}\",\"text\":\"{}\",\"status\":\"done\",\"steps\":[{{\"persona\":\"ALFRED\",\"summary\":\"{}\"}},{{\"persona\":\"BRICK\",\"summary\":\"{}\"}},{{\"persona\":\"ROBIN\",\"summary\":\"{}\"}}],\"result\":\"{}\"}}",
        text(12),
        text(40),
        text(120),
        text(40),
        text(80)
    )
}

fn seed_files(data: &Path, tasks: usize) {
    let mut rng = StdRng::seed_from_u64(17);
    std::fs::create_dir_all(data.join("checkpoints")).unwrap();
    for i in 0..tasks {
        std::fs::write(
            data.join(format!("checkpoints/task{i:06}.json")),
            checkpoint(&mut rng, i),
        )
        .unwrap();
    }
    std::fs::create_dir_all(data.join("tools/echo")).unwrap();
    std::fs::write(data.join("tools/echo/tool.json"), b"{\"name\":\"echo\"}").unwrap();
    std::fs::write(data.join("amendments.json"), b"[]").unwrap();
}

async fn seed_memory(data: &Path, rows: usize) -> lancedb::Table {
    let table = store::open(&data.join("memory"), "memories", DIM)
        .await
        .unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let mut batch = Vec::new();
    for i in 0..rows {
        let v: Vec<f32> = (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect();
        batch.push(NewRow {
            id: format!("{i:032x}"),
            parent_id: None,
            kind: "detail",
            text: format!("memory row {i}: the keeper trims the lamp at dusk"),
            vector: v,
            persona: "BABS".into(),
            task_id: Some(format!("task{:06}", i % 1000)),
            created_at: i as i64,
        });
        if batch.len() == 10_000 || i + 1 == rows {
            store::add(&table, &batch, DIM).await.unwrap();
            batch.clear();
        }
    }
    table
}

fn picture(generation: u64, memory: Option<MemoryRecord>, rows: Option<Vec<u8>>) -> Picture {
    Picture {
        generation,
        event_seq: 123_456,
        seq_mark: 1_123_456,
        settings: std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/settings.toml"
        ))
        .unwrap(),
        codex: std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/codex.toml"
        ))
        .unwrap(),
        memory,
        memory_rows: rows,
        ..Default::default()
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let tasks = env("BATOS_BENCH_TASKS", if full { 10_000 } else { 200 });
    let rows = env("BATOS_BENCH_ROWS", if full { 100_000 } else { 2_000 });
    let runs = if full { RUNS } else { 1 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let t = Instant::now();
    seed_files(&data, tasks);
    let table = rt.block_on(seed_memory(&data, rows));
    println!(
        "image bench: {tasks} task checkpoints, {rows} memory rows of {DIM} floats (seeded in {:.1} s); medians of {runs} runs",
        t.elapsed().as_secs_f64()
    );

    // A periodic save: the files, memory by pointer.
    let record = |included| MemoryRecord {
        table: "memories".into(),
        version: 1,
        rows: rows as u64,
        included,
    };
    let (mut secs, mut size) = (Vec::new(), 0);
    for g in 1..=runs as u64 {
        let t = Instant::now();
        let (m, files) = write::take(&data, &picture(g, Some(record(false)), None), 0.0).unwrap();
        size = write::write(&image_path(&dir(&data), g), &m, &files, None).unwrap();
        secs.push(t.elapsed().as_secs_f64());
    }
    println!(
        "save (memory by pointer): {:.3} s, {:.1} MiB",
        median(secs),
        size as f64 / 1048576.0
    );

    // An export: every memory row out of LanceDB, then the whole file.
    let (mut dump_s, mut export_s, mut ipc_len, mut export_size) = (Vec::new(), Vec::new(), 0, 0);
    let file = scratch.path().join("mind.batos");
    for _ in 0..runs {
        let t = Instant::now();
        let (_, _, ipc) = rt.block_on(store::image::dump(&table, true)).unwrap();
        let ipc = ipc.unwrap();
        dump_s.push(t.elapsed().as_secs_f64());
        ipc_len = ipc.len();
        let (m, files) = write::take(&data, &picture(1, Some(record(true)), None), 0.0).unwrap();
        export_size = write::write(&file, &m, &files, Some(&ipc)).unwrap();
        export_s.push(t.elapsed().as_secs_f64());
    }
    println!(
        "export: rows out of LanceDB {:.3} s ({:.1} MiB of Arrow IPC); whole export {:.3} s, {:.1} MiB",
        median(dump_s),
        ipc_len as f64 / 1048576.0,
        median(export_s),
        export_size as f64 / 1048576.0
    );

    // Boot: from the newest image into a folder that lost everything, vs. an empty folder.
    let (mut from_image, mut empty, mut import_s) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let lost = scratch.path().join(format!("lost{i}"));
        std::fs::create_dir_all(dir(&lost)).unwrap();
        std::fs::copy(
            image_path(&dir(&data), runs as u64),
            image_path(&dir(&lost), 1),
        )
        .unwrap();
        let t = Instant::now();
        let b = boot(&lost, 1_000_000).unwrap();
        from_image.push(t.elapsed().as_secs_f64());
        assert_eq!(b.restored.len(), 3, "{:?}", b.restored);
        let fresh = scratch.path().join(format!("fresh{i}"));
        let t = Instant::now();
        boot(&fresh, 1_000_000).unwrap();
        empty.push(t.elapsed().as_secs_f64());
        let new = scratch.path().join(format!("import{i}"));
        let t = Instant::now();
        let r = rt
            .block_on(batos_actors::image::import(
                &file,
                &new.join("data"),
                &new.join("config"),
            ))
            .unwrap();
        import_s.push(t.elapsed().as_secs_f64());
        assert_eq!(r.memory_rows, Some(rows as u64));
    }
    println!(
        "boot from an image (every file restored): {:.3} s; boot of an empty folder: {:.4} s; import of the export: {:.3} s",
        median(from_image),
        median(empty),
        median(import_s)
    );
}
