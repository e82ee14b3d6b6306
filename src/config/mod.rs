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

use crate::admin::AdminSettings;
use crate::output::elasticsearch::settings::{EsAuth, EsSettings, TemplateSettings};
use crate::output::file::FileSettings;
use crate::pipeline::PipelineSettings;
use crate::protocol::Limits;
use crate::server::settings::ServerSettings;
use crate::tls::settings::{ClientAuth, Passphrase, TlsSettings, TlsVersion};

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
// max_frame_bytes, max_inflated_bytes, max_window_events: `Limits::DEFAULT`, with their
// reasons, beside the decoder that enforces them.
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
/// No Elasticsearch hosts: the embedded file output is used.
pub const DEFAULT_ELASTICSEARCH: &[&str] = &[];
/// Documents per bulk request: two of Filebeat's 2048-event windows, so one request
/// usually carries whole windows.
pub const DEFAULT_BULK_MAX_EVENTS: usize = 4096;
/// Bytes per bulk request body: Logstash's `target_bulk_bytes` (20 MiB), far under
/// Elasticsearch's 100 MB `http.max_content_length`.
pub const DEFAULT_BULK_MAX_BYTES: u64 = 20 * 1024 * 1024;
/// A partial bulk is sent after this long: Logstash's `pipeline.batch.delay` (50 ms), so
/// a lone window is not held back waiting for a full request.
pub const DEFAULT_FLUSH_INTERVAL: &str = "50ms";
/// Bulk requests in flight at once: Logstash runs one per pipeline worker (= cores); more
/// only queues in Elasticsearch's write thread pool and earns 429s.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 4;
/// A request taking longer than this is treated as a connection failure and retried:
/// a 20 MiB bulk on a busy node takes seconds, not minutes.
pub const DEFAULT_REQUEST_TIMEOUT: &str = "60s";
/// First retry delay after a 429, a 5xx or a connection error; doubled on each further
/// failure, with jitter.
pub const DEFAULT_RETRY_INITIAL_BACKOFF: &str = "100ms";
/// Retry delays stop growing here, so a restarted Elasticsearch is used within seconds
/// (Logstash's `retry_max_interval` is 64 s; keep-alives hold Filebeat meanwhile).
pub const DEFAULT_RETRY_MAX_BACKOFF: &str = "10s";
/// How long `serve` waits for Elasticsearch to answer before binding the Beats port;
/// past it lumberd exits non-zero so a supervisor restarts it.
pub const DEFAULT_READY_TIMEOUT: &str = "5m";
/// Items rejected by Elasticsearch (400, 404, ...) go to `<prefix>YYYY.MM.dd`.
pub const DEFAULT_DEAD_LETTER_PREFIX: &str = "qwen-logs-deadletter-";
/// The seed deployment's index pattern; the template gives it explicit mappings.
pub const DEFAULT_TEMPLATE_NAME: &str = "qwen-logs";
pub const DEFAULT_TEMPLATE_PATTERN: &str = "qwen-logs-*";
/// Above Elasticsearch's built-in templates (priority 100) so ours wins for the pattern.
pub const DEFAULT_TEMPLATE_PRIORITY: u32 = 200;
/// One shard per daily index: a day of inference logs is far below a shard's ~50 GB.
pub const DEFAULT_TEMPLATE_SHARDS: u32 = 1;
/// One replica, Elasticsearch's default; 0 for a single-node cluster.
pub const DEFAULT_TEMPLATE_REPLICAS: u32 = 1;
/// Daily indices are deleted this long after creation where the cluster has ILM.
pub const DEFAULT_ILM_DELETE_AFTER: &str = "30d";
/// Time given to in-flight windows to be delivered and acknowledged after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: &str = "20s";
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// The same warning (a bad client, a failing output) is logged at most once per this
/// interval; the next line carries how many were suppressed in between.
pub const DEFAULT_LOG_REPEAT_INTERVAL: &str = "10s";
/// Prometheus metrics, /healthz and /readyz: Logstash's monitoring API port.
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9600";
/// Scrapers and probes served at once; a handful is the normal load.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 16;
/// A scraper or prober that has not sent its request headers by then is disconnected.
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: &str = "10s";
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

