//! TLS and mutual TLS on the Beats port, against a running `lumberd serve`: real clients
//! over real TLS stacks (go-lumber over Go's crypto/tls with full verification, as
//! Filebeat; pylogbeat over Python's ssl; `lumberd send` over rustls), client
//! authentication, certificate rotation under a live connection, every kind of bad input
//! on the TLS port, and each accepted key form. Certificates are made in each test
//! (tests/support/certs.rs); nothing waits on a timer: tests poll an observable
//! condition (a log line, the certificate a new connection is served) with a deadline.

mod support;

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use lumberd::protocol::{encode_window, Compression};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use support::certs::{self, subject_rfc4514, Ca, Issued, Validity};
use support::clients::{assert_all_acked, go_lumber, pylogbeat, run_client};
use support::lumberd::{Lumberd, LumberdBuilder, PASSTHROUGH_CONFIG};
use support::stored::{assert_stored_once, IndexRule};

/// Deadline for a log line or a rotation to become visible.
const DEADLINE: Duration = Duration::from_secs(20);

/// A server CA with a server certificate for localhost/127.0.0.1, and a separate client
/// CA, in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    server_ca: PathBuf,
    server: Issued,
    clients: Ca,
    client_ca: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Lumberd Test Server CA");
    let server_ca = ca.write(dir.path(), "server-ca.crt");
    let server = ca.server(dir.path(), "server", Validity::Current);
    let clients = Ca::new("Filebeat Fleet CA");
    let client_ca = clients.write(dir.path(), "client-ca.crt");
    Pki {
        dir,
        server_ca,
        server,
        clients,
        client_ca,
    }
}

impl Pki {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// lumberd with TLS on, serving `server`, logging connection details at debug.
    fn lumberd(&self) -> LumberdBuilder {
        tls_lumberd(&self.server.cert, &self.server.key)
    }

    /// lumberd requiring a client certificate from the client CA.
    fn lumberd_mtls(&self, client_auth: &str) -> LumberdBuilder {
        self.lumberd()
            .env("LUMBERD_TLS_CLIENT_AUTH", client_auth)
            .env("LUMBERD_TLS_CLIENT_CA", self.client_ca.to_str().unwrap())
    }

    fn client(&self, cn: &str, validity: Validity) -> Issued {
        self.clients.client(self.path(), cn, validity)
    }

    /// A client that verifies lumberd against the server CA.
    fn verifying(&self) -> ClientTls<'_> {
        ClientTls::verifying(&self.server_ca)
    }
}

/// A test client's side of TLS: how it verifies lumberd and, for mutual TLS, the
/// certificate it presents. As flags spelled the way `lumberd send` takes them; go-lumber's
/// CLI (Go's `flag` takes one dash or two) and pylogbeat's take the same.
#[derive(Clone, Copy)]
struct ClientTls<'a> {
    /// The CA lumberd is verified against; `None` skips verification (`--tls-insecure`,
    /// `lumberd send` only).
    ca: Option<&'a Path>,
    /// The certificate and key presented to lumberd.
    presents: Option<(&'a Path, &'a Path)>,
    /// The name lumberd's certificate must carry (default: the host dialled).
    server_name: Option<&'a str>,
}

impl<'a> ClientTls<'a> {
    /// Full verification against `ca`, as Filebeat's `verification_mode: full`.
    fn verifying(ca: &'a Path) -> Self {
        ClientTls {
            ca: Some(ca),
            ..Self::insecure()
        }
    }

    fn insecure() -> Self {
        ClientTls {
            ca: None,
            presents: None,
            server_name: None,
        }
    }

    /// Mutual TLS: presents `client`'s certificate and key.
    fn presenting(self, client: &'a Issued) -> Self {
        self.presenting_files(&client.cert, &client.key)
    }

    fn presenting_files(self, cert: &'a Path, key: &'a Path) -> Self {
        ClientTls {
            presents: Some((cert, key)),
            ..self
        }
    }

    fn server_name(self, name: &'a str) -> Self {
        ClientTls {
            server_name: Some(name),
            ..self
        }
    }

    fn args(&self) -> Vec<&'a OsStr> {
        let flag = OsStr::new;
        let mut args = match self.ca {
            Some(ca) => vec![flag("--tls-ca"), ca.as_os_str()],
            None => vec![flag("--tls-insecure")],
        };
        if let Some((cert, key)) = self.presents {
            args.extend([flag("--tls-cert"), cert.as_os_str()]);
            args.extend([flag("--tls-key"), key.as_os_str()]);
        }
        if let Some(name) = self.server_name {
            args.extend([flag("--tls-server-name"), OsStr::new(name)]);
        }
        args
    }
}

