//! Elastic's Filebeat itself rebalancing onto a replica added under load: Filebeat
//! (7.17.29, tests/support/filebeat.rs) with `loadbalance: true` and `worker: 3` over one
//! host, the Service in front of the lumberd replicas ([`support::service::Service`], a
//! round-robin relay as kube-proxy is), `pipelining` at its default (2).
//!
//! This is what `server.max_connection_age` is for: Filebeat's own `ttl` does nothing
//! while `pipelining` is on (its async client ignores it, elastic/beats#39127), so
//! without lumberd closing aged connections Filebeat's workers stay on the replicas they
//! first reached. Checked: after a third replica starts, Filebeat's reconnects reach it
//! within about one age (the age + its 10 % jitter + Filebeat's 1 s reconnect backoff),
//! and every line of the file Filebeat shipped (its registry at the file's size) is
//! stored exactly once over the three replicas' file outputs (count and distinct ids).
//!
//! The log grows while the test runs, kept a bounded backlog ahead of what the replicas
//! have received, so that the load lasts as long as the test needs and no longer;
//! every wait polls an observable (metrics, the registry) against a deadline.

mod support;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use support::filebeat::{host, Filebeat, SHIP_DEADLINE};
use support::lumberd::{metric, Lumberd};
use support::qwen_log::{qwen_log_dir, stored_in_files, tally, QwenLog, Resends, Tally};
use support::service::Service;

/// Short, so that the test sees several ages; at least lumberd's 1 s minimum.
const AGE: Duration = Duration::from_secs(2);
/// `MAX_CONNECTION_AGE_JITTER`: a connection lives at most this much past `AGE`.
const JITTER: f64 = 0.1;
/// Filebeat's `output.logstash.backoff.init`: its wait before reconnecting.
const FILEBEAT_BACKOFF: Duration = Duration::from_secs(1);
/// Lines the log runs ahead of what the replicas received: a little over one of
/// Filebeat's default 2048-event batches, so every worker has windows to send.
const BACKLOG: usize = 3000;
/// Lines appended at a time.
const CHUNK: usize = 500;
/// Windows the new replica must acknowledge before the log stops growing: the clients
/// did not merely reach it, they kept sending to it.
const NEW_REPLICA_WINDOWS: f64 = 3.0;
/// The most lines the test writes before it gives up (with a diagnosis).
const MAX_LINES: usize = 200_000;

/// The user's filestream input with an id, reading a growing file promptly (its reader
/// backs off 2 s to 10 s at the end of the file by default), and the one host line that
/// [`Filebeat::builder`] points at the Service.
const CONFIG: &str = "filebeat.inputs:
- type: filestream
  id: qwen-rebalance
  paths:
    - /logs/qwen_inference.log
  encoding: utf-8
  backoff.init: 100ms
  backoff.max: 200ms
output.logstash:
  hosts: [\"logstash:5044\"]
";

const ACCEPTED: &str = "lumberd_connections_total";
const AGED: &str = "lumberd_connections_closed_total{reason=\"max_age\"}";
const RECEIVED: &str = "lumberd_events_received_total";
const WINDOWS: &str = "lumberd_windows_acknowledged_total";

fn replica() -> Lumberd {
    Lumberd::builder()
        .env(
            "LUMBERD_SERVER_MAX_CONNECTION_AGE",
            format!("{}ms", AGE.as_millis()),
        )
        .start()
}

fn value(lumberd: &Lumberd, series: &str) -> f64 {
    metric(&lumberd.scrape(), series).unwrap_or(0.0)
}

/// The log, kept [`BACKLOG`] lines ahead of what `replicas` have received.
struct GrowingLog<'a> {
    path: &'a Path,
    log: QwenLog,
}

