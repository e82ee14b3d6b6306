//! The filters, each with Logstash's semantics (the plugin it mirrors is named on each
//! variant). A filter never drops an event unless it is a `drop`; failures keep the
//! event and tag it, so nothing disappears silently.

use bumpalo::collections::Vec as BVec;

use super::convert::{convert, Conversion, Converted};
use super::date::{parse_date, DateFormat, DateInput, Zone};
use super::doc::{Doc, Failure, METADATA, TAGS, TIMESTAMP};
use super::path::FieldPath;
use super::template::Template;
use super::value::{parse_any, parse_object, Kind, Value};

pub const JSON_FAILURE_TAG: &str = "_jsonparsefailure";
pub const DATE_FAILURE_TAG: &str = "_dateparsefailure";
pub const MUTATE_FAILURE_TAG: &str = "_mutate_error";

#[derive(Debug, Clone)]
pub enum Filter {
    /// logstash-filter-json: parse the JSON string in `source` into the root, or into
    /// `target`.
    Json {
        source: FieldPath,
        target: Option<FieldPath>,
        tag_on_failure: Vec<Box<str>>,
    },
    /// logstash-filter-date: the first of `formats` that parses `field` sets `target`.
    Date {
        field: FieldPath,
        formats: Vec<DateFormat>,
        target: FieldPath,
        timezone: Zone,
        tag_on_failure: Vec<Box<str>>,
    },
    /// logstash-filter-mutate `convert`, in order; the first failure ends the filter
    /// (Ruby raises out of the loop), leaves that value as it was and tags the event.
    Convert {
        fields: Vec<(FieldPath, Conversion)>,
        tag_on_failure: Vec<Box<str>>,
    },
    /// mutate `rename`: moves a field when it exists.
    Rename { fields: Vec<(FieldPath, FieldPath)> },
    /// mutate `remove_field`.
    Remove { fields: Vec<FieldPath> },
    /// The common `add_tag` option.
    AddTag { tags: Vec<Template> },
    /// The common `add_field` option: a field that exists becomes an array of both.
    AddField { fields: Vec<(FieldPath, Template)> },
    /// logstash-filter-drop under a condition: drops the event when `field` exists and,
    /// if `values` is not empty, its value is one of them. Its window is still ACKed.
    Drop {
        field: FieldPath,
        values: Vec<Box<str>>,
    },
}

/// What happens to the event after a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Drop,
}

impl Filter {
    /// The filter's name in the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            Filter::Json { .. } => "json",
            Filter::Date { .. } => "date",
            Filter::Convert { .. } => "convert",
            Filter::Rename { .. } => "rename",
            Filter::Remove { .. } => "remove",
            Filter::AddTag { .. } => "add_tag",
            Filter::AddField { .. } => "add_field",
            Filter::Drop { .. } => "drop",
        }
    }

    pub fn apply(&self, doc: &mut Doc) -> Flow {
        match self {
            Filter::Json {
                source,
                target,
                tag_on_failure,
            } => {
                if !json(doc, source, target.as_ref()) {
                    doc.failed(Failure::Json);
                    tag_all(doc, tag_on_failure);
                }
            }
            Filter::Date {
                field,
                formats,
                target,
                timezone,
                tag_on_failure,
            } => {
                if !date(doc, field, formats, target, *timezone) {
                    doc.failed(Failure::Date);
                    tag_all(doc, tag_on_failure);
                }
            }
            Filter::Convert {
                fields,
                tag_on_failure,
            } => {
                for (path, to) in fields {
                    let bump = doc.bump;
                    let Some(value) = doc.get(path) else { continue };
                    match convert(value, *to, bump) {
                        Converted::Value(v) => {
                            *value = v;
                            doc.modified = true;
                        }
                        Converted::Unchanged => {}
                        Converted::Failed => {
                            doc.failed(Failure::Convert);
                            tag_all(doc, tag_on_failure);
                            if *to != Conversion::Boolean {
                                break;
                            }
                        }
                    }
                }
            }
            Filter::Rename { fields } => {
                for (from, to) in fields {
                    if let Some(v) = doc.remove(from) {
                        doc.set(to, v);
                    }
                }
            }
            Filter::Remove { fields } => {
                for path in fields {
                    doc.remove(path);
                }
            }
            Filter::AddTag { tags } => {
                let mut text = String::new();
                for t in tags {
                    text.clear();
                    t.render(doc, &mut text);
                    doc.tag(&text);
                }
            }
            Filter::AddField { fields } => {
                let mut text = String::new();
                for (path, t) in fields {
                    text.clear();
                    t.render(doc, &mut text);
                    let bump = doc.bump;
                    let new = Value::Str(bump.alloc_str(&text));
                    doc.modified = true;
                    match doc.get(path) {
                        Some(existing) => {
                            existing.expand(bump);
                            match existing {
                                Value::Array(items) => items.push(new),
                                other => {
                                    let old = std::mem::replace(other, Value::Null);
                                    let mut items = BVec::with_capacity_in(2, bump);
                                    items.push(old);
                                    items.push(new);
                                    *other = Value::Array(items);
                                }
                            }
                        }
                        None => {
                            doc.set(path, new);
                        }
                    }
                }
            }
            Filter::Drop { field, values } => {
                let bump = doc.bump;
                if let Some(v) = doc.get(field) {
                    if values.is_empty() {
                        return Flow::Drop;
                    }
                    let mut text = String::new();
                    v.expand(bump);
                    v.render(&mut text);
                    if values.iter().any(|x| **x == *text) {
                        return Flow::Drop;
                    }
                }
            }
        }
        Flow::Continue
    }
}

