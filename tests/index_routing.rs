//! Index names are validated, not trusted (issue 12): an index rendered from a client's
//! field that Elasticsearch would refuse, or that would name a file outside `data_dir`,
//! makes that event a dead letter inside `data_dir` and its window completes, while
//! another connection's windows written in the same rounds are acknowledged and stored.
//! The same against Elasticsearch, where no index but the bystander's and the dead
//! letters' may be created. (tests/index_names_es.rs: the rules agree with a real node.)

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::{json, Value};
use support::clients::{assert_all_acked, go_lumber, run_client, ClientRun};
use support::es::{available, lumberd_to, Engine, EsNode};
use support::lumberd::Lumberd;
use support::stored::{now_secs, utc_date, DEAD_LETTER_PREFIX};

/// Route by a client's field, with no filters and no ids: the value reaches the index
/// name as the client sent it.
const BY_SVC: &str = "[pipeline]\nindex = \"%{svc}\"\nfilter = []\nfingerprint = []\nmetric = []\n";

/// The values a hostile or careless client puts in `svc`: paths out of `data_dir`, names
/// that are no file, and each rule of Elasticsearch's index names.
fn hostile_values(escape: &Path) -> Vec<String> {
    let unique = escape.file_name().unwrap().to_string_lossy().into_owned();
    let mut values = vec![
        format!("../{unique}-x"),
        format!("{}/abs", escape.display()),
        "a/b".to_string(),
        String::new(),
        "..".to_string(),
        ".".to_string(),
        "UPPER".to_string(),
        "x".repeat(300),
        ".hidden".to_string(),
        "a\nb".to_string(),
        "a\0b".to_string(),
    ];
    for c in ['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':'] {
        values.push(format!("a{c}b"));
    }
    for c in ['-', '_', '+'] {
        values.push(format!("{c}a"));
    }
    values
}

fn events_file(dir: &Path, name: &str, events: impl Iterator<Item = Value>) -> String {
    let path = dir.join(name);
    let text: String = events.map(|e| format!("{e}\n")).collect();
    fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn every_file_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(every_file_under(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

/// A hostile connection (one event per window, each with one of `values` as `svc`) and
/// a bystander's 400 events at once, pipelined: their windows share the output's write
/// rounds (file output) or bulk requests (Elasticsearch). Both must be acknowledged.
fn send_hostile_and_bystander(lumberd: &Lumberd, values: &[String]) {
    let work = tempfile::tempdir().unwrap();
    let hostile = events_file(
        work.path(),
        "hostile.ndjson",
        values.iter().enumerate().map(|(i, v)| {
            json!({"@timestamp": "2025-04-05T10:23:45.000Z", "svc": v,
                   "test_id": format!("h-{i}"), "message": "hostile"})
        }),
    );
    let bystander = events_file(
        work.path(),
        "bystander.ndjson",
        (0..400).map(|i| {
            json!({"@timestamp": "2025-04-05T10:23:45.000Z", "svc": "qwen-logs-bystander",
                   "test_id": format!("b-{i}"), "message": "bystander"})
        }),
    );
    let addr = lumberd.addr();
    let run = |file: String, window: &str| {
        let window = window.to_string();
        std::thread::spawn(move || {
            let mut cmd = go_lumber();
            cmd.args(["-mode", "async", "-inflight", "4", "-compress", "0"])
                .args(["-window", &window, "-events", &file]);
            run_client(cmd, addr)
        })
    };
    let (b, h) = (run(bystander, "4"), run(hostile, "1"));
    let (bystander, hostile): (ClientRun, ClientRun) = (b.join().unwrap(), h.join().unwrap());
    assert_all_acked(&hostile, lumberd);
    assert_all_acked(&bystander, lumberd);
}

#[test]
fn hostile_index_values_become_dead_letters_in_data_dir_while_a_bystander_is_stored() {
    let escape = tempfile::Builder::new()
        .prefix("lumberd-escape-")
        .tempdir()
        .unwrap();
    let lumberd = Lumberd::builder().config(BY_SVC).start();
    let values = hostile_values(escape.path());
    send_hostile_and_bystander(&lumberd, &values);

    let stored = lumberd.events_by_index();
    let kept: Vec<&str> = stored.keys().map(String::as_str).collect();
    assert_eq!(kept, ["qwen-logs-bystander"], "event files in data_dir");
    let ids: Vec<&str> = stored["qwen-logs-bystander"]
        .iter()
        .map(|e| e["test_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 400, "every bystander event stored once");

    let mut letters: BTreeMap<String, Value> = BTreeMap::new();
    for (_, docs) in lumberd.deadletters_by_index() {
        for d in docs {
            assert_eq!(d["error_kind"], "invalid_index", "{d}");
            let original: Value =
                serde_json::from_str(d["event"]["original"].as_str().unwrap()).unwrap();
            letters.insert(original["test_id"].as_str().unwrap().to_string(), d);
        }
    }
    for (i, v) in values.iter().enumerate() {
        let d = letters
            .get(&format!("h-{i}"))
            .unwrap_or_else(|| panic!("{v:?}: no dead letter; logs:\n{}", lumberd.logs()));
        assert_eq!(d["original_index"], v.as_str());
    }
    assert_eq!(
        letters.len(),
        values.len(),
        "one dead letter per hostile event"
    );

    // Nothing anywhere but the bystander's file and the dead letters, all in data_dir.
    let data_dir = lumberd.data_dir();
    let mut files: Vec<String> = fs::read_dir(data_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ndjson"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0], "qwen-logs-bystander.ndjson");
    assert!(files[1].starts_with(DEAD_LETTER_PREFIX), "{files:?}");
    assert!(
        every_file_under(escape.path()).is_empty(),
        "files written outside data_dir: {:?}",
        every_file_under(escape.path())
    );
    let unique = escape.path().file_name().unwrap().to_string_lossy();
    let sibling = data_dir
        .parent()
        .unwrap()
        .join(format!("{unique}-x.ndjson"));
    assert!(!sibling.exists(), "{} was written", sibling.display());
}

#[test]
fn hostile_index_values_become_dead_letters_in_elasticsearch_and_create_no_index() {
    if !available(Engine::Elasticsearch) {
        return;
    }
    let Some(node) = EsNode::start(&[]) else {
        return;
    };
    let lumberd = lumberd_to(node.url()).config(BY_SVC).start();
    let escape = tempfile::tempdir().unwrap();
    let values = hostile_values(escape.path());
    send_hostile_and_bystander(&lumberd, &values);
    let dead = format!("{DEAD_LETTER_PREFIX}{}", utc_date(now_secs()));
    assert_eq!(
        node.count("qwen-logs-bystander"),
        400,
        "the bystander, once each"
    );
    assert_eq!(
        node.count(&dead),
        values.len() as u64,
        "one dead letter per hostile event in {dead}; logs:\n{}",
        lumberd.logs()
    );
    let (_, indices) = node.request(
        "GET",
        "/_cat/indices?format=json&expand_wildcards=all",
        None,
    );
    let mut names: Vec<&str> = indices
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["index"].as_str())
        .filter(|n| !n.starts_with(".ds-") && !n.starts_with(".security"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["qwen-logs-bystander", dead.as_str()],
        "no index but the bystander's and the dead letters' (a leading-dot name would be a \
         hidden index Elasticsearch accepts)"
    );
}
