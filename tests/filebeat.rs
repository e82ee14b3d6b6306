//! Elastic's Filebeat itself (7.17.29, built from `github.com/elastic/beats/v7` by
//! tests/clients/filebeat.sh; tests/clients/README.md says why that version) tailing a Qwen
//! inference log into a live lumberd. Filebeat runs the user's `filebeat.yml` (issue 14)
//! with only the log path and the host changed; a setting a scenario is about is a `-E`
//! flag. Every scenario runs against the file output and against a real Elasticsearch
//! 8.11.3 (`tests/es/es.sh`; skipped loudly without it unless `LUMBERD_REQUIRE_ES`), and
//! checks exact counts: lines logged (sent), documents stored, distinct document ids,
//! and duplicates, which are allowed only as same-id resends after a crash. Each
//! scenario prints its counts (`cargo test --test filebeat -- --nocapture`).
//!
//! Nothing sleeps to synchronise: the tests wait on Filebeat's registry (a file's cursor
//! reaches the file's size only when every line of it has been acknowledged, and by
//! lumberd's ACK contract stored), on lumberd's metrics and on ports.

mod support;

use std::path::PathBuf;

use support::certs::{Ca, Validity};
use support::es::EsNode;
use support::filebeat::{
    corrected_config, host, rebind_check, stable_port, Filebeat, SHIP_DEADLINE, USER_CONFIG,
};
use support::lumberd::{lumberd_command, metric, Lumberd, LumberdBuilder};
use support::qwen_log::{
    dead_letters_in_es, dead_letters_in_files, qwen_log_dir, stored_in_es, stored_in_files, tally,
    QwenLog, Resends, Stored, Tally,
};

/// Where lumberd writes: its file output, or a real Elasticsearch node.
enum Sink {
    Files,
    Es(EsNode),
}

impl Sink {
    /// A node of its own, or `None` to skip (no Elasticsearch and not required).
    fn es() -> Option<Sink> {
        EsNode::start(&[]).map(Sink::Es)
    }

    fn name(&self) -> &'static str {
        match self {
            Sink::Files => "file output",
            Sink::Es(_) => "Elasticsearch",
        }
    }

    /// A lumberd writing here, with its default (Qwen) pipeline.
    fn lumberd(&self) -> LumberdBuilder {
        match self {
            Sink::Files => Lumberd::builder(),
            Sink::Es(node) => support::es::lumberd_to(node.url()),
        }
    }

    /// Every event document stored by `lumberds` (their data dirs; or the node).
    fn stored(&self, lumberds: &[&Lumberd]) -> Vec<Stored> {
        match self {
            Sink::Files => lumberds.iter().flat_map(|l| stored_in_files(l)).collect(),
            Sink::Es(node) => stored_in_es(node),
        }
    }

    fn dead_letters(&self, lumberds: &[&Lumberd]) -> u64 {
        match self {
            Sink::Files => lumberds
                .iter()
                .map(|l| dead_letters_in_files(l) as u64)
                .sum(),
            Sink::Es(node) => dead_letters_in_es(node),
        }
    }
}

/// The value of `series` on `lumberd`'s admin port (0 when absent).
fn gauge(lumberd: &Lumberd, series: &str) -> f64 {
    metric(&lumberd.scrape(), series).unwrap_or(0.0)
}

/// Stops Filebeat, checks what `lumberds` stored against `log`, prints and returns the
/// counts. Nothing is dead-lettered in any scenario.
fn finish(
    scenario: &str,
    sink: &Sink,
    fb: &mut Filebeat,
    log: &QwenLog,
    lumberds: &[&Lumberd],
    resends: Resends,
) -> Tally {
    fb.stop();
    let stored = sink.stored(lumberds);
    let t = tally(log, &stored, resends, || {
        let mut d = fb.diagnosis(lumberds);
        for l in lumberds {
            let scrape = l.scrape();
            d.push_str(&format!(
                "\n--- lumberd {} output: {:?}\n",
                l.addr(),
                scrape
                    .lines()
                    .filter(|s| s.starts_with("lumberd_output_events_total")
                        || s.starts_with("lumberd_events_received_total"))
                    .collect::<Vec<_>>()
            ));
        }
        d
    });
    let dead = sink.dead_letters(lumberds);
    assert_eq!(dead, 0, "{dead} dead letters\n{}", fb.diagnosis(lumberds));
    eprintln!("filebeat scenario '{scenario}' ({}): {t}", sink.name());
    t
}

