//! Real Lumberjack clients against a live `lumberd serve`: each test runs one client
//! program (installed by tests/clients/setup.sh into target/clients/), checks that the
//! client saw every window acknowledged, then checks lumberd's output files event by
//! event. A window is acknowledged only after its events are fsynced, so once the
//! client reports success the events must already be in the files: nothing here polls.
//!
//! Clients (see tests/clients/ and proto-fixtures/README.md for their ACK behaviour):
//! * go-lumber v2 (Filebeat's client library): SyncClient and AsyncClient (pipelined),
//!   compression 0..9, sequence numbers restart at 1 in each window.
//! * pylogbeat 2.1.0: one running sequence number across the windows of a connection;
//!   waits for an ACK equal to the last sequence number it sent.
//! * lumberjack-client 1.0.3 (npm): always compressed; a first window of N events, then
//!   one window per event, written without waiting for ACKs.
//! * lumberjack-protocol 1.0.7 (npm): protocol v1, `D` frames of string pairs; expects
//!   ACKs with version byte '1'.

mod support;

use std::thread;

use support::clients::{assert_all_acked, go_lumber, node_script, pylogbeat, run_client};
use support::lumberd::Lumberd;
use support::stored::{assert_stored_once, now_secs, IndexRule};

/// Runs the go-lumber CLI with `args` against a fresh lumberd and checks ACKs and output.
fn go_lumber_round_trip(args: &[&str]) {
    let lumberd = Lumberd::builder().passthrough().start();
    let mut cmd = go_lumber();
    cmd.args(args);
    let run = run_client(cmd, lumberd.addr());
    assert_all_acked(&run, &lumberd);
    assert_stored_once(&lumberd, &[(&run, IndexRule::EventTimestamp)]);
}

#[test]
fn go_lumber_sync_uncompressed_windows_are_all_acked_and_stored_once() {
    go_lumber_round_trip(&[
        "-mode",
        "sync",
        "-compress",
        "0",
        "-window",
        "50",
        "-windows",
        "3",
        "-id",
        "s0",
    ]);
}

#[test]
fn go_lumber_sync_compressed_level_3_windows_are_all_acked_and_stored_once() {
    go_lumber_round_trip(&[
        "-mode",
        "sync",
        "-compress",
        "3",
        "-window",
        "100",
        "-windows",
        "3",
        "-id",
        "s3",
    ]);
}

#[test]
fn go_lumber_sync_compressed_level_9_windows_are_all_acked_and_stored_once() {
    go_lumber_round_trip(&[
        "-mode",
        "sync",
        "-compress",
        "9",
        "-window",
        "20",
        "-windows",
        "4",
        "-id",
        "s9",
    ]);
}

#[test]
fn go_lumber_async_pipelined_windows_are_all_acked_and_stored_once() {
    go_lumber_round_trip(&[
        "-mode",
        "async",
        "-inflight",
        "2",
        "-compress",
        "3",
        "-window",
        "100",
        "-windows",
        "8",
        "-id",
        "a3",
    ]);
}

#[test]
fn go_lumber_async_pipelined_uncompressed_windows_are_all_acked_and_stored_once() {
    go_lumber_round_trip(&[
        "-mode",
        "async",
        "-inflight",
        "4",
        "-compress",
        "0",
        "-window",
        "25",
        "-windows",
        "10",
        "-id",
        "a0",
    ]);
}

#[test]
fn go_lumber_async_pipelined_level_9_windows_are_all_acked_and_stored_once() {
    go_lumber_round_trip(&[
        "-mode",
        "async",
        "-inflight",
        "2",
        "-compress",
        "9",
        "-window",
        "4",
        "-windows",
        "6",
        "-id",
        "a9",
    ]);
}

#[test]
fn go_lumber_windows_of_one_event_are_each_acked_and_stored_once() {
    go_lumber_round_trip(&[
        "-mode",
        "sync",
        "-compress",
        "3",
        "-window",
        "1",
        "-windows",
        "5",
        "-id",
        "w1s",
    ]);
}

#[test]
fn go_lumber_pipelined_windows_of_one_event_are_each_acked_and_stored_once() {
    go_lumber_round_trip(&[
        "-mode",
        "async",
        "-inflight",
        "2",
        "-compress",
        "0",
        "-window",
        "1",
        "-windows",
        "30",
        "-id",
        "w1a",
    ]);
}

#[test]
fn go_lumber_full_2048_event_windows_are_acked_and_stored_once() {
    go_lumber_round_trip(&[
        "-mode",
        "sync",
        "-compress",
        "3",
        "-window",
        "2048",
        "-windows",
        "3",
        "-id",
        "big",
    ]);
}

