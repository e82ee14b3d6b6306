//! The `lumberd` command line: check-config's exit codes and problem lists, `send` as a
//! smoke test against a live endpoint, and `serve` refusing a bad configuration before
//! binding anything.

mod support;

use std::process::Command;

use support::lumberd::Lumberd;

fn lumberd() -> Command {
    support::lumberd::lumberd_command()
}

#[test]
fn check_config_accepts_the_documented_reference_config() {
    let out = lumberd()
        .args([
            "check-config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/lumberd.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_lists_every_problem_on_stderr_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"no-port\"\nmax_connections = 0\ntypo = 1\n",
    )
    .unwrap();
    let out = lumberd().arg("check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    for needle in ["server.listen", "server.max_connections", "server.typo"] {
        assert!(
            stderr.contains(needle),
            "missing a problem about {needle}:\n{stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 3, "one line per problem:\n{stderr}");
}

#[test]
fn check_config_names_the_line_of_each_bad_pipeline_filter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.toml");
    std::fs::write(
        &path,
        r#"[[pipeline.filter]]
remove = { fields = ["host"] }

[[pipeline.filter]]
date = { field = "timestamp", formats = ["yyyy-MM-dd HH:mm:ss zzz"] }

[[pipeline.filter]]
convert = { fields = { "host.name" = "string" } }

[[pipeline.filter]]
grok = { match = "%{IP}" }
"#,
    )
    .unwrap();
    let out = lumberd().arg("check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    // serde stops at the unknown filter before the others are compiled.
    assert!(
        stderr.contains("line 11") && stderr.contains("grok"),
        "the unknown filter and its line:
{stderr}"
    );
    std::fs::write(
        &path,
        std::fs::read_to_string(&path).unwrap().replace(
            "grok = { match = \"%{IP}\" }",
            "add_tag = { tags = [\"ok\"] }",
        ),
    )
    .unwrap();
    let out = lumberd().arg("check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    for (line, what) in [("line 5", "zzz"), ("line 8", "host.name")] {
        assert!(
            stderr.contains(line) && stderr.contains(what),
            "missing the problem on {line} about {what}:\n{stderr}"
        );
    }
}

#[test]
fn serve_refuses_a_bad_configuration_with_exit_64_before_listening() {
    let out = lumberd()
        .arg("serve")
        .env("LUMBERD_SERVER_KEEPALIVE_INTERVAL", "45s")
        .env("LUMBERD_SERVER_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    assert!(stderr.contains("keepalive_interval"), "{stderr}");
    assert!(
        !stderr.contains("listening"),
        "must fail before binding: {stderr}"
    );
}

#[test]
fn send_ships_each_line_as_a_filebeat_shaped_event_and_reports_the_acks() {
    let server = Lumberd::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("infer.log");
    let lines = [
        r#"{"timestamp":"2025-04-05T10:23:45Z","level":"INFO","prompt":"你好，请介绍一下你自己","response_length":156}"#,
        "plain text line",
        "",
        r#"{"level":"ERROR","status":"error"}"#,
        "last line without newline",
    ];
    std::fs::write(&log, lines.join("\n")).unwrap();
    let out = lumberd()
        .args([
            "send",
            "--host",
            &server.addr().to_string(),
            "--window",
            "2",
            "--compress",
            "3",
        ])
        .arg(&log)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("acknowledged 5 events in 3 windows"),
        "stdout: {stdout}"
    );

    let mut events = server.events();
    events.sort_by_key(|e| e["log"]["offset"].as_u64());
    let messages: Vec<_> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, lines, "one event per line, in order");
    let mut offset = 0;
    for (e, line) in events.iter().zip(lines) {
        assert_eq!(e["log"]["offset"], offset, "offset of {line:?}");
        assert_eq!(
            e["log"]["file"]["path"],
            log.canonicalize().unwrap().to_str().unwrap()
        );
        assert!(e["@timestamp"].as_str().unwrap().ends_with('Z'));
        offset += line.len() + 1;
    }
}

#[test]
fn send_to_a_closed_port_fails_on_stderr_with_a_nonzero_exit() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("a.log");
    std::fs::write(&log, "x\n").unwrap();
    let out = lumberd()
        .args(["send", "--host", &port.to_string()])
        .arg(&log)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("connecting to"), "{stderr}");
}

#[test]
fn send_reports_how_much_was_acknowledged_when_the_server_breaks_the_stream() {
    // A server that accepts and closes at once: the window is never acknowledged.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || drop(listener.accept().unwrap()));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("a.log");
    std::fs::write(&log, "x\ny\n").unwrap();
    let out = lumberd()
        .args(["send", "--host", &addr.to_string()])
        .arg(&log)
        .output()
        .unwrap();
    t.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a window without ACK must fail");
    assert!(stderr.contains("acknowledged so far: 0 events"), "{stderr}");
}

#[test]
fn sigterm_stops_serve_with_exit_0_even_when_its_stderr_reader_is_gone() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let mut child = support::lumberd::serve_command(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening addr=") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "lumberd ended before listening"
        );
    }
    // Like `lumberd serve 2>&1 | head -1`: every later log write fails with EPIPE.
    drop(stderr);
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("lumberd ignored SIGTERM with a closed stderr");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
}
