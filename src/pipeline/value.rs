//! The event as filters see it: a JSON tree that stays unparsed until a filter looks
//! inside. A field nobody touches is a borrowed slice of the payload from parse to
//! output, so the cost of an event is one validating parse of its top level plus the
//! fields the pipeline actually reads (`PERFORMANCE.md`: a DOM per event costs more than
//! everything else together).
//!
//! Everything an event allocates lives in a per-connection arena ([`Bump`]), reset
//! between events: strings decoded from escapes, field lists, parsed `message` text.

use std::fmt;

use bumpalo::collections::Vec as BVec;
use bumpalo::Bump;
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::path::Segment;

/// A JSON value, parsed only as deep as the pipeline needed.
#[derive(Debug)]
pub enum Value<'a> {
    /// Valid JSON not looked into yet, written out byte for byte.
    Raw(&'a RawValue),
    /// A `Raw` string whose text has been decoded, still written out as it came: the id
    /// and the `json` filter both read `message`, and decode it once between them.
    Decoded(&'a RawValue, &'a str),
    Null,
    Bool(bool),
    /// A valid JSON number token, kept as text so no precision is lost.
    Number(&'a str),
    /// A string, unescaped.
    Str(&'a str),
    Array(BVec<'a, Value<'a>>),
    Object(Object<'a>),
    /// An instant set by a filter, written as RFC 3339 UTC with milliseconds, the way
    /// Logstash writes `@timestamp`.
    Timestamp(DateTime<Utc>),
}

/// What kind of JSON value a [`Value`] holds, without parsing more than its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl<'a> Value<'a> {
    pub fn kind(&self) -> Kind {
        match self {
            Value::Raw(raw) => match raw.get().as_bytes().first() {
                Some(b'{') => Kind::Object,
                Some(b'[') => Kind::Array,
                Some(b'"') => Kind::String,
                Some(b't' | b'f') => Kind::Bool,
                Some(b'n') => Kind::Null,
                _ => Kind::Number,
            },
            Value::Decoded(..) => Kind::String,
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::Str(_) | Value::Timestamp(_) => Kind::String,
            Value::Array(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
        }
    }

    /// Parses one level of a `Raw` value in place (children stay `Raw`); a no-op for
    /// values already parsed. A `Raw` value was validated when its parent was parsed.
    pub fn expand(&mut self, bump: &'a Bump) {
        match *self {
            Value::Raw(raw) => *self = parse_one_level(raw, bump),
            Value::Decoded(_, text) => *self = Value::Str(text),
            _ => {}
        }
    }

    /// The exact text of a string value, decoding a `Raw` string once (it becomes
    /// [`Value::Decoded`], still written as it came). `None` for other kinds and for a
    /// string no exact text exists for (a lone surrogate escape).
    pub fn decoded(&mut self, bump: &'a Bump) -> Option<&'a str> {
        match *self {
            Value::Str(s) | Value::Decoded(_, s) => Some(s),
            Value::Raw(raw) if raw.get().starts_with('"') => {
                let (text, exact) = decode_token(raw.get(), bump);
                if exact {
                    *self = Value::Decoded(raw, text);
                }
                exact.then_some(text)
            }
            _ => None,
        }
    }

    /// The string this value holds, decoding a `Raw` string (into the arena when it has
    /// escapes) but leaving it `Raw`, so it is still written out as it came.
    pub fn as_str(&self, bump: &'a Bump) -> Option<&'a str> {
        match self {
            Value::Str(s) | Value::Decoded(_, s) => Some(s),
            Value::Raw(raw) if raw.get().starts_with('"') => decode_str(raw.get(), bump).ok(),
            _ => None,
        }
    }

    /// The text of a JSON number; `None` for other kinds.
    pub fn number_text(&self) -> Option<&'a str> {
        match self {
            Value::Number(n) => Some(n),
            Value::Raw(raw) if self.kind() == Kind::Number => Some(raw.get()),
            _ => None,
        }
    }

    /// JSON `false`.
    pub fn is_false(&self) -> bool {
        match self {
            Value::Bool(b) => !b,
            Value::Raw(raw) => raw.get() == "false",
            _ => false,
        }
    }

    /// The value as Logstash's `to_s` renders it in `%{field}` and for ids: strings as
    /// themselves, numbers and booleans as their JSON text, containers as compact JSON.
    pub fn render(&self, out: &mut String) {
        match self {
            Value::Str(s) | Value::Decoded(_, s) => out.push_str(s),
            Value::Raw(raw) if raw.get().starts_with('"') => {
                let token = raw.get();
                if !token.contains('\\') {
                    out.push_str(&token[1..token.len() - 1]);
                    return;
                }
                match serde_json::from_str::<String>(token) {
                    Ok(s) => out.push_str(&s),
                    Err(_) => out.push_str(raw.get()),
                }
            }
            Value::Number(n) => out.push_str(n),
            Value::Null => {}
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            // Logstash's sprintf joins arrays with commas.
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.render(out);
                }
            }
            other => {
                let mut buf = Vec::new();
                write_value(other, &mut buf);
                out.push_str(&String::from_utf8_lossy(&buf));
            }
        }
    }
}

/// Key equality with the cheap checks first: most keys differ in length or first byte,
/// and a `memcmp` call per field scanned showed in profiles.
#[inline]
fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b
}

/// A set of keys that can only answer "surely absent" or "maybe present": one bit of 128
/// per key, from its length and end bytes. Parsing an object and merging a parsed
/// `message` into the root checked every key against every field before it (a
/// quadratic scan that showed in profiles); with the set, a new key is pushed
/// at once and only a possible duplicate is looked for.
#[derive(Default, Clone, Copy)]
pub struct KeySet(u128);

impl KeySet {
    pub fn of(o: &Object) -> KeySet {
        let mut set = KeySet::default();
        for (k, _) in o.fields.iter() {
            set.insert(k);
        }
        set
    }

    #[inline]
    fn bit(key: &str) -> u128 {
        let b = key.as_bytes();
        let (first, last) = (b.first().copied(), b.last().copied());
        let h = (b.len() as u32).wrapping_mul(0x9e37_79b9)
            ^ u32::from(first.unwrap_or(0)).wrapping_mul(0x85eb_ca6b)
            ^ u32::from(last.unwrap_or(0)).wrapping_mul(0xc2b2_ae35);
        1 << (h >> 25)
    }

    /// Adds `key`; true when it was surely not in the set before.
    #[inline]
    pub fn insert(&mut self, key: &str) -> bool {
        let bit = KeySet::bit(key);
        let new = self.0 & bit == 0;
        self.0 |= bit;
        new
    }
}

/// A JSON object's fields in document order. Lookups are linear: events have a handful
/// of fields per level, where a scan beats hashing.
#[derive(Debug)]
pub struct Object<'a> {
    pub fields: BVec<'a, (&'a str, Value<'a>)>,
}

