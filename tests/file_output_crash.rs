//! The file output is always a valid bulk body (issue 12): lumberd is killed (SIGKILL)
//! many times while a real client (go-lumber) loads it, each restart on the same data
//! dir; then every resulting file is replayed through a strict bulk parser (each action
//! line followed by exactly one document, both JSON, the file ending in a newline) and,
//! against a real Elasticsearch, `_bulk` of the files stores exactly the distinct events.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::clients::{go_lumber, run_client, ClientRun};
use support::es::{available, Engine, EsNode};
use support::lumberd::Lumberd;

/// Kills per run: the issue saw a torn file in 2 of ~27 kills under Filebeat.
const KILLS: usize = 30;
/// Events per window and windows per client run: ~300 KB windows, so a round's writes
/// cross the writer's 256 KiB buffer and a kill lands between two write calls.
const WINDOW: &str = "500";
const WINDOWS: &str = "60";

fn lumberd_on(data_dir: &Path) -> Lumberd {
    Lumberd::builder()
        .env("LUMBERD_OUTPUT_DATA_DIR", data_dir.display().to_string())
        .start()
}

/// The same events every run (go-lumber's are deterministic for the same flags), so a
/// window cut off by a kill is sent again by the next run, as Filebeat would.
fn load(lumberd: &Lumberd) -> thread::JoinHandle<ClientRun> {
    let addr = lumberd.addr();
    thread::spawn(move || {
        let mut cmd = go_lumber();
        cmd.args(["-mode", "async", "-inflight", "4", "-compress", "0"])
            .args(["-window", WINDOW, "-windows", WINDOWS, "-id", "crash"])
            .args(["-timeout", "10s"]);
        run_client(cmd, addr)
    })
}

/// A pseudo-random delay in `[lo, hi)` ms (clock-seeded; the figure is in the failure).
fn jitter(lo: u64, hi: u64, round: usize) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let x = (nanos ^ (round as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_mul(6364136223846793005);
    Duration::from_millis(lo + (x >> 33) % (hi - lo))
}

/// Polls the data files' last bytes until one ends inside a line (`true`), at most
/// `deadline` (`false`).
fn kill_when_torn(dir: &Path, deadline: Duration) -> bool {
    use std::os::unix::fs::FileExt;
    let until = std::time::Instant::now() + deadline;
    while std::time::Instant::now() < until {
        for f in data_files(dir) {
            let Ok(file) = fs::File::open(&f) else {
                continue;
            };
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let mut last = [0u8; 1];
            if len > 0 && file.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n' {
                return true;
            }
        }
        thread::sleep(Duration::from_micros(200));
    }
    false
}

/// One file checked as a bulk body: `(action, document)` pairs, or why it is not one.
fn strict_pairs(path: &Path) -> Result<Vec<(Value, Value)>, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    if bytes.last() != Some(&b'\n') {
        return Err("does not end in a newline".into());
    }
    let stem = path.file_stem().unwrap().to_string_lossy();
    let lines: Vec<&[u8]> = bytes[..bytes.len() - 1].split(|&b| b == b'\n').collect();
    if !lines.len().is_multiple_of(2) {
        return Err(format!(
            "{} lines: an action without its document",
            lines.len()
        ));
    }
    let mut pairs = Vec::new();
    for (i, pair) in lines.chunks(2).enumerate() {
        let json = |line: &[u8], what: &str| -> Result<Value, String> {
            serde_json::from_slice::<Value>(line).map_err(|e| {
                format!(
                    "line {}: {what} is not JSON ({e}): {}",
                    2 * i + 1,
                    String::from_utf8_lossy(&line[..line.len().min(200)])
                )
            })
        };
        let action = json(pair[0], "the action")?;
        let create = action.get("create").and_then(Value::as_object);
        if create.map(|c| c.len()) != Some(2)
            || create.unwrap()["_index"].as_str() != Some(&*stem)
            || !create.unwrap()["_id"].is_string()
        {
            return Err(format!(
                "line {}: not a create action for {stem} with an id: {action}",
                2 * i + 1
            ));
        }
        let doc = json(pair[1], "the document")?;
        if !doc.is_object() || doc.get("create").is_some() {
            return Err(format!("line {}: not an event document: {doc}", 2 * i + 2));
        }
        pairs.push((action, doc));
    }
    Ok(pairs)
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".ndjson"))
        .collect();
    files.sort();
    files
}

