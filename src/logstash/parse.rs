//! Logstash's pipeline configuration language (`lscl_grammar.treetop`): sections,
//! plugins, values, `#` comments and `if`/`else if`/`else`, with the line of each part.
//! Strings are taken as written between their quotes (`config.support_escapes` is off
//! by default), as Logstash does.

use crate::pipeline::condition::{cs_len, delimited_len, starts_with_word};
use crate::pipeline::Condition;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Input,
    Filter,
    Output,
}

#[derive(Debug, Clone)]
pub enum Item {
    Plugin(Plugin),
    /// `if`, any `else if`s, and an optional `else` (its condition `None`).
    Branch(Vec<Arm>),
}

#[derive(Debug, Clone)]
pub struct Arm {
    pub cond: Option<Condition>,
    pub line: usize,
    pub body: Vec<Item>,
}

#[derive(Debug, Clone)]
pub struct Plugin {
    pub name: String,
    pub line: usize,
    pub attrs: Vec<Attr>,
}

#[derive(Debug, Clone)]
pub struct Attr {
    pub name: String,
    pub line: usize,
    pub value: Val,
}

#[derive(Debug, Clone)]
pub enum Val {
    Str(String),
    Number(String),
    Bare(String),
    Array(Vec<Val>),
    Hash(Vec<(String, Val)>),
    Plugin(Plugin),
}

impl Val {
    /// The text of a string, bareword or number.
    pub fn text(&self) -> Option<&str> {
        match self {
            Val::Str(s) | Val::Number(s) | Val::Bare(s) => Some(s),
            _ => None,
        }
    }
}

/// A syntax error: 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

pub fn parse(text: &str) -> Result<Vec<(Section, Vec<Item>)>, SyntaxError> {
    let mut p = P { text, at: 0 };
    let mut sections = Vec::new();
    p.cs();
    while p.at < text.len() {
        let kind = if p.word("input") {
            Section::Input
        } else if p.word("filter") {
            Section::Filter
        } else if p.word("output") {
            Section::Output
        } else {
            return Err(p.err("expected `input`, `filter` or `output`"));
        };
        p.cs();
        p.expect("{")?;
        let items = p.items()?;
        sections.push((kind, items));
        p.cs();
    }
    Ok(sections)
}

struct P<'t> {
    text: &'t str,
    at: usize,
}

impl<'t> P<'t> {
    fn line_col(&self, at: usize) -> (usize, usize) {
        let before = &self.text[..at.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        (line, col)
    }

    fn line(&self) -> usize {
        self.line_col(self.at).0
    }

    fn err(&self, message: impl Into<String>) -> SyntaxError {
        self.err_at(self.at, message)
    }

    fn err_at(&self, at: usize, message: impl Into<String>) -> SyntaxError {
        let (line, column) = self.line_col(at);
        SyntaxError {
            line,
            column,
            message: message.into(),
        }
    }

    fn rest(&self) -> &'t str {
        &self.text[self.at..]
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    /// `cs`: whitespace and comments.
    fn cs(&mut self) {
        self.at += cs_len(self.rest());
    }

    fn word(&mut self, w: &str) -> bool {
        let found = starts_with_word(self.rest(), w, b"-");
        if found {
            self.at += w.len();
        }
        found
    }

    fn expect(&mut self, s: &str) -> Result<(), SyntaxError> {
        if self.rest().starts_with(s) {
            self.at += s.len();
            Ok(())
        } else {
            Err(self.err(format!("expected `{s}`")))
        }
    }

    /// `(branch_or_plugin cs)* "}"`, after the opening brace.
    fn items(&mut self) -> Result<Vec<Item>, SyntaxError> {
        let mut items = Vec::new();
        loop {
            self.cs();
            match self.peek() {
                Some(b'}') => {
                    self.at += 1;
                    return Ok(items);
                }
                None => return Err(self.err("unexpected end of file: a `}` is missing")),
                _ => {}
            }
            if self.word("if") {
                items.push(self.branch()?);
            } else {
                items.push(Item::Plugin(self.plugin()?));
            }
        }
    }

    /// After `if`: its condition and body, then `else if`s and an `else`.
    fn branch(&mut self) -> Result<Item, SyntaxError> {
        let mut arms = vec![self.arm(true)?];
        loop {
            let save = self.at;
            self.cs();
            if !self.word("else") {
                self.at = save;
                break;
            }
            self.cs();
            if self.word("if") {
                arms.push(self.arm(true)?);
            } else {
                arms.push(self.arm(false)?);
                break;
            }
        }
        Ok(Item::Branch(arms))
    }

    fn arm(&mut self, with_condition: bool) -> Result<Arm, SyntaxError> {
        let line = self.line();
        let cond = if with_condition {
            self.cs();
            let start = self.at;
            let (cond, used) = Condition::parse_prefix(self.rest())
                .map_err(|e| self.err_at(start + e.offset, format!("condition: {}", e.message)))?;
            self.at += used;
            Some(cond)
        } else {
            None
        };
        self.cs();
        self.expect("{")?;
        let body = self.items()?;
        Ok(Arm { cond, line, body })
    }

    /// `name cs "{" cs attributes cs "}"`.
    fn plugin(&mut self) -> Result<Plugin, SyntaxError> {
        let line = self.line();
        let name = self.name()?;
        self.cs();
        self.expect("{")?;
        let mut attrs = Vec::new();
        loop {
            self.cs();
            if self.peek() == Some(b'}') {
                self.at += 1;
                return Ok(Plugin { name, line, attrs });
            }
            if self.peek().is_none() {
                return Err(self.err("unexpected end of file inside a plugin"));
            }
            let line = self.line();
            let key = self.name()?;
            self.cs();
            self.expect("=>")?;
            self.cs();
            let value = self.value()?;
            attrs.push(Attr {
                name: key,
                line,
                value,
            });
        }
    }

    /// `name: [A-Za-z0-9_-]+ / string`.
    fn name(&mut self) -> Result<String, SyntaxError> {
        if let Some(q @ (b'"' | b'\'')) = self.peek() {
            return self.string(q);
        }
        let n = self
            .rest()
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            .count();
        if n == 0 {
            return Err(self.err("expected a name"));
        }
        let s = self.rest()[..n].to_string();
        self.at += n;
        Ok(s)
    }

    fn string(&mut self, q: u8) -> Result<String, SyntaxError> {
        let (content, used) =
            delimited_len(self.rest(), q).ok_or_else(|| self.err("unterminated string"))?;
        self.at += used;
        Ok(content.to_string())
    }

    /// `value: plugin / bareword / string / number / array / hash`.
    fn value(&mut self) -> Result<Val, SyntaxError> {
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => Ok(Val::Str(self.string(q)?)),
            Some(b'[') => self.array(),
            Some(b'{') => self.hash(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b) if b.is_ascii_alphabetic() || b == b'_' => {
                let save = self.at;
                let n = self
                    .rest()
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    .count();
                let word = self.rest()[..n].to_string();
                self.at += n;
                let after = self.at;
                self.cs();
                if self.peek() == Some(b'{') {
                    self.at = save;
                    return Ok(Val::Plugin(self.plugin()?));
                }
                self.at = after;
                if word.len() < 2 {
                    return Err(self.err_at(save, "a bareword has at least two characters"));
                }
                Ok(Val::Bare(word))
            }
            _ => Err(self.err("expected a value (string, number, bareword, array or hash)")),
        }
    }

