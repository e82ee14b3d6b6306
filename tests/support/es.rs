//! A real Elasticsearch node for a test, through `tests/es/es.sh`: started in a temp
//! dir, its URL parsed from the last stdout line, stopped on drop. Queries go through
//! `curl` so the tests do not share the HTTP client under test.
//!
//! Skipping: when Elasticsearch cannot be fetched and `LUMBERD_REQUIRE_ES` is unset, the
//! test says so loudly on stderr and returns; with it set (`make test`, CI) it fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::lumberd::{Lumberd, LumberdBuilder};
use super::repo_root;

/// lumberd writing into the Elasticsearch at `url`: no replicas (one node), a quick
/// retry cap so tests do not wait on backoff, and a bounded wait for readiness.
pub fn lumberd_to(url: &str) -> LumberdBuilder {
    Lumberd::builder()
        .env("LUMBERD_OUTPUT_ELASTICSEARCH", url)
        .env("LUMBERD_OUTPUT_TEMPLATE_REPLICAS", "0")
        .env("LUMBERD_OUTPUT_RETRY_MAX_BACKOFF", "1s")
        .env("LUMBERD_OUTPUT_READY_TIMEOUT", "60s")
}

pub struct EsNode {
    dir: tempfile::TempDir,
    url: String,
    /// `user:pass` when security is on.
    auth: Option<String>,
    /// The CA that signed the node's HTTPS certificate, when it serves TLS.
    cacert: Option<PathBuf>,
}

fn es_sh() -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("tests/es/es.sh"));
    cmd
}

/// Elasticsearch is available (fetched or cached); `false` means skip the test.
pub fn available() -> bool {
    let out = es_sh()
        .arg("fetch")
        .stdin(Stdio::null())
        .output()
        .expect("run tests/es/es.sh fetch");
    if out.status.success() {
        return true;
    }
    let why = String::from_utf8_lossy(&out.stderr);
    if std::env::var_os("LUMBERD_REQUIRE_ES").is_some() {
        panic!("LUMBERD_REQUIRE_ES is set but Elasticsearch cannot be fetched:\n{why}");
    }
    eprintln!(
        "\n\n*** SKIPPED: Elasticsearch cannot be fetched (tests/es/es.sh fetch failed); \
         set LUMBERD_REQUIRE_ES=1 to fail instead ***\n{why}\n"
    );
    false
}

impl EsNode {
    /// Starts a node with extra `-E key=value` settings, or `None` to skip the test.
    pub fn start(settings: &[&str]) -> Option<EsNode> {
        Self::start_with(settings, None)
    }

    /// A node with security on and a file-realm superuser `user:pass`.
    pub fn start_secured(user: &str, pass: &str) -> Option<EsNode> {
        Self::start_with(&["xpack.security.enabled=true"], Some((user, pass)))
    }

    /// A node with security on, a file-realm superuser `user:pass`, and HTTPS with a
    /// certificate for 127.0.0.1 signed by a fresh CA; returns the CA's PEM path too.
    pub fn start_https(user: &str, pass: &str) -> Option<(EsNode, PathBuf)> {
        Self::start_inner(&[], Some((user, pass)), true).map(|n| {
            let ca = n.cacert.clone().expect("an https node has a CA");
            (n, ca)
        })
    }

    fn start_with(settings: &[&str], user: Option<(&str, &str)>) -> Option<EsNode> {
        Self::start_inner(settings, user, false)
    }

