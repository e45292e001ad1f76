//! Unit tests of the dedupe table and its journal.

use super::*;

const MIB: u64 = 1 << 20;

fn journal_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("dedupe.journal")
}

fn open(path: &Path) -> Dedupe {
    Dedupe::open(path, Duration::from_secs(60), 100, 64 * MIB).unwrap()
}

async fn run_once(d: &Dedupe, id: &str, reply: &[u8]) {
    assert!(matches!(d.begin(id), Begin::Execute), "{id} ran before");
    d.finish(id, Arc::new(reply.to_vec()), true).await;
}

fn replays(d: &Dedupe, id: &str, reply: &[u8]) -> bool {
    matches!(d.begin(id), Begin::Replay(b) if b.as_slice() == reply)
}

#[tokio::test]
async fn replays_and_waits() {
    let d = Dedupe::new(Duration::from_secs(60), 10, MIB);
    assert!(matches!(d.begin("a"), Begin::Execute));
    let Begin::Wait(mut rx) = d.begin("a") else {
        panic!("expected wait")
    };
    d.finish("a", Arc::new(vec![1]), true).await;
    assert_eq!(*rx.try_recv().unwrap(), vec![1]);
    assert!(matches!(d.begin("a"), Begin::Replay(b) if *b == vec![1]));
}

#[tokio::test]
async fn window_and_capacity_forget() {
    let d = Dedupe::new(Duration::from_millis(0), 10, MIB);
    assert!(matches!(d.begin("a"), Begin::Execute));
    d.finish("a", Arc::new(vec![1]), true).await;
    std::thread::sleep(Duration::from_millis(2));
    assert!(matches!(d.begin("a"), Begin::Execute));
    let d = Dedupe::new(Duration::from_secs(60), 1, MIB);
    for id in ["x", "y"] {
        assert!(matches!(d.begin(id), Begin::Execute));
        d.finish(id, Arc::new(vec![]), true).await;
    }
    assert!(matches!(d.begin("x"), Begin::Execute));
    assert!(replays(&d, "y", &[]));
}

#[tokio::test]
async fn a_retry_waiting_on_a_journaled_request_gets_the_reply() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(&journal_path(&dir));
    assert!(matches!(d.begin("a"), Begin::Execute));
    let Begin::Wait(rx) = d.begin("a") else {
        panic!("expected wait")
    };
    d.finish("a", Arc::new(vec![7]), true).await;
    assert_eq!(*rx.await.unwrap(), vec![7]);
}

#[tokio::test]
async fn the_journal_round_trips_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    {
        let d = open(&path);
        run_once(&d, "a", b"first reply").await;
        run_once(&d, "b", b"").await;
        run_once(&d, "\u{e9}t\u{e9}", &[0, 255, 1]).await;
    }
    let d = open(&path);
    assert!(replays(&d, "a", b"first reply"));
    assert!(replays(&d, "b", b""));
    assert!(replays(&d, "\u{e9}t\u{e9}", &[0, 255, 1]));
    assert!(matches!(d.begin("c"), Begin::Execute));
    // Only temp-free, whole files are left behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["dedupe.journal".to_string()]);
    // A third life still has them (the start-up rewrite kept them).
    drop(d);
    let d = open(&path);
    assert!(replays(&d, "a", b"first reply"));
}

#[tokio::test]
async fn a_torn_last_record_is_ignored_and_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    {
        let d = open(&path);
        run_once(&d, "a", b"kept").await;
        run_once(&d, "b", b"torn by the crash").await;
    }
    let whole = fs::read(&path).unwrap();
    // The crash came in the middle of b's record.
    fs::write(&path, &whole[..whole.len() - 5]).unwrap();
    let d = open(&path);
    assert!(replays(&d, "a", b"kept"));
    assert!(matches!(d.begin("b"), Begin::Execute));
    d.finish("b", Arc::new(b"second run".to_vec()), true).await;
    drop(d);
    // The torn bytes were cut off at start, so the record appended after them reads back.
    let d = open(&path);
    assert!(replays(&d, "a", b"kept"));
    assert!(replays(&d, "b", b"second run"));
    drop(d);
    // Garbage after the last record (a length whose bytes never arrived, a bad checksum) is ignored too.
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&1000u32.to_le_bytes());
    bytes.extend_from_slice(&[1, 2, 3]);
    fs::write(&path, &bytes).unwrap();
    let d = open(&path);
    assert!(replays(&d, "a", b"kept"));
    assert!(replays(&d, "b", b"second run"));
    drop(d);
    let mut bytes = fs::read(&path).unwrap();
    let mut bad = Vec::new();
    assert!(encode_record(&mut bad, unix_ms_now(), "c", b"flipped"));
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    bytes.extend_from_slice(&bad);
    fs::write(&path, &bytes).unwrap();
    let d = open(&path);
    assert!(matches!(d.begin("c"), Begin::Execute));
    assert!(replays(&d, "b", b"second run"));
}

