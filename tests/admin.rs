//! The admin port of a live `lumberd serve`: a scrape under real traffic checked by
//! Prometheus' own promtool, the metric list in README.md, liveness and readiness as
//! Kubernetes probes them, the SIGTERM drain, and rate-limited logs.
//!
//! The shutdown tests drive the wire by hand, because they must stop a client in the
//! middle of a window, which no real client can be told to do.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use lumberd::protocol::{encode_window, Compression};
use support::certs::{Ca, Validity};
use support::clients::{go_lumber, run_client};
use support::lumberd::{http_get, metric, serve_command, Lumberd};
use support::repo_root;

const DEADLINE: Duration = Duration::from_secs(30);

/// promtool from tests/tools/setup.sh (or PATH); `None` skips, unless the run requires
/// every tool (`make test` sets LUMBERD_REQUIRE_FIXTURES).
fn promtool() -> Option<PathBuf> {
    let kept = repo_root().join("target/tools/promtool");
    if kept.exists() {
        return Some(kept);
    }
    let on_path = Command::new("promtool").arg("--version").output().is_ok();
    if on_path {
        return Some(PathBuf::from("promtool"));
    }
    assert!(
        std::env::var_os("LUMBERD_REQUIRE_FIXTURES").is_none(),
        "promtool is missing: run tests/tools/setup.sh (make test-deps)"
    );
    eprintln!("skipping the promtool check: run tests/tools/setup.sh");
    None
}

/// The metric names README.md documents: the first column of its metrics tables.
fn documented_metrics() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|name| name.starts_with("lumberd_") || name.starts_with("qwen_"))
        .map(str::to_owned)
        .collect()
}

/// The metric families of a scrape (from its `# TYPE` lines).
fn served_metrics(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The chart's metric list (`name type [label[=v1|v2..]]...`) against a scrape: every
/// lumberd and log-derived family served is listed with its type; every listed one is
/// served, with its labels; a label with listed values takes exactly those values.
fn check_chart_metric_list(scrape: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("helm/lumberd/metrics.txt")).unwrap();
    let types: std::collections::BTreeMap<&str, &str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let mut problems = Vec::new();
    let mut listed = BTreeSet::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let mut words = line.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            problems.push(format!("unreadable line: {line}"));
            continue;
        };
        listed.insert(name.to_string());
        if name == "up" {
            continue; // written by Prometheus, not lumberd
        }
        match types.get(name) {
            None => problems.push(format!("{name}: listed, not served")),
            Some(t) if t != &kind => problems.push(format!("{name}: listed {kind}, served {t}")),
            Some(_) => {}
        }
        let series: Vec<&str> = scrape
            .lines()
            .filter(|l| {
                let rest = l.strip_prefix(name).unwrap_or("_");
                let rest = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| rest.strip_prefix(s))
                    .unwrap_or(rest);
                rest.starts_with('{') || rest.starts_with(' ')
            })
            .collect();
        for spec in words {
            let (label, values) = match spec.split_once('=') {
                Some((l, v)) => (l, Some(v.split('|').collect::<BTreeSet<_>>())),
                None => (spec, None),
            };
            let served_values: BTreeSet<&str> = series
                .iter()
                .filter_map(|l| {
                    let at = l.find(&format!("{label}=\""))? + label.len() + 2;
                    l[at..].split('"').next()
                })
                .collect();
            if served_values.is_empty() {
                problems.push(format!("{name}: no series with label {label}"));
            }
            if let Some(values) = values {
                if values != served_values {
                    problems.push(format!(
                        "{name}{{{label}}}: listed {values:?}, served {served_values:?}"
                    ));
                }
            }
        }
    }
    for name in types.keys() {
        let ours = ["lumberd_", "qwen_", "process_"]
            .iter()
            .any(|p| name.starts_with(p));
        if ours && !listed.contains(*name) {
            problems.push(format!("{name}: served, not listed"));
        }
    }
    problems
}

