//! The real Beats clients a test drives (built by tests/clients/setup.sh): go-lumber's
//! lumberclient, pylogbeat, the Node lumberjack-client scripts. [`run_client`] runs one with
//! a deadline and reads the JSON line it prints and the events it dumped.

use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::lumberd::Lumberd;

/// How long one client run may take before the test kills it: a bound for a hung client,
/// not a speed target. As long as the longest wait a suite grants lumberd (a client whose
/// windows wait through an Elasticsearch restart, 300 s on a loaded 2-core machine).
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(300);

/// `target/clients/<name>` (or the node_modules a Node script needs), or a failure
/// telling how to install the clients.
pub fn client_path(rel: &str) -> PathBuf {
    let p = super::repo_root().join(rel);
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
            super::truncate(&self.stdout, 4000),
            super::truncate(&self.stderr, 4000)
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
                super::truncate(&String::from_utf8_lossy(&err.join().unwrap()), 4000)
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
            super::truncate(&lumberd.logs(), 20000)
        );
    }
}
