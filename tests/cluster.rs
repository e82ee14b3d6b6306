//! The Elasticsearch output against a real 3-node Elasticsearch 8.11.3 cluster
//! (`tests/es/es.sh cluster`), fed by go-lumber's client while nodes are killed, the
//! cluster goes red, or requests spread over the nodes; lumberd is given every node.
//! Each fault test ends with an exact count: every event acknowledged, stored once
//! (count and distinct `test_id`s), none dead-lettered, and prints its figures and the
//! stall (the longest gap between two ACKs the client saw after the fault).
//!
//! One cluster serves every test of this file (started once, ~1 minute on 2 cores): the
//! tests take turns through a lock, and each starts from a green cluster with all three
//! nodes, no event indices and no templates.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::clients::{go_lumber, run_client, ClientRun};
use support::es::{Engine, EsCluster};
use support::lumberd::{Lumberd, LumberdBuilder};

const EVENTS: &str = "qwen-logs-*,-qwen-logs-deadletter-*";
const DEAD_LETTERS: &str = "qwen-logs-deadletter-*";
/// Bulk requests not answered (or refused as a whole with 429/5xx) and sent again.
const RETRIED_REQUESTS: &str = "lumberd_bulk_requests_total{outcome=\"retried\"}";

static CLUSTER: OnceLock<Option<Mutex<EsCluster>>> = OnceLock::new();

/// The shared cluster, reset for the next test; `None` when Elasticsearch cannot be
/// fetched (the test then skips, unless `LUMBERD_REQUIRE_ES` is set).
fn cluster() -> Option<MutexGuard<'static, EsCluster>> {
    let shared = CLUSTER.get_or_init(|| {
        let started = Instant::now();
        let c = EsCluster::start(Engine::Elasticsearch, 3, &[])?;
        eprintln!("cluster of 3 started in {:?}", started.elapsed());
        Some(Mutex::new(c))
    });
    // A test that failed left the lock poisoned; the reset below repairs what it left.
    let mut c = shared
        .as_ref()?
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    reset(&mut c);
    Some(c)
}

/// Every node up, no voting exclusions, no event indices or templates, green.
fn reset(c: &mut EsCluster) {
    for i in 0..c.len() {
        if !running(c, i) {
            c.node(i).restart();
        }
    }
    let n = c.live();
    clear_voting_exclusions(c);
    for path in ["/qwen-logs-*", "/_index_template/qwen-logs*"] {
        let (status, body) = n.request("DELETE", path, None);
        assert!(
            status == 200 || status == 404,
            "DELETE {path}: {status} {body}"
        );
    }
    c.wait_for("green");
    wait_for_voters(c);
}

/// Every node is a voter again: without `wait_for_removal=false` the DELETE waits for
/// the excluded nodes to leave the cluster, which nodes that came back never do, and the
/// exclusions stay (a later master kill then leaves no quorum).
fn clear_voting_exclusions(c: &EsCluster) {
    let (status, body) = c.live().request(
        "DELETE",
        "/_cluster/voting_config_exclusions?wait_for_removal=false",
        None,
    );
    assert_eq!(status, 200, "clearing the voting exclusions: {body}");
}