    fn number(&mut self) -> Result<Val, SyntaxError> {
        let rest = self.rest().as_bytes();
        let mut n = usize::from(rest.first() == Some(&b'-'));
        let d = rest[n..].iter().take_while(|b| b.is_ascii_digit()).count();
        if d == 0 {
            return Err(self.err("expected a number"));
        }
        n += d;
        if rest.get(n) == Some(&b'.') {
            n += 1 + rest[n + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
        }
        let s = self.rest()[..n].to_string();
        self.at += n;
        Ok(Val::Number(s))
    }

    fn array(&mut self) -> Result<Val, SyntaxError> {
        self.at += 1;
        let mut items = Vec::new();
        self.cs();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Val::Array(items));
        }
        loop {
            self.cs();
            items.push(self.value()?);
            self.cs();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Val::Array(items));
                }
                _ => return Err(self.err("expected `,` or `]` in an array")),
            }
        }
    }

    /// `hash: "{" cs hashentries? cs "}"`; entries are separated by whitespace only.
    fn hash(&mut self) -> Result<Val, SyntaxError> {
        self.at += 1;
        let mut entries: Vec<(String, Val)> = Vec::new();
        loop {
            self.cs();
            match self.peek() {
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Val::Hash(entries));
                }
                Some(b',') => {
                    return Err(self.err(
                        "hash entries are separated by whitespace, not commas (Logstash's grammar)",
                    ))
                }
                None => return Err(self.err("unexpected end of file inside a hash")),
                _ => {}
            }
            let at = self.at;
            let key = match self.peek() {
                Some(b'-' | b'0'..=b'9') => match self.number()? {
                    Val::Number(n) => n,
                    _ => unreachable!(),
                },
                _ => self.name()?,
            };
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(self.err_at(at, format!("duplicate key `{key}` in a hash")));
            }
            self.cs();
            self.expect("=>")?;
            self.cs();
            let v = self.value()?;
            entries.push((key, v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_plugins_values_and_branches_parse_with_lines() {
        let text = r#"# comment
input { beats { port => 5044 } }
filter {
  json { source => "message" tag_on_failure => ['a', "b"] }
  if [level] == "DEBUG" { drop {} }
  else if [level] in ["ERROR", "FATAL"] {
    mutate { add_field => { "[@metadata][i]" => "errors" "x" => 1 } }
  } else { mutate { lowercase => [ level ] } }
}
output { elasticsearch { hosts => ["http://es:9200"] codec => json { charset => "UTF-8" } } }
"#;
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 3);
        let (kind, items) = &s[1];
        assert_eq!(*kind, Section::Filter);
        let Item::Plugin(json) = &items[0] else {
            panic!()
        };
        assert_eq!((json.name.as_str(), json.line), ("json", 4));
        let Item::Branch(arms) = &items[1] else {
            panic!()
        };
        assert_eq!(arms.len(), 3);
        assert_eq!(arms.iter().map(|a| a.line).collect::<Vec<_>>(), [5, 6, 8]);
        assert!(arms[2].cond.is_none());
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let e = parse("filter {\n  mutate { add_field => { \"a\" => \"b\", \"c\" => \"d\" } }\n}")
            .unwrap_err();
        assert_eq!((e.line, e.column), (2, 37), "{e:?}");
        let e = parse("filter {\n  if [a] = 1 { drop {} }\n}").unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
        assert!(
            e.message.contains("condition") || e.message.contains("expected"),
            "{e:?}"
        );
    }
}
