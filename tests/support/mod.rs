//! Harness for tests that run the real `lumberd` binary and real Lumberjack clients.
//!
//! * [`Lumberd`] starts `lumberd serve` on 127.0.0.1:0 with a fresh data directory,
//!   drains its stdout/stderr in background threads (a full pipe would block lumberd),
//!   waits for its `listening addr=...` log line and kills it on drop.
//! * [`run_client`] runs one client program (built by tests/clients/setup.sh into
//!   target/clients/) with a deadline and parses the one JSON line it prints.
//! * [`assert_stored_once`] checks lumberd's output files event by event against the
//!   events the client says it sent.
#![allow(dead_code)]

pub mod certs;
pub mod es;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long lumberd may take to log its listening address.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long one client run may take before the test kills it.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(120);

/// See [`LumberdBuilder::passthrough`].
pub const PASSTHROUGH_CONFIG: &str = "[pipeline]\nfilter = []\nfingerprint = []\nmetric = []\n";

/// A running `lumberd serve`, killed on drop.
pub struct Lumberd {
    child: Child,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    data_dir: tempfile::TempDir,
    logs: Arc<Mutex<String>>,
}

/// Builder for [`Lumberd`]: extra environment variables and arguments.
#[derive(Default)]
pub struct LumberdBuilder {
    env: Vec<(String, String)>,
    args: Vec<String>,
    config: Option<String>,
}

impl LumberdBuilder {
    /// Sets an environment variable for lumberd (e.g. `LUMBERD_SERVER_MAX_CONNECTIONS`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Appends a command-line argument after `serve`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Runs lumberd with this configuration file text (`--config`).
    pub fn config(mut self, text: impl Into<String>) -> Self {
        self.config = Some(text.into());
        self
    }

    /// An empty pipeline and no ids: events are stored as the client sent them, for
    /// tests of the protocol and ACK contract rather than of the filters.
    pub fn passthrough(self) -> Self {
        self.config(PASSTHROUGH_CONFIG)
    }

    /// Spawns lumberd and waits (up to [`START_DEADLINE`]) for its listening line.
    pub fn start(self) -> Lumberd {
        let data_dir = tempfile::Builder::new()
            .prefix("lumberd-test-")
            .tempdir()
            .expect("create a temp data dir");
        let mut cmd = serve_command(data_dir.path());
        cmd.args(&self.args);
        if let Some(text) = &self.config {
            let path = data_dir.path().join("lumberd-test.toml");
            fs::write(&path, text).expect("write the test config");
            cmd.arg("--config").arg(&path);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("spawn {}: {e}", env!("CARGO_BIN_EXE_lumberd"));
        });
        let logs = Arc::new(Mutex::new(String::new()));
        drain(child.stderr.take().unwrap(), logs.clone(), "");
        drain(child.stdout.take().unwrap(), logs.clone(), "[stdout] ");

        let deadline = Instant::now() + START_DEADLINE;
        let (addr, admin) = loop {
            if let Some(addrs) = parse_listening(&logs.lock().unwrap()) {
                break addrs;
            }
            if let Ok(Some(status)) = child.try_wait() {
                thread::sleep(Duration::from_millis(100)); // let the drains catch up
                panic!(
                    "lumberd exited ({status}) before logging `listening addr=`; its logs:\n{}",
                    logs.lock().unwrap()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "lumberd did not log `listening addr=` within {START_DEADLINE:?}; its logs:\n{}",
                    logs.lock().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        Lumberd {
            child,
            addr,
            admin,
            data_dir,
            logs,
        }
    }
}

/// The lumberd binary, hermetic: no `LUMBERD_*` setting leaks in from the environment
/// running the tests.
pub fn lumberd_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lumberd"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LUMBERD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `lumberd serve` on a free loopback port, its file output in `data_dir`, text logs.
pub fn serve_command(data_dir: &Path) -> Command {
    let mut cmd = lumberd_command();
    cmd.arg("serve")
        .env("LUMBERD_SERVER_LISTEN", "127.0.0.1:0")
        .env("LUMBERD_ADMIN_LISTEN", "127.0.0.1:0")
        .env("LUMBERD_OUTPUT_DATA_DIR", data_dir)
        .env("LUMBERD_LOG_FORMAT", "text")
        .env("NO_COLOR", "1");
    cmd
}

/// Copies `from` line by line into `into` until EOF.
fn drain(from: impl Read + Send + 'static, into: Arc<Mutex<String>>, tag: &'static str) {
    thread::spawn(move || {
        let mut r = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let mut logs = into.lock().unwrap();
                    logs.push_str(tag);
                    logs.push_str(&String::from_utf8_lossy(&line));
                    if !line.ends_with(b"\n") {
                        logs.push('\n');
                    }
                }
            }
        }
    });
}