/// Waits (at most 60 s) until the committed voting configuration holds every node, so
/// that each test can lose any one node, the master included.
fn wait_for_voters(c: &EsCluster) {
    let path = "/_cluster/state/metadata?filter_path=metadata.cluster_coordination";
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = c.live().request("GET", path, None);
        let coordination = &body["metadata"]["cluster_coordination"];
        let voters = coordination["last_committed_config"]
            .as_array()
            .map_or(0, Vec::len);
        let excluded = coordination["voting_config_exclusions"]
            .as_array()
            .map_or(0, Vec::len);
        if voters == c.len() && excluded == 0 {
            return;
        }
        assert!(
            Instant::now() < until,
            "the voting configuration did not come back to all {} nodes: {coordination}",
            c.len()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn running(c: &EsCluster, i: usize) -> bool {
    c.node(i)
        .pid()
        .is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
}

/// lumberd writing into `hosts` with the event indices at 1 replica (the default), and
/// quick retries so the tests do not wait on backoff.
fn lumberd_to(hosts: &str) -> LumberdBuilder {
    Lumberd::builder()
        .env("LUMBERD_OUTPUT_ELASTICSEARCH", hosts)
        .env("LUMBERD_OUTPUT_RETRY_MAX_BACKOFF", "1s")
        .env("LUMBERD_OUTPUT_READY_TIMEOUT", "60s")
}

/// A go-lumber client in failover mode (Filebeat's reconnect-and-resend) with both hosts
/// the same lumberd, whose ACK progress is timestamped as it happens.
struct Stream {
    client: thread::JoinHandle<ClientRun>,
    acks: Arc<Mutex<Vec<(Instant, u64)>>>,
    done: Arc<std::sync::atomic::AtomicBool>,
    watcher: thread::JoinHandle<()>,
    started: Instant,
    _dir: tempfile::TempDir,
}

impl Stream {
    fn start(lumberd: &Lumberd, id: &str, window: usize, windows: usize) -> Stream {
        let dir = tempfile::tempdir().unwrap();
        let progress = dir.path().join("progress");
        std::fs::write(&progress, "").unwrap();
        let mut cmd = go_lumber();
        cmd.args(["-mode", "failover", "-inflight", "2", "-timeout", "60s"])
            .args(["-deadline", "280s", "-backoff", "200ms", "-id", id])
            .arg("-addr2")
            .arg(lumberd.addr().to_string())
            .arg("-window")
            .arg(window.to_string())
            .arg("-windows")
            .arg(windows.to_string())
            .arg("-progress")
            .arg(&progress);
        let addr = lumberd.addr();
        let started = Instant::now();
        let client = thread::spawn(move || run_client(cmd, addr));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Timestamps each ACK the client records ("acked <total>" lines), to within the
        // 5 ms poll: the stall is measured, not waited for.
        let watcher = {
            let (acks, done) = (acks.clone(), done.clone());
            thread::spawn(move || {
                let mut seen = 0;
                loop {
                    let finished = done.load(std::sync::atomic::Ordering::Acquire);
                    let text = std::fs::read_to_string(&progress).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let now = Instant::now();
                    for l in lines.iter().skip(seen) {
                        if let Some(n) = l.strip_prefix("acked ").and_then(|n| n.parse().ok()) {
                            acks.lock().unwrap().push((now, n));
                        }
                    }
                    seen = seen.max(lines.len());
                    if finished {
                        return;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Stream {
            client,
            acks,
            done,
            watcher,
            started,
            _dir: dir,
        }
    }

    fn acked(&self) -> u64 {
        self.acks.lock().unwrap().last().map_or(0, |a| a.1)
    }

    /// Waits until at least `n` events are acknowledged (or the client ended).
    fn wait_acked(&self, n: u64, deadline: Duration, lumberd: &Lumberd) {
        let until = Instant::now() + deadline;
        while self.acked() < n && !self.client.is_finished() {
            assert!(
                Instant::now() < until,
                "{} of {n} events acknowledged after {deadline:?}\n{}",
                self.acked(),
                support_logs(lumberd)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The client's run, and the longest gap between two ACKs from `from` on (a gap
    /// that spans `from` counts whole; the first ACK's gap counts from the start): the
    /// stall the client saw after a fault at `from`.
    fn finish(self, from: Instant) -> (ClientRun, Duration) {
        let run = self.client.join().unwrap();
        self.done.store(true, std::sync::atomic::Ordering::Release);
        self.watcher.join().unwrap();
        let acks = self.acks.lock().unwrap();
        let (mut last, mut stall) = (self.started, Duration::ZERO);
        for (at, _) in acks.iter() {
            if *at >= from {
                stall = stall.max(at.duration_since(last));
            }
            last = *at;
        }
        (run, stall)
    }
}

fn support_logs(lumberd: &Lumberd) -> String {
    let logs = lumberd.logs();
    let start = logs.len().saturating_sub(20000);
    let start = (start..logs.len())
        .find(|&i| logs.is_char_boundary(i))
        .unwrap_or(0);
    logs[start..].to_string()
}

/// What a fault test reports, and the exact-count checks on it.
#[derive(Debug)]
struct Tally {
    sent: u64,
    acked: u64,
    stored: u64,
    distinct: u64,
    duplicates: u64,
    dead_letters: u64,
    stall: Duration,
}

fn tally(c: &EsCluster, run: &ClientRun, stall: Duration) -> Tally {
    let n = c.live();
    let counts: HashMap<String, u64> = n.value_counts(EVENTS, "test_id.keyword");
    let stored = n.count(EVENTS);
    Tally {
        sent: run.ids().len() as u64,
        acked: run.result["events_acked"].as_u64().unwrap_or(0),
        stored,
        distinct: counts.len() as u64,
        duplicates: counts.values().map(|v| v - 1).sum(),
        dead_letters: n.count(DEAD_LETTERS),
        stall,
    }
}

/// Every event acknowledged and stored once, nothing dead-lettered.
fn assert_exact(name: &str, t: &Tally, run: &ClientRun, lumberd: &Lumberd) {
    eprintln!(
        "{name}: sent {} acknowledged {} stored {} distinct {} duplicates {} dead letters {}; \
         stall (longest gap between ACKs after the fault) {:?}",
        t.sent, t.acked, t.stored, t.distinct, t.duplicates, t.dead_letters, t.stall
    );
    assert!(
        run.status.success()
            && t.acked == t.sent
            && t.stored == t.sent
            && t.distinct == t.sent
            && t.duplicates == 0
            && t.dead_letters == 0,
        "{name}: not every event stored exactly once: {t:?}\n{}\n--- lumberd logs ---\n{}",
        run.describe(),
        support_logs(lumberd)
    );
}

/// Node `victim` (chosen from the running cluster) is SIGKILLed once a tenth of the
/// stream is acknowledged, and restarted while it goes on.
fn kill_mid_stream(name: &str, id: &str, victim: impl Fn(&EsCluster) -> usize) {
    let Some(c) = cluster() else { return };
    let lumberd = lumberd_to(&c.hosts()).start();
    let (window, windows) = (500, 40);
    let total = (window * windows) as u64;
    let stream = Stream::start(&lumberd, id, window, windows);
    stream.wait_acked(total / 10, Duration::from_secs(120), &lumberd);
    let v = victim(&c);
    let was_master = c.master() == v;
    let retried_before =
        support::lumberd::metric(&lumberd.scrape(), RETRIED_REQUESTS).unwrap_or(0.0);
    let kill_time = Instant::now();
    c.node(v).kill();
    let killed_at = stream.acked();
    eprintln!(
        "{name}: killed node-{} (master: {was_master}) at {killed_at} of {total} acknowledged",
        v + 1
    );
    // Round robin sends requests to the dead node; each fails (reset or refused) and is
    // sent again to the next host. The stream goes on without it.
    lumberd.wait_for_metric(
        RETRIED_REQUESTS,
        retried_before + 1.0,
        Duration::from_secs(120),
    );
    let failed_over_at = stream.acked();
    stream.wait_acked(
        (failed_over_at + 2 * window as u64).min(total),
        Duration::from_secs(120),
        &lumberd,
    );
    let during = stream.acked();
    c.node(v).restart();
    eprintln!(
        "{name}: node-{} back at {} acknowledged",
        v + 1,
        stream.acked()
    );
    let (run, stall) = stream.finish(kill_time);
    let retried = support::lumberd::metric(&lumberd.scrape(), RETRIED_REQUESTS).unwrap_or(0.0);
    eprintln!(
        "{name}: {} bulk requests failed over after the kill (first at {failed_over_at} acknowledged)",
        retried - retried_before
    );
    assert!(
        killed_at < total,
        "{name}: the kill came after the stream ended: not mid-stream"
    );
    assert!(
        during > failed_over_at || during == total,
        "{name}: nothing acknowledged while node-{} was down\n{}",
        v + 1,
        support_logs(&lumberd)
    );
    c.wait_for("green");
    let t = tally(&c, &run, stall);
    assert_exact(name, &t, &run, &lumberd);
}

#[test]
fn a_data_node_killed_mid_stream_and_restarted_loses_and_doubles_nothing() {
    kill_mid_stream("data node killed", "data", |c| (c.master() + 1) % c.len());
}

#[test]
fn the_elected_master_killed_mid_stream_loses_and_doubles_nothing() {
    kill_mid_stream("master killed", "master", |c| c.master());
}

/// The shard copies of `index`, as (node name, primary?).
fn copies(c: &EsCluster, index: &str) -> Vec<(String, bool)> {
    let (status, body) = c.live().request(
        "GET",
        &format!("/_cat/shards/{index}?format=json&h=node,prirep,state"),
        None,
    );
    assert_eq!(status, 200, "_cat/shards: {body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["node"].as_str().unwrap_or("").to_string(),
                s["prirep"] == "p",
            )
        })
        .collect()
}

#[test]
fn a_red_cluster_answers_503_items_that_are_retried_until_nothing_is_lost() {
    let Some(c) = cluster() else { return };
    let lumberd = lumberd_to(&c.hosts())
        // This test is about the output's retries, not the stall close (tested elsewhere).
        .env("LUMBERD_SERVER_STALL_TIMEOUT", "10m")
        .start();
    // One of the stream's daily indices, created now (the template gives it 1 shard and
    // 1 replica) so that its two copies are known: stopping their two nodes leaves it
    // with none, while the third node stays master (the others are voted out first).
    let index = "qwen-logs-2025.04.05";
    let (status, body) = c.live().request("PUT", &format!("/{index}"), None);
    assert_eq!(status, 200, "PUT {index}: {body}");
    c.wait_for("green");
    let holders: Vec<usize> = copies(&c, index)
        .iter()
        .map(|(node, _)| c.index_of(node))
        .collect();
    assert_eq!(holders.len(), 2, "one primary and one replica: {holders:?}");
    let names: Vec<String> = holders.iter().map(|i| format!("node-{}", i + 1)).collect();
    let (status, body) = c.live().request(
        "POST",
        &format!(
            "/_cluster/voting_config_exclusions?node_names={}&timeout=60s",
            names.join(",")
        ),
        None,
    );
    assert_eq!(status, 200, "voting exclusions: {body}");
    // Both at once: each stop waits for its node's graceful shutdown.
    thread::scope(|s| {
        for &h in &holders {
            let node = c.node(h);
            s.spawn(move || node.stop());
        }
    });
    // The master removes the two nodes in cluster state updates of its own: health is
    // asked once it counts only the third (up to 60 s), not at the moment they exited.
    let left = c.len() - holders.len();
    let (_, health) = c.live().request(
        "GET",
        &format!("/_cluster/health?wait_for_nodes={left}&timeout=60s"),
        None,
    );
    assert_eq!(
        (
            health["number_of_nodes"].as_u64(),
            health["status"].as_str()
        ),
        (Some(left as u64), Some("red")),
        "{health}"
    );
    let red_at = Instant::now();

    let (window, windows) = (200, 10);
    let total = (window * windows) as u64;
    let stream = Stream::start(&lumberd, "red", window, windows);
    // Elasticsearch holds an item for an unassigned primary up to its 1 minute bulk
    // timeout, then answers it 503 unavailable_shards_exception.
    let logs = lumberd.wait_for_logs("a 503 item retried", Duration::from_secs(150), |l| {
        l.contains("bulk items not stored; retrying") && l.contains("unavailable_shards_exception")
    });
    assert!(logs.contains("HTTP 503"), "{}", support_logs(&lumberd));
    let acked_while_red = stream.acked();
    // The excluded voters are welcome again, and both nodes come back at once.
    clear_voting_exclusions(&c);
    thread::scope(|s| {
        for &h in &holders {
            let node = c.node(h);
            s.spawn(move || node.restart());
        }
    });
    let red_for = red_at.elapsed();
    let (run, stall) = stream.finish(red_at);
    c.wait_for("green");
    eprintln!(
        "red cluster: red for {red_for:?}; {acked_while_red} of {total} acknowledged while red"
    );
    let t = tally(&c, &run, stall);
    assert_exact("red cluster", &t, &run, &lumberd);
    assert_eq!(t.sent, total);
    let scrape = lumberd.scrape();
    let retried =
        support::lumberd::metric(&scrape, "lumberd_output_events_total{outcome=\"retried\"}");
    assert!(
        retried.is_some_and(|r| r > 0.0),
        "items must have been retried: {retried:?}"
    );
}

/// Bulk bytes each node coordinated since `before`.
fn coordinated_since(c: &EsCluster, before: &[Option<u64>]) -> Vec<u64> {
    c.coordinated()
        .iter()
        .zip(before)
        .map(|(now, then)| now.unwrap_or(0) - then.unwrap_or(0))
        .collect()
}

/// Each node coordinated a fair share (at least a sixth) of the bulk bytes.
fn assert_spread(what: &str, per_node: &[u64], lumberd: &Lumberd) {
    let total: u64 = per_node.iter().sum();
    eprintln!("{what}: bulk bytes coordinated per node {per_node:?} of {total}");
    assert!(
        total > 0 && per_node.iter().all(|&n| n >= total / 6),
        "{what}: bulk requests must spread over every node, got {per_node:?} bytes\n{}",
        support_logs(lumberd)
    );
}

/// A stream of 6,000 events through `lumberd`, stored exactly once, whose bulk bytes
/// every node coordinated a fair share of.
fn assert_stream_spreads(what: &str, id: &str, c: &EsCluster, lumberd: &Lumberd) {
    let before = c.coordinated();
    let stream = Stream::start(lumberd, id, 500, 12);
    let from = stream.started;
    let (run, stall) = stream.finish(from);
    let t = tally(c, &run, stall);
    assert_exact(what, &t, &run, lumberd);
    assert_spread(what, &coordinated_since(c, &before), lumberd);
}

/// Small bulk requests for the spread tests: round robin spreads requests, and bytes
/// follow only when requests are many and alike. With the default 4,096 events a loaded
/// writer merges queued windows into a few large requests, and one of them can outweigh
/// a node's whole share (seen at load 15: [406,555, 2,846,257, 1,624,230] bytes).
const SPREAD_BULK_MAX_EVENTS: &str = "250";

#[test]
fn bulk_requests_spread_over_every_configured_node() {
    let Some(c) = cluster() else { return };
    let lumberd = lumberd_to(&c.hosts())
        .env("LUMBERD_OUTPUT_BULK_MAX_EVENTS", SPREAD_BULK_MAX_EVENTS)
        .start();
    assert_stream_spreads("three hosts", "spread", &c, &lumberd);
}

#[test]
fn sniffing_finds_every_node_from_one_configured_host() {
    let Some(c) = cluster() else { return };
    let lumberd = lumberd_to(c.node(0).url())
        .env("LUMBERD_OUTPUT_SNIFF", "true")
        .env("LUMBERD_OUTPUT_BULK_MAX_EVENTS", SPREAD_BULK_MAX_EVENTS)
        .start();
    lumberd.wait_for_logs("the discovered nodes", Duration::from_secs(30), |l| {
        l.contains("Elasticsearch nodes discovered")
    });
    assert_stream_spreads("one host, sniffing", "sniff", &c, &lumberd);
}

/// The installed template `name`: its version, digest, and the settings lumberd sets.
fn template(c: &EsCluster, name: &str) -> Value {
    let (status, body) = c
        .live()
        .request("GET", &format!("/_index_template/{name}"), None);
    assert_eq!(status, 200, "GET _index_template/{name}: {body}");
    body["index_templates"][0]["index_template"].clone()
}

fn replicas(t: &Value) -> &Value {
    &t["template"]["settings"]["index"]["number_of_replicas"]
}

#[test]
fn replicas_starting_at_once_agree_on_the_templates_and_a_rollout_is_won_by_the_higher_version() {
    let Some(c) = cluster() else { return };
    let hosts = c.hosts();
    // Three replicas of one configuration, started at once.
    let three: Vec<Lumberd> = thread::scope(|s| {
        let started: Vec<_> = (0..3)
            .map(|_| s.spawn(|| lumberd_to(&hosts).start()))
            .collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let logs: Vec<String> = three.iter().map(Lumberd::logs).collect();
    for name in ["qwen-logs", "qwen-logs-deadletter"] {
        let wrote = logs
            .iter()
            .filter(|l| {
                l.lines().any(|line| {
                    line.contains("index template installed")
                        && line.contains(&format!("template={name} "))
                })
            })
            .count();
        assert_eq!(
            wrote,
            1,
            "exactly one replica writes {name}; the others find it installed:\n{}",
            logs.join("\n----\n")
        );
    }
    let events = template(&c, "qwen-logs");
    assert_eq!(events["version"], 1);
    assert_eq!(events["index_patterns"], serde_json::json!(["qwen-logs-*"]));
    assert_eq!(events["priority"], 200);
    assert_eq!(replicas(&events), "1");
    assert_eq!(
        events["template"]["settings"]["index"]["number_of_shards"],
        "1"
    );
    let digest = events["_meta"]["digest"].clone();
    assert!(digest.is_string(), "{events}");
    drop(three);

    // A replica of another configuration under the same version leaves it alone.
    let other = lumberd_to(&hosts)
        .env("LUMBERD_OUTPUT_TEMPLATE_REPLICAS", "2")
        .start();
    assert!(
        other
            .logs()
            .contains("other contents under this template_version"),
        "{}",
        other.logs()
    );
    assert_eq!(template(&c, "qwen-logs")["_meta"]["digest"], digest);
    drop(other);

    // The rollout: version 2 replaces it; an old replica restarting keeps its hands off.
    let new = lumberd_to(&hosts)
        .env("LUMBERD_OUTPUT_TEMPLATE_REPLICAS", "2")
        .env("LUMBERD_OUTPUT_TEMPLATE_VERSION", "2")
        .start();
    let rolled = template(&c, "qwen-logs");
    assert_eq!(
        (rolled["version"].clone(), replicas(&rolled).clone()),
        (2.into(), "2".into())
    );
    let old = lumberd_to(&hosts).start();
    assert!(
        old.logs().contains("newer version of this index template"),
        "{}",
        old.logs()
    );
    let after = template(&c, "qwen-logs");
    assert_eq!(
        (after["version"].clone(), replicas(&after).clone()),
        (2.into(), "2".into()),
        "an older replica must not flip the template back"
    );
    drop((new, old));
}