fn tag_all(doc: &mut Doc, tags: &[Box<str>]) {
    for t in tags {
        doc.tag(t);
    }
}

/// False when the filter failed (the event is then tagged).
fn json(doc: &mut Doc, source: &FieldPath, target: Option<&FieldPath>) -> bool {
    let bump = doc.bump;
    let Some(value) = doc.get(source) else {
        return true;
    };
    // `return unless source`: nil and false are skipped without a tag.
    if value.kind() == Kind::Null || value.is_false() {
        return true;
    }
    // Decoded without replacing the value: `message` is kept and written as it came.
    let Some(text) = value.as_str(bump) else {
        return false;
    };
    if let Some(target) = target {
        return match parse_any(text, bump) {
            Ok(v) => {
                doc.set(target, v);
                true
            }
            Err(_) => false,
        };
    }
    let Ok(mut parsed) = parse_object(text, bump) else {
        return false;
    };
    // @timestamp is taken out first and coerced last (json.rb steps a-c).
    let parsed_timestamp = parsed.remove(TIMESTAMP);
    let mut tags_set = false;
    for (key, v) in parsed.fields.into_iter() {
        if key == METADATA {
            let mut v = v;
            v.expand(bump);
            if let Value::Object(o) = v {
                doc.metadata = o;
            }
            continue;
        }
        tags_set |= key == TAGS;
        doc.set_root(key, v);
    }
    if tags_set {
        doc.check_tags();
    }
    if let Some(ts) = parsed_timestamp {
        let instant = ts
            .as_str(bump)
            .and_then(|s| super::date::iso8601(s, Zone::Utc));
        match instant {
            Some(t) => doc.set_timestamp(t),
            None => {
                let received = doc.received;
                doc.set_timestamp(received);
                let mut s = String::new();
                ts.render(&mut s);
                doc.set_root("_@timestamp", Value::Str(bump.alloc_str(&s)));
                doc.tag("_timestampparsefailure");
                doc.failed(Failure::Timestamp);
            }
        }
    }
    true
}

fn date(
    doc: &mut Doc,
    field: &FieldPath,
    formats: &[DateFormat],
    target: &FieldPath,
    zone: Zone,
) -> bool {
    let bump = doc.bump;
    let received = doc.received;
    let Some(value) = doc.get(field) else {
        return true;
    };
    let input = match value.kind() {
        Kind::Null => return true,
        Kind::String => DateInput::Text(value.as_str(bump).expect("a string")),
        Kind::Number => DateInput::Number(value.number_text().expect("a number")),
        _ => return false,
    };
    let Some(t) = parse_date(input, formats, zone, received) else {
        return false;
    };
    if target.segments().len() == 1 && target.segments()[0].key() == TIMESTAMP {
        doc.set_timestamp(t);
    } else {
        doc.set(target, Value::Timestamp(t));
    }
    true
}
