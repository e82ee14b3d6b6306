//! From payload to record: validate the JSON once, route it to its daily index, and turn
//! bad payloads into dead letters. Pure and synchronous; no I/O, no protocol types.
//!
//! Until the pipeline issue adds filters, events are stored as received; the index is
//! `qwen-logs-YYYY.MM.dd` from the event's `@timestamp` in UTC (receive time when the
//! event has none, as Logstash stamps such events on arrival).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{dead_letter_doc, Origin, PayloadError, Record, RecordKind};

const INDEX_PREFIX: &str = "qwen-logs-";
const DEAD_LETTER_PREFIX: &str = "deadletter-";

/// Per-connection memo of the last index name, so a window of same-day events formats
/// and allocates its index name once.
#[derive(Debug, Default)]
pub struct IndexCache {
    last: Option<(RecordKind, NaiveDate, Arc<str>)>,
}

impl IndexCache {
    fn name(&mut self, kind: RecordKind, day: NaiveDate) -> Arc<str> {
        if let Some((k, d, name)) = &self.last {
            if *k == kind && *d == day {
                return name.clone();
            }
        }
        let prefix = match kind {
            RecordKind::Event => INDEX_PREFIX,
            RecordKind::DeadLetter => DEAD_LETTER_PREFIX,
        };
        let name: Arc<str> = format!(
            "{prefix}{:04}.{:02}.{:02}",
            day.year(),
            day.month(),
            day.day()
        )
        .into();
        self.last = Some((kind, day, name.clone()));
        name
    }
}

/// Only the field routing needs; serde_json still validates the whole document while
/// skipping the rest, without building a DOM (`PERFORMANCE.md`: a DOM per event costs
/// more than everything else together).
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(rename = "@timestamp", borrow, default)]
    timestamp: Option<&'a RawValue>,
}

#[derive(Debug, Default)]
pub struct Pipeline;

impl Pipeline {
    pub fn new() -> Self {
        Pipeline
    }

    /// A `J` frame's payload: an event when it is a JSON object, a dead letter otherwise.
    pub fn process_json(&self, payload: Bytes, origin: &Origin, cache: &mut IndexCache) -> Record {
        // serde_json does not check the UTF-8 of strings it skips; JSON must be UTF-8
        // (RFC 8259 section 8.1) and Elasticsearch would reject the document later.
        let Ok(text) = std::str::from_utf8(&payload) else {
            return self.dead_letter(&payload, PayloadError::NotUtf8, origin, cache);
        };
        // A derived struct also deserialises from a JSON array; events must be objects.
        if !text.trim_start().starts_with('{') {
            let reason = PayloadError::NotJsonObject("expected a JSON object".into());
            return self.dead_letter(&payload, reason, origin, cache);
        }
        let probe = match serde_json::from_str::<Probe>(text) {
            Ok(p) => p,
            Err(e) => {
                return self.dead_letter(
                    &payload,
                    PayloadError::NotJsonObject(e.to_string()),
                    origin,
                    cache,
                )
            }
        };
        let day = probe
            .timestamp
            .and_then(timestamp_day)
            .unwrap_or(origin.received.date_naive());
        // JSON allows raw newlines only as whitespace between tokens, and one would split
        // the NDJSON line (and a bulk body): re-serialise compactly in that rare case.
        let doc = if memchr::memchr2(b'\n', b'\r', &payload).is_some() {
            match serde_json::from_slice::<serde_json::Value>(&payload) {
                Ok(v) => Bytes::from(serde_json::to_vec(&v).expect("a Value serialises")),
                Err(e) => {
                    return self.dead_letter(
                        &payload,
                        PayloadError::NotJsonObject(e.to_string()),
                        origin,
                        cache,
                    )
                }
            }
        } else {
            payload
        };
        Record {
            kind: RecordKind::Event,
            index: cache.name(RecordKind::Event, day),
            doc,
        }
    }

    /// A v1 `D` frame's key/value pairs, as a JSON object of strings.
    pub fn process_pairs(
        &self,
        pairs: &[(Bytes, Bytes)],
        origin: &Origin,
        cache: &mut IndexCache,
    ) -> Record {
        let mut object = serde_json::Map::with_capacity(pairs.len());
        for (k, v) in pairs {
            match (std::str::from_utf8(k), std::str::from_utf8(v)) {
                (Ok(k), Ok(v)) => {
                    object.insert(k.to_owned(), v.into());
                }
                _ => {
                    let mut raw = Vec::new();
                    for (k, v) in pairs {
                        raw.extend_from_slice(k);
                        raw.push(b'=');
                        raw.extend_from_slice(v);
                        raw.push(b'\n');
                    }
                    return self.dead_letter(&raw, PayloadError::NotUtf8, origin, cache);
                }
            }
        }
        let day = object
            .get("@timestamp")
            .and_then(|v| v.as_str())
            .and_then(parse_day)
            .unwrap_or(origin.received.date_naive());
        let doc = Bytes::from(serde_json::to_vec(&object).expect("a map of strings serialises"));
        Record {
            kind: RecordKind::Event,
            index: cache.name(RecordKind::Event, day),
            doc,
        }
    }

