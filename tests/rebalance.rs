//! Connections that rebalance (`server.max_connection_age`): three lumberd behind one
//! "Service", Beats clients pinned to the replicas that existed when they connected; a
//! third replica starts, and within one connection age the clients' reconnects reach it.
//!
//! The Service is [`support::service::Service`], a TCP relay that hands each new
//! connection to the next replica in turn, as kube-proxy does: the clients only ever
//! know its address. The clients are go-lumber's lumberclient in failover mode
//! (Filebeat's reconnect-and-resend) with the Service as every host: three at once as
//! Filebeat's `loadbalance: true, worker: 3` opens three connections, and one as
//! `loadbalance: false` (one connection, one window at a time); tests/rebalance_filebeat.rs
//! runs Filebeat itself. Checked:
//! the new replica gets connections within one age (+ its 10 % jitter) of starting,
//! every close for age is counted, and every event is stored exactly once over the
//! three replicas' file outputs: the closes at window boundaries lose and double nothing.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use support::clients::{go_lumber, run_client, ClientRun};
use support::lumberd::{metric, Lumberd};
use support::service::Service;

/// Short, so that a test sees several ages; at least lumberd's 1 s minimum.
const AGE: Duration = Duration::from_secs(2);
/// `MAX_CONNECTION_AGE_JITTER`: a connection lives at most this much past `AGE`.
const JITTER: f64 = 0.1;
/// Per client: enough windows that the load is still running several ages after the
/// third replica starts (the test fails, saying so, if it is not).
const WINDOW: usize = 50;
const WINDOWS: usize = 400;
/// The least time between two windows of a client: each load then lasts at least
/// `WINDOWS x PACE` (four ages) however fast the machine is, so every connection opened
/// at the start lives to its age while its client still sends. Without it a fast run
/// ended before some connections aged and counted fewer closes for age than it wants.
const PACE: Duration = Duration::from_millis(20);
const _: () = assert!(WINDOWS as u128 * PACE.as_millis() >= 4 * AGE.as_millis());

fn replica() -> Lumberd {
    Lumberd::builder()
        .passthrough()
        .env(
            "LUMBERD_SERVER_MAX_CONNECTION_AGE",
            format!("{}ms", AGE.as_millis()),
        )
        .start()
}

/// go-lumber as one Filebeat worker whose only host is the Service.
fn client(service: SocketAddr, id: &str, inflight: u32) -> thread::JoinHandle<ClientRun> {
    let mut cmd = go_lumber();
    cmd.args(["-mode", "failover", "-timeout", "30s", "-backoff", "100ms"])
        .args(["-deadline", "240s", "-id", id])
        .arg("-inflight")
        .arg(inflight.to_string())
        .arg("-addr2")
        .arg(service.to_string())
        .arg("-window")
        .arg(WINDOW.to_string())
        .arg("-windows")
        .arg(WINDOWS.to_string())
        .arg("-pace")
        .arg(format!("{}ms", PACE.as_millis()));
    thread::spawn(move || run_client(cmd, service))
}

fn value(lumberd: &Lumberd, series: &str) -> f64 {
    metric(&lumberd.scrape(), series).unwrap_or(0.0)
}

const ACCEPTED: &str = "lumberd_connections_total";
const AGED: &str = "lumberd_connections_closed_total{reason=\"max_age\"}";

#[test]
fn a_new_replica_gets_connections_within_one_age_and_no_event_is_lost_or_doubled() {
    let (a, b) = (replica(), replica());
    let service = Service::start(vec![a.addr(), b.addr()]);
    let clients: Vec<(String, thread::JoinHandle<ClientRun>)> = ["lb1", "lb2", "lb3"]
        .iter()
        .map(|id| (id.to_string(), client(service.addr, id, 2)))
        .chain(std::iter::once((
            "failover".to_string(),
            client(service.addr, "failover", 0),
        )))
        .collect();
    // The load is under way on both replicas before the third one exists.
    let until = Instant::now() + Duration::from_secs(60);
    while value(&a, "lumberd_windows_acknowledged_total") < 5.0
        || value(&b, "lumberd_windows_acknowledged_total") < 5.0
    {
        assert!(
            Instant::now() < until,
            "the load did not reach both replicas in 60 s"
        );
        thread::sleep(Duration::from_millis(20));
    }

    let c = replica();
    let c_started = Instant::now();
    service.add(c.addr());
    // Every connection opened before C closes within AGE (+ jitter) and reconnects,
    // round robin over three: C's share arrives within one age. The slack covers the
    // clients' 100 ms backoff and a loaded 2-core machine.
    let within = AGE.mul_f64(1.0 + JITTER) + Duration::from_secs(3);
    while value(&c, ACCEPTED) < 1.0 {
        assert!(
            c_started.elapsed() < within,
            "the new replica got no connection within {within:?} of starting; its logs:\n{}",
            c.logs()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let reached = c_started.elapsed();
    let c_windows_then = value(&c, "lumberd_windows_acknowledged_total");

    let runs: Vec<(String, ClientRun)> = clients
        .into_iter()
        .map(|(id, h)| (id, h.join().expect("client thread")))
        .collect();
    for (id, run) in &runs {
        assert!(
            run.status.success() && run.result["events_acked"].as_u64() > Some(0),
            "client {id} failed:\n{}",
            run.describe()
        );
    }
    // The load went on after C was reached: the closes happened under load, not after it.
    assert!(
        value(&c, "lumberd_windows_acknowledged_total") > c_windows_then,
        "the clients finished before the new replica took part (reached after {reached:?}): \
         raise WINDOWS"
    );

    // Every event once over the three replicas, and nothing else.
    let replicas = [("a", &a), ("b", &b), ("c", &c)];
    let mut stored: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut per_replica = Vec::new();
    for (name, r) in replicas {
        let events = r.events();
        per_replica.push((name, events.len(), value(r, AGED), value(r, ACCEPTED)));
        for ev in events {
            let id = ev["test_id"].as_str().unwrap_or("<no test_id>").to_string();
            stored.entry(id).or_default().push(name);
        }
    }
    let sent: Vec<String> = runs.iter().flat_map(|(_, run)| run.ids()).collect();
    let missing: Vec<&String> = sent.iter().filter(|id| !stored.contains_key(*id)).collect();
    let doubled: Vec<_> = stored.iter().filter(|(_, on)| on.len() > 1).collect();
    let total: usize = per_replica.iter().map(|r| r.1).sum();
    assert!(
        missing.is_empty()
            && doubled.is_empty()
            && stored.len() == sent.len()
            && total == sent.len(),
        "{} events sent, {total} stored, {} distinct (per replica: events, max_age closes, \
         connections: {per_replica:?}); missing {:?}; stored more than once {:?}",
        sent.len(),
        stored.len(),
        &missing[..missing.len().min(10)],
        &doubled[..doubled.len().min(10)]
    );
    for (name, events, _, accepted) in &per_replica {
        assert!(
            *events > 0 && *accepted >= 1.0,
            "replica {name} stored {events} events over {accepted} connections: \
             the load did not spread ({per_replica:?})"
        );
    }
    let aged: f64 = per_replica.iter().map(|r| r.2).sum();
    assert!(
        aged >= 4.0,
        "only {aged} connections were closed for max_age ({per_replica:?})"
    );
    eprintln!(
        "new replica reached {reached:?} after start; {} events; per replica \
         (events, max_age closes, connections): {per_replica:?}",
        sent.len()
    );
}