#[test]
fn a_live_scrape_under_tls_traffic_passes_promtool_and_matches_the_documented_list() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Admin Test CA");
    let ca_file = ca.write(dir.path(), "ca.crt");
    let server = ca.server(dir.path(), "server", Validity::Current);
    // The default (Qwen) pipeline: its log-derived metrics are part of the scrape.
    let lumberd = Lumberd::builder()
        .env("LUMBERD_TLS_ENABLED", "true")
        .env("LUMBERD_TLS_CERTIFICATE", server.cert.to_str().unwrap())
        .env("LUMBERD_TLS_KEY", server.key.to_str().unwrap())
        .start();
    let mut cmd = go_lumber();
    cmd.arg("-tls-ca").arg(&ca_file).args([
        "-mode", "async", "-window", "50", "-windows", "3", "-id", "scrape",
    ]);
    let run = run_client(cmd, lumberd.addr());
    assert_eq!(
        run.result["events_acked"],
        150,
        "go-lumber over TLS: {}",
        run.describe()
    );
    // A plain Beats client on the TLS port: one handshake failure by reason.
    let mut plain = TcpStream::connect(lumberd.addr()).unwrap();
    plain.write_all(b"2W\0\0\0\x01").unwrap();
    let _ = plain.read(&mut [0u8; 16]);
    let scrape = lumberd.wait_for_metric(
        "lumberd_tls_handshake_failures_total{reason=\"plain_beats\"}",
        1.0,
        DEADLINE,
    );

    for (series, want) in [
        ("lumberd_events_received_total", 150.0),
        ("lumberd_windows_acknowledged_total", 3.0),
        ("lumberd_frames_received_total{type=\"compressed\"}", 3.0),
        ("lumberd_inflight_events", 0.0),
        ("lumberd_pipeline_events_total{result=\"passed\"}", 150.0),
        ("lumberd_output_events_total{outcome=\"indexed\"}", 150.0),
        ("lumberd_output_up", 1.0),
        ("lumberd_ready", 1.0),
        ("lumberd_tls_handshakes_total", 1.0),
        ("lumberd_ack_latency_seconds_count", 3.0),
    ] {
        assert_eq!(metric(&scrape, series), Some(want), "{series} in\n{scrape}");
    }
    let requests: f64 = scrape
        .lines()
        .filter(|l| l.starts_with("qwen_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(requests, 150.0, "every event has a request_id:\n{scrape}");
    let expiry = metric(&scrape, "lumberd_tls_certificate_expiry_timestamp_seconds").unwrap();
    assert!(
        expiry > support::stored::now_secs() as f64,
        "the served certificate's expiry is in the future: {expiry}"
    );
    let wire = metric(&scrape, "lumberd_received_bytes_total").unwrap();
    let inflated = metric(&scrape, "lumberd_inflated_bytes_total").unwrap();
    assert!(
        inflated > wire,
        "zlib-3 events inflate: wire {wire} inflated {inflated}"
    );

    let documented = documented_metrics();
    let served = served_metrics(&scrape);
    let ours: BTreeSet<String> = served
        .iter()
        .filter(|n| n.starts_with("lumberd_") || n.starts_with("qwen_"))
        .cloned()
        .collect();
    let undocumented: Vec<_> = ours.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&ours).collect();
    assert!(
        undocumented.is_empty() && missing.is_empty(),
        "README.md's metric list and the scrape differ: served but not documented \
         {undocumented:?}; documented but not served {missing:?}"
    );
    assert!(
        served.contains("process_resident_memory_bytes"),
        "process metrics are served"
    );
    let problems = check_chart_metric_list(&scrape);
    assert!(
        problems.is_empty(),
        "helm/lumberd/metrics.txt (what the dashboard and alerts may query) disagrees with \
         the scrape:\n{}",
        problems.join("\n")
    );

    let Some(promtool) = promtool() else { return };
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn liveness_holds_while_readiness_waits_for_an_unreachable_output() {
    // A port nothing listens on: Elasticsearch "down" for as long as the test runs.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let es = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let data = tempfile::tempdir().unwrap();
    let mut child = serve_command(data.path())
        .env("LUMBERD_OUTPUT_ELASTICSEARCH", &es)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let admin = loop {
        let mut line = String::new();
        use std::io::BufRead;
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("lumberd exited before logging its admin address");
        }
        if let Some(rest) = line.split("admin=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<SocketAddr>()
                .unwrap();
        }
    };
    let (live, body) = http_get(admin, "/healthz");
    assert_eq!(live, 200, "alive while waiting for Elasticsearch: {body}");
    let (ready, body) = http_get(admin, "/readyz");
    assert_eq!(ready, 503, "{body}");
    assert!(
        body.contains("not listening yet") && body.contains("output unreachable"),
        "/readyz says why: {body}"
    );
    let (_, scrape) = http_get(admin, "/metrics");
    assert_eq!(metric(&scrape, "lumberd_ready"), Some(0.0));
    assert_eq!(metric(&scrape, "lumberd_output_up"), Some(0.0));
    let (code, _) = http_get(admin, "/nothing");
    assert_eq!(code, 404);
    let _ = child.kill();
    let _ = child.wait();
}

/// One window of `n` events, in plain `J` frames so it can be cut anywhere.
fn window(n: usize) -> Vec<u8> {
    let events: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"@timestamp":"2025-04-05T10:23:45.000Z","message":"drain {i}"}}"#))
        .collect();
    let mut wire = BytesMut::new();
    encode_window(1, &events, Compression::None, &mut wire);
    wire.to_vec()
}

/// A client that has sent the first half of a 4-event window, once lumberd has read it;
/// returns the socket and the half still to send.
fn half_a_window(lumberd: &Lumberd) -> (TcpStream, Vec<u8>) {
    let wire = window(4);
    let half = wire.len() / 2;
    let mut client = TcpStream::connect(lumberd.addr()).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    client.write_all(&wire[..half]).unwrap();
    lumberd.wait_for_metric("lumberd_received_bytes_total", half as f64, DEADLINE);
    (client, wire[half..].to_vec())
}

