//! Before the first window: waiting until Elasticsearch answers, which engine it is
//! (Elasticsearch or OpenSearch), the index templates and, where the cluster has it, the
//! retention policy (ILM or ISM), installed so that many replicas agree. Knows nothing
//! of bulk items or the writer.

use std::time::{Duration, Instant};

use elasticsearch::http::Method;
use serde_json::{json, Value};

use super::settings::{EsSettings, TemplateSettings};
use super::transport::{Hosts, SendError, TransportError};
use super::Health;

/// Why the output could not start; `serve` exits with it before binding.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("Elasticsearch ({hosts}) did not answer within {waited:?} (output.ready_timeout); last: {last}")]
    NotReady {
        hosts: String,
        waited: Duration,
        last: Refusal,
    },
    #[error("installing {what}: {reason}")]
    Template { what: String, reason: Refusal },
}

/// Why a setup request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Answered, but not with 2xx (the start of the answer shown).
    #[error("HTTP {status} {body}")]
    Status { status: u16, body: String },
    #[error(transparent)]
    Unanswered(#[from] SendError),
}

impl Refusal {
    fn status(status: u16, body: &Value) -> Refusal {
        Refusal::Status {
            status,
            body: short(body),
        }
    }
}

/// A request to each host in turn (round robin) until one answers, so a dead host in the
/// list does not stop the start.
async fn call(
    hosts: &Hosts,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), SendError> {
    let nodes = hosts.nodes();
    let first = hosts.first(&nodes);
    let mut last = None;
    for i in 0..nodes.count() {
        match nodes
            .json((first + i) % nodes.count(), method, path, body)
            .await
        {
            Ok(answer) => return Ok(answer),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| SendError::Connection("no hosts".into())))
}

/// The longest pause between two readiness polls: a node coming up is used within
/// seconds, whatever `retry_max_backoff` says for bulk retries.
const READY_POLL_MAX: Duration = Duration::from_secs(2);

/// Polls until Elasticsearch answers 2xx (this distribution has no `GET /`, so the
/// cluster health), trying every host, or fails after `ready_timeout`.
pub async fn wait_ready(hosts: &Hosts, s: &EsSettings, health: &Health) -> Result<(), SetupError> {
    let started = Instant::now();
    let mut logged = false;
    let mut attempt = 0;
    loop {
        let nodes = hosts.nodes();
        let last = match nodes
            .json(hosts.first(&nodes), Method::Get, "/_cluster/health", None)
            .await
        {
            Ok((200..=299, _)) => {
                health.up();
                return Ok(());
            }
            Ok((status, body)) => Refusal::status(status, &body),
            Err(e) => Refusal::Unanswered(e),
        };
        if !logged {
            tracing::warn!(hosts = ?s.hosts, last = %last,
                "waiting for Elasticsearch before accepting Beats connections");
            logged = true;
        }
        if started.elapsed() >= s.ready_timeout {
            return Err(SetupError::NotReady {
                hosts: s.hosts.join(","),
                waited: s.ready_timeout,
                last,
            });
        }
        attempt += 1;
        let d = super::bulk::backoff(
            attempt,
            s.retry_initial_backoff,
            s.retry_max_backoff.min(READY_POLL_MAX),
            fastrand::u64(..),
        );
        tokio::time::sleep(d.min(s.ready_timeout.saturating_sub(started.elapsed()))).await;
    }
}

/// The start of a refusal's body, for its error message.
fn short(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(super::bulk::REFUSAL_BODY_BYTES).collect()
}

/// The ILM policy: delete an index `ilm_delete_after` after it was created. Daily names
/// cannot use the seed's rollover policy (nothing rolls over a `qwen-logs-2025.04.05`),
/// and `index.lifecycle.parse_origination_date` only reads names ending in `-DATE-NNNNNN`,
/// which daily names do not; so the age counts from index creation.
pub fn ilm_policy(t: &TemplateSettings) -> Value {
    json!({ "policy": { "phases": {
        "hot": { "min_age": "0ms", "actions": {} },
        "delete": { "min_age": format!("{}s", t.ilm_delete_after.as_secs()),
                    "actions": { "delete": {} } }
    }}})
}