const SECTIONS: [&str; 6] = ["server", "tls", "output", "log", "admin", "pipeline"];

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
            max_frame_bytes: Limits::DEFAULT.max_frame_bytes.into(),
            max_inflated_bytes: Limits::DEFAULT.max_inflated_bytes,
            max_window_events: Limits::DEFAULT.max_window_events,
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
    elasticsearch: Hosts,
    bulk_max_events: usize,
    bulk_max_bytes: u64,
    flush_interval: String,
    max_requests_in_flight: usize,
    request_timeout: String,
    retry_initial_backoff: String,
    retry_max_backoff: String,
    ready_timeout: String,
    gzip: bool,
    username: String,
    password: String,
    api_key: String,
    ca_file: Option<PathBuf>,
    dead_letter_prefix: String,
    dead_letter_file: Option<PathBuf>,
    template: bool,
    template_name: String,
    template_pattern: String,
    template_priority: u32,
    template_shards: u32,
    template_replicas: u32,
    ilm_delete_after: String,
}

/// Hosts as a TOML array, or one string with commas (what an environment variable holds).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Hosts {
    List(Vec<String>),
    One(String),
}

impl Hosts {
    fn into_vec(self) -> Vec<String> {
        match self {
            Hosts::List(v) => v,
            Hosts::One(s) => s
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(String::from)
                .collect(),
        }
    }
}

impl Default for RawOutput {
    fn default() -> Self {
        RawOutput {
            data_dir: DEFAULT_DATA_DIR.into(),
            queue_batches: DEFAULT_QUEUE_BATCHES,
            elasticsearch: Hosts::List(
                DEFAULT_ELASTICSEARCH
                    .iter()
                    .map(|h| h.to_string())
                    .collect(),
            ),
            bulk_max_events: DEFAULT_BULK_MAX_EVENTS,
            bulk_max_bytes: DEFAULT_BULK_MAX_BYTES,
            flush_interval: DEFAULT_FLUSH_INTERVAL.into(),
            max_requests_in_flight: DEFAULT_MAX_REQUESTS_IN_FLIGHT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT.into(),
            retry_initial_backoff: DEFAULT_RETRY_INITIAL_BACKOFF.into(),
            retry_max_backoff: DEFAULT_RETRY_MAX_BACKOFF.into(),
            ready_timeout: DEFAULT_READY_TIMEOUT.into(),
            gzip: false,
            username: String::new(),
            password: String::new(),
            api_key: String::new(),
            ca_file: None,
            dead_letter_prefix: DEFAULT_DEAD_LETTER_PREFIX.into(),
            dead_letter_file: None,
            template: true,
            template_name: DEFAULT_TEMPLATE_NAME.into(),
            template_pattern: DEFAULT_TEMPLATE_PATTERN.into(),
            template_priority: DEFAULT_TEMPLATE_PRIORITY,
            template_shards: DEFAULT_TEMPLATE_SHARDS,
            template_replicas: DEFAULT_TEMPLATE_REPLICAS,
            ilm_delete_after: DEFAULT_ILM_DELETE_AFTER.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: String,
    format: String,
    repeat_interval: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: DEFAULT_LOG_LEVEL.into(),
            format: DEFAULT_LOG_FORMAT.into(),
            repeat_interval: DEFAULT_LOG_REPEAT_INTERVAL.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    listen: String,
    max_connections: usize,
    header_timeout: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: DEFAULT_ADMIN_LISTEN.into(),
            max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
            header_timeout: DEFAULT_ADMIN_HEADER_TIMEOUT.into(),
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
    pub admin: AdminSettings,
    pub pipeline: PipelineSettings,
}

/// The `[output]` section: the queue both outputs read, and which output runs.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub queue_batches: usize,
    pub file: FileSettings,
    /// `Some` when `[output] elasticsearch` lists hosts: the bulk output replaces files.
    pub elasticsearch: Option<EsSettings>,
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
    pub repeat_interval: Duration,
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
        let from_env = apply_env(&mut table, env, &mut problems);
        for key in table.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                problems.push(format!(
                    "unknown section [{key}] (expected one of {SECTIONS:?})"
                ));
            }
        }
        let server: RawServer = section(&mut table, "server", &from_env, &mut problems);
        let tls: RawTls = section(&mut table, "tls", &from_env, &mut problems);
        let output: RawOutput = section(&mut table, "output", &from_env, &mut problems);
        let log: RawLog = section(&mut table, "log", &from_env, &mut problems);
        let admin: RawAdmin = section(&mut table, "admin", &from_env, &mut problems);
        let tls = validate_tls(tls, &mut problems);
        let pipeline = pipeline::load(text.as_deref(), table.get("pipeline"), &mut problems);
        let settings = validate(server, output, log, admin, pipeline, &mut problems)
            .map(|s| Settings { tls, ..s });
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

