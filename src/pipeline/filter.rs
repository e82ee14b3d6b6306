//! The filters, each with Logstash's semantics (the plugin it mirrors is named on each
//! variant). A filter never drops an event unless it is a `drop`; failures keep the
//! event and tag it, so nothing disappears silently.

use bumpalo::collections::Vec as BVec;

use super::condition::Condition;
use super::convert::{convert, Conversion, Converted};
use super::date::{parse_date, DateFormat, DateInput, Zone};
use super::doc::{Doc, Failure, METADATA, TAGS, TIMESTAMP};
use super::path::FieldPath;
use super::template::Template;
use super::value::{parse_any, parse_object, KeySet, Kind, Value};

pub const JSON_FAILURE_TAG: &str = "_jsonparsefailure";
pub const DATE_FAILURE_TAG: &str = "_dateparsefailure";
pub const MUTATE_FAILURE_TAG: &str = "_mutate_error";
/// A filter's `if` could not be evaluated (named after Logstash's
/// `ConditionalEvaluationError`, which has no tag: Logstash 8.16+ logs and drops the
/// event, earlier versions stop the pipeline).
pub const CONDITION_FAILURE_TAG: &str = "_conditionalevaluationerror";

/// A filter and the condition it runs under (`if = "..."`; none: always).
#[derive(Debug, Clone)]
pub struct Step {
    pub filter: Filter,
    pub when: Option<Condition>,
}

impl Step {
    pub fn always(filter: Filter) -> Step {
        Step { filter, when: None }
    }

    /// Runs the filter when its condition holds. A condition that cannot be evaluated
    /// (Logstash raises: `[missing] > 1`) skips the filter and tags the event, so the
    /// event is kept and the failure is visible.
    pub fn apply(&self, doc: &mut Doc) -> Flow {
        if let Some(cond) = &self.when {
            match cond.eval(doc) {
                Ok(true) => {}
                Ok(false) => return Flow::Continue,
                Err(_) => {
                    doc.failed(Failure::Condition);
                    doc.tag(CONDITION_FAILURE_TAG);
                    return Flow::Continue;
                }
            }
        }
        self.filter.apply(doc)
    }
}

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
    /// mutate `replace`: sets the field to the template's text, creating it.
    Replace { fields: Vec<(FieldPath, Template)> },
    /// mutate `lowercase` / `uppercase`: strings, and the strings in arrays (Unicode case
    /// mapping, as Ruby's `downcase`/`upcase`); other values are left as they are.
    Case { fields: Vec<FieldPath>, upper: bool },
    /// mutate `strip`: leading and trailing ASCII whitespace and NUL (Ruby's `strip`) of
    /// strings and of each string in an array; an array holding a non-string fails
    /// (Ruby raises) and is tagged.
    Strip {
        fields: Vec<FieldPath>,
        tag_on_failure: Vec<Box<str>>,
    },
    /// logstash-filter-drop: drops the event; with `field`, only when it exists and, if
    /// `values` is not empty, its value is one of them. Its window is still ACKed.
    Drop {
        field: Option<FieldPath>,
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
            Filter::Replace { .. } => "replace",
            Filter::Case { upper: false, .. } => "lowercase",
            Filter::Case { upper: true, .. } => "uppercase",
            Filter::Strip { .. } => "strip",
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
            Filter::Replace { fields } => {
                let mut text = String::new();
                for (path, t) in fields {
                    text.clear();
                    t.render(doc, &mut text);
                    let v = Value::Str(doc.bump.alloc_str(&text));
                    doc.set(path, v);
                }
            }
            Filter::Case { fields, upper } => {
                for path in fields {
                    let bump = doc.bump;
                    let Some(v) = doc.get(path) else { continue };
                    v.expand(bump);
                    let change = |s: &str| {
                        let t = if *upper {
                            s.to_uppercase()
                        } else {
                            s.to_lowercase()
                        };
                        (t != s).then(|| Value::Str(bump.alloc_str(&t)))
                    };
                    let mut changed = false;
                    match v {
                        Value::Str(s) => {
                            if let Some(new) = change(s) {
                                *v = new;
                                changed = true;
                            }
                        }
                        Value::Array(items) => {
                            for item in items.iter_mut() {
                                item.expand(bump);
                                if let Value::Str(s) = item {
                                    if let Some(new) = change(s) {
                                        *item = new;
                                        changed = true;
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                    doc.modified |= changed;
                }
            }
            Filter::Strip {
                fields,
                tag_on_failure,
            } => {
                const RUBY_SPACE: [char; 7] = ['\0', '\t', '\n', '\x0b', '\x0c', '\r', ' '];
                for path in fields {
                    let bump = doc.bump;
                    let Some(v) = doc.get(path) else { continue };
                    v.expand(bump);
                    let mut failed = false;
                    let mut changed = false;
                    match v {
                        Value::Str(s) => {
                            let t = s.trim_matches(RUBY_SPACE);
                            changed = t.len() != s.len();
                            *s = t;
                        }
                        // `value.map { |s| s.strip }` raises before anything is set.
                        Value::Array(items) => {
                            items.iter_mut().for_each(|i| i.expand(bump));
                            failed = items.iter().any(|i| !matches!(i, Value::Str(_)));
                            for item in items.iter_mut().filter(|_| !failed) {
                                if let Value::Str(s) = item {
                                    let t = s.trim_matches(RUBY_SPACE);
                                    changed |= t.len() != s.len();
                                    *s = t;
                                }
                            }
                        }
                        _ => {}
                    }
                    doc.modified |= changed;
                    if failed {
                        doc.failed(Failure::Convert);
                        tag_all(doc, tag_on_failure);
                        break;
                    }
                }
            }
            Filter::Drop { field: None, .. } => return Flow::Drop,
            Filter::Drop {
                field: Some(field),
                values,
            } => {
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
    let mut root_keys = KeySet::of(&doc.root);
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
        // A key surely not in the root is appended as `set_root` would, without a scan.
        // (`@timestamp` was taken out above.)
        if root_keys.insert(key) {
            doc.root.fields.push((key, v));
            doc.modified = true;
        } else {
            doc.set_root(key, v);
        }
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
