//! Request-id dedupe: a retried request (same id) within the window gets the first reply, and never runs twice,
//! even while the first execution is still in flight, and even across a crash of the daemon.
//!
//! Durability: every finished reply is appended to a journal (`<data_dir>/dedupe.journal`) and synced
//! (`sync_data`) **before** [`Dedupe::finish`] returns, so the gateway never sends a reply that a restart would
//! forget. At start the journal is read back (replies younger than the window), a record torn by a crash is
//! ignored, and the file is rewritten atomically with only the live replies; while running it is rewritten
//! likewise whenever more than half of it is forgotten replies.
//!
//! Journal format: an 8-byte magic, then one record per reply, all integers little-endian:
//! `[u32 len][u32 fnv1a32(body)][body]` where `body` is `[u64 unix_ms][u16 id_len][id][reply]` and `len` is the
//! length of `body`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

/// What a request should do given its id.
pub enum Begin {
    /// First time seen: execute, then call [`Dedupe::finish`].
    Execute,
    /// Already executing: wait for its reply.
    Wait(oneshot::Receiver<Arc<Vec<u8>>>),
    /// Already answered: send this reply again.
    Replay(Arc<Vec<u8>>),
}

/// First bytes of a journal file (format version 1).
const MAGIC: &[u8; 8] = b"BDDJRN01";
/// Bytes before a record's body: `len` and the checksum.
const RECORD_HEADER: usize = 8;
/// Bytes of a body before the id: `unix_ms` and `id_len`.
const BODY_HEADER: usize = 10;
/// The journal is compacted while running only once it is at least this large (and mostly forgotten replies).
const COMPACT_MIN_BYTES: u64 = 1 << 20;

/// A remembered reply.
struct Done {
    reply: Arc<Vec<u8>>,
    /// Key of this reply in `Inner::order`.
    seq: u64,
    /// Wall-clock completion time (what the journal stores).
    unix_ms: u64,
    /// Its size as counted against `dedupe_max_bytes`: its journal record's length.
    size: u64,
}

enum Entry {
    InFlight(Vec<oneshot::Sender<Arc<Vec<u8>>>>),
    Done(Done),
}

struct Inner {
    entries: HashMap<String, Entry>,
    /// Finished ids by completion (sequence number → completion time, id), oldest first; exactly one item per
    /// `Entry::Done`, with the same `seq`.
    order: BTreeMap<u64, (Instant, String)>,
    next_seq: u64,
    /// Sum of `Done::size` over the remembered replies.
    bytes: u64,
}

impl Inner {
    /// Forgets the reply `seq` of `id` (if `id` still maps to that reply); its `order` item is already gone.
    fn forget(&mut self, seq: u64, id: &str) {
        let size = match self.entries.get(id) {
            Some(Entry::Done(d)) if d.seq == seq => d.size,
            _ => return,
        };
        self.entries.remove(id);
        self.bytes = self.bytes.saturating_sub(size);
    }
}

/// The journal file, behind its own lock: appends and rewrites never interleave.
struct Journal {
    path: PathBuf,
    /// Opened for appending; `None` when the file is in doubt (a failed write) until it is rewritten.
    file: Option<File>,
    /// Bytes in the file: the magic and whole records.
    len: u64,
    /// Tickets below this one have been handled (written, or found unwritable, and remembered).
    handled: u64,
    /// A write failed (or the file was never written): rewrite it from memory before the next append.
    needs_rewrite: bool,
}

impl Journal {
    /// Appends encoded records and syncs them. On failure the file is in doubt: it is rewritten from memory
    /// before the next append.
    fn append(&mut self, record: &[u8]) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("the journal is not open"));
        };
        match file.write_all(record).and_then(|()| file.sync_data()) {
            Ok(()) => {
                self.len += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.file = None;
                self.needs_rewrite = true;
                Err(e)
            }
        }
    }

    /// Whether more than half of the file is forgotten replies, given `live` bytes of remembered ones.
    fn should_compact(&self, live: u64) -> bool {
        self.len > COMPACT_MIN_BYTES
            && self.len.saturating_sub(MAGIC.len() as u64) > live.saturating_mul(2)
    }
}

/// A reply waiting for the journal.
struct Pending {
    id: String,
    reply: Arc<Vec<u8>>,
}

/// Replies waiting for the journal, in arrival order: `items` hold the tickets `next - items.len()..next`.
struct Queue {
    next: u64,
    items: Vec<Pending>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// `None`: in memory only.
    journal: Option<Mutex<Journal>>,
    /// Replies waiting for the journal; whoever holds the journal lock writes all of them at once (one
    /// `sync_data` for the batch: group commit).
    queue: Mutex<Queue>,
    window: Duration,
    capacity: usize,
    max_bytes: u64,
}

