//! What a life's job carries and how it measures itself: the job's context (its arguments, its store, the
//! task it waits on) and the meter of a phase's wall and CPU time. Below `run.rs` and `task.rs`, which both
//! use them.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::store::LifeStore;
use super::LifeArgs;

/// The task a life waits on now (cancelled when the life is).
pub(super) type InFlight = Arc<Mutex<Option<String>>>;

/// What a life's job holds.
#[derive(Clone)]
pub(super) struct RunCtx {
    pub args: LifeArgs,
    pub store: LifeStore,
    pub in_flight: InFlight,
}

/// CPU seconds the daemon's process has used (user + system; Linux's USER_HZ of 100 ticks per second).
fn cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the state field here.
    (tick(11) + tick(12)) / 100.0
}

/// A phase's wall and CPU time, added to the record's cost when it ends.
pub(super) struct Meter(Instant, f64);

impl Meter {
    pub(super) fn start() -> Self {
        Self(Instant::now(), cpu_s())
    }

    pub(super) fn stop(self) -> (f64, f64) {
        (self.0.elapsed().as_secs_f64(), (cpu_s() - self.1).max(0.0))
    }
}
