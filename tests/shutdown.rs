//! Graceful shutdown under load, as a Kubernetes rollout does it: two lumberd (two pods
//! behind one Service) write into one real Elasticsearch; go-lumber in failover mode
//! (Filebeat's Logstash output with two hosts) sends a deterministic load to A; A gets
//! SIGTERM in the middle of it.
//!
//! The contract checked: A exits 0; every event the client saw acknowledged is stored;
//! every event A did not acknowledge was resent (to B) and is stored exactly once; the
//! index holds each event once and nothing else.

mod support;

use std::time::Duration;

use support::es::EsNode;
use support::*;

const EVENTS: &str = "qwen-logs-*,-qwen-logs-deadletter-*";
const WINDOW: u64 = 2048;
const WINDOWS: u64 = 28;

fn lumberd_into(node: &EsNode, grace: &str) -> Lumberd {
    Lumberd::builder()
        .env("LUMBERD_OUTPUT_ELASTICSEARCH", node.url())
        .env("LUMBERD_OUTPUT_TEMPLATE_REPLICAS", "0")
        .env("LUMBERD_OUTPUT_RETRY_MAX_BACKOFF", "1s")
        .env("LUMBERD_OUTPUT_READY_TIMEOUT", "60s")
        .env("LUMBERD_SERVER_SHUTDOWN_GRACE", grace)
        .start()
}

#[test]
fn sigterm_under_load_acknowledged_events_are_stored_and_the_rest_resent_arrive_exactly_once() {
    let Some(node) = EsNode::start(&[]) else {
        return;
    };
    let mut a = lumberd_into(&node, "20s");
    let b = lumberd_into(&node, "20s");
    let total = WINDOW * WINDOWS;

    let mut cmd = go_lumber();
    cmd.args(["-mode", "failover", "-inflight", "1", "-timeout", "30s"])
        .args(["-deadline", "110s", "-id", "drain"])
        .arg("-addr2")
        .arg(b.addr().to_string())
        .arg("-window")
        .arg(WINDOW.to_string())
        .arg("-windows")
        .arg(WINDOWS.to_string());
    let a_addr = a.addr();
    let client = std::thread::spawn(move || run_client(cmd, a_addr));

    // Mid-load: A has acknowledged a few windows, and most of the load is still to come.
    a.wait_for_metric(
        "lumberd_windows_acknowledged_total",
        3.0,
        Duration::from_secs(60),
    );
    a.terminate();
    let status = a
        .wait_exit(Duration::from_secs(40))
        .expect("A exits within its 20 s grace and the output's flush");
    assert!(status.success(), "A's exit: {status}\n{}", a.logs());
    let run = client.join().expect("client thread");

    let acked = run.result["events_acked"].as_u64().unwrap_or(0);
    let acked_by_a = run.result["acked_by"][a_addr.to_string()]
        .as_u64()
        .unwrap_or(0);
    let acked_by_b = run.result["acked_by"][b.addr().to_string()]
        .as_u64()
        .unwrap_or(0);
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

    // Each event once: a resend of an event A had already stored is a 409 at B, never a
    // second document.
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
         resent {resent}; B found {duplicates} already stored (409); stored: {} distinct, \
         each once",
        counts.len()
    );
}
