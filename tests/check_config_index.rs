//! `lumberd check-config` warns, and still accepts the file (exit 0), when
//! `pipeline.index` reads a field the client sends and no filter sets it (issue 12):
//! each client would then choose its events' index.

mod support;

use support::lumberd::lumberd_command;

/// `(exit code, stdout, stderr)` of `check-config` on `text`.
fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lumberd.toml");
    std::fs::write(&path, text).unwrap();
    let out = lumberd_command()
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run lumberd check-config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_index_from_a_client_field_without_a_fallback_is_a_warning_not_an_error() {
    let (code, stdout, stderr) = check("[pipeline]\nindex = \"logs-%{svc}-%{+yyyy.MM.dd}\"\n");
    assert_eq!(code, 0, "a valid configuration: {stderr}");
    assert!(stdout.contains(": ok"), "{stdout}");
    assert!(
        stderr.contains("warning: pipeline.index `logs-%{svc}-%{+yyyy.MM.dd}` reads `svc`"),
        "no warning naming the field: {stderr}"
    );
}

#[test]
fn an_index_from_a_field_a_filter_sets_or_the_tls_peer_is_not_warned_about() {
    for text in [
        "[pipeline]\nindex = \"qwen-logs-%{+yyyy.MM.dd}\"\n",
        "[pipeline]\nindex = \"logs-%{team}\"\n[[pipeline.filter]]\nadd_field = { fields = { team = \"ml\" } }\n",
        "[pipeline]\nindex = \"logs-%{[@metadata][tls_peer][subject]}\"\n",
    ] {
        let (code, _, stderr) = check(text);
        assert_eq!(code, 0, "{text}: {stderr}");
        assert!(!stderr.contains("warning"), "{text}: {stderr}");
    }
}