/// lumberd with TLS on (from the environment) and the passthrough pipeline: these tests
/// compare what is stored with what the clients sent.
fn tls_lumberd(cert: &Path, key: &Path) -> LumberdBuilder {
    Lumberd::builder()
        .passthrough()
        .env("LUMBERD_TLS_ENABLED", "true")
        .env("LUMBERD_TLS_CERTIFICATE", cert.to_str().unwrap())
        .env("LUMBERD_TLS_KEY", key.to_str().unwrap())
        .env("LUMBERD_LOG_LEVEL", "info,lumberd=debug")
}

/// go-lumber over crypto/tls, as Filebeat with `tls`, and `args`.
fn go_tls(tls: ClientTls, args: &[&str]) -> Command {
    let mut cmd = go_lumber();
    cmd.args(tls.args()).args(args);
    cmd
}

fn go_small(id: &str) -> Vec<&str> {
    vec![
        "-mode",
        "async",
        "-compress",
        "3",
        "-window",
        "50",
        "-windows",
        "3",
        "-id",
        id,
    ]
}

/// The `TLS handshake failed` lines of the logs.
fn handshake_failures(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|l| l.contains("TLS handshake failed"))
        .collect()
}

/// Waits for the one failure line of a test's one bad connection, checks it names the
/// peer and `reason`, and that it is the only one.
fn expect_one_failure(lumberd: &Lumberd, reason: &str) -> String {
    let needle = format!("reason={reason}");
    let logs = lumberd.wait_for_logs(
        &format!("a handshake failure with {needle}"),
        DEADLINE,
        |l| handshake_failures(l).iter().any(|f| f.contains(&needle)),
    );
    let failures = handshake_failures(&logs);
    assert_eq!(
        failures.len(),
        1,
        "expected exactly one handshake failure line, got:\n{}",
        failures.join("\n")
    );
    let line = failures[0];
    assert!(
        line.contains("peer=127.0.0.1:") && line.contains("WARN") && line.contains("count=1"),
        "the failure line must be a WARN naming the peer and the count: {line}"
    );
    line.to_string()
}

fn lumberd_cmd() -> Command {
    support::lumberd::lumberd_command()
}

/// `lumberd send --host addr <tls flags> <file of three lines>`.
fn send(addr: SocketAddr, tls: ClientTls) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    fs::write(&log, "one\ntwo\nthree\n").unwrap();
    lumberd_cmd()
        .args(["send", "--host", &addr.to_string(), "--timeout", "20s"])
        .args(tls.args())
        .arg(&log)
        .output()
        .unwrap()
}

fn assert_sent_three(out: &Output, lumberd: &Lumberd) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("acknowledged 3 events in 1 windows"),
        "lumberd send failed\nstdout: {stdout}\nstderr: {}\n--- lumberd logs ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        lumberd.logs()
    );
}

// ---------------------------------------------------------------------------------------
// Real clients over TLS

#[test]
fn go_lumber_over_tls_1_3_with_full_verification_is_acked_and_stored_once() {
    let pki = pki();
    let lumberd = pki.lumberd().start();
    let run = run_client(go_tls(pki.verifying(), &go_small("t13")), lumberd.addr());
    assert_all_acked(&run, &lumberd);
    assert_eq!(run.result["tls_version"], "TLS 1.3", "{}", run.describe());
    assert_stored_once(&lumberd, &[(&run, IndexRule::EventTimestamp)]);
    let logs = lumberd.logs();
    assert!(
        logs.contains("TLS handshake ok") && logs.contains("protocol=TLSv1.3"),
        "{logs}"
    );
}

#[test]
fn go_lumber_over_tls_1_2_with_full_verification_is_acked_and_stored_once() {
    let pki = pki();
    let lumberd = pki.lumberd().start();
    let mut args = go_small("t12");
    args.extend(["-tls-max", "1.2"]);
    let run = run_client(go_tls(pki.verifying(), &args), lumberd.addr());
    assert_all_acked(&run, &lumberd);
    assert_eq!(run.result["tls_version"], "TLS 1.2", "{}", run.describe());
    assert_stored_once(&lumberd, &[(&run, IndexRule::EventTimestamp)]);
    let cipher = run.result["tls_cipher"].as_str().unwrap().to_string();
    let logs = lumberd.logs();
    assert!(
        logs.contains("protocol=TLSv1.2") && logs.contains(&format!("cipher={cipher}")),
        "lumberd must report the IANA name Go negotiated ({cipher}):\n{logs}"
    );
}

