//! Before the first window: the HTTP transport (hosts, credentials, CA), waiting until
//! Elasticsearch answers, the index templates and, where the cluster has it, ILM.

use std::time::{Duration, Instant};

use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::{MultiNodeConnectionPool, Transport, TransportBuilder};
use elasticsearch::http::{Method, Url};
use serde_json::{json, Value};

use super::settings::{EsAuth, EsSettings, TemplateSettings};
use super::Health;

/// Why the output could not start; `serve` exits with it before binding.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("output.elasticsearch: {0}")]
    Transport(String),
    #[error("output.ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("Elasticsearch ({hosts}) did not answer within {waited:?} (output.ready_timeout); last: {last}")]
    NotReady {
        hosts: String,
        waited: Duration,
        last: String,
    },
    #[error("installing {what}: {reason}")]
    Template { what: String, reason: String },
}

pub fn transport(s: &EsSettings) -> Result<Transport, SetupError> {
    let urls = s
        .hosts
        .iter()
        .map(|h| Url::parse(h).map_err(|e| SetupError::Transport(format!("{h}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    // Round robin over the hosts: a request that fails is retried on the next host.
    let pool = MultiNodeConnectionPool::round_robin(urls, None);
    let mut b = TransportBuilder::new(pool)
        .timeout(s.request_timeout)
        .request_body_compression(s.gzip)
        .enable_meta_header(false);
    b = match &s.auth {
        EsAuth::None => b,
        EsAuth::Basic { username, password } => {
            b.auth(Credentials::Basic(username.clone(), password.clone()))
        }
        EsAuth::ApiKey(key) => b.auth(Credentials::EncodedApiKey(key.clone())),
    };
    if let Some(path) = &s.ca_file {
        let ca_err = |reason: String| SetupError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| ca_err(e.to_string()))?;
        b = b.cert_validation(CertificateValidation::Full(cert));
    }
    b.build()
        .map_err(|e| SetupError::Transport(format!("{e:?}")))
}

/// [`call_once`] on each host in turn until one answers (the pool is round robin), so
/// a dead host in the list does not stop the start.
pub async fn call(
    t: &Transport,
    hosts: usize,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let mut last = Err(String::new());
    for _ in 0..hosts.max(1) {
        last = call_once(t, method, path, body).await;
        if last.is_ok() {
            break;
        }
    }
    last
}

/// Sends a request and returns its status and JSON body (Null when not JSON).
async fn call_once(
    t: &Transport,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let body = body.map(|b| b.to_string());
    let r = t
        .send(method, path, HeaderMap::new(), None::<&()>, body, None)
        .await
        .map_err(|e| error_chain(&e))?;
    let status = r.status_code().as_u16();
    let text = r.text().await.map_err(|e| error_chain(&e))?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// An error with its causes ("error sending request: ...: invalid peer certificate:
/// UnknownIssuer"): the top-level message alone does not say what went wrong.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Polls until Elasticsearch answers 2xx (this distribution has no `GET /`, so the
/// cluster health), trying every host, or fails after `ready_timeout`.
pub async fn wait_ready(t: &Transport, s: &EsSettings, health: &Health) -> Result<(), SetupError> {
    let started = Instant::now();
    let mut last;
    let mut logged = false;
    let mut attempt = 0;
    loop {
        match call_once(t, Method::Get, "/_cluster/health", None).await {
            Ok((200..=299, _)) => {
                health.up();
                return Ok(());
            }
            Ok((status, body)) => last = format!("HTTP {status} {}", short(&body)),
            Err(e) => last = e,
        }
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
            super::bulk::random(),
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
pub async fn install(t: &Transport, s: &EsSettings) -> Result<(), SetupError> {
    let Some(tpl) = &s.template else {
        return Ok(());
    };
    let n = s.hosts.len();
    let fail = |what: &str, reason: String| SetupError::Template {
        what: what.to_string(),
        reason,
    };
    let ilm = match call(t, n, Method::Get, "/_ilm/status", None).await {
        Ok((200, _)) => {
            let path = format!("/_ilm/policy/{}", tpl.name);
            match call(t, n, Method::Put, &path, Some(&ilm_policy(tpl))).await {
                Ok((200..=299, _)) => true,
                Ok((status, body)) => {
                    return Err(fail(&path, format!("HTTP {status} {}", short(&body))))
                }
                Err(e) => return Err(fail(&path, e)),
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
        Err(e) => return Err(fail("_ilm/status", e)),
    };
    for (name, body) in [
        (tpl.name.clone(), event_template(tpl, ilm)),
        (
            format!("{}-deadletter", tpl.name),
            dead_letter_template(tpl, &s.dead_letter_prefix),
        ),
    ] {
        let path = format!("/_index_template/{name}");
        match call(t, n, Method::Put, &path, Some(&body)).await {
            Ok((200..=299, _)) => tracing::info!(template = %name, "index template installed"),
            Ok((status, body)) => {
                return Err(fail(&path, format!("HTTP {status} {}", short(&body))))
            }
            Err(e) => return Err(fail(&path, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let t = transport(&s).unwrap();
        let health = Health::new(prometheus::IntGauge::new("up", "up").unwrap());
        wait_ready(&t, &s, &health).await.unwrap();
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
        assert!(matches!(transport(&s), Err(SetupError::CaFile { .. })));
    }
}
