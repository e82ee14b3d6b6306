//! `lumberd import-logstash`: a Logstash pipeline configuration in, the equivalent lumberd
//! TOML and the list of what could not be translated out. Text to text: it knows no
//! sockets, outputs or files.
//!
//! Logstash runs a branch's condition once, before the branch; lumberd gives each filter
//! its own `if`. Flattening is exact unless a filter inside the branch writes a field
//! the condition reads: then the branch taken is recorded once in an `[@metadata]` flag
//! that the branch's filters test (see `translate.rs`).

mod parse;
mod translate;

pub use parse::{parse, Arm, Attr, Item, Plugin, Section, SyntaxError, Val};
pub use translate::{translate, Import, Refusal};

/// Translates Logstash configuration files (name, text), concatenated in the order
/// given, as Logstash concatenates the files of `path.config`.
pub fn import(files: &[(String, String)]) -> Import {
    let mut sections = Vec::new();
    let mut refusals = Vec::new();
    for (name, text) in files {
        match parse(text) {
            Ok(s) => sections.extend(s.into_iter().map(|(k, items)| (name.clone(), k, items))),
            Err(e) => refusals.push(Refusal {
                at: format!("{name}:{}:{}", e.line, e.column),
                what: "syntax".into(),
                reason: e.message,
            }),
        }
    }
    let mut out = translate(&sections);
    refusals.append(&mut out.refusals);
    out.refusals = refusals;
    out
}
