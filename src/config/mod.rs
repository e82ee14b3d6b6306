//! The configuration file (TOML), its environment overrides and its validation into typed
//! settings, all before anything is bound. Knows no sockets or runtime objects.
//!
//! Every key has a default (the `DEFAULT_*` constants below, each with its reason) and is
//! documented in `config/lumberd.toml`. Any key can be overridden by an environment
//! variable `LUMBERD_<SECTION>_<KEY>`, e.g. `LUMBERD_SERVER_LISTEN=0.0.0.0:5044`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::pipeline::PipelineSettings;
use crate::protocol::Limits;

mod pipeline;

/// The Beats port Filebeat's `output.logstash` uses by default.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:5044";
/// A fleet of a few thousand Filebeat agents per instance, with headroom; each holds a
/// socket, a 64 KiB read buffer and a task.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Logstash sends `ACK 0` after 5 s without progress; Filebeat times out after 30 s.
pub const DEFAULT_KEEPALIVE_INTERVAL: &str = "5s";
/// Twice Filebeat's 30 s timeout: long enough for a slow flush, short enough that a
/// client behind a stuck output fails over to another host.
pub const DEFAULT_STALL_TIMEOUT: &str = "60s";
/// A client that sends nothing, and waits for nothing, for this long is gone.
pub const DEFAULT_IDLE_TIMEOUT: &str = "5m";
/// Filebeat's own `max_bytes` per event is 10 MiB; a `C` frame of a 2048-event window of
/// ~1 KiB events is ~300 KiB.
pub const DEFAULT_MAX_FRAME_BYTES: u64 = 16 * 1024 * 1024;
/// A window of 2048 events of 100 KiB each; anything larger is a zlib bomb.
pub const DEFAULT_MAX_INFLATED_BYTES: u64 = 256 * 1024 * 1024;
/// Eight times Filebeat's default `bulk_max_size` of 2048.
pub const DEFAULT_MAX_WINDOW_EVENTS: u32 = 16_384;
/// Event bytes held in memory between the socket and the output, over all connections;
/// past it connections stop reading (TCP backpressure). Must hold two largest frames.
pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 48 * 1024 * 1024;
/// Filebeat pipelines 2 windows by default; a client with more waits for ACKs.
pub const DEFAULT_MAX_PENDING_WINDOWS: usize = 8;
/// Events per batch handed to the output: amortises queue operations per event.
pub const DEFAULT_BATCH_EVENTS: usize = 512;
/// The embedded file output writes here when no Elasticsearch is configured.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Batches queued for the output; with `batch_events` this bounds the queue in events.
pub const DEFAULT_QUEUE_BATCHES: usize = 64;
/// Time given to in-flight windows to be delivered and acknowledged after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: &str = "20s";
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// `auto`: human-readable on a terminal, JSON otherwise (containers).
pub const DEFAULT_LOG_FORMAT: &str = "auto";

/// TLS is opt-in: Filebeat's `output.logstash` speaks plain TCP unless `ssl.*` is set.
pub const DEFAULT_TLS_ENABLED: bool = false;
/// Filebeat's default `ssl.supported_protocols` is TLS 1.2 and 1.3; 1.0/1.1 are not offered
/// by rustls at all.
pub const DEFAULT_TLS_MIN_VERSION: &str = "1.2";
/// A handshake takes milliseconds (a few round trips); a client silent this long holds a
/// connection slot for nothing. Well under Filebeat's 30 s `timeout`, which covers it.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: &str = "10s";
/// Kubernetes propagates a rewritten secret to the pod within about a minute; checking
/// the few small files twice as often costs nothing and picks a rotation up soon after.
pub const DEFAULT_TLS_RELOAD_INTERVAL: &str = "30s";
/// Clients are not asked for a certificate unless configured: Filebeat sends one only
/// when `ssl.certificate` is set.
pub const DEFAULT_TLS_CLIENT_AUTH: &str = "none";

