//! A real Elasticsearch (or OpenSearch) node or cluster for a test, through
//! `tests/es/es.sh`: started in a temp dir, its URL parsed from the last stdout line,
//! stopped on drop. Queries go through `curl` so the tests do not share the HTTP client
//! under test.
//!
//! Skipping: when the distribution cannot be fetched and `LUMBERD_REQUIRE_ES` is unset,
//! the test says so loudly on stderr and returns; with it set (`make test`, CI) it fails.

use std::path::{Path, PathBuf};
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

/// Which distribution es.sh fetches and runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Elasticsearch,
    OpenSearch,
}

impl Engine {
    /// `LUMBERD_ES_ENGINE` for es.sh.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Elasticsearch => "elasticsearch",
            Engine::OpenSearch => "opensearch",
        }
    }
}

pub struct EsNode {
    dir: PathBuf,
    /// The temp dir that holds `dir`, when the node owns it (not a cluster's member).
    _tmp: Option<tempfile::TempDir>,
    engine: Engine,
    url: String,
    /// `user:pass` when security is on.
    auth: Option<String>,
    /// The CA that signed the node's HTTPS certificate, when it serves TLS.
    cacert: Option<PathBuf>,
}

fn es_sh(engine: Engine) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("tests/es/es.sh"))
        .env("LUMBERD_ES_ENGINE", engine.name());
    cmd
}

/// The engine's distribution is available (fetched or cached); `false` means skip.
pub fn available(engine: Engine) -> bool {
    let out = es_sh(engine)
        .arg("fetch")
        .stdin(Stdio::null())
        .output()
        .expect("run tests/es/es.sh fetch");
    if out.status.success() {
        return true;
    }
    let why = String::from_utf8_lossy(&out.stderr);
    let name = engine.name();
    if std::env::var_os("LUMBERD_REQUIRE_ES").is_some() {
        panic!("LUMBERD_REQUIRE_ES is set but {name} cannot be fetched:\n{why}");
    }
    eprintln!(
        "\n\n*** SKIPPED: {name} cannot be fetched (LUMBERD_ES_ENGINE={name} tests/es/es.sh \
         fetch failed); set LUMBERD_REQUIRE_ES=1 to fail instead ***\n{why}\n"
    );
    false
}

impl EsNode {
    /// Starts an Elasticsearch node with extra `-E key=value` settings, or `None` to
    /// skip the test.
    pub fn start(settings: &[&str]) -> Option<EsNode> {
        Self::start_on(Engine::Elasticsearch, settings)
    }

    /// A node of `engine` with extra settings (names both engines share).
    pub fn start_on(engine: Engine, settings: &[&str]) -> Option<EsNode> {
        Self::start_inner(engine, settings, None, false)
    }

    /// A node with security on and a file-realm superuser `user:pass`.
    pub fn start_secured(user: &str, pass: &str) -> Option<EsNode> {
        Self::start_inner(
            Engine::Elasticsearch,
            &["xpack.security.enabled=true"],
            Some((user, pass)),
            false,
        )
    }

    /// A node with security on, a file-realm superuser `user:pass`, and HTTPS with a
    /// certificate for 127.0.0.1 signed by a fresh CA; returns the CA's PEM path too.
    pub fn start_https(user: &str, pass: &str) -> Option<(EsNode, PathBuf)> {
        Self::start_inner(Engine::Elasticsearch, &[], Some((user, pass)), true).map(|n| {
            let ca = n.cacert.clone().expect("an https node has a CA");
            (n, ca)
        })
    }