    fn start_inner(settings: &[&str], user: Option<(&str, &str)>, https: bool) -> Option<EsNode> {
        if !available() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("lumberd-es-")
            .tempdir()
            .expect("temp dir for the node");
        let mut node = EsNode {
            dir,
            url: String::new(),
            auth: user.map(|(u, p)| format!("{u}:{p}")),
            cacert: None,
        };
        if let Some((u, p)) = user {
            let out = es_sh()
                .arg("adduser")
                .arg(node.dir.path())
                .args([u, p])
                .stdin(Stdio::null())
                .output()
                .expect("es.sh adduser");
            assert!(
                out.status.success(),
                "es.sh adduser: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut settings: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
        if https {
            // Elasticsearch reads certificates from inside its config directory, which
            // `adduser` (above) has created.
            let certs = node.dir.path().join("config/certs");
            std::fs::create_dir_all(&certs).expect("config/certs");
            let ca = super::certs::Ca::new("lumberd test ES CA");
            let ca_pem = ca.write(node.dir.path(), "es-ca.pem");
            let issued = ca.server(&certs, "node", super::certs::Validity::Current);
            node.cacert = Some(ca_pem);
            settings.extend([
                "xpack.security.enabled=true".to_string(),
                "xpack.security.http.ssl.enabled=true".to_string(),
                format!(
                    "xpack.security.http.ssl.certificate=certs/{}",
                    file_name(&issued.cert)
                ),
                format!(
                    "xpack.security.http.ssl.key=certs/{}",
                    file_name(&issued.key)
                ),
            ]);
        }
        let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
        node.url = node.run("start", &settings);
        Some(node)
    }

    fn run(&self, what: &str, settings: &[&str]) -> String {
        let mut cmd = es_sh();
        cmd.arg(what).arg(self.dir.path());
        if let Some(a) = &self.auth {
            cmd.env("LUMBERD_ES_AUTH", a);
        }
        if let Some(ca) = &self.cacert {
            cmd.env("LUMBERD_ES_CACERT", ca);
        }
        for s in settings {
            cmd.arg("-E").arg(s);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("es.sh {what}: {e}"));
        assert!(
            out.status.success(),
            "es.sh {what} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_string()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Graceful stop (SIGTERM); data stays.
    pub fn stop(&self) {
        self.run("stop", &[]);
    }

    /// Start again on the same port with the same data and settings.
    pub fn restart(&mut self) {
        let url = self.run("restart", &[]);
        assert_eq!(url, self.url, "restart must keep the port");
    }

    /// `(status, body)` of a request; the body as JSON (Null when it is not).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-X", method, "-w", "\n%{http_code}"])
            .args(["-H", "content-type: application/json"])
            .arg(format!("{}{path}", self.url));
        if let Some(a) = &self.auth {
            cmd.arg("-u").arg(a);
        }
        if let Some(ca) = &self.cacert {
            cmd.arg("--cacert").arg(ca);
        }
        if let Some(b) = body {
            cmd.arg("--data-binary").arg(b);
        }
        let out = cmd.output().expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            status.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    /// Waits until no shard is initializing (an index created by the last bulk request
    /// may not be searchable yet: 503 no_shard_available), then refreshes.
    fn settle(&self) {
        let (status, body) = self.request(
            "GET",
            "/_cluster/health?wait_for_status=yellow&wait_for_no_initializing_shards=true&timeout=30s",
            None,
        );
        assert!(
            status == 200 && body["timed_out"] == false,
            "shards did not settle within 30 s: {status} {body}"
        );
        self.request("POST", "/_refresh", None);
    }

    /// Refreshes, then counts the documents of `indices` (a comma list, wildcards ok).
    pub fn count(&self, indices: &str) -> u64 {
        let path = format!("/{indices}/_count?ignore_unavailable=true&allow_no_indices=true");
        self.query(&path)["count"].as_u64().expect("count")
    }

    /// A search-side GET after the shards settle. A shard can still be unavailable
    /// (503 `no_shard_available_action_exception`) just after its index was created by
    /// a bulk request cut short; each retry waits on the cluster's health again.
    fn query(&self, path: &str) -> Value {
        let mut last = (0, Value::Null);
        for _ in 0..5 {
            self.settle();
            last = self.request("GET", path, None);
            if last.0 == 200 {
                return last.1;
            }
            // Bounded wait for the shard to be assigned before asking again.
            self.request(
                "GET",
                "/_cluster/health?wait_for_status=green&timeout=10s",
                None,
            );
        }
        let (_, explain) = self.request("GET", "/_cluster/allocation/explain", None);
        panic!(
            "GET {path}: {} {}\nallocation explain: {explain}",
            last.0, last.1
        );
    }

    /// How many documents of `indices` hold each value of the keyword `field`: exact at
    /// any size (a composite aggregation, paged).
    pub fn value_counts(
        &self,
        indices: &str,
        field: &str,
    ) -> std::collections::HashMap<String, u64> {
        let mut out = std::collections::HashMap::new();
        let mut after = Value::Null;
        loop {
            let mut composite = serde_json::json!({
                "size": 10000,
                "sources": [{ "v": { "terms": { "field": field } } }],
            });
            if !after.is_null() {
                composite["after"] = after.clone();
            }
            let body =
                serde_json::json!({ "size": 0, "aggs": { "values": { "composite": composite } } });
            self.settle();
            let (status, answer) = self.request(
                "POST",
                &format!("/{indices}/_search?ignore_unavailable=true&allow_no_indices=true"),
                Some(&body.to_string()),
            );
            assert_eq!(status, 200, "composite aggregation on {field}: {answer}");
            let agg = &answer["aggregations"]["values"];
            let buckets = agg["buckets"].as_array().cloned().unwrap_or_default();
            if buckets.is_empty() {
                return out;
            }
            for b in &buckets {
                let key = b["key"]["v"].as_str().unwrap_or_default().to_string();
                *out.entry(key).or_insert(0) += b["doc_count"].as_u64().unwrap_or(0);
            }
            after = agg["after_key"].clone();
        }
    }

    /// Every document (`_index`, `_id`, `_source`) of `indices`, up to 10 000.
    pub fn docs(&self, indices: &str) -> Vec<Value> {
        let body = self.query(&format!(
            "/{indices}/_search?size=10000&ignore_unavailable=true&allow_no_indices=true"
        ));
        body["hits"]["hits"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for EsNode {
    fn drop(&mut self) {
        let _ = es_sh()
            .arg("stop")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .expect("a file")
        .to_string_lossy()
        .into_owned()
}
