//! The Elasticsearch output against a real Elasticsearch 8.11.3 and a real OpenSearch
//! 2.19.6 (`tests/es/es.sh`, `LUMBERD_ES_ENGINE`), fed by the go-lumber client (and a raw
//! Lumberjack connection where the ACKs themselves are the subject). One body per rule,
//! taking the engine: [`on_both_engines!`] runs it as `elasticsearch::NAME` and
//! `opensearch::NAME`; what only Elasticsearch's distribution can do (security, HTTPS)
//! runs once. Each test starts its own node; they skip loudly when a distribution cannot
//! be fetched, unless `LUMBERD_REQUIRE_ES` is set (`make test`).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use lumberd::protocol::{encode_window, Compression};
use serde_json::Value;
use support::clients::{go_lumber, run_client, ClientRun};
use support::es::{Engine, EsNode};
use support::lumberd::{serve_command, Lumberd};
use support::repo_root;
use support::stored::{now_secs, utc_date};

/// Runs each named body (`fn NAME(engine: Engine)`) as a test against each engine.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod elasticsearch {
            $( #[test] fn $name() { super::$name(super::Engine::Elasticsearch) } )*
        }
        mod opensearch {
            $( #[test] fn $name() { super::$name(super::Engine::OpenSearch) } )*
        }
    };
}

on_both_engines!(
    acknowledged_corpus_is_in_its_daily_indices_typed_by_the_template_and_resends_are_duplicates,
    mapping_conflict_becomes_a_dead_letter_and_the_window_is_acknowledged,
    rejected_items_go_to_the_dead_letter_file_when_one_is_set,
    write_queue_rejections_429_are_retried_until_nothing_is_lost,
    elasticsearch_restarted_mid_stream_withholds_acks_keeps_alive_and_loses_nothing,
    lumberd_killed_mid_stream_and_restarted_while_the_client_resends_loses_and_doubles_nothing,
    request_too_large_413_is_split_until_it_fits,
    a_dead_host_in_the_list_fails_over_to_the_live_one,
    the_engine_and_its_retention_are_detected_from_the_cluster,
);

/// The error type of a document whose field does not parse under the mapping: renamed
/// by Elasticsearch 8.8, kept by OpenSearch.
fn parse_error(engine: Engine) -> &'static str {
    match engine {
        Engine::Elasticsearch => "document_parsing_exception",
        Engine::OpenSearch => "mapper_parsing_exception",
    }
}

const EVENTS: &str = "qwen-logs-*,-qwen-logs-deadletter-*";
const DEAD_LETTERS: &str = "qwen-logs-deadletter-*";

/// lumberd writing into `node`, retrying quickly so the tests do not wait on backoff.
fn lumberd_into(node: &EsNode, extra: &[(&str, &str)]) -> Lumberd {
    let mut b = support::es::lumberd_to(node.url());
    for (k, v) in extra {
        b = b.env(*k, *v);
    }
    b.start()
}

fn corpus_client() -> Command {
    let mut cmd = go_lumber();
    cmd.arg("-events")
        .arg(repo_root().join("tests/corpus/inputs.ndjson"))
        .arg("-window")
        .arg("50");
    cmd
}

/// go-lumber's generated inference events: `windows` windows of `window`, pipelined.
fn generated_client(window: usize, windows: usize) -> Command {
    let mut cmd = go_lumber();
    cmd.args(["-mode", "async", "-inflight", "2", "-timeout", "60s"])
        .arg("-window")
        .arg(window.to_string())
        .arg("-windows")
        .arg(windows.to_string());
    cmd
}

fn acked(run: &ClientRun) -> u64 {
    run.result["events_acked"].as_u64().unwrap_or(0)
}

fn assert_acked(run: &ClientRun, want: u64, lumberd: &Lumberd) {
    assert!(
        run.status.success() && acked(run) == want,
        "{} of {want} events acknowledged\n{}\n--- lumberd logs ---\n{}",
        acked(run),
        run.describe(),
        lumberd.logs()
    );
}