impl<'a> Object<'a> {
    pub fn new_in(bump: &'a Bump) -> Self {
        Object {
            fields: BVec::new_in(bump),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.fields
            .iter()
            .find(|(k, _)| same_key(k, key))
            .map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value<'a>> {
        self.fields
            .iter_mut()
            .find(|(k, _)| same_key(k, key))
            .map(|(_, v)| v)
    }

    /// Sets `key`, replacing an existing value in place (so field order is kept).
    pub fn insert(&mut self, key: &'a str, value: Value<'a>) {
        match self.get_mut(key) {
            Some(slot) => *slot = value,
            None => self.fields.push((key, value)),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Value<'a>> {
        let i = self.fields.iter().position(|(k, _)| same_key(k, key))?;
        Some(self.fields.remove(i).1)
    }

    /// The value at `path` below this object, parsing `Raw` containers on the way.
    pub fn lookup(&mut self, path: &[Segment], bump: &'a Bump) -> Option<&mut Value<'a>> {
        let (first, rest) = path.split_first()?;
        let mut current = self.get_mut(first.key())?;
        for seg in rest {
            current.expand(bump);
            current = match current {
                Value::Object(o) => o.get_mut(seg.key())?,
                Value::Array(items) => items.get_mut(seg.index()?)?,
                _ => return None,
            };
        }
        Some(current)
    }

    /// Sets the value at `path`, creating missing objects on the way like Logstash's
    /// `event.set`. False when a value on the way is not an object (nothing changes).
    pub fn set(&mut self, path: &[Segment], value: Value<'a>, bump: &'a Bump) -> bool {
        let Some((last, parents)) = path.split_last() else {
            return false;
        };
        let mut obj = self;
        for seg in parents {
            let key = seg.key();
            if obj.get(key).is_none() {
                obj.fields
                    .push((bump.alloc_str(key), Value::Object(Object::new_in(bump))));
            }
            let child = obj.get_mut(key).expect("just ensured");
            child.expand(bump);
            match child {
                Value::Object(o) => obj = o,
                _ => return false,
            }
        }
        let key = last.key();
        match obj.get_mut(key) {
            Some(slot) => *slot = value,
            None => obj.fields.push((bump.alloc_str(key), value)),
        }
        true
    }

    /// Removes and returns the value at `path`.
    pub fn remove_path(&mut self, path: &[Segment], bump: &'a Bump) -> Option<Value<'a>> {
        let (last, parents) = path.split_last()?;
        if parents.is_empty() {
            return self.remove(last.key());
        }
        match self.lookup(parents, bump)? {
            parent @ Value::Raw(_) => {
                parent.expand(bump);
                remove_child(parent, last)
            }
            parent => remove_child(parent, last),
        }
    }
}

fn remove_child<'a>(parent: &mut Value<'a>, seg: &Segment) -> Option<Value<'a>> {
    match parent {
        Value::Object(o) => o.remove(seg.key()),
        Value::Array(items) => {
            let i = seg.index().filter(|i| *i < items.len())?;
            Some(items.remove(i))
        }
        _ => None,
    }
}

/// Parses a JSON object's top level: keys decoded, values left `Raw`. Rejects anything
/// that is not exactly one valid JSON object.
pub fn parse_object<'a>(text: &'a str, bump: &'a Bump) -> Result<Object<'a>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = de.deserialize_map(ObjectVisitor { bump })?;
    de.end()?;
    Ok(Object { fields })
}

/// Parses any JSON text into a one-level [`Value`]; for a `json` filter with a target.
pub fn parse_any<'a>(text: &'a str, bump: &'a Bump) -> Result<Value<'a>, serde_json::Error> {
    let raw: &'a RawValue = serde_json::from_str(text)?;
    Ok(parse_one_level(raw, bump))
}

fn parse_one_level<'a>(raw: &'a RawValue, bump: &'a Bump) -> Value<'a> {
    let text = raw.get();
    let parsed = match text.as_bytes().first() {
        Some(b'{') => serde_json::Deserializer::from_str(text)
            .deserialize_map(ObjectVisitor { bump })
            .map(|fields| Value::Object(Object { fields })),
        Some(b'[') => serde_json::Deserializer::from_str(text)
            .deserialize_seq(ArrayVisitor { bump })
            .map(Value::Array),
        Some(b'"') => decode_str(text, bump).map(Value::Str),
        Some(b't') => Ok(Value::Bool(true)),
        Some(b'f') => Ok(Value::Bool(false)),
        Some(b'n') => Ok(Value::Null),
        _ => Ok(Value::Number(text)),
    };
    // The text was validated when the enclosing value was parsed.
    parsed.unwrap_or(Value::Raw(raw))
}

/// A JSON string token's content: borrowed when it has no escapes (the common case),
/// decoded into the arena otherwise.
fn decode_str<'a>(token: &'a str, bump: &'a Bump) -> Result<&'a str, serde_json::Error> {
    Ok(decode_token(token, bump).0)
}

/// A validated JSON string token's content, and whether it is exact (false when a lone
/// surrogate escape became U+FFFD, where serde_json would refuse the token).
fn decode_token<'a>(token: &'a str, bump: &'a Bump) -> (&'a str, bool) {
    let inner = &token[1..token.len() - 1];
    match memchr::memchr(b'\\', inner.as_bytes()) {
        None => (inner, true),
        // A validated token: unescape straight into the arena (serde_json would build
        // it in a fresh scratch buffer first).
        Some(first) => unescape(inner, first, bump),
    }
}

