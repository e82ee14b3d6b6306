//! Filter conditions (`if = "..."`): any condition lumberd prints parses back to the same
//! tree (the importer relies on it), and through a running lumberd fed by go-lumber a
//! pipeline drops DEBUG lines and routes ERROR lines to their own index, with every
//! window acknowledged.

mod support;

use std::fmt::Write as _;
use std::fs;

use lumberd::pipeline::condition::{BoolOp, CmpOp, Literal, Node, Operand};
use lumberd::pipeline::{Condition, FieldPath};
use proptest::prelude::*;
use support::clients::{go_lumber, run_client};
use support::lumberd::{lumberd_command, metric, Lumberd};

fn field() -> impl Strategy<Value = FieldPath> {
    prop::collection::vec("[a-z@_][a-z0-9_ .-]{0,6}", 1..3).prop_map(|segs| {
        let text: String = segs.iter().map(|s| format!("[{}]", s.trim_end())).collect();
        FieldPath::parse(&text.replace("[]", "[x]")).unwrap()
    })
}

fn scalar() -> impl Strategy<Value = Literal> {
    prop_oneof![
        // Quotes and backslashes in the text Logstash's lexer can carry.
        "[a-zA-Z0-9 _:/.你好-]{0,8}(\\\\\"[a-z]{0,3})?".prop_map(|s| Literal::Str(s.into())),
        "[a-z']{0,5}".prop_map(|s| Literal::Str(s.into())),
        any::<i64>().prop_map(Literal::Int),
        (-1.0e6f64..1.0e6).prop_map(|f| Literal::Float((f * 100.0).round() / 100.0)),
    ]
}

fn operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        field().prop_map(Operand::Field),
        scalar().prop_map(Operand::Literal)
    ]
}