/// The corpus's expected index per event; the model's receive day means "today".
fn expected_indices() -> BTreeMap<String, u64> {
    let today = format!("qwen-logs-{}", utc_date(now_secs()));
    let mut want = BTreeMap::new();
    let text = std::fs::read_to_string(repo_root().join("tests/corpus/expected.ndjson")).unwrap();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let mut index = v["index"].as_str().unwrap().to_string();
        if index == "qwen-logs-2026.01.02" {
            index = today.clone();
        }
        *want.entry(index).or_insert(0) += 1;
    }
    want
}

fn acknowledged_corpus_is_in_its_daily_indices_typed_by_the_template_and_resends_are_duplicates(
    engine: Engine,
) {
    let Some(node) = EsNode::start_on(engine, &[]) else {
        return;
    };
    let lumberd = lumberd_into(&node, &[]);
    let want = expected_indices();
    let total: u64 = want.values().sum();

    let run = run_client(corpus_client(), lumberd.addr());
    assert_acked(&run, total, &lumberd);

    // Every acknowledged event is in its index, or a dead letter naming that index.
    let letters = node.docs(DEAD_LETTERS);
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for index in want.keys() {
        got.insert(index.clone(), node.count(index));
    }
    for l in &letters {
        let original = l["_source"]["original_index"].as_str().unwrap_or("?");
        *got.entry(original.to_string()).or_insert(0) += 1;
    }
    assert_eq!(
        got,
        want,
        "documents + dead letters per index differ from the corpus ({} dead letters)\n{}",
        letters.len(),
        lumberd.logs()
    );
    assert_eq!(node.count(EVENTS) + letters.len() as u64, total);

    // The template's types, not dynamic guesses.
    let (_, mapping) = node.request("GET", "/qwen-logs-2025.04.05/_mapping", None);
    let props = &mapping["qwen-logs-2025.04.05"]["mappings"]["properties"];
    for (field, ty) in [
        ("level", "keyword"),
        ("status", "keyword"),
        ("request_id", "keyword"),
        ("prompt", "text"),
        ("response_length", "integer"),
        ("inference_time_ms", "integer"),
        ("@timestamp", "date"),
        ("timestamp", "date"),
    ] {
        assert_eq!(props[field]["type"], ty, "{field}: {}", props[field]);
    }
    assert_eq!(props["prompt"]["fields"]["keyword"]["type"], "keyword");

    // The same windows again (Filebeat resending): 409s, nothing stored twice.
    let before = (node.count(EVENTS), node.count(DEAD_LETTERS));
    let run = run_client(corpus_client(), lumberd.addr());
    assert_acked(&run, total, &lumberd);
    assert_eq!(
        (node.count(EVENTS), node.count(DEAD_LETTERS)),
        before,
        "a resent window must be a duplicate, not a second copy"
    );
}

fn mapping_conflict_becomes_a_dead_letter_and_the_window_is_acknowledged(engine: Engine) {
    let Some(node) = EsNode::start_on(engine, &[]) else {
        return;
    };
    let lumberd = lumberd_into(&node, &[]);
    // "none" is left as it is by the integer conversion (tagged _mutate_error); the
    // template says integer, so Elasticsearch refuses the document with a 400.
    let dir = tempfile::tempdir().unwrap();
    let events = conflicting_events(dir.path());
    let mut cmd = go_lumber();
    cmd.arg("-events").arg(&events).arg("-window").arg("4");
    let run = run_client(cmd, lumberd.addr());
    assert_acked(&run, 4, &lumberd);
    check_conflict_dead_letters(&node, &lumberd);
}

/// Four events for qwen-logs-2025.04.05: two that index, one whose `response_length` is
/// "none" (a mapping conflict under the template), and a JSON array (not an event).
fn conflicting_events(dir: &std::path::Path) -> std::path::PathBuf {
    let events = dir.join("events.ndjson");
    let line = |n: usize, len: &str| {
        let msg = format!(
            r#"{{"timestamp":"2025-04-05T10:23:45Z","level":"INFO","request_id":"req_{n}","response_length":{len},"status":"success"}}"#
        );
        serde_json::json!({"@timestamp":"2025-04-05T10:23:45.000Z","message":msg,
            "host":{"name":"h"},"log":{"file":{"path":"/x.log"},"offset":n}})
        .to_string()
    };
    // A JSON array is not an event at all: the pipeline's own dead letter.
    let text = [
        line(1, "12"),
        line(2, "\"none\""),
        line(3, "13"),
        "[1,2]".into(),
    ]
    .join("\n")
        + "\n";
    std::fs::write(&events, text).unwrap();
    events
}