/// [`finish`] for a scenario in which nothing fails: every line stored exactly once.
fn finish_exactly_once(
    scenario: &str,
    sink: &Sink,
    fb: &mut Filebeat,
    log: &QwenLog,
    lumberds: &[&Lumberd],
) {
    let t = finish(scenario, sink, fb, log, lumberds, Resends::None);
    assert_eq!(t, exactly_once(log.len()), "{scenario}");
}

fn exactly_once(n: usize) -> Tally {
    Tally {
        sent: n,
        stored: n,
        distinct: n,
        duplicates: 0,
    }
}

/// A scenario's two tests: against the file output, and against a real Elasticsearch
/// (skipped, loudly, when there is none and `LUMBERD_REQUIRE_ES` is unset).
macro_rules! on_both_outputs {
    ($scenario:ident => $files:ident, $es:ident) => {
        #[test]
        fn $files() {
            $scenario(Sink::Files);
        }

        #[test]
        fn $es() {
            if let Some(sink) = Sink::es() {
                $scenario(sink);
            }
        }
    };
}

// ---- the user's configuration ---------------------------------------------------------

/// The user's filebeat.yml as it is (filestream, `close_eof`, one host): every line once,
/// the JSON parsed, numbers converted, `@timestamp` from the line, host/agent/ecs gone, in
/// the index of its UTC day (the lines cross midnight, some written at +08:00).
fn user_config_stores_every_line_once(sink: Sink) {
    let (_dir, path, log) = qwen_log_dir("user", 600);
    let days: std::collections::BTreeSet<&str> =
        log.lines.iter().map(|l| l.index.as_str()).collect();
    assert_eq!(days.len(), 2, "the log must cross a UTC midnight: {days:?}");
    let lumberd = sink.lumberd().start();
    let mut fb = Filebeat::user_config(&path, &lumberd).start();
    fb.wait_shipped(&[&path], SHIP_DEADLINE, &[&lumberd]);
    // What Filebeat itself says of this config: a filestream input without an id.
    let errors = fb.errors();
    assert!(
        errors.len() == 1 && errors[0].contains("filestream input ID without ID"),
        "Filebeat's only ERROR should be the missing filestream id, got {errors:#?}"
    );
    finish_exactly_once("user config", &sink, &mut fb, &log, &[&lumberd]);
}

on_both_outputs!(
    user_config_stores_every_line_once =>
    filebeat_user_config_stores_every_line_once_parsed_in_its_utc_day_file_output,
    filebeat_user_config_stores_every_line_once_parsed_in_its_utc_day_elasticsearch
);

// ---- Filebeat settings users set -------------------------------------------------------

/// `compression_level: 6`, `pipelining: 2`, `bulk_max_size: 100`: windows of at most 100
/// events, each one compressed frame, two in flight; every line once.
fn compression_pipelining_bulk_max_size(sink: Sink) {
    const N: usize = 3000;
    let (_dir, path, log) = qwen_log_dir("bulk", N);
    let lumberd = sink.lumberd().start();
    let mut fb = Filebeat::user_config(&path, &lumberd)
        .set("output.logstash.compression_level", 6)
        .set("output.logstash.pipelining", 2)
        .set("output.logstash.bulk_max_size", 100)
        .start();
    fb.wait_shipped(&[&path], SHIP_DEADLINE, &[&lumberd]);
    let scrape = lumberd.scrape();
    let windows = metric(&scrape, "lumberd_windows_acknowledged_total").unwrap_or(0.0);
    let compressed = metric(
        &scrape,
        "lumberd_frames_received_total{type=\"compressed\"}",
    )
    .unwrap_or(0.0);
    let received = metric(&scrape, "lumberd_events_received_total").unwrap_or(0.0);
    assert!(
        windows >= (N / 100) as f64 && compressed >= windows && received == N as f64,
        "{N} events in windows of at most 100: {windows} windows, {compressed} compressed \
         frames, {received} events received\n{}",
        fb.diagnosis(&[&lumberd])
    );
    finish_exactly_once(
        "compression_level 6, pipelining 2, bulk_max_size 100",
        &sink,
        &mut fb,
        &log,
        &[&lumberd],
    );
}