/// Polls GET `path` until it answers `code`.
fn wait_for_status(lumberd: &Lumberd, path: &str, code: u16) -> String {
    let until = Instant::now() + DEADLINE;
    loop {
        let (got, body) = lumberd.admin_get(path);
        if got == code {
            return body;
        }
        assert!(
            Instant::now() < until,
            "{path} still answers {got} ({body}), expected {code}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_mid_window_reports_not_ready_finishes_and_acknowledges_the_window_then_exits_0() {
    let mut lumberd = Lumberd::builder()
        .passthrough()
        .env("LUMBERD_SERVER_SHUTDOWN_GRACE", "60s")
        .start();
    assert_eq!(lumberd.admin_get("/readyz").0, 200);
    let (mut client, rest_of_window) = half_a_window(&lumberd);

    lumberd.terminate();
    let body = wait_for_status(&lumberd, "/readyz", 503);
    assert!(body.contains("shutting down"), "{body}");
    assert_eq!(
        lumberd.admin_get("/healthz").0,
        200,
        "a drain is not a liveness failure"
    );
    assert!(
        TcpStream::connect(lumberd.addr()).is_err(),
        "the Beats port stops accepting on SIGTERM"
    );

    client.write_all(&rest_of_window).unwrap();
    let mut ack = [0u8; 6];
    client.read_exact(&mut ack).unwrap();
    assert_eq!(
        &ack, b"2A\0\0\0\x04",
        "the window begun before SIGTERM is acknowledged"
    );
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "nothing after the ACK but the close: {rest:?}"
    );

    let status = lumberd
        .wait_exit(DEADLINE)
        .expect("lumberd exits after the drain");
    assert!(
        status.success(),
        "exit status {status}; logs:\n{}",
        lumberd.logs()
    );
    assert_eq!(
        lumberd.events().len(),
        4,
        "the acknowledged events are stored"
    );
    assert!(lumberd.logs().contains("stopped"), "{}", lumberd.logs());
}

#[test]
fn sigterm_with_a_window_that_never_completes_exits_0_after_the_grace_without_acking_it() {
    let mut lumberd = Lumberd::builder()
        .passthrough()
        .env("LUMBERD_SERVER_SHUTDOWN_GRACE", "1s")
        .start();
    let (mut client, _) = half_a_window(&lumberd);
    lumberd.terminate();
    let status = lumberd
        .wait_exit(DEADLINE)
        .expect("lumberd exits after the grace");
    assert!(
        status.success(),
        "exit status {status}; logs:\n{}",
        lumberd.logs()
    );
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "an unfinished window is never acknowledged: {got:?}"
    );
    assert!(
        lumberd.logs().contains("shutdown grace elapsed"),
        "{}",
        lumberd.logs()
    );
    assert!(lumberd.events().is_empty());
}

#[test]
fn a_repeated_protocol_error_is_logged_once_per_interval_and_every_one_is_counted() {
    let lumberd = Lumberd::builder()
        .passthrough()
        .env("LUMBERD_LOG_REPEAT_INTERVAL", "1h")
        .start();
    for _ in 0..20 {
        let mut s = TcpStream::connect(lumberd.addr()).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.write_all(b"2Xgarbage").unwrap();
        let _ = s.read_to_end(&mut Vec::new());
    }
    let scrape = lumberd.wait_for_metric(
        "lumberd_connections_closed_total{reason=\"protocol_error\"}",
        20.0,
        DEADLINE,
    );
    assert_eq!(
        metric(
            &scrape,
            "lumberd_decode_errors_total{kind=\"unknown_frame_type\"}"
        ),
        Some(20.0),
        "{scrape}"
    );
    assert_eq!(
        metric(&scrape, "lumberd_log_messages_suppressed_total"),
        Some(19.0)
    );
    let logs = lumberd.logs();
    let lines = logs
        .lines()
        .filter(|l| l.contains("closing connection"))
        .count();
    assert_eq!(
        lines, 1,
        "one line per interval, not one per connection:\n{logs}"
    );
}

#[test]
fn logs_are_json_lines_with_levels_when_stderr_is_not_a_terminal() {
    let lumberd = Lumberd::builder()
        .passthrough()
        .env("LUMBERD_LOG_FORMAT", "auto")
        .start();
    let logs = lumberd.logs();
    let mut n = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        n += 1;
    }
    assert!(n >= 2, "the admin and listening lines at least:\n{logs}");
    assert!(logs.contains("\"message\":\"listening\""), "{logs}");
}

#[test]
fn a_second_sigterm_ends_the_drain_at_once_with_exit_130() {
    let mut lumberd = Lumberd::builder()
        .passthrough()
        .env("LUMBERD_SERVER_SHUTDOWN_GRACE", "10m")
        .start();
    let (_client, _) = half_a_window(&lumberd);
    lumberd.terminate();
    wait_for_status(&lumberd, "/readyz", 503);
    assert!(
        lumberd.wait_exit(Duration::from_millis(200)).is_none(),
        "the first SIGTERM drains: the half window keeps lumberd waiting"
    );
    lumberd.terminate();
    let status = lumberd
        .wait_exit(DEADLINE)
        .expect("the second SIGTERM ends lumberd at once");
    assert_eq!(status.code(), Some(130), "{}", lumberd.logs());
    assert!(
        lumberd.logs().contains("second SIGTERM"),
        "{}",
        lumberd.logs()
    );
}