fn check_conflict_dead_letters(node: &EsNode, lumberd: &Lumberd) {
    assert_eq!(node.count("qwen-logs-2025.04.05"), 2);
    let letters = node.docs(DEAD_LETTERS);
    assert_eq!(letters.len(), 2, "{letters:?}");
    let (refused, not_json): (Vec<&Value>, Vec<&Value>) = letters
        .iter()
        .partition(|l| l["_source"]["original_index"].is_string());
    assert_eq!(not_json.len(), 1, "{letters:?}");
    assert_eq!(not_json[0]["_source"]["payload"], "[1,2]");
    let l = &refused[0]["_source"];
    assert_eq!(l["original_index"], "qwen-logs-2025.04.05");
    assert_eq!(l["error"]["type"], parse_error(node.engine()));
    assert_eq!(l["error"]["status"], 400);
    let original: Value = serde_json::from_str(l["event"]["original"].as_str().unwrap())
        .expect("the original event, as a string");
    assert_eq!(original["response_length"], "none");
    let index = refused[0]["_index"].as_str().unwrap();
    assert_eq!(
        index,
        format!("qwen-logs-deadletter-{}", utc_date(now_secs()))
    );
    assert_eq!(
        lumberd
            .logs()
            .matches("storing them as dead letters")
            .count(),
        1,
        "one log line per batch: {}",
        lumberd.logs()
    );
}