#[test]
fn go_lumber_with_a_client_certificate_under_required_client_auth_is_acked_and_identified() {
    let pki = pki();
    let lumberd = pki.lumberd_mtls("required").start();
    let client = pki.client("filebeat-1", Validity::Current);
    let mtls = pki.verifying().presenting(&client);
    let run = run_client(go_tls(mtls, &go_small("mtls")), lumberd.addr());
    assert_all_acked(&run, &lumberd);
    assert_stored_once(&lumberd, &[(&run, IndexRule::EventTimestamp)]);
    // The identity Origin.tls carries for the pipeline, as the connection logs it.
    let logs = lumberd.logs();
    let ok = logs
        .lines()
        .find(|l| l.contains("TLS handshake ok"))
        .unwrap_or_else(|| panic!("no handshake line:\n{logs}"));
    let subject = subject_rfc4514(&client.cert);
    assert!(
        ok.contains(&format!("subject=\"{subject}\"")),
        "subject in RFC 4514 form ({subject}, as openssl prints it) expected: {ok}"
    );
    assert!(ok.contains("filebeat-1.fleet.test"), "SAN expected: {ok}");
}

#[test]
fn the_verified_client_identity_reaches_the_pipeline_as_tls_peer_metadata() {
    let pki = pki();
    // One filter copies [@metadata][tls_peer] into stored fields; no ids, no other
    // filter: each stored event is the one sent plus these three fields.
    let config = r#"[pipeline]
fingerprint = []
metric = []

[[pipeline.filter]]
add_field = { fields = { tls_subject = "%{[@metadata][tls_peer][subject]}", tls_protocol = "%{[@metadata][tls_peer][protocol]}", tls_status = "%{[@metadata][tls_peer][status]}" } }
"#;
    let lumberd = pki.lumberd_mtls("required").config(config).start();
    let client = pki.client("filebeat-7", Validity::Current);
    let mtls = pki.verifying().presenting(&client);
    let run = run_client(go_tls(mtls, &go_small("peer")), lumberd.addr());
    assert_all_acked(&run, &lumberd);
    assert_eq!(run.result["tls_version"], "TLS 1.3", "{}", run.describe());
    let subject = subject_rfc4514(&client.cert);
    let mut stored = std::collections::BTreeMap::new();
    for ev in lumberd.events() {
        let id = ev["test_id"].as_str().expect("test_id").to_string();
        assert!(stored.insert(id, ev).is_none(), "an event stored twice");
    }
    assert_eq!(stored.len(), run.sent.len(), "{}", lumberd.logs());
    for sent in &run.sent {
        let mut want = sent.clone();
        let o = want.as_object_mut().unwrap();
        o.insert("tls_subject".into(), subject.clone().into());
        o.insert("tls_protocol".into(), "TLSv1.3".into());
        o.insert("tls_status".into(), "verified".into());
        let got = &stored[sent["test_id"].as_str().unwrap()];
        assert_eq!(
            *got, want,
            "stored event differs from the sent one plus tls_peer"
        );
    }
}

#[test]
fn client_auth_optional_accepts_clients_with_and_without_a_certificate() {
    let pki = pki();
    let lumberd = pki.lumberd_mtls("optional").start();
    let client = pki.client("filebeat-2", Validity::Current);
    let with_cert = pki.verifying().presenting(&client);
    let a = run_client(go_tls(with_cert, &go_small("opt-c")), lumberd.addr());
    let b = run_client(go_tls(pki.verifying(), &go_small("opt-n")), lumberd.addr());
    assert_all_acked(&a, &lumberd);
    assert_all_acked(&b, &lumberd);
    assert_stored_once(
        &lumberd,
        &[
            (&a, IndexRule::EventTimestamp),
            (&b, IndexRule::EventTimestamp),
        ],
    );
}

#[test]
fn pylogbeat_over_python_ssl_with_a_client_certificate_is_acked_and_stored_once() {
    let pki = pki();
    let lumberd = pki.lumberd_mtls("required").start();
    let client = pki.client("py-agent", Validity::Current);
    let mut cmd = pylogbeat();
    cmd.args(["-window", "10", "-windows", "3", "-id", "pytls"])
        .args(pki.verifying().presenting(&client).args());
    let run = run_client(cmd, lumberd.addr());
    assert_all_acked(&run, &lumberd);
    assert_eq!(run.result["tls_version"], "TLSv1.3", "{}", run.describe());
    assert_eq!(
        run.result["acks"],
        serde_json::json!([10, 20, 30]),
        "{}",
        run.describe()
    );
    assert_stored_once(&lumberd, &[(&run, IndexRule::EventTimestamp)]);
}

// ---------------------------------------------------------------------------------------
// Client authentication refusals: one WARN line each, naming the peer and the reason.

