//! Invariants of the pipeline over generated input: it never panics, whatever the JSON
//! (or the bytes); every record is a single-line JSON object for a sane index; the
//! document id depends on the event's origin and its line (`message`), on nothing else.

use bytes::Bytes;
use chrono::Utc;
use lumberd::pipeline::{Pipeline, Scratch};
use lumberd::record::{Origin, RecordKind};
use proptest::prelude::*;
use serde_json::{json, Value};

fn origin() -> Origin {
    Origin::plain("127.0.0.1:5044".parse().unwrap(), Utc::now())
}

/// Strings that hit the filters' special cases as well as arbitrary text.
fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9,._e+xX -]{0,12}",
        Just("2025-04-05T10:23:45Z".to_string()),
        Just("2024-02-29 23:59:59.999+0800".to_string()),
        Just("\u{3000}42".to_string()),
        Just("0x".to_string()),
        Just("1e99999999".to_string()),
        Just("{\"a\":".to_string()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        tricky_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("timestamp".to_string()),
                    Just("@timestamp".to_string()),
                    Just("tags".to_string()),
                    Just("inference_time_ms".to_string()),
                    Just("response_length".to_string()),
                    Just("message".to_string()),
                    Just("@metadata".to_string()),
                    "[a-z@_.]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A Filebeat-shaped event whose message is the JSON text of `inner` and whose other
/// fields are arbitrary.
fn event() -> impl Strategy<Value = Value> {
    (json_value(), json_value(), json_value(), any::<bool>()).prop_map(
        |(inner, outer, stamp, message_is_json)| {
            let mut e = match outer {
                Value::Object(m) => Value::Object(m),
                other => json!({ "x": other }),
            };
            e["message"] = if message_is_json {
                Value::from(inner.to_string())
            } else {
                inner
            };
            e["@timestamp"] = stamp;
            e
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn pipeline_never_panics_and_writes_one_json_object_per_line(e in event()) {
        let payload = Bytes::from(e.to_string());
        let r = Pipeline::default()
            .process_json(payload, &origin(), &mut Scratch::default())
            .into_record()
            .expect("the default pipeline drops nothing");
        prop_assert_eq!(r.kind(), RecordKind::Event);
        prop_assert!(!r.doc.contains(&b'\n'), "a raw newline would split the line");
        let doc: Value = serde_json::from_slice(&r.doc).expect("the document is JSON");
        prop_assert!(doc.is_object());
        prop_assert!(doc.get("@metadata").is_none());
        prop_assert!(doc["@timestamp"].is_string(), "{}", doc);
        let index = r.index().map_or("", |i| i.as_str());
        prop_assert!(index.starts_with("qwen-logs-") && index.len() == 20, "{}", index);
    }

    #[test]
    fn pipeline_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let r = Pipeline::default()
            .process_json(Bytes::from(bytes), &origin(), &mut Scratch::default())
            .into_record()
            .expect("the default pipeline drops nothing");
        prop_assert!(!r.doc.contains(&b'\n'));
    }

    #[test]
    fn id_is_the_same_for_the_same_origin_and_line_and_differs_across_them(
        agent in "[a-f0-9-]{1,36}",
        path in "/[a-z/._]{1,40}",
        offset in any::<u64>(),
        line in any::<String>(),
        a in event(),
        b in event(),
    ) {
        let with_origin = |mut e: Value, offset: u64, line: &str| {
            e["agent"] = json!({ "id": agent, "name": "n" });
            e["host"] = json!({ "name": "h" });
            e["log"] = json!({ "offset": offset, "file": { "path": path } });
            e["message"] = json!(line);
            let r = Pipeline::default()
                .process_json(Bytes::from(e.to_string()), &origin(), &mut Scratch::default())
                .into_record()
                .unwrap();
            r.id.expect("a full origin gives an id")
        };
        prop_assert_eq!(with_origin(a.clone(), offset, &line), with_origin(b, offset, &line));
        prop_assert_ne!(
            with_origin(a.clone(), offset, &line),
            with_origin(a.clone(), offset.wrapping_add(1), &line)
        );
        // A rotated file's line at the same (path, offset) is another event.
        let other = format!("{line}.");
        prop_assert_ne!(with_origin(a.clone(), offset, &line), with_origin(a, offset, &other));
    }
}
