use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::*;
use crate::events::{Event, EventHub};

/// A worker that records its lifecycle and panics or stops on request.
struct Probe {
    id: String,
    log: Arc<Mutex<Vec<String>>>,
}

#[derive(ractor_cluster::RactorMessage)]
enum ProbeMsg {
    Panic,
    Stop,
}

impl Actor for Probe {
    type Msg = ProbeMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<ProbeMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        self.log.lock().unwrap().push(format!("start {}", self.id));
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<ProbeMsg>, _: &mut ()) -> Result<(), ActorProcessingErr> {
        self.log.lock().unwrap().push(format!("stop {}", self.id));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ProbeMsg>,
        msg: ProbeMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProbeMsg::Panic => panic!("probe {} told to crash", self.id),
            ProbeMsg::Stop => myself.stop(Some("done".into())),
        }
        Ok(())
    }
}

fn probe(id: &str, restart: Restart, log: &Arc<Mutex<Vec<String>>>) -> ChildSpec {
    let log = log.clone();
    let id2 = id.to_string();
    ChildSpec::worker(id, restart, None, move || {
        (
            Probe {
                id: id2.clone(),
                log: log.clone(),
            },
            (),
        )
    })
}

fn config(hub: &Arc<EventHub>, strategy: Strategy, intensity: u32) -> SupervisorConfig {
    SupervisorConfig {
        path: "root".into(),
        name: None,
        strategy,
        intensity,
        period: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(2),
        restart_backoff: Duration::from_millis(10),
        hub: hub.clone(),
    }
}

async fn children(sup: &ActorRef<SupervisorMsg>) -> Vec<ChildInfo> {
    ractor::call!(sup, SupervisorMsg::Children).unwrap()
}

async fn cell_of(sup: &ActorRef<SupervisorMsg>, id: &str) -> ActorRef<ProbeMsg> {
    for _ in 0..200 {
        if let Some(c) = children(sup)
            .await
            .into_iter()
            .find(|c| c.id == id)
            .and_then(|c| c.cell)
        {
            return c.into();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("child {id} never came back");
}

async fn wait_restarts(sup: &ActorRef<SupervisorMsg>, id: &str, n: u32) {
    for _ in 0..400 {
        if children(sup)
            .await
            .iter()
            .any(|c| c.id == id && c.restarts == n && c.cell.is_some())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{id} never reached {n} restarts");
}

#[tokio::test]
async fn one_for_one_restarts_only_the_failed_child_and_counts() {
    let hub = EventHub::new(1024);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (sup, _) = Supervisor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            config: config(&hub, Strategy::OneForOne, 3),
            children: vec![
                probe("a", Restart::Permanent, &log),
                probe("b", Restart::Permanent, &log),
            ],
        },
    )
    .await
    .unwrap();
    cell_of(&sup, "b").await.cast(ProbeMsg::Panic).unwrap();
    wait_restarts(&sup, "b", 1).await;
    let infos = children(&sup).await;
    assert_eq!(infos[0].restarts, 0);
    assert_eq!(infos[1].restarts, 1);
    let (_, view) = hub.snapshot();
    assert_eq!(view.actors["root/b"].restarts, 1);
    assert!(view.actors["root/b"]
        .last_error
        .as_deref()
        .unwrap()
        .contains("told to crash"));
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|l| *l == "start a")
            .count(),
        1
    );
    sup.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn exceeding_intensity_escalates_and_stops_children() {
    let hub = EventHub::new(1024);
    let mut rx = hub.subscribe();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (sup, handle) = Supervisor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            config: config(&hub, Strategy::OneForOne, 2),
            children: vec![
                probe("a", Restart::Permanent, &log),
                probe("b", Restart::Permanent, &log),
            ],
        },
    )
    .await
    .unwrap();
    for n in 1..=2 {
        cell_of(&sup, "b").await.cast(ProbeMsg::Panic).unwrap();
        wait_restarts(&sup, "b", n).await;
    }
    cell_of(&sup, "b").await.cast(ProbeMsg::Panic).unwrap();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap();
    let mut escalated = false;
    while let Ok(p) = rx.try_recv() {
        if let Event::ActorEscalated { supervisor, reason } = &p.event {
            assert_eq!(supervisor, "root");
            assert!(reason.contains("more than 2 restarts"), "{reason}");
            escalated = true;
        }
    }
    assert!(escalated);
    assert!(
        log.lock().unwrap().contains(&"stop a".to_string()),
        "sibling stopped on escalation"
    );
}