/// The text of each key set from the environment, by `(section, key)`.
type EnvText = std::collections::HashMap<(String, String), String>;

/// `LUMBERD_<SECTION>_<KEY>=value`; the value is read as TOML (a number, a boolean, an
/// array like `["a", "b"]`) when it parses as one, as a string otherwise. Returns each
/// value's text, so that a string key given `12345` or `true` (a password) is still read
/// as the string it is (see [`section`]).
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<String>,
) -> EnvText {
    let mut text = EnvText::new();
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
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        text.insert((section.to_string(), key.to_string()), value);
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
    text
}

fn section<T: Default + serde::de::DeserializeOwned>(
    table: &mut toml::Table,
    name: &str,
    from_env: &EnvText,
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
                // A string key set from the environment to text that reads as a number
                // or a boolean: take the text as written.
                let key = message
                    .rsplit_once(" in `")
                    .map(|(_, k)| k.trim_end_matches('`').to_string());
                if let (true, Some(key), Some(t)) = (
                    message.contains("expected a string"),
                    key,
                    value.as_table_mut(),
                ) {
                    if let Some(text) = from_env.get(&(name.to_string(), key.clone())) {
                        if t.get(&key).is_some_and(|v| !v.is_str()) {
                            t.insert(key, toml::Value::String(text.clone()));
                            continue;
                        }
                    }
                }
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

fn validate_es(o: &RawOutput, problems: &mut Vec<String>) -> Option<EsSettings> {
    let hosts = match &o.elasticsearch {
        Hosts::List(v) => Hosts::List(v.clone()),
        Hosts::One(s) => Hosts::One(s.clone()),
    }
    .into_vec();
    if hosts.is_empty() {
        return None;
    }
    for h in &hosts {
        match elasticsearch::http::Url::parse(h) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => problems.push(format!(
                "output.elasticsearch: `{h}` is not a URL like http://127.0.0.1:9200"
            )),
        }
    }
    for (key, v) in [
        ("output.bulk_max_events", o.bulk_max_events),
        ("output.max_requests_in_flight", o.max_requests_in_flight),
    ] {
        if v == 0 {
            problems.push(format!("{key}: must be at least 1"));
        }
    }
    // Elasticsearch refuses bodies over http.max_content_length (100 MB by default).
    if o.bulk_max_bytes < 1024 || o.bulk_max_bytes > 100 * 1000 * 1000 {
        problems.push(format!(
            "output.bulk_max_bytes: {} is outside 1024..=100000000 (Elasticsearch's limit)",
            o.bulk_max_bytes
        ));
    }
    let auth = match (o.username.is_empty(), o.api_key.is_empty()) {
        (true, true) => EsAuth::None,
        (false, true) => EsAuth::Basic {
            username: o.username.clone(),
            password: o.password.clone(),
        },
        (true, false) => EsAuth::ApiKey(o.api_key.clone()),
        (false, false) => {
            problems.push("output.username and output.api_key: set one, not both".into());
            EsAuth::None
        }
    };
    if let Some(ca) = &o.ca_file {
        if let Err(e) = std::fs::metadata(ca) {
            problems.push(format!("output.ca_file: {}: {e}", ca.display()));
        }
    }
    let retry_initial_backoff = duration(
        "output.retry_initial_backoff",
        &o.retry_initial_backoff,
        problems,
    );
    let retry_max_backoff = duration("output.retry_max_backoff", &o.retry_max_backoff, problems);
    if retry_max_backoff < retry_initial_backoff {
        problems.push("output.retry_max_backoff: must be at least retry_initial_backoff".into());
    }
    let template = TemplateSettings {
        name: o.template_name.clone(),
        pattern: o.template_pattern.clone(),
        priority: o.template_priority,
        shards: o.template_shards.max(1),
        replicas: o.template_replicas,
        ilm_delete_after: duration("output.ilm_delete_after", &o.ilm_delete_after, problems),
    };
    if o.template && (template.name.is_empty() || !template.pattern.ends_with('*')) {
        problems.push(
            "output.template_name/template_pattern: a name and a pattern ending in * are needed"
                .into(),
        );
    }
    if o.dead_letter_prefix.is_empty() {
        problems.push("output.dead_letter_prefix: must not be empty".into());
    }
    Some(EsSettings {
        hosts,
        bulk_max_events: o.bulk_max_events,
        bulk_max_bytes: o.bulk_max_bytes,
        flush_interval: duration("output.flush_interval", &o.flush_interval, problems),
        max_requests_in_flight: o.max_requests_in_flight,
        request_timeout: duration("output.request_timeout", &o.request_timeout, problems),
        retry_initial_backoff,
        retry_max_backoff,
        ready_timeout: duration("output.ready_timeout", &o.ready_timeout, problems),
        gzip: o.gzip,
        auth,
        ca_file: o.ca_file.clone(),
        dead_letter_prefix: o.dead_letter_prefix.clone(),
        // An empty value (e.g. from the environment) means "not set".
        dead_letter_file: o
            .dead_letter_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty()),
        template: o.template.then_some(template),
    })
}