const SECTIONS: [&str; 5] = ["server", "tls", "output", "log", "pipeline"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    max_connections: usize,
    keepalive_interval: String,
    stall_timeout: String,
    idle_timeout: String,
    max_frame_bytes: u64,
    max_inflated_bytes: u64,
    max_window_events: u32,
    max_inflight_bytes: u64,
    max_pending_windows: usize,
    batch_events: usize,
    shutdown_grace: String,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: DEFAULT_LISTEN.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL.into(),
            stall_timeout: DEFAULT_STALL_TIMEOUT.into(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT.into(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_inflated_bytes: DEFAULT_MAX_INFLATED_BYTES,
            max_window_events: DEFAULT_MAX_WINDOW_EVENTS,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            max_pending_windows: DEFAULT_MAX_PENDING_WINDOWS,
            batch_events: DEFAULT_BATCH_EVENTS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE.into(),
        }
    }
}

/// A key that takes one value or a list (an environment variable gives one string, or a
/// TOML array literal such as `["a.pem", "b.pem"]`).
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    #[default]
    None,
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTls {
    enabled: bool,
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    key_passphrase_file: Option<PathBuf>,
    key_passphrase_env: Option<String>,
    client_auth: String,
    client_ca: OneOrMany<PathBuf>,
    allowed_clients: OneOrMany<String>,
    /// A string, or the number an environment variable's `1.3` parses to.
    min_version: toml::Value,
    handshake_timeout: String,
    reload_interval: String,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            enabled: DEFAULT_TLS_ENABLED,
            certificate: None,
            key: None,
            key_passphrase_file: None,
            key_passphrase_env: None,
            client_auth: DEFAULT_TLS_CLIENT_AUTH.into(),
            client_ca: OneOrMany::None,
            allowed_clients: OneOrMany::None,
            min_version: toml::Value::String(DEFAULT_TLS_MIN_VERSION.into()),
            handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT.into(),
            reload_interval: DEFAULT_TLS_RELOAD_INTERVAL.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOutput {
    data_dir: PathBuf,
    queue_batches: usize,
}

impl Default for RawOutput {
    fn default() -> Self {
        RawOutput {
            data_dir: DEFAULT_DATA_DIR.into(),
            queue_batches: DEFAULT_QUEUE_BATCHES,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: String,
    format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: DEFAULT_LOG_LEVEL.into(),
            format: DEFAULT_LOG_FORMAT.into(),
        }
    }
}

/// Validated settings: everything `run` needs, typed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    /// `None` when `[tls] enabled = false`: the port speaks plain Beats.
    pub tls: Option<TlsSettings>,
    pub output: OutputSettings,
    pub log: LogSettings,
    pub pipeline: PipelineSettings,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_connections: usize,
    pub keepalive_interval: Duration,
    pub stall_timeout: Duration,
    pub idle_timeout: Duration,
    pub limits: Limits,
    pub max_inflight_bytes: u64,
    pub max_pending_windows: usize,
    pub batch_events: usize,
    pub shutdown_grace: Duration,
}

/// The `[tls]` section, checked for shape only; reading and checking the files (PEM,
/// key match, expiry) is `tls.rs`'s job, also before anything is bound.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub key_passphrase: Passphrase,
    pub client_auth: ClientAuth,
    pub client_ca: Vec<PathBuf>,
    /// Client certificate subjects (RFC 4514) or SANs allowed to connect; empty: any
    /// certificate the CAs verify.
    pub allowed_clients: Vec<String>,
    pub min_version: TlsVersion,
    pub handshake_timeout: Duration,
    pub reload_interval: Duration,
}

/// Where the passphrase of an encrypted PKCS#8 key comes from (never the config itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passphrase {
    None,
    File(PathBuf),
    /// The name of an environment variable.
    Env(String),
}

/// Whether clients must present a certificate (Logstash's `ssl_client_authentication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Optional,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub data_dir: PathBuf,
    pub queue_batches: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