/// The dedupe table, keyed by request id alone: an id is remembered while in flight and then for
/// `gateway.dedupe_window_ms`, at most `gateway.dedupe_capacity` replies and `gateway.dedupe_max_bytes` bytes
/// of them (oldest forgotten first). Opened with [`Dedupe::open`], it survives a crash of the daemon.
pub struct Dedupe {
    shared: Arc<Shared>,
}

impl Dedupe {
    /// An in-memory table (forgotten when the process ends) remembering replies for `window`, at most
    /// `capacity` of them and at most `max_bytes` bytes of them (each reply counted with its id, as its journal
    /// record; the newest reply is kept even when it alone is larger).
    pub fn new(window: Duration, capacity: usize, max_bytes: u64) -> Self {
        Self {
            shared: Arc::new(Shared::new(window, capacity, max_bytes, None)),
        }
    }

    /// A table like [`Dedupe::new`] whose replies are also kept in the journal file `path` (created if missing):
    /// loads the replies still within `window` and rewrites the file with only those (dropping a record torn by
    /// a crash, and expired ones). A file that is not a journal is renamed to `<path>.corrupt` and replaced.
    pub fn open(
        path: &Path,
        window: Duration,
        capacity: usize,
        max_bytes: u64,
    ) -> io::Result<Self> {
        let journal = Journal {
            path: path.to_path_buf(),
            file: None,
            len: 0,
            handled: 0,
            needs_rewrite: true,
        };
        let shared = Shared::new(window, capacity, max_bytes, Some(Mutex::new(journal)));
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (records, good) = if bytes.starts_with(MAGIC) {
            parse(&bytes)
        } else if MAGIC.starts_with(&bytes) {
            // Empty, or torn while it was being created: nothing was ever recorded in it.
            (Vec::new(), bytes.len())
        } else {
            let mut aside = path.as_os_str().to_owned();
            aside.push(".corrupt");
            let aside = PathBuf::from(aside);
            tracing::warn!(event = "dedupe.journal_corrupt", path = %path.display(), aside = %aside.display(), "not a dedupe journal; set aside and started empty");
            if let Err(e) = fs::rename(path, &aside) {
                tracing::warn!(event = "dedupe.journal_corrupt", path = %path.display(), error = %e, "could not set the file aside; it will be replaced");
            }
            (Vec::new(), bytes.len())
        };
        if good < bytes.len() {
            tracing::warn!(event = "dedupe.journal_torn", path = %path.display(), ignored_bytes = bytes.len() - good, "ignored the end of the dedupe journal (a record torn by a crash)");
        }
        let now_ms = unix_ms_now();
        let now = Instant::now();
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let mut loaded = 0usize;
        for r in records {
            let age = now_ms.saturating_sub(r.unix_ms);
            if age > window_ms {
                continue;
            }
            let at = now.checked_sub(Duration::from_millis(age)).unwrap_or(now);
            shared.remember(&r.id, Arc::new(r.reply), r.unix_ms, at);
            loaded += 1;
        }
        if let Some(journal) = &shared.journal {
            let mut j = lock(journal);
            shared.rewrite(&mut j)?;
        }
        let remembered = shared.lock().order.len();
        tracing::info!(event = "dedupe.loaded", path = %path.display(), loaded, remembered, "dedupe journal loaded");
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// Registers a request id.
    pub fn begin(&self, id: &str) -> Begin {
        let shared = &self.shared;
        let mut inner = shared.lock();
        shared.expire(&mut inner);
        match inner.entries.get_mut(id) {
            Some(Entry::Done(d)) => Begin::Replay(d.reply.clone()),
            Some(Entry::InFlight(waiters)) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Begin::Wait(rx)
            }
            None => {
                inner
                    .entries
                    .insert(id.to_string(), Entry::InFlight(Vec::new()));
                Begin::Execute
            }
        }
    }

    /// Records the reply of an executed request — durably, when the table has a journal — and then hands it
    /// to every retry that waited for it. Send the reply only after this returns: a reply a client has seen is
    /// then never forgotten by a crash (within the window). The file work runs on a blocking thread.
    ///
    /// If the journal cannot be written the reply is still remembered in memory (and written with the next
    /// rewrite of the journal); the failure is logged.
    pub async fn finish(&self, id: &str, reply: Arc<Vec<u8>>, durable: bool) {
        if self.shared.journal.is_none() || !durable {
            self.shared
                .remember(id, reply, unix_ms_now(), Instant::now());
            return;
        }
        let shared = Arc::clone(&self.shared);
        let owned = id.to_string();
        let for_record = Arc::clone(&reply);
        if let Err(e) = tokio::task::spawn_blocking(move || shared.record(owned, for_record)).await
        {
            // Cancelled (the runtime is stopping) or panicked: still answer the waiters.
            tracing::error!(event = "dedupe.record_failed", error = %e, "reply not recorded in the dedupe journal");
            self.shared
                .remember(id, reply, unix_ms_now(), Instant::now());
        }
    }
}

