//! Request-id dedupe: a retried request (same id) within the window gets the first reply, and never runs twice,
//! even while the first execution is still in flight.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

enum Entry {
    InFlight(Vec<oneshot::Sender<Arc<Vec<u8>>>>),
    Done(Arc<Vec<u8>>),
}

struct Inner {
    entries: HashMap<String, Entry>,
    /// Finished ids by completion time, oldest first.
    order: VecDeque<(Instant, String)>,
}

/// The dedupe table, keyed by request id alone: an id is remembered while in flight and then for
/// `gateway.dedupe_window_ms`, at most `gateway.dedupe_capacity` replies (oldest forgotten first).
pub struct Dedupe {
    inner: Mutex<Inner>,
    window: Duration,
    capacity: usize,
}

impl Dedupe {
    /// A table remembering replies for `window`, at most `capacity` of them.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
            window,
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a request id.
    pub fn begin(&self, id: &str) -> Begin {
        let mut inner = self.lock();
        self.expire(&mut inner);
        match inner.entries.get_mut(id) {
            Some(Entry::Done(bytes)) => Begin::Replay(bytes.clone()),
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

    /// Records the reply of an executed request and hands it to every retry that waited for it.
    pub fn finish(&self, id: &str, reply: Arc<Vec<u8>>) {
        let mut inner = self.lock();
        if let Some(Entry::InFlight(waiters)) = inner
            .entries
            .insert(id.to_string(), Entry::Done(reply.clone()))
        {
            for w in waiters {
                let _ = w.send(reply.clone());
            }
        }
        inner.order.push_back((Instant::now(), id.to_string()));
        while inner.order.len() > self.capacity {
            if let Some((_, old)) = inner.order.pop_front() {
                inner.entries.remove(&old);
            }
        }
    }

    fn expire(&self, inner: &mut Inner) {
        let now = Instant::now();
        while let Some((t, _)) = inner.order.front() {
            if now.duration_since(*t) <= self.window {
                break;
            }
            if let Some((_, id)) = inner.order.pop_front() {
                if matches!(inner.entries.get(&id), Some(Entry::Done(_))) {
                    inner.entries.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_and_waits() {
        let d = Dedupe::new(Duration::from_secs(60), 10);
        assert!(matches!(d.begin("a"), Begin::Execute));
        let Begin::Wait(mut rx) = d.begin("a") else {
            panic!("expected wait")
        };
        d.finish("a", Arc::new(vec![1]));
        assert_eq!(*rx.try_recv().unwrap(), vec![1]);
        assert!(matches!(d.begin("a"), Begin::Replay(b) if *b == vec![1]));
    }

    #[test]
    fn window_and_capacity_forget() {
        let d = Dedupe::new(Duration::from_millis(0), 10);
        assert!(matches!(d.begin("a"), Begin::Execute));
        d.finish("a", Arc::new(vec![1]));
        std::thread::sleep(Duration::from_millis(2));
        assert!(matches!(d.begin("a"), Begin::Execute));
        let d = Dedupe::new(Duration::from_secs(60), 1);
        for id in ["x", "y"] {
            assert!(matches!(d.begin(id), Begin::Execute));
            d.finish(id, Arc::new(vec![]));
        }
        assert!(matches!(d.begin("x"), Begin::Execute));
    }
}
