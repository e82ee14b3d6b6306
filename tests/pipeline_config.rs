//! A `[pipeline]` section as a user writes it, loaded through `Settings::load` like
//! `lumberd serve` does, and the pipeline it yields run on a Filebeat event: the
//! section's filters, index and fingerprint do what the file says.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use lumberd::config::Settings;
use lumberd::pipeline::{Pipeline, Scratch};
use lumberd::record::{Origin, Record, RecordKind, TlsPeer};
use serde_json::{json, Value as Json};

const FILEBEAT_EVENT: &str = r#"{"@timestamp":"2025-04-05T10:23:46.789Z","@metadata":{"beat":"filebeat","type":"_doc","version":"8.11.3"},"log":{"offset":1234,"file":{"path":"/var/log/qwen/inference.log"}},"message":"{\"timestamp\":\"2025-04-05T10:23:45Z\",\"level\":\"INFO\",\"request_id\":\"req_abc123xyz\",\"prompt\":\"你好，请介绍一下你自己\",\"response_length\":\"156\",\"inference_time_ms\":892.7,\"status\":\"success\"}","input":{"type":"filestream"},"ecs":{"version":"8.0.0"},"host":{"name":"gpu-node-1"},"agent":{"id":"0b8f3f5e-3c1e-4d7a-9d55-5a7f0c2b9e11","name":"gpu-node-1","type":"filebeat","version":"8.11.3"}}"#;

fn origin() -> Origin {
    Origin::plain(
        "127.0.0.1:1234".parse().unwrap(),
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
    )
}

/// A pipeline from a `[pipeline]` TOML snippet, through the real config loader.
fn configured(toml_text: &str) -> Pipeline {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lumberd.toml");
    std::fs::write(&path, toml_text).unwrap();
    let settings =
        Settings::load(Some(&path), Vec::new()).unwrap_or_else(|e| panic!("config must load: {e}"));
    Pipeline::new(&settings.pipeline, &prometheus::Registry::new()).unwrap()
}

fn run_on(pipeline: &Pipeline, payload: &[u8]) -> Option<Record> {
    pipeline
        .process_json(
            Bytes::copy_from_slice(payload),
            &origin(),
            &mut Scratch::default(),
        )
        .into_record()
}

fn doc(r: &Record) -> Json {
    serde_json::from_slice(&r.doc)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&r.doc)))
}

#[test]
fn metadata_is_not_stored_but_routes_and_templates_can_read_it() {
    let p = configured(
        "[pipeline]\nindex = \"%{[@metadata][beat]}-%{+yyyy.MM}\"\nfingerprint = []\n[[pipeline.filter]]\nadd_field = { fields = { shipper = \"%{[@metadata][beat]} %{[@metadata][version]}\", missing = \"%{nope}\" } }\n",
    );
    let r = run_on(&p, FILEBEAT_EVENT.as_bytes()).unwrap();
    assert_eq!(r.index().map(|i| i.as_str()), Some("filebeat-2025.04"));
    let d = doc(&r);
    assert!(d.get("@metadata").is_none(), "{d}");
    assert_eq!(d["shipper"], "filebeat 8.11.3");
    assert_eq!(
        d["missing"], "%{nope}",
        "a missing field stays as written, as in Logstash"
    );
    assert_eq!(r.id, None, "fingerprint = [] turns ids off");
}

#[test]
fn rename_remove_add_tag_add_field_and_drop() {
    let p = configured(
        r#"
[[pipeline.filter]]
rename = { fields = { "host.name" = "node", "absent" = "never" } }

[[pipeline.filter]]
remove = { fields = ["agent", "log.file", "ecs"] }

[[pipeline.filter]]
add_tag = { tags = ["from-%{node}"] }

[[pipeline.filter]]
add_field = { fields = { "input.type" = "second", "team" = "ml" } }

[[pipeline.filter]]
drop = { field = "message", values = ["drop me"] }
"#,
    );
    let r = run_on(&p, FILEBEAT_EVENT.as_bytes()).unwrap();
    let d = doc(&r);
    assert_eq!(d["node"], "gpu-node-1");
    assert_eq!(d["host"], json!({}));
    assert!(d.get("never").is_none() && d.get("agent").is_none() && d.get("ecs").is_none());
    assert_eq!(d["log"], json!({"offset": 1234}));
    assert_eq!(d["tags"], json!(["from-gpu-node-1"]));
    assert_eq!(d["input"]["type"], json!(["filestream", "second"]));
    assert_eq!(d["team"], "ml");
    let dropped = FILEBEAT_EVENT.replace(r#""message":"{"#, r#""message":"drop me","m":"{"#);
    assert!(
        run_on(&p, dropped.as_bytes()).is_none(),
        "a matching drop filter drops"
    );
}

#[test]
fn tls_peer_is_metadata_for_routing() {
    let p = configured("[pipeline]\nindex = \"logs-%{[@metadata][tls_peer][subject]}\"\n");
    let routed = |subject: &str| {
        let mut o = origin();
        o.tls = Some(Arc::new(TlsPeer {
            subject: Some(subject.into()),
            sans: vec!["node-1.example".into()],
            protocol: "TLSv1.3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
        }));
        p.process_json(
            Bytes::from_static(br#"{"message":"x"}"#),
            &o,
            &mut Scratch::default(),
        )
        .into_record()
        .unwrap()
    };
    // An index name must be lowercase (Elasticsearch's rule): a subject routes as is
    // only when it is one.
    let r = routed("cn=node-1");
    assert_eq!(r.index().map(|i| i.as_str()), Some("logs-cn=node-1"));
    assert!(doc(&r).get("@metadata").is_none());
    assert_eq!(routed("CN=node-1").kind(), RecordKind::DeadLetter);
}
