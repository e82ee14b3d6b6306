//! Qwen inference log files for tests/filebeat.rs and tests/kibana.rs, and what lumberd
//! must make of them.
//!
//! * [`QwenLog`] writes deterministic inference log lines (UTC and `+08:00` times across
//!   a midnight, integers as numbers, floats and strings, Chinese, escapes) and knows what
//!   lumberd's Qwen pipeline must store for each.
//! * [`Stored`] is what lumberd wrote (file output or Elasticsearch), and [`tally`]
//!   checks it against what was logged: counts, fields, index, and that a duplicate is
//!   only ever a resend under the same document id.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use serde_json::{json, Value};

use super::es::EsNode;
use super::filebeat::tail;
use super::lumberd::Lumberd;

// ---------------------------------------------------------------------------------
// Qwen inference log files

/// One line written to a log file, and what lumberd must make of it.
#[derive(Clone, Debug)]
pub struct Line {
    pub request_id: String,
    pub text: String,
    /// The file (as Filebeat names it when it reads the line) and the byte offset.
    pub path: PathBuf,
    pub offset: u64,
    /// The fields the Qwen pipeline stores at the top level (json, date, convert).
    pub fields: Value,
    pub index: String,
}

/// The lines written so far, by request id.
#[derive(Default)]
pub struct QwenLog {
    pub lines: Vec<Line>,
}

const PROMPTS: [&str; 6] = [
    "你好，请介绍一下你自己",
    "Explain TCP backpressure in one sentence.",
    "quote \" backslash \\ tab \t done",
    "emoji 🚀 and <b>html</b> & entities",
    "多轮对话：第二轮",
    "",
];

/// The `i`-th line of a run: its JSON text and the stored fields. Every seventh is an
/// error, every fifth has a `+08:00` time (stored at its UTC instant, in the index of
/// the UTC day), and the numbers come as integers, floats or strings in turn.
fn qwen_line(prefix: &str, i: usize) -> (String, Value, String, String) {
    // 23:40 UTC on 2025-04-05 plus 3 s a line: a run of a few hundred lines crosses
    // midnight into 2025-04-06.
    let base = Utc.with_ymd_and_hms(2025, 4, 5, 23, 40, 0).unwrap();
    let at: DateTime<Utc> = base + chrono::Duration::milliseconds(3_000 * i as i64 + 7);
    let timestamp = if i.is_multiple_of(5) {
        let cst = FixedOffset::east_opt(8 * 3600).unwrap();
        at.with_timezone(&cst)
            .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string()
    } else {
        at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    };
    let (level, status) = match i % 7 {
        0 => ("ERROR", "error"),
        3 => ("WARN", "timeout"),
        _ => ("INFO", "success"),
    };
    let request_id = format!("req_{prefix}_{i:06}");
    let prompt = PROMPTS[i % PROMPTS.len()];
    let ms = 100 + (i * 37) % 5000;
    let len = 1 + (i * 13) % 2048;
    // The service's three spellings of a number; the pipeline's integer conversion
    // stores each as the integer (892.7 -> 892, "156" -> 156).
    let (ms_raw, len_raw) = match i % 3 {
        0 => (json!(ms), json!(len)),
        1 => (json!(ms as f64 + 0.7), json!(len.to_string())),
        _ => (json!(ms.to_string()), json!(len)),
    };
    let text = json!({
        "timestamp": timestamp,
        "level": level,
        "request_id": request_id,
        "prompt": prompt,
        "response_length": len_raw,
        "inference_time_ms": ms_raw,
        "status": status,
    })
    .to_string();
    let fields = json!({
        "@timestamp": at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "timestamp": timestamp,
        "level": level,
        "request_id": request_id,
        "prompt": prompt,
        "response_length": len,
        "inference_time_ms": ms,
        "status": status,
    });
    let index = at.format("qwen-logs-%Y.%m.%d").to_string();
    (text, fields, index, request_id)
}

impl QwenLog {
    /// Appends lines `from..to` of the run `prefix` to `path` (created if needed), as
    /// the service writes them: whole lines, flushed.
    pub fn append(&mut self, path: &Path, prefix: &str, from: usize, to: usize) {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let mut offset = file.metadata().unwrap().len();
        let mut buf = String::new();
        for i in from..to {
            let (text, fields, index, request_id) = qwen_line(prefix, i);
            buf.push_str(&text);
            buf.push('\n');
            self.lines.push(Line {
                request_id,
                path: path.to_path_buf(),
                offset,
                fields,
                index,
                text: text.clone(),
            });
            offset += text.len() as u64 + 1;
        }
        file.write_all(buf.as_bytes()).unwrap();
        file.sync_data().unwrap();
    }

    /// A file of `n` lines of the run `prefix`.
    pub fn write(path: &Path, prefix: &str, n: usize) -> QwenLog {
        let mut log = QwenLog::default();
        log.append(path, prefix, 0, n);
        log
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }
}