/// The composable template for the event indices: explicit types for the fields the
/// seed deployment's dashboards read, the rest mapped dynamically.
pub fn event_template(t: &TemplateSettings, ilm: bool) -> Value {
    let mut settings = json!({
        "number_of_shards": t.shards,
        "number_of_replicas": t.replicas,
    });
    if ilm {
        settings["index.lifecycle.name"] = json!(t.name);
    }
    let keyword = json!({ "type": "keyword", "ignore_above": 1024 });
    json!({
        "index_patterns": [t.pattern],
        "priority": t.priority,
        "_meta": { "managed_by": "lumberd" },
        "template": {
            "settings": settings,
            "mappings": { "properties": {
                "@timestamp": { "type": "date" },
                // The service's own time as it wrote it. `@timestamp` is the parsed one;
                // a value the date filter could not read either (tagged
                // `_dateparsefailure`) must not cost the event, so it is kept in
                // `_source` but not indexed (`ignore_malformed`).
                "timestamp": { "type": "date", "ignore_malformed": true,
                               "format": "strict_date_optional_time||yyyy-MM-dd HH:mm:ss.SSS||epoch_millis" },
                "level": keyword,
                "status": keyword,
                "request_id": keyword,
                "prompt": { "type": "text",
                            "fields": { "keyword": { "type": "keyword", "ignore_above": 256 } } },
                "response_length": { "type": "integer" },
                "inference_time_ms": { "type": "integer" },
            }}
        }
    })
}

/// Shards of a dead-letter index: a day's dead letters are few and small.
const DEAD_LETTER_SHARDS: u32 = 1;

/// The dead-letter indices: the original event is stored, not indexed (it may be any
/// size and any shape), the error is searchable; deleted on the event indices' schedule
/// (the same ILM policy), since they hold the same data. A higher priority than the event
/// template, whose pattern (`qwen-logs-*`) also matches `qwen-logs-deadletter-*`.
pub fn dead_letter_template(t: &TemplateSettings, prefix: &str, ilm: bool) -> Value {
    let mut settings = json!({
        "number_of_shards": DEAD_LETTER_SHARDS,
        "number_of_replicas": t.replicas,
    });
    if ilm {
        settings["index.lifecycle.name"] = json!(t.name);
    }
    json!({
        "index_patterns": [format!("{prefix}*")],
        "priority": t.priority + 1,
        "_meta": { "managed_by": "lumberd" },
        "template": {
            "settings": settings,
            "mappings": { "dynamic": false, "properties": {
                "@timestamp": { "type": "date" },
                "original_index": { "type": "keyword" },
                "original_id": { "type": "keyword" },
                // Refused by Elasticsearch (bulk.rs: `Pending::dead_letter`).
                "error": { "properties": {
                    "status": { "type": "integer" },
                    "type": { "type": "keyword" },
                    "reason": { "type": "text" },
                }},
                // Refused by the pipeline (record.rs: `dead_letter_doc`): what was wrong
                // and who sent it, searchable; the bytes stored only.
                "reason": { "type": "text" },
                "error_kind": { "type": "keyword" },
                "peer": { "type": "keyword" },
                "payload": { "type": "keyword", "index": false, "doc_values": false },
                "payload_hex": { "type": "keyword", "index": false, "doc_values": false },
                "event": { "properties": {
                    "original": { "type": "keyword", "index": false, "doc_values": false },
                }},
            }}
        }
    })
}

/// The search engine behind the hosts, from `GET /`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Elasticsearch,
    OpenSearch,
}

/// How old indices are deleted: whatever the cluster has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Elasticsearch's ILM: a policy named in the template's `index.lifecycle.name`.
    Ilm,
    /// OpenSearch's ISM plugin: a policy whose `ism_template` claims new indices.
    Ism,
    None,
}

/// `GET /` names the distribution (`version.distribution: opensearch`); Elasticsearch
/// does not, and its integ-test build has no `GET /` at all (405), so anything but an
/// OpenSearch answer means Elasticsearch.
pub fn engine_of(status: u16, root: &Value) -> Engine {
    if status == 200 && root["version"]["distribution"] == "opensearch" {
        Engine::OpenSearch
    } else {
        Engine::Elasticsearch
    }
}

/// Whether an answer says the cluster has no such endpoint at all ("no handler found for
/// uri", 400 or 405), as opposed to an answer from the endpoint (such as 404 for a
/// policy that does not exist yet).
fn no_handler(status: u16, body: &Value) -> bool {
    matches!(status, 400 | 404 | 405)
        && body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no handler found") || e.contains("Incorrect HTTP method"))
}

/// The ISM policy: the same retention as the ILM one (delete `ilm_delete_after` after
/// creation), and an `ism_template` so that ISM attaches it to each new index of the
/// pattern (OpenSearch has no index setting naming a policy any more).
pub fn ism_policy(t: &TemplateSettings) -> Value {
    json!({ "policy": {
        "description": format!("managed by lumberd (template_version {})", t.version),
        "default_state": "hot",
        "states": [
            { "name": "hot", "actions": [],
              "transitions": [{ "state_name": "delete",
                                "conditions": { "min_index_age": format!("{}s", t.ilm_delete_after.as_secs()) } }] },
            { "name": "delete", "actions": [{ "delete": {} }], "transitions": [] }
        ],
        "ism_template": [{ "index_patterns": [t.pattern], "priority": t.priority }]
    }})
}