fn leaf() -> impl Strategy<Value = Node> {
    let cmp = prop_oneof![
        Just(CmpOp::Eq),
        Just(CmpOp::Ne),
        Just(CmpOp::Lt),
        Just(CmpOp::Le),
        Just(CmpOp::Gt),
        Just(CmpOp::Ge)
    ];
    prop_oneof![
        field().prop_map(Node::Truthy),
        (cmp, field(), operand()).prop_map(|(op, f, o)| Node::Compare(op, Operand::Field(f), o)),
        (field(), "\\^?[a-z.]{1,5}[*+]?\\$?", any::<bool>()).prop_map(|(f, re, negated)| {
            let c = Condition::parse(&format!("{f} =~ /{re}/")).unwrap();
            match c.root().clone() {
                Node::Match { regex, .. } => Node::Match {
                    field: f,
                    regex,
                    negated,
                },
                _ => unreachable!(),
            }
        }),
        (
            field(),
            prop::collection::vec(scalar(), 2..4),
            any::<bool>()
        )
            .prop_map(|(f, items, negated)| {
                Node::In {
                    item: Operand::Field(f),
                    set: Operand::Literal(Literal::List(items)),
                    negated,
                }
            }),
        (scalar(), field(), any::<bool>()).prop_map(|(s, f, negated)| Node::In {
            item: Operand::Literal(s),
            set: Operand::Field(f),
            negated,
        }),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    leaf().prop_recursive(4, 24, 2, |inner| {
        let op = prop_oneof![
            Just(BoolOp::And),
            Just(BoolOp::Or),
            Just(BoolOp::Xor),
            Just(BoolOp::Nand)
        ];
        prop_oneof![
            inner.clone().prop_map(|n| Node::Not(Box::new(n))),
            (op, inner.clone(), inner).prop_map(|(op, l, r)| Node::Bool(
                op,
                Box::new(l),
                Box::new(r)
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_printed_condition_parses_back_to_the_same_tree(root in node()) {
        let c = Condition::from_node(root);
        let text = c.to_string();
        let back = Condition::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e:?}")))?;
        prop_assert_eq!(&back, &c, "printed as {}", text);
        prop_assert_eq!(back.to_string(), text);
    }
}

fn event(offset: usize, level: &str) -> String {
    let inner = format!(
        r#"{{"timestamp":"2025-04-05T10:23:{:02}Z","level":"{level}","request_id":"req_{offset}","response_length":"{offset}","inference_time_ms":12,"status":"success"}}"#,
        offset % 60
    );
    serde_json::json!({
        "@timestamp": "2025-04-05T10:23:45.000Z",
        "message": inner,
        "log": {"offset": offset, "file": {"path": "/var/log/qwen/inference.log"}},
        "host": {"name": "gpu-node-1"},
        "agent": {"id": "0b8f3f5e-3c1e-4d7a-9d55-5a7f0c2b9e11", "type": "filebeat"},
    })
    .to_string()
}

const ROUTING: &str = r#"
[pipeline]
index = "%{[@metadata][index]}"

[[pipeline.filter]]
json = { source = "message" }

[[pipeline.filter]]
date = { field = "timestamp", formats = ["ISO8601"] }

[[pipeline.filter]]
convert = { fields = { inference_time_ms = "integer", response_length = "integer" } }

[[pipeline.filter]]
remove = { fields = ["host", "agent", "ecs"] }

[[pipeline.filter]]
if = '[level] == "DEBUG"'
drop = {}

[[pipeline.filter]]
replace = { fields = { "[@metadata][index]" = "qwen-logs-%{+yyyy.MM.dd}" } }

[[pipeline.filter]]
if = '[level] == "ERROR" or [status] in ["error", "timeout"]'
replace = { fields = { "[@metadata][index]" = "qwen-logs-errors-%{+yyyy.MM.dd}" } }
"#;

#[test]
fn a_running_lumberd_drops_debug_lines_and_routes_error_lines_to_their_own_index() {
    let levels = ["INFO", "DEBUG", "ERROR", "WARN", "DEBUG", "INFO", "ERROR"];
    let mut ndjson = String::new();
    let mut want = std::collections::BTreeMap::<&str, Vec<usize>>::new();
    for i in 0..140 {
        let level = levels[i % levels.len()];
        let _ = writeln!(ndjson, "{}", event(i, level));
        match level {
            "DEBUG" => {}
            "ERROR" => want
                .entry("qwen-logs-errors-2025.04.05")
                .or_default()
                .push(i),
            _ => want.entry("qwen-logs-2025.04.05").or_default().push(i),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    fs::write(&events, &ndjson).unwrap();

    let lumberd = Lumberd::builder().config(ROUTING).start();
    let mut cmd = go_lumber();
    cmd.arg("-events").arg(&events).arg("-window").arg("20");
    let run = run_client(cmd, lumberd.addr());
    assert!(
        run.status.success() && run.result["events_acked"].as_u64() == Some(140),
        "every window, dropped events included, must be acknowledged\n{}\n{}",
        run.describe(),
        lumberd.logs()
    );
    lumberd.wait_for_metric(
        "lumberd_pipeline_events_total{result=\"dropped\"}",
        40.0,
        std::time::Duration::from_secs(10),
    );
    let stored = lumberd.events_by_index();
    let got: std::collections::BTreeMap<&str, Vec<usize>> = stored
        .iter()
        .map(|(index, docs)| {
            let mut offsets: Vec<usize> = docs
                .iter()
                .map(|d| d["response_length"].as_u64().expect("converted") as usize)
                .collect();
            offsets.sort_unstable();
            (index.as_str(), offsets)
        })
        .collect();
    assert_eq!(got, want, "indices and the events in them");
    for (index, docs) in &stored {
        for d in docs {
            assert!(
                d.get("@metadata").is_none() && d.get("host").is_none(),
                "{index}: {d}"
            );
            assert_ne!(d["level"], "DEBUG", "{index}: a DEBUG line was stored");
        }
    }
    let scrape = lumberd.scrape();
    assert_eq!(
        metric(&scrape, "lumberd_pipeline_events_total{result=\"dropped\"}"),
        Some(40.0),
        "{scrape}"
    );
    assert_eq!(
        metric(
            &scrape,
            "lumberd_pipeline_failures_total{kind=\"condition\"}"
        ),
        Some(0.0),
        "{scrape}"
    );
}

#[test]
fn check_config_reports_a_bad_condition_with_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    fs::write(
        &path,
        "[[pipeline.filter]]\njson = { source = \"message\" }\n\n[[pipeline.filter]]\nif = '[level] == \"DEBUG\" and'\ndrop = {}\n",
    )
    .unwrap();
    let out = lumberd_command()
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 5")
            && stderr.contains("column 23")
            && stderr.contains("end of the condition"),
        "{stderr}"
    );
}
