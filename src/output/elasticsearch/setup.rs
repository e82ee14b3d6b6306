//! Before the first window: waiting until Elasticsearch answers, the index templates and,
//! where the cluster has it, ILM. Knows nothing of bulk items or the writer.

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
    let first = hosts.first();
    let mut last = None;
    for i in 0..hosts.count() {
        match hosts
            .json((first + i) % hosts.count(), method, path, body)
            .await
        {
            Ok(answer) => return Ok(answer),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| SendError::Connection("no hosts".into())))
}

/// Polls until Elasticsearch answers 2xx (this distribution has no `GET /`, so the
/// cluster health), trying every host, or fails after `ready_timeout`.
pub async fn wait_ready(hosts: &Hosts, s: &EsSettings, health: &Health) -> Result<(), SetupError> {
    let started = Instant::now();
    let mut logged = false;
    let mut attempt = 0;
    loop {
        let last = match hosts
            .json(hosts.first(), Method::Get, "/_cluster/health", None)
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
            s.retry_max_backoff.min(Duration::from_secs(2)),
            fastrand::u64(..),
        );
        tokio::time::sleep(d.min(s.ready_timeout.saturating_sub(started.elapsed()))).await;
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(300).collect()
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

/// The dead-letter indices: the original event is stored, not indexed (it may be any
/// size and any shape), the error is searchable. A higher priority than the event
/// template, whose pattern (`qwen-logs-*`) also matches `qwen-logs-deadletter-*`.
pub fn dead_letter_template(t: &TemplateSettings, prefix: &str) -> Value {
    json!({
        "index_patterns": [format!("{prefix}*")],
        "priority": t.priority + 1,
        "_meta": { "managed_by": "lumberd" },
        "template": {
            "settings": { "number_of_shards": 1, "number_of_replicas": t.replicas },
            "mappings": { "dynamic": false, "properties": {
                "@timestamp": { "type": "date" },
                "original_index": { "type": "keyword" },
                "original_id": { "type": "keyword" },
                "error": { "properties": {
                    "status": { "type": "integer" },
                    "type": { "type": "keyword" },
                    "reason": { "type": "text" },
                }},
                "event": { "properties": {
                    "original": { "type": "keyword", "index": false, "doc_values": false },
                }},
            }}
        }
    })
}

/// Installs ILM (when the cluster has it) and both templates. Without ILM (this repo's
/// test distribution, or a cluster without the module) it warns once and carries on.
pub async fn install(hosts: &Hosts, s: &EsSettings) -> Result<(), SetupError> {
    let Some(tpl) = &s.template else {
        return Ok(());
    };
    let fail = |what: &str, reason: Refusal| SetupError::Template {
        what: what.to_string(),
        reason,
    };
    let ilm = match call(hosts, Method::Get, "/_ilm/status", None).await {
        Ok((200, _)) => {
            let path = format!("/_ilm/policy/{}", tpl.name);
            match call(hosts, Method::Put, &path, Some(&ilm_policy(tpl))).await {
                Ok((200..=299, _)) => true,
                Ok((status, body)) => return Err(fail(&path, Refusal::status(status, &body))),
                Err(e) => return Err(fail(&path, e.into())),
            }
        }
        Ok((status, _)) => {
            tracing::warn!(
                status,
                "Elasticsearch has no ILM (_ilm/status answered {status}); indices are not \
                 deleted automatically, output.ilm_delete_after is not applied"
            );
            false
        }
        Err(e) => return Err(fail("_ilm/status", e.into())),
    };
    for (name, body) in [
        (tpl.name.clone(), event_template(tpl, ilm)),
        (
            format!("{}-deadletter", tpl.name),
            dead_letter_template(tpl, &s.dead_letter_prefix),
        ),
    ] {
        let path = format!("/_index_template/{name}");
        match call(hosts, Method::Put, &path, Some(&body)).await {
            Ok((200..=299, _)) => tracing::info!(template = %name, "index template installed"),
            Ok((status, body)) => return Err(fail(&path, Refusal::status(status, &body))),
            Err(e) => return Err(fail(&path, e.into())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::elasticsearch::settings::EsAuth;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Settings for one host; only the transport and readiness keys matter here.
    fn settings(url: String, auth: EsAuth) -> EsSettings {
        EsSettings {
            hosts: vec![url],
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
            dead_letter_prefix: "dead-".into(),
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
}
