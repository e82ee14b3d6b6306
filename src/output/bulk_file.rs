//! Bulk-form files (the file output's `<index>.ndjson`, `output.dead_letter_file`):
//! opened for appending only after their tail is checked and cut back to the last whole
//! action+document pair, so a crash or a failed write never leaves a file that is not a
//! valid `_bulk` body. Knows nothing of batches or deliveries.
//!
//! Only the tail is read: lumberd writes whole pairs and truncates before it appends, so
//! damage can only follow the last pair that was complete when a writer stopped (a kill
//! tears the bytes after the last fsync, which were never acknowledged; cutting them
//! loses nothing). Action lines are recognised by the exact form lumberd writes, and a
//! document always holds `@timestamp`, so a document cannot pass for an action.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::record::{IndexName, MAX_INDEX_NAME_BYTES};

/// Bytes read per step while looking back for a newline.
const TAIL_CHUNK: usize = 64 * 1024;

/// What opening a bulk file found at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// New, empty, or ending in a whole pair.
    Whole,
    /// A torn record was cut: `bytes` from the end.
    Cut { bytes: u64 },
    /// The end is not explained by a torn record (two documents or two actions in a row,
    /// a line that is not JSON): the file was moved to `moved_to` and a new one started,
    /// so no acknowledged byte is cut and the new file is a valid body.
    Damaged { moved_to: PathBuf },
}

impl Tail {
    /// The one log line for what opening `path` found (none when it was whole).
    pub fn log(&self, path: &Path) {
        match self {
            Tail::Whole => {}
            Tail::Cut { bytes } => tracing::warn!(file = %path.display(), bytes,
                "cut a torn record from the end of the file (written after the last fsync, never acknowledged)"),
            Tail::Damaged { moved_to } => tracing::error!(file = %path.display(),
                moved_to = %moved_to.display(),
                "the file's end is not a whole action+document pair nor a torn one; moved aside, a new file started"),
        }
    }
}

/// Opens `path` for appending (creating it), after cutting a torn tail; `true` when the
/// file is new (its directory entry needs an fsync).
pub fn open_append(path: &Path) -> io::Result<(File, bool, Tail)> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
    };
    let existed = path.exists();
    let file = open()?;
    let len = file.metadata()?.len();
    match whole_prefix(&file, len)? {
        Ok(keep) if keep == len => Ok((file, !existed, Tail::Whole)),
        Ok(keep) => {
            file.set_len(keep)?;
            file.sync_data()?;
            Ok((file, false, Tail::Cut { bytes: len - keep }))
        }
        Err(_) => {
            drop(file);
            let moved_to = aside(path);
            std::fs::rename(path, &moved_to)?;
            Ok((open()?, true, Tail::Damaged { moved_to }))
        }
    }
}

/// `<path>.damaged-<n>`, the first that does not exist.
fn aside(path: &Path) -> PathBuf {
    let mut n = 1u32;
    loop {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".damaged-{n}"));
        let candidate = PathBuf::from(name);
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

/// The length of the file's longest prefix that ends in a whole pair, when the rest is a
/// torn record (`Ok`); `Err(offset)` of a line that no torn write explains.
pub fn whole_prefix(file: &File, len: u64) -> io::Result<Result<u64, u64>> {
    // A line without its newline is torn.
    let mut end = match last_newline(file, len)? {
        Some(nl) => nl + 1,
        None => return Ok(Ok(0)),
    };
    let mut start = line_start(file, end - 1)?;
    let mut line = read(file, start, end - 1)?;
    if is_action(&line) {
        // An action line whose document never made it.
        end = start;
        if end == 0 {
            return Ok(Ok(0));
        }
        start = line_start(file, end - 1)?;
        line = read(file, start, end - 1)?;
    }
    if is_action(&line) || !is_document(&line) || start == 0 {
        return Ok(Err(start));
    }
    let action_start = line_start(file, start - 1)?;
    if is_action(&read(file, action_start, start - 1)?) {
        Ok(Ok(end))
    } else {
        Ok(Err(action_start))
    }
}