on_both_outputs!(
    compression_pipelining_bulk_max_size =>
    filebeat_compression_6_pipelining_2_bulk_max_size_100_each_line_once_file_output,
    filebeat_compression_6_pipelining_2_bulk_max_size_100_each_line_once_elasticsearch
);

/// `loadbalance: true` over two lumberd: both receive windows, each line is stored once
/// across the two.
fn loadbalance_over_two(sink: Sink) {
    const N: usize = 4000;
    let (_dir, path, log) = qwen_log_dir("lb", N);
    let a = sink.lumberd().start();
    let b = sink.lumberd().start();
    let mut fb = Filebeat::builder(USER_CONFIG, &path, &[host(a.addr()), host(b.addr())])
        .set("output.logstash.loadbalance", true)
        .set("output.logstash.bulk_max_size", 200)
        .start();
    fb.wait_shipped(&[&path], SHIP_DEADLINE, &[&a, &b]);
    let (ra, rb) = (
        gauge(&a, "lumberd_events_received_total"),
        gauge(&b, "lumberd_events_received_total"),
    );
    assert!(
        ra > 0.0 && rb > 0.0 && ra + rb == N as f64,
        "loadbalance: {ra} events to {}, {rb} to {}, {N} logged\n{}",
        a.addr(),
        b.addr(),
        fb.diagnosis(&[&a, &b])
    );
    finish_exactly_once(
        "loadbalance over two lumberd",
        &sink,
        &mut fb,
        &log,
        &[&a, &b],
    );
    eprintln!("  loadbalance split: {ra} + {rb}");
}

on_both_outputs!(
    loadbalance_over_two =>
    filebeat_loadbalance_over_two_lumberd_stores_each_line_once_across_both_file_output,
    filebeat_loadbalance_over_two_lumberd_stores_each_line_once_across_both_elasticsearch
);

/// `ssl.*` as the README gives them: Filebeat verifies lumberd's certificate and host
/// name (`verification_mode: full`, host `localhost`) and presents a client certificate
/// that lumberd requires.
fn tls_full_verification_client_cert(sink: Sink) {
    const N: usize = 1000;
    let (dir, path, log) = qwen_log_dir("tls", N);
    let ca = Ca::new("lumberd filebeat test CA");
    let ca_pem = ca.write(dir.path(), "ca.pem");
    let server = ca.server(dir.path(), "lumberd", Validity::Current);
    let client = ca.client(dir.path(), "filebeat-1", Validity::Current);
    let lumberd = sink
        .lumberd()
        .env("LUMBERD_TLS_ENABLED", "true")
        .env("LUMBERD_TLS_CERTIFICATE", server.cert.to_str().unwrap())
        .env("LUMBERD_TLS_KEY", server.key.to_str().unwrap())
        .env("LUMBERD_TLS_CLIENT_AUTH", "required")
        .env("LUMBERD_TLS_CLIENT_CA", ca_pem.to_str().unwrap())
        .start();
    let hosts = [format!("localhost:{}", lumberd.addr().port())];
    let mut fb = Filebeat::builder(USER_CONFIG, &path, &hosts)
        .set(
            "output.logstash.ssl.certificate_authorities",
            format!("[\"{}\"]", ca_pem.display()),
        )
        .set("output.logstash.ssl.certificate", client.cert.display())
        .set("output.logstash.ssl.key", client.key.display())
        .set("output.logstash.ssl.verification_mode", "full")
        .set(
            "output.logstash.ssl.supported_protocols",
            "[TLSv1.2, TLSv1.3]",
        )
        .start();
    fb.wait_shipped(&[&path], SHIP_DEADLINE, &[&lumberd]);
    let scrape = lumberd.scrape();
    let handshakes = metric(&scrape, "lumberd_tls_handshakes_total").unwrap_or(0.0);
    assert!(
        handshakes >= 1.0,
        "no TLS handshake counted\n{}",
        fb.diagnosis(&[&lumberd])
    );
    finish_exactly_once(
        "ssl full verification, client certificate",
        &sink,
        &mut fb,
        &log,
        &[&lumberd],
    );
}

on_both_outputs!(
    tls_full_verification_client_cert =>
    filebeat_tls_full_verification_with_client_certificate_each_line_once_file_output,
    filebeat_tls_full_verification_with_client_certificate_each_line_once_elasticsearch
);