#[tokio::test]
async fn a_file_that_is_not_a_journal_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    fs::write(&path, b"something else entirely").unwrap();
    let d = open(&path);
    assert!(matches!(d.begin("a"), Begin::Execute));
    assert!(dir.path().join("dedupe.journal.corrupt").exists());
    assert_eq!(fs::read(&path).unwrap(), MAGIC.to_vec());
}

#[tokio::test]
async fn replies_older_than_the_window_are_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    {
        let d = open(&path);
        run_once(&d, "old", b"x").await;
    }
    std::thread::sleep(Duration::from_millis(20));
    let d = Dedupe::open(&path, Duration::from_millis(5), 100, MIB).unwrap();
    assert!(matches!(d.begin("old"), Begin::Execute));
    drop(d);
    // The start-up rewrite dropped it from the file as well.
    assert_eq!(fs::read(&path).unwrap(), MAGIC.to_vec());
}

#[tokio::test]
async fn the_byte_cap_forgets_the_oldest_in_memory_and_in_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let reply = vec![9u8; 100];
    let one = record_size("a", &reply);
    // Room for two replies, not three.
    let cap = 2 * one + one / 2;
    {
        let d = Dedupe::open(&path, Duration::from_secs(60), 100, cap).unwrap();
        for id in ["a", "b", "c"] {
            run_once(&d, id, &reply).await;
        }
        assert!(matches!(d.begin("a"), Begin::Execute));
        assert!(replays(&d, "b", &reply));
        assert!(replays(&d, "c", &reply));
        assert_eq!(d.shared.lock().bytes, 2 * one);
    }
    let d = Dedupe::open(&path, Duration::from_secs(60), 100, cap).unwrap();
    assert!(matches!(d.begin("a"), Begin::Execute));
    assert!(replays(&d, "b", &reply));
    assert!(replays(&d, "c", &reply));
    drop(d);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        MAGIC.len() as u64 + 2 * one
    );
    // A reply larger than the whole cap is still kept while it is the newest.
    let d = Dedupe::open(&path, Duration::from_secs(60), 100, cap).unwrap();
    let big = vec![1u8; 1000];
    run_once(&d, "big", &big).await;
    assert!(replays(&d, "big", &big));
    assert!(matches!(d.begin("b"), Begin::Execute));
}

#[tokio::test]
async fn a_journal_mostly_of_forgotten_replies_is_compacted_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = journal_path(&dir);
    let reply = vec![5u8; 64 * 1024];
    // Each reply pushes the previous one out, so the file soon holds mostly forgotten replies.
    let cap = 100 * 1024;
    let d = Dedupe::open(&path, Duration::from_secs(60), 1000, cap).unwrap();
    for i in 0..20 {
        run_once(&d, &format!("bulk-{i}"), &reply).await;
    }
    // Without compaction the file would hold all 20 records (over 1.2 MiB).
    let len = fs::metadata(&path).unwrap().len();
    assert!(len < COMPACT_MIN_BYTES, "{len}");
    assert!(len >= MAGIC.len() as u64 + record_size("bulk-19", &reply));
    drop(d);
    let d = Dedupe::open(&path, Duration::from_secs(60), 1000, cap).unwrap();
    assert!(replays(&d, "bulk-19", &reply));
    assert!(matches!(d.begin("bulk-18"), Begin::Execute));
    assert!(matches!(d.begin("bulk-0"), Begin::Execute));
}