#[test]
fn client_without_a_certificate_is_refused_when_client_auth_is_required() {
    let pki = pki();
    let lumberd = pki.lumberd_mtls("required").start();
    let run = run_client(go_tls(pki.verifying(), &go_small("nocert")), lumberd.addr());
    assert!(!run.status.success(), "must be refused: {}", run.describe());
    expect_one_failure(&lumberd, "client_cert_missing");
    assert!(lumberd.events().is_empty());
}

#[test]
fn client_certificate_from_another_ca_is_refused_as_untrusted() {
    let pki = pki();
    let lumberd = pki.lumberd_mtls("required").start();
    let stranger = Ca::new("Somebody Else CA").client(pki.path(), "intruder", Validity::Current);
    // rustls (lumberd send) sends its certificate whatever CAs the server names; Go's
    // crypto/tls would send none (next test).
    let out = send(lumberd.addr(), pki.verifying().presenting(&stranger));
    assert!(!out.status.success());
    expect_one_failure(&lumberd, "client_cert_untrusted");
    assert!(lumberd.events().is_empty());
}

#[test]
fn go_client_with_a_certificate_from_another_ca_sends_none_and_the_line_says_why() {
    let pki = pki();
    let lumberd = pki.lumberd_mtls("required").start();
    let stranger = Ca::new("Somebody Else CA").client(pki.path(), "intruder", Validity::Current);
    let mtls = pki.verifying().presenting(&stranger);
    let run = run_client(go_tls(mtls, &go_small("untrusted")), lumberd.addr());
    assert!(!run.status.success(), "must be refused: {}", run.describe());
    let line = expect_one_failure(&lumberd, "client_cert_missing");
    assert!(line.contains("tls.client_ca"), "{line}");
    assert!(lumberd.events().is_empty());
}

#[test]
fn expired_client_certificate_is_refused_as_expired() {
    let pki = pki();
    let lumberd = pki.lumberd_mtls("required").start();
    let old = pki.client("stale-agent", Validity::Expired);
    let mtls = pki.verifying().presenting(&old);
    let run = run_client(go_tls(mtls, &go_small("expired")), lumberd.addr());
    assert!(!run.status.success(), "must be refused: {}", run.describe());
    expect_one_failure(&lumberd, "client_cert_expired");
    assert!(lumberd.events().is_empty());
}

#[test]
fn allowed_clients_admits_a_listed_san_or_subject_and_refuses_any_other_client() {
    let pki = pki();
    let listed = pki.client("web-1", Validity::Current);
    let by_subject = pki.client("db-1", Validity::Current);
    let other = pki.client("batch-9", Validity::Current);
    let allowed = format!(
        r#"["web-1.fleet.test", "{}"]"#,
        subject_rfc4514(&by_subject.cert)
    );
    let lumberd = pki
        .lumberd_mtls("required")
        .env("LUMBERD_TLS_ALLOWED_CLIENTS", allowed)
        .start();
    let with = |c: &Issued, id: &'static str| {
        run_client(
            go_tls(pki.verifying().presenting(c), &go_small(id)),
            lumberd.addr(),
        )
    };
    let a = with(&listed, "allow-san");
    let b = with(&by_subject, "allow-dn");
    assert_all_acked(&a, &lumberd);
    assert_all_acked(&b, &lumberd);
    let refused = with(&other, "deny");
    assert!(!refused.status.success(), "{}", refused.describe());
    expect_one_failure(&lumberd, "client_not_allowed");
    assert_stored_once(
        &lumberd,
        &[
            (&a, IndexRule::EventTimestamp),
            (&b, IndexRule::EventTimestamp),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Bad input on the TLS port

#[test]
fn plain_beats_client_on_the_tls_port_is_named_in_one_log_line() {
    let pki = pki();
    let lumberd = pki.lumberd().start();
    let mut cmd = go_lumber();
    cmd.args(go_small("plain")).args(["-timeout", "10s"]);
    let run = run_client(cmd, lumberd.addr());
    assert!(!run.status.success(), "{}", run.describe());
    let line = expect_one_failure(&lumberd, "plain_beats");
    assert!(line.contains("plain Beats client"), "{line}");
}

#[test]
fn http_request_on_the_tls_port_is_named_in_one_log_line() {
    let pki = pki();
    let lumberd = pki.lumberd().start();
    let mut s = TcpStream::connect(lumberd.addr()).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: lumberd\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest); // lumberd closes without answering
    assert!(rest.is_empty(), "no HTTP answer expected, got {rest:?}");
    expect_one_failure(&lumberd, "http");
}

#[test]
fn client_silent_after_connecting_is_closed_at_the_handshake_timeout() {
    let pki = pki();
    let lumberd = pki
        .lumberd()
        .env("LUMBERD_TLS_HANDSHAKE_TIMEOUT", "300ms")
        .start();
    let mut s = TcpStream::connect(lumberd.addr()).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 1];
    let n = s
        .read(&mut buf)
        .expect("lumberd closes the socket, no timeout");
    assert_eq!(n, 0, "closed without a byte");
    let line = expect_one_failure(&lumberd, "timeout");
    assert!(line.contains("handshake_timeout"), "{line}");
}