/// `ttl: 500ms` (with `pipelining: 0`: Filebeat's async client ignores `ttl`): Filebeat
/// reconnects once the ttl has passed before its next window. Lines are appended in
/// rounds, each shipped before the next, until lumberd has counted three connections.
fn ttl_reconnects(sink: Sink) {
    const ROUND: usize = 200;
    const MAX_ROUNDS: usize = 10;
    let (_dir, path, mut log) = qwen_log_dir("ttl", ROUND);
    let lumberd = sink.lumberd().start();
    let mut fb = Filebeat::user_config(&path, &lumberd)
        .set("output.logstash.ttl", "500ms")
        .set("output.logstash.pipelining", 0)
        .start();
    let mut rounds = 1;
    loop {
        fb.wait_shipped(&[&path], SHIP_DEADLINE, &[&lumberd]);
        if gauge(&lumberd, "lumberd_connections_total") >= 3.0 || rounds == MAX_ROUNDS {
            break;
        }
        log.append(&path, "ttl", rounds * ROUND, (rounds + 1) * ROUND);
        rounds += 1;
    }
    let connections = gauge(&lumberd, "lumberd_connections_total");
    assert!(
        connections >= 3.0,
        "ttl 500ms: {connections} connections after {rounds} rounds of {ROUND} lines, each \
         shipped after Filebeat's harvester backoff (>= 2 s)\n{}",
        fb.diagnosis(&[&lumberd])
    );
    finish_exactly_once("ttl 500ms, pipelining 0", &sink, &mut fb, &log, &[&lumberd]);
    eprintln!("  ttl: {connections} connections over {rounds} rounds");
}

on_both_outputs!(
    ttl_reconnects =>
    filebeat_ttl_reconnects_and_every_line_is_stored_once_file_output,
    filebeat_ttl_reconnects_and_every_line_is_stored_once_elasticsearch
);

/// The fewest windows Filebeat's `slow_start` can send `n` events in: the window starts
/// at 10 events and grows by at most 1.5x (rounded up) per acknowledged window, up to
/// `bulk_max_size` (libbeat/outputs/logstash/window.go).
fn slow_start_min_windows(n: usize, bulk_max_size: usize) -> usize {
    let (mut size, mut sent, mut windows) = (10usize, 0usize, 0usize);
    while sent < n {
        sent += size;
        windows += 1;
        size = (size * 3).div_ceil(2).min(bulk_max_size);
    }
    windows
}

/// `slow_start: true`: windows start small and grow; every line once.
fn slow_start(sink: Sink) {
    const N: usize = 5000;
    let (_dir, path, log) = qwen_log_dir("slow", N);
    let lumberd = sink.lumberd().start();
    let mut fb = Filebeat::user_config(&path, &lumberd)
        .set("output.logstash.slow_start", true)
        .start();
    fb.wait_shipped(&[&path], SHIP_DEADLINE, &[&lumberd]);
    let windows = gauge(&lumberd, "lumberd_windows_acknowledged_total");
    let least = slow_start_min_windows(N, 2048);
    assert!(
        windows >= least as f64,
        "slow_start: {N} events in {windows} windows; growing from 10 they need at least {least}\n{}",
        fb.diagnosis(&[&lumberd])
    );
    finish_exactly_once("slow_start", &sink, &mut fb, &log, &[&lumberd]);
    eprintln!("  slow_start: {windows} windows (at least {least})");
}

on_both_outputs!(
    slow_start =>
    filebeat_slow_start_grows_windows_and_every_line_is_stored_once_file_output,
    filebeat_slow_start_grows_windows_and_every_line_is_stored_once_elasticsearch
);

// ---- lumberd crashing under Filebeat ---------------------------------------------------

