//! Graceful shutdown under load, as a Kubernetes rollout does it: two lumberd (two pods
//! behind one Service) write into one real Elasticsearch; go-lumber in failover mode
//! (Filebeat's Logstash output with two hosts) sends a deterministic load to A; A gets
//! SIGTERM in the middle of it.
//!
//! The contract checked: A exits 0; every event the client saw acknowledged is stored;
//! every event A did not acknowledge was resent (to B) and is stored exactly once; the
//! index holds each event once and nothing else.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::clients::{go_lumber, run_client, ClientRun};
use support::es::EsNode;
use support::lumberd::{metric, Lumberd};

const EVENTS: &str = "qwen-logs-*,-qwen-logs-deadletter-*";
const WINDOW: u64 = 2048;
const WINDOWS: u64 = 28;

/// lumberd writing into the Elasticsearch at `url`, with this drain grace period.
fn lumberd_via(url: &str, grace: &str) -> Lumberd {
    support::es::lumberd_to(url)
        .env("LUMBERD_SERVER_SHUTDOWN_GRACE", grace)
        .start()
}

/// The client's report: events acknowledged by `addr`.
fn acked_by(run: &ClientRun, addr: SocketAddr) -> u64 {
    run.result["acked_by"][addr.to_string()]
        .as_u64()
        .unwrap_or(0)
}

/// go-lumber as Filebeat with `hosts: [a, b]`: the load goes to `a` first.
fn failover_client(b: SocketAddr) -> std::process::Command {
    let mut cmd = go_lumber();
    cmd.args(["-mode", "failover", "-inflight", "1", "-timeout", "30s"])
        .args(["-deadline", "110s", "-id", "drain"])
        .arg("-addr2")
        .arg(b.to_string())
        .arg("-window")
        .arg(WINDOW.to_string())
        .arg("-windows")
        .arg(WINDOWS.to_string());
    cmd
}

/// Starts the failover client on A (then B), and returns once A has acknowledged a few
/// windows: the load is under way, most of it still to come.
fn load_under_way(a: &Lumberd, b: &Lumberd) -> std::thread::JoinHandle<ClientRun> {
    let cmd = failover_client(b.addr());
    let a_addr = a.addr();
    let client = std::thread::spawn(move || run_client(cmd, a_addr));
    a.wait_for_metric(
        "lumberd_windows_acknowledged_total",
        3.0,
        Duration::from_secs(60),
    );
    client
}

/// Every event of the run is stored exactly once, and nothing else.
fn assert_each_stored_once(node: &EsNode, run: &ClientRun, total: u64) -> usize {
    let counts = node.value_counts(EVENTS, "test_id.keyword");
    let ids = run.ids();
    let missing: Vec<&String> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
    let doubled: Vec<(&String, &u64)> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        missing.is_empty() && doubled.is_empty() && counts.len() as u64 == total,
        "{} distinct events stored of {total}; missing {:?}; stored more than once {:?}",
        counts.len(),
        &missing[..missing.len().min(10)],
        &doubled[..doubled.len().min(10)]
    );
    assert_eq!(
        node.count(EVENTS),
        total,
        "nothing but the events is stored"
    );
    counts.len()
}

/// A TCP relay to Elasticsearch that can be frozen: from then on it forwards nothing
/// and cuts each connection at its next byte. Elasticsearch itself cannot be told to
/// hang for one client only; this injects that fault.
struct Relay {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl Relay {
    fn to(upstream: &str) -> Relay {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("an http://host:port Elasticsearch URL");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let f = f.clone();
                    std::thread::spawn(move || pipe(from, to, &f));
                }
            }
        });
        Relay { addr, frozen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, frozen: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if frozen.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // Frozen: neither side hears from the other again. The lumberd side is left open
    // (its request hangs, as behind a stuck Elasticsearch); the other is closed.
    if !frozen.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Both);
    }
}

