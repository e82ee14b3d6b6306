//! A `lumberd serve` for a test: the binary on 127.0.0.1:0 with a fresh data directory and
//! a hermetic environment, its logs drained in background threads (a full pipe would block
//! lumberd), its admin port (scrapes, probes), signals, and kill on drop.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long lumberd may take to log its listening address.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

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
                    super::truncate(&self.logs(), 20000)
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

    /// SIGKILL: a crash, nothing flushed or acknowledged on the way out.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
                    super::truncate(&logs, 20000)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lumberd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
