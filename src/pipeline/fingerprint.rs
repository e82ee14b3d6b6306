//! Document ids from an event's origin, so a window Filebeat resends after a broken
//! connection overwrites nothing and doubles nothing: the same event always gets the
//! same `_id`, and Elasticsearch answers the second `create` with 409.
//!
//! The id is computed before any filter runs (the Qwen pipeline removes `agent` and
//! `host`), from a list of parts. Each part names one or more fields separated by `|`
//! (the first present one is used); a part ending in `?` is optional. When a required
//! part has no value the event gets no id (Elasticsearch assigns one), since an id from
//! half an origin could collide across hosts or files.

use twox_hash::XxHash3_128;

use super::doc::Doc;
use super::path::FieldPath;
use crate::record::DocId;

/// The default: which Filebeat (its persistent `agent.id`, else the host name), which
/// file (path, and filestream's file identity when present), where in it, and the line
/// itself. The line is needed because Filebeat 7.17's filestream events (and the `log`
/// input's) name a file by its path alone: after a rename rotation (or `copytruncate`)
/// the new file's lines repeat the old file's (path, offset) pairs, and without the
/// line they would get the old lines' ids and be answered 409, i.e. lost
/// (tests/filebeat.rs, rotation). A resend carries the same line, so it keeps its id.
pub const DEFAULT_FINGERPRINT: [&str; 7] = [
    "agent.id|host.name",
    "log.file.path",
    "log.file.device_id?",
    "log.file.inode?",
    "log.file.fingerprint?",
    "log.offset",
    "message?",
];

#[derive(Debug, Clone)]
struct Part {
    alternatives: Vec<FieldPath>,
    optional: bool,
}

#[derive(Debug, Clone)]
pub struct Fingerprint {
    parts: Vec<Part>,
}

impl Fingerprint {
    pub fn parse<S: AsRef<str>>(parts: &[S]) -> Result<Fingerprint, String> {
        let mut out = Vec::with_capacity(parts.len());
        for part in parts {
            let part = part.as_ref();
            let (names, optional) = match part.strip_suffix('?') {
                Some(p) => (p, true),
                None => (part, false),
            };
            let alternatives = names
                .split('|')
                .map(FieldPath::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("fingerprint part `{part}`: {e}"))?;
            out.push(Part {
                alternatives,
                optional,
            });
        }
        if !out.is_empty() && out.iter().all(|p| p.optional) {
            return Err("fingerprint: at least one part must be required (no `?`)".into());
        }
        Ok(Fingerprint { parts: out })
    }

    /// The fields it reads, for configuration checks.
    pub fn fields(&self) -> impl Iterator<Item = &FieldPath> {
        self.parts.iter().flat_map(|p| p.alternatives.iter())
    }

    /// The id of `doc`'s origin, or `None` when a required part is missing.
    pub fn id(&self, doc: &mut Doc) -> Option<DocId> {
        // The parts, length-prefixed, hashed in one call (cheaper than streaming), in
        // the event's arena: no allocation of its own.
        let bump = doc.bump;
        let mut input = bumpalo::collections::Vec::with_capacity_in(1024, bump);
        let mut text = String::new();
        for (i, part) in self.parts.iter().enumerate() {
            let found = part.alternatives.iter().enumerate().find_map(|(a, path)| {
                let v = doc.get(path)?;
                if matches!(v.kind(), super::value::Kind::Null) {
                    return None;
                }
                // Strings and numbers as they render, without a copy; a string is
                // decoded once, in place, for the filters that read it next (`message`).
                if let Some(s) = v.decoded(bump).or_else(|| v.number_text()) {
                    return Some((a, s));
                }
                text.clear();
                v.render(&mut text);
                Some((a, &*bump.alloc_str(&text)))
            });
            match found {
                // Which part and which alternative, then the value, length-prefixed, so
                // different origins cannot produce the same byte stream.
                // `_copy`: a memcpy (bumpalo's `extend_from_slice` copies byte by byte).
                Some((a, text)) => input.extend_from_slices_copy(&[
                    &[i as u8, a as u8],
                    &(text.len() as u64).to_le_bytes(),
                    text.as_bytes(),
                ]),
                None if part.optional => input.extend_from_slice_copy(&[i as u8, 0xff]),
                None => return None,
            }
        }
        Some(DocId::from_digest(XxHash3_128::oneshot(&input)))
    }
}