/// `qwen_inference.log` in a temp dir of its own (removed when the dir is dropped),
/// holding `n` lines of the run `prefix`: `(dir, path of the log, its lines)`.
pub fn qwen_log_dir(prefix: &str, n: usize) -> (tempfile::TempDir, PathBuf, QwenLog) {
    let dir = tempfile::Builder::new()
        .prefix("lumberd-qwen-logs-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("qwen_inference.log");
    let log = QwenLog::write(&path, prefix, n);
    (dir, path, log)
}

// ---------------------------------------------------------------------------------
// What lumberd stored

/// One stored document.
#[derive(Clone, Debug)]
pub struct Stored {
    pub index: String,
    pub id: Option<String>,
    pub doc: Value,
}

/// Every event document in the file output of `lumberd` (its data dir), read in one
/// pass: each `qwen-logs-*.ndjson` holds bulk pairs, an action line naming the index and
/// the id, then the document.
pub fn stored_in_files(lumberd: &Lumberd) -> Vec<Stored> {
    let mut out = Vec::new();
    for path in lumberd.files("qwen-logs-") {
        let text = fs::read_to_string(&path).unwrap();
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        while let Some((n, action)) = lines.next() {
            let parse = |n: usize, l: &str| -> Value {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("{}:{}: not a JSON line ({e}): {l}", path.display(), n + 1)
                })
            };
            let action = parse(n, action);
            let Some((n, doc)) = lines.next() else {
                panic!("{}: an action line without its document", path.display());
            };
            let create = &action["create"];
            let stem = path.file_stem().unwrap().to_string_lossy();
            assert_eq!(
                create["_index"].as_str(),
                Some(&*stem),
                "{}:{}: the action must name the file's index: {action}",
                path.display(),
                n
            );
            out.push(Stored {
                index: create["_index"].as_str().unwrap_or("").to_string(),
                id: create["_id"].as_str().map(str::to_owned),
                doc: parse(n, doc),
            });
        }
    }
    out
}

/// The event indices (the dead-letter indices match `qwen-logs-*` too).
pub const ES_EVENTS: &str = "qwen-logs-*,-qwen-logs-deadletter-*";

/// Every event document in `node` (after a refresh), paged with a scroll.
pub fn stored_in_es(node: &EsNode) -> Vec<Stored> {
    let total = node.count(ES_EVENTS);
    let mut out = Vec::new();
    let (status, mut page) = node.request(
        "POST",
        &format!("/{ES_EVENTS}/_search?scroll=1m&size=5000&allow_no_indices=true"),
        Some(r#"{"sort":["_doc"]}"#),
    );
    assert_eq!(status, 200, "search {ES_EVENTS}: {page}");
    loop {
        let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
        if hits.is_empty() {
            break;
        }
        for h in hits {
            out.push(Stored {
                index: h["_index"].as_str().unwrap_or("").to_string(),
                id: h["_id"].as_str().map(str::to_owned),
                doc: h["_source"].clone(),
            });
        }
        let body = json!({"scroll": "1m", "scroll_id": page["_scroll_id"]}).to_string();
        let (status, next) = node.request("POST", "/_search/scroll", Some(&body));
        assert_eq!(status, 200, "scroll: {next}");
        page = next;
    }
    assert_eq!(
        out.len() as u64,
        total,
        "the scroll returned {} documents, _count says {total}",
        out.len()
    );
    out
}

/// Every dead letter lumberd wrote (file output: `qwen-logs-deadletter-*` files).
pub fn dead_letters_in_files(lumberd: &Lumberd) -> usize {
    lumberd.deadletters_by_index().values().map(Vec::len).sum()
}

/// Dead letters in `node` (`qwen-logs-deadletter-*`).
pub fn dead_letters_in_es(node: &EsNode) -> u64 {
    node.count("qwen-logs-deadletter-*")
}

/// The counts a scenario reports: lines written, documents stored, distinct document
/// ids among them, and stored copies of a line beyond its first.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Tally {
    pub sent: usize,
    pub stored: usize,
    pub distinct: usize,
    pub duplicates: usize,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent={} stored={} distinct={} duplicates={}",
            self.sent, self.stored, self.distinct, self.duplicates
        )
    }
}

/// Whether copies of one line may be stored more than once.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Resends {
    /// Nothing failed: each line exactly once.
    None,
    /// lumberd crashed: a window written but not acknowledged comes again. Each extra
    /// copy must carry the same document id as the first and the same document, so that
    /// Elasticsearch (create with the id) keeps one.
    SameId,
}