#[test]
fn sigterm_while_the_output_hangs_leaves_unfinished_windows_unacknowledged_for_the_client_to_resend(
) {
    let Some(node) = EsNode::start(&[]) else {
        return;
    };
    let relay = Relay::to(node.url());
    let mut a = lumberd_via(&relay.url(), "2s");
    let b = lumberd_via(node.url(), "20s");
    let total = WINDOW * WINDOWS;
    let a_addr = a.addr();
    let client = load_under_way(&a, &b);
    relay.freeze();
    // A now holds windows it cannot deliver.
    a.wait_for_metric("lumberd_inflight_events", 1.0, Duration::from_secs(30));
    a.terminate();
    let status = a
        .wait_exit(Duration::from_secs(30))
        .expect("A exits once its 2 s grace is over");
    assert!(status.success(), "A's exit: {status}\n{}", a.logs());
    assert!(
        a.logs().contains("did not drain within the grace period")
            || a.logs().contains("shutdown grace elapsed"),
        "A says it gave up on undelivered windows:\n{}",
        a.logs()
    );
    let run = client.join().expect("client thread");
    let (by_a, by_b) = (acked_by(&run, a_addr), acked_by(&run, b.addr()));
    let resent = run.result["resent"].as_u64().unwrap_or(0);
    assert!(
        run.status.success() && by_a + by_b == total && resent >= WINDOW,
        "all {total} events acknowledged once (A {by_a}, B {by_b}), the windows A held \
         resent ({resent})\n{}",
        run.describe()
    );
    let stored = assert_each_stored_once(&node, &run, total);
    eprintln!(
        "shutdown with a hung output: {total} events; A acknowledged {by_a}, exited 0 after \
         its grace; the client resent {resent} to B, which acknowledged {by_b}; stored: \
         {stored} distinct, each once"
    );
}

#[test]
fn sigterm_under_load_acknowledged_events_are_stored_and_the_rest_resent_arrive_exactly_once() {
    let Some(node) = EsNode::start(&[]) else {
        return;
    };
    let mut a = lumberd_via(node.url(), "20s");
    let b = lumberd_via(node.url(), "20s");
    let total = WINDOW * WINDOWS;
    let a_addr = a.addr();
    let client = load_under_way(&a, &b);
    a.terminate();
    let status = a
        .wait_exit(Duration::from_secs(40))
        .expect("A exits within its 20 s grace and the output's flush");
    assert!(status.success(), "A's exit: {status}\n{}", a.logs());
    let run = client.join().expect("client thread");

    let acked = run.result["events_acked"].as_u64().unwrap_or(0);
    let acked_by_a = acked_by(&run, a_addr);
    let acked_by_b = acked_by(&run, b.addr());
    let resent = run.result["resent"].as_u64().unwrap_or(0);
    assert!(
        run.status.success() && acked == total,
        "the client got {acked} of {total} events acknowledged\n{}\n--- A ---\n{}\n--- B ---\n{}",
        run.describe(),
        a.logs(),
        b.logs()
    );
    assert!(
        acked_by_a >= 3 * WINDOW && acked_by_b > 0,
        "the SIGTERM must land mid-load: acked by A {acked_by_a}, by B {acked_by_b}"
    );
    assert_eq!(
        acked_by_a + acked_by_b,
        total,
        "each event is acknowledged once, by A or (resent) by B: {}",
        run.describe()
    );

    // Each event once: a resend of an event A had already stored is a 409 at B, never a
    // second document.
    let stored = assert_each_stored_once(&node, &run, total);

    let scrape = b.scrape();
    let duplicates = metric(
        &scrape,
        "lumberd_output_events_total{outcome=\"duplicate\"}",
    )
    .unwrap_or(-1.0);
    let unacked_by_a = total - acked_by_a;
    let resent_ids = run.result["resent_ids"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(resent_ids as u64, resent);
    // The figures for the closing note.
    eprintln!(
        "shutdown under load: {total} events; A acknowledged {acked_by_a} then exited 0; \
         B acknowledged {acked_by_b} ({unacked_by_a} not acknowledged by A); the client \
         resent {resent}; B found {duplicates} already stored (409); stored: {stored} \
         distinct, each once"
    );
}