/// Unescapes the content of a JSON string token already validated by serde_json;
/// `first` is the offset of its first backslash. False with it when a lone surrogate
/// was replaced.
fn unescape<'a>(inner: &str, first: usize, bump: &'a Bump) -> (&'a str, bool) {
    let b = inner.as_bytes();
    let mut exact = true;
    let mut out = bumpalo::collections::String::with_capacity_in(b.len(), bump);
    out.push_str(&inner[..first]);
    let mut i = first;
    while i < b.len() {
        if b[i] != b'\\' {
            let next = memchr::memchr(b'\\', &b[i..]).map_or(b.len(), |n| i + n);
            out.push_str(&inner[i..next]);
            i = next;
            continue;
        }
        let c = match b[i + 1] {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            _ => {
                // \uXXXX, possibly a surrogate pair; a lone surrogate (valid JSON,
                // not valid UTF-8) becomes U+FFFD as in serde_json's lossy mode.
                let hex = |at: usize| u32::from_str_radix(&inner[at..at + 4], 16).unwrap_or(0xfffd);
                let hi = hex(i + 2);
                i += 6;
                let c = if (0xd800..0xdc00).contains(&hi)
                    && b.get(i) == Some(&b'\\')
                    && b.get(i + 1) == Some(&b'u')
                {
                    let lo = hex(i + 2);
                    if (0xdc00..0xe000).contains(&lo) {
                        i += 6;
                        char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))
                    } else {
                        None
                    }
                } else {
                    char::from_u32(hi)
                };
                exact &= c.is_some();
                out.push(c.unwrap_or('\u{fffd}'));
                continue;
            }
        };
        out.push(c);
        i += 2;
    }
    (out.into_bump_str(), exact)
}

