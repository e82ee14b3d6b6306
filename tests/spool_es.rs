//! The spool in front of a real Elasticsearch 8.11.3, fed by real go-lumber clients: an
//! outage ridden out, lumberd killed with a non-empty spool, a full spool, a full disk
//! (a size-limited tmpfs), a spool full for longer than `stall_timeout` (the client fails
//! over), a damaged spool directory, and SIGTERM while Elasticsearch is down. In every one, each
//! acknowledged event ends up in Elasticsearch exactly once.
//!
//! One node serves the whole file: the scenarios stop, freeze (SIGSTOP) and restart it,
//! so they run one after the other inside one test, each named for its rule, each
//! clearing the indices first. They skip loudly without Elasticsearch unless
//! `LUMBERD_REQUIRE_ES` is set. The engine's own crash and damage tests are tests/spool.rs
//! and src/spool/tests.rs; these check the wiring: what is acknowledged, stored, resent.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::clients::{assert_all_acked, go_lumber, run_client, ClientRun};
use support::es::{lumberd_to, EsNode};
use support::lumberd::{metric, Lumberd, LumberdBuilder};
use support::tmpfs::tmpfs;

const EVENTS: &str = "qwen-logs-*,-qwen-logs-deadletter-*";
/// How long the spool may take to drain into a restarted node on a loaded 2-core machine.
const DRAIN: Duration = Duration::from_secs(300);
/// `output.request_timeout` where how soon a frozen node is noticed does not matter: long
/// enough for a node still warming up (its templates installed right after its start,
/// on a loaded machine: 3 s was seen to fail lumberd's start).
const PATIENT_TIMEOUT: &str = "30s";

/// SIGSTOP/SIGCONT of the node: a cluster that hangs (requests time out) rather than
/// refusing connections, and that comes back in a second instead of a restart's minute.
fn signal_node(node: &EsNode, sig: &str) {
    let pid = std::fs::read_to_string(node.dir().join("es.pid")).expect("es.pid of the node");
    let ok = Command::new("kill")
        .args([sig, pid.trim()])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill {sig} {}", pid.trim());
}

fn freeze(node: &EsNode) {
    signal_node(node, "-STOP");
}

fn thaw(node: &EsNode) {
    signal_node(node, "-CONT");
}

/// Deletes the event indices, so each scenario counts only its own events.
fn clear(node: &EsNode) {
    let (status, body) = node.request("DELETE", "/qwen-logs-*", None);
    assert!(
        status == 200 || status == 404,
        "DELETE qwen-logs-*: {status} {body}"
    );
}

/// lumberd into `node` with its spool in `spool`: keep-alives every second, a request
/// timeout short enough that a frozen node is noticed, stalls never closing connections.
fn spooled(node: &EsNode, spool: &Path) -> LumberdBuilder {
    lumberd_to(node.url())
        .env("LUMBERD_SPOOL_DIR", spool.display().to_string())
        .env("LUMBERD_SERVER_KEEPALIVE_INTERVAL", "1s")
        .env("LUMBERD_SERVER_STALL_TIMEOUT", "10m")
        .env("LUMBERD_OUTPUT_REQUEST_TIMEOUT", "3s")
}

/// go-lumber's generated inference events, pipelined as Filebeat does, ids `<id>-N`.
fn client(id: &str, window: usize, windows: usize) -> Command {
    let mut cmd = go_lumber();
    cmd.args([
        "-mode",
        "async",
        "-inflight",
        "2",
        "-timeout",
        "60s",
        "-id",
        id,
    ])
    .args(["-window", &window.to_string()])
    .args(["-windows", &windows.to_string()]);
    cmd
}

fn spawn_client(cmd: Command, lumberd: &Lumberd) -> JoinHandle<ClientRun> {
    let addr = lumberd.addr();
    std::thread::spawn(move || run_client(cmd, addr))
}