#[tokio::test]
async fn one_for_all_restarts_every_child_in_order() {
    let hub = EventHub::new(1024);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (sup, _) = Supervisor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            config: config(&hub, Strategy::OneForAll, 3),
            children: vec![
                probe("a", Restart::Permanent, &log),
                probe("b", Restart::Permanent, &log),
                probe("c", Restart::Permanent, &log),
            ],
        },
    )
    .await
    .unwrap();
    log.lock().unwrap().clear();
    cell_of(&sup, "b").await.cast(ProbeMsg::Panic).unwrap();
    wait_restarts(&sup, "c", 1).await;
    wait_restarts(&sup, "a", 1).await;
    let l = log.lock().unwrap().clone();
    assert_eq!(
        l,
        vec!["stop c", "stop a", "start a", "start b", "start c"],
        "{l:?}"
    );
    sup.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn rest_for_one_restarts_later_children_only() {
    let hub = EventHub::new(1024);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (sup, _) = Supervisor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            config: config(&hub, Strategy::RestForOne, 3),
            children: vec![
                probe("a", Restart::Permanent, &log),
                probe("b", Restart::Permanent, &log),
                probe("c", Restart::Permanent, &log),
            ],
        },
    )
    .await
    .unwrap();
    log.lock().unwrap().clear();
    cell_of(&sup, "b").await.cast(ProbeMsg::Panic).unwrap();
    wait_restarts(&sup, "c", 1).await;
    let l = log.lock().unwrap().clone();
    assert_eq!(l, vec!["stop c", "start b", "start c"], "{l:?}");
    assert_eq!(children(&sup).await[0].restarts, 0);
    sup.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn restart_types_are_honoured() {
    let hub = EventHub::new(1024);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (sup, _) = Supervisor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            config: config(&hub, Strategy::OneForOne, 5),
            children: vec![
                probe("perm", Restart::Permanent, &log),
                probe("trans", Restart::Transient, &log),
                probe("temp", Restart::Temporary, &log),
            ],
        },
    )
    .await
    .unwrap();
    // Transient: restarted after a failure, forgotten after a normal stop.
    cell_of(&sup, "trans").await.cast(ProbeMsg::Panic).unwrap();
    wait_restarts(&sup, "trans", 1).await;
    cell_of(&sup, "trans").await.cast(ProbeMsg::Stop).unwrap();
    // Temporary: never restarted.
    cell_of(&sup, "temp").await.cast(ProbeMsg::Panic).unwrap();
    // Permanent: restarted even after a normal stop.
    cell_of(&sup, "perm").await.cast(ProbeMsg::Stop).unwrap();
    wait_restarts(&sup, "perm", 1).await;
    for _ in 0..200 {
        if children(&sup).await.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ids: Vec<String> = children(&sup).await.into_iter().map(|c| c.id).collect();
    assert_eq!(ids, vec!["perm"]);
    sup.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn stop_is_in_reverse_start_order_and_tree_is_readable() {
    let hub = EventHub::new(1024);
    let log = Arc::new(Mutex::new(Vec::new()));
    let inner = ChildSpec::supervisor(
        "inner",
        Restart::Permanent,
        SupervisorConfig {
            path: "root/inner".into(),
            ..config(&hub, Strategy::OneForOne, 3)
        },
        vec![probe("x", Restart::Permanent, &log)],
    );
    let (sup, _) = Supervisor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            config: config(&hub, Strategy::OneForOne, 3),
            children: vec![
                probe("a", Restart::Permanent, &log),
                inner,
                probe("c", Restart::Permanent, &log),
            ],
        },
    )
    .await
    .unwrap();
    let t = tree(&sup.get_cell(), "root", Duration::from_secs(1)).await;
    assert_eq!(t.children.len(), 3);
    assert_eq!(t.children[1].children[0].path, "root/inner/x");
    assert_eq!(t.children[1].children[0].status, "running");
    sup.stop_and_wait(None, None).await.unwrap();
    let l = log.lock().unwrap().clone();
    assert_eq!(
        l,
        vec!["start a", "start x", "start c", "stop c", "stop x", "stop a"],
        "{l:?}"
    );
}

#[tokio::test]
async fn replace_child_detaches_the_old_generation() {
    let hub = EventHub::new(1024);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (sup, _) = Supervisor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            config: config(&hub, Strategy::OneForOne, 3),
            children: vec![probe("a", Restart::Permanent, &log)],
        },
    )
    .await
    .unwrap();
    let old = ractor::call!(
        sup,
        SupervisorMsg::ReplaceChild,
        probe("a", Restart::Permanent, &log)
    )
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|l| *l == "start a")
            .count(),
        2
    );
    // The old generation keeps running until its owner retires it; its exit is not a failure to act on.
    assert_eq!(old.get_status(), ractor::ActorStatus::Running);
    old.stop(Some("retired".into()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let infos = children(&sup).await;
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].restarts, 0);
    assert!(infos[0].cell.is_some());
    sup.stop_and_wait(None, None).await.unwrap();
}
