//! The raw layer shared by the sections: where each key is in the file, one section of
//! the merged table read key by key into its serde struct, and the value shapes several
//! sections use (durations, one string or many). Knows no section's meaning.

use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::env::EnvText;
use super::problems::Problems;

/// 1-based line of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line of every section and of every key in a section, from toml's own spans:
/// `(section, None)` for the section, `(section, Some(key))` for a key in it.
pub(super) fn key_lines(text: &str) -> Vec<(String, Option<String>, usize)> {
    // A file that does not parse has been reported already; it has no lines to give.
    let Ok(Document(sections)) = toml::from_str::<Document>(text) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for (section, Keys(keys)) in sections {
        let line = line_of(text, section.span().start);
        let section = section.into_inner();
        for key in keys {
            let line = line_of(text, key.span().start);
            lines.push((section.clone(), Some(key.into_inner()), line));
        }
        lines.push((section, None, line));
    }
    lines
}

/// The file's sections with their keys' positions, values skipped.
struct Document(Vec<(Spanned<String>, Keys)>);

/// A section's keys; empty when the section is not a table (reported when it is read).
struct Keys(Vec<Spanned<String>>);

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Document;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a TOML document")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
                let mut sections = Vec::new();
                while let Some(name) = map.next_key::<Spanned<String>>()? {
                    sections.push((name, map.next_value::<Keys>()?));
                }
                Ok(Document(sections))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any TOML value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Keys, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Keys(Vec::new()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }
            fn visit_str<E>(self, _: &str) -> Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The keys a raw section struct accepts, as serde's derive declares them: its
/// `deserialize_struct` call names every field.
pub(super) fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Introspect<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Introspect<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields taken"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Introspect(&mut fields));
    fields
}

/// Reads section `name` of the merged table into its raw struct one key at a time, so
/// that every unknown or mistyped key is reported with where it was set, and the rest
/// of the section is still read and checked. A key that fails keeps its default.
pub(super) fn section<T: Default + DeserializeOwned>(
    table: &mut toml::Table,
    name: &str,
    env: &EnvText,
    problems: &mut Problems,
) -> T {
    let keys = match table.remove(name) {
        None => return T::default(),
        Some(toml::Value::Table(keys)) => keys,
        Some(other) => {
            problems.section(
                name,
                format!(
                    "must be a table of keys, not the {} {other}",
                    other.type_str()
                ),
            );
            return T::default();
        }
    };
    let known = keys_of::<T>();
    let mut good = toml::Table::new();
    for (key, value) in keys {
        let dotted = format!("{name}.{key}");
        if !known.contains(&key.as_str()) {
            problems.key(
                &dotted,
                format!("unknown key (expected one of {})", known.join(", ")),
            );
            continue;
        }
        let error = match read_one::<T>(&key, value.clone()) {
            Ok(()) => {
                good.insert(key, value);
                continue;
            }
            Err(e) => e,
        };
        // An environment variable's text is read as TOML when it parses as a number, a
        // boolean or an array; a string key given `1001` or `true` (a password) takes
        // the text as written.
        if let Some(text) = env.get(&dotted).filter(|_| !value.is_str()) {
            let text = toml::Value::String(text.clone());
            if read_one::<T>(&key, text.clone()).is_ok() {
                good.insert(key, text);
                continue;
            }
        }
        problems.key(&dotted, error.message());
    }
    match toml::Value::Table(good).try_into() {
        Ok(raw) => raw,
        // Every key was read on its own above; together they can only fail if the struct
        // checks keys against each other, which none does.
        Err(e) => {
            problems.section(name, e.message());
            T::default()
        }
    }
}

/// Whether `key = value` alone reads into `T` (every other key at its default).
fn read_one<T: DeserializeOwned>(key: &str, value: toml::Value) -> Result<(), toml::de::Error> {
    let mut one = toml::Table::new();
    one.insert(key.to_string(), value);
    toml::Value::Table(one).try_into::<T>().map(drop)
}