fn validate(
    s: RawServer,
    o: RawOutput,
    l: RawLog,
    a: RawAdmin,
    pipeline: PipelineSettings,
    problems: &mut Vec<String>,
) -> Option<Settings> {
    let admin_listen = match a.listen.as_str() {
        "" => Some(None),
        text => match text.parse::<SocketAddr>() {
            Ok(addr) => Some(Some(addr)),
            Err(_) => {
                problems.push(format!(
                    "admin.listen: `{text}` is not an address like 0.0.0.0:9600 (or \"\" for none)"
                ));
                None
            }
        },
    };
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
    let repeat_interval = duration("log.repeat_interval", &l.repeat_interval, problems);
    let header_timeout = duration("admin.header_timeout", &a.header_timeout, problems);
    if keepalive_interval >= Duration::from_secs(30) {
        problems
            .push("server.keepalive_interval: must be under Filebeat's 30 s timeout".to_string());
    }
    if stall_timeout <= keepalive_interval {
        problems.push("server.stall_timeout: must be longer than keepalive_interval".to_string());
    }
    let elasticsearch = validate_es(&o, problems);
    for (key, v) in [
        ("server.max_connections", s.max_connections),
        ("server.max_pending_windows", s.max_pending_windows),
        ("server.batch_events", s.batch_events),
        ("output.queue_batches", o.queue_batches),
        ("admin.max_connections", a.max_connections),
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
            queue_batches: o.queue_batches,
            file: FileSettings {
                data_dir: o.data_dir,
            },
            elasticsearch,
        },
        log: LogSettings {
            level: l.level,
            format,
            repeat_interval,
        },
        admin: AdminSettings {
            listen: admin_listen?,
            max_connections: a.max_connections,
            header_timeout,
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
        assert_eq!(s.output.file.data_dir, PathBuf::from("./data"));
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
        assert_eq!(s.output.file.data_dir, PathBuf::from("/tmp/x"));
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
    fn string_keys_from_the_environment_stay_strings_when_they_read_as_numbers_or_booleans() {
        let s = Settings::load(
            None,
            env(&[
                ("LUMBERD_OUTPUT_ELASTICSEARCH", "http://127.0.0.1:9200"),
                ("LUMBERD_OUTPUT_USERNAME", "1001"),
                ("LUMBERD_OUTPUT_PASSWORD", "true"),
            ]),
        )
        .unwrap();
        let es = s.output.elasticsearch.unwrap();
        assert!(
            matches!(&es.auth, EsAuth::Basic { username, password }
                if username == "1001" && password == "true"),
            "{:?}",
            es.auth
        );
        // A number where a number belongs is still a number, and a wrong type in a
        // file is still an error.
        let typed = Settings::load(None, env(&[("LUMBERD_SERVER_MAX_CONNECTIONS", "12")]));
        assert_eq!(typed.unwrap().server.max_connections, 12);
    }

    #[test]
    fn admin_port_defaults_to_9600_an_empty_listen_turns_it_off_and_a_bad_one_is_named() {
        let d = Settings::load(None, env(&[])).unwrap();
        assert_eq!(d.admin.listen, Some("0.0.0.0:9600".parse().unwrap()));
        assert_eq!(d.log.repeat_interval, Duration::from_secs(10));
        let off = Settings::load(None, env(&[("LUMBERD_ADMIN_LISTEN", "")])).unwrap();
        assert_eq!(off.admin.listen, None);
        let bad = Settings::load(
            None,
            env(&[
                ("LUMBERD_ADMIN_LISTEN", "port 9600"),
                ("LUMBERD_LOG_REPEAT_INTERVAL", "often"),
            ]),
        )
        .unwrap_err();
        assert!(
            bad.problems.iter().any(|p| p.starts_with("admin.listen:"))
                && bad
                    .problems
                    .iter()
                    .any(|p| p.starts_with("log.repeat_interval")),
            "{:?}",
            bad.problems
        );
    }

    #[test]
    fn documented_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lumberd.toml");
        Settings::load(Some(&path), env(&[])).expect("config/lumberd.toml must validate");
    }

    #[test]
    fn documented_elasticsearch_keys_validate_and_match_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lumberd.toml");
        let hosts = [("LUMBERD_OUTPUT_ELASTICSEARCH", "http://127.0.0.1:9200")];
        let documented = Settings::load(Some(&path), env(&hosts))
            .expect("config/lumberd.toml with a host must validate")
            .output
            .elasticsearch
            .expect("a host selects the Elasticsearch output");
        let built_in = Settings::load(None, env(&hosts))
            .unwrap()
            .output
            .elasticsearch
            .unwrap();
        assert_eq!(format!("{documented:?}"), format!("{built_in:?}"));
        assert_eq!(built_in.bulk_max_bytes, DEFAULT_BULK_MAX_BYTES);
        assert!(
            built_in.template.is_some(),
            "the template is installed by default"
        );
    }

    #[test]
    fn no_elasticsearch_hosts_keeps_the_file_output() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert!(s.output.elasticsearch.is_none());
        let s = Settings::load(None, env(&[("LUMBERD_OUTPUT_ELASTICSEARCH", "")])).unwrap();
        assert!(s.output.elasticsearch.is_none());
    }

    #[test]
    fn elasticsearch_hosts_from_the_environment_are_comma_separated() {
        let s = Settings::load(
            None,
            env(&[(
                "LUMBERD_OUTPUT_ELASTICSEARCH",
                "http://a:9200, https://b:9200",
            )]),
        )
        .unwrap();
        assert_eq!(
            s.output.elasticsearch.unwrap().hosts,
            ["http://a:9200", "https://b:9200"]
        );
    }

    #[test]
    fn elasticsearch_settings_are_checked() {
        let err = Settings::load(
            None,
            env(&[
                ("LUMBERD_OUTPUT_ELASTICSEARCH", "not a url"),
                ("LUMBERD_OUTPUT_USERNAME", "u"),
                ("LUMBERD_OUTPUT_API_KEY", "k"),
                ("LUMBERD_OUTPUT_BULK_MAX_BYTES", "200000000"),
                ("LUMBERD_OUTPUT_MAX_REQUESTS_IN_FLIGHT", "0"),
                ("LUMBERD_OUTPUT_RETRY_MAX_BACKOFF", "1ms"),
            ]),
        )
        .unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "output.elasticsearch",
            "api_key",
            "bulk_max_bytes",
            "max_requests_in_flight",
            "retry_max_backoff",
        ] {
            assert!(all.contains(needle), "expected {needle} in:\n{all}");
        }
    }

    #[test]
    fn documented_pipeline_is_the_built_in_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lumberd.toml");
        let documented = Settings::load(Some(&path), env(&[])).unwrap().pipeline;
        let built_in = Settings::load(None, env(&[])).unwrap().pipeline;
        assert_eq!(format!("{documented:?}"), format!("{built_in:?}"));
    }
}
