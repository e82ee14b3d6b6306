//! The event while the filters run: its fields, its `@metadata` (never written out, as
//! in Logstash) and the arena everything it allocates lives in.

use bumpalo::Bump;
use chrono::{DateTime, Utc};

use super::date::{iso8601, Zone};
use super::path::FieldPath;
use super::value::{Kind, Object, Value};

pub const TIMESTAMP: &str = "@timestamp";
pub const METADATA: &str = "@metadata";
pub const TAGS: &str = "tags";
pub const MESSAGE: &str = "message";

pub struct Doc<'a> {
    pub root: Object<'a>,
    pub metadata: Object<'a>,
    pub bump: &'a Bump,
    /// When the event arrived: `@timestamp` when it has none, as Logstash stamps events.
    pub received: DateTime<Utc>,
    /// False while the document is byte-for-byte the payload (then it is not rewritten).
    pub modified: bool,
    /// `@timestamp` as an instant, while the field is untouched.
    instant: Option<DateTime<Utc>>,
    /// The [`Failure`]s met so far, for the failure counters.
    pub failures: Failures,
}

/// Why an event was tagged as a failure: the `kind` label of
/// `lumberd_pipeline_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A `json` filter's source was not a JSON object (`_jsonparsefailure`).
    Json = 0,
    /// A `date` filter matched no format (`_dateparsefailure`).
    Date = 1,
    /// A `convert` failed (`_mutate_error`).
    Convert = 2,
    /// An unusable `@timestamp` (`_timestampparsefailure`).
    Timestamp = 3,
    /// An unusable `tags` (`_tagsparsefailure`).
    Tags = 4,
    /// A filter's `if` could not be evaluated (`_conditionalevaluationerror`).
    Condition = 5,
}

impl Failure {
    pub const ALL: [Failure; 6] = [
        Failure::Json,
        Failure::Date,
        Failure::Convert,
        Failure::Timestamp,
        Failure::Tags,
        Failure::Condition,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Failure::Json => "json",
            Failure::Date => "date",
            Failure::Convert => "convert",
            Failure::Timestamp => "timestamp",
            Failure::Tags => "tags",
            Failure::Condition => "condition",
        }
    }
}

/// A set of [`Failure`]s: what one event was tagged with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures(u8);

impl Failures {
    fn bit(failure: Failure) -> u8 {
        1 << failure as u8
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, failure: Failure) -> bool {
        self.0 & Failures::bit(failure) != 0
    }

    /// Each failure in the set, once.
    pub fn iter(self) -> impl Iterator<Item = Failure> {
        Failure::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl<'a> Doc<'a> {
    /// An event from its parsed top level. Applies logstash-input-beats' rules:
    /// `@metadata` moves out of the document; `@timestamp` is the receive time when
    /// missing. An event with a `message` is "decoded" (`DecodedEventTransform`): a
    /// non-string message becomes its string form and an unusable `@timestamp` is
    /// replaced by the receive time; an event without one is built as is
    /// (`Event#initialize`): the unusable value moves to `_@timestamp` and the event is
    /// tagged `_timestampparsefailure`.
    pub fn new(mut root: Object<'a>, bump: &'a Bump, received: DateTime<Utc>) -> Doc<'a> {
        let mut modified = false;
        let metadata = match root.remove(METADATA) {
            Some(mut v) => {
                modified = true;
                v.expand(bump);
                match v {
                    Value::Object(o) => o,
                    _ => Object::new_in(bump),
                }
            }
            None => Object::new_in(bump),
        };
        let mut doc = Doc {
            root,
            metadata,
            bump,
            received,
            modified,
            instant: None,
            failures: Failures::default(),
        };
        let decoded = match doc.root.get_mut(MESSAGE) {
            Some(m) => {
                match m.kind() {
                    Kind::Null => false,
                    Kind::String => true,
                    _ => {
                        m.expand(bump);
                        let other = m;
                        // `hash.delete("message").to_s`
                        let mut s = String::new();
                        other.render(&mut s);
                        *other = Value::Str(bump.alloc_str(&s));
                        doc.modified = true;
                        true
                    }
                }
            }
            None => false,
        };
        match doc.root.get_mut(TIMESTAMP).map(|v| parse_instant(v, bump)) {
            // Logstash coerces @timestamp and writes it back in UTC: rewrite any other
            // form (an offset, no fraction); Filebeat's own form is kept as it is.
            Some(Some(t)) if !is_canonical(doc.root.get(TIMESTAMP)) => doc.set_timestamp(t),
            Some(Some(t)) => doc.instant = Some(t),
            Some(None) if decoded => {
                doc.root.remove(TIMESTAMP);
                doc.set_timestamp(received);
            }
            Some(None) => {
                let bad = doc.root.remove(TIMESTAMP).expect("present");
                doc.set_timestamp(received);
                doc.set_root("_@timestamp", to_string_value(bad, bump));
                doc.tag("_timestampparsefailure");
                doc.failed(Failure::Timestamp);
            }
            None => doc.set_timestamp(received),
        }
        doc
    }

    /// The value at `path`, parsing containers on the way; `@metadata.*` included.
    pub fn get(&mut self, path: &FieldPath) -> Option<&mut Value<'a>> {
        if path.is_metadata() {
            if path.segments().len() == 1 {
                return None;
            }
            return self.metadata.lookup(&path.segments()[1..], self.bump);
        }
        self.root.lookup(path.segments(), self.bump)
    }