/// The ids a run had acknowledged: windows are acknowledged in order, so a prefix.
fn acked_ids(run: &ClientRun) -> Vec<String> {
    let n = run.result["events_acked"].as_u64().unwrap_or(0) as usize;
    run.ids().into_iter().take(n).collect()
}

fn value(scrape: &str, series: &str) -> f64 {
    metric(scrape, series).unwrap_or_else(|| panic!("{series} missing from the scrape"))
}

/// p50 and p99 of `lumberd_ack_latency_seconds` between two scrapes, as the upper bound
/// of the bucket each falls in.
fn ack_latency(before: &str, after: &str) -> (f64, f64, u64) {
    let buckets = |scrape: &str| -> Vec<(f64, f64)> {
        scrape
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("lumberd_ack_latency_seconds_bucket{le=\"")?;
                let (le, n) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, n.trim().parse().ok()?))
            })
            .collect()
    };
    let (b, a) = (buckets(before), buckets(after));
    let delta: Vec<(f64, f64)> = a
        .iter()
        .map(|(le, n)| {
            (
                *le,
                n - b.iter().find(|(l, _)| l == le).map_or(0.0, |x| x.1),
            )
        })
        .collect();
    let total = delta.last().map_or(0.0, |x| x.1);
    let q = |q: f64| {
        delta
            .iter()
            .find(|(_, n)| *n >= q * total)
            .map_or(f64::NAN, |x| x.0)
    };
    (q(0.5), q(0.99), total as u64)
}

