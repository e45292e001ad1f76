//! The daemon's event channel: a subscriber for task and model events, and waiting for one event.

use std::time::{Duration, Instant};

use zeromq::prelude::*;
use zeromq::SubSocket;

use batos_protocol::EventBody;

use super::daemon::Daemon;

/// Subscribes to the `task.` and `model.` events, once the subscription has reached the publisher.
pub async fn events(d: &Daemon) -> SubSocket {
    let sub = batos_client::client::subscriber(&d.client_config(), &["task.", "model."])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sub
}

/// The next event matching `pred` (panics after `secs`).
pub async fn wait_event(
    sub: &mut SubSocket,
    secs: u64,
    mut pred: impl FnMut(&EventBody) -> bool,
) -> EventBody {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, sub.recv())
            .await
            .expect("event in time")
            .unwrap();
        let ev: EventBody = rmp_serde::from_slice(m.into_vec().get(1).unwrap()).unwrap();
        if pred(&ev) {
            return ev;
        }
    }
}
