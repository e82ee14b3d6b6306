//! A real Elasticsearch node for a test, through `tests/es/es.sh`: started in a temp
//! dir, its URL parsed from the last stdout line, stopped on drop. Queries go through
//! `curl` so the tests do not share the HTTP client under test.
//!
//! Skipping: when Elasticsearch cannot be fetched and `LUMBERD_REQUIRE_ES` is unset, the
//! test says so loudly on stderr and returns; with it set (`make test`, CI) it fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::repo_root;

pub struct EsNode {
    dir: tempfile::TempDir,
    url: String,
    /// `user:pass` when security is on.
    auth: Option<String>,
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

    fn start_with(settings: &[&str], user: Option<(&str, &str)>) -> Option<EsNode> {
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
        node.url = node.run("start", settings);
        Some(node)
    }

    fn run(&self, what: &str, settings: &[&str]) -> String {
        let mut cmd = es_sh();
        cmd.arg(what).arg(self.dir.path());
        if let Some(a) = &self.auth {
            cmd.env("LUMBERD_ES_AUTH", a);
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

    /// Refreshes, then counts the documents of `indices` (a comma list, wildcards ok).
    pub fn count(&self, indices: &str) -> u64 {
        self.request("POST", "/_refresh", None);
        let (status, body) = self.request(
            "GET",
            &format!("/{indices}/_count?ignore_unavailable=true&allow_no_indices=true"),
            None,
        );
        assert_eq!(status, 200, "_count {indices}: {body}");
        body["count"].as_u64().expect("count")
    }

    /// Every document (`_index`, `_id`, `_source`) of `indices`, up to 10 000.
    pub fn docs(&self, indices: &str) -> Vec<Value> {
        self.request("POST", "/_refresh", None);
        let (status, body) = self.request(
            "GET",
            &format!("/{indices}/_search?size=10000&ignore_unavailable=true&allow_no_indices=true"),
            None,
        );
        assert_eq!(status, 200, "_search {indices}: {body}");
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