/// Every problem found in a configuration, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Settings {
    /// Reads `path` (or only defaults when `None`), applies `LUMBERD_*` variables from
    /// `env`, and validates. Collects every problem instead of stopping at the first.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut problems = Vec::new();
        let mut text = None;
        let mut table = match path {
            None => toml::Table::new(),
            Some(path) => match std::fs::read_to_string(path) {
                Err(e) => {
                    return Err(ConfigError {
                        problems: vec![format!("{}: cannot read: {e}", path.display())],
                    })
                }
                Ok(contents) => match contents.parse::<toml::Table>() {
                    Ok(t) => {
                        text = Some(contents);
                        t
                    }
                    Err(e) => {
                        return Err(ConfigError {
                            problems: vec![format!("{}: {}", path.display(), one_line(&e))],
                        })
                    }
                },
            },
        };
        apply_env(&mut table, env, &mut problems);
        for key in table.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                problems.push(format!(
                    "unknown section [{key}] (expected one of {SECTIONS:?})"
                ));
            }
        }
        let server: RawServer = section(&mut table, "server", &mut problems);
        let tls: RawTls = section(&mut table, "tls", &mut problems);
        let output: RawOutput = section(&mut table, "output", &mut problems);
        let log: RawLog = section(&mut table, "log", &mut problems);
        let tls = validate_tls(tls, &mut problems);
        let pipeline = pipeline::load(text.as_deref(), table.get("pipeline"), &mut problems);
        let settings =
            validate(server, output, log, pipeline, &mut problems).map(|s| Settings { tls, ..s });
        match settings {
            Some(s) if problems.is_empty() => Ok(s),
            _ => Err(ConfigError { problems }),
        }
    }
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `LUMBERD_<SECTION>_<KEY>=value`; the value is read as TOML (a number, a boolean, an
/// array like `["a", "b"]`) when it parses as one, as a string otherwise.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<String>,
) {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("LUMBERD_") else {
            continue;
        };
        if rest == "CONFIG" {
            continue; // the --config flag's own variable
        }
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = lower.split_once('_') else {
            problems.push(format!("{name}: expected LUMBERD_<SECTION>_<KEY>"));
            continue;
        };
        if !SECTIONS.contains(&section) {
            problems.push(format!("{name}: unknown section `{section}`"));
            continue;
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(|v| v.is_integer() || v.is_bool() || v.is_float() || v.is_array())
            .unwrap_or(toml::Value::String(value));
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry.as_table_mut() {
            Some(t) => {
                t.insert(key.to_string(), parsed);
            }
            None => problems.push(format!("{name}: [{section}] is not a table in the file")),
        }
    }
}

fn section<T: Default + serde::de::DeserializeOwned>(
    table: &mut toml::Table,
    name: &str,
    problems: &mut Vec<String>,
) -> T {
    let Some(mut value) = table.remove(name) else {
        return T::default();
    };
    // serde stops at the first error; unknown keys are removed and reported one by one so
    // the rest of the section is still checked.
    loop {
        match value.clone().try_into::<T>() {
            Ok(v) => return v,
            Err(e) => {
                let message = one_line(&e);
                let unknown = message
                    .strip_prefix("unknown field `")
                    .and_then(|rest| rest.split('`').next())
                    .map(str::to_owned);
                let removed = match (&unknown, value.as_table_mut()) {
                    (Some(key), Some(t)) => t.remove(key).is_some(),
                    _ => false,
                };
                match unknown {
                    Some(key) if removed => {
                        problems.push(format!("{name}.{key}: unknown key ({message})"));
                    }
                    _ => {
                        problems.push(format!("[{name}]: {message}"));
                        return T::default();
                    }
                }
            }
        }
    }
}

fn duration(key: &str, value: &str, problems: &mut Vec<String>) -> Duration {
    match humantime::parse_duration(value) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            problems.push(format!("{key}: must be greater than 0"));
            Duration::from_secs(1)
        }
        Err(e) => {
            problems.push(format!(
                "{key}: `{value}` is not a duration like \"5s\" ({e})"
            ));
            Duration::from_secs(1)
        }
    }
}