/// The layout of lumberd's own templates (`_meta.revision`), raised with every change to
/// what [`event_template`] or [`dead_letter_template`] write for the same settings. A
/// user's `template_version` says which configuration wins; this says which lumberd
/// wrote it, so an upgrade replaces what an older lumberd installed under the same
/// `template_version` instead of keeping it as another replica's configuration. 1: the
/// dead-letter template maps the pipeline's `reason`, `error_kind` and `peer`; templates
/// without a revision are 0.
pub const TEMPLATE_REVISION: u64 = 1;

/// What the cluster holds under a template's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    Absent,
    /// Its `version` (none: not versioned, e.g. made by hand), lumberd's digest of it
    /// and the [`TEMPLATE_REVISION`] of the lumberd that wrote it (0 when none).
    Present {
        version: Option<u64>,
        digest: Option<String>,
        revision: u64,
    },
}

/// What a replica does with a template, given what the cluster holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// None there: create it, failing if another replica just did.
    Create,
    /// An older version (or an unversioned one): replace it.
    Replace,
    /// This very template: nothing to write.
    Keep,
    /// A newer version: another replica's (a rollout under way); leave it.
    KeepNewer(u64),
    /// The same version with other contents: two configurations claim one version;
    /// the first installed stays (until the version is raised).
    KeepConflicting,
    /// The same version written by a newer lumberd (a higher revision: an upgrade under
    /// way); leave it.
    KeepNewerRevision(u64),
}

/// The rule that keeps replicas from flipping each other's templates: write only over
/// nothing or a lower version, or, under the same version with other contents, over
/// what a lower [`TEMPLATE_REVISION`] (an older lumberd) wrote. Replicas of one version
/// and one lumberd never overwrite each other, whatever order they start in; in a
/// rollout the higher version wins, and in an upgrade the newer lumberd (an older one
/// finds a digest it does not make and leaves it).
pub fn decide(installed: &Installed, version: u64, revision: u64, digest: &str) -> Decision {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match installed {
        Installed::Absent => Decision::Create,
        Installed::Present { version: None, .. } => Decision::Replace,
        Installed::Present {
            version: Some(v),
            digest: d,
            revision: r,
        } => match ((*v).cmp(&version), (*r).cmp(&revision)) {
            (Less, _) => Decision::Replace,
            (Greater, _) => Decision::KeepNewer(*v),
            (Equal, _) if d.as_deref() == Some(digest) => Decision::Keep,
            (Equal, Less) => Decision::Replace,
            (Equal, Greater) => Decision::KeepNewerRevision(*r),
            (Equal, Equal) => Decision::KeepConflicting,
        },
    }
}

/// `body` with `version` and, in `_meta`, a digest of the rest: the cluster stores a
/// template normalised (settings as strings, nested), so the digest is what tells two
/// configurations of one version apart.
pub fn versioned(mut body: Value, version: u32) -> (Value, String) {
    body["version"] = json!(version);
    body["_meta"]["revision"] = json!(TEMPLATE_REVISION);
    let digest = format!(
        "{:032x}",
        twox_hash::XxHash3_128::oneshot(body.to_string().as_bytes())
    );
    body["_meta"]["digest"] = json!(digest);
    (body, digest)
}

fn installed_of(status: u16, answer: &Value) -> Option<Installed> {
    match status {
        404 => Some(Installed::Absent),
        200 => {
            let t = &answer["index_templates"][0]["index_template"];
            Some(Installed::Present {
                version: t["version"].as_u64(),
                digest: t["_meta"]["digest"].as_str().map(String::from),
                revision: t["_meta"]["revision"].as_u64().unwrap_or(0),
            })
        }
        _ => None,
    }
}