#[test]
fn go_lumber_pipelined_2048_event_windows_are_acked_and_stored_once() {
    go_lumber_round_trip(&[
        "-mode",
        "async",
        "-inflight",
        "2",
        "-compress",
        "3",
        "-window",
        "2048",
        "-windows",
        "4",
        "-id",
        "biga",
    ]);
}

#[test]
fn pylogbeat_running_sequence_across_windows_on_one_connection_is_acked_and_stored_once() {
    let lumberd = Lumberd::builder().passthrough().start();
    let mut cmd = pylogbeat();
    cmd.args([
        "-window", "10", "-windows", "5", "-id", "py", "-timeout", "30",
    ]);
    let run = run_client(cmd, lumberd.addr());
    assert_all_acked(&run, &lumberd);
    // pylogbeat accepts a window only on an ACK equal to its running sequence number
    let acks = run.result["acks"].clone();
    assert_eq!(
        acks,
        serde_json::json!([10, 20, 30, 40, 50]),
        "pylogbeat accepted these ACK values\n{}",
        run.describe()
    );
    assert_stored_once(&lumberd, &[(&run, IndexRule::EventTimestamp)]);
}

#[test]
fn lumberjack_client_compressed_window_then_pipelined_single_event_windows_are_acked_and_stored_once(
) {
    let lumberd = Lumberd::builder().passthrough().start();
    let mut cmd = node_script("lumberjack_client.js");
    cmd.args([
        "-window", "20", "-singles", "5", "-id", "ljc", "-timeout", "30",
    ]);
    let run = run_client(cmd, lumberd.addr());
    assert_all_acked(&run, &lumberd);
    assert_eq!(
        run.result["acks"],
        serde_json::json!([20, 1, 1, 1, 1, 1]),
        "one ACK per window, in order, carrying the window's last sequence number\n{}",
        run.describe()
    );
    assert_stored_once(&lumberd, &[(&run, IndexRule::EventTimestamp)]);
}

#[test]
fn lumberjack_protocol_v1_data_frames_are_acked_with_version_1_and_stored_as_string_pairs() {
    let lumberd = Lumberd::builder().passthrough().start();
    let mut cmd = node_script("v1_client.js");
    cmd.args([
        "-window", "10", "-windows", "3", "-id", "v1", "-timeout", "30",
    ]);
    let from = now_secs();
    let run = run_client(cmd, lumberd.addr());
    let to = now_secs();
    // the library asserts the ACK's version byte is '1': a '2A' would have failed the run
    assert_all_acked(&run, &lumberd);
    assert_eq!(
        run.result["acks"],
        serde_json::json!([10, 10, 10]),
        "{}",
        run.describe()
    );
    assert_stored_once(&lumberd, &[(&run, IndexRule::ReceivedBetween(from, to))]);
}

#[test]
fn all_real_clients_at_once_on_one_server_store_every_event_once() {
    let lumberd = Lumberd::builder().passthrough().start();
    let addr = lumberd.addr();
    let from = now_secs();
    let handles = vec![
        thread::spawn(move || {
            let mut c = go_lumber();
            c.args([
                "-mode",
                "async",
                "-compress",
                "3",
                "-window",
                "200",
                "-windows",
                "5",
                "-id",
                "mix-ga",
            ]);
            (run_client(c, addr), false)
        }),
        thread::spawn(move || {
            let mut c = go_lumber();
            c.args([
                "-mode",
                "sync",
                "-compress",
                "0",
                "-window",
                "50",
                "-windows",
                "4",
                "-id",
                "mix-gs",
            ]);
            (run_client(c, addr), false)
        }),
        thread::spawn(move || {
            let mut c = pylogbeat();
            c.args(["-window", "30", "-windows", "4", "-id", "mix-py"]);
            (run_client(c, addr), false)
        }),
        thread::spawn(move || {
            let mut c = node_script("lumberjack_client.js");
            c.args(["-window", "30", "-singles", "3", "-id", "mix-ljc"]);
            (run_client(c, addr), false)
        }),
        thread::spawn(move || {
            let mut c = node_script("v1_client.js");
            c.args(["-window", "15", "-windows", "2", "-id", "mix-v1"]);
            (run_client(c, addr), true)
        }),
    ];
    let runs: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    let to = now_secs();
    for (run, _) in &runs {
        assert_all_acked(run, &lumberd);
    }
    let checks: Vec<_> = runs
        .iter()
        .map(|(run, v1)| {
            let rule = if *v1 {
                IndexRule::ReceivedBetween(from, to)
            } else {
                IndexRule::EventTimestamp
            };
            (run, rule)
        })
        .collect();
    assert_stored_once(&lumberd, &checks);
}
