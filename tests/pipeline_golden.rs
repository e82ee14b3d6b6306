//! The default pipeline against the golden corpus: `tests/corpus/inputs.ndjson` holds
//! Filebeat events of an inference service (see its README), `expected.ndjson` what the
//! seed deployment's Logstash makes of each, computed by an independent model of
//! Logstash's sources (`tests/corpus/logstash_model.py`). Checked through the pipeline
//! alone and end to end through a running lumberd fed by go-lumber.

mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use lumberd::pipeline::{Pipeline, Scratch};
use lumberd::record::{Origin, RecordKind};
use serde_json::Value;
use support::clients::{go_lumber, run_client};
use support::lumberd::Lumberd;
use support::repo_root;

/// The receive time `logstash_model.py` assumes.
const MODEL_RECEIVED: &str = "2026-01-02T03:04:05.000Z";

struct Case {
    line: usize,
    name: String,
    input: String,
    index: String,
    doc: Value,
}

fn corpus() -> Vec<Case> {
    let dir = repo_root().join("tests/corpus");
    let read = |f: &str| {
        fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("tests/corpus/{f}: {e}"))
    };
    let names: HashMap<usize, String> = read("cases.tsv")
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut cols = l.splitn(3, '\t');
            let n = cols.next()?.parse().ok()?;
            Some((n, format!("{} / {}", cols.next()?, cols.next()?)))
        })
        .collect();
    let inputs = read("inputs.ndjson");
    let expected = read("expected.ndjson");
    let cases: Vec<Case> = inputs
        .lines()
        .zip(expected.lines())
        .enumerate()
        .map(|(i, (input, want))| {
            let want: Value = serde_json::from_str(want).expect("expected.ndjson is JSON");
            Case {
                line: i + 1,
                name: names.get(&(i + 1)).cloned().unwrap_or_default(),
                input: input.to_string(),
                index: want["index"].as_str().expect("index").to_string(),
                doc: want["doc"].clone(),
            }
        })
        .collect();
    assert_eq!(
        cases.len(),
        inputs.lines().count(),
        "inputs.ndjson and expected.ndjson differ in length: regenerate with logstash_model.py"
    );
    assert!(cases.len() >= 100, "the corpus shrank to {}", cases.len());
    cases
}

/// Short form of a value for a failure message (the corpus has 1 MB prompts).
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}… ({} bytes)", &s[..cut], s.len())
    } else {
        s
    }
}

/// The fields where two documents differ, for a readable diagnosis.
fn diff(got: &Value, want: &Value) -> String {
    let (Some(g), Some(w)) = (got.as_object(), want.as_object()) else {
        return format!("got {} want {}", short(got), short(want));
    };
    let mut out = String::new();
    for (k, wv) in w {
        match g.get(k) {
            None => {
                let _ = write!(out, "\n      missing {k}: {}", short(wv));
            }
            Some(gv) if gv != wv => {
                let _ = write!(out, "\n      {k}: got {} want {}", short(gv), short(wv));
            }
            _ => {}
        }
    }
    for (k, gv) in g {
        if !w.contains_key(k) {
            let _ = write!(out, "\n      unexpected {k}: {}", short(gv));
        }
    }
    out
}

