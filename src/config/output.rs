//! `[output]`: the queue, the embedded file output and the Elasticsearch bulk output,
//! into [`OutputSettings`] (with [`FileSettings`] and, when hosts are listed,
//! [`EsSettings`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;
use super::raw::{duration, Strings};
use crate::output::elasticsearch::settings::{EsAuth, EsSettings, TemplateSettings};
use crate::output::file::{self, FileSettings};
use crate::output::DeadLetterIndex;
use crate::record::MAX_INDEX_NAME_BYTES;

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
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Bulk requests in flight at once: Logstash runs one per pipeline worker (= cores); more
/// only queues in Elasticsearch's write thread pool and earns 429s.
pub const DEFAULT_MAX_REQUESTS_IN_FLIGHT: usize = 4;
/// A request taking longer than this is treated as a connection failure and retried on
/// the next host: a 20 MiB bulk on a busy node takes seconds, not minutes; and above
/// Elasticsearch's own 1 minute wait for an unavailable shard, so a red index answers
/// its items with 503 (retried on the same connection) before lumberd gives up.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(90);
/// First retry delay after a 429, a 5xx or a connection error; doubled on each further
/// failure, with jitter.
pub const DEFAULT_RETRY_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Retry delays stop growing here, so a restarted Elasticsearch is used within seconds
/// (Logstash's `retry_max_interval` is 64 s; keep-alives hold Filebeat meanwhile).
pub const DEFAULT_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long `serve` waits for Elasticsearch to answer before binding the Beats port;
/// past it lumberd exits non-zero so a supervisor restarts it.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Uncompressed bodies: gzip costs lumberd CPU on every request to save bandwidth that a
/// cluster on the same network rarely lacks.
pub const DEFAULT_GZIP: bool = false;
/// Dead letters (payloads that are not events, events routed to an invalid index, items
/// Elasticsearch rejected) go to `<prefix>YYYY.MM.dd` in both outputs: under the seed's
/// `qwen-logs-*` pattern, so Kibana's data view and the retention policy reach them.
pub const DEFAULT_DEAD_LETTER_PREFIX: &str = "qwen-logs-deadletter-";
/// The seed deployment's dashboards read explicit types (`level`, `status` as keywords,
/// the counts as integers) that dynamic mapping would not give.
pub const DEFAULT_TEMPLATE: bool = true;
/// The seed deployment's index name and pattern; the template gives them explicit
/// mappings.
pub const DEFAULT_TEMPLATE_NAME: &str = "qwen-logs";
/// The indices `pipeline.index` writes by default (`qwen-logs-%{+yyyy.MM.dd}`).
pub const DEFAULT_TEMPLATE_PATTERN: &str = "qwen-logs-*";
/// Above Elasticsearch's built-in templates (priority 100) so ours wins for the pattern.
pub const DEFAULT_TEMPLATE_PRIORITY: u32 = 200;
/// One shard per daily index: a day of inference logs is far below a shard's ~50 GB.
pub const DEFAULT_TEMPLATE_SHARDS: u32 = 1;
/// One replica, Elasticsearch's default; 0 for a single-node cluster.
pub const DEFAULT_TEMPLATE_REPLICAS: u32 = 1;
/// Daily indices are deleted this long after creation where the cluster has ILM
/// (Elasticsearch) or ISM (OpenSearch).
pub const DEFAULT_ILM_DELETE_AFTER: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// The templates' version: replicas with the same version never overwrite each other's
/// templates; raise it to roll out a template change (see the README).
pub const DEFAULT_TEMPLATE_VERSION: u32 = 1;
/// The configured hosts are used as listed: behind a Kubernetes Service or a load
/// balancer the nodes' own addresses may not be reachable (Logstash and Beats default
/// to no sniffing too).
pub const DEFAULT_SNIFF: bool = false;
/// With sniffing on, a node that joins or leaves is seen within a minute, for one small
/// GET a minute.
pub const DEFAULT_SNIFF_INTERVAL: Duration = Duration::from_secs(60);

/// Elasticsearch refuses bodies over `http.max_content_length` (100 MB by default).
const ES_MAX_CONTENT_LENGTH: u64 = 100 * 1000 * 1000;