/// lumberd is SIGKILLed three times while Filebeat ships, each time once it has received
/// `n / 8` events in that life and before Filebeat's registry reaches the end of the
/// file, and started again on the same port (and, for the file output, on the same data
/// dir). Filebeat reconnects and resends what was not acknowledged: every line is stored,
/// and a line stored twice is a resend under the same id (Elasticsearch keeps one).
fn sigkill_restarts(sink: Sink) {
    const KILLS: usize = 3;
    let n = 24_000;
    let (_dir, path, log) = qwen_log_dir("kill", n);
    let size = std::fs::metadata(&path).unwrap().len();
    let port = stable_port();
    let listen = format!("127.0.0.1:{port}");
    let first = sink.lumberd().env("LUMBERD_SERVER_LISTEN", &listen).start();
    let data_dir: PathBuf = first.data_dir().to_path_buf();
    let mut fb = Filebeat::user_config(&path, &first).start();
    // Every life, killed or last, stays in scope: its logs for the diagnosis, and the
    // first one owns the shared data dir.
    let mut lives = vec![first];
    for kill in 1..=KILLS {
        let life = lives.last_mut().unwrap();
        life.wait_for_metric(
            "lumberd_events_received_total",
            (n / 8) as f64,
            SHIP_DEADLINE,
        );
        let acked = fb.cursor_of(&path).and_then(|c| c.offset).unwrap_or(0);
        life.kill();
        assert!(
            acked < size,
            "kill {kill}: Filebeat had already shipped the whole file ({acked} of {size} \
             bytes): the log is too short for a mid-stream kill"
        );
        rebind_check(port);
        let next = sink
            .lumberd()
            .env("LUMBERD_SERVER_LISTEN", &listen)
            .env("LUMBERD_OUTPUT_DATA_DIR", data_dir.to_str().unwrap());
        let next = next.start();
        assert_eq!(next.addr().port(), port, "lumberd must come back on {port}");
        lives.push(next);
    }
    let refs: Vec<&Lumberd> = lives.iter().collect();
    fb.wait_shipped(&[&path], SHIP_DEADLINE, &refs);
    // The file output: every life wrote into the first one's data dir.
    let t = finish(
        "lumberd SIGKILLed 3 times mid-stream",
        &sink,
        &mut fb,
        &log,
        &refs[..1],
        Resends::SameId,
    );
    assert_eq!((t.sent, t.distinct), (n, n), "{t}");
    assert_eq!(t.stored, n + t.duplicates, "{t}");
    if let Sink::Es(_) = sink {
        assert_eq!(
            t.duplicates, 0,
            "Elasticsearch keeps one document per id: {t}"
        );
    }
}

on_both_outputs!(
    sigkill_restarts =>
    filebeat_lumberd_sigkilled_mid_stream_and_restarted_every_line_stored_resends_same_id_file_output,
    filebeat_lumberd_sigkilled_mid_stream_and_restarted_every_line_stored_once_elasticsearch
);

// ---- log rotation ----------------------------------------------------------------------