#[test]
fn tls_1_2_client_is_refused_when_min_version_is_1_3() {
    let pki = pki();
    let lumberd = pki.lumberd().env("LUMBERD_TLS_MIN_VERSION", "1.3").start();
    let mut args = go_small("old");
    args.extend(["-tls-max", "1.2"]);
    let run = run_client(go_tls(pki.verifying(), &args), lumberd.addr());
    assert!(!run.status.success(), "{}", run.describe());
    expect_one_failure(&lumberd, "no_common_parameters");
}

#[test]
fn client_that_does_not_trust_the_server_certificate_is_named_in_one_log_line() {
    let pki = pki();
    let lumberd = pki.lumberd().start();
    let other_ca = Ca::new("Not Our CA").write(pki.path(), "other-ca.crt");
    let run = run_client(
        go_tls(ClientTls::verifying(&other_ca), &go_small("distrust")),
        lumberd.addr(),
    );
    assert!(!run.status.success(), "{}", run.describe());
    assert!(
        run.stderr
            .contains("certificate signed by unknown authority"),
        "{}",
        run.describe()
    );
    expect_one_failure(&lumberd, "client_rejected_server_cert");
}

#[test]
fn expired_server_certificate_stops_serve_and_check_config_with_exit_64_saying_why() {
    let pki = pki();
    let ca = Ca::new("Expired Server CA");
    let old = ca.server(pki.path(), "old-server", Validity::Expired);
    let config = pki.path().join("lumberd.toml");
    fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nenabled = true\ncertificate = {:?}\nkey = {:?}\n",
            old.cert, old.key
        ),
    )
    .unwrap();
    for args in [vec!["check-config"], vec!["serve", "--config"]] {
        let out = lumberd_cmd().args(&args).arg(&config).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.contains("old-server.crt") && stderr.contains("expired"),
            "{args:?} must name the file and say it expired: {stderr}"
        );
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}