#[test]
fn default_pipeline_reproduces_the_logstash_model_event_for_event() {
    let pipeline = Pipeline::default();
    let received = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    let origin = Origin::plain("127.0.0.1:5044".parse().unwrap(), received);
    let mut scratch = Scratch::default();
    let mut failures = String::new();
    let cases = corpus();
    for case in &cases {
        let record = pipeline
            .process_json(Bytes::from(case.input.clone()), &origin, &mut scratch)
            .into_record()
            .expect("the default pipeline drops nothing");
        if record.kind() != RecordKind::Event {
            let _ = writeln!(
                failures,
                "line {} ({}): became a dead letter",
                case.line, case.name
            );
            continue;
        }
        let got: Value = serde_json::from_slice(&record.doc).expect("documents are JSON");
        let index = record.index().map_or("", |i| i.as_str());
        if index != case.index || got != case.doc {
            let _ = writeln!(
                failures,
                "line {} ({}): index {} (want {}){}",
                case.line,
                case.name,
                index,
                case.index,
                diff(&got, &case.doc)
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus events differ from Logstash's (tests/corpus/expected.ndjson):\n{failures}",
        failures.lines().filter(|l| l.starts_with("line")).count(),
        cases.len()
    );
}

/// Replaces the model's receive time, wherever the model used it, with the marker the
/// stored documents get below, so documents compare whatever the clock says.
fn normalise_received(doc: &mut Value, received: &str) {
    if let Some(o) = doc.as_object_mut() {
        if o.get("@timestamp").and_then(Value::as_str) == Some(received) {
            o.insert("@timestamp".into(), Value::from("<received>"));
        }
    }
}

#[test]
fn corpus_sent_by_go_lumber_is_stored_as_logstash_would_with_stable_ids() {
    let cases = corpus();
    let lumberd = Lumberd::start();
    let started = Utc::now();
    let run = |what: &str| {
        let mut cmd = go_lumber();
        cmd.arg("-events")
            .arg(repo_root().join("tests/corpus/inputs.ndjson"))
            .arg("-window")
            .arg("50")
            .arg("-compress")
            .arg("3");
        let run = run_client(cmd, lumberd.addr());
        let acked = run.result["events_acked"].as_u64();
        assert!(
            run.status.success() && acked == Some(cases.len() as u64),
            "{what}: {} of {} events acknowledged\n{}\n--- lumberd logs ---\n{}",
            acked.unwrap_or(0),
            cases.len(),
            run.describe(),
            lumberd.logs()
        );
    };
    run("first send");
    let finished = Utc::now();
    let stored = lumberd.events_with_ids();
    // Any receive time of this run counts as "the receive time".
    let in_run = |v: &Value| {
        v.as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .is_some_and(|t| {
                let t = t.with_timezone(&Utc);
                t >= started - chrono::Duration::seconds(1)
                    && t <= finished + chrono::Duration::seconds(1)
            })
    };
    let mut want: HashMap<String, Vec<&Case>> = HashMap::new();
    for case in &cases {
        let mut doc = case.doc.clone();
        normalise_received(&mut doc, MODEL_RECEIVED);
        want.entry(doc.to_string()).or_default().push(case);
    }
    let mut problems = String::new();
    let mut ids = Vec::new();
    for (id, doc) in &stored {
        let mut doc = doc.clone();
        if doc.get("@timestamp").is_some_and(in_run) {
            doc["@timestamp"] = Value::from("<received>");
        }
        match want.get_mut(&doc.to_string()).and_then(Vec::pop) {
            Some(_) => ids.extend(id.clone()),
            None => {
                let _ = writeln!(problems, "stored but not expected: {}", short(&doc));
            }
        }
    }
    for cases in want.values() {
        for c in cases {
            let _ = writeln!(
                problems,
                "line {} ({}): expected but not stored",
                c.line, c.name
            );
        }
    }
    assert!(
        problems.is_empty(),
        "the stored documents differ from the Logstash model:\n{problems}"
    );
    // Every corpus event has a distinct origin: one id each.
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "two corpus events share an id");

    // Filebeat resends a window after a broken connection: same events, same ids.
    run("resend");
    let mut copies: HashMap<String, usize> = HashMap::new();
    for (id, _) in lumberd.events_with_ids() {
        if let Some(id) = id {
            *copies.entry(id).or_default() += 1;
        }
    }
    let wrong: Vec<_> = copies.iter().filter(|(_, n)| **n != 2).collect();
    assert!(
        wrong.is_empty() && copies.len() == ids.len(),
        "after sending the corpus twice each id must appear exactly twice (a duplicate for \
         Elasticsearch's create), got {} ids, wrong counts: {wrong:?}",
        copies.len()
    );
}
