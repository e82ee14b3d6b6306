//! Bad input over real sockets against a live `lumberd serve` (docs/PROTOCOL.md rules 5-7):
//! every invalid stream in proto-fixtures/invalid closes its connection without
//! acknowledging the broken window, is logged once in one line naming the peer, the
//! problem and the frame offset, and never disturbs another connection.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::lumberd::Lumberd;

const DEADLINE: Duration = Duration::from_secs(30);

fn invalid_fixtures() -> Vec<(String, Vec<u8>, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto-fixtures/invalid");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("proto-fixtures/invalid exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let expect: Value =
                serde_json::from_slice(&std::fs::read(path.with_extension("expect.json")).unwrap())
                    .unwrap();
            out.push((name, std::fs::read(&path).unwrap(), expect));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 10,
        "expected the invalid fixtures, found {}",
        out.len()
    );
    out
}

/// A lumberd with the fixture's limits (the zlib bomb needs a small inflate limit).
fn lumberd_for(expect: &Value) -> Lumberd {
    let mut b = Lumberd::builder();
    if let Some(limits) = expect.get("limits").and_then(Value::as_object) {
        for (k, v) in limits {
            b = b.env(
                format!("LUMBERD_SERVER_{}", k.to_uppercase()),
                v.to_string(),
            );
        }
    }
    b.start()
}

/// Reads ACK frames until the server closes the connection; keep-alives are dropped.
fn acks_until_close(stream: &mut TcpStream) -> Result<Vec<u32>, String> {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut bytes = Vec::new();
    match stream.read_to_end(&mut bytes) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => {
            return Err(format!(
                "connection not closed by lumberd within {DEADLINE:?}: {e}"
            ))
        }
    }
    if bytes.len() % 6 != 0 {
        return Err(format!(
            "{} bytes back, not whole ACK frames: {bytes:?}",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks(6)
        .map(|a| u32::from_be_bytes([a[2], a[3], a[4], a[5]]))
        .filter(|&seq| seq != 0)
        .collect())
}

fn lines_for(lumberd: &Lumberd, peer: SocketAddr) -> Vec<String> {
    let needle = format!("peer={peer}");
    lumberd
        .logs()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

/// The connection's end is logged after its socket closes: wait for the line.
fn wait_for_lines(lumberd: &Lumberd, peer: SocketAddr) -> Vec<String> {
    let start = Instant::now();
    loop {
        let lines = lines_for(lumberd, peer);
        if !lines.is_empty() || start.elapsed() > DEADLINE {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn good_window(seq_base: u32) -> (Vec<u8>, Vec<u8>) {
    let p1 = br#"{"@timestamp":"2025-04-05T10:23:45.000Z","message":"bystander 1"}"#;
    let p2 = br#"{"@timestamp":"2025-04-05T10:23:46.000Z","message":"bystander 2"}"#;
    let frame = |seq: u32, p: &[u8]| {
        let mut f = b"2J".to_vec();
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&(p.len() as u32).to_be_bytes());
        f.extend_from_slice(p);
        f
    };
    let mut first = b"2W\0\0\0\x02".to_vec();
    first.extend(frame(seq_base + 1, p1));
    (first, frame(seq_base + 2, p2))
}

#[test]
fn every_invalid_stream_closes_its_connection_unacknowledged_logged_once_without_disturbing_others()
{
    let mut failures = Vec::new();
    for (name, bytes, expect) in invalid_fixtures() {
        let lumberd = lumberd_for(&expect);
        // A bystander with half a window in flight while the bad stream arrives.
        let mut bystander = TcpStream::connect(lumberd.addr()).unwrap();
        let (first_half, second_half) = good_window(0);
        bystander.write_all(&first_half).unwrap();

        let mut bad = TcpStream::connect(lumberd.addr()).unwrap();
        let peer = bad.local_addr().unwrap();
        // lumberd may close before reading everything: a failed write is fine.
        let _ = bad.write_all(&bytes);
        let _ = bad.shutdown(std::net::Shutdown::Write);
        let expected_acks: Vec<u32> = expect["acked_windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        match acks_until_close(&mut bad) {
            Ok(acks) if acks == expected_acks => {}
            Ok(acks) => failures.push(format!("{name}: ACKs {acks:?}, expected {expected_acks:?}")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
        let kind = expect["error_kind"].as_str().unwrap();
        let lines = wait_for_lines(&lumberd, peer);
        let warn_lines: Vec<_> = lines.iter().filter(|l| l.contains("WARN")).collect();
        if warn_lines.len() != 1
            || !warn_lines[0].contains(&format!("kind={kind}"))
            || !warn_lines[0].contains("offset=")
        {
            failures.push(format!(
                "{name}: expected one WARN line with kind={kind}, peer and offset; got {lines:#?}"
            ));
        }

        bystander.write_all(&second_half).unwrap();
        match acks_after_window(&mut bystander) {
            Ok(2) => {}
            other => failures.push(format!(
                "{name}: bystander's window not acknowledged: {other:?}"
            )),
        }
        let stored = lumberd.events();
        if !stored.iter().any(|e| e["message"] == "bystander 2") {
            failures.push(format!("{name}: bystander's events not stored: {stored:?}"));
        }
        if stderr_has_panic(&lumberd) {
            failures.push(format!("{name}: lumberd panicked:\n{}", lumberd.logs()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Reads one non-keep-alive ACK.
fn acks_after_window(stream: &mut TcpStream) -> Result<u32, String> {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    loop {
        let mut a = [0u8; 6];
        stream.read_exact(&mut a).map_err(|e| e.to_string())?;
        let seq = u32::from_be_bytes([a[2], a[3], a[4], a[5]]);
        if seq != 0 {
            return Ok(seq);
        }
    }
}

fn stderr_has_panic(lumberd: &Lumberd) -> bool {
    lumberd.logs().contains("panicked")
}

#[test]
fn health_check_connect_and_close_is_not_logged_as_an_error() {
    let lumberd = Lumberd::builder().env("LUMBERD_LOG_LEVEL", "debug").start();
    let probe = TcpStream::connect(lumberd.addr()).unwrap();
    let peer = probe.local_addr().unwrap();
    drop(probe);
    let lines = wait_for_lines(&lumberd, peer);
    assert_eq!(lines.len(), 1, "one line for the probe: {lines:#?}");
    assert!(
        lines[0].contains("DEBUG") && lines[0].contains("without sending a byte"),
        "a probe is a debug-level event, not an error: {}",
        lines[0]
    );
}

#[test]
fn connections_beyond_max_connections_are_refused_and_logged() {
    let lumberd = Lumberd::builder()
        .env("LUMBERD_SERVER_MAX_CONNECTIONS", "1")
        .start();
    let mut first = TcpStream::connect(lumberd.addr()).unwrap();
    let (a, b) = good_window(0);
    first.write_all(&a).unwrap();
    let mut second = TcpStream::connect(lumberd.addr()).unwrap();
    second.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = Vec::new();
    let closed = matches!(second.read_to_end(&mut buf), Ok(0))
        || matches!(second.read_to_end(&mut buf), Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset);
    assert!(
        closed,
        "the connection over the limit must be closed at once, got {buf:?}"
    );
    first.write_all(&b).unwrap();
    assert_eq!(
        acks_after_window(&mut first),
        Ok(2),
        "the admitted connection still works"
    );
    let peer = second.local_addr().unwrap();
    let lines = wait_for_lines(&lumberd, peer);
    assert!(
        lines.iter().any(|l| l.contains("max_connections")),
        "refusal must be logged with the limit's name: {lines:#?}\nall logs:\n{}",
        lumberd.logs()
    );
}
