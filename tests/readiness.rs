//! Readiness that sheds load: `/readyz` answers 503 while the output is behind (in-flight
//! bytes above `server.ready_high_water` of the budget for `server.ready_grace`) and 200
//! again once it has caught up, with `lumberd_not_ready{reason="output_behind"}` saying
//! why. The slow output is a real Elasticsearch node with one write thread and a write
//! queue of one (as tests/es/record-answers.sh runs one): bulk requests beyond it are
//! answered 429 and retried, so a go-lumber load fills lumberd's small budget.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::clients::{assert_all_acked, go_lumber, run_client};
use support::es::{lumberd_to, EsNode};
use support::lumberd::{metric, Lumberd};

const BEHIND: &str = "lumberd_not_ready{reason=\"output_behind\"}";
const WINDOW: usize = 500;
const WINDOWS: usize = 16;

/// Polls `/readyz` (as the kubelet does) until `want(status, body)`; returns the body and
/// how long it took. Fails after `deadline` with the last answer and the logs.
fn poll_readyz(
    lumberd: &Lumberd,
    what: &str,
    deadline: Duration,
    want: impl Fn(u16, &str) -> bool,
) -> (String, Duration) {
    let start = Instant::now();
    loop {
        let (status, body) = lumberd.admin_get("/readyz");
        if want(status, &body) {
            return (body, start.elapsed());
        }
        assert!(
            start.elapsed() < deadline,
            "/readyz was not {what} within {deadline:?}; last answer {status} {body:?}; \
             in flight {:?}; logs:\n{}",
            metric(&lumberd.scrape(), "lumberd_inflight_bytes"),
            lumberd.logs()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn readyz_turns_not_ready_while_a_slow_elasticsearch_keeps_the_budget_full_and_ready_again_after() {
    let Some(node) = EsNode::start(&["thread_pool.write.size=1", "thread_pool.write.queue_size=1"])
    else {
        return;
    };
    // A 1 MiB budget, behind above half of it for 1 s: a load of 8000 events keeps it
    // there while one write thread indexes.
    let lumberd = lumberd_to(node.url())
        .env("LUMBERD_SERVER_MAX_FRAME_BYTES", "262144")
        .env("LUMBERD_SERVER_MAX_INFLIGHT_BYTES", "1048576")
        .env("LUMBERD_SERVER_READY_HIGH_WATER", "0.5")
        .env("LUMBERD_SERVER_READY_GRACE", "1s")
        .start();
    poll_readyz(
        &lumberd,
        "ready before the load",
        Duration::from_secs(90),
        |s, _| s == 200,
    );

    let mut cmd = go_lumber();
    cmd.args([
        "-mode",
        "async",
        "-inflight",
        "4",
        "-timeout",
        "60s",
        "-id",
        "ready",
    ])
    .arg("-window")
    .arg(WINDOW.to_string())
    .arg("-windows")
    .arg(WINDOWS.to_string());
    let addr = lumberd.addr();
    let client = thread::spawn(move || run_client(cmd, addr));

    let (why, took) = poll_readyz(
        &lumberd,
        "not ready (behind)",
        Duration::from_secs(120),
        |s, b| s == 503 && b.contains("output behind"),
    );
    let scrape = lumberd.scrape();
    assert_eq!(metric(&scrape, BEHIND), Some(1.0), "{why}");
    assert_eq!(metric(&scrape, "lumberd_ready"), Some(0.0), "{why}");
    assert_eq!(
        metric(&scrape, "lumberd_not_ready{reason=\"output_down\"}"),
        Some(0.0),
        "a busy cluster is behind, not down: {why}"
    );
    eprintln!("not ready after {took:?}: {why}");

    let run = client.join().expect("client thread");
    assert_all_acked(&run, &lumberd);
    let (_, took) = poll_readyz(&lumberd, "ready again", Duration::from_secs(60), |s, _| {
        s == 200
    });
    let scrape = lumberd.scrape();
    assert_eq!(metric(&scrape, BEHIND), Some(0.0));
    assert_eq!(metric(&scrape, "lumberd_ready"), Some(1.0));
    eprintln!("ready again {took:?} after the load ended");

    // Shedding new connections lost nothing of the ones it had.
    let counts = node.value_counts("qwen-logs-*,-qwen-logs-deadletter-*", "test_id.keyword");
    let ids = run.ids();
    let missing = ids.iter().filter(|id| !counts.contains_key(*id)).count();
    let doubled = counts.values().filter(|n| **n != 1).count();
    assert!(
        missing == 0 && doubled == 0 && counts.len() == ids.len(),
        "{} of {} events stored; {missing} missing, {doubled} stored more than once",
        counts.len(),
        ids.len()
    );
}
