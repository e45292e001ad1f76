//! Killing a process at random moments of living-image saves (1,000 times) never leaves a torn image: after
//! every kill the data folder boots from an image that verifies, the newest or the one before, and nothing
//! is set aside. The child process is this test binary itself, running the image organ's real save code
//! (take the files, write the image atomically, prune old generations) in a loop until it is SIGKILLed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use batos_actors::image::boot::{boot, dir, generations, image_path};
use batos_actors::image::write::{self, Picture};
use rand::Rng;

const ENV: &str = "BATOS_IMAGE_LOOP_DIR";
const KEEP: usize = 3;
const ROUNDS: usize = 1000;

/// A small mind: 40 checkpoints of a few kilobytes and a tool.
fn seed(data: &Path) {
    std::fs::create_dir_all(data.join("checkpoints")).unwrap();
    for i in 0..40 {
        let body = format!(
            "{{\"id\":\"t{i}\",\"text\":\"{}\"}}",
            "x".repeat(2000 + i * 50)
        );
        std::fs::write(data.join(format!("checkpoints/t{i}.json")), body).unwrap();
    }
    std::fs::create_dir_all(data.join("tools/echo")).unwrap();
    std::fs::write(data.join("tools/echo/tool.json"), b"{\"name\":\"echo\"}").unwrap();
}

/// The child: changes one file and saves a new generation, forever.
#[test]
#[ignore = "run as a child process by kill_at_random_moments_of_saves"]
fn child_save_loop() {
    let Ok(data) = std::env::var(ENV) else { return };
    let data = PathBuf::from(data);
    let images = dir(&data);
    std::fs::create_dir_all(&images).unwrap();
    batos_actors::fsutil::clean_stale_temps(&images);
    let mut generation = generations(&images).first().map(|(g, _)| *g).unwrap_or(0);
    println!("ready");
    loop {
        generation += 1;
        std::fs::write(data.join("amendments.json"), format!("[{generation}]")).unwrap();
        let picture = Picture {
            generation,
            event_seq: generation * 10,
            seq_mark: generation * 10 + 100,
            settings: "data_dir = \"../data\"\n".into(),
            codex: "[personas]\n".into(),
            ..Default::default()
        };
        let (manifest, files) = write::take(&data, &picture, generation as f64).unwrap();
        write::write(&image_path(&images, generation), &manifest, &files, None).unwrap();
        write::prune(&images, KEEP);
    }
}

#[test]
fn kill_at_random_moments_of_saves() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    seed(&data);
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let (mut newest_seen, mut previous_used) = (0u64, 0usize);
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "child_save_loop",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, &data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("ready") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..25_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        let on_disk: Vec<u64> = generations(&dir(&data)).iter().map(|(g, _)| *g).collect();
        let b = boot(&data, 100).unwrap_or_else(|e| panic!("round {round}: boot failed: {e}"));
        assert!(
            b.set_aside.is_empty(),
            "round {round}: torn image set aside: {:?}",
            b.set_aside
        );
        assert!(
            b.restored.is_empty(),
            "round {round}: nothing was lost: {:?}",
            b.restored
        );
        if let Some(newest) = on_disk.first() {
            let used = b
                .newest
                .as_ref()
                .unwrap_or_else(|| panic!("round {round}: images {on_disk:?} on disk, none loads"))
                .generation;
            assert_eq!(
                used, *newest,
                "round {round}: the newest whole image is used"
            );
            // A save killed before its rename leaves the previous generation as the newest.
            if used == newest_seen {
                previous_used += 1;
            }
            assert!(
                used >= newest_seen,
                "round {round}: an image went back in time"
            );
            newest_seen = used;
        }
    }
    assert!(
        newest_seen > ROUNDS as u64 / 10,
        "the child saved too rarely ({newest_seen} generations)"
    );
    println!("{ROUNDS} kills: {newest_seen} generations written; {previous_used} kills fell before a save completed");
}