struct StrSeed<'a> {
    bump: &'a Bump,
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for StrSeed<'a> {
    type Value = &'a str;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'a str, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for StrSeed<'a> {
    type Value = &'a str;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<&'a str, E> {
        Ok(v)
    }
    fn visit_str<E>(self, v: &str) -> Result<&'a str, E> {
        Ok(self.bump.alloc_str(v))
    }
}

struct ObjectVisitor<'a> {
    bump: &'a Bump,
}

impl<'de: 'a, 'a> Visitor<'de> for ObjectVisitor<'a> {
    type Value = BVec<'a, (&'a str, Value<'a>)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut fields = BVec::with_capacity_in(map.size_hint().unwrap_or(8), self.bump);
        let mut keys = KeySet::default();
        while let Some(key) = map.next_key_seed(StrSeed { bump: self.bump })? {
            let value: &'de RawValue = map.next_value()?;
            if keys.insert(key) {
                fields.push((key, Value::Raw(value)));
                continue;
            }
            // Duplicate keys: the last one wins, as in Logstash (Jackson) and serde_json.
            match fields
                .iter_mut()
                .find(|(k, _): &&mut (&str, Value)| same_key(k, key))
            {
                Some((_, v)) => *v = Value::Raw(value),
                None => fields.push((key, Value::Raw(value))),
            }
        }
        Ok(fields)
    }
}

struct ArrayVisitor<'a> {
    bump: &'a Bump,
}

impl<'de: 'a, 'a> Visitor<'de> for ArrayVisitor<'a> {
    type Value = BVec<'a, Value<'a>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array")
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        let mut items = BVec::new_in(self.bump);
        while let Some(value) = seq.next_element::<&'de RawValue>()? {
            items.push(Value::Raw(value));
        }
        Ok(items)
    }
}

/// Appends the compact JSON of `value`.
pub fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Raw(raw) | Value::Decoded(raw, _) => write_raw(raw, out),
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.as_bytes()),
        Value::Str(s) => write_str(s, out),
        Value::Timestamp(t) => {
            out.push(b'"');
            write_timestamp(t, out);
            out.push(b'"');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Value::Object(o) => write_object(o, out),
    }
}

pub fn write_object(o: &Object, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, v)) in o.fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(k, out);
        out.push(b':');
        write_value(v, out);
    }
    out.push(b'}');
}

/// Raw JSON is copied as is, unless it holds a raw line break (whitespace between
/// tokens), which would split an NDJSON line or a bulk body: then the whitespace between
/// tokens is dropped and every token copied as it came (a lone surrogate escape
/// included, which a parse into `serde_json::Value` refuses: such a value was written as
/// `null`; that parse also sorted keys and rewrote numbers).
fn write_raw(raw: &RawValue, out: &mut Vec<u8>) {
    let text = raw.get().as_bytes();
    if memchr::memchr2(b'\n', b'\r', text).is_none() {
        out.extend_from_slice(text);
        return;
    }
    out.reserve(text.len());
    let mut rest = text;
    while let Some(quote) = memchr::memchr(b'"', rest) {
        out.extend(rest[..quote].iter().filter(|b| !b.is_ascii_whitespace()));
        // The string token, up to its closing quote (validated text: every `\\`
        // escapes the byte after it, and a string holds no raw control character).
        // `get`: never past the end, even for text that was not validated after all.
        let mut end = quote + 1;
        while let Some(n) = rest
            .get(end..)
            .and_then(|r| memchr::memchr2(b'"', b'\\', r))
        {
            end += n + 1;
            if rest[end - 1] == b'"' {
                break;
            }
            end += 1;
        }
        let end = end.min(rest.len());
        out.extend_from_slice(&rest[quote..end]);
        rest = &rest[end..];
    }
    out.extend(rest.iter().filter(|b| !b.is_ascii_whitespace()));
}