/// The `[output]` section: the queue both outputs read, and which output runs.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub queue_batches: usize,
    pub file: FileSettings,
    /// `Some` when `[output] elasticsearch` lists hosts: the bulk output replaces files.
    pub elasticsearch: Option<EsSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawOutput {
    data_dir: PathBuf,
    queue_batches: usize,
    /// A list, or one string of comma-separated hosts (what an environment variable holds).
    elasticsearch: Strings,
    sniff: bool,
    #[serde(deserialize_with = "duration")]
    sniff_interval: Duration,
    bulk_max_events: usize,
    bulk_max_bytes: u64,
    #[serde(deserialize_with = "duration")]
    flush_interval: Duration,
    max_requests_in_flight: usize,
    #[serde(deserialize_with = "duration")]
    request_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    retry_initial_backoff: Duration,
    #[serde(deserialize_with = "duration")]
    retry_max_backoff: Duration,
    #[serde(deserialize_with = "duration")]
    ready_timeout: Duration,
    gzip: bool,
    /// Credentials: none by default.
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
    template_version: u32,
    #[serde(deserialize_with = "duration")]
    ilm_delete_after: Duration,
}

impl Default for RawOutput {
    fn default() -> Self {
        RawOutput {
            data_dir: DEFAULT_DATA_DIR.into(),
            queue_batches: DEFAULT_QUEUE_BATCHES,
            elasticsearch: Strings::Many(
                DEFAULT_ELASTICSEARCH
                    .iter()
                    .map(|h| h.to_string())
                    .collect(),
            ),
            sniff: DEFAULT_SNIFF,
            sniff_interval: DEFAULT_SNIFF_INTERVAL,
            bulk_max_events: DEFAULT_BULK_MAX_EVENTS,
            bulk_max_bytes: DEFAULT_BULK_MAX_BYTES,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            max_requests_in_flight: DEFAULT_MAX_REQUESTS_IN_FLIGHT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_initial_backoff: DEFAULT_RETRY_INITIAL_BACKOFF,
            retry_max_backoff: DEFAULT_RETRY_MAX_BACKOFF,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            gzip: DEFAULT_GZIP,
            username: String::new(),
            password: String::new(),
            api_key: String::new(),
            ca_file: None,
            dead_letter_prefix: DEFAULT_DEAD_LETTER_PREFIX.into(),
            dead_letter_file: None,
            template: DEFAULT_TEMPLATE,
            template_name: DEFAULT_TEMPLATE_NAME.into(),
            template_pattern: DEFAULT_TEMPLATE_PATTERN.into(),
            template_priority: DEFAULT_TEMPLATE_PRIORITY,
            template_shards: DEFAULT_TEMPLATE_SHARDS,
            template_replicas: DEFAULT_TEMPLATE_REPLICAS,
            template_version: DEFAULT_TEMPLATE_VERSION,
            ilm_delete_after: DEFAULT_ILM_DELETE_AFTER,
        }
    }
}

pub(super) fn validate(o: RawOutput, p: &mut Problems) -> OutputSettings {
    p.at_least_one(&[("output.queue_batches", o.queue_batches as u64)]);
    if o.dead_letter_prefix.is_empty() {
        // Valid names (`2026.12.01`), but nothing says what they hold.
        p.key("output.dead_letter_prefix", "must not be empty");
    }
    let dead_letters = DeadLetterIndex::new(&o.dead_letter_prefix, file::MAX_INDEX_BYTES)
        .unwrap_or_else(|why| {
            p.key(
                "output.dead_letter_prefix",
                format!(
                    "`{}YYYY.MM.dd` is not a valid index name: it {why}",
                    o.dead_letter_prefix
                ),
            );
            DeadLetterIndex::new(DEFAULT_DEAD_LETTER_PREFIX, MAX_INDEX_NAME_BYTES)
                .expect("the default is valid")
        });
    OutputSettings {
        queue_batches: o.queue_batches,
        file: FileSettings {
            data_dir: o.data_dir.clone(),
            dead_letters: dead_letters.clone(),
        },
        elasticsearch: validate_es(o, dead_letters, p),
    }
}

impl OutputSettings {
    /// The longest index name the running output takes: Elasticsearch's, or less for
    /// the file output, whose file names add `.ndjson`.
    pub fn max_index_bytes(&self) -> usize {
        match self.elasticsearch {
            Some(_) => MAX_INDEX_NAME_BYTES,
            None => file::MAX_INDEX_BYTES,
        }
    }
}

