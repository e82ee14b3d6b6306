//! From payload to record: the declarative pipeline (Logstash's json, date, mutate and
//! friends, configured in `[pipeline]`), the document id, daily index routing and dead
//! letters. Pure and synchronous: no I/O, no protocol types, no globals.
//!
//! Per event: one validating parse of the top level (values stay borrowed slices of the
//! payload), the filters (which parse only what they read), then one write of the
//! document from those slices. An event no filter changed is passed on as the payload
//! itself, without a copy.

pub mod condition;
mod convert;
mod date;
mod doc;
mod filter;
mod fingerprint;
mod metrics;
mod path;
mod template;
mod value;

use std::sync::Arc;

use bumpalo::Bump;
use bytes::Bytes;
use chrono::NaiveDate;

pub use condition::{Condition, EvalError, ParseError as ConditionError};
pub use convert::Conversion;
pub use date::{DateFormat, Zone};
pub use doc::{Doc, Failure, Failures};
pub use filter::{
    Filter, Flow, Step, CONDITION_FAILURE_TAG, DATE_FAILURE_TAG, JSON_FAILURE_TAG,
    MUTATE_FAILURE_TAG,
};
pub use fingerprint::{Fingerprint, DEFAULT_FINGERPRINT};
pub use metrics::{LabelSpec, LogMetrics, MetricKind, MetricSpec, OTHER};
pub use path::FieldPath;
pub use template::Template;

use crate::record::{
    dead_letter_doc, id_of_bytes, invalid_index_doc, DeadLetter, DeadLetterReason, Destination,
    IndexName, InvalidIndexName, Origin, PayloadError, Record, MAX_INDEX_NAME_BYTES,
};
use value::{parse_object, write_object, Object, Value};

/// The index template of the seed deployment's Logstash output.
pub const DEFAULT_INDEX: &str = "qwen-logs-%{+yyyy.MM.dd}";

/// A validated pipeline configuration.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub filters: Vec<Step>,
    pub index: Template,
    /// `None`: no document ids (Elasticsearch assigns them; resends may duplicate).
    pub fingerprint: Option<Fingerprint>,
    pub metrics: Vec<MetricSpec>,
    /// The longest index name (UTF-8 bytes) an event may be routed to: Elasticsearch's
    /// [`MAX_INDEX_NAME_BYTES`], less for the file output, whose file names add a suffix.
    pub max_index_bytes: usize,
}

impl PipelineSettings {
    /// No filters, no ids, no metrics: events are stored as received (plus the input's
    /// `@timestamp` and `@metadata` rules), routed by `@timestamp` to `qwen-logs-*`.
    pub fn passthrough() -> PipelineSettings {
        PipelineSettings {
            filters: Vec::new(),
            index: Template::parse(DEFAULT_INDEX).expect("a valid built-in template"),
            fingerprint: None,
            metrics: Vec::new(),
            max_index_bytes: MAX_INDEX_NAME_BYTES,
        }
    }

    /// The seed deployment's Logstash filter: `json { source => "message" }`,
    /// `date { match => ["timestamp","ISO8601"] }`, `mutate { convert => ...
    /// remove_field => [host, agent, ecs] }`, and the Qwen service's metrics.
    pub fn qwen() -> PipelineSettings {
        let path = |p: &str| FieldPath::parse(p).expect("a valid built-in path");
        PipelineSettings {
            filters: vec![
                Filter::Json {
                    source: path("message"),
                    target: None,
                    tag_on_failure: vec![JSON_FAILURE_TAG.into()],
                },
                Filter::Date {
                    field: path("timestamp"),
                    formats: vec![DateFormat::Iso8601],
                    target: path("@timestamp"),
                    timezone: Zone::Utc,
                    tag_on_failure: vec![DATE_FAILURE_TAG.into()],
                },
                Filter::Convert {
                    fields: vec![
                        (path("inference_time_ms"), Conversion::Integer),
                        (path("response_length"), Conversion::Integer),
                    ],
                    tag_on_failure: vec![MUTATE_FAILURE_TAG.into()],
                },
                Filter::Remove {
                    fields: vec![path("host"), path("agent"), path("ecs")],
                },
            ]
            .into_iter()
            .map(Step::always)
            .collect(),
            index: Template::parse(DEFAULT_INDEX).expect("a valid built-in template"),
            fingerprint: Some(
                Fingerprint::parse(&DEFAULT_FINGERPRINT).expect("a valid built-in fingerprint"),
            ),
            metrics: metrics::qwen_metrics(),
            max_index_bytes: MAX_INDEX_NAME_BYTES,
        }
    }
}

