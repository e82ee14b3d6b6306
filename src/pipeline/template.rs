//! Logstash's `sprintf` templates, for index names and added fields and tags:
//! `%{field}` (dotted or `[a][b]`) is the field's value, `%{+yyyy.MM.dd}` formats the
//! event's `@timestamp` in UTC. A reference to a missing field stays as written, as in
//! Logstash.

use super::date::Pattern;
use super::doc::Doc;
use super::path::FieldPath;

#[derive(Debug, Clone)]
enum Part {
    Literal(Box<str>),
    Field(FieldPath, Box<str>),
    Time(Pattern),
}

#[derive(Debug, Clone)]
pub struct Template {
    source: Box<str>,
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("%{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].into()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("`{source}`: `%{{` without a closing `}}`"))?;
            let inner = &after[..end];
            let whole = &rest[start..start + 3 + end];
            parts.push(match inner.strip_prefix('+') {
                Some(pattern) => {
                    Part::Time(Pattern::parse(pattern).map_err(|e| format!("`{source}`: {e}"))?)
                }
                None => Part::Field(
                    FieldPath::parse(inner).map_err(|e| format!("`{source}`: {e}"))?,
                    whole.into(),
                ),
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.into()));
        }
        Ok(Template {
            source: source.into(),
            parts,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the rendering depends on nothing but the day of `@timestamp`.
    pub fn is_daily(&self) -> bool {
        self.parts.iter().all(|p| match p {
            Part::Literal(_) => true,
            Part::Time(p) => p.is_daily(),
            Part::Field(..) => false,
        })
    }

    /// The fields the template reads, for configuration checks.
    pub fn fields(&self) -> impl Iterator<Item = &FieldPath> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f, _) => Some(f),
            _ => None,
        })
    }

    pub fn render(&self, doc: &mut Doc, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Time(p) => p.format(&doc.timestamp(), out),
                Part::Field(path, written) => match doc.get(path) {
                    Some(v) => v.render(out),
                    None => out.push_str(written),
                },
            }
        }
    }
}