impl GrowingLog<'_> {
    /// Appends chunks until the log is `BACKLOG` ahead of the events received.
    fn feed(&mut self, replicas: &[&Lumberd]) {
        let received: f64 = replicas.iter().map(|r| value(r, RECEIVED)).sum();
        while self.log.len() < received as usize + BACKLOG {
            assert!(
                self.log.len() < MAX_LINES,
                "{MAX_LINES} lines written and the test's condition not met: per replica \
                 (connections, windows, max_age closes): {:?}",
                replicas
                    .iter()
                    .map(|r| (value(r, ACCEPTED), value(r, WINDOWS), value(r, AGED)))
                    .collect::<Vec<_>>()
            );
            let from = self.log.len();
            self.log.append(self.path, "rebalance", from, from + CHUNK);
        }
    }

    /// Feeds the log until `done()` holds; fails after `deadline` saying `what`.
    fn feed_until(
        &mut self,
        replicas: &[&Lumberd],
        deadline: Duration,
        what: &str,
        fb: &Filebeat,
        done: impl Fn() -> bool,
    ) {
        let until = Instant::now() + deadline;
        while !done() {
            assert!(
                Instant::now() < until,
                "{what} within {deadline:?}\n{}",
                fb.diagnosis(replicas)
            );
            self.feed(replicas);
            thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn filebeat_loadbalance_with_pipelining_reaches_a_new_replica_within_one_age_each_line_once() {
    let (_dir, path, log) = qwen_log_dir("rebalance", CHUNK);
    let (a, b) = (replica(), replica());
    let service = Service::start(vec![a.addr(), b.addr()]);
    let mut fb = Filebeat::builder(CONFIG, &path, &[host(service.addr)])
        .set("output.logstash.loadbalance", true)
        .set("output.logstash.worker", 3)
        .start();
    let mut log = GrowingLog { path: &path, log };

    // The load is under way on both replicas before the third one exists.
    log.feed_until(
        &[&a, &b],
        Duration::from_secs(60),
        "Filebeat's windows did not reach both replicas",
        &fb,
        || value(&a, WINDOWS) >= 2.0 && value(&b, WINDOWS) >= 2.0,
    );

    let c = replica();
    let c_started = Instant::now();
    service.add(c.addr());
    // Every connection opened before C is closed for age within AGE (+ jitter), and its
    // worker reconnects after Filebeat's backoff, round robin over three: C's share
    // arrives within one age. The slack covers a loaded 2-core machine.
    let within = AGE.mul_f64(1.0 + JITTER) + FILEBEAT_BACKOFF + Duration::from_secs(3);
    let all = [&a, &b, &c];
    log.feed_until(
        &all,
        within,
        "the new replica got no connection from Filebeat",
        &fb,
        || value(&c, ACCEPTED) >= 1.0,
    );
    let reached = c_started.elapsed();
    log.feed_until(
        &all,
        Duration::from_secs(30),
        "the new replica acknowledged too few of Filebeat's windows",
        &fb,
        || value(&c, WINDOWS) >= NEW_REPLICA_WINDOWS,
    );

    // The log stops growing; Filebeat ships the rest (its registry at the file's size
    // means every line is acknowledged, so stored).
    fb.wait_shipped(&[&path], SHIP_DEADLINE, &all);
    fb.stop();
    let per_replica: Vec<(&str, usize, f64, f64)> = [("a", &a), ("b", &b), ("c", &c)]
        .iter()
        .map(|(name, r)| {
            let stored = stored_in_files(r).len();
            (*name, stored, value(r, ACCEPTED), value(r, AGED))
        })
        .collect();
    let stored: Vec<_> = all.iter().flat_map(|r| stored_in_files(r)).collect();
    let t = tally(&log.log, &stored, Resends::None, || fb.diagnosis(&all));
    let n = log.log.len();
    assert_eq!(
        t,
        Tally {
            sent: n,
            stored: n,
            distinct: n,
            duplicates: 0
        },
        "per replica (stored, connections, max_age closes): {per_replica:?}"
    );
    for (name, events, accepted, _) in &per_replica {
        assert!(
            *events > 0 && *accepted >= 1.0,
            "replica {name} stored {events} lines over {accepted} connections: the load \
             did not spread ({per_replica:?})"
        );
    }
    // The three connections Filebeat opened first (to A and B) were all closed for age.
    let aged: f64 = per_replica.iter().map(|r| r.3).sum();
    assert!(
        aged >= 3.0,
        "only {aged} connections were closed for max_age ({per_replica:?})"
    );
    eprintln!(
        "filebeat rebalance: new replica reached {reached:?} after start; {t}; per replica \
         (stored, connections, max_age closes): {per_replica:?}"
    );
}