    pub fn contains(&mut self, path: &FieldPath) -> bool {
        self.get(path).is_some()
    }

    pub fn set(&mut self, path: &FieldPath, value: Value<'a>) -> bool {
        if path.is_metadata() {
            let segs = &path.segments()[1..];
            return !segs.is_empty() && self.metadata.set(segs, value, self.bump);
        }
        self.touch(path);
        self.root.set(path.segments(), value, self.bump)
    }

    pub fn remove(&mut self, path: &FieldPath) -> Option<Value<'a>> {
        if path.is_metadata() {
            let segs = &path.segments()[1..];
            if segs.is_empty() {
                return Some(Value::Object(std::mem::replace(
                    &mut self.metadata,
                    Object::new_in(self.bump),
                )));
            }
            return self.metadata.remove_path(segs, self.bump);
        }
        let removed = self.root.remove_path(path.segments(), self.bump);
        if removed.is_some() {
            self.touch(path);
        }
        removed
    }

    /// Sets a top-level field by name (a literal key, never a path).
    pub fn set_root(&mut self, key: &'a str, value: Value<'a>) {
        self.modified = true;
        if key == TIMESTAMP {
            self.instant = None;
        }
        self.root.insert(key, value);
    }

    fn touch(&mut self, path: &FieldPath) {
        self.modified = true;
        if path.segments()[0].key() == TIMESTAMP {
            self.instant = None;
        }
    }

    pub fn set_timestamp(&mut self, t: DateTime<Utc>) {
        self.set_root(TIMESTAMP, Value::Timestamp(t));
        self.instant = Some(t);
    }

    /// The event's `@timestamp`, for index names; the receive time if a filter broke it.
    pub fn timestamp(&mut self) -> DateTime<Utc> {
        if let Some(t) = self.instant {
            return t;
        }
        let t = self
            .root
            .get_mut(TIMESTAMP)
            .and_then(|v| parse_instant(v, self.bump))
            .unwrap_or(self.received);
        self.instant = Some(t);
        t
    }

    /// Logstash's `Event#tag`: `tags` becomes an array if needed; a tag is added once.
    pub fn tag(&mut self, tag: &str) {
        self.modified = true;
        let bump = self.bump;
        let Some(tags) = self.root.get_mut(TAGS) else {
            let mut items = bumpalo::collections::Vec::with_capacity_in(1, bump);
            items.push(Value::Str(bump.alloc_str(tag)));
            self.root.insert(TAGS, Value::Array(items));
            return;
        };
        tags.expand(bump);
        match tags {
            Value::Array(items) => {
                let present = items.iter_mut().any(|t| t.as_str(bump) == Some(tag));
                if !present {
                    items.push(Value::Str(bump.alloc_str(tag)));
                }
            }
            other => {
                let old = std::mem::replace(other, Value::Null);
                if old.as_str(bump) == Some(tag) {
                    *other = old;
                    return;
                }
                let mut items = bumpalo::collections::Vec::with_capacity_in(2, bump);
                items.push(old);
                items.push(Value::Str(bump.alloc_str(tag)));
                *other = Value::Array(items);
            }
        }
    }

    pub fn failed(&mut self, failure: Failure) {
        self.failures.0 |= Failures::bit(failure);
    }

    /// Logstash 8's rule for a `tags` field set from parsed JSON: it must be a string or
    /// an array of strings; anything else moves to `_tags` with `_tagsparsefailure`.
    pub fn check_tags(&mut self) {
        let bump = self.bump;
        let Some(tags) = self.root.get_mut(TAGS) else {
            return;
        };
        tags.expand(bump);
        let ok = match tags {
            Value::Str(_) => true,
            Value::Array(items) => items.iter().all(|i| i.kind() == Kind::String),
            _ => false,
        };
        if !ok {
            let bad = self.root.remove(TAGS).expect("present");
            self.set_root("_tags", bad);
            self.tag("_tagsparsefailure");
            self.failed(Failure::Tags);
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the form Filebeat sends and Logstash writes. (The value
/// was parsed just before, so only the shape needs checking.)
fn is_canonical(v: Option<&Value>) -> bool {
    let shape = |b: &[u8]| b.len() == 24 && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z';
    match v {
        Some(Value::Str(s)) => shape(s.as_bytes()),
        Some(Value::Raw(raw) | Value::Decoded(raw, _)) => {
            let t = raw.get().as_bytes();
            t.len() == 26 && shape(&t[1..25])
        }
        Some(Value::Timestamp(_)) => true,
        _ => false,
    }
}

/// A `@timestamp` value as an instant: an ISO 8601 string (zone-less means UTC).
fn parse_instant<'a>(v: &Value<'a>, bump: &'a Bump) -> Option<DateTime<Utc>> {
    match v {
        Value::Timestamp(t) => Some(*t),
        other => iso8601(other.as_str(bump)?, Zone::Utc),
    }
}

/// A value as a string, for `_@timestamp` (Logstash keeps the original's `to_s`).
fn to_string_value<'a>(v: Value<'a>, bump: &'a Bump) -> Value<'a> {
    let mut v = v;
    v.expand(bump);
    if let Value::Str(_) = v {
        return v;
    }
    let mut s = String::new();
    v.render(&mut s);
    Value::Str(bump.alloc_str(&s))
}