/// `None` when no hosts are listed: the Elasticsearch keys are then not checked.
fn validate_es(
    o: RawOutput,
    dead_letters: DeadLetterIndex,
    p: &mut Problems,
) -> Option<EsSettings> {
    let hosts: Vec<String> = match o.elasticsearch {
        Strings::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(String::from)
            .collect(),
        other => other.into_vec(),
    };
    if hosts.is_empty() {
        return None;
    }
    for h in &hosts {
        match elasticsearch::http::Url::parse(h) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => p.key(
                "output.elasticsearch",
                format!("`{h}` is not a URL like http://127.0.0.1:9200"),
            ),
        }
    }
    p.at_least_one(&[
        ("output.bulk_max_events", o.bulk_max_events as u64),
        (
            "output.max_requests_in_flight",
            o.max_requests_in_flight as u64,
        ),
    ]);
    if o.bulk_max_bytes < 1024 || o.bulk_max_bytes > ES_MAX_CONTENT_LENGTH {
        p.key(
            "output.bulk_max_bytes",
            format!(
                "{} is outside 1024..={ES_MAX_CONTENT_LENGTH} (Elasticsearch's limit)",
                o.bulk_max_bytes
            ),
        );
    }
    let auth = match (o.username.is_empty(), o.api_key.is_empty()) {
        (true, true) => EsAuth::None,
        (false, true) => EsAuth::Basic {
            username: o.username,
            password: o.password,
        },
        (true, false) => EsAuth::ApiKey(o.api_key),
        (false, false) => {
            p.push("output.username and output.api_key: set one, not both");
            EsAuth::None
        }
    };
    if let Some(ca) = &o.ca_file {
        if let Err(e) = std::fs::metadata(ca) {
            p.key("output.ca_file", format!("{}: {e}", ca.display()));
        }
    }
    p.nonzero(&[
        ("output.flush_interval", o.flush_interval),
        ("output.request_timeout", o.request_timeout),
        ("output.retry_initial_backoff", o.retry_initial_backoff),
        ("output.retry_max_backoff", o.retry_max_backoff),
        ("output.ready_timeout", o.ready_timeout),
        ("output.ilm_delete_after", o.ilm_delete_after),
        ("output.sniff_interval", o.sniff_interval),
    ]);
    if o.retry_max_backoff < o.retry_initial_backoff {
        p.key(
            "output.retry_max_backoff",
            "must be at least retry_initial_backoff",
        );
    }
    if o.template && (o.template_name.is_empty() || !o.template_pattern.ends_with('*')) {
        p.push(
            "output.template_name/template_pattern: a name and a pattern ending in * are needed",
        );
    }
    let template = TemplateSettings {
        name: o.template_name,
        pattern: o.template_pattern,
        priority: o.template_priority,
        shards: o.template_shards.max(1),
        replicas: o.template_replicas,
        ilm_delete_after: o.ilm_delete_after,
        version: o.template_version,
    };
    Some(EsSettings {
        hosts,
        sniff_interval: o.sniff.then_some(o.sniff_interval),
        bulk_max_events: o.bulk_max_events,
        bulk_max_bytes: o.bulk_max_bytes,
        flush_interval: o.flush_interval,
        max_requests_in_flight: o.max_requests_in_flight,
        request_timeout: o.request_timeout,
        retry_initial_backoff: o.retry_initial_backoff,
        retry_max_backoff: o.retry_max_backoff,
        ready_timeout: o.ready_timeout,
        gzip: o.gzip,
        auth,
        ca_file: o.ca_file,
        dead_letters,
        // An empty value (e.g. from the environment) means "not set".
        dead_letter_file: o.dead_letter_file.filter(|p| !p.as_os_str().is_empty()),
        template: o.template.then_some(template),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::tests::env;
    use crate::config::Settings;

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
    fn the_dead_letter_prefix_must_make_valid_index_names_for_both_outputs() {
        for bad in ["", "Dead-", "dead/", "-dead", "dead letters-"] {
            let err = Settings::load(None, env(&[("LUMBERD_OUTPUT_DEAD_LETTER_PREFIX", bad)]))
                .expect_err(bad);
            let all = err.problems.join("\n");
            assert!(all.contains("output.dead_letter_prefix"), "{bad:?}: {all}");
        }
        let s = Settings::load(None, env(&[])).unwrap();
        assert_eq!(
            s.output.file.dead_letters.prefix(),
            DEFAULT_DEAD_LETTER_PREFIX
        );
        assert_eq!(s.pipeline.max_index_bytes, file::MAX_INDEX_BYTES);
        let hosts = [("LUMBERD_OUTPUT_ELASTICSEARCH", "http://127.0.0.1:9200")];
        let s = Settings::load(None, env(&hosts)).unwrap();
        assert_eq!(
            s.output.elasticsearch.unwrap().dead_letters,
            s.output.file.dead_letters
        );
        assert_eq!(s.pipeline.max_index_bytes, MAX_INDEX_NAME_BYTES);
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
}