    fn start_inner(
        engine: Engine,
        settings: &[&str],
        user: Option<(&str, &str)>,
        https: bool,
    ) -> Option<EsNode> {
        if !available(engine) {
            return None;
        }
        let tmp = tempfile::Builder::new()
            .prefix("lumberd-es-")
            .tempdir()
            .expect("temp dir for the node");
        let mut node = EsNode {
            dir: tmp.path().to_path_buf(),
            _tmp: Some(tmp),
            engine,
            url: String::new(),
            auth: user.map(|(u, p)| format!("{u}:{p}")),
            cacert: None,
        };
        if let Some((u, p)) = user {
            let out = es_sh(engine)
                .arg("adduser")
                .arg(&node.dir)
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
            let certs = node.dir.join("config/certs");
            std::fs::create_dir_all(&certs).expect("config/certs");
            let ca = super::certs::Ca::new("lumberd test ES CA");
            let ca_pem = ca.write(&node.dir, "es-ca.pem");
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
        let mut cmd = es_sh(self.engine);
        cmd.arg(what).arg(&self.dir);
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
        self.dir.clone()
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Graceful stop (SIGTERM); data stays.
    pub fn stop(&self) {
        self.run("stop", &[]);
    }

    /// SIGKILL: a crash; data stays.
    pub fn kill(&self) {
        self.run("kill", &[]);
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("es.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }

    /// Start again on the same port with the same data and settings.
    pub fn restart(&self) {
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
        if self._tmp.is_none() {
            return; // a cluster's member: the cluster stops all at once
        }
        let _ = es_sh(self.engine)
            .arg("stop")
            .arg(&self.dir)
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

/// A cluster of real nodes (`es.sh cluster`): `node-1..N` in one temp dir, each its own
/// [`EsNode`] for kill, stop and restart; queries go to a node that is running. Stopped
/// on drop, and by `es.sh watch --remove` (stopped and deleted) once the test process is
/// gone (a cluster held in a static for all of a file's tests is never dropped).
pub struct EsCluster {
    nodes: Vec<EsNode>,
    root: tempfile::TempDir,
    engine: Engine,
}

impl EsCluster {
    /// `n` nodes with extra settings for each, or `None` to skip the test.
    pub fn start(engine: Engine, n: usize, settings: &[&str]) -> Option<EsCluster> {
        if !available(engine) {
            return None;
        }
        let root = tempfile::Builder::new()
            .prefix("lumberd-cluster-")
            .tempdir()
            .expect("temp dir for the cluster");
        let watch = es_sh(engine)
            .arg("watch")
            .arg(std::process::id().to_string())
            .arg(root.path())
            .arg("--remove")
            .stdin(Stdio::null())
            .status()
            .expect("es.sh watch");
        assert!(watch.success(), "es.sh watch failed");
        let mut cmd = es_sh(engine);
        cmd.arg("cluster").arg(root.path()).arg(n.to_string());
        for s in settings {
            cmd.arg("-E").arg(s);
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .expect("run es.sh cluster");
        assert!(
            out.status.success(),
            "es.sh cluster failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let urls: Vec<&str> = stdout
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .split(',')
            .collect();
        assert_eq!(urls.len(), n, "es.sh cluster printed {stdout:?}");
        let nodes = urls
            .iter()
            .enumerate()
            .map(|(i, url)| EsNode {
                dir: root.path().join(format!("node-{}", i + 1)),
                _tmp: None,
                engine,
                url: url.to_string(),
                auth: None,
                cacert: None,
            })
            .collect();
        Some(EsCluster {
            nodes,
            root,
            engine,
        })
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, i: usize) -> &EsNode {
        &self.nodes[i]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut EsNode {
        &mut self.nodes[i]
    }

    /// Every node's URL, comma-separated: `output.elasticsearch` for lumberd.
    pub fn hosts(&self) -> String {
        self.nodes
            .iter()
            .map(EsNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A node whose server runs: the one queries go to.
    pub fn live(&self) -> &EsNode {
        self.nodes
            .iter()
            .find(|n| {
                n.pid()
                    .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
            })
            .expect("a running node in the cluster")
    }

    /// The node named `node-K`, by index.
    pub fn index_of(&self, name: &str) -> usize {
        name.strip_prefix("node-")
            .and_then(|k| k.parse::<usize>().ok())
            .filter(|k| (1..=self.nodes.len()).contains(k))
            .map(|k| k - 1)
            .unwrap_or_else(|| panic!("no cluster node named {name:?}"))
    }

    /// The elected master, by index.
    pub fn master(&self) -> usize {
        let (status, body) = self.live().request("GET", "/_cat/master?format=json", None);
        assert_eq!(status, 200, "_cat/master: {body}");
        self.index_of(body[0]["node"].as_str().expect("a master node name"))
    }

    /// Waits until all nodes are in the cluster and it is `status` (at most 120 s).
    pub fn wait_for(&self, status: &str) {
        let path = format!(
            "/_cluster/health?wait_for_nodes={}&wait_for_status={status}&wait_for_no_initializing_shards=true&timeout=120s",
            self.nodes.len()
        );
        let (code, body) = self.live().request("GET", &path, None);
        assert!(
            code == 200 && body["timed_out"] == false,
            "the cluster did not get {status} with {} nodes within 120 s: {code} {body}",
            self.nodes.len()
        );
    }

    /// Each node's own count of the bulk bytes it coordinated (received in a bulk
    /// request and routed to the shards: `indexing_pressure.memory.total
    /// .coordinating_in_bytes`; 8.11 has no operation count there), asked of that node
    /// (`_nodes/_local`); `None` for a node that does not answer.
    pub fn coordinated(&self) -> Vec<Option<u64>> {
        self.nodes
            .iter()
            .map(|n| {
                let (status, body) = n.request(
                    "GET",
                    "/_nodes/_local/stats/indexing_pressure?filter_path=nodes.*.indexing_pressure.memory.total.coordinating_in_bytes",
                    None,
                );
                (status == 200).then(|| {
                    body["nodes"]
                        .as_object()
                        .and_then(|m| m.values().next())
                        .and_then(|v| {
                            v["indexing_pressure"]["memory"]["total"]["coordinating_in_bytes"]
                                .as_u64()
                        })
                        .unwrap_or(0)
                })
            })
            .collect()
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for EsCluster {
    fn drop(&mut self) {
        let _ = es_sh(self.engine)
            .arg("stop")
            .arg(self.root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