/// A JSON string literal (RFC 8259 section 7): quote, backslash and control characters
/// escaped, everything else copied.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    // Most strings (every key of an event) need no escape: one scan, one copy.
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the form Logstash and Filebeat write `@timestamp` in.
pub fn write_timestamp(t: &DateTime<Utc>, out: &mut Vec<u8>) {
    fn digits(out: &mut Vec<u8>, v: u32, width: usize) {
        let mut buf = [b'0'; 4];
        let mut v = v;
        for i in (0..width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&buf[..width]);
    }
    let year = t.year();
    if !(0..=9999).contains(&year) {
        // Outside four-digit years, fall back to chrono's extended form.
        out.extend_from_slice(
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .as_bytes(),
        );
        return;
    }
    digits(out, year as u32, 4);
    out.push(b'-');
    digits(out, t.month(), 2);
    out.push(b'-');
    digits(out, t.day(), 2);
    out.push(b'T');
    digits(out, t.hour(), 2);
    out.push(b':');
    digits(out, t.minute(), 2);
    out.push(b':');
    digits(out, t.second(), 2);
    out.push(b'.');
    digits(out, t.timestamp_subsec_millis().min(999), 3);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(text: &str) -> String {
        let bump = Bump::new();
        let o = parse_object(text, &bump).unwrap();
        let mut out = Vec::new();
        write_object(&o, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn untouched_fields_are_written_byte_for_byte() {
        let text = r#"{"a":1.50,"b":"\u00e9\n","c":{"d":[1, 2]},"e":null}"#;
        assert_eq!(roundtrip(text), text);
    }

    #[test]
    fn raw_line_breaks_between_tokens_are_compacted() {
        assert_eq!(roundtrip("{\"a\":{\n \"b\": 1\r\n}}"), r#"{"a":{"b":1}}"#);
        // Tokens are copied as they came: strings with escapes (a lone surrogate too)
        // and spaces, numbers as written, keys in their order, duplicates and all.
        assert_eq!(
            roundtrip(
                "{\"a\":[ {\"z\" : \"x \\\" \\\\\",\n\"b\":1.50,\"z\":\"\\ud83d\"} ,\r\n2 ]}"
            ),
            r#"{"a":[{"z":"x \" \\","b":1.50,"z":"\ud83d"},2]}"#
        );
    }

    #[test]
    fn escaped_keys_are_decoded_and_re_escaped() {
        let bump = Bump::new();
        let o = parse_object(r#"{"a\"b":1,"\u00e9":2}"#, &bump).unwrap();
        assert_eq!(o.fields[0].0, "a\"b");
        assert_eq!(o.fields[1].0, "é");
        let mut out = Vec::new();
        write_object(&o, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"a\"b":1,"é":2}"#);
    }

    #[test]
    fn parse_object_rejects_trailing_text_and_non_objects() {
        let bump = Bump::new();
        for bad in [r#"{"a":1} x"#, "[1]", "\"s\"", "", "{\"a\":}"] {
            assert!(
                parse_object(bad, &bump).is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn strings_escape_quotes_backslashes_and_control_characters() {
        let mut out = Vec::new();
        write_str("a\"b\\c\n\u{1}é", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), r#""a\"b\\c\n\u0001é""#);
    }

    #[test]
    fn escaped_strings_decode_like_serde_json() {
        let bump = Bump::new();
        for token in [
            r#""plain""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            r#""\u00e9\u4f60\ud83d\ude80x""#,
            r#""\ud83d""#,
            r#""\udc00\u0041""#,
            r#""tail\n""#,
        ] {
            let want: String = serde_json::from_str(token).unwrap_or_else(|_| "\u{fffd}".into());
            let got = decode_str(token, &bump).unwrap();
            if token.contains("ud83d\"") || token.contains("udc00") {
                assert!(
                    got.contains('\u{fffd}'),
                    "{token}: lone surrogate -> U+FFFD, got {got:?}"
                );
            } else {
                assert_eq!(got, want, "{token}");
            }
        }
    }

    #[test]
    fn a_key_set_never_calls_a_present_key_absent() {
        // 300 keys in 128 bits: collisions are certain, misses must not be.
        let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        let mut set = KeySet::default();
        for k in &keys {
            set.insert(k);
        }
        for k in &keys {
            assert!(
                !set.insert(k),
                "{k} was added, so it may not be surely absent"
            );
        }
        // Parsing with the set keeps serde_json's last-wins rule on every duplicate.
        let text = format!(
            "{{{}}}",
            (0..600)
                .map(|i| format!(r#""k{}":{i}"#, i % 300))
                .collect::<Vec<_>>()
                .join(",")
        );
        let want: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
        let bump = Bump::new();
        let o = parse_object(&text, &bump).unwrap();
        assert_eq!(o.fields.len(), 300);
        for (k, v) in o.fields.iter() {
            let Value::Raw(raw) = v else {
                panic!("{k} parsed")
            };
            assert_eq!(want[*k].to_string(), raw.get(), "{k}");
        }
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_in_the_first_position() {
        assert_eq!(roundtrip(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
    }
}
