//! Bounded memory (README, "What lumberd promises" -> "Bounded memory"): lumberd's RSS and
//! peak RSS, read from /proc/PID/status, stay within the README's formula for the
//! settings each test starts it with, whatever the clients send. The frames are written
//! by hand over raw sockets: no real client sends a bare multi-MiB `J` frame on demand.
//!
//! `make bench` runs these against the release build with `LUMBERD_MEMORY_FIGURES` set:
//! each case then appends its figures as a JSON line to that file.
//!
//! Each test holds thousands of sockets or hundreds of MiB of frames; CI needs
//! `ulimit -n` of at least 2 x 3,000 + 100 (the test raises its soft limit to the hard
//! one, and lumberd inherits it).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use support::lumberd::Lumberd;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
/// Time for one connection's window to be acknowledged, under the load of all the others.
const ACK_DEADLINE: Duration = Duration::from_secs(300);

/// The README's bound: `max_inflight_bytes + per_connection x connections + base`, and
/// what a connection waiting for its next window costs.
struct Formula {
    per_connection: u64,
    base: u64,
    idle_connection: u64,
}

impl Formula {
    /// Read from the README, so that the promise and the test cannot drift apart.
    fn from_readme() -> Formula {
        let readme = std::fs::read_to_string(support::repo_root().join("README.md"))
            .expect("read README.md");
        let section = &readme[readme
            .find("**Bounded memory.**")
            .expect("README has a \"Bounded memory\" promise")..];
        let marker = "RSS ≤ `max_inflight_bytes` + ";
        let at = section
            .find(marker)
            .unwrap_or_else(|| panic!("the Bounded memory promise states `{marker}...`"));
        let rest = &section[at + marker.len()..];
        let (per_connection, rest) = number_before(rest, " KiB × connections + ");
        let (base, _) = number_before(rest, " MiB");
        let marker = "A connection waiting for its next window costs at most ";
        let at = section
            .find(marker)
            .unwrap_or_else(|| panic!("the Bounded memory promise states `{marker}...`"));
        let (idle, _) = number_before(&section[at + marker.len()..], " KiB");
        Formula {
            per_connection: per_connection * KIB,
            base: base * MIB,
            idle_connection: idle * KIB,
        }
    }

    fn bound(&self, max_inflight_bytes: u64, connections: u64) -> u64 {
        max_inflight_bytes + self.per_connection * connections + self.base
    }
}

fn number_before<'a>(text: &'a str, unit: &str) -> (u64, &'a str) {
    let end = text
        .find(unit)
        .unwrap_or_else(|| panic!("README formula: expected `{unit}` in {:?}", &text[..60]));
    let n = text[..end]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("README formula: {:?} is not a number", &text[..end]));
    (n, &text[end + unit.len()..])
}

