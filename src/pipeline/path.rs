//! Field paths in the configuration: dotted (`log.file.path`) or Logstash's bracket form
//! (`[log][file][path]`, which also reaches keys that contain dots: `[a.b]`).

use std::fmt;

/// One step of a path: an object key, or an array index when it is all digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment(Box<str>);

impl Segment {
    pub fn key(&self) -> &str {
        &self.0
    }

    pub fn index(&self) -> Option<usize> {
        if self.0.bytes().all(|b| b.is_ascii_digit()) {
            self.0.parse().ok()
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: Box<str>,
    segments: Vec<Segment>,
}

impl FieldPath {
    /// Parses a path; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        let segments: Vec<Segment> = if text.starts_with('[') {
            let mut segments = Vec::new();
            let mut rest = text;
            while !rest.is_empty() {
                let inner = rest
                    .strip_prefix('[')
                    .and_then(|r| r.split_once(']'))
                    .ok_or_else(|| {
                        format!("`{text}`: expected `[name]` segments like `[log][file][path]`")
                    })?;
                if inner.0.is_empty() || inner.0.contains('[') {
                    return Err(format!("`{text}`: empty or nested `[]` segment"));
                }
                segments.push(Segment(inner.0.into()));
                rest = inner.1;
            }
            segments
        } else {
            if text.contains('[') || text.contains(']') {
                return Err(format!(
                    "`{text}`: mixes dotted and bracket forms; write `[a][b]` or `a.b`"
                ));
            }
            text.split('.').map(|s| Segment(s.into())).collect()
        };
        if segments.is_empty() || segments.iter().any(|s| s.0.is_empty()) {
            return Err(format!("`{text}`: empty field name in path"));
        }
        Ok(FieldPath {
            text: text.into(),
            segments,
        })
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// `@metadata` and below: kept out of the output document, like Logstash's.
    pub fn is_metadata(&self) -> bool {
        self.segments[0].key() == "@metadata"
    }

    /// True when `self` is `other` or inside it (`a.b` is within `a`).
    pub fn is_within(&self, other: &FieldPath) -> bool {
        self.segments.starts_with(&other.segments)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(p: &str) -> Vec<String> {
        FieldPath::parse(p)
            .unwrap()
            .segments()
            .iter()
            .map(|s| s.key().to_owned())
            .collect()
    }

    #[test]
    fn dotted_and_bracket_paths_name_the_same_field() {
        assert_eq!(keys("log.file.path"), ["log", "file", "path"]);
        assert_eq!(keys("[log][file][path]"), ["log", "file", "path"]);
        assert_eq!(keys("[a.b][0]"), ["a.b", "0"]);
    }

    #[test]
    fn malformed_paths_are_rejected_with_the_reason() {
        for bad in [
            "", "a..b", ".a", "a.", "[a]b", "[a", "[]", "a[b]", "[a][[b]]",
        ] {
            assert!(FieldPath::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