/// Per-connection scratch space: the arena an event's parse lives in (reset per event)
/// and the index names used lately, so events of the same few days format and allocate
/// their index name once.
#[derive(Default)]
pub struct Scratch {
    bump: Bump,
    names: Names,
}

/// Arena bytes a connection keeps between events. One huge event (a 10 MiB prompt) must
/// not leave its arena pinned to the connection for its lifetime, outside the in-flight
/// budget; ordinary events fit in far less.
const ARENA_RETAIN_BYTES: usize = 1024 * 1024;

fn reset_arena(bump: &mut Bump) {
    if bump.allocated_bytes() > ARENA_RETAIN_BYTES {
        *bump = Bump::new();
    } else {
        bump.reset();
    }
}

/// Recent index names (each checked once), a buffer to render names and label values
/// in, and one to write documents in (each is then copied out at its exact size: one
/// allocation per document, not a doubled buffer and the `Bytes` header for it).
#[derive(Default)]
struct Names {
    text: String,
    recent: Vec<(IndexKey, Routed)>,
    doc: Vec<u8>,
}

/// A rendered index name: valid, or the name and why Elasticsearch would refuse it.
type Routed = Result<IndexName, (Arc<str>, InvalidIndexName)>;

/// Index names remembered per connection: a window spans a day or two (midnight, late
/// events).
const RECENT_INDEX_NAMES: usize = 4;