/// Checks `stored` against the `log`s' lines: every line stored (as many times as
/// `resends` allows), with the pipeline's fields, Filebeat's `log`/`input`/`message`,
/// `host`/`agent`/`ecs` gone, in the UTC day's index; nothing else stored. Returns the
/// counts; panics listing every problem, then `diagnosis()`.
pub fn tally(
    log: &QwenLog,
    stored: &[Stored],
    resends: Resends,
    diagnosis: impl Fn() -> String,
) -> Tally {
    let mut problems = String::new();
    let mut by_request: HashMap<&str, Vec<&Stored>> = HashMap::new();
    for s in stored {
        match s.doc["request_id"].as_str() {
            Some(r) => by_request.entry(r).or_default().push(s),
            None => {
                let _ = writeln!(problems, "stored without a request_id: {}", s.doc);
            }
        }
    }
    let mut missing = Vec::new();
    let mut duplicates = 0;
    for line in &log.lines {
        let Some(copies) = by_request.remove(line.request_id.as_str()) else {
            missing.push(line.request_id.as_str());
            continue;
        };
        let first = copies[0];
        if let Some(why) = check_line(line, first) {
            let _ = writeln!(problems, "{}: {why}", line.request_id);
        }
        for extra in &copies[1..] {
            duplicates += 1;
            let same = extra.id.is_some() && extra.id == first.id && extra.doc == first.doc;
            if resends == Resends::None || !same {
                let _ = writeln!(
                    problems,
                    "{}: stored {} times; copy {:?} in {} vs {:?} in {}{}",
                    line.request_id,
                    copies.len(),
                    extra.id,
                    extra.index,
                    first.id,
                    first.index,
                    if same {
                        " (a same-id resend, but nothing failed in this scenario)"
                    } else {
                        " (NOT a resend of the same document under the same id)"
                    }
                );
            }
        }
    }
    if !missing.is_empty() {
        let _ = writeln!(
            problems,
            "{} of {} lines never stored, first: {:?}",
            missing.len(),
            log.len(),
            &missing[..missing.len().min(10)]
        );
    }
    for (request_id, copies) in &by_request {
        let _ = writeln!(
            problems,
            "{request_id}: stored {} times but never logged: {}",
            copies.len(),
            copies[0].doc
        );
    }
    // One id, one line: two lines under one id are one document in Elasticsearch
    // (the second `create` is a 409), so the second line would be lost there.
    let mut lines_of_id: HashMap<&str, Vec<&str>> = HashMap::new();
    for s in stored {
        if let (Some(id), Some(r)) = (s.id.as_deref(), s.doc["request_id"].as_str()) {
            let lines = lines_of_id.entry(id).or_default();
            if !lines.contains(&r) {
                lines.push(r);
            }
        }
    }
    let mut shared: Vec<_> = lines_of_id.iter().filter(|(_, l)| l.len() > 1).collect();
    shared.sort();
    if !shared.is_empty() {
        let _ = writeln!(
            problems,
            "{} document ids are shared by different lines (Elasticsearch keeps one of each), \
             first: {:?}",
            shared.len(),
            &shared[..shared.len().min(5)]
        );
    }
    let count = Tally {
        sent: log.len(),
        stored: stored.len(),
        distinct: lines_of_id.len(),
        duplicates,
    };
    if !problems.is_empty() {
        panic!(
            "stored documents do not match the log ({count}):\n{}\n{}",
            tail(&problems, 20_000),
            diagnosis()
        );
    }
    count
}

/// Why `stored` is not what the pipeline makes of `line`, if it is not.
fn check_line(line: &Line, stored: &Stored) -> Option<String> {
    let doc = &stored.doc;
    let mut why = Vec::new();
    for (k, want) in line.fields.as_object().unwrap() {
        if doc.get(k) != Some(want) {
            why.push(format!("{k} = {:?}, want {want}", doc.get(k)));
        }
    }
    if doc["message"].as_str() != Some(line.text.as_str()) {
        why.push(format!("message {:?}, want the line", doc["message"]));
    }
    if doc["log"]["offset"].as_u64() != Some(line.offset) {
        why.push(format!(
            "log.offset {:?}, want {}",
            doc["log"]["offset"], line.offset
        ));
    }
    let path = line.path.display().to_string();
    if doc["log"]["file"]["path"].as_str() != Some(path.as_str()) {
        why.push(format!(
            "log.file.path {:?}, want {path}",
            doc["log"]["file"]["path"]
        ));
    }
    if doc["input"]["type"].as_str() != Some("filestream") {
        why.push(format!("input.type {:?}", doc["input"]["type"]));
    }
    for gone in ["host", "agent", "ecs", "@metadata"] {
        if doc.get(gone).is_some() {
            why.push(format!("{gone} was not removed: {}", doc[gone]));
        }
    }
    if stored.index != line.index {
        why.push(format!("in {}, want {}", stored.index, line.index));
    }
    if stored.id.is_none() {
        why.push("no document id".into());
    }
    (!why.is_empty()).then(|| format!("{}\n    stored: {doc}", why.join("; ")))
}
