//! Dead letters in one place, with ids (issue 12): a payload that is not an event, sent
//! again (a client resending its window), is stored once, in `qwen-logs-deadletter-DATE`,
//! by either output: its id comes from its bytes, so the resend is a duplicate.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use lumberd::output::elasticsearch::setup::TEMPLATE_REVISION;
use support::clients::{go_lumber, run_client};
use support::es::{available, lumberd_to, Engine, EsNode};
use support::lumberd::Lumberd;
use support::stored::{now_secs, utc_date, DEAD_LETTER_PREFIX};

/// Payloads that are JSON but no object: a real client (go-lumber) sends them as is.
const NOT_OBJECTS: &str = "[1,2]\n\"just a string\"\n42\n";

/// One window of one `J` frame holding `payload`, written by hand: no Beats client sends
/// bytes that are not JSON, so this is the fault injected. Returns the ACK's sequence.
fn send_raw_window(addr: SocketAddr, payload: &[u8]) -> u32 {
    let mut frame = b"2W".to_vec();
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.extend_from_slice(b"2J");
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&frame).unwrap();
    loop {
        let mut ack = [0u8; 6];
        s.read_exact(&mut ack).expect("an ACK for the window");
        let seq = u32::from_be_bytes([ack[2], ack[3], ack[4], ack[5]]);
        if seq != 0 {
            return seq;
        }
    }
}

/// Sends every bad payload twice: go-lumber's windows, and the raw bytes by hand.
fn send_twice(lumberd: &Lumberd) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-objects.ndjson");
    std::fs::write(&file, NOT_OBJECTS).unwrap();
    for _ in 0..2 {
        let mut cmd = go_lumber();
        cmd.args(["-window", "3", "-events", file.to_str().unwrap()]);
        let run = run_client(cmd, lumberd.addr());
        assert!(
            run.status.success() && run.result["events_acked"] == 3,
            "{}",
            run.describe()
        );
        assert_eq!(send_raw_window(lumberd.addr(), b"not json \xff at all"), 1);
    }
}

/// What is distinct among the dead letters: (id, payload as stored).
const DISTINCT: usize = 4;

#[test]
fn a_resent_payload_that_is_not_an_event_is_one_dead_letter_id_in_the_file_output() {
    let lumberd = Lumberd::start();
    send_twice(&lumberd);
    let letters = lumberd.deadletters_with_ids();
    assert_eq!(
        letters.len(),
        2 * DISTINCT,
        "the file output appends what it is sent"
    );
    let mut by_id: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for (id, doc) in letters {
        let id = id.unwrap_or_else(|| panic!("a dead letter without an id: {doc}"));
        by_id.entry(id).or_default().push(doc);
    }
    assert_eq!(
        by_id.len(),
        DISTINCT,
        "each resent payload has its first copy's id, so a replay stores it once: {by_id:?}"
    );
    for docs in by_id.values() {
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["payload"], docs[1]["payload"]);
        assert_eq!(docs[0]["payload_hex"], docs[1]["payload_hex"]);
    }
    let files = lumberd.files(DEAD_LETTER_PREFIX);
    assert_eq!(files.len(), 1, "{files:?}");
    let today = format!("{DEAD_LETTER_PREFIX}{}.ndjson", utc_date(now_secs()));
    assert!(files[0].ends_with(&today), "{files:?}, want {today}");
}

/// The dead-letter template an older lumberd (before `_meta.revision`) installed under
/// `template_version` 1: the pipeline's `error_kind` and `peer` unmapped.
const OLDER_LUMBERDS_TEMPLATE: &str = r#"{"index_patterns":["qwen-logs-deadletter-*"],
  "priority":201,"version":1,"_meta":{"managed_by":"lumberd","digest":"an older layout"},
  "template":{"mappings":{"dynamic":false,"properties":{"@timestamp":{"type":"date"}}}}}"#;

/// Dead letters of `index` matching a `q=` query string.
fn matching(node: &EsNode, index: &str, q: &str) -> u64 {
    let (status, body) = node.request("GET", &format!("/{index}/_count?q={q}"), None);
    assert_eq!(status, 200, "_count?q={q}: {body}");
    body["count"].as_u64().expect("count")
}

#[test]
fn a_resent_payload_that_is_not_an_event_is_stored_once_in_elasticsearch_searchable_by_kind_and_peer(
) {
    if !available(Engine::Elasticsearch) {
        return;
    }
    let Some(node) = EsNode::start(&[]) else {
        return;
    };
    // An upgrade: what the older lumberd installed under the same template_version is
    // replaced, or the new fields below would not be searchable.
    let (status, body) = node.request(
        "PUT",
        "/_index_template/qwen-logs-deadletter",
        Some(OLDER_LUMBERDS_TEMPLATE),
    );
    assert_eq!(status, 200, "installing the older template: {body}");
    let lumberd = lumberd_to(node.url()).start();
    send_twice(&lumberd);
    let index = format!("{DEAD_LETTER_PREFIX}{}", utc_date(now_secs()));
    assert_eq!(
        node.count(&index),
        DISTINCT as u64,
        "each payload once in {index}; lumberd logs:\n{}",
        lumberd.logs()
    );
    assert_eq!(node.count("qwen-logs-*,-qwen-logs-deadletter-*"), 0);
    let (_, installed) = node.request("GET", "/_index_template/qwen-logs-deadletter", None);
    let installed = &installed["index_templates"][0]["index_template"];
    assert_eq!(
        installed["_meta"]["revision"],
        TEMPLATE_REVISION,
        "the older lumberd's template is replaced on upgrade: {installed}\nlogs:\n{}",
        lumberd.logs()
    );
    // What an operator filters on in Kibana: the kind of failure and who sent it.
    let kinds = [
        ("error_kind:not_json_object", 3),
        ("error_kind:not_utf8", 1),
        ("peer:127.0.0.1*", DISTINCT as u64),
    ];
    for (q, want) in kinds {
        assert_eq!(
            matching(&node, &index, q),
            want,
            "dead letters matching {q} (the dead-letter template must map the field)"
        );
    }
}