impl Names {
    fn find(&self, key: &IndexKey) -> Option<Routed> {
        self.recent
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, n)| n.clone())
    }

    fn remember(&mut self, key: IndexKey, name: Routed) -> Routed {
        if self.recent.len() == RECENT_INDEX_NAMES {
            drop(self.recent.remove(0));
        }
        self.recent.push((key, name.clone()));
        name
    }

    /// The rendered `text`, checked.
    fn check(&self, max_bytes: usize) -> Routed {
        IndexName::new(&self.text, max_bytes).map_err(|why| (self.text.as_str().into(), why))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum IndexKey {
    Day(NaiveDate),
    Text,
}

#[derive(Debug)]
pub struct Pipeline {
    filters: Vec<Step>,
    index: Template,
    index_daily: bool,
    fingerprint: Option<Fingerprint>,
    metrics: LogMetrics,
    max_index_bytes: usize,
}

/// What the pipeline made of one event. The caller counts it
/// (`lumberd_pipeline_events_total`, `lumberd_pipeline_failures_total`); only the
/// log-derived metrics are the pipeline's own.
#[derive(Debug)]
pub enum Outcome {
    /// Through every filter: the record to store, and what it was tagged with on the way.
    Passed(Record, Failures),
    /// A `drop` filter dropped it: nothing to store, and its window still completes.
    Dropped(Failures),
    /// Not a JSON object, not UTF-8, or routed to an invalid index name: kept as a dead
    /// letter with its raw bytes, or the event as it would have been stored.
    DeadLettered(Record),
}

impl Outcome {
    /// The record to store, if any.
    pub fn into_record(self) -> Option<Record> {
        match self {
            Outcome::Passed(record, _) | Outcome::DeadLettered(record) => Some(record),
            Outcome::Dropped(_) => None,
        }
    }

    /// The filter failures the event was tagged with.
    pub fn failures(&self) -> Failures {
        match self {
            Outcome::Passed(_, f) | Outcome::Dropped(f) => *f,
            Outcome::DeadLettered(_) => Failures::default(),
        }
    }
}

impl Default for Pipeline {
    /// The Qwen pipeline, with its metrics in a registry of its own.
    fn default() -> Self {
        Pipeline::new(&PipelineSettings::qwen(), &prometheus::Registry::new())
            .expect("the built-in metrics register")
    }
}

impl Pipeline {
    /// See [`PipelineSettings::passthrough`].
    pub fn passthrough() -> Pipeline {
        Pipeline::new(
            &PipelineSettings::passthrough(),
            &prometheus::Registry::new(),
        )
        .expect("no metrics to register")
    }

    /// Builds the pipeline; its log-derived metrics are registered in `registry`.
    pub fn new(
        settings: &PipelineSettings,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<Pipeline> {
        Ok(Pipeline {
            filters: settings.filters.clone(),
            index_daily: settings.index.is_daily(),
            index: settings.index.clone(),
            fingerprint: settings.fingerprint.clone(),
            metrics: LogMetrics::new(&settings.metrics, registry)?,
            max_index_bytes: settings.max_index_bytes,
        })
    }

    /// A `J` frame's payload: an event when it is a JSON object, a dead letter otherwise.
    pub fn process_json(&self, payload: Bytes, origin: &Origin, scratch: &mut Scratch) -> Outcome {
        // serde_json does not check the UTF-8 of strings it skips; JSON must be UTF-8
        // (RFC 8259 section 8.1) and Elasticsearch would reject the document later.
        let Scratch { bump, names } = scratch;
        // simdutf8: std's validation is a tenth of the pipeline's time on CJK text.
        let Ok(text) = simdutf8::basic::from_utf8(&payload) else {
            return dead_letter(&payload, PayloadError::NotUtf8, origin);
        };
        reset_arena(bump);
        let root = match parse_object(text, bump) {
            Ok(root) => root,
            Err(e) => {
                let reason = PayloadError::NotJsonObject(e.to_string());
                return dead_letter(&payload, reason, origin);
            }
        };
        self.run(root, Some(&payload), origin, bump, names)
    }

    /// A v1 `D` frame's key/value pairs: an event whose fields are strings.
    pub fn process_pairs(
        &self,
        pairs: &[(Bytes, Bytes)],
        origin: &Origin,
        scratch: &mut Scratch,
    ) -> Outcome {
        let Scratch { bump, names } = scratch;
        reset_arena(bump);
        let mut root = Object::new_in(bump);
        for (k, v) in pairs {
            match (std::str::from_utf8(k), std::str::from_utf8(v)) {
                (Ok(k), Ok(v)) => root.insert(k, Value::Str(v)),
                _ => {
                    let mut raw = Vec::new();
                    for (k, v) in pairs {
                        raw.extend_from_slice(k);
                        raw.push(b'=');
                        raw.extend_from_slice(v);
                        raw.push(b'\n');
                    }
                    return dead_letter(&raw, PayloadError::NotUtf8, origin);
                }
            }
        }
        // Pairs have no JSON form to pass through: always written.
        self.run(root, None, origin, bump, names)
    }

    fn run<'a>(
        &self,
        root: Object<'a>,
        payload: Option<&Bytes>,
        origin: &Origin,
        bump: &'a Bump,
        names: &mut Names,
    ) -> Outcome {
        let mut doc = Doc::new(root, bump, origin.received);
        if payload.is_none() {
            doc.modified = true;
        }
        if let Some(tls) = &origin.tls {
            set_tls_metadata(&mut doc, tls);
        }
        // Before any filter: the fields that identify the origin may be removed by one.
        let id = self.fingerprint.as_ref().and_then(|f| f.id(&mut doc));
        for step in &self.filters {
            if step.apply(&mut doc) == Flow::Drop {
                return Outcome::Dropped(doc.failures);
            }
        }
        if !self.metrics.is_empty() {
            self.metrics.record(&mut doc, &mut names.text);
        }
        let index = self.index_name(&mut doc, names);
        let bytes = match payload {
            Some(p) if !doc.modified && memchr::memchr2(b'\n', b'\r', p).is_none() => p.clone(),
            _ => {
                let out = &mut names.doc;
                out.clear();
                write_object(&doc.root, out);
                let bytes = Bytes::copy_from_slice(out);
                // A huge event's buffer is not kept for the next one.
                if out.capacity() > ARENA_RETAIN_BYTES {
                    *out = Vec::new();
                }
                bytes
            }
        };
        let index = match index {
            Ok(index) => index,
            // Checked here, before any output sees it: a client-controlled field routes
            // nowhere Elasticsearch or the file output's directory would not take.
            Err((name, why)) => {
                let raw = payload.unwrap_or(&bytes);
                return Outcome::DeadLettered(Record {
                    dest: Destination::DeadLetter(DeadLetter {
                        reason: DeadLetterReason::InvalidIndex,
                        day: origin.received.date_naive(),
                    }),
                    id: id.or_else(|| Some(id_of_bytes(raw))),
                    doc: invalid_index_doc(&bytes, &name, &why, origin),
                });
            }
        };
        let record = Record {
            dest: Destination::Index(index),
            id,
            doc: bytes,
        };
        Outcome::Passed(record, doc.failures)
    }

    /// The event's index, rendered from `pipeline.index` and checked against
    /// Elasticsearch's rules (the one place an index name is computed).
    fn index_name(&self, doc: &mut Doc, names: &mut Names) -> Routed {
        if !self.index_daily {
            names.text.clear();
            self.index.render(doc, &mut names.text);
            if let Some((IndexKey::Text, routed)) = names.recent.last() {
                let last = match routed {
                    Ok(name) => name.as_str(),
                    Err((name, _)) => name,
                };
                if *last == *names.text {
                    return routed.clone();
                }
            }
            let routed = names.check(self.max_index_bytes);
            return names.remember(IndexKey::Text, routed);
        }
        let key = IndexKey::Day(doc.timestamp().date_naive());
        if let Some(routed) = names.find(&key) {
            return routed;
        }
        names.text.clear();
        self.index.render(doc, &mut names.text);
        let routed = names.check(self.max_index_bytes);
        names.remember(key, routed)
    }
}

/// Logstash's `[@metadata][tls_peer]`, for routing or tagging by client certificate.
fn set_tls_metadata(doc: &mut Doc, tls: &crate::record::TlsPeer) {
    let bump = doc.bump;
    let mut peer = Object::new_in(bump);
    let status = if tls.subject.is_some() {
        "verified"
    } else {
        "unverified"
    };
    peer.insert("status", Value::Str(status));
    if let Some(subject) = &tls.subject {
        peer.insert("subject", Value::Str(bump.alloc_str(subject)));
    }
    let mut sans = bumpalo::collections::Vec::with_capacity_in(tls.sans.len(), bump);
    for san in &tls.sans {
        sans.push(Value::Str(bump.alloc_str(san)));
    }
    peer.insert("sans", Value::Array(sans));
    peer.insert("protocol", Value::Str(bump.alloc_str(&tls.protocol)));
    peer.insert("cipher", Value::Str(bump.alloc_str(&tls.cipher)));
    doc.metadata.insert("tls_peer", Value::Object(peer));
}

/// A payload that is not an event: stored as a dead letter, under an id from its bytes
/// (it has no origin fields), so a resent window stores it once.
fn dead_letter(raw: &[u8], reason: PayloadError, origin: &Origin) -> Outcome {
    Outcome::DeadLettered(Record {
        dest: Destination::DeadLetter(DeadLetter {
            reason: reason.reason(),
            day: origin.received.date_naive(),
        }),
        id: Some(id_of_bytes(raw)),
        doc: dead_letter_doc(raw, &reason, origin),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordKind;
    use chrono::{TimeZone, Utc};
    use serde_json::{json, Value as Json};

    fn origin() -> Origin {
        Origin::plain(
            "127.0.0.1:1234".parse().unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        )
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

    const FILEBEAT_EVENT: &str = r#"{"@timestamp":"2025-04-05T10:23:46.789Z","@metadata":{"beat":"filebeat","type":"_doc","version":"8.11.3"},"log":{"offset":1234,"file":{"path":"/var/log/qwen/inference.log"}},"message":"{\"timestamp\":\"2025-04-05T10:23:45Z\",\"level\":\"INFO\",\"request_id\":\"req_abc123xyz\",\"prompt\":\"你好，请介绍一下你自己\",\"response_length\":\"156\",\"inference_time_ms\":892.7,\"status\":\"success\"}","input":{"type":"filestream"},"ecs":{"version":"8.0.0"},"host":{"name":"gpu-node-1"},"agent":{"id":"0b8f3f5e-3c1e-4d7a-9d55-5a7f0c2b9e11","name":"gpu-node-1","type":"filebeat","version":"8.11.3"}}"#;

    #[test]
    fn a_huge_event_does_not_leave_its_arena_pinned_to_the_connection() {
        let mut scratch = Scratch::default();
        let huge = format!(r#"{{"message":"{}"}}"#, "x\\n".repeat(1 << 20));
        Pipeline::default().process_json(Bytes::from(huge), &origin(), &mut scratch);
        Pipeline::default().process_json(
            Bytes::from_static(br#"{"message":"small"}"#),
            &origin(),
            &mut scratch,
        );
        assert!(
            scratch.bump.allocated_bytes() <= ARENA_RETAIN_BYTES,
            "arena still holds {} bytes after a small event",
            scratch.bump.allocated_bytes()
        );
    }

    #[test]
    fn qwen_pipeline_reproduces_the_logstash_filter_on_a_filebeat_event() {
        let r = run_on(&Pipeline::default(), FILEBEAT_EVENT.as_bytes()).unwrap();
        assert_eq!(
            r.index().map(IndexName::as_str),
            Some("qwen-logs-2025.04.05")
        );
        let inner = "{\"timestamp\":\"2025-04-05T10:23:45Z\",\"level\":\"INFO\",\"request_id\":\"req_abc123xyz\",\"prompt\":\"你好，请介绍一下你自己\",\"response_length\":\"156\",\"inference_time_ms\":892.7,\"status\":\"success\"}";
        assert_eq!(
            doc(&r),
            json!({
                "@timestamp": "2025-04-05T10:23:45.000Z",
                "log": {"offset": 1234, "file": {"path": "/var/log/qwen/inference.log"}},
                "message": inner,
                "input": {"type": "filestream"},
                "timestamp": "2025-04-05T10:23:45Z",
                "level": "INFO",
                "request_id": "req_abc123xyz",
                "prompt": "你好，请介绍一下你自己",
                "response_length": 156,
                "inference_time_ms": 892,
                "status": "success"
            })
        );
        assert!(r.id.is_some(), "a Filebeat event has an origin, so an id");
    }

    #[test]
    fn document_id_depends_on_the_origin_and_the_line_only() {
        let p = Pipeline::default();
        let a = run_on(&p, FILEBEAT_EVENT.as_bytes()).unwrap().id.unwrap();
        // Other fields of the same event (Filebeat's read time) do not count: a resend
        // after a Filebeat restart reads the line again at another time.
        let read_later = FILEBEAT_EVENT.replace("10:23:46.789Z", "11:00:00.000Z");
        assert_eq!(run_on(&p, read_later.as_bytes()).unwrap().id, Some(a));
        let no_message = FILEBEAT_EVENT.replace(
            &FILEBEAT_EVENT[FILEBEAT_EVENT.find("\"message\"").unwrap()
                ..FILEBEAT_EVENT.find("\"input\"").unwrap()],
            "",
        );
        assert!(
            run_on(&p, no_message.as_bytes()).unwrap().id.is_some(),
            "the line is an optional part"
        );
        for (what, changed) in [
            // Another line at the same (path, offset): a file rotated by rename or
            // copytruncate, whose events Filebeat names by the path alone.
            ("line", FILEBEAT_EVENT.replace("req_abc123xyz", "req_other")),
            (
                "offset",
                FILEBEAT_EVENT.replace("\"offset\":1234", "\"offset\":1235"),
            ),
            (
                "path",
                FILEBEAT_EVENT.replace("inference.log", "inference.log.1"),
            ),
            ("agent", FILEBEAT_EVENT.replace("0b8f3f5e", "1b8f3f5e")),
        ] {
            let id = run_on(&p, changed.as_bytes()).unwrap().id;
            assert!(
                id.is_some() && id != Some(a),
                "a different {what} must give another id"
            );
        }
        let no_offset = FILEBEAT_EVENT.replace("\"offset\":1234,", "");
        assert_eq!(
            run_on(&p, no_offset.as_bytes()).unwrap().id,
            None,
            "half an origin gives no id"
        );
        let host_only =
            FILEBEAT_EVENT.replace("\"id\":\"0b8f3f5e-3c1e-4d7a-9d55-5a7f0c2b9e11\",", "");
        assert!(
            run_on(&p, host_only.as_bytes()).unwrap().id.is_some(),
            "host.name stands in for agent.id"
        );
    }

    #[test]
    fn index_is_the_utc_day_of_the_event_timestamp() {
        let r = run_on(
            &Pipeline::passthrough(),
            br#"{"@timestamp":"2025-04-05T23:30:00.000-02:00","message":"x"}"#,
        )
        .unwrap();
        assert_eq!(
            r.index().map(IndexName::as_str),
            Some("qwen-logs-2025.04.06"),
            "-02:00 at 23:30 is the next UTC day"
        );
        assert_eq!(r.kind(), RecordKind::Event);
    }

    #[test]
    fn event_without_usable_timestamp_gets_the_receive_time_like_logstash() {
        let p = Pipeline::passthrough();
        let r = run_on(&p, br#"{"message":"x"}"#).unwrap();
        assert_eq!(
            r.index().map(IndexName::as_str),
            Some("qwen-logs-2026.01.02")
        );
        assert_eq!(doc(&r)["@timestamp"], "2026-01-02T03:04:05.000Z");
        // With a message (Filebeat's events) the beats input just uses the receive time.
        let r = run_on(&p, br#"{"@timestamp":"yesterday","message":"x"}"#).unwrap();
        assert_eq!(
            doc(&r),
            json!({"@timestamp":"2026-01-02T03:04:05.000Z","message":"x"})
        );
        // Without one the event is built as is: the bad value is kept and tagged.
        for bad in [
            &br#"{"@timestamp":12,"msg":"x"}"#[..],
            br#"{"@timestamp":"yesterday"}"#,
        ] {
            let r = run_on(&p, bad).unwrap();
            let d = doc(&r);
            assert_eq!(
                r.index().map(IndexName::as_str),
                Some("qwen-logs-2026.01.02")
            );
            assert_eq!(d["@timestamp"], "2026-01-02T03:04:05.000Z");
            assert_eq!(d["tags"], json!(["_timestampparsefailure"]), "{d}");
            assert!(d["_@timestamp"].is_string(), "{d}");
        }
    }

    #[test]
    fn event_no_filter_changed_is_stored_as_received_without_copying() {
        let payload = Bytes::from_static(br#"{"@timestamp":"2025-04-05T10:23:45.000Z","a":[1,2]}"#);
        let r = Pipeline::passthrough()
            .process_json(payload.clone(), &origin(), &mut Scratch::default())
            .into_record()
            .unwrap();
        assert_eq!(
            r.doc.as_ptr(),
            payload.as_ptr(),
            "an unchanged payload must not be copied"
        );
    }

    #[test]
    fn pretty_printed_json_is_compacted_to_one_line() {
        let r = run_on(
            &Pipeline::passthrough(),
            b"{\n  \"@timestamp\": \"2025-04-05T10:23:45.000Z\",\n  \"a\": [1,\n 2]\n}",
        )
        .unwrap();
        assert_eq!(
            &r.doc[..],
            br#"{"@timestamp":"2025-04-05T10:23:45.000Z","a":[1,2]}"#
        );
    }

    #[test]
    fn payloads_that_are_not_json_objects_become_dead_letters_with_raw_payload() {
        for raw in [
            &b"not json"[..],
            b"[1,2]",
            b"[]",
            b"[\"2025-04-05T10:23:45Z\"]",
            b"",
            b"\"s\"",
            b"{\"a\":",
            b"{\"a\":1} trailing",
            b"{\"a\":\"\xff\"}",
        ] {
            let r = run_on(&Pipeline::default(), raw).unwrap();
            assert_eq!(
                r.kind(),
                RecordKind::DeadLetter,
                "{raw:?} must be a dead letter"
            );
            // The day, not a name: each output names it with output.dead_letter_prefix.
            let day = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
            assert!(
                matches!(r.dest, Destination::DeadLetter(DeadLetter { day: d, .. }) if d == day),
                "{:?}",
                r.dest
            );
            assert_eq!(
                r.id,
                Some(id_of_bytes(raw)),
                "{raw:?}: an id from its bytes"
            );
            let d = doc(&r);
            assert_eq!(d["peer"], "127.0.0.1:1234");
            match std::str::from_utf8(raw) {
                Ok(s) => assert_eq!(d["payload"], s),
                Err(_) => {
                    assert_eq!(d["error_kind"], "not_utf8");
                    assert!(d["payload_hex"].as_str().unwrap().ends_with("ff227d"));
                }
            }
        }
    }

    #[test]
    fn a_resent_payload_that_is_not_json_gets_the_same_dead_letter_id() {
        let p = Pipeline::default();
        let a = run_on(&p, b"not json").unwrap();
        let later = Origin::plain("10.0.0.9:999".parse().unwrap(), Utc::now());
        let b = p
            .process_json(
                Bytes::from_static(b"not json"),
                &later,
                &mut Scratch::default(),
            )
            .into_record()
            .unwrap();
        assert!(a.id.is_some());
        assert_eq!(a.id, b.id, "a resend is a duplicate, wherever and whenever");
        assert_ne!(run_on(&p, b"not json!").unwrap().id, a.id);
    }

    fn routed_by_svc(svc: &Json) -> Record {
        let settings = PipelineSettings {
            index: Template::parse("%{svc}").unwrap(),
            ..PipelineSettings::qwen()
        };
        let p = Pipeline::new(&settings, &prometheus::Registry::new()).unwrap();
        let event = json!({"@timestamp": "2025-04-05T10:23:45.000Z", "svc": svc, "message": "m"});
        run_on(&p, event.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn an_index_name_elasticsearch_refuses_makes_the_event_a_dead_letter() {
        let long = "x".repeat(300);
        let mut refused: Vec<String> = ["../x", "/abs", "a/b", "", "..", ".", "Upper", ".hidden"]
            .iter()
            .map(|s| s.to_string())
            .chain([long])
            .collect();
        for c in [
            '\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':', '\n', '\0',
        ] {
            refused.push(format!("a{c}b"));
        }
        for start in ['-', '_', '+'] {
            refused.push(format!("{start}a"));
        }
        for svc in &refused {
            let r = routed_by_svc(&json!(svc));
            let Destination::DeadLetter(dl) = r.dest else {
                panic!("{svc:?} must not be an index, got {:?}", r.dest);
            };
            assert_eq!(dl.reason, DeadLetterReason::InvalidIndex);
            let d = doc(&r);
            assert_eq!(d["error_kind"], "invalid_index", "{d}");
            assert_eq!(d["original_index"], svc.as_str(), "{d}");
            let original: Json = serde_json::from_str(d["event"]["original"].as_str().unwrap())
                .expect("the event as it would have been stored");
            assert_eq!(original["svc"], svc.as_str());
            assert!(r.id.is_some(), "{svc:?}: a dead letter always has an id");
        }
        for ok in ["a", "a.b", "é", "x".repeat(255).as_str(), "%{svc}"] {
            let r = routed_by_svc(&json!(ok));
            assert_eq!(
                r.index().map(IndexName::as_str),
                Some(ok),
                "{ok:?} is valid"
            );
        }
        // A field that is no string renders as JSON: `{"a":1}` has a quote.
        assert_eq!(
            routed_by_svc(&json!({"a": 1})).kind(),
            RecordKind::DeadLetter
        );
    }

    #[test]
    fn v1_pairs_become_an_object_of_strings() {
        let pairs = vec![
            (Bytes::from_static(b"line"), Bytes::from_static(b"hello")),
            (Bytes::from_static(b"offset"), Bytes::from_static(b"42")),
        ];
        let r = Pipeline::passthrough()
            .process_pairs(&pairs, &origin(), &mut Scratch::default())
            .into_record()
            .unwrap();
        assert_eq!(
            doc(&r),
            json!({"line":"hello","offset":"42","@timestamp":"2026-01-02T03:04:05.000Z"})
        );
        let bad = vec![(Bytes::from_static(b"k"), Bytes::from_static(b"\xff"))];
        let r = Pipeline::passthrough()
            .process_pairs(&bad, &origin(), &mut Scratch::default())
            .into_record()
            .unwrap();
        assert_eq!(r.kind(), RecordKind::DeadLetter);
    }

    #[test]
    fn failures_keep_the_event_and_tag_it() {
        let p = Pipeline::default();
        let cases = [
            // not JSON in message: kept, tagged, date and convert find nothing
            (
                r#"{"@timestamp":"2025-04-05T10:00:00.000Z","message":"plain text"}"#,
                json!(["_jsonparsefailure"]),
            ),
            // JSON but not an object
            (
                r#"{"@timestamp":"2025-04-05T10:00:00.000Z","message":"[1,2]"}"#,
                json!(["_jsonparsefailure"]),
            ),
            // a date that does not parse keeps Filebeat's @timestamp
            (
                r#"{"@timestamp":"2025-04-05T10:00:00.000Z","message":"{\"timestamp\":\"2025-02-29T10:00:00Z\"}"}"#,
                json!(["_dateparsefailure"]),
            ),
            // a conversion Ruby raises on ends the convert filter
            (
                r#"{"@timestamp":"2025-04-05T10:00:00.000Z","message":"{\"inference_time_ms\":\"none\",\"response_length\":\"7\"}"}"#,
                json!(["_mutate_error"]),
            ),
        ];
        for (payload, tags) in &cases {
            let r = run_on(&p, payload.as_bytes()).unwrap();
            let d = doc(&r);
            assert_eq!(r.kind(), RecordKind::Event);
            assert_eq!(&d["tags"], tags, "{payload} -> {d}");
            assert_eq!(d["@timestamp"], "2025-04-05T10:00:00.000Z", "{d}");
        }
        let r = run_on(&p, cases[3].0.as_bytes()).unwrap();
        let d = doc(&r);
        assert_eq!(d["inference_time_ms"], "none");
        assert_eq!(
            d["response_length"], "7",
            "Logstash stops converting after the exception"
        );
    }

    #[test]
    fn inner_timestamp_and_tags_follow_logstash_json_filter() {
        let p = Pipeline::default();
        let r = run_on(&p, br#"{"@timestamp":"2025-04-05T10:00:00.000Z","message":"{\"@timestamp\":\"2025-04-06T01:02:03.456+08:00\",\"tags\":[\"a\"]}"}"#).unwrap();
        let d = doc(&r);
        assert_eq!(d["@timestamp"], "2025-04-05T17:02:03.456Z");
        assert_eq!(d["tags"], json!(["a"]));
        let r = run_on(&p, br#"{"@timestamp":"2025-04-05T10:00:00.000Z","message":"{\"@timestamp\":\"soon\",\"tags\":{\"x\":1}}"}"#).unwrap();
        let d = doc(&r);
        assert_eq!(d["@timestamp"], "2026-01-02T03:04:05.000Z", "receive time");
        assert_eq!(d["_@timestamp"], "soon");
        assert_eq!(d["_tags"], json!({"x": 1}));
        assert_eq!(
            d["tags"],
            json!(["_tagsparsefailure", "_timestampparsefailure"])
        );
    }

    #[test]
    fn log_derived_metrics_count_with_bounded_labels() {
        let registry = prometheus::Registry::new();
        let p = Pipeline::new(&PipelineSettings::qwen(), &registry).unwrap();
        let line = |status: &str, level: &str, ms: u32| {
            FILEBEAT_EVENT
                .replace(
                    "\\\"status\\\":\\\"success\\\"",
                    &format!("\\\"status\\\":\\\"{status}\\\""),
                )
                .replace(
                    "\\\"level\\\":\\\"INFO\\\"",
                    &format!("\\\"level\\\":\\\"{level}\\\""),
                )
                .replace("892.7", &ms.to_string())
        };
        for (status, level, ms) in [
            ("success", "INFO", 500),
            ("error", "ERROR", 1500),
            ("weird-status-123", "INFO", 20),
        ] {
            run_on(&p, line(status, level, ms).as_bytes()).unwrap();
        }
        run_on(&p, br#"{"message":"not an inference log"}"#).unwrap();
        let text = {
            let mut buf = Vec::new();
            prometheus::Encoder::encode(
                &prometheus::TextEncoder::new(),
                &registry.gather(),
                &mut buf,
            )
            .unwrap();
            String::from_utf8(buf).unwrap()
        };
        for want in [
            r#"qwen_requests_total{level="INFO",status="success"} 1"#,
            r#"qwen_requests_total{level="ERROR",status="error"} 1"#,
            r#"qwen_requests_total{level="INFO",status="other"} 1"#,
            r#"qwen_inference_duration_seconds_count{status="success"} 1"#,
            r#"qwen_inference_duration_seconds_sum{status="error"} 1.5"#,
        ] {
            assert!(text.contains(want), "missing `{want}` in:\n{text}");
        }
        assert!(
            !text.contains("weird-status"),
            "unbounded label value leaked:\n{text}"
        );
    }
}