    fn dead_letter(
        &self,
        raw: &[u8],
        reason: PayloadError,
        origin: &Origin,
        cache: &mut IndexCache,
    ) -> Record {
        Record {
            kind: RecordKind::DeadLetter,
            index: cache.name(RecordKind::DeadLetter, origin.received.date_naive()),
            doc: dead_letter_doc(raw, &reason, origin),
        }
    }
}

fn timestamp_day(raw: &RawValue) -> Option<NaiveDate> {
    let s: Cow<str> = serde_json::from_str(raw.get()).ok()?;
    parse_day(&s)
}

/// The UTC day of an RFC 3339 / ISO 8601 timestamp with a zone, as Beats write it.
fn parse_day(s: &str) -> Option<NaiveDate> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc).date_naive())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn origin() -> Origin {
        Origin::plain(
            "127.0.0.1:1234".parse().unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        )
    }

    fn run(payload: &'static [u8]) -> Record {
        Pipeline::new().process_json(
            Bytes::from_static(payload),
            &origin(),
            &mut IndexCache::default(),
        )
    }

    #[test]
    fn index_is_the_utc_day_of_the_event_timestamp() {
        let r = run(br#"{"@timestamp":"2025-04-05T23:30:00.000-02:00","message":"x"}"#);
        assert_eq!(
            &*r.index, "qwen-logs-2025.04.06",
            "-02:00 at 23:30 is the next UTC day"
        );
        assert_eq!(r.kind, RecordKind::Event);
    }

    #[test]
    fn event_without_usable_timestamp_is_routed_by_receive_time() {
        assert_eq!(&*run(br#"{"message":"x"}"#).index, "qwen-logs-2026.01.02");
        assert_eq!(
            &*run(br#"{"@timestamp":12,"message":"x"}"#).index,
            "qwen-logs-2026.01.02"
        );
        assert_eq!(
            &*run(br#"{"@timestamp":"yesterday"}"#).index,
            "qwen-logs-2026.01.02"
        );
    }

    #[test]
    fn event_document_is_stored_as_received_without_copying() {
        let payload = Bytes::from_static(br#"{"@timestamp":"2025-04-05T10:23:45Z","a":[1,2]}"#);
        let r =
            Pipeline::new().process_json(payload.clone(), &origin(), &mut IndexCache::default());
        assert_eq!(r.doc, payload);
        assert_eq!(
            r.doc.as_ptr(),
            payload.as_ptr(),
            "an unchanged payload must not be copied"
        );
    }

    #[test]
    fn pretty_printed_json_is_compacted_to_one_line() {
        let r = run(b"{\n  \"a\": 1\n}");
        assert_eq!(&r.doc[..], br#"{"a":1}"#);
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
            b"{\"a\":\"\xff\"}",
        ] {
            let r = Pipeline::new().process_json(
                Bytes::copy_from_slice(raw),
                &origin(),
                &mut IndexCache::default(),
            );
            assert_eq!(
                r.kind,
                RecordKind::DeadLetter,
                "{raw:?} must be a dead letter"
            );
            assert_eq!(&*r.index, "deadletter-2026.01.02");
            let doc: serde_json::Value = serde_json::from_slice(&r.doc).unwrap();
            assert_eq!(doc["peer"], "127.0.0.1:1234");
            match std::str::from_utf8(raw) {
                Ok(s) => {
                    assert_eq!(doc["payload"], s);
                    assert!(
                        doc["reason"]
                            .as_str()
                            .unwrap()
                            .contains("not a JSON object"),
                        "{doc}"
                    );
                }
                Err(_) => {
                    assert_eq!(doc["error_kind"], "not_utf8");
                    assert!(doc["payload_hex"].as_str().unwrap().ends_with("ff227d"));
                }
            }
        }
    }

    #[test]
    fn v1_pairs_become_an_object_of_strings() {
        let pairs = vec![
            (Bytes::from_static(b"line"), Bytes::from_static(b"hello")),
            (Bytes::from_static(b"offset"), Bytes::from_static(b"42")),
        ];
        let r = Pipeline::new().process_pairs(&pairs, &origin(), &mut IndexCache::default());
        let doc: serde_json::Value = serde_json::from_slice(&r.doc).unwrap();
        assert_eq!(doc, serde_json::json!({"line":"hello","offset":"42"}));
        let bad = vec![(Bytes::from_static(b"k"), Bytes::from_static(b"\xff"))];
        let r = Pipeline::new().process_pairs(&bad, &origin(), &mut IndexCache::default());
        assert_eq!(r.kind, RecordKind::DeadLetter);
    }
}