/// VmRSS and VmHWM (peak) of a process, in bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
            * KIB
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `W 1` then one bare `J` frame whose payload is a JSON object of exactly `len` bytes.
fn one_event_window(len: usize) -> Vec<u8> {
    let filler = len - r#"{"message":""}"#.len();
    let mut payload = Vec::with_capacity(len);
    payload.extend_from_slice(br#"{"message":""#);
    payload.resize(payload.len() + filler, b'x');
    payload.extend_from_slice(br#""}"#);
    let mut frame = b"2W\0\0\0\x01".to_vec();
    frame.extend_from_slice(b"2J\0\0\0\x01");
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// Reads ACK frames until one acknowledges `seq` (keep-alive `ACK 0`s are skipped).
fn await_ack(stream: &mut TcpStream, seq: u32) -> Result<(), String> {
    stream.set_read_timeout(Some(ACK_DEADLINE)).unwrap();
    let mut ack = [0u8; 6];
    loop {
        stream
            .read_exact(&mut ack)
            .map_err(|e| format!("no ACK {seq}: {e}"))?;
        let got = u32::from_be_bytes([ack[2], ack[3], ack[4], ack[5]]);
        match (&ack[..2], got) {
            (b"2A", 0) => continue,
            (b"2A", s) if s == seq => return Ok(()),
            _ => return Err(format!("expected ACK {seq}, got {ack:?}")),
        }
    }
}

/// Lifts this process's soft open-files limit to the hard one; lumberd inherits it.
fn raise_open_files(need: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|soft| soft < need) {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    let soft = getrlimit(Resource::Nofile).current;
    assert!(
        soft.is_none_or(|s| s >= need),
        "ulimit -n is {soft:?}; this test needs {need} (raise the hard limit in CI)"
    );
}

/// Checks lumberd's RSS now and its peak so far against the formula, naming the case.
fn check(case: &str, lumberd: &Lumberd, max_inflight_bytes: u64, connections: u64) {
    let formula = Formula::from_readme();
    let bound = formula.bound(max_inflight_bytes, connections);
    let (now, peak) = rss(lumberd.pid());
    let mib = |b: u64| b as f64 / MIB as f64;
    eprintln!(
        "{case}: VmRSS {:.1} MiB, VmHWM {:.1} MiB, bound {:.1} MiB \
         (max_inflight_bytes {:.1} MiB + {} KiB x {connections} connections + {:.0} MiB)",
        mib(now),
        mib(peak),
        mib(bound),
        mib(max_inflight_bytes),
        formula.per_connection / KIB,
        mib(formula.base)
    );
    if let Some(path) = std::env::var_os("LUMBERD_MEMORY_FIGURES") {
        // `make bench`: one JSON line per case, kept in target/bench/.
        let line = serde_json::json!({
            "case": case,
            "connections": connections,
            "max_inflight_bytes": max_inflight_bytes,
            "vm_rss_bytes": now,
            "vm_hwm_bytes": peak,
            "bound_bytes": bound,
            "per_connection_bytes": formula.per_connection,
            "base_bytes": formula.base,
        });
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open LUMBERD_MEMORY_FIGURES");
        writeln!(f, "{line}").expect("write LUMBERD_MEMORY_FIGURES");
    }
    assert!(
        peak <= bound,
        "{case}: peak RSS (VmHWM) {:.1} MiB exceeds the README's bound {:.1} MiB",
        mib(peak),
        mib(bound)
    );
    assert!(
        now <= bound,
        "{case}: RSS (VmRSS) {:.1} MiB exceeds the README's bound {:.1} MiB",
        mib(now),
        mib(bound)
    );
}

/// lumberd with this in-flight budget and frame limit, for `connections` sockets.
fn lumberd_for(connections: usize, budget: u64, max_frame: u64) -> Lumberd {
    raise_open_files(2 * connections as u64 + 100);
    Lumberd::builder()
        .env("LUMBERD_SERVER_MAX_INFLIGHT_BYTES", budget.to_string())
        .env("LUMBERD_SERVER_MAX_FRAME_BYTES", max_frame.to_string())
        .start()
}

/// Checks what each of `connections` added to lumberd's RSS (`before` -> `after`) against
/// the README's `promised` cost.
fn check_each(what: &str, before: u64, after: u64, connections: usize, promised: u64) {
    let each = after.saturating_sub(before) / connections as u64;
    let kib = |b: u64| b as f64 / KIB as f64;
    eprintln!("{what}: {:.1} KiB ({connections} connections)", kib(each));
    assert!(
        each <= promised,
        "{what} costs {:.1} KiB of RSS ({:.1} MiB before, {:.1} MiB with {connections}); \
         the README promises at most {} KiB",
        kib(each),
        before as f64 / MIB as f64,
        after as f64 / MIB as f64,
        promised / KIB
    );
}

/// One window of one `len`-byte event on each of `connections` sockets, all written at
/// once; returns the sockets once every window is acknowledged, still open.
fn send_concurrently(addr: SocketAddr, connections: usize, len: usize) -> Vec<TcpStream> {
    let frame = Arc::new(one_event_window(len));
    let start = Arc::new(Barrier::new(connections));
    let clients: Vec<_> = (0..connections)
        .map(|i| {
            let (frame, start) = (frame.clone(), start.clone());
            thread::spawn(move || -> Result<TcpStream, String> {
                let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {i}: {e}"))?;
                start.wait();
                s.write_all(&frame).map_err(|e| format!("write {i}: {e}"))?;
                await_ack(&mut s, 1).map_err(|e| format!("connection {i}: {e}"))?;
                Ok(s)
            })
        })
        .collect();
    clients
        .into_iter()
        .map(|c| c.join().expect("client thread").unwrap())
        .collect()
}

#[test]
fn sixty_four_connections_idle_after_a_6_mib_event_each_stay_within_the_bound() {
    // The defaults: max_inflight_bytes 48 MiB, max_frame_bytes 16 MiB.
    let lumberd = Lumberd::start();
    let budget = 48 * MIB;
    let idle = send_concurrently(lumberd.addr(), 64, 6 * MIB as usize);
    check(
        "64 connections idle after one 6 MiB J frame each",
        &lumberd,
        budget,
        64,
    );
    drop(idle);
}

#[test]
fn three_thousand_idle_connections_stay_within_the_bound() {
    const CONNECTIONS: usize = 3_000;
    let budget = 4 * MIB;
    let lumberd = lumberd_for(CONNECTIONS, budget, MIB);
    // Each connection has sent and had acknowledged one ordinary window, then waits.
    let frame = one_event_window(400);
    let (before, _) = rss(lumberd.pid());
    let mut sockets = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let mut s = TcpStream::connect(lumberd.addr())
            .unwrap_or_else(|e| panic!("connect {i} of {CONNECTIONS}: {e}"));
        s.write_all(&frame).unwrap();
        sockets.push(s);
    }
    for (i, s) in sockets.iter_mut().enumerate() {
        await_ack(s, 1).unwrap_or_else(|e| panic!("connection {i}: {e}"));
    }
    check(
        "3000 idle connections",
        &lumberd,
        budget,
        CONNECTIONS as u64,
    );
    let (after, _) = rss(lumberd.pid());
    let promised = Formula::from_readme().idle_connection;
    check_each("an idle connection", before, after, CONNECTIONS, promised);
}

#[test]
fn two_hundred_connections_each_sending_a_max_frame_at_once_stay_within_the_bound() {
    const CONNECTIONS: usize = 200;
    let (budget, max_frame) = (8 * MIB, MIB);
    let lumberd = lumberd_for(CONNECTIONS, budget, max_frame);
    let open = send_concurrently(lumberd.addr(), CONNECTIONS, max_frame as usize);
    check(
        "200 connections, one max_frame_bytes J frame each, at once",
        &lumberd,
        budget,
        CONNECTIONS as u64,
    );
    drop(open);
}

#[test]
fn a_connection_stopped_inside_a_compressed_frame_costs_at_most_the_per_connection_constant() {
    const CONNECTIONS: usize = 1_000;
    let budget = 4 * MIB;
    let lumberd = lumberd_for(CONNECTIONS, budget, MIB);
    // A window of small events in one C frame, cut short: each connection holds its read
    // buffer, its zlib state, inflated bytes and a partial inner frame, and waits.
    let events: Vec<String> = (0..8)
        .map(|i| {
            format!(
                r#"{{"message":"{i} {}"}}"#,
                "lorem ipsum dolor ".repeat(600)
            )
        })
        .collect();
    let mut window = bytes::BytesMut::new();
    lumberd::protocol::encode_window(
        1,
        &events,
        lumberd::protocol::Compression::Level(3),
        &mut window,
    );
    let cut = &window[..window.len() - 64];
    let (before, _) = rss(lumberd.pid());
    let mut sockets = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let mut s = TcpStream::connect(lumberd.addr())
            .unwrap_or_else(|e| panic!("connect {i} of {CONNECTIONS}: {e}"));
        s.write_all(cut).unwrap();
        sockets.push(s);
    }
    // Every connection's bytes are read once lumberd has received them all.
    let received = (CONNECTIONS * cut.len()) as f64;
    lumberd.wait_for_metric("lumberd_received_bytes_total", received, ACK_DEADLINE);
    check(
        "1000 connections stopped inside a C frame",
        &lumberd,
        budget,
        CONNECTIONS as u64,
    );
    let (after, _) = rss(lumberd.pid());
    let promised = Formula::from_readme().per_connection;
    check_each(
        "a connection inside a C frame",
        before,
        after,
        CONNECTIONS,
        promised,
    );
}