/// Polls until every id of `ids` is stored (at most [`DRAIN`]); returns how long it took.
fn wait_stored(node: &EsNode, want: u64, lumberd: &Lumberd) -> Duration {
    let start = Instant::now();
    loop {
        let n = node.count(EVENTS);
        if n >= want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < DRAIN,
            "only {n} of {want} events stored after {DRAIN:?}; lumberd logs:\n{}",
            lumberd.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Each of `acked` is stored exactly once, and nothing is stored twice.
fn assert_stored_once(node: &EsNode, acked: &[String], what: &str) -> HashMap<String, u64> {
    let counts = node.value_counts(EVENTS, "test_id.keyword");
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    let doubled: Vec<(&String, &u64)> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        missing.is_empty() && doubled.is_empty(),
        "{what}: {} acknowledged, {} distinct stored; missing {} (first {:?}); stored more \
         than once {} (first {:?})",
        acked.len(),
        counts.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        doubled.len(),
        &doubled[..doubled.len().min(5)]
    );
    assert_eq!(
        node.count(EVENTS),
        counts.len() as u64,
        "{what}: documents and distinct ids differ"
    );
    counts
}

/// Waits (at most [`DRAIN`]) until the spool holds nothing Elasticsearch has not stored.
fn wait_spool_empty(lumberd: &Lumberd) {
    let start = Instant::now();
    loop {
        let scrape = lumberd.scrape();
        if metric(&scrape, "lumberd_spool_records") == Some(0.0) {
            return;
        }
        assert!(
            start.elapsed() < DRAIN,
            "the spool did not empty within {DRAIN:?}\n{scrape}\n{}",
            lumberd.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn spool_rides_out_outages_crashes_a_full_disk_budget_and_damage_storing_each_acknowledged_event_once(
) {
    let Some(mut node) = EsNode::start(&["action.destructive_requires_name=false"]) else {
        return;
    };
    // `LUMBERD_SPOOL_ES_ONLY=full,damage` runs only those scenarios (while working on one).
    let only = std::env::var("LUMBERD_SPOOL_ES_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|n| n == name);
    if run("fast") {
        the_fast_path_hands_over_while_caught_up_falls_back_to_disk_while_frozen_and_returns(&node);
    }
    if run("outage") {
        elasticsearch_outage_every_window_is_acknowledged_from_the_spool_and_drained_once(
            &mut node,
        );
    }
    if run("kill") {
        kill_9_with_a_non_empty_spool_under_load_loses_and_doubles_no_acknowledged_event(&node);
    }
    if run("full") {
        full_spool_withholds_acks_keeps_alive_and_resumes_when_elasticsearch_drains_it(&node);
    }
    if run("disk_full") {
        disk_full_withholds_acks_logs_and_counts_it_and_everything_flows_once_space_returns(&node);
    }
    if run("stall") {
        full_past_stall_timeout_closes_the_connection_and_the_client_fails_over_losing_nothing(
            &node,
        );
    }
    if run("damage") {
        damaged_spool_directory_starts_reports_and_replays_what_is_valid(&node);
    }
    if run("sigterm") {
        sigterm_with_elasticsearch_down_exits_within_the_grace_and_the_next_start_drains(&node);
    }
}

/// The reader's fast path switched both ways under load: caught up it hands Elasticsearch
/// the batches from memory; with the node frozen the memory bound (4 MiB here) fills and
/// it reads from disk; thawed, it drains from disk while clients keep sending, and once
/// caught up hands over from memory again. Stored = distinct = sent: nothing skipped at a
/// switch, nothing stored twice.
fn the_fast_path_hands_over_while_caught_up_falls_back_to_disk_while_frozen_and_returns(
    node: &EsNode,
) {
    clear(node);
    let spool = tempfile::tempdir().unwrap();
    // 2 MiB kept for the fast path, and 8 batches at most with Elasticsearch (8 MiB of
    // in-flight budget / 1 MiB per read batch): a few windows of the frozen node's
    // backlog fill both, the rest must be read back.
    let lumberd = spooled(node, spool.path())
        .env("LUMBERD_SPOOL_MEMORY_BYTES", "4MiB")
        .env("LUMBERD_SERVER_MAX_INFLIGHT_BYTES", (8 << 20).to_string())
        .env("LUMBERD_SERVER_MAX_FRAME_BYTES", (2 << 20).to_string())
        .start();
    let paths = |scrape: &str| {
        let read = value(scrape, "lumberd_spool_records_read_total");
        let memory = value(scrape, "lumberd_spool_records_from_memory_total");
        (memory, read - memory)
    };
    let mut sent: Vec<String> = Vec::new();
    let joined = |runs: Vec<JoinHandle<ClientRun>>, sent: &mut Vec<String>| {
        for run in runs {
            let run = run.join().unwrap();
            assert_all_acked(&run, &lumberd);
            sent.extend(run.ids());
        }
    };
    let send = |name: &str, clients: usize, windows: usize, sent: &mut Vec<String>| {
        joined(thread_send(&lumberd, name, clients, windows), sent)
    };

    // Caught up: from memory.
    send("fast-a", 2, 10, &mut sent);
    wait_stored(node, sent.len() as u64, &lumberd);
    wait_spool_empty(&lumberd);
    let (memory_a, disk_a) = paths(&lumberd.scrape());
    assert!(
        memory_a > 0.0,
        "caught up, batches are handed over from memory: {memory_a} from memory, {disk_a} from disk"
    );

    // Frozen: the reader falls behind past the bound and reads from disk.
    freeze(node);
    send("fast-b", 4, 10, &mut sent);
    let during = thread_send(&lumberd, "fast-c", 2, 10);
    thaw(node);
    joined(during, &mut sent);
    wait_stored(node, sent.len() as u64, &lumberd);
    wait_spool_empty(&lumberd);
    let (memory_b, disk_b) = paths(&lumberd.scrape());
    assert!(
        disk_b > disk_a,
        "behind, the reader reads from disk: {disk_a} -> {disk_b} records from disk"
    );

    // Caught up again: from memory again.
    send("fast-d", 2, 10, &mut sent);
    wait_stored(node, sent.len() as u64, &lumberd);
    wait_spool_empty(&lumberd);
    let (memory_d, disk_d) = paths(&lumberd.scrape());
    assert!(
        memory_d > memory_b,
        "caught up again, the fast path resumes: {memory_b} -> {memory_d} from memory"
    );
    let counts = assert_stored_once(node, &sent, "fast path switch-over");
    assert_eq!(counts.len(), sent.len(), "stored = distinct = sent");
    eprintln!(
        "fast path: {} events sent, {} distinct stored, {} documents; records from memory / \
         disk: {memory_a}/{disk_a} caught up, {memory_b}/{disk_b} after the freeze, \
         {memory_d}/{disk_d} at the end",
        sent.len(),
        counts.len(),
        node.count(EVENTS)
    );
}

/// Clients started on threads, for sending while something else happens.
fn thread_send(
    lumberd: &Lumberd,
    name: &str,
    clients: usize,
    windows: usize,
) -> Vec<JoinHandle<ClientRun>> {
    (0..clients)
        .map(|c| spawn_client(client(&format!("{name}{c}"), 500, windows), lumberd))
        .collect()
}

fn elasticsearch_outage_every_window_is_acknowledged_from_the_spool_and_drained_once(
    node: &mut EsNode,
) {
    const CLIENTS: usize = 4;
    const WINDOW: usize = 500;
    const WINDOWS: usize = 20;
    let total = (CLIENTS * WINDOW * WINDOWS) as u64;
    clear(node);
    let spool = tempfile::tempdir().unwrap();
    let lumberd = spooled(node, spool.path()).start();
    node.stop();
    let outage = Instant::now();
    let before = lumberd.scrape();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| spawn_client(client(&format!("outage{c}"), WINDOW, WINDOWS), &lumberd))
        .collect();
    let runs: Vec<ClientRun> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let sent_in = outage.elapsed();
    for run in &runs {
        assert_all_acked(run, &lumberd);
    }
    let after = lumberd.scrape();
    let (p50, p99, windows) = ack_latency(&before, &after);
    let written = value(&after, "lumberd_spool_records_written_total");
    let bytes = value(&after, "lumberd_spool_bytes");
    assert!(
        written >= total as f64 && value(&after, "lumberd_spool_records") >= total as f64,
        "every event is in the spool while Elasticsearch is down: written {written}\n{after}"
    );
    let (ready, why) = lumberd.admin_get("/readyz");
    assert_eq!(
        ready, 200,
        "below its high-water mark the spool keeps lumberd ready: {why}"
    );
    eprintln!(
        "outage: {total} events in {windows} windows from {CLIENTS} go-lumber clients, all \
         acknowledged in {sent_in:?} with Elasticsearch down; ACK latency p50 <= {p50} s, \
         p99 <= {p99} s; spool {bytes} bytes = {:.0} bytes per record",
        bytes / written
    );

    node.restart();
    let down_for = outage.elapsed();
    let drained_in = wait_stored(node, total, &lumberd);
    let ids: Vec<String> = runs.iter().flat_map(|r| r.ids()).collect();
    let counts = assert_stored_once(node, &ids, "outage");
    assert_eq!(counts.len() as u64, total);
    wait_spool_empty(&lumberd);
    eprintln!(
        "outage: Elasticsearch down {down_for:?}; after its restart the spool drained into \
         it in {drained_in:?}; {} documents, {} distinct",
        node.count(EVENTS),
        counts.len()
    );
}

fn kill_9_with_a_non_empty_spool_under_load_loses_and_doubles_no_acknowledged_event(node: &EsNode) {
    const ROUNDS: usize = 3;
    clear(node);
    let spool = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    for round in 0..ROUNDS {
        let mut lumberd = spooled(node, spool.path()).start();
        // Elasticsearch hangs: what is acknowledged stays in the spool.
        freeze(node);
        let before = value(&lumberd.scrape(), "lumberd_spool_records_written_total");
        let run = spawn_client(client(&format!("kill{round}"), 500, 40), &lumberd);
        lumberd.wait_for_metric(
            "lumberd_spool_records_written_total",
            before + 3000.0,
            Duration::from_secs(60),
        );
        let spooled_at_kill = value(&lumberd.scrape(), "lumberd_spool_records");
        lumberd.kill();
        let run = run.join().unwrap();
        let ids = acked_ids(&run);
        eprintln!(
            "kill -9 #{}: {} of {} events acknowledged, {spooled_at_kill} records in the spool",
            round + 1,
            ids.len(),
            run.ids().len()
        );
        assert!(
            !ids.is_empty() && ids.len() < run.ids().len(),
            "the kill must come mid-load: {}",
            run.describe()
        );
        acked.extend(ids);
        thaw(node);
    }
    let lumberd = spooled(node, spool.path()).start();
    wait_stored(node, acked.len() as u64, &lumberd);
    wait_spool_empty(&lumberd);
    let scrape = lumberd.scrape();
    let replayed = value(&scrape, "lumberd_spool_records_replayed_total");
    assert!(replayed > 0.0, "the last start replays the spool\n{scrape}");
    let counts = assert_stored_once(node, &acked, "kill -9");
    eprintln!(
        "kill -9 x{ROUNDS}: {} acknowledged, {} distinct stored, {} documents; {replayed} \
         records replayed by the last start",
        acked.len(),
        counts.len(),
        node.count(EVENTS)
    );
}

/// A spool of two 1 MiB segments (frames of 256 KiB at most, so records fit).
fn small_spool(node: &EsNode, spool: &Path) -> LumberdBuilder {
    spooled(node, spool)
        .env("LUMBERD_SERVER_MAX_FRAME_BYTES", "262144")
        .env("LUMBERD_SPOOL_SEGMENT_BYTES", "1MiB")
        .env("LUMBERD_SPOOL_MAX_BYTES", "2MiB")
}

/// Waits (at most 120 s) until windows stop being acknowledged while keep-alives go on:
/// three keep-alives sent and no ACK between two scrapes. Returns the ACK count and the
/// second scrape.
fn acks_stop_while_kept_alive(lumberd: &Lumberd, why: &str) -> (f64, String) {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let s = lumberd.scrape();
        let (acks, keepalives) = (
            value(&s, "lumberd_windows_acknowledged_total"),
            value(&s, "lumberd_keepalives_sent_total"),
        );
        lumberd.wait_for_metric(
            "lumberd_keepalives_sent_total",
            keepalives + 3.0,
            Duration::from_secs(30),
        );
        let s = lumberd.scrape();
        if value(&s, "lumberd_windows_acknowledged_total") == acks {
            return (acks, s);
        }
        assert!(
            Instant::now() < until,
            "acknowledgements never stopped with {why}\n{s}"
        );
    }
}

fn full_spool_withholds_acks_keeps_alive_and_resumes_when_elasticsearch_drains_it(node: &EsNode) {
    clear(node);
    let spool = tempfile::tempdir().unwrap();
    let lumberd = small_spool(node, spool.path()).start();
    freeze(node);
    let run = spawn_client(client("full", 500, 20), &lumberd);
    // Full: windows stop being acknowledged while keep-alives go on.
    let (acks, scrape) =
        acks_stop_while_kept_alive(&lumberd, "a 2 MiB spool and Elasticsearch frozen");
    let bytes = value(&scrape, "lumberd_spool_bytes");
    assert!(
        bytes <= 2.0 * 1024.0 * 1024.0 && acks < 20.0,
        "the spool stays within max_bytes ({bytes} bytes) and holds back ACKs ({acks} of 20 \
         windows)"
    );
    assert!(
        !run.is_finished(),
        "the client waits, kept alive, while the spool is full"
    );
    eprintln!("full spool: {bytes} bytes, {acks} of 20 windows acknowledged, keep-alives flowing");
    thaw(node);
    let run = run.join().unwrap();
    assert_all_acked(&run, &lumberd);
    wait_stored(node, 10_000, &lumberd);
    assert_stored_once(node, &run.ids(), "full spool");
    let closed = value(
        &lumberd.scrape(),
        "lumberd_connections_closed_total{reason=\"stalled\"}",
    );
    assert_eq!(
        closed, 0.0,
        "no connection was closed while the spool was full"
    );
}

/// Fills the filesystem holding `dir` with a file there until a write fails for want of
/// space, then gives `free` bytes of it back. Returns the file, whose removal gives the
/// space back.
fn ballast(dir: &Path, free: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join("ballast");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("writing the ballast {}: {e}", path.display()),
        }
        assert!(written < 1 << 30, "{} never filled", dir.display());
    }
    f.set_len(written.saturating_sub(free)).unwrap();
    f.sync_all().unwrap();
    path
}

fn disk_full_withholds_acks_logs_and_counts_it_and_everything_flows_once_space_returns(
    node: &EsNode,
) {
    const WINDOWS: usize = 16;
    let total = (500 * WINDOWS) as u64;
    clear(node);
    let mnt = tempfile::tempdir().unwrap();
    let what =
        "disk_full_withholds_acks_logs_and_counts_it_and_everything_flows_once_space_returns";
    // 16 MiB hold the whole load (~5.5 MB of records); the ballast leaves 1 MiB of it.
    let Some(fs) = tmpfs(mnt.path(), "size=16m", what) else {
        return;
    };
    let spool = fs.path().join("spool");
    let lumberd = small_spool(node, &spool)
        .env("LUMBERD_SPOOL_MAX_BYTES", "64MiB")
        .env("LUMBERD_OUTPUT_REQUEST_TIMEOUT", PATIENT_TIMEOUT)
        .start();
    let ballast = ballast(fs.path(), 1024 * 1024);
    // Elasticsearch hangs, so that nothing drains and the disk stays full.
    freeze(node);
    let run = spawn_client(client("diskfull", 500, WINDOWS), &lumberd);
    lumberd.wait_for_metric(
        "lumberd_spool_write_errors_total",
        1.0,
        Duration::from_secs(120),
    );
    let (acks, scrape) = acks_stop_while_kept_alive(&lumberd, "a full filesystem");
    assert!(
        acks < WINDOWS as f64 && !run.is_finished(),
        "with the disk full, windows wait unacknowledged ({acks} of {WINDOWS} acknowledged)"
    );
    let logs = lumberd.wait_for_logs("the disk-full error", Duration::from_secs(10), |l| {
        l.contains("spool write failed (the disk is full)")
    });
    let errors = value(&scrape, "lumberd_spool_write_errors_total");
    let lines = logs.matches("spool write failed").count();
    assert!(
        lines >= 1 && (lines as f64) < errors.max(2.0),
        "one throttled ERROR line, not one per retry: {lines} lines for {errors} errors"
    );
    assert_eq!(
        lumberd.admin_get("/healthz").0,
        200,
        "a full disk is no crash"
    );
    eprintln!(
        "disk full: {acks} of {WINDOWS} windows acknowledged, then none while keep-alives \
         flowed; {errors} write errors counted, {lines} log line(s)"
    );

    std::fs::remove_file(&ballast).unwrap();
    let run = run.join().unwrap();
    assert_all_acked(&run, &lumberd);
    thaw(node);
    wait_stored(node, total, &lumberd);
    wait_spool_empty(&lumberd);
    let counts = assert_stored_once(node, &run.ids(), "disk full");
    assert_eq!(counts.len() as u64, total);
    let scrape = lumberd.scrape();
    assert_eq!(
        value(
            &scrape,
            "lumberd_connections_closed_total{reason=\"stalled\"}"
        ),
        0.0,
        "no connection was closed while the disk was full (stall_timeout is 10 minutes)"
    );
    eprintln!(
        "disk full: space returned, every window acknowledged; {} documents, {} distinct",
        node.count(EVENTS),
        counts.len()
    );
    drop(lumberd); // before the tmpfs is unmounted
}

fn full_past_stall_timeout_closes_the_connection_and_the_client_fails_over_losing_nothing(
    node: &EsNode,
) {
    const WINDOWS: usize = 20;
    let total = (500 * WINDOWS) as u64;
    clear(node);
    let (spool_a, spool_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A: a 2 MiB spool that closes a connection after 5 s without an ACK; B: room.
    let a = small_spool(node, spool_a.path())
        .env("LUMBERD_SERVER_STALL_TIMEOUT", "5s")
        .env("LUMBERD_OUTPUT_REQUEST_TIMEOUT", PATIENT_TIMEOUT)
        .start();
    let b = spooled(node, spool_b.path())
        .env("LUMBERD_OUTPUT_REQUEST_TIMEOUT", PATIENT_TIMEOUT)
        .start();
    freeze(node);
    let mut cmd = go_lumber();
    cmd.args(["-mode", "failover", "-inflight", "2", "-timeout", "60s"])
        .args(["-deadline", "240s", "-backoff", "200ms", "-id", "stall"])
        .arg("-addr2")
        .arg(b.addr().to_string())
        .args([
            "-window",
            &500.to_string(),
            "-windows",
            &WINDOWS.to_string(),
        ]);
    let started = Instant::now();
    let run = spawn_client(cmd, &a);
    let stalled = "lumberd_connections_closed_total{reason=\"stalled\"}";
    a.wait_for_metric(stalled, 1.0, Duration::from_secs(120));
    let run = run.join().unwrap();
    let took = started.elapsed();
    let acked_by = |l: &Lumberd| run.result["acked_by"][l.addr().to_string()].as_u64();
    let (by_a, by_b) = (acked_by(&a).unwrap_or(0), acked_by(&b).unwrap_or(0));
    let acked = run.result["events_acked"].as_u64().unwrap_or(0);
    assert!(
        run.status.success() && acked == total && by_a + by_b == total && by_a > 0 && by_b > 0,
        "the client fails over to B when A's full spool stalls it: acknowledged {acked} of \
         {total} (A {by_a}, B {by_b})\n{}\n--- A ---\n{}",
        run.describe(),
        a.logs()
    );
    let resent = run.result["resent"].as_u64().unwrap_or(0);
    thaw(node);
    wait_stored(node, total, &b);
    wait_spool_empty(&a);
    wait_spool_empty(&b);
    // A's spool also held events of the window it closed unacknowledged: the client
    // resent them to B, so they are duplicates of B's, and stored once by their ids.
    let counts = assert_stored_once(node, &run.ids(), "stall");
    assert_eq!(counts.len() as u64, total);
    eprintln!(
        "stall: A (2 MiB spool, stall_timeout 5 s) acknowledged {by_a} and closed {} \
         stalled connection(s); the client failed over, B acknowledged {by_b}, {resent} \
         resent, all in {took:?}; {} documents, {} distinct",
        value(&a.scrape(), stalled),
        node.count(EVENTS),
        counts.len()
    );
}

fn damaged_spool_directory_starts_reports_and_replays_what_is_valid(node: &EsNode) {
    clear(node);
    let spool = tempfile::tempdir().unwrap();
    let mut lumberd = small_spool(node, spool.path())
        .env("LUMBERD_SPOOL_MAX_BYTES", "64MiB")
        .start();
    freeze(node);
    let run = run_client(client("damage", 500, 10), lumberd.addr());
    assert_all_acked(&run, &lumberd);
    lumberd.kill();
    thaw(node);

    let segs = support::spool_segments(spool.path());
    assert!(segs.len() >= 3, "several segments to damage: {segs:?}");
    // (Bulk requests the frozen node had in its socket buffers may have been indexed on
    // the thaw: those records are duplicates now, and a damaged one may not be lost.)
    // A flipped byte in the middle of the second segment.
    let mut bytes = std::fs::read(&segs[1]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&segs[1], bytes).unwrap();
    // A torn last record: half a frame header and some payload at the end.
    let last = segs.last().unwrap();
    let mut tail = std::fs::read(last).unwrap();
    let torn = tail[tail.len() - 700..].to_vec();
    tail.extend_from_slice(&torn[..300]);
    std::fs::write(last, tail).unwrap();
    // 4 KiB of random bytes over records in the middle of the third segment.
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut third = std::fs::read(&segs[2]).unwrap();
    let at = third.len() / 3;
    third[at..at + noise.len()].copy_from_slice(&noise);
    std::fs::write(&segs[2], third).unwrap();
    // A zero-length segment after the last, and a stray file of random bytes.
    std::fs::write(spool.path().join("00000000000099999990.seg"), b"").unwrap();
    std::fs::write(spool.path().join("notes.txt"), &noise[..100]).unwrap();
    // No read position: replay from the oldest segment.
    std::fs::remove_file(spool.path().join("read-position")).ok();

    let lumberd = small_spool(node, spool.path())
        .env("LUMBERD_SPOOL_MAX_BYTES", "64MiB")
        .start();
    wait_spool_empty(&lumberd);
    let scrape = lumberd.scrape();
    let corrupt = value(&scrape, "lumberd_spool_corrupt_records_total");
    let counts = node.value_counts(EVENTS, "test_id.keyword");
    let ids = run.ids();
    let lost: Vec<&String> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
    assert!(
        corrupt >= 2.0 && lost.len() <= 12,
        "the flipped byte and the random run cost at most their records (one, and the 7 or \
         so 4 KiB covers), and are counted: corrupt={corrupt}, lost {} ({:?})\n{}",
        lost.len(),
        lost,
        lumberd.logs()
    );
    assert!(
        counts.values().all(|n| *n == 1) && counts.len() + lost.len() == ids.len(),
        "every other record is replayed once"
    );
    assert_eq!(lumberd.admin_get("/healthz").0, 200, "{}", lumberd.logs());
    eprintln!(
        "damaged spool: {} of {} records replayed once, {} lost to the flipped byte and the \
         random run, {corrupt} corrupt region(s) counted",
        counts.len(),
        ids.len(),
        lost.len()
    );
}

fn sigterm_with_elasticsearch_down_exits_within_the_grace_and_the_next_start_drains(node: &EsNode) {
    const GRACE: Duration = Duration::from_secs(5);
    clear(node);
    let spool = tempfile::tempdir().unwrap();
    let mut lumberd = spooled(node, spool.path())
        .env("LUMBERD_SERVER_SHUTDOWN_GRACE", "5s")
        .start();
    freeze(node);
    let run = spawn_client(client("term", 500, 40), &lumberd);
    lumberd.wait_for_metric(
        "lumberd_spool_records_written_total",
        3000.0,
        Duration::from_secs(60),
    );
    let asked = Instant::now();
    lumberd.terminate();
    let status = lumberd.wait_exit(GRACE + Duration::from_secs(5));
    let took = asked.elapsed();
    assert!(
        status.is_some_and(|s| s.success()) && took <= GRACE + Duration::from_secs(2),
        "SIGTERM with Elasticsearch down: exit {status:?} after {took:?} (grace {GRACE:?})\n{}",
        lumberd.logs()
    );
    let run = run.join().unwrap();
    let acked = acked_ids(&run);
    thaw(node);
    let next = spooled(node, spool.path()).start();
    wait_stored(node, acked.len() as u64, &next);
    wait_spool_empty(&next);
    let counts = assert_stored_once(node, &acked, "SIGTERM");
    eprintln!(
        "SIGTERM with Elasticsearch frozen: exit 0 after {took:?}; {} acknowledged, all \
         stored once by the next start ({} distinct)",
        acked.len(),
        counts.len()
    );
}