impl Shared {
    fn new(
        window: Duration,
        capacity: usize,
        max_bytes: u64,
        journal: Option<Mutex<Journal>>,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: BTreeMap::new(),
                next_seq: 0,
                bytes: 0,
            }),
            journal,
            queue: Mutex::new(Queue {
                next: 0,
                items: Vec::new(),
            }),
            window,
            capacity,
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Appends the reply to the journal (synced), then remembers it; compacts the journal when most of it is
    /// forgotten. Blocking: runs on a blocking thread. Replies queued by other threads meanwhile are written in
    /// the same batch, with one `sync_data`; a thread whose reply another one wrote just returns. The journal
    /// lock is held from the write to the remembering, so a rewrite never misses a reply that was appended.
    fn record(&self, id: String, reply: Arc<Vec<u8>>) {
        let Some(journal) = &self.journal else {
            self.remember(&id, reply, unix_ms_now(), Instant::now());
            return;
        };
        let ticket = {
            let mut q = lock(&self.queue);
            let t = q.next;
            q.next += 1;
            q.items.push(Pending { id, reply });
            t
        };
        let mut j = lock(journal);
        if ticket < j.handled {
            // Written and remembered by the thread that held the lock before us.
            return;
        }
        // Every reply not yet handled, ours included, in ticket order.
        let batch = std::mem::take(&mut lock(&self.queue).items);
        j.handled += batch.len() as u64;
        let path = j.path.clone();
        if j.needs_rewrite {
            // A failed write left the file in doubt: rewrite it from memory, which holds every reply since.
            if let Err(e) = self.rewrite(&mut j) {
                tracing::error!(event = "dedupe.journal_write_failed", path = %path.display(), error = %e, "cannot rewrite the dedupe journal");
            }
        }
        let unix_ms = unix_ms_now();
        let mut records = Vec::new();
        for p in &batch {
            if !encode_record(&mut records, unix_ms, &p.id, &p.reply) {
                tracing::error!(event = "dedupe.journal_write_failed", path = %path.display(), bytes = p.reply.len(), "reply too large for a journal record; remembered in memory only");
            }
        }
        let written = if j.needs_rewrite {
            Err(io::Error::other("the journal could not be rewritten"))
        } else {
            j.append(&records)
        };
        if let Err(e) = written {
            tracing::error!(event = "dedupe.journal_write_failed", path = %path.display(), replies = batch.len(), error = %e, "replies not recorded durably: a retry after a crash would run the request again");
        }
        let at = Instant::now();
        for p in batch {
            self.remember(&p.id, p.reply, unix_ms, at);
        }
        let live = {
            let mut inner = self.lock();
            self.expire(&mut inner);
            inner.bytes
        };
        if !j.needs_rewrite && j.should_compact(live) {
            if let Err(e) = self.rewrite(&mut j) {
                tracing::warn!(event = "dedupe.journal_compact_failed", path = %path.display(), error = %e, "cannot compact the dedupe journal");
            }
        }
    }

    /// Rewrites the journal atomically (temp file, fsync, rename) with the replies remembered now, and reopens
    /// it for appending. On failure the old file (and, if it was sound, its handle) stays in use.
    fn rewrite(&self, j: &mut Journal) -> io::Result<()> {
        let mut inner = self.lock();
        self.expire(&mut inner);
        let live: Vec<(u64, String, Arc<Vec<u8>>)> = inner
            .order
            .iter()
            .filter_map(|(seq, (_, id))| match inner.entries.get(id) {
                Some(Entry::Done(d)) if d.seq == *seq => {
                    Some((d.unix_ms, id.clone(), Arc::clone(&d.reply)))
                }
                _ => None,
            })
            .collect();
        drop(inner);
        let mut buf = Vec::new();
        buf.extend_from_slice(MAGIC);
        for (unix_ms, id, reply) in &live {
            // A reply too large for a record stays in memory only (it cannot be encoded).
            let _ = encode_record(&mut buf, *unix_ms, id, reply);
        }
        batos_actors::fsutil::atomic_write(&j.path, &buf)?;
        // The old handle now points at the replaced file: never append through it again.
        j.file = None;
        j.needs_rewrite = true;
        let file = OpenOptions::new().append(true).open(&j.path)?;
        j.file = Some(file);
        j.len = buf.len() as u64;
        j.needs_rewrite = false;
        Ok(())
    }

    /// Remembers `reply` as the answer to `id` (finished at `unix_ms`, `at`), wakes the retries waiting for it,
    /// and forgets the oldest replies beyond the capacity and the byte cap (never this one).
    fn remember(&self, id: &str, reply: Arc<Vec<u8>>, unix_ms: u64, at: Instant) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let size = record_size(id, &reply);
        let done = Done {
            reply: reply.clone(),
            seq,
            unix_ms,
            size,
        };
        match inner.entries.insert(id.to_string(), Entry::Done(done)) {
            Some(Entry::InFlight(waiters)) => {
                for w in waiters {
                    let _ = w.send(reply.clone());
                }
            }
            Some(Entry::Done(old)) => {
                inner.order.remove(&old.seq);
                inner.bytes = inner.bytes.saturating_sub(old.size);
            }
            None => {}
        }
        inner.order.insert(seq, (at, id.to_string()));
        inner.bytes = inner.bytes.saturating_add(size);
        while inner.order.len() > self.capacity
            || (inner.bytes > self.max_bytes && inner.order.len() > 1)
        {
            match inner.order.pop_first() {
                Some((old, (_, old_id))) if old != seq => inner.forget(old, &old_id),
                Some((newest, item)) => {
                    // Only this reply is left: keep it.
                    inner.order.insert(newest, item);
                    break;
                }
                None => break,
            }
        }
    }

    /// Forgets the replies older than the window.
    fn expire(&self, inner: &mut Inner) {
        let now = Instant::now();
        while let Some((_, (at, _))) = inner.order.first_key_value() {
            if now.saturating_duration_since(*at) <= self.window {
                break;
            }
            if let Some((seq, (_, id))) = inner.order.pop_first() {
                inner.forget(seq, &id);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// FNV-1a, 32 bits: catches a record whose length arrived but whose bytes did not.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Bytes of the journal record of `reply` to `id` (what counts against the byte cap).
fn record_size(id: &str, reply: &[u8]) -> u64 {
    (RECORD_HEADER + BODY_HEADER + id.len() + reply.len()) as u64
}

/// Appends the record of `reply` to `id` to `buf`; `false` (and `buf` unchanged) when it cannot be encoded
/// (an id over 65 535 bytes or a body over 4 GiB).
fn encode_record(buf: &mut Vec<u8>, unix_ms: u64, id: &str, reply: &[u8]) -> bool {
    let Ok(id_len) = u16::try_from(id.len()) else {
        return false;
    };
    let Ok(body_len) = u32::try_from(BODY_HEADER + id.len() + reply.len()) else {
        return false;
    };
    let start = buf.len();
    buf.reserve(RECORD_HEADER + BODY_HEADER + id.len() + reply.len());
    buf.extend_from_slice(&body_len.to_le_bytes());
    buf.extend_from_slice(&[0u8; 4]);
    buf.extend_from_slice(&unix_ms.to_le_bytes());
    buf.extend_from_slice(&id_len.to_le_bytes());
    buf.extend_from_slice(id.as_bytes());
    buf.extend_from_slice(reply);
    let sum = checksum(&buf[start + RECORD_HEADER..]);
    buf[start + 4..start + RECORD_HEADER].copy_from_slice(&sum.to_le_bytes());
    true
}

/// One record read back from the journal.
struct Loaded {
    unix_ms: u64,
    id: String,
    reply: Vec<u8>,
}

/// The whole records of a journal (which starts with [`MAGIC`]), and how many bytes of it they and the magic
/// cover: reading stops at the first record that is incomplete or fails its checksum.
fn parse(bytes: &[u8]) -> (Vec<Loaded>, usize) {
    let mut out = Vec::new();
    let mut pos = MAGIC.len();
    while pos < bytes.len() {
        let Some((record, used)) = parse_one(&bytes[pos..]) else {
            break;
        };
        out.push(record);
        pos += used;
    }
    (out, pos.min(bytes.len()))
}

/// The record at the start of `b` and its length in bytes.
fn parse_one(b: &[u8]) -> Option<(Loaded, usize)> {
    let len = usize::try_from(u32::from_le_bytes(b.get(0..4)?.try_into().ok()?)).ok()?;
    let sum = u32::from_le_bytes(b.get(4..RECORD_HEADER)?.try_into().ok()?);
    let body = b.get(RECORD_HEADER..RECORD_HEADER.checked_add(len)?)?;
    if checksum(body) != sum {
        return None;
    }
    let unix_ms = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let id_len = usize::from(u16::from_le_bytes(
        body.get(8..BODY_HEADER)?.try_into().ok()?,
    ));
    let id = std::str::from_utf8(body.get(BODY_HEADER..BODY_HEADER + id_len)?).ok()?;
    let reply = body.get(BODY_HEADER + id_len..)?.to_vec();
    Some((
        Loaded {
            unix_ms,
            id: id.to_string(),
            reply,
        },
        RECORD_HEADER + len,
    ))
}

#[cfg(test)]
mod tests {
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
}