/// Installs the templates and, where the cluster has ILM or ISM, the retention policy.
/// Every replica runs this at start; see [`decide`] for why they agree. Without ILM or
/// ISM (this repo's test distributions) it warns once and carries on.
pub async fn install(hosts: &Hosts, s: &EsSettings) -> Result<(Engine, Retention), SetupError> {
    let (status, root) = call(hosts, Method::Get, "/", None)
        .await
        .map_err(|e| fail("GET /", e.into()))?;
    let engine = engine_of(status, &root);
    let Some(tpl) = &s.template else {
        return Ok((engine, Retention::None));
    };
    let retention = retention(hosts, engine, tpl).await?;
    let events = event_template(tpl, retention == Retention::Ilm);
    let installed = put_template(hosts, &tpl.name, events, tpl.version).await?;
    if installed {
        match retention {
            Retention::Ilm => {
                let path = format!("/_ilm/policy/{}", tpl.name);
                expect_2xx(
                    &path,
                    call(hosts, Method::Put, &path, Some(&ilm_policy(tpl))).await,
                )?;
            }
            Retention::Ism => put_ism_policy(hosts, tpl).await?,
            Retention::None => {}
        }
    }
    put_template(
        hosts,
        &format!("{}-deadletter", tpl.name),
        dead_letter_template(tpl, s.dead_letters.prefix(), retention == Retention::Ilm),
        tpl.version,
    )
    .await?;
    Ok((engine, retention))
}

fn fail(what: &str, reason: Refusal) -> SetupError {
    SetupError::Template {
        what: what.to_string(),
        reason,
    }
}

fn expect_2xx(what: &str, answer: Result<(u16, Value), SendError>) -> Result<Value, SetupError> {
    match answer {
        Ok((200..=299, body)) => Ok(body),
        Ok((status, body)) => Err(fail(what, Refusal::status(status, &body))),
        Err(e) => Err(fail(what, e.into())),
    }
}

/// ILM on Elasticsearch (`GET /_ilm/status`), ISM on OpenSearch (its policy endpoint
/// answers, if only 404), else none, with a warning.
async fn retention(
    hosts: &Hosts,
    engine: Engine,
    tpl: &TemplateSettings,
) -> Result<Retention, SetupError> {
    let (path, kind) = match engine {
        Engine::Elasticsearch => ("/_ilm/status".to_string(), Retention::Ilm),
        Engine::OpenSearch => (
            format!("/_plugins/_ism/policies/{}", tpl.name),
            Retention::Ism,
        ),
    };
    let (status, body) = call(hosts, Method::Get, &path, None)
        .await
        .map_err(|e| fail(&path, e.into()))?;
    if status == 200 || (kind == Retention::Ism && status == 404 && !no_handler(status, &body)) {
        return Ok(kind);
    }
    let what = match engine {
        Engine::Elasticsearch => "Elasticsearch has no ILM",
        Engine::OpenSearch => "OpenSearch has no ISM plugin",
    };
    tracing::warn!(
        status,
        path = %path,
        "{what} ({path} answered {status}); indices are not deleted automatically, \
         output.ilm_delete_after is not applied"
    );
    Ok(Retention::None)
}

/// Writes template `name` when [`decide`] says so; `true` when this replica wrote it.
async fn put_template(
    hosts: &Hosts,
    name: &str,
    body: Value,
    version: u32,
) -> Result<bool, SetupError> {
    let (body, digest) = versioned(body, version);
    let path = format!("/_index_template/{name}");
    // Twice at most: a replica that loses the race to create reads the winner's.
    for _ in 0..2 {
        let answer = call(hosts, Method::Get, &path, None)
            .await
            .map_err(|e| fail(&path, e.into()))?;
        let installed = installed_of(answer.0, &answer.1)
            .ok_or_else(|| fail(&path, Refusal::status(answer.0, &answer.1)))?;
        let put = match decide(&installed, version.into(), TEMPLATE_REVISION, &digest) {
            Decision::Create => format!("{path}?create=true"),
            Decision::Replace => path.clone(),
            Decision::Keep => {
                tracing::info!(template = %name, version, "index template already installed");
                return Ok(false);
            }
            Decision::KeepNewer(theirs) => {
                tracing::warn!(template = %name, version, installed = theirs,
                    "the cluster holds a newer version of this index template (a rollout \
                     under way?); leaving it");
                return Ok(false);
            }
            Decision::KeepNewerRevision(theirs) => {
                tracing::warn!(template = %name, version, revision = TEMPLATE_REVISION,
                    installed_revision = theirs,
                    "the cluster holds this index template as a newer lumberd writes it (an \
                     upgrade under way?); leaving it");
                return Ok(false);
            }
            Decision::KeepConflicting => {
                tracing::warn!(template = %name, version,
                    "the cluster holds other contents under this template_version (another \
                     replica's configuration); leaving it: raise output.template_version to \
                     roll out a template change");
                return Ok(false);
            }
        };
        match call(hosts, Method::Put, &put, Some(&body)).await {
            Ok((200..=299, _)) => {
                tracing::info!(template = %name, version, "index template installed");
                return Ok(true);
            }
            // Another replica created it between our read and our write.
            Ok((400, b)) if b.to_string().contains("already exists") => continue,
            other => return expect_2xx(&put, other).map(|_| true),
        }
    }
    Err(fail(
        &path,
        Refusal::Status {
            status: 400,
            body: "created and removed by others while installing".into(),
        },
    ))
}