#[test]
fn check_config_reports_an_unreadable_file_and_a_key_that_does_not_match() {
    let pki = pki();
    let other = Ca::new("x").server(pki.path(), "other", Validity::Current);
    let cases = [
        (
            pki.server.cert.clone(),
            pki.path().join("missing.key"),
            "missing.key: cannot read",
        ),
        (
            pki.server.cert.clone(),
            other.key.clone(),
            "does not match tls.certificate",
        ),
        (
            pki.server.key.clone(),
            pki.server.key.clone(),
            "no PEM CERTIFICATE block",
        ),
    ];
    for (cert, key, needle) in cases {
        let config = pki.path().join("c.toml");
        fs::write(&config, "").unwrap();
        let out = lumberd_cmd()
            .arg("check-config")
            .arg(&config)
            .env("LUMBERD_TLS_ENABLED", "true")
            .env("LUMBERD_TLS_CERTIFICATE", &cert)
            .env("LUMBERD_TLS_KEY", &key)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{needle}: {stderr}");
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------
// Key forms: each one serves `lumberd send --tls-ca`.

fn serves_with(pki: &Pki, cert: &Path, key: &Path, env: &[(&str, &str)]) {
    let mut b = tls_lumberd(cert, key);
    for (k, v) in env {
        b = b.env(*k, *v);
    }
    let lumberd = b.start();
    let out = send(lumberd.addr(), pki.verifying());
    assert_sent_three(&out, &lumberd);
}

#[test]
fn server_key_in_pkcs8_form_is_served() {
    let pki = pki();
    assert_eq!(
        certs::pem_label(&pki.server.key),
        "-----BEGIN PRIVATE KEY-----"
    );
    serves_with(&pki, &pki.server.cert, &pki.server.key, &[]);
}

#[test]
fn server_key_in_pkcs1_rsa_form_is_served() {
    let pki = pki();
    let pk8 = certs::rsa_pkcs8(pki.path(), "rsa");
    let ca = Ca::new("RSA CA");
    let issued = ca.server_for_key(pki.path(), "rsa-server", &fs::read_to_string(&pk8).unwrap());
    let pkcs1 = pki.path().join("rsa.pkcs1.pem");
    certs::to_pkcs1(&pk8, &pkcs1);
    assert_eq!(certs::pem_label(&pkcs1), "-----BEGIN RSA PRIVATE KEY-----");
    let ca_path = ca.write(pki.path(), "rsa-ca.crt");
    let lumberd = tls_lumberd(&issued.cert, &pkcs1).start();
    let out = send(lumberd.addr(), ClientTls::verifying(&ca_path));
    assert_sent_three(&out, &lumberd);
}

#[test]
fn server_key_in_sec1_ec_form_is_served() {
    let pki = pki();
    let sec1 = pki.path().join("server.sec1.pem");
    certs::to_sec1(&pki.server.key, &sec1);
    assert_eq!(certs::pem_label(&sec1), "-----BEGIN EC PRIVATE KEY-----");
    serves_with(&pki, &pki.server.cert, &sec1, &[]);
}

#[test]
fn encrypted_pkcs8_key_is_served_with_the_passphrase_from_a_file() {
    let pki = pki();
    let enc = pki.path().join("server.enc.pem");
    certs::to_encrypted_pkcs8(&pki.server.key, &enc, "correct horse");
    assert_eq!(
        certs::pem_label(&enc),
        "-----BEGIN ENCRYPTED PRIVATE KEY-----"
    );
    let pass = pki.path().join("passphrase");
    fs::write(&pass, "correct horse\n").unwrap(); // as `echo` leaves it
    serves_with(
        &pki,
        &pki.server.cert,
        &enc,
        &[("LUMBERD_TLS_KEY_PASSPHRASE_FILE", pass.to_str().unwrap())],
    );
}

#[test]
fn encrypted_pkcs8_key_is_served_with_the_passphrase_from_an_environment_variable() {
    let pki = pki();
    let enc = pki.path().join("server.enc.pem");
    certs::to_encrypted_pkcs8(&pki.server.key, &enc, "s3cret");
    serves_with(
        &pki,
        &pki.server.cert,
        &enc,
        &[
            ("LUMBERD_TLS_KEY_PASSPHRASE_ENV", "TLS_KEY_PASS"),
            ("TLS_KEY_PASS", "s3cret"),
        ],
    );
}

#[test]
fn encrypted_key_with_a_wrong_or_missing_passphrase_is_a_configuration_error() {
    let pki = pki();
    let enc = pki.path().join("server.enc.pem");
    certs::to_encrypted_pkcs8(&pki.server.key, &enc, "right");
    let config = pki.path().join("c.toml");
    fs::write(&config, "").unwrap();
    for (env, needle) in [
        (vec![("TLS_KEY_PASS", "wrong")], "wrong passphrase"),
        (vec![], "the key is encrypted"),
    ] {
        let mut cmd = lumberd_cmd();
        cmd.arg("check-config")
            .arg(&config)
            .env("LUMBERD_TLS_ENABLED", "true")
            .env("LUMBERD_TLS_CERTIFICATE", &pki.server.cert)
            .env("LUMBERD_TLS_KEY", &enc);
        if !env.is_empty() {
            cmd.env("LUMBERD_TLS_KEY_PASSPHRASE_ENV", "TLS_KEY_PASS");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains(needle), "expected {needle:?}: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------
// lumberd send's TLS flags

#[test]
fn send_verifies_the_server_name_and_insecure_skips_verification() {
    let pki = pki();
    let client = pki.client("sender", Validity::Current);
    let lumberd = pki.lumberd_mtls("required").start();
    let mtls = pki.verifying().presenting(&client);

    let wrong_name = send(lumberd.addr(), mtls.server_name("elsewhere.test"));
    let stderr = String::from_utf8_lossy(&wrong_name.stderr);
    assert!(!wrong_name.status.success());
    assert!(
        stderr.contains("elsewhere.test") && stderr.contains("not valid for name"),
        "the failure must say which name did not match: {stderr}"
    );

    let named = send(lumberd.addr(), mtls.server_name("localhost"));
    assert_sent_three(&named, &lumberd);

    // the default name is the host of --host (127.0.0.1, an IP SAN of the certificate)
    let unknown_ca = Ca::new("y").write(pki.path(), "y.crt");
    let untrusted = send(
        lumberd.addr(),
        ClientTls::verifying(&unknown_ca).presenting(&client),
    );
    assert!(!untrusted.status.success());
    let insecure = send(lumberd.addr(), ClientTls::insecure().presenting(&client));
    assert_sent_three(&insecure, &lumberd);
}

// ---------------------------------------------------------------------------------------
// Rotation

/// A Kubernetes-style secret mount: `dir/tls.crt -> ..data/tls.crt`, `..data -> <version>`;
/// a rotation writes a new version directory and swaps `..data` atomically.
struct SecretMount {
    dir: PathBuf,
    versions: u32,
}

impl SecretMount {
    fn new(dir: &Path, cert: &[u8], key: &[u8]) -> SecretMount {
        let dir = dir.join("secret");
        fs::create_dir(&dir).unwrap();
        let mut m = SecretMount { dir, versions: 0 };
        m.publish(cert, key);
        std::os::unix::fs::symlink("..data/tls.crt", m.dir.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", m.dir.join("tls.key")).unwrap();
        m
    }

    fn publish(&mut self, cert: &[u8], key: &[u8]) {
        self.versions += 1;
        let version = format!("..v{}", self.versions);
        fs::create_dir(self.dir.join(&version)).unwrap();
        fs::write(self.dir.join(&version).join("tls.crt"), cert).unwrap();
        fs::write(self.dir.join(&version).join("tls.key"), key).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
}

/// A TLS client speaking raw Beats frames, to hold a connection open across a rotation.
struct RawTls {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl RawTls {
    fn connect(addr: SocketAddr, ca: &Path) -> RawTls {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let conn = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .expect("TLS handshake with lumberd");
        }
        RawTls { stream }
    }

    fn served_cert(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// Sends one window of `n` events and returns the ACK (keep-alives skipped).
    fn window(&mut self, id: &str, n: usize) -> u32 {
        let events: Vec<Vec<u8>> = (0..n)
            .map(|i| format!(r#"{{"message":"{id}-{i}"}}"#).into_bytes())
            .collect();
        let mut wire = BytesMut::new();
        encode_window(1, &events, Compression::Level(3), &mut wire);
        self.stream.write_all(&wire).unwrap();
        self.stream.flush().unwrap();
        loop {
            let mut ack = [0u8; 6];
            self.stream
                .read_exact(&mut ack)
                .expect("an ACK on the open connection");
            assert_eq!(&ack[..2], b"2A", "{ack:?}");
            let seq = u32::from_be_bytes(ack[2..].try_into().unwrap());
            if seq != 0 {
                return seq;
            }
        }
    }
}

/// Connects until a new connection is served `der`, or fails after [`DEADLINE`].
fn wait_until_served(addr: SocketAddr, ca: &Path, der: &[u8], lumberd: &Lumberd) {
    let until = Instant::now() + DEADLINE;
    while RawTls::connect(addr, ca).served_cert() != der {
        assert!(
            Instant::now() < until,
            "new connections still get the old certificate after {DEADLINE:?}; logs:\n{}",
            lumberd.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rotated_certificate_serves_new_connections_while_open_ones_continue_and_a_broken_one_is_refused_once(
) {
    let pki = pki();
    let first = &pki.server;
    let ca = Ca::new("Rotation CA");
    let ca_path = ca.write(pki.path(), "rotation-ca.crt");
    // both generations chain to one bundle, as during a CA-preserving rotation
    let bundle = pki.path().join("bundle.crt");
    fs::write(
        &bundle,
        [
            fs::read(&pki.server_ca).unwrap(),
            fs::read(&ca_path).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let second = ca.server(pki.path(), "second", Validity::Current);
    let mut mount = SecretMount::new(
        pki.path(),
        &fs::read(&first.cert).unwrap(),
        &fs::read(&first.key).unwrap(),
    );
    let lumberd = tls_lumberd(&mount.cert(), &mount.key())
        .env("LUMBERD_TLS_RELOAD_INTERVAL", "100ms")
        .env("LUMBERD_LOG_LEVEL", "info,lumberd::tls=trace")
        .start();

    let mut live = RawTls::connect(lumberd.addr(), &bundle);
    assert_eq!(live.served_cert(), first.der);
    assert_eq!(live.window("before", 5), 5);

    mount.publish(
        &fs::read(&second.cert).unwrap(),
        &fs::read(&second.key).unwrap(),
    );
    wait_until_served(lumberd.addr(), &bundle, &second.der, &lumberd);
    assert!(lumberd.logs().contains("TLS certificate reloaded"));
    // the connection opened before the rotation still works, on its old session
    assert_eq!(live.window("after", 7), 7);

    // a broken replacement: refused with one line, the second certificate stays
    mount.publish(
        b"-----BEGIN CERTIFICATE-----\nbroken\n",
        &fs::read(&second.key).unwrap(),
    );
    let refused = "cannot be used; still serving the previous certificate";
    let logs = lumberd.wait_for_logs("the refusal of the broken certificate", DEADLINE, |l| {
        l.contains(refused)
    });
    let line = logs.lines().find(|l| l.contains(refused)).unwrap();
    assert!(
        line.contains("ERROR") && line.contains("tls.certificate"),
        "{line}"
    );
    // several more checks of the same broken files, and still only one line about them
    let at = logs.find(refused).unwrap();
    let logs = lumberd.wait_for_logs("three more checks of the TLS files", DEADLINE, |l| {
        l[at..].matches("tls files checked").count() >= 3
    });
    assert_eq!(logs.matches(refused).count(), 1, "{logs}");
    assert_eq!(
        RawTls::connect(lumberd.addr(), &bundle).served_cert(),
        second.der,
        "the previous certificate stays in use"
    );
    assert_eq!(live.window("still", 2), 2);
    assert_eq!(lumberd.events().len(), 5 + 7 + 2);
}

// ---------------------------------------------------------------------------------------
// The README's TLS section, as written

/// The body of the first fenced block of `lang` after the heading `heading`.
fn readme_block(readme: &str, heading: &str, lang: &str) -> String {
    let section = &readme[readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no {heading:?}"))..];
    let fence = format!("```{lang}\n");
    let start = section
        .find(&fence)
        .unwrap_or_else(|| panic!("no ```{lang} block under {heading:?}"))
        + fence.len();
    let end = section[start..].find("```").unwrap() + start;
    section[start..end].to_string()
}

#[test]
fn readme_tls_settings_work_as_written_for_lumberd_and_filebeat() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let toml_block = readme_block(&readme, "## TLS", "toml");
    let yaml_block = readme_block(&readme, "## TLS", "yaml");

    // The files the README names, made here under their README file names.
    let pki = pki();
    let dir = pki.path();
    let fb: std::collections::BTreeMap<String, String> = yaml_block
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let host = fb["hosts"]
        .trim_matches(|c| c == '[' || c == ']' || c == '"')
        .rsplit_once(':')
        .unwrap()
        .0
        .to_string();
    let server_ca = Ca::new("README lumberd CA");
    let server = server_ca.server_named(dir, "readme-server", &[&host], Validity::Current);
    let client = pki.client("readme-filebeat", Validity::Current);
    let unquote = |v: &str| {
        v.trim_matches(|c| c == '"' || c == '[' || c == ']')
            .to_string()
    };
    let file_name = |v: &str| Path::new(&unquote(v)).file_name().unwrap().to_owned();
    let place = |v: &str, from: &Path| {
        let to = dir.join("readme").join(file_name(v));
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(from, &to).unwrap();
        to
    };

    // lumberd: the README's [tls] table with each path moved into the temp dir.
    let mut tls: toml::Table = toml_block.parse::<toml::Table>().unwrap()["tls"]
        .as_table()
        .expect("[tls] in the README's toml block")
        .clone();
    let srv_cert = place(tls["certificate"].as_str().unwrap(), &server.cert);
    let srv_key = place(tls["key"].as_str().unwrap(), &server.key);
    tls.insert("certificate".into(), srv_cert.to_str().unwrap().into());
    tls.insert("key".into(), srv_key.to_str().unwrap().into());
    let cas: Vec<toml::Value> = tls["client_ca"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            place(p.as_str().unwrap(), &pki.client_ca)
                .to_str()
                .unwrap()
                .into()
        })
        .collect();
    tls.insert("client_ca".into(), toml::Value::Array(cas));
    let mut doc = toml::Table::new();
    doc.insert("tls".into(), toml::Value::Table(tls));
    // The builder takes one config text: the passthrough pipeline (events stored as
    // sent, compared below) and the README's [tls] table.
    let config = format!("{PASSTHROUGH_CONFIG}\n{}", toml::to_string(&doc).unwrap());
    let lumberd = Lumberd::builder().config(config).start();

    // Filebeat: go-lumber over crypto/tls configured from the README's ssl.* values.
    assert_eq!(
        fb["ssl.verification_mode"], "full",
        "the Go client verifies fully, as the README says"
    );
    let protocols = unquote(&fb["ssl.supported_protocols"]);
    let versions: Vec<&str> = protocols.split(',').map(str::trim).collect();
    let fb_ca = place(
        &fb["ssl.certificate_authorities"],
        &server_ca.write(dir, "s-ca.crt"),
    );
    let fb_cert = place(&fb["ssl.certificate"], &client.cert);
    let fb_key = place(&fb["ssl.key"], &client.key);
    let tls = ClientTls::verifying(&fb_ca)
        .presenting_files(&fb_cert, &fb_key)
        .server_name(&host);
    let mut cmd = go_tls(tls, &go_small("readme"));
    cmd.args(["-tls-min", versions.first().unwrap()])
        .args(["-tls-max", versions.last().unwrap()]);
    let run = run_client(cmd, lumberd.addr());
    assert_all_acked(&run, &lumberd);
    assert_stored_once(&lumberd, &[(&run, IndexRule::EventTimestamp)]);
}