/// The Beats and admin addresses in the first `listening addr=HOST:PORT admin=HOST:PORT`
/// line of the logs (admin `None` when lumberd runs without one).
fn parse_listening(logs: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    // JSON logs (log.format json or auto): the fields of the "listening" line.
    for line in logs.lines().filter(|l| l.starts_with('{')) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["message"] == "listening" {
            let addr = v["addr"].as_str()?.parse().ok()?;
            return Some((addr, v["admin"].as_str().and_then(|a| a.parse().ok())));
        }
    }
    let at = logs.find("listening addr=")?;
    let line = logs[at..].lines().next()?;
    let value = |key: &str| {
        let rest = &line[line.find(key)? + key.len()..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '\u{1b}' || c == '"' || c == ',')
            .unwrap_or(rest.len());
        Some(rest[..end].to_string())
    };
    let addr = value("addr=")?.parse().ok()?;
    Some((addr, value("admin=").and_then(|a| a.parse().ok())))
}

/// `(status, body)` of an HTTP/1.0 GET to `addr` (the admin port), by hand: the tests
/// must see exactly what a scraper or the kubelet sees.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("connect to the admin port {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: not an HTTP response: {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status in {head:?}"));
    (status, body.to_string())
}

/// The value of the series `series` (a name with its labels, as exposed) in a scrape.
pub fn metric(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

impl Lumberd {
    pub fn builder() -> LumberdBuilder {
        LumberdBuilder::default()
    }

    /// lumberd with only the harness's environment.
    pub fn start() -> Lumberd {
        Self::builder().start()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The admin port (/metrics, /healthz, /readyz).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .expect("lumberd logged no admin address (admin.listen empty?)")
    }

    /// `(status, body)` of GET `path` on the admin port.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin_addr(), path)
    }

    /// The metrics, as Prometheus scrapes them.
    pub fn scrape(&self) -> String {
        let (status, body) = self.admin_get("/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// Polls the metrics every 20 ms until `series` reaches `at_least`; returns the
    /// scrape. After `deadline` the test fails showing the scrape and the logs.
    pub fn wait_for_metric(&self, series: &str, at_least: f64, deadline: Duration) -> String {
        let until = Instant::now() + deadline;
        loop {
            let scrape = self.scrape();
            if metric(&scrape, series).is_some_and(|v| v >= at_least) {
                return scrape;
            }
            if Instant::now() > until {
                panic!(
                    "{series} did not reach {at_least} within {deadline:?}; now {:?}; logs:\n{}",
                    metric(&scrape, series),
                    truncate(&self.logs(), 20000)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as Kubernetes stops a pod.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}", self.pid());
    }

    /// Waits for lumberd to exit on its own, at most `deadline`; `None` if it did not.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > until {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything lumberd wrote to stderr (and stdout, tagged) so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Polls the logs every 20 ms until `done(logs)` holds, and returns them; after
    /// `deadline` the test fails naming `what` and showing the logs.
    pub fn wait_for_logs(
        &self,
        what: &str,
        deadline: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let until = Instant::now() + deadline;
        loop {
            let logs = self.logs();
            if done(&logs) {
                return logs;
            }
            if Instant::now() > until {
                panic!(
                    "lumberd did not log {what} within {deadline:?}; its logs:\n{}",
                    truncate(&logs, 20000)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The output files `<prefix>YYYY.MM.dd.ndjson` in the data dir, sorted by name.
    pub fn files(&self, prefix: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = fs::read_dir(self.data_dir())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| {
                        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        name.starts_with(prefix) && name.ends_with(".ndjson")
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Every document of every `qwen-logs-*.ndjson`, keyed by index name
    /// (the file name without `.ndjson`, e.g. `qwen-logs-2025.04.05`).
    pub fn events_by_index(&self) -> BTreeMap<String, Vec<Value>> {
        strip_ids(self.read_index_files("qwen-logs-"))
    }

    /// Every document in every `qwen-logs-*.ndjson`, in file-name then line order.
    pub fn events(&self) -> Vec<Value> {
        self.events_by_index().into_values().flatten().collect()
    }

    /// Every stored event with the `_id` of its bulk action line, in file order.
    pub fn events_with_ids(&self) -> Vec<(Option<String>, Value)> {
        self.read_index_files("qwen-logs-")
            .into_values()
            .flatten()
            .collect()
    }

    /// Every document of every `deadletter-*.ndjson`, keyed by file name without extension.
    pub fn deadletters_by_index(&self) -> BTreeMap<String, Vec<Value>> {
        strip_ids(self.read_index_files("deadletter-"))
    }

    /// The files hold Elasticsearch bulk lines: an action line naming the file's index
    /// (and the id), then the document.
    fn read_index_files(&self, prefix: &str) -> BTreeMap<String, Vec<(Option<String>, Value)>> {
        let mut out = BTreeMap::new();
        for path in self.files(prefix) {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let parse = |i: usize, line: &str| -> Value {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!(
                        "{}:{}: not a JSON line ({e}): {line}\nlumberd logs:\n{}",
                        path.display(),
                        i + 1,
                        self.logs()
                    )
                })
            };
            let lines: Vec<(usize, &str)> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .collect();
            assert!(
                lines.len().is_multiple_of(2),
                "{}: {} lines, bulk form has an action line per document",
                path.display(),
                lines.len()
            );
            let mut events = Vec::new();
            for pair in lines.chunks(2) {
                let action = parse(pair[0].0, pair[0].1);
                let create = &action["create"];
                assert_eq!(
                    create["_index"].as_str(),
                    Some(name.as_str()),
                    "{}:{}: action line must name the file's index: {action}",
                    path.display(),
                    pair[0].0 + 1
                );
                let id = create["_id"].as_str().map(str::to_owned);
                events.push((id, parse(pair[1].0, pair[1].1)));
            }
            out.insert(name, events);
        }
        out
    }
}

fn strip_ids(
    by_index: BTreeMap<String, Vec<(Option<String>, Value)>>,
) -> BTreeMap<String, Vec<Value>> {
    by_index
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().map(|(_, doc)| doc).collect()))
        .collect()
}

impl Lumberd {
    /// SIGKILL: a crash, nothing flushed or acknowledged on the way out.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Lumberd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------
// Real clients

/// Repository root (where tests/clients/setup.sh puts target/clients/).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/clients/<name>` (or the node_modules a Node script needs), or a failure
/// telling how to install the clients.
pub fn client_path(rel: &str) -> PathBuf {
    let p = repo_root().join(rel);
    if !p.exists() {
        panic!(
            "{} is missing: run tests/clients/setup.sh (make test does)",
            p.display()
        );
    }
    p
}

/// The go-lumber CLI built from tests/clients/go.
pub fn go_lumber() -> Command {
    Command::new(client_path("target/clients/lumberclient"))
}

/// pylogbeat_client.py in the venv of tests/clients/setup.sh.
pub fn pylogbeat() -> Command {
    let python = client_path("target/clients/venv/bin/python");
    let mut cmd = Command::new(python);
    cmd.arg(client_path("tests/clients/python/pylogbeat_client.py"));
    cmd
}

/// A Node script of tests/clients/node (needs its node_modules from `npm ci`).
pub fn node_script(script: &str) -> Command {
    client_path("tests/clients/node/node_modules/lumberjack-client/package.json");
    client_path("tests/clients/node/node_modules/lumberjack-protocol/package.json");
    let mut cmd = Command::new("node");
    cmd.arg(client_path(&format!("tests/clients/node/{script}")));
    cmd
}

/// One finished client run.
pub struct ClientRun {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// The JSON result line (Value::Null if there was none).
    pub result: Value,
    /// The events the client sent, in order, from its `-dump` file.
    pub sent: Vec<Value>,
}

impl ClientRun {
    /// The `ids` the client reported.
    pub fn ids(&self) -> Vec<String> {
        self.result["ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn describe(&self) -> String {
        format!(
            "{} exited {}\nstdout: {}\nstderr: {}",
            self.what,
            self.status,
            truncate(&self.stdout, 4000),
            truncate(&self.stderr, 4000)
        )
    }
}

/// Runs `cmd` with `-addr <addr> -dump <tmp>` appended, within [`CLIENT_DEADLINE`].
pub fn run_client(mut cmd: Command, addr: SocketAddr) -> ClientRun {
    let dump_dir = tempfile::tempdir().expect("temp dir");
    let dump = dump_dir.path().join("sent.jsonl");
    cmd.arg("-addr")
        .arg(addr.to_string())
        .arg("-dump")
        .arg(&dump);
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for client") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {CLIENT_DEADLINE:?}\nstderr: {}",
                truncate(&String::from_utf8_lossy(&err.join().unwrap()), 4000)
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stdout = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    let result = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .unwrap_or(Value::Null);
    let sent = fs::read_to_string(&dump)
        .map(|t| {
            t.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).expect("client dump line is JSON"))
                .collect()
        })
        .unwrap_or_default();
    ClientRun {
        what,
        status,
        stdout,
        stderr,
        result,
        sent,
    }
}

fn collect(from: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let mut from = from;
        let _ = from.read_to_end(&mut buf);
        buf
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &s[..end], s.len())
}

/// The client exited 0 and reports every event it sent as acknowledged.
pub fn assert_all_acked(run: &ClientRun, lumberd: &Lumberd) {
    let sent = run.result["events_sent"].as_u64();
    let acked = run.result["events_acked"].as_u64();
    let ids = run.ids();
    let ok = run.status.success()
        && sent.is_some()
        && sent == acked
        && sent == Some(ids.len() as u64)
        && ids.len() == run.sent.len();
    if !ok {
        panic!(
            "not every event was acknowledged: events_sent={sent:?} events_acked={acked:?} \
             ids={} dumped={}\n{}\n--- lumberd logs ---\n{}",
            ids.len(),
            run.sent.len(),
            run.describe(),
            truncate(&lumberd.logs(), 20000)
        );
    }
}

/// Where an event is expected to be stored.
#[derive(Clone, Copy)]
pub enum IndexRule {
    /// `qwen-logs-<UTC date of the event's @timestamp>` (events with an @timestamp).
    EventTimestamp,
    /// Events without @timestamp (v1 string pairs): the UTC date lumberd received them,
    /// i.e. one of the dates seen between `from` and `to` (seconds since the epoch).
    ReceivedBetween(u64, u64),
}

/// Seconds since the Unix epoch, for [`IndexRule::ReceivedBetween`].
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `YYYY.MM.dd` of a Unix time (UTC), by the civil-from-days algorithm.
pub fn utc_date(secs: u64) -> String {
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}.{m:02}.{d:02}")
}

/// `qwen-logs-YYYY.MM.dd` for an RFC 3339 UTC timestamp such as `2025-04-05T10:23:45.000Z`.
pub fn index_of_timestamp(ts: &str) -> String {
    assert!(
        ts.len() >= 20 && ts.ends_with('Z'),
        "test events use UTC timestamps ending in Z, got {ts:?}"
    );
    format!("qwen-logs-{}", ts[..10].replace('-', "."))
}

/// Every event the clients sent is stored exactly once, equal (as JSON) to what was
/// sent, in the index its rule gives; nothing else is stored and nothing is dead-lettered.
/// `runs` may come from several clients that used the same lumberd.
pub fn assert_stored_once(lumberd: &Lumberd, runs: &[(&ClientRun, IndexRule)]) {
    let stored = lumberd.events_by_index();
    // test_id -> [(index, event)]
    let mut found: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    let mut without_id = Vec::new();
    for (index, events) in &stored {
        for ev in events {
            match ev.get("test_id").and_then(Value::as_str) {
                Some(id) => found
                    .entry(id.to_string())
                    .or_default()
                    .push((index.clone(), ev.clone())),
                None => without_id.push((index.clone(), ev.clone())),
            }
        }
    }

    let mut problems = String::new();
    let mut expected_total = 0usize;
    let mut expected_ids = std::collections::BTreeSet::new();
    for (run, rule) in runs {
        let ids = run.ids();
        if ids.len() != run.sent.len() {
            let _ = writeln!(
                problems,
                "{}: reported {} ids but dumped {} events",
                run.what,
                ids.len(),
                run.sent.len()
            );
        }
        for (id, sent) in ids.iter().zip(&run.sent) {
            expected_total += 1;
            expected_ids.insert(id.clone());
            if sent.get("test_id").and_then(Value::as_str) != Some(id.as_str()) {
                let _ = writeln!(
                    problems,
                    "{id}: the client's dump has {sent} at that position"
                );
                continue;
            }
            let copies = found.get(id).map(Vec::as_slice).unwrap_or(&[]);
            match copies.len() {
                0 => {
                    let _ = writeln!(problems, "{id}: MISSING from every qwen-logs-*.ndjson");
                    continue;
                }
                1 => {}
                n => {
                    let where_: Vec<&str> = copies.iter().map(|(i, _)| i.as_str()).collect();
                    let _ = writeln!(problems, "{id}: stored {n} times (in {where_:?})");
                }
            }
            let (index, stored) = &copies[0];
            // An event sent without @timestamp is stamped with its receive time (checked
            // against the index below); everything else is stored as sent.
            let mut stored_cmp = stored.clone();
            if sent.get("@timestamp").is_none() {
                if let Some(o) = stored_cmp.as_object_mut() {
                    o.remove("@timestamp");
                }
            }
            if stored_cmp != *sent {
                let _ = writeln!(
                    problems,
                    "{id}: stored event differs from the one sent\n  sent:   {sent}\n  stored: {stored}"
                );
            }
            match rule {
                IndexRule::EventTimestamp => {
                    let ts = sent.get("@timestamp").and_then(Value::as_str).unwrap_or("");
                    let want = index_of_timestamp(ts);
                    if *index != want {
                        let _ = writeln!(
                            problems,
                            "{id}: @timestamp {ts} but stored in {index}, expected {want}"
                        );
                    }
                }
                IndexRule::ReceivedBetween(from, to) => {
                    let (a, b) = (
                        format!("qwen-logs-{}", utc_date(*from)),
                        format!("qwen-logs-{}", utc_date(*to)),
                    );
                    if *index != a && *index != b {
                        let _ = writeln!(
                            problems,
                            "{id}: has no @timestamp, expected the receive date {a} (or {b}), stored in {index}"
                        );
                    }
                }
            }
        }
    }
    for (id, copies) in &found {
        if !expected_ids.contains(id) {
            let _ = writeln!(
                problems,
                "{id}: stored {} time(s) but no client sent it: {}",
                copies.len(),
                copies[0].1
            );
        }
    }
    for (index, ev) in &without_id {
        let _ = writeln!(problems, "{index}: event without test_id: {ev}");
    }
    let total: usize = stored.values().map(Vec::len).sum();
    if total != expected_total && problems.is_empty() {
        let _ = writeln!(problems, "{total} events stored, {expected_total} sent");
    }
    let dead = lumberd.deadletters_by_index();
    for (index, evs) in &dead {
        for ev in evs {
            let _ = writeln!(
                problems,
                "dead letter in {index}: {}",
                truncate(&ev.to_string(), 500)
            );
        }
    }

    if !problems.is_empty() {
        let counts: Vec<String> = stored
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.len()))
            .collect();
        panic!(
            "the output does not hold every event exactly once as sent:\n{}\nfiles: {counts:?}\n\
             --- clients ---\n{}\n--- lumberd logs ---\n{}",
            truncate(&problems, 20000),
            runs.iter()
                .map(|(r, _)| r.describe())
                .collect::<Vec<_>>()
                .join("\n"),
            truncate(&lumberd.logs(), 20000)
        );
    }
}