fn validate_tls(t: RawTls, problems: &mut Vec<String>) -> Option<TlsSettings> {
    if !t.enabled {
        return None;
    }
    let handshake_timeout = duration("tls.handshake_timeout", &t.handshake_timeout, problems);
    let reload_interval = duration("tls.reload_interval", &t.reload_interval, problems);
    let client_auth = match t.client_auth.as_str() {
        "none" => ClientAuth::None,
        "optional" => ClientAuth::Optional,
        "required" => ClientAuth::Required,
        other => {
            problems.push(format!(
                "tls.client_auth: `{other}` is not one of none, optional, required"
            ));
            ClientAuth::None
        }
    };
    let min_version = match &t.min_version {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let min_version = match min_version.as_str() {
        "1.2" | "TLSv1.2" => TlsVersion::Tls12,
        "1.3" | "TLSv1.3" => TlsVersion::Tls13,
        other => {
            problems.push(format!(
                "tls.min_version: `{other}` is not 1.2 or 1.3 (older versions are not offered)"
            ));
            TlsVersion::Tls12
        }
    };
    let key_passphrase = match (t.key_passphrase_file, t.key_passphrase_env) {
        (Some(_), Some(_)) => {
            problems.push(
                "tls.key_passphrase_file and tls.key_passphrase_env: set at most one".to_string(),
            );
            Passphrase::None
        }
        (Some(path), None) => Passphrase::File(path),
        (None, Some(var)) if var.is_empty() => {
            problems.push("tls.key_passphrase_env: the variable name is empty".to_string());
            Passphrase::None
        }
        (None, Some(var)) => Passphrase::Env(var),
        (None, None) => Passphrase::None,
    };
    let client_ca = t.client_ca.into_vec();
    let allowed_clients = t.allowed_clients.into_vec();
    if client_auth == ClientAuth::None && !client_ca.is_empty() {
        problems.push(
            "tls.client_ca: set, but client_auth = \"none\" never asks for a client certificate \
             (set client_auth to optional or required)"
                .to_string(),
        );
    }
    if client_auth != ClientAuth::None && client_ca.is_empty() {
        problems.push(format!(
            "tls.client_ca: client_auth = \"{}\" needs at least one CA file to verify clients against",
            t.client_auth
        ));
    }
    if !allowed_clients.is_empty() && client_auth != ClientAuth::Required {
        problems.push(
            "tls.allowed_clients: needs client_auth = \"required\" (a client without a \
             certificate could not be checked against the list)"
                .to_string(),
        );
    }
    if allowed_clients.iter().any(|a| a.trim().is_empty()) {
        problems.push("tls.allowed_clients: an entry is empty".to_string());
    }
    let certificate = t.certificate.unwrap_or_else(|| {
        problems.push("tls.certificate: required when tls.enabled = true".to_string());
        PathBuf::new()
    });
    let key = t.key.unwrap_or_else(|| {
        problems.push("tls.key: required when tls.enabled = true".to_string());
        PathBuf::new()
    });
    Some(TlsSettings {
        certificate,
        key,
        key_passphrase,
        client_auth,
        client_ca,
        allowed_clients,
        min_version,
        handshake_timeout,
        reload_interval,
    })
}

fn validate(
    s: RawServer,
    o: RawOutput,
    l: RawLog,
    pipeline: PipelineSettings,
    problems: &mut Vec<String>,
) -> Option<Settings> {
    let listen = match s.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(format!(
                "server.listen: `{}` is not an address like 0.0.0.0:5044",
                s.listen
            ));
            None
        }
    };
    let keepalive_interval = duration("server.keepalive_interval", &s.keepalive_interval, problems);
    let stall_timeout = duration("server.stall_timeout", &s.stall_timeout, problems);
    let idle_timeout = duration("server.idle_timeout", &s.idle_timeout, problems);
    let shutdown_grace = duration("server.shutdown_grace", &s.shutdown_grace, problems);
    if keepalive_interval >= Duration::from_secs(30) {
        problems
            .push("server.keepalive_interval: must be under Filebeat's 30 s timeout".to_string());
    }
    if stall_timeout <= keepalive_interval {
        problems.push("server.stall_timeout: must be longer than keepalive_interval".to_string());
    }
    for (key, v) in [
        ("server.max_connections", s.max_connections),
        ("server.max_pending_windows", s.max_pending_windows),
        ("server.batch_events", s.batch_events),
        ("output.queue_batches", o.queue_batches),
    ] {
        if v == 0 {
            problems.push(format!("{key}: must be at least 1"));
        }
    }
    if s.max_window_events == 0 {
        problems.push("server.max_window_events: must be at least 1".to_string());
    }
    if s.max_frame_bytes < 1024 || s.max_frame_bytes > u64::from(u32::MAX) {
        problems.push(format!(
            "server.max_frame_bytes: {} is outside 1024..={} (the wire length is a u32)",
            s.max_frame_bytes,
            u32::MAX
        ));
    }
    if s.max_inflated_bytes == 0 {
        problems.push("server.max_inflated_bytes: must be at least 1".to_string());
    }
    // One frame's bytes are reserved before they are read and again as an event; the
    // budget must allow both or a maximal frame could never be admitted.
    if s.max_inflight_bytes < 2 * s.max_frame_bytes {
        problems.push(format!(
            "server.max_inflight_bytes: {} must be at least twice max_frame_bytes ({})",
            s.max_inflight_bytes, s.max_frame_bytes
        ));
    }
    if s.max_inflight_bytes > (u32::MAX as u64) {
        problems.push("server.max_inflight_bytes: at most 4 GiB".to_string());
    }
    let format = match l.format.as_str() {
        "auto" => LogFormat::Auto,
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            problems.push(format!(
                "log.format: `{other}` is not one of auto, text, json"
            ));
            LogFormat::Auto
        }
    };
    if tracing_subscriber::EnvFilter::try_new(&l.level).is_err() {
        problems.push(format!(
            "log.level: `{}` is not a level or filter like \"info\"",
            l.level
        ));
    }
    Some(Settings {
        server: ServerSettings {
            listen: listen?,
            max_connections: s.max_connections,
            keepalive_interval,
            stall_timeout,
            idle_timeout,
            limits: Limits {
                max_frame_bytes: s.max_frame_bytes.min(u64::from(u32::MAX)) as u32,
                max_inflated_bytes: s.max_inflated_bytes,
                max_window_events: s.max_window_events,
            },
            max_inflight_bytes: s.max_inflight_bytes,
            max_pending_windows: s.max_pending_windows,
            batch_events: s.batch_events,
            shutdown_grace,
        },
        tls: None,
        output: OutputSettings {
            data_dir: o.data_dir,
            queue_batches: o.queue_batches,
        },
        log: LogSettings {
            level: l.level,
            format,
        },
        pipeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_alone_are_valid_and_listen_on_the_beats_port() {
        let s = Settings::load(None, env(&[])).expect("defaults must validate");
        assert_eq!(s.server.listen.port(), 5044);
        assert_eq!(s.output.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn environment_overrides_section_keys_with_typed_values() {
        let s = Settings::load(
            None,
            env(&[
                ("LUMBERD_SERVER_LISTEN", "127.0.0.1:0"),
                ("LUMBERD_SERVER_MAX_CONNECTIONS", "7"),
                ("LUMBERD_OUTPUT_DATA_DIR", "/tmp/x"),
                ("LUMBERD_CONFIG", "ignored.toml"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:0");
        assert_eq!(s.server.max_connections, 7);
        assert_eq!(s.output.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn every_problem_is_listed_not_only_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"nowhere\"\nkeepalive_interval = \"soon\"\n[output]\nqueue_batches = 0\n[bogus]\n",
        )
        .unwrap();
        let err = Settings::load(Some(&path), env(&[("LUMBERD_SERVER_NOPE", "1")])).unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "server.listen",
            "keepalive_interval",
            "queue_batches",
            "[bogus]",
            "nope",
        ] {
            assert!(
                all.contains(needle),
                "expected a problem mentioning {needle}, got:\n{all}"
            );
        }
    }

    #[test]
    fn budget_smaller_than_two_frames_is_rejected() {
        let err = Settings::load(
            None,
            env(&[
                ("LUMBERD_SERVER_MAX_INFLIGHT_BYTES", "1000"),
                ("LUMBERD_SERVER_MAX_FRAME_BYTES", "4096"),
            ]),
        )
        .unwrap_err();
        assert!(
            err.problems
                .iter()
                .any(|p| p.contains("max_inflight_bytes")),
            "{err}"
        );
    }

    #[test]
    fn tls_section_from_environment_with_a_ca_list_and_required_client_auth() {
        let s = Settings::load(
            None,
            env(&[
                ("LUMBERD_TLS_ENABLED", "true"),
                ("LUMBERD_TLS_CERTIFICATE", "/etc/lumberd/tls.crt"),
                ("LUMBERD_TLS_KEY", "/etc/lumberd/tls.key"),
                ("LUMBERD_TLS_KEY_PASSPHRASE_ENV", "LUMBERD_KEY_PASS"),
                ("LUMBERD_TLS_CLIENT_AUTH", "required"),
                ("LUMBERD_TLS_CLIENT_CA", r#"["/etc/a.pem", "/etc/b.pem"]"#),
                (
                    "LUMBERD_TLS_ALLOWED_CLIENTS",
                    r#"["CN=fb,O=Acme", "fb.example"]"#,
                ),
                ("LUMBERD_TLS_MIN_VERSION", "1.3"),
            ]),
        )
        .unwrap();
        let tls = s.tls.expect("tls enabled");
        assert_eq!(tls.certificate, PathBuf::from("/etc/lumberd/tls.crt"));
        assert_eq!(
            tls.key_passphrase,
            Passphrase::Env("LUMBERD_KEY_PASS".into())
        );
        assert_eq!(tls.client_auth, ClientAuth::Required);
        assert_eq!(tls.client_ca.len(), 2);
        assert_eq!(tls.allowed_clients, vec!["CN=fb,O=Acme", "fb.example"]);
        assert_eq!(tls.min_version, TlsVersion::Tls13);
    }

    #[test]
    fn tls_disabled_ignores_the_other_tls_keys() {
        let s = Settings::load(None, env(&[("LUMBERD_TLS_CLIENT_AUTH", "bogus")])).unwrap();
        assert!(s.tls.is_none());
    }

    #[test]
    fn tls_shape_problems_are_each_listed() {
        let err = Settings::load(
            None,
            env(&[
                ("LUMBERD_TLS_ENABLED", "true"),
                ("LUMBERD_TLS_CLIENT_AUTH", "optional"),
                ("LUMBERD_TLS_ALLOWED_CLIENTS", "fb.example"),
                ("LUMBERD_TLS_MIN_VERSION", "1.1"),
                ("LUMBERD_TLS_KEY_PASSPHRASE_FILE", "/p"),
                ("LUMBERD_TLS_KEY_PASSPHRASE_ENV", "P"),
            ]),
        )
        .unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "tls.certificate: required",
            "tls.key: required",
            "tls.client_ca",
            "tls.allowed_clients: needs client_auth",
            "tls.min_version",
            "set at most one",
        ] {
            assert!(all.contains(needle), "expected {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn documented_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lumberd.toml");
        Settings::load(Some(&path), env(&[])).expect("config/lumberd.toml must validate");
    }

    #[test]
    fn documented_pipeline_is_the_built_in_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lumberd.toml");
        let documented = Settings::load(Some(&path), env(&[])).unwrap().pipeline;
        let built_in = Settings::load(None, env(&[])).unwrap().pipeline;
        assert_eq!(format!("{documented:?}"), format!("{built_in:?}"));
    }
}