/// Creates the ISM policy, or updates it with the sequence number read (ISM refuses an
/// update without one, and a concurrent update then fails instead of being lost).
async fn put_ism_policy(hosts: &Hosts, tpl: &TemplateSettings) -> Result<(), SetupError> {
    let path = format!("/_plugins/_ism/policies/{}", tpl.name);
    let (status, current) = call(hosts, Method::Get, &path, None)
        .await
        .map_err(|e| fail(&path, e.into()))?;
    let put = match (
        status,
        current["_seq_no"].as_u64(),
        current["_primary_term"].as_u64(),
    ) {
        (200, Some(seq), Some(term)) => format!("{path}?if_seq_no={seq}&if_primary_term={term}"),
        (404, _, _) => path.clone(),
        _ => return Err(fail(&path, Refusal::status(status, &current))),
    };
    match call(hosts, Method::Put, &put, Some(&ism_policy(tpl))).await {
        // Another replica wrote it between our read and our write: theirs stands.
        Ok((409, _)) => {
            tracing::info!(policy = %tpl.name, "ISM policy written by another replica meanwhile");
            Ok(())
        }
        other => expect_2xx(&put, other).map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::elasticsearch::settings::EsAuth;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Settings for one host; only the transport and readiness keys matter here.
    fn settings(url: String, auth: EsAuth) -> EsSettings {
        EsSettings {
            hosts: vec![url],
            sniff_interval: None,
            bulk_max_events: 1,
            bulk_max_bytes: 1024,
            flush_interval: Duration::from_millis(1),
            max_requests_in_flight: 1,
            request_timeout: Duration::from_secs(60),
            retry_initial_backoff: Duration::from_millis(1),
            retry_max_backoff: Duration::from_millis(1),
            ready_timeout: Duration::from_secs(60),
            gzip: false,
            auth,
            ca_file: None,
            dead_letters: crate::output::DeadLetterIndex::new("dead-", 255).unwrap(),
            dead_letter_file: None,
            template: None,
        }
    }

    /// The request head lumberd's readiness probe sends, answered 200.
    async fn probe_head(auth: EsAuth) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.unwrap();
                assert!(n > 0, "request ended early");
                head.extend_from_slice(&buf[..n]);
            }
            sock.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            )
            .await
            .unwrap();
            String::from_utf8_lossy(&head).to_ascii_lowercase()
        });
        let s = settings(url, auth);
        let hosts = Hosts::new(&s).unwrap();
        let health = Health::new(prometheus::IntGauge::new("up", "up").unwrap());
        wait_ready(&hosts, &s, &health).await.unwrap();
        assert!(health.is_up());
        server.await.unwrap()
    }

    #[tokio::test]
    async fn api_key_is_sent_as_an_apikey_authorization_header() {
        let head = probe_head(EsAuth::ApiKey("aWQ6a2V5".into())).await;
        assert!(head.starts_with("get /_cluster/health "), "{head}");
        assert!(
            head.contains("authorization: apikey awq6a2v5\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn basic_auth_is_sent_as_a_basic_authorization_header() {
        let head = probe_head(EsAuth::Basic {
            username: "u".into(),
            password: "p".into(),
        })
        .await;
        // base64("u:p") = dTpw
        assert!(head.contains("authorization: basic dtpw\r\n"), "{head}");
    }

    #[test]
    fn dead_letters_are_deleted_on_the_event_indices_schedule() {
        let t = template(1);
        let events = event_template(&t, true);
        let letters = dead_letter_template(&t, "qwen-logs-deadletter-", true);
        let policy = |v: &Value| v["template"]["settings"]["index.lifecycle.name"].clone();
        assert_eq!(policy(&events), json!("qwen-logs"));
        assert_eq!(
            policy(&letters),
            policy(&events),
            "the dead-letter indices must have the event indices' retention: {letters}"
        );
        assert_eq!(letters["index_patterns"], json!(["qwen-logs-deadletter-*"]));
        assert!(letters["priority"].as_u64() > events["priority"].as_u64());
        // Without ILM neither names a policy the cluster does not have.
        let no_ilm = dead_letter_template(&t, "qwen-logs-deadletter-", false);
        assert_eq!(policy(&no_ilm), Value::Null);
    }

    #[test]
    fn an_unreadable_ca_file_is_a_setup_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let mut s = settings("https://127.0.0.1:9200".into(), EsAuth::None);
        s.ca_file = Some(path);
        assert!(matches!(
            Hosts::new(&s).map_err(SetupError::from),
            Err(SetupError::Transport(TransportError::CaFile { .. }))
        ));
    }

    // ---- engine, retention and the templates' versions ----

    /// A real answer from `answers/` (status line, then body), as `(status, JSON)`.
    macro_rules! recorded {
        ($file:literal) => {{
            let text = include_str!(concat!("answers/", $file));
            let (status, body) = text.split_once('\n').expect("status line");
            (
                status.parse::<u16>().expect("a status"),
                serde_json::from_str::<Value>(body).expect("a JSON body"),
            )
        }};
    }

    #[test]
    fn the_engine_is_opensearch_only_when_the_root_answer_says_so() {
        let (status, root) = recorded!("setup-opensearch-root.json");
        assert_eq!(engine_of(status, &root), Engine::OpenSearch);
        // Elasticsearch's integ-test build has no GET / at all.
        let (status, root) = recorded!("setup-elasticsearch-root.json");
        assert_eq!(engine_of(status, &root), Engine::Elasticsearch);
        let es = json!({"version": {"number": "8.11.3", "build_flavor": "default"}});
        assert_eq!(engine_of(200, &es), Engine::Elasticsearch);
    }

    #[test]
    fn a_missing_ism_plugin_is_told_from_a_missing_policy() {
        let (status, body) = recorded!("setup-opensearch-ism-policy.json");
        assert!(no_handler(status, &body), "{status} {body}");
        let missing = json!({"error": {"type": "status_exception", "reason": "Policy not found"}, "status": 404});
        assert!(!no_handler(404, &missing));
    }

    fn template(version: u32) -> TemplateSettings {
        TemplateSettings {
            name: "qwen-logs".into(),
            pattern: "qwen-logs-*".into(),
            priority: 200,
            shards: 1,
            replicas: 1,
            ilm_delete_after: Duration::from_secs(30 * 86400),
            version,
        }
    }

    #[test]
    fn a_replica_writes_a_template_only_over_nothing_or_a_lower_version() {
        let ours = |v| Installed::Present {
            version: Some(v),
            digest: Some("d".into()),
            revision: 1,
        };
        assert_eq!(decide(&Installed::Absent, 2, 1, "d"), Decision::Create);
        assert_eq!(decide(&ours(1), 2, 1, "d"), Decision::Replace);
        assert_eq!(
            decide(
                &Installed::Present {
                    version: None,
                    digest: None,
                    revision: 0,
                },
                2,
                1,
                "d"
            ),
            Decision::Replace,
            "an unversioned template (made by hand, or by lumberd before versions) is replaced"
        );
        assert_eq!(decide(&ours(2), 2, 1, "d"), Decision::Keep);
        assert_eq!(decide(&ours(2), 2, 1, "other"), Decision::KeepConflicting);
        assert_eq!(decide(&ours(3), 2, 1, "d"), Decision::KeepNewer(3));
    }

    #[test]
    fn under_one_version_a_newer_lumberd_replaces_an_older_ones_template_and_not_back() {
        let written_by = |revision| Installed::Present {
            version: Some(1),
            digest: Some("old layout".into()),
            revision,
        };
        assert_eq!(
            decide(&written_by(0), 1, 1, "new layout"),
            Decision::Replace,
            "an upgrade must replace what an older lumberd wrote under template_version 1"
        );
        assert_eq!(
            decide(&written_by(2), 1, 1, "new layout"),
            Decision::KeepNewerRevision(2),
            "an older replica restarting during the upgrade must leave the newer layout"
        );
        assert_eq!(
            decide(&written_by(1), 1, 1, "new layout"),
            Decision::KeepConflicting,
            "one lumberd, two configurations under one version: the first installed stays"
        );
        let newer_version_older_lumberd = Installed::Present {
            version: Some(3),
            digest: Some("old layout".into()),
            revision: 0,
        };
        assert_eq!(
            decide(&newer_version_older_lumberd, 2, 1, "new layout"),
            Decision::KeepNewer(3),
            "the user's template_version comes first: a higher one wins whoever wrote it"
        );
    }

    #[test]
    fn the_digest_tells_configurations_of_one_version_apart() {
        let a = event_template(&template(1), false);
        let mut more = template(1);
        more.replicas = 2;
        let b = event_template(&more, false);
        let (va, da) = versioned(a.clone(), 1);
        let (_, db) = versioned(b, 1);
        let (_, da2) = versioned(a.clone(), 1);
        let (_, da_v2) = versioned(a, 2);
        assert_eq!(va["version"], 1);
        assert_eq!(va["_meta"]["digest"], da.as_str());
        assert_eq!(
            va["_meta"]["managed_by"], "lumberd",
            "the template's own _meta stays"
        );
        assert_eq!(da, da2, "the same template, the same digest");
        assert_ne!(da, db);
        assert_ne!(da, da_v2);
    }

    #[test]
    fn the_ism_policy_deletes_at_the_ilm_age_and_claims_the_event_pattern() {
        let p = ism_policy(&template(3));
        let states = p["policy"]["states"].as_array().unwrap();
        assert_eq!(p["policy"]["default_state"], "hot");
        assert_eq!(states[0]["transitions"][0]["state_name"], "delete");
        assert_eq!(
            states[0]["transitions"][0]["conditions"]["min_index_age"],
            "2592000s"
        );
        assert_eq!(states[1]["actions"][0], json!({"delete": {}}));
        assert_eq!(
            p["policy"]["ism_template"],
            json!([{"index_patterns": ["qwen-logs-*"], "priority": 200}])
        );
    }

    /// A scripted cluster: each request `(method, path)` is answered by `answer`, and
    /// every request (method, path with query, JSON body) is recorded. Only for what the
    /// test distributions cannot answer (OpenSearch's ISM plugin is not in its
    /// integ-test build nor on Maven Central).
    async fn scripted(
        answer: impl Fn(&str, &str) -> (u16, Value) + Send + Sync + 'static,
    ) -> (String, Arc<std::sync::Mutex<Vec<(String, String, Value)>>>) {
        use std::sync::Arc;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (answer, log) = (Arc::new(answer), seen.clone());
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let (answer, log) = (answer.clone(), log.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: the head, then content-length bytes of body.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        while buf.len() < head_end + len {
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body: Value = serde_json::from_slice(&buf[head_end..head_end + len])
                            .unwrap_or(Value::Null);
                        buf.drain(..head_end + len);
                        let mut parts = head.split_whitespace();
                        let method = parts.next().unwrap_or("").to_string();
                        let target = parts.next().unwrap_or("").to_string();
                        let path = target.split('?').next().unwrap_or("").to_string();
                        let (status, reply) = answer(&method, &path);
                        log.lock().unwrap().push((method, target, body));
                        let reply = reply.to_string();
                        let out = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                            reply.len()
                        );
                        if sock.write_all(out.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, seen)
    }

    fn with_template(url: String, version: u32) -> EsSettings {
        let mut s = settings(url, EsAuth::None);
        s.template = Some(template(version));
        s
    }

    /// `install` of template `version` against a scripted cluster: what it returned and
    /// the requests it made, each as "METHOD path?query".
    async fn install_against(
        answer: impl Fn(&str, &str) -> (u16, Value) + Send + Sync + 'static,
        version: u32,
    ) -> ((Engine, Retention), Vec<String>) {
        let (url, seen) = scripted(answer).await;
        let s = with_template(url, version);
        let hosts = Hosts::new(&s).unwrap();
        let installed = install(&hosts, &s).await.unwrap();
        let requests = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(m, t, _)| format!("{m} {t}"))
            .collect();
        (installed, requests)
    }

    /// OpenSearch with ISM (its answers as the ISM API documents them), nothing installed.
    fn opensearch_with_ism(method: &str, path: &str) -> (u16, Value) {
        let missing = json!({"error": {"root_cause": [{"type": "status_exception", "reason": "Policy not found"}],
                                       "type": "status_exception", "reason": "Policy not found"}, "status": 404});
        match (method, path) {
            ("GET", "/") => recorded!("setup-opensearch-root.json"),
            ("GET", "/_plugins/_ism/policies/qwen-logs") => (404, missing),
            ("PUT", "/_plugins/_ism/policies/qwen-logs") => (
                201,
                json!({"_id": "qwen-logs", "_version": 1,
                "_primary_term": 1, "_seq_no": 0, "policy": {}}),
            ),
            ("GET", p) if p.starts_with("/_index_template/") => {
                recorded!("setup-opensearch-template-missing.json")
            }
            ("PUT", p) if p.starts_with("/_index_template/") => {
                (200, json!({"acknowledged": true}))
            }
            _ => (
                400,
                json!({"error": format!("no handler found for uri [{path}] and method [{method}]")}),
            ),
        }
    }

    #[tokio::test]
    async fn opensearch_with_ism_gets_a_policy_for_the_pattern_and_templates_without_ilm() {
        let (url, seen) = scripted(opensearch_with_ism).await;
        let s = with_template(url, 1);
        let hosts = Hosts::new(&s).unwrap();
        let (engine, retention) = install(&hosts, &s).await.unwrap();
        assert_eq!((engine, retention), (Engine::OpenSearch, Retention::Ism));
        let seen = seen.lock().unwrap().clone();
        let requests: Vec<String> = seen.iter().map(|(m, t, _)| format!("{m} {t}")).collect();
        assert_eq!(
            requests,
            [
                "GET /",
                "GET /_plugins/_ism/policies/qwen-logs",
                "GET /_index_template/qwen-logs",
                "PUT /_index_template/qwen-logs?create=true",
                "GET /_plugins/_ism/policies/qwen-logs",
                "PUT /_plugins/_ism/policies/qwen-logs",
                "GET /_index_template/qwen-logs-deadletter",
                "PUT /_index_template/qwen-logs-deadletter?create=true",
            ]
        );
        let events = &seen[3].2;
        assert_eq!(events["version"], 1);
        assert!(
            events["template"]["settings"]
                .get("index.lifecycle.name")
                .is_none(),
            "OpenSearch refuses the ILM setting: {events}"
        );
        assert_eq!(seen[5].2, ism_policy(&template(1)));
    }

    #[tokio::test]
    async fn a_newer_version_updates_the_ism_policy_with_the_sequence_number_it_read() {
        let (_, requests) = install_against(|method, path| match (method, path) {
            ("GET", "/_plugins/_ism/policies/qwen-logs") => (200, json!({"_id": "qwen-logs",
                "_version": 3, "_seq_no": 7, "_primary_term": 2, "policy": {"policy": {}}})),
            ("GET", "/_index_template/qwen-logs") => (200, json!({"index_templates": [{"name": "qwen-logs",
                "index_template": {"index_patterns": ["qwen-logs-*"], "version": 1, "_meta": {"digest": "old"}}}]})),
            ("PUT", "/_plugins/_ism/policies/qwen-logs") => (200, json!({"_id": "qwen-logs"})),
            _ => opensearch_with_ism(method, path),
        }, 2)
        .await;
        assert!(
            requests.contains(&"PUT /_index_template/qwen-logs".to_string())
                && requests.contains(
                    &"PUT /_plugins/_ism/policies/qwen-logs?if_seq_no=7&if_primary_term=2"
                        .to_string()
                ),
            "{requests:?}"
        );
    }

    #[tokio::test]
    async fn a_replica_of_an_older_version_leaves_the_templates_and_the_policy_alone() {
        let newer = json!({"index_templates": [{"name": "x",
            "index_template": {"index_patterns": ["qwen-logs-*"], "version": 5, "_meta": {"digest": "theirs"}}}]});
        let (_, requests) = install_against(
            move |method, path| match (method, path) {
                ("GET", p) if p.starts_with("/_index_template/") => (200, newer.clone()),
                _ => opensearch_with_ism(method, path),
            },
            4,
        )
        .await;
        let writes: Vec<&String> = requests.iter().filter(|r| !r.starts_with("GET ")).collect();
        assert!(
            writes.is_empty(),
            "an older replica must write nothing: {writes:?}"
        );
    }

    #[tokio::test]
    async fn losing_the_race_to_create_a_template_reads_the_winners_and_keeps_it() {
        // The first GET finds nothing; the create is refused (another replica was
        // first); the second GET finds the winner's, of this version and contents.
        let (body, digest) = versioned(event_template(&template(1), false), 1);
        let created = std::sync::atomic::AtomicBool::new(false);
        let (_, requests) = install_against(move |method, path| match (method, path) {
            ("GET", "/_index_template/qwen-logs") if created.load(std::sync::atomic::Ordering::SeqCst) => {
                (200, json!({"index_templates": [{"name": "qwen-logs", "index_template": {
                    "version": 1, "_meta": {"digest": digest.clone()}, "index_patterns": body["index_patterns"]}}]}))
            }
            ("PUT", "/_index_template/qwen-logs") => {
                created.store(true, std::sync::atomic::Ordering::SeqCst);
                (400, json!({"error": {"type": "illegal_argument_exception",
                    "reason": "index template [qwen-logs] already exists"}, "status": 400}))
            }
            _ => opensearch_with_ism(method, path),
        }, 1)
        .await;
        assert_eq!(
            requests
                .iter()
                .filter(|r| r.starts_with("PUT /_index_template/qwen-logs?"))
                .count(),
            1,
            "{requests:?}"
        );
        assert!(
            !requests.iter().any(|r| r.starts_with("PUT /_plugins/_ism")),
            "the replica that lost the race does not write the policy: {requests:?}"
        );
    }
}