/// A duration key: `"500ms"`, `"5s"`, `"5m"`, `"30d"` (humantime's syntax), read when the
/// file is; the defaults are `Duration` constants.
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration like \"5s\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v)
                .map_err(|e| E::custom(format!("`{v}` is not a duration like \"5s\" ({e})")))
        }
    }
    d.deserialize_any(V)
}

/// A size key: a number of bytes, or text with a unit, `"4GiB"`, `"64MiB"`, `"512KiB"`,
/// `"10MB"` (binary units are powers of 1024, decimal ones of 1000). By hand: a dozen
/// lines, where the size crates (bytesize, byte-unit) bring their own formatting.
pub(super) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a size like \"4GiB\" or a number of bytes")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("`{v}` is not a size")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse_size(v).ok_or_else(|| {
                E::custom(format!(
                    "`{v}` is not a size like \"4GiB\", \"64MiB\" or a number of bytes"
                ))
            })
        }
    }
    d.deserialize_any(V)
}

fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// A key that takes one string or a list of them: an environment variable gives one
/// string, or a TOML array literal such as `["a.pem", "b.pem"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Strings {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Strings {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            Strings::None => Vec::new(),
            Strings::One(s) => vec![s],
            Strings::Many(v) => v,
        }
    }
}

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Strings, E> {
                Ok(Strings::One(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                let mut all = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    all.push(s);
                }
                Ok(Strings::Many(all))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Raw {
        count: usize,
        name: String,
        #[serde(deserialize_with = "duration")]
        wait: Duration,
    }

    #[test]
    fn sizes_take_binary_and_decimal_units_and_refuse_the_rest() {
        assert_eq!(parse_size("4GiB"), Some(4 << 30));
        assert_eq!(parse_size("64 MiB"), Some(64 << 20));
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("1024"), Some(1024));
        for bad in ["", "GiB", "4 gigs", "-1", "1.5GiB", "99999999999TiB"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_of_lists_the_fields_serde_accepts() {
        assert_eq!(keys_of::<Raw>(), ["count", "name", "wait"]);
    }

    #[test]
    fn key_lines_come_from_toml_spans() {
        let text = "# comment\n[a]\nx = 1\n\n  y = { z = 2 }\n[b]\nc = [\n 1,\n]\nd = 3\n";
        let lines = key_lines(text);
        let at = |s: &str, k: Option<&str>| {
            lines
                .iter()
                .find(|(ls, lk, _)| ls == s && lk.as_deref() == k)
                .map(|l| l.2)
        };
        assert_eq!(at("a", None), Some(2));
        assert_eq!(at("a", Some("x")), Some(3));
        assert_eq!(at("a", Some("y")), Some(5));
        assert_eq!(at("b", Some("d")), Some(10));
        assert_eq!(key_lines("top = 1\n[a\n"), vec![]);
    }

    #[test]
    fn every_bad_key_of_a_section_is_reported_and_the_good_ones_kept() {
        let mut table: toml::Table =
            "[s]\ncount = \"many\"\nname = \"n\"\nwait = \"soon\"\nnope = 1\n"
                .parse()
                .unwrap();
        let mut problems = Problems::default();
        let raw: Raw = section(&mut table, "s", &EnvText::new(), &mut problems);
        assert_eq!(raw.name, "n");
        assert_eq!(raw.count, 0, "a bad key keeps its default");
        let all = problems.into_error().problems;
        assert_eq!(all.len(), 3, "{all:#?}");
        assert!(
            all[0].starts_with("s.count: invalid type: string \"many\""),
            "{all:#?}"
        );
        assert!(
            all[1].starts_with("s.wait: `soon` is not a duration"),
            "{all:#?}"
        );
        assert_eq!(
            all[2],
            "s.nope: unknown key (expected one of count, name, wait)"
        );
    }
}
