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
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

mod record;

use record::{encode_record, lock, parse, record_size, unix_ms_now};

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

#[cfg(test)]
mod tests;