/// `(bytes, torn)` from the "cut a torn record" lines of a run's logs.
fn cuts(logs: &str) -> (u64, usize) {
    let mut bytes = 0;
    let mut n = 0;
    for line in logs.lines().filter(|l| l.contains("cut a torn record")) {
        n += 1;
        if let Some(at) = line.find("bytes=") {
            let digits: String = line[at + 6..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            bytes += digits.parse::<u64>().unwrap_or(0);
        }
    }
    (bytes, n)
}

#[test]
fn files_killed_mid_write_are_cut_back_to_whole_pairs_and_replay_into_elasticsearch() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked_most = 0u64;
    let (mut torn, mut cut_bytes, mut last_logs) = (0usize, 0u64, String::new());
    let mut seen_torn = 0usize;
    for round in 0..KILLS {
        let mut lumberd = lumberd_on(dir.path());
        let client = load(&lumberd);
        if round % 2 == 0 {
            // A random moment of the load: mid-round or between rounds.
            thread::sleep(jitter(150, 900, round));
        } else if kill_when_torn(dir.path(), Duration::from_secs(5)) {
            // The moment a file ends inside a record: the writer is mid-round.
            seen_torn += 1;
        }
        lumberd.kill();
        let run = client.join().unwrap();
        acked_most = acked_most.max(run.result["events_acked"].as_u64().unwrap_or(0));
        let (b, n) = cuts(&lumberd.logs());
        assert!(
            !lumberd.logs().contains("moved aside"),
            "round {round}: a file was damaged:\n{}",
            lumberd.logs()
        );
        cut_bytes += b;
        torn += n;
        last_logs = lumberd.logs();
    }
    // A last run to completion opens (and so checks) every file once more.
    let mut lumberd = lumberd_on(dir.path());
    let run = load(&lumberd).join().unwrap();
    let total = run.ids().len() as u64;
    assert_eq!(
        run.result["events_acked"].as_u64(),
        Some(total),
        "the last run must complete: {}\n{}",
        run.describe(),
        lumberd.logs()
    );
    let (b, n) = cuts(&lumberd.logs());
    cut_bytes += b;
    torn += n;
    lumberd.terminate();
    lumberd
        .wait_exit(Duration::from_secs(30))
        .expect("lumberd exits on SIGTERM");
    eprintln!(
        "kill loop: {KILLS} kills ({seen_torn} at a moment a file ended inside a record), \
         {torn} torn tails cut on restart ({cut_bytes} bytes), most acknowledged in one run \
         {acked_most}, {total} events"
    );

    let files = data_files(dir.path());
    assert!(
        !files.is_empty(),
        "no output files; last logs:\n{last_logs}"
    );
    let mut distinct = BTreeSet::new();
    let mut pairs = 0usize;
    for f in &files {
        assert!(
            f.extension().is_some_and(|e| e == "ndjson"),
            "{} is not a data file (moved aside?)",
            f.display()
        );
        let got =
            strict_pairs(f).unwrap_or_else(|e| panic!("{} is not a bulk body: {e}", f.display()));
        pairs += got.len();
        for (action, doc) in got {
            distinct.insert((
                action["create"]["_id"].as_str().unwrap().to_string(),
                doc["test_id"].as_str().unwrap().to_string(),
            ));
        }
    }
    let ids: BTreeSet<&str> = distinct.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(ids.len(), distinct.len(), "one _id per event");
    assert_eq!(
        ids.len() as u64,
        total,
        "every event of the last run is stored"
    );
    eprintln!(
        "kill loop: {} files, {pairs} pairs, {} distinct events",
        files.len(),
        ids.len()
    );
    // The writer may finish its write between the look and the kill, so not every such
    // kill leaves a torn file; but some must, or this test tested nothing.
    assert!(
        seen_torn > 0 && torn > 0,
        "no kill left a torn file to cut ({seen_torn} kills at a torn moment, {torn} cuts)"
    );

    if !available(Engine::Elasticsearch) {
        return;
    }
    let Some(node) = EsNode::start(&[]) else {
        return;
    };
    let mut statuses = std::collections::BTreeMap::<u64, usize>::new();
    for f in &files {
        for body in bodies(f, 8 * 1024 * 1024) {
            for s in bulk(&node, &body) {
                *statuses.entry(s).or_default() += 1;
            }
        }
    }
    let ok = statuses.keys().all(|s| *s == 201 || *s == 409);
    assert!(ok, "item statuses {statuses:?}");
    assert_eq!(
        node.count("qwen-logs-*,-qwen-logs-deadletter-*"),
        ids.len() as u64,
        "a _bulk of the files stores exactly the distinct events ({statuses:?})"
    );
}

/// The file cut at pair boundaries into bodies of about `max` bytes.
fn bodies(path: &Path, max: usize) -> Vec<Vec<u8>> {
    let bytes = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut start = 0;
    let mut lines = 0usize;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            lines += 1;
            if lines.is_multiple_of(2) && i + 1 - start >= max {
                out.push(bytes[start..=i].to_vec());
                start = i + 1;
            }
        }
    }
    if start < bytes.len() {
        out.push(bytes[start..].to_vec());
    }
    out
}

/// The item statuses of one `_bulk` (through curl, from a file: bodies are megabytes).
fn bulk(node: &EsNode, body: &[u8]) -> Vec<u64> {
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), body).unwrap();
    let out = Command::new("curl")
        .args([
            "-s",
            "-H",
            "content-type: application/x-ndjson",
            "--data-binary",
        ])
        .arg(format!("@{}", file.path().display()))
        .arg(format!("{}/_bulk", node.url()))
        .output()
        .expect("run curl");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "_bulk answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    answer["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {answer}"))
        .iter()
        .map(|i| i["create"]["status"].as_u64().unwrap_or(0))
        .collect()
}
