//! Elastic's Filebeat (`target/clients/filebeat`, built from `github.com/elastic/beats/v7`
//! by tests/clients/filebeat.sh) against a live lumberd.
//!
//! [`Filebeat`] runs `filebeat -e` with a generated `filebeat.yml`: the user's
//! configuration with only the log path and the host changed, every other setting given
//! as `-E` flags, its home, data (registry) and log in a temp dir of its own. Tests wait
//! on its registry ([`Filebeat::wait_shipped`]): a file's cursor reaches the file's size
//! only when every line of it has been acknowledged. [`stable_port`] gives a lumberd that
//! must come back after a crash a port to come back on. The log files and the checks of
//! what was stored are in [`super::qwen_log`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::clients::client_path;
use super::lumberd::Lumberd;
use super::repo_root;

/// The user's `filebeat.yml`, as the deployment lumberd replaces has it (issue 14;
/// tests/clients/filebeat/filebeat.user.yml). The tests change only the path and the
/// host in it.
pub const USER_CONFIG: &str = include_str!("../clients/filebeat/filebeat.user.yml");

/// The corrected configuration shipped with the compose stack.
pub fn corrected_config() -> String {
    let path = repo_root().join("deploy/compose/filebeat.yml");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// How long Filebeat may take to ship a file, and to stop.
pub const SHIP_DEADLINE: Duration = Duration::from_secs(120);
const STOP_DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------
// Filebeat

/// A running Filebeat, killed on drop. Its home, data (registry) and log live in a temp
/// dir unless [`FilebeatBuilder::data_dir`] keeps the registry somewhere else.
pub struct Filebeat {
    child: Child,
    dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    /// The command line, for diagnoses.
    what: String,
}

pub struct FilebeatBuilder {
    config: String,
    settings: Vec<String>,
    data: Option<PathBuf>,
}

/// `config` with its log path replaced by `log` and its one `hosts` line by `hosts`:
/// the user's file with only what must change for the test changed.
pub fn retarget(config: &str, log: &Path, hosts: &[String]) -> String {
    let quoted: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    let mut out = String::new();
    let mut hosts_seen = 0;
    for line in config.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if trimmed.starts_with("- /logs/qwen_inference.log") {
            let _ = writeln!(out, "{indent}- {}", log.display());
        } else if trimmed.starts_with("hosts:") {
            hosts_seen += 1;
            let _ = writeln!(out, "{indent}hosts: [{}]", quoted.join(", "));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert_eq!(
        hosts_seen, 1,
        "the config must have exactly one hosts line:\n{config}"
    );
    assert!(
        out.contains(&log.display().to_string()),
        "the config names no /logs/qwen_inference.log path:\n{config}"
    );
    out
}

impl Filebeat {
    /// Filebeat with `config` (a `filebeat.yml`) tailing `log` and shipping to `hosts`.
    pub fn builder(config: &str, log: &Path, hosts: &[String]) -> FilebeatBuilder {
        FilebeatBuilder {
            config: retarget(config, log, hosts),
            settings: Vec::new(),
            data: None,
        }
    }

    /// The user's configuration against one lumberd.
    pub fn user_config(log: &Path, lumberd: &Lumberd) -> FilebeatBuilder {
        Self::builder(USER_CONFIG, log, &[lumberd.addr().to_string()])
    }
}

impl FilebeatBuilder {
    /// One `-E key=value` override, as `filebeat -E` takes it (values in YAML syntax).
    pub fn set(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        self.settings.push(format!("{key}={value}"));
        self
    }

    /// Keeps the registry in `dir` (a volume that outlives the container), so a second
    /// Filebeat resumes where the first stopped.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data = Some(dir.to_path_buf());
        self
    }

    pub fn start(self) -> Filebeat {
        let dir = tempfile::Builder::new()
            .prefix("lumberd-filebeat-")
            .tempdir()
            .expect("temp dir for Filebeat");
        let home = dir.path().join("home");
        // An empty module directory: without one Filebeat logs an ERROR per start.
        fs::create_dir_all(home.join("module")).unwrap();
        let data = self.data.unwrap_or_else(|| dir.path().join("data"));
        fs::create_dir_all(&data).unwrap();
        let config = dir.path().join("filebeat.yml");
        fs::write(&config, &self.config).unwrap();
        let log = dir.path().join("filebeat.log");
        let stderr = fs::File::create(&log).unwrap();
        let mut cmd = Command::new(client_path("target/clients/filebeat"));
        cmd.arg("-e")
            .arg("-c")
            .arg(&config)
            .arg("--path.home")
            .arg(&home)
            .arg("--path.config")
            .arg(dir.path())
            .arg("--path.data")
            .arg(&data)
            .arg("--path.logs")
            .arg(dir.path().join("logs"));
        for s in &self.settings {
            cmd.arg("-E").arg(s);
        }
        let what = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Filebeat {
            child,
            dir,
            data,
            log,
            what,
        }
    }
}

/// A file's entry in Filebeat's registry.
#[derive(Clone, Debug)]
pub struct Cursor {
    pub key: String,
    pub source: String,
    /// Bytes of the file acknowledged; `None` until the first acknowledgement.
    pub offset: Option<u64>,
}

impl Filebeat {
    /// Everything Filebeat logged (`-e`: its stderr, in a file).
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn config_text(&self) -> String {
        fs::read_to_string(self.dir.path().join("filebeat.yml")).unwrap_or_default()
    }

    /// The registry's entries now: the last checkpoint (`active.dat` names it), then the
    /// operations appended to `log.json` since. A line Filebeat is still writing is
    /// skipped; the next read sees it.
    pub fn registry(&self) -> BTreeMap<String, Cursor> {
        let dir = self.data.join("registry/filebeat");
        let mut state: BTreeMap<String, Value> = BTreeMap::new();
        if let Ok(active) = fs::read_to_string(dir.join("active.dat")) {
            let checkpoint = fs::read_to_string(active.trim()).unwrap_or_default();
            if let Ok(Value::Array(entries)) = serde_json::from_str(&checkpoint) {
                for mut e in entries {
                    if let Some(key) = e["_key"].as_str().map(str::to_owned) {
                        e.as_object_mut().unwrap().remove("_key");
                        state.insert(key, e);
                    }
                }
            }
        }
        let log = fs::read_to_string(dir.join("log.json")).unwrap_or_default();
        let mut op = None;
        for line in log.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                break;
            };
            if let Some(o) = v["op"].as_str() {
                op = Some(o.to_string());
                continue;
            }
            let Some(key) = v["k"].as_str() else { continue };
            match op.take().as_deref() {
                Some("set") => {
                    state.insert(key.to_string(), v["v"].clone());
                }
                Some("remove") => {
                    state.remove(key);
                }
                _ => {}
            }
        }
        state
            .into_iter()
            .map(|(key, v)| {
                let cursor = Cursor {
                    key: key.clone(),
                    source: v["meta"]["source"].as_str().unwrap_or("").to_string(),
                    offset: v["cursor"]["offset"].as_u64(),
                };
                (key, cursor)
            })
            .collect()
    }

    /// The registry entry of the file at `path` now (filestream keys files by inode and
    /// device: `filestream::<input id>::native::<inode>-<device>`).
    pub fn cursor_of(&self, path: &Path) -> Option<Cursor> {
        let meta = fs::metadata(path).ok()?;
        let suffix = format!("::native::{}-{}", meta.ino(), meta.dev());
        self.registry()
            .into_values()
            .find(|c| c.key.ends_with(&suffix))
    }

    /// Waits until Filebeat's registry has every one of `files` acknowledged up to its
    /// current size; fails after `deadline` with the registry, Filebeat's and lumberd's
    /// logs. Filebeat exiting early is a failure too.
    pub fn wait_shipped(&mut self, files: &[&Path], deadline: Duration, lumberds: &[&Lumberd]) {
        let until = Instant::now() + deadline;
        loop {
            let pending: Vec<String> = files
                .iter()
                .filter_map(|f| {
                    let size = fs::metadata(f).map(|m| m.len()).unwrap_or(0);
                    let at = self.cursor_of(f).and_then(|c| c.offset);
                    (at != Some(size)).then(|| format!("{}: {at:?} of {size}", f.display()))
                })
                .collect();
            if pending.is_empty() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "Filebeat exited ({status}) before shipping everything: {pending:?}\n{}",
                    self.diagnosis(lumberds)
                );
            }
            if Instant::now() > until {
                panic!(
                    "Filebeat did not ship everything within {deadline:?}: {pending:?}\n{}",
                    self.diagnosis(lumberds)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for a clean exit (Filebeat's own shutdown).
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + STOP_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "Filebeat exited {status} on SIGTERM\n{}",
                    self.diagnosis(&[])
                );
                return;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!(
                    "Filebeat did not stop within {STOP_DEADLINE:?} of SIGTERM\n{}",
                    self.diagnosis(&[])
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Filebeat's lines at ERROR level.
    pub fn errors(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| l.split('\t').nth(1) == Some("ERROR"))
            .map(str::to_owned)
            .collect()
    }

    /// What a failing test shows: the command, the config, the registry, the tails of
    /// Filebeat's and each lumberd's logs.
    pub fn diagnosis(&self, lumberds: &[&Lumberd]) -> String {
        let mut out = format!(
            "--- filebeat: {}\n--- filebeat.yml:\n{}--- registry: {:#?}\n--- filebeat log (tail):\n{}",
            self.what,
            self.config_text(),
            self.registry().into_values().collect::<Vec<_>>(),
            tail(&self.logs(), 12_000)
        );
        for l in lumberds {
            let _ = write!(
                out,
                "\n--- lumberd {} (tail):\n{}",
                l.addr(),
                tail(&l.logs(), 8_000)
            );
        }
        out
    }
}

impl Drop for Filebeat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `max` bytes of `s` (on a char boundary).
pub fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

// ---------------------------------------------------------------------------------
// Ports

/// A free loopback port below the kernel's ephemeral range, for a lumberd that must come
/// back on the same port after a crash. A port from the ephemeral range could meanwhile
/// become the source port of an outgoing connection, even of Filebeat's own reconnect
/// to it (a TCP self-connect); below the range only an explicit bind can take it, and
/// [`rebind_check`] says who did.
pub fn stable_port() -> u16 {
    let low: u16 = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let span = low.saturating_sub(20000).max(1000) as u64;
    let mut seed = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    };
    for _ in 0..200 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = low - 1 - ((seed >> 33) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {low} after 200 tries");
}

/// Before lumberd is started again on `port`: the port is still free, or the test fails
/// naming the socket that holds it (from /proc/net/tcp).
pub fn rebind_check(port: u16) {
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        return;
    }
    let holders: Vec<String> = fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!(":{port:04X} ")))
        .map(str::to_owned)
        .collect();
    panic!(
        "port {port} was taken while lumberd was down (it is below the ephemeral range, so \
         another process bound it explicitly); /proc/net/tcp:\n{}",
        holders.join("\n")
    );
}

/// `host:port` of a lumberd for Filebeat's `hosts`.
pub fn host(addr: SocketAddr) -> String {
    addr.to_string()
}