/// The position of the last `\n` before `before`.
fn last_newline(file: &File, before: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; TAIL_CHUNK];
    let mut end = before;
    while end > 0 {
        let start = end.saturating_sub(TAIL_CHUNK as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = memchr::memrchr(b'\n', chunk) {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

/// Where the line that ends at `end` (its newline's position) starts.
fn line_start(file: &File, end: u64) -> io::Result<u64> {
    Ok(last_newline(file, end)?.map_or(0, |nl| nl + 1))
}

fn read(file: &File, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    Ok(buf)
}

/// Exactly the action line lumberd writes (`super::write_create_action`):
/// `{"create":{"_index":"<valid name>"}}` with an optional `,"_id":"<32 hex>"`.
pub fn is_action(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"{\"create\":{\"_index\":\"") else {
        return false;
    };
    let Some(quote) = memchr::memchr(b'"', rest) else {
        return false;
    };
    let valid_name = std::str::from_utf8(&rest[..quote])
        .is_ok_and(|name| IndexName::check(name, MAX_INDEX_NAME_BYTES).is_ok());
    let mut rest = &rest[quote + 1..];
    if let Some(id) = rest.strip_prefix(b",\"_id\":\"") {
        let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if id.len() < 33 || !id[..32].iter().all(hex) || id[32] != b'"' {
            return false;
        }
        rest = &id[33..];
    }
    valid_name && rest == b"}}"
}

/// A whole JSON object on one line.
fn is_document(line: &[u8]) -> bool {
    line.first() == Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "{\"create\":{\"_index\":\"qwen-logs-2025.04.05\",\"_id\":\"0123456789abcdef0123456789abcdef\"}}\n";
    const A_NO_ID: &str = "{\"create\":{\"_index\":\"qwen-logs-2025.04.05\"}}\n";
    const D: &str = "{\"@timestamp\":\"2025-04-05T10:23:45.000Z\",\"message\":\"x\"}\n";

    fn opened(content: &str) -> (tempfile::TempDir, PathBuf, Tail, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.ndjson");
        std::fs::write(&path, content).unwrap();
        let (_, _, tail) = open_append(&path).unwrap();
        let kept = std::fs::read_to_string(&path).unwrap();
        (dir, path, tail, kept)
    }

    #[test]
    fn every_torn_prefix_of_a_valid_file_is_cut_back_to_its_last_whole_pair() {
        let whole = format!("{A}{D}{A_NO_ID}{D}{A}{D}");
        let pair_ends: Vec<usize> = [
            0,
            A.len() + D.len(),
            A.len() + D.len() + A_NO_ID.len() + D.len(),
        ]
        .into_iter()
        .chain([whole.len()])
        .collect();
        for cut in 0..=whole.len() {
            let want = *pair_ends.iter().rev().find(|&&e| e <= cut).unwrap();
            let (_, _, tail, kept) = opened(&whole[..cut]);
            assert_eq!(kept, whole[..want], "a file torn at byte {cut}");
            let expect = if want == cut {
                Tail::Whole
            } else {
                Tail::Cut {
                    bytes: (cut - want) as u64,
                }
            };
            assert_eq!(tail, expect, "a file torn at byte {cut}");
        }
    }

    #[test]
    fn a_tail_no_torn_write_explains_is_moved_aside_not_cut() {
        for bad in [
            format!("{A}{D}{D}"),
            format!("{A}{D}{A}{A}"),
            D.to_string(),
            format!("{A}{D}{A}not json\n"),
            format!("{A}{D}\0\0\0\n"),
        ] {
            let (_dir, path, tail, kept) = opened(&bad);
            let Tail::Damaged { moved_to } = tail else {
                panic!("{bad:?} must be moved aside, got {tail:?}");
            };
            assert_eq!(kept, "", "a new file is started for {bad:?}");
            assert_eq!(std::fs::read_to_string(&moved_to).unwrap(), bad);
            assert!(moved_to.starts_with(path.parent().unwrap()));
        }
    }

    #[test]
    fn only_the_exact_action_form_is_an_action() {
        assert!(is_action(A.trim_end().as_bytes()));
        assert!(is_action(A_NO_ID.trim_end().as_bytes()));
        for not in [
            "{\"create\":{\"_index\":\"qwen-logs-2025.04.05\"},\"@timestamp\":\"x\"}",
            "{\"create\":{\"_index\":\"../x\"}}",
            "{\"create\":{\"_index\":\"i\",\"_id\":\"short\"}}",
            "{\"index\":{\"_index\":\"i\"}}",
            "{\"create\":{\"_index\":\"i\"}} ",
        ] {
            assert!(!is_action(not.as_bytes()), "{not}");
        }
    }

    #[test]
    fn a_document_larger_than_a_read_chunk_is_read_whole() {
        let big = format!(
            "{{\"@timestamp\":\"t\",\"m\":\"{}\"}}\n",
            "x".repeat(3 * TAIL_CHUNK)
        );
        let whole = format!("{A}{D}{A}{big}");
        let (_, _, tail, kept) = opened(&format!("{whole}{A}{}", &big[..TAIL_CHUNK + 7]));
        assert_eq!(kept, whole);
        assert!(matches!(tail, Tail::Cut { .. }));
    }
}