/// The log rotated as logrotate does (renamed to `.1`, a new file created at the path)
/// while Filebeat runs: the old file is shipped to its end first, then the lines of the
/// new one; every line of both stored once. Both files' lines fall on one UTC day, so
/// they go to one index, where a document id can only be used once. The scanner runs
/// every second here (`prospector.scanner.check_interval`, 10 s by default) so the test
/// does not wait 10 s for Filebeat to notice the new file.
fn rotation(sink: Sink) {
    const N: usize = 150;
    let (dir, path, mut log) = qwen_log_dir("rot", N);
    let lumberd = sink.lumberd().start();
    let mut fb = Filebeat::user_config(&path, &lumberd)
        .set("filebeat.inputs.0.prospector.scanner.check_interval", "1s")
        .start();
    fb.wait_shipped(&[&path], SHIP_DEADLINE, &[&lumberd]);
    let rotated = dir.path().join("qwen_inference.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    log.append(&path, "rot", N, 2 * N);
    let days: std::collections::BTreeSet<&str> =
        log.lines.iter().map(|l| l.index.as_str()).collect();
    assert_eq!(
        days.len(),
        1,
        "both files' lines must fall on one day: {days:?}"
    );
    fb.wait_shipped(&[&path], SHIP_DEADLINE, &[&lumberd]);
    finish_exactly_once(
        "log rotated (renamed and recreated)",
        &sink,
        &mut fb,
        &log,
        &[&lumberd],
    );
}

on_both_outputs!(
    rotation =>
    filebeat_log_rotated_by_rename_and_recreate_every_line_of_both_files_stored_once_file_output,
    filebeat_log_rotated_by_rename_and_recreate_every_line_of_both_files_stored_once_elasticsearch
);

// ---- the corrected configuration -------------------------------------------------------

/// deploy/compose/filebeat.yml (filestream with an `id`, `close.reader.on_eof`, the
/// registry on a volume): Filebeat accepts it without an ERROR, and a second Filebeat on
/// the same registry ships only the lines added since, each once.
#[test]
fn filebeat_corrected_config_resumes_from_its_registry_after_a_restart_each_line_once() {
    let sink = Sink::Files;
    let (dir, path, mut log) = qwen_log_dir("fixed", 300);
    let lumberd = sink.lumberd().start();
    let registry = dir.path().join("filebeat-data");
    let config = corrected_config();
    let hosts = [host(lumberd.addr())];
    let mut fb = Filebeat::builder(&config, &path, &hosts)
        .data_dir(&registry)
        .start();
    fb.wait_shipped(&[&path], SHIP_DEADLINE, &[&lumberd]);
    let keys: Vec<String> = fb.registry().into_keys().collect();
    assert!(
        keys.iter()
            .any(|k| k.starts_with("filestream::qwen-inference::")),
        "the registry should key the file by the input's id: {keys:?}"
    );
    assert!(
        fb.errors().is_empty(),
        "Filebeat logged errors for the corrected config: {:#?}",
        fb.errors()
    );
    fb.stop();
    log.append(&path, "fixed", 300, 500);
    let mut fb = Filebeat::builder(&config, &path, &hosts)
        .data_dir(&registry)
        .start();
    fb.wait_shipped(&[&path], SHIP_DEADLINE, &[&lumberd]);
    finish_exactly_once(
        "corrected config, Filebeat restarted on its registry",
        &sink,
        &mut fb,
        &log,
        &[&lumberd],
    );
}

/// The compose stack's TLS variant as shipped: the certificates of
/// deploy/compose/tls/make-certs.sh, Filebeat on deploy/compose/filebeat.tls.yml (its
/// ssl paths pointed at them), lumberd with the TLS settings docker-compose.tls.yml gives
/// it. Filebeat verifies lumberd as `localhost`, a SAN of the certificate like `lumberd`,
/// and the variant's health check command (a Beats session with the probe's certificate)
/// succeeds.
#[test]
fn filebeat_compose_tls_variant_ships_with_the_make_certs_certificates_each_line_once() {
    const N: usize = 500;
    let sink = Sink::Files;
    let (dir, path, log) = qwen_log_dir("composetls", N);
    let certs = dir.path().join("tls");
    let made = std::process::Command::new("bash")
        .arg(support::repo_root().join("deploy/compose/tls/make-certs.sh"))
        .arg(&certs)
        .output()
        .expect("run make-certs.sh");
    assert!(
        made.status.success(),
        "make-certs.sh: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let lumberd_tls = |file: &str| certs.join("lumberd").join(file).display().to_string();
    let lumberd = sink
        .lumberd()
        .env("LUMBERD_TLS_ENABLED", "true")
        .env("LUMBERD_TLS_CERTIFICATE", lumberd_tls("lumberd.crt"))
        .env("LUMBERD_TLS_KEY", lumberd_tls("lumberd.key"))
        .env("LUMBERD_TLS_CLIENT_AUTH", "required")
        .env("LUMBERD_TLS_CLIENT_CA", lumberd_tls("ca.crt"))
        .start();
    let shipped =
        std::fs::read_to_string(support::repo_root().join("deploy/compose/filebeat.tls.yml"))
            .unwrap();
    let config = shipped.replace(
        "/etc/filebeat/tls/",
        &format!("{}/", certs.join("filebeat").display()),
    );
    let hosts = [format!("localhost:{}", lumberd.addr().port())];
    let mut fb = Filebeat::builder(&config, &path, &hosts).start();
    fb.wait_shipped(&[&path], SHIP_DEADLINE, &[&lumberd]);
    assert!(
        fb.errors().is_empty(),
        "Filebeat logged errors: {:#?}",
        fb.errors()
    );
    let probe = lumberd_command()
        .args(["send", "--host", &lumberd.addr().to_string()])
        .args(["--tls-server-name", "lumberd", "--tls-ca"])
        .arg(lumberd_tls("ca.crt"))
        .arg("--tls-cert")
        .arg(lumberd_tls("probe.crt"))
        .arg("--tls-key")
        .arg(lumberd_tls("probe.key"))
        .args(["--timeout", "5s", "/dev/null"])
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "the TLS health check failed: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    finish_exactly_once(
        "compose TLS variant (make-certs.sh, filebeat.tls.yml)",
        &sink,
        &mut fb,
        &log,
        &[&lumberd],
    );
}