fn rejected_items_go_to_the_dead_letter_file_when_one_is_set(engine: Engine) {
    let Some(node) = EsNode::start_on(engine, &[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("letters").join("deadletters.ndjson");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let lumberd = lumberd_into(
        &node,
        &[("LUMBERD_OUTPUT_DEAD_LETTER_FILE", file.to_str().unwrap())],
    );
    let events = conflicting_events(dir.path());
    let mut cmd = go_lumber();
    cmd.arg("-events").arg(&events).arg("-window").arg("4");
    let run = run_client(cmd, lumberd.addr());
    assert_acked(&run, 4, &lumberd);

    assert_eq!(node.count("qwen-logs-2025.04.05"), 2);
    // The refused event is in the file (bulk form), not in a dead-letter index; the
    // pipeline's own dead letter (the array) is an ordinary record and is indexed.
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", file.display(), lumberd.logs()));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert_eq!(lines.len(), 2, "one action and one letter: {text}");
    assert_eq!(
        lines[0]["create"]["_index"],
        format!("qwen-logs-deadletter-{}", utc_date(now_secs()))
    );
    assert_eq!(lines[1]["error"]["type"], parse_error(engine));
    let original: Value = serde_json::from_str(lines[1]["event"]["original"].as_str().unwrap())
        .expect("the original event, as a string");
    assert_eq!(original["response_length"], "none");
    let indexed: Vec<Value> = node.docs(DEAD_LETTERS);
    assert!(
        indexed
            .iter()
            .all(|l| l["_source"]["original_index"].is_null()),
        "refused items must not be indexed when a file is set: {indexed:?}"
    );
}

fn write_queue_rejections_429_are_retried_until_nothing_is_lost(engine: Engine) {
    let Some(node) = EsNode::start_on(
        engine,
        &["thread_pool.write.queue_size=1", "thread_pool.write.size=1"],
    ) else {
        return;
    };
    let lumberd = lumberd_into(
        &node,
        &[
            ("LUMBERD_OUTPUT_TEMPLATE_SHARDS", "4"),
            ("LUMBERD_OUTPUT_MAX_REQUESTS_IN_FLIGHT", "4"),
            ("LUMBERD_OUTPUT_BULK_MAX_EVENTS", "1000"),
        ],
    );
    let (window, windows) = (1000, 12);
    let run = run_client(generated_client(window, windows), lumberd.addr());
    assert_acked(&run, (window * windows) as u64, &lumberd);
    let logs = lumberd.logs();
    assert!(
        logs.contains("HTTP 429"),
        "the node should have answered 429 with a write queue of 1:\n{logs}"
    );
    assert_eq!(node.count(DEAD_LETTERS), 0, "{logs}");
    assert_eq!(
        node.count(EVENTS),
        (window * windows) as u64,
        "count in Elasticsearch must equal events acknowledged\n{logs}"
    );
}

/// A raw Lumberjack connection, to watch ACK frames (keep-alives included) one by one.
struct RawClient {
    stream: TcpStream,
    seq: u32,
}

impl RawClient {
    fn connect(lumberd: &Lumberd) -> RawClient {
        RawClient {
            stream: TcpStream::connect(lumberd.addr()).unwrap(),
            seq: 0,
        }
    }

    /// Sends `n` events with ids distinct from go-lumber's (host "raw").
    fn send_window(&mut self, n: u32) {
        let payloads: Vec<String> = (0..n)
            .map(|i| {
                let seq = self.seq + i;
                serde_json::json!({"@timestamp":"2025-04-05T10:23:45.000Z",
                    "message": format!(r#"{{"level":"INFO","request_id":"raw_{seq}"}}"#),
                    "host":{"name":"raw"},"log":{"file":{"path":"/raw.log"},"offset":seq}})
                .to_string()
            })
            .collect();
        let mut buf = BytesMut::new();
        encode_window(self.seq + 1, &payloads, Compression::Level(3), &mut buf);
        self.stream.write_all(&buf).unwrap();
        self.seq += n;
    }

    /// ACK sequence numbers read until `until` or until one equals `want`.
    fn acks_until(&mut self, until: Instant, want: u32) -> Vec<u32> {
        let mut acks = Vec::new();
        while Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut frame = [0u8; 6];
            match self.stream.read_exact(&mut frame) {
                Ok(()) => {
                    let seq = u32::from_be_bytes(frame[2..6].try_into().unwrap());
                    acks.push(seq);
                    if seq == want {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => panic!("connection failed after ACKs {acks:?}: {e}"),
            }
        }
        acks
    }
}

fn elasticsearch_restarted_mid_stream_withholds_acks_keeps_alive_and_loses_nothing(engine: Engine) {
    let Some(node) = EsNode::start_on(engine, &[]) else {
        return;
    };
    // The stall timeout is far beyond the restart: this test is about keep-alives while
    // waiting, and a node restarting on a loaded 2-core machine can take over a minute
    // (the default 60 s stall timeout then closes the connection, as it should).
    let lumberd = lumberd_into(
        &node,
        &[
            ("LUMBERD_SERVER_KEEPALIVE_INTERVAL", "1s"),
            ("LUMBERD_SERVER_STALL_TIMEOUT", "10m"),
        ],
    );
    let mut raw = RawClient::connect(&lumberd);
    raw.send_window(10);
    let acks = raw.acks_until(Instant::now() + Duration::from_secs(30), 10);
    assert_eq!(acks.last(), Some(&10), "first window, Elasticsearch up");

    node.stop();
    // go-lumber starts while Elasticsearch is down; its windows wait with the raw one.
    let addr = lumberd.addr();
    let client = std::thread::spawn(move || run_client(generated_client(500, 6), addr));
    raw.send_window(10);
    let down = raw.acks_until(Instant::now() + Duration::from_secs(6), 20);
    assert!(
        !down.is_empty() && down.iter().all(|&s| s == 0),
        "while Elasticsearch is down only keep-alives (ACK 0) may be sent, got {down:?}"
    );
    assert!(lumberd.logs().contains("Elasticsearch output is down"));

    node.restart();
    let after = raw.acks_until(Instant::now() + Duration::from_secs(300), 20);
    assert_eq!(
        after.last(),
        Some(&20),
        "the waiting window must be acknowledged after the restart\n{}",
        lumberd.logs()
    );
    let run = client.join().unwrap();
    assert_acked(&run, 3000, &lumberd);
    assert_eq!(node.count(EVENTS), 3020, "{}", lumberd.logs());
    assert_eq!(node.count(DEAD_LETTERS), 0);
    assert_eq!(
        lumberd
            .logs()
            .matches("Elasticsearch output is down")
            .count(),
        1,
        "each state change is logged once\n{}",
        lumberd.logs()
    );
}

fn lumberd_killed_mid_stream_and_restarted_while_the_client_resends_loses_and_doubles_nothing(
    engine: Engine,
) {
    let Some(node) = EsNode::start_on(engine, &[]) else {
        return;
    };
    let (window, windows) = (500, 20);
    let total = (window * windows) as u64;
    let mut first = lumberd_into(&node, &[]);
    let addr = first.addr();
    let client = std::thread::spawn(move || run_client(generated_client(window, windows), addr));
    // Mid-stream: some events are in Elasticsearch, not all.
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.count(EVENTS) == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing arrived\n{}",
            first.logs()
        );
    }
    first.kill();
    let run = client.join().unwrap();
    let acked_before = acked(&run);
    let stored_at_kill = node.count(EVENTS);
    eprintln!("killed with {acked_before} acknowledged, {stored_at_kill} stored of {total}");
    assert!(
        acked_before <= stored_at_kill,
        "{acked_before} acknowledged but only {stored_at_kill} stored"
    );
    assert!(
        acked_before < total,
        "the kill came after the client finished: not mid-stream"
    );

    // Filebeat resends what was not acknowledged; go-lumber resends everything.
    let second = lumberd_into(&node, &[]);
    let run = run_client(generated_client(window, windows), second.addr());
    assert_acked(&run, total, &second);
    let mut seen: HashMap<String, u64> = HashMap::new();
    for d in node.docs(EVENTS) {
        *seen
            .entry(d["_id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(node.count(EVENTS), total, "no loss, no second copies");
    assert_eq!(seen.len() as u64, total);
}

/// Runs `lumberd serve` with `env` until it exits (at most 60 s): (status, stderr).
fn serve_until_exit(env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_command(dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run lumberd");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn beats_port_is_not_bound_until_elasticsearch_answers() {
    // Nothing listens on this port (bound then closed): Elasticsearch never answers.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (status, logs) = serve_until_exit(&[
        ("LUMBERD_OUTPUT_ELASTICSEARCH", url.as_str()),
        ("LUMBERD_OUTPUT_READY_TIMEOUT", "2s"),
    ]);
    assert!(!status.success(), "{logs}");
    assert!(
        !logs.contains("listening addr="),
        "must not listen before Elasticsearch answered:\n{logs}"
    );
    assert!(
        logs.contains("waiting for Elasticsearch") && logs.contains("ready_timeout"),
        "{logs}"
    );
}

#[test]
fn basic_auth_credentials_reach_a_secured_elasticsearch() {
    let Some(node) = EsNode::start_secured("lumberd", "s3cret-pass") else {
        return;
    };
    // Without credentials the node answers 401: lumberd waits, then gives up unbound.
    let (status, logs) = serve_until_exit(&[
        ("LUMBERD_OUTPUT_ELASTICSEARCH", node.url()),
        ("LUMBERD_OUTPUT_READY_TIMEOUT", "2s"),
    ]);
    assert!(!status.success() && logs.contains("401"), "{logs}");

    let lumberd = lumberd_into(
        &node,
        &[
            ("LUMBERD_OUTPUT_USERNAME", "lumberd"),
            ("LUMBERD_OUTPUT_PASSWORD", "s3cret-pass"),
            ("LUMBERD_OUTPUT_GZIP", "true"),
        ],
    );
    let run = run_client(generated_client(100, 3), lumberd.addr());
    assert_acked(&run, 300, &lumberd);
    assert_eq!(node.count(EVENTS), 300, "{}", lumberd.logs());
}

#[test]
fn https_elasticsearch_is_verified_against_the_configured_ca() {
    let Some((node, ca)) = EsNode::start_https("lumberd", "s3cret-pass") else {
        return;
    };
    assert!(node.url().starts_with("https://"), "{}", node.url());
    let creds = [
        ("LUMBERD_OUTPUT_USERNAME", "lumberd"),
        ("LUMBERD_OUTPUT_PASSWORD", "s3cret-pass"),
    ];
    // Without the CA the node's certificate is not trusted: lumberd never gets ready.
    let mut env = vec![
        ("LUMBERD_OUTPUT_ELASTICSEARCH", node.url()),
        ("LUMBERD_OUTPUT_READY_TIMEOUT", "3s"),
    ];
    env.extend(creds);
    let (status, logs) = serve_until_exit(&env);
    assert!(
        !status.success() && !logs.contains("listening addr="),
        "an untrusted Elasticsearch certificate must not be accepted:\n{logs}"
    );
    assert!(
        logs.to_ascii_lowercase().contains("certificate"),
        "the log must say the certificate is the problem:\n{logs}"
    );

    let mut with_ca = creds.to_vec();
    with_ca.push(("LUMBERD_OUTPUT_CA_FILE", ca.to_str().unwrap()));
    let lumberd = lumberd_into(&node, &with_ca);
    let run = run_client(generated_client(100, 3), lumberd.addr());
    assert_acked(&run, 300, &lumberd);
    assert_eq!(node.count(EVENTS), 300, "{}", lumberd.logs());
}

fn request_too_large_413_is_split_until_it_fits(engine: Engine) {
    // The node refuses bodies over 64 KiB; lumberd's own limit is 20 MiB.
    let Some(node) = EsNode::start_on(engine, &["http.max_content_length=64kb"]) else {
        return;
    };
    let lumberd = lumberd_into(&node, &[]);
    let run = run_client(generated_client(500, 2), lumberd.addr());
    assert_acked(&run, 1000, &lumberd);
    let logs = lumberd.logs();
    assert!(logs.contains("sending it in halves"), "{logs}");
    assert_eq!(node.count(EVENTS), 1000, "{logs}");
    assert_eq!(node.count(DEAD_LETTERS), 0, "{logs}");
}

fn a_dead_host_in_the_list_fails_over_to_the_live_one(engine: Engine) {
    let Some(node) = EsNode::start_on(engine, &[]) else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hosts = format!("http://127.0.0.1:{port},{}", node.url());
    let lumberd = lumberd_into(&node, &[("LUMBERD_OUTPUT_ELASTICSEARCH", hosts.as_str())]);
    let run = run_client(generated_client(200, 5), lumberd.addr());
    assert_acked(&run, 1000, &lumberd);
    assert_eq!(node.count(EVENTS), 1000, "{}", lumberd.logs());
}

/// Neither test distribution has its retention plugin (Elasticsearch's integ-test zip no
/// ILM, OpenSearch's no ISM, a separate artifact): lumberd must tell the engine from the
/// cluster's own answers, say which retention is missing, and install a template that
/// names no lifecycle policy. The ISM requests themselves are checked against
/// OpenSearch's recorded answers in `setup.rs`.
fn the_engine_and_its_retention_are_detected_from_the_cluster(engine: Engine) {
    let Some(node) = EsNode::start_on(engine, &[]) else {
        return;
    };
    let lumberd = lumberd_into(&node, &[]);
    let (detected, missing) = match engine {
        Engine::Elasticsearch => ("engine=Elasticsearch", "Elasticsearch has no ILM"),
        Engine::OpenSearch => ("engine=OpenSearch", "OpenSearch has no ISM plugin"),
    };
    let logs = lumberd.logs();
    assert!(
        logs.contains(detected) && logs.contains("retention=None") && logs.contains(missing),
        "lumberd must detect {engine:?} without its retention plugin:\n{logs}"
    );
    let (status, body) = node.request("GET", "/_index_template/qwen-logs", None);
    assert_eq!(status, 200, "{body}");
    let settings = &body["index_templates"][0]["index_template"]["template"]["settings"];
    assert!(
        settings["index"]["lifecycle"].is_null() && settings["index"]["plugins"].is_null(),
        "no lifecycle policy named where the cluster has none: {settings}"
    );
    let run = run_client(generated_client(100, 2), lumberd.addr());
    assert_acked(&run, 200, &lumberd);
    assert_eq!(node.count(EVENTS), 200, "{}", lumberd.logs());
}
