//! The one place TLS policy is decided: which certificate and key are served (and when a
//! rotated pair replaces them), which protocol versions, how clients are verified, what a
//! failed handshake is called, and what the pipeline learns about a verified client.
//! Knows no sockets: it works on any byte stream, and on the files named in `[tls]`.
//!
//! rustls with the `ring` provider. Keys: PKCS#8, PKCS#1 (RSA), SEC1 (EC) and encrypted
//! PKCS#8 (PBES2), because users move their Logstash/Filebeat files over unchanged.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    ServerName, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme, SupportedProtocolVersion,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::config::{ClientAuth, Passphrase, TlsSettings, TlsVersion};
use crate::event::TlsPeer;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why the TLS files cannot be served; each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: cannot read: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path}: no PEM CERTIFICATE block found")]
    NoCertificate { what: &'static str, path: String },
    #[error("{what} {path}: not valid PEM: {detail}")]
    Pem {
        what: &'static str,
        path: String,
        detail: String,
    },
    #[error("{what} {path}: not a valid X.509 certificate: {detail}")]
    BadCertificate {
        what: &'static str,
        path: String,
        detail: String,
    },
    #[error(
        "tls.key {path}: no private key found (expected a PEM block PRIVATE KEY, \
         RSA PRIVATE KEY, EC PRIVATE KEY or ENCRYPTED PRIVATE KEY)"
    )]
    NoKey { path: String },
    #[error(
        "tls.key {path}: the key is encrypted; set tls.key_passphrase_file or tls.key_passphrase_env"
    )]
    NeedPassphrase { path: String },
    #[error("tls.key_passphrase_env: the environment variable {0} is not set")]
    PassphraseEnvMissing(String),
    #[error("tls.key {path}: cannot decrypt it with the passphrase given ({detail})")]
    Decrypt { path: String, detail: String },
    #[error(
        "tls.key {path}: legacy OpenSSL-encrypted PEM (Proc-Type: 4,ENCRYPTED) is not supported; \
         convert it to encrypted PKCS#8 with `openssl pkcs8 -topk8 -v2 aes-256-cbc`"
    )]
    LegacyEncrypted { path: String },
    #[error("tls.key {path}: unusable key: {detail}")]
    UnsupportedKey { path: String, detail: String },
    #[error("tls.key {key} does not match tls.certificate {certificate} (different public keys)")]
    KeyMismatch { key: String, certificate: String },
    #[error("{what} {path}: expired at {not_after} (subject {subject}); renew it")]
    Expired {
        what: &'static str,
        path: String,
        subject: String,
        not_after: String,
    },
    #[error("{what} {path}: not valid before {not_before} (subject {subject}); check the clock")]
    NotYetValid {
        what: &'static str,
        path: String,
        subject: String,
        not_before: String,
    },
    #[error("tls.client_ca {path}: cannot be used as a trust anchor: {detail}")]
    ClientCa { path: String, detail: String },
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Why a handshake on the TLS port failed. The labels are fixed: metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// A Beats client without TLS on the TLS port (first byte '2' or '1').
    PlainBeats,
    /// An HTTP request (first byte an ASCII capital: GET, POST, HEAD, ...).
    Http,
    /// Some other byte stream that is not a TLS ClientHello.
    NotTls,
    /// The handshake did not finish within `tls.handshake_timeout`.
    Timeout,
    /// client_auth = required and the client sent no certificate.
    ClientCertMissing,
    /// The client's certificate does not chain to a `tls.client_ca`.
    ClientCertUntrusted,
    /// The client's certificate is expired or not yet valid.
    ClientCertExpired,
    /// Verified, but neither its subject nor a SAN is in `tls.allowed_clients`.
    ClientNotAllowed,
    /// The client refused our certificate (an alert during the handshake).
    ClientRejectedServerCert,
    /// No protocol version or cipher suite in common (e.g. a TLS 1.2-only client when
    /// min_version = 1.3).
    NoCommonParameters,
    /// The connection broke or closed during the handshake.
    Io,
    /// Any other TLS protocol error.
    Other,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 12] = [
        HandshakeFailure::PlainBeats,
        HandshakeFailure::Http,
        HandshakeFailure::NotTls,
        HandshakeFailure::Timeout,
        HandshakeFailure::ClientCertMissing,
        HandshakeFailure::ClientCertUntrusted,
        HandshakeFailure::ClientCertExpired,
        HandshakeFailure::ClientNotAllowed,
        HandshakeFailure::ClientRejectedServerCert,
        HandshakeFailure::NoCommonParameters,
        HandshakeFailure::Io,
        HandshakeFailure::Other,
    ];

    /// The fixed label: the log line's `reason=` and, later, the metric's label value.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::PlainBeats => "plain_beats",
            HandshakeFailure::Http => "http",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::ClientCertMissing => "client_cert_missing",
            HandshakeFailure::ClientCertUntrusted => "client_cert_untrusted",
            HandshakeFailure::ClientCertExpired => "client_cert_expired",
            HandshakeFailure::ClientNotAllowed => "client_not_allowed",
            HandshakeFailure::ClientRejectedServerCert => "client_rejected_server_cert",
            HandshakeFailure::NoCommonParameters => "no_common_parameters",
            HandshakeFailure::Io => "io",
            HandshakeFailure::Other => "other",
        }
    }

    fn index(self) -> usize {
        HandshakeFailure::ALL
            .iter()
            .position(|r| *r == self)
            .expect("ALL lists every variant")
    }

    /// What the first byte of a connection says before any TLS parsing: `None` for a TLS
    /// handshake record (0x16), the kind of garbage otherwise (PROTOCOL.md rule 7).
    pub fn from_first_byte(b: u8) -> Option<HandshakeFailure> {
        match b {
            0x16 => None,
            b'1' | b'2' => Some(HandshakeFailure::PlainBeats),
            b'A'..=b'Z' => Some(HandshakeFailure::Http),
            _ => Some(HandshakeFailure::NotTls),
        }
    }

    /// Classifies the error tokio-rustls returned from a handshake.
    pub fn from_io(err: &std::io::Error) -> HandshakeFailure {
        let Some(tls) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        else {
            return HandshakeFailure::Io;
        };
        use rustls::Error as E;
        match tls {
            E::NoCertificatesPresented => HandshakeFailure::ClientCertMissing,
            E::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            ) => HandshakeFailure::ClientCertExpired,
            E::InvalidCertificate(CertificateError::ApplicationVerificationFailure) => {
                HandshakeFailure::ClientNotAllowed
            }
            E::InvalidCertificate(_) => HandshakeFailure::ClientCertUntrusted,
            E::AlertReceived(alert) => {
                use rustls::AlertDescription as A;
                match alert {
                    A::ProtocolVersion | A::HandshakeFailure | A::InsufficientSecurity => {
                        HandshakeFailure::NoCommonParameters
                    }
                    A::BadCertificate
                    | A::UnsupportedCertificate
                    | A::CertificateRevoked
                    | A::CertificateExpired
                    | A::CertificateUnknown
                    | A::UnknownCA
                    | A::AccessDenied
                    | A::DecryptError => HandshakeFailure::ClientRejectedServerCert,
                    _ => HandshakeFailure::Other,
                }
            }
            E::PeerIncompatible(_) => HandshakeFailure::NoCommonParameters,
            E::InvalidMessage(_) => HandshakeFailure::NotTls,
            _ => HandshakeFailure::Other,
        }
    }
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A handshake that did not produce a usable connection: why, and the detail for the log.
#[derive(Debug)]
pub struct HandshakeError {
    pub reason: HandshakeFailure,
    pub detail: String,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Handshake and reload counts, kept until the metrics module exports them.
#[derive(Debug, Default)]
pub struct TlsCounters {
    handshakes_ok: AtomicU64,
    handshakes_failed: [AtomicU64; HandshakeFailure::ALL.len()],
    reloads: AtomicU64,
    reloads_refused: AtomicU64,
}

/// A copy of [`TlsCounters`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCounts {
    pub handshakes_ok: u64,
    pub handshakes_failed: Vec<(HandshakeFailure, u64)>,
    pub reloads: u64,
    pub reloads_refused: u64,
}

impl TlsCounters {
    pub fn handshake_ok(&self) -> u64 {
        self.handshakes_ok.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts one failure; returns the count for that reason so far.
    pub fn handshake_failed(&self, reason: HandshakeFailure) -> u64 {
        self.handshakes_failed[reason.index()].fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn snapshot(&self) -> TlsCounts {
        TlsCounts {
            handshakes_ok: self.handshakes_ok.load(Ordering::Relaxed),
            handshakes_failed: HandshakeFailure::ALL
                .iter()
                .map(|r| {
                    (
                        *r,
                        self.handshakes_failed[r.index()].load(Ordering::Relaxed),
                    )
                })
                .collect(),
            reloads: self.reloads.load(Ordering::Relaxed),
            reloads_refused: self.reloads_refused.load(Ordering::Relaxed),
        }
    }
}

/// The bytes of every file the server config is built from: a rotation is a change of
/// content (Kubernetes swaps a symlink, so inode and mtime alone can mislead).
#[derive(Clone, PartialEq, Eq)]
struct Inputs {
    certificate: Vec<u8>,
    key: Vec<u8>,
    passphrase: Option<Vec<u8>>,
    client_ca: Vec<Vec<u8>>,
}

/// What a reload attempt found; the watcher logs it.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    /// New files are served to new connections from now on.
    Reloaded {
        subject: String,
        not_after: String,
    },
    /// The new files are broken: the previous certificate stays. Reported once per
    /// distinct broken content, and only once it has been seen unchanged on two checks
    /// in a row (so a cert written a moment before its key is not reported).
    Refused(TlsError),
    /// Broken, already reported or not yet confirmed.
    StillRefused,
}

/// The TLS side of the listener: the current server config (replaced on rotation), the
/// handshake policy and the counters.
pub struct TlsServer {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
    state: Mutex<ReloadState>,
    pub counters: TlsCounters,
}

struct ReloadState {
    served: Inputs,
    /// The last broken candidate (its bytes or its read error) and whether it was logged.
    refused: Option<(Result<Inputs, String>, bool)>,
}

/// The served certificate, for the log lines.
#[derive(Debug, Clone)]
pub struct CertSummary {
    pub subject: String,
    pub not_after: String,
}

impl TlsServer {
    /// Reads and checks every file (PEM, key form and passphrase, key matches certificate,
    /// certificate currently valid, client CAs); everything a bad file can break fails here,
    /// before a port is bound.
    pub fn load(settings: &TlsSettings) -> Result<TlsServer, TlsError> {
        let inputs = read_inputs(settings)?;
        let (config, _) = build(settings, &inputs, SystemTime::now())?;
        Ok(TlsServer {
            settings: settings.clone(),
            current: RwLock::new(config),
            state: Mutex::new(ReloadState {
                served: inputs,
                refused: None,
            }),
            counters: TlsCounters::default(),
        })
    }

    /// The served certificate's subject and expiry (for the start-up log line).
    pub fn summary(&self) -> CertSummary {
        let state = self.state.lock().expect("reload state");
        certs(
            &state.served.certificate,
            "tls.certificate",
            &self.settings.certificate,
        )
        .ok()
        .and_then(|chain| chain.first().and_then(|c| summarise(c).ok()))
        .unwrap_or(CertSummary {
            subject: "?".into(),
            not_after: "?".into(),
        })
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.settings.handshake_timeout
    }

    /// Runs the handshake on `io` with the config current now; a rotation after this point
    /// does not affect this connection. The caller applies the handshake timeout.
    pub async fn accept<IO>(&self, io: IO) -> Result<(TlsStream<IO>, Arc<TlsPeer>), HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.current.read().expect("tls config lock").clone();
        match TlsAcceptor::from(config).accept(io).await {
            Ok(stream) => {
                let peer = Arc::new(peer_of(stream.get_ref().1));
                Ok((stream, peer))
            }
            Err(e) => {
                let reason = HandshakeFailure::from_io(&e);
                let mut detail = e.to_string();
                if reason == HandshakeFailure::ClientCertMissing {
                    // Go's crypto/tls (Filebeat) sends no certificate when its issuer is not
                    // among the CAs the server names, so "missing" often means "wrong CA".
                    detail.push_str(
                        " (client_auth = required; a client whose certificate is not issued \
                         by a tls.client_ca sends none)",
                    );
                }
                Err(HandshakeError { reason, detail })
            }
        }
    }

    /// Re-reads the files; when their content changed and they are good, new connections
    /// get them. Blocking file reads: call from a blocking context.
    pub fn reload(&self) -> Reload {
        let mut state = self.state.lock().expect("reload state");
        let (candidate, error) = match read_inputs(&self.settings) {
            Ok(inputs) if inputs == state.served => {
                state.refused = None;
                return Reload::Unchanged;
            }
            Ok(inputs) => match build(&self.settings, &inputs, SystemTime::now()) {
                Ok((config, summary)) => {
                    *self.current.write().expect("tls config lock") = config;
                    state.served = inputs;
                    state.refused = None;
                    self.counters.reloads.fetch_add(1, Ordering::Relaxed);
                    return Reload::Reloaded {
                        subject: summary.subject,
                        not_after: summary.not_after,
                    };
                }
                Err(e) => (Ok(inputs), e),
            },
            Err(e) => (Err(e.to_string()), e),
        };
        match &mut state.refused {
            Some((seen, logged)) if *seen == candidate => {
                if *logged {
                    Reload::StillRefused
                } else {
                    *logged = true;
                    self.counters
                        .reloads_refused
                        .fetch_add(1, Ordering::Relaxed);
                    Reload::Refused(error)
                }
            }
            _ => {
                state.refused = Some((candidate, false));
                Reload::StillRefused
            }
        }
    }

    /// Checks the files every `tls.reload_interval` until `stop`, logging each outcome
    /// that matters once.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; the files were just loaded
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let me = self.clone();
            let Ok(outcome) = tokio::task::spawn_blocking(move || me.reload()).await else {
                continue;
            };
            match outcome {
                Reload::Unchanged => tracing::trace!("tls files checked: unchanged"),
                Reload::StillRefused => tracing::trace!("tls files checked: not reloadable"),
                Reload::Reloaded { subject, not_after } => tracing::info!(
                    %subject, %not_after,
                    certificate = %self.settings.certificate.display(),
                    "TLS certificate reloaded: new connections use it, open ones keep theirs"
                ),
                Reload::Refused(e) => tracing::error!(
                    certificate = %self.settings.certificate.display(),
                    "TLS files changed but cannot be used; still serving the previous certificate: {e}"
                ),
            }
        }
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

fn read_inputs(s: &TlsSettings) -> Result<Inputs, TlsError> {
    let passphrase = match &s.key_passphrase {
        Passphrase::None => None,
        Passphrase::File(path) => {
            let mut p = read("tls.key_passphrase_file", path)?;
            // `echo secret > file` leaves a newline that is not part of the passphrase.
            while p.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                p.pop();
            }
            Some(p)
        }
        Passphrase::Env(var) => Some(
            std::env::var_os(var)
                .ok_or_else(|| TlsError::PassphraseEnvMissing(var.clone()))?
                .into_encoded_bytes(),
        ),
    };
    Ok(Inputs {
        certificate: read("tls.certificate", &s.certificate)?,
        key: read("tls.key", &s.key)?,
        passphrase,
        client_ca: s
            .client_ca
            .iter()
            .map(|p| read("tls.client_ca", p))
            .collect::<Result<_, _>>()?,
    })
}

/// Builds the server config from file contents, checking everything a bad file can break.
fn build(
    s: &TlsSettings,
    inputs: &Inputs,
    now: SystemTime,
) -> Result<(Arc<ServerConfig>, CertSummary), TlsError> {
    let provider = provider();
    let chain = certs(&inputs.certificate, "tls.certificate", &s.certificate)?;
    let summary = check_validity(&chain[0], "tls.certificate", &s.certificate, now)?;
    let key = private_key(&inputs.key, inputs.passphrase.as_deref(), &s.key)?;
    let signing =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::UnsupportedKey {
                path: s.key.display().to_string(),
                detail: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                key: s.key.display().to_string(),
                certificate: s.certificate.display().to_string(),
            })
        }
        Err(e) => {
            return Err(TlsError::BadCertificate {
                what: "tls.certificate",
                path: s.certificate.display().to_string(),
                detail: e.to_string(),
            })
        }
    }
    let verifier = client_verifier(s, inputs, &provider)?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(s.min_version))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    Ok((Arc::new(config), summary))
}

static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

fn versions(min: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    match min {
        TlsVersion::Tls12 => rustls::ALL_VERSIONS,
        TlsVersion::Tls13 => &TLS13_ONLY,
    }
}

fn client_verifier(
    s: &TlsSettings,
    inputs: &Inputs,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    if s.client_auth == ClientAuth::None {
        return Ok(WebPkiClientVerifier::no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    for (path, pem) in s.client_ca.iter().zip(&inputs.client_ca) {
        for ca in certs(pem, "tls.client_ca", path)? {
            roots.add(ca).map_err(|e| TlsError::ClientCa {
                path: path.display().to_string(),
                detail: e.to_string(),
            })?;
        }
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if s.client_auth == ClientAuth::Optional {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder.build().map_err(|e| TlsError::ClientCa {
        path: s
            .client_ca
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        detail: e.to_string(),
    })?;
    if s.allowed_clients.is_empty() {
        return Ok(verifier);
    }
    Ok(Arc::new(AllowList {
        inner: verifier,
        allowed: s.allowed_clients.clone(),
    }))
}

/// Every CERTIFICATE block of a PEM file, at least one.
fn certs(
    pem: &[u8],
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.display().to_string(),
        });
    }
    for c in &chain {
        X509Certificate::from_der(c).map_err(|e| TlsError::BadCertificate {
            what,
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
    }
    Ok(chain)
}

/// The first private key of a PEM file in any of the four accepted forms.
fn private_key(
    pem: &[u8],
    passphrase: Option<&[u8]>,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let shown = || path.display().to_string();
    let text = String::from_utf8_lossy(pem);
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(TlsError::LegacyEncrypted { path: shown() });
    }
    if let Some(block) = pem_block(&text, "ENCRYPTED PRIVATE KEY") {
        let Some(passphrase) = passphrase else {
            return Err(TlsError::NeedPassphrase { path: shown() });
        };
        let (_, der) =
            pkcs8::der::pem::decode_vec(block.as_bytes()).map_err(|e| TlsError::Pem {
                what: "tls.key",
                path: shown(),
                detail: e.to_string(),
            })?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice()).map_err(|e| {
            TlsError::Pem {
                what: "tls.key",
                path: shown(),
                detail: e.to_string(),
            }
        })?;
        // A wrong passphrase shows as bad padding or as garbage that is not a key.
        let plain = info.decrypt(passphrase).map_err(|e| TlsError::Decrypt {
            path: shown(),
            detail: format!(
                "wrong passphrase, or a cipher other than PBES2 AES-CBC with PBKDF2/scrypt: {e}"
            ),
        })?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    for item in rustls::pki_types::pem::SliceIter::<PemSection>::new(pem) {
        let section = item.map_err(|e| TlsError::Pem {
            what: "tls.key",
            path: shown(),
            detail: e.to_string(),
        })?;
        if let Some(key) = section.0 {
            return Ok(key);
        }
    }
    Err(TlsError::NoKey { path: shown() })
}

/// One PEM section: the key when it is a private key of a supported form.
struct PemSection(Option<PrivateKeyDer<'static>>);

impl PemObject for PemSection {
    fn from_pem(kind: rustls::pki_types::pem::SectionKind, der: Vec<u8>) -> Option<Self> {
        use rustls::pki_types::pem::SectionKind as K;
        Some(PemSection(match kind {
            K::PrivateKey => Some(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der))),
            K::RsaPrivateKey => Some(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der))),
            K::EcPrivateKey => Some(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der))),
            _ => None,
        }))
    }
}

/// The text of the first `-----BEGIN <label>-----` ... `-----END <label>-----` block.
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = text[start..].find(&end)? + start + end.len();
    Some(&text[start..stop])
}

fn check_validity(
    cert: &CertificateDer<'_>,
    what: &'static str,
    path: &Path,
    now: SystemTime,
) -> Result<CertSummary, TlsError> {
    let (_, parsed) = X509Certificate::from_der(cert).map_err(|e| TlsError::BadCertificate {
        what,
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let validity = parsed.validity();
    let subject = rfc4514(parsed.subject());
    if validity.not_after.timestamp() < now {
        return Err(TlsError::Expired {
            what,
            path: path.display().to_string(),
            subject,
            not_after: validity.not_after.to_string(),
        });
    }
    if validity.not_before.timestamp() > now {
        return Err(TlsError::NotYetValid {
            what,
            path: path.display().to_string(),
            subject,
            not_before: validity.not_before.to_string(),
        });
    }
    Ok(CertSummary {
        subject,
        not_after: validity.not_after.to_string(),
    })
}

fn summarise(
    cert: &CertificateDer<'_>,
) -> Result<CertSummary, x509_parser::nom::Err<x509_parser::error::X509Error>> {
    let (_, parsed) = X509Certificate::from_der(cert)?;
    Ok(CertSummary {
        subject: rfc4514(parsed.subject()),
        not_after: parsed.validity().not_after.to_string(),
    })
}

/// What the handshake established, for `Origin.tls` (Logstash's `[@metadata][tls_peer]`).
fn peer_of(conn: &rustls::ServerConnection) -> TlsPeer {
    let protocol = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| iana_cipher_name(s.suite()))
        .unwrap_or_default();
    let (subject, sans) = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|leaf| identity(leaf))
        .map(|(subject, sans)| (Some(subject), sans))
        .unwrap_or((None, Vec::new()));
    TlsPeer {
        subject,
        sans,
        protocol,
        cipher,
    }
}

/// rustls names TLS 1.3 suites `TLS13_*`; IANA's registry calls them `TLS_*`. The TLS 1.2
/// names already are IANA's.
fn iana_cipher_name(suite: rustls::CipherSuite) -> String {
    match suite.as_str() {
        Some(name) => match name.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => name.to_string(),
        },
        None => format!("{suite:?}"),
    }
}

/// The subject (RFC 4514) and SANs of a certificate; unparseable gives an empty identity.
fn identity(der: &CertificateDer<'_>) -> (String, Vec<String>) {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return (String::new(), Vec::new());
    };
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    sans.push(s.to_string())
                }
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        sans.push(std::net::Ipv4Addr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        sans.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    (rfc4514(cert.subject()), sans)
}

/// A distinguished name as RFC 4514 writes it (what Java's `getName()` gives Logstash):
/// RDNs last-to-first, `,` between them, `+` inside one, short names for the usual
/// attributes, special characters escaped, other attribute types as `OID=#hex`.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut rdns = Vec::new();
    for rdn in name.iter_rdn() {
        let parts: Vec<String> = rdn
            .iter()
            .map(|atv| {
                let oid = atv.attr_type().to_id_string();
                let short = match oid.as_str() {
                    "2.5.4.3" => Some("CN"),
                    "2.5.4.6" => Some("C"),
                    "2.5.4.7" => Some("L"),
                    "2.5.4.8" => Some("ST"),
                    "2.5.4.9" => Some("STREET"),
                    "2.5.4.10" => Some("O"),
                    "2.5.4.11" => Some("OU"),
                    "0.9.2342.19200300.100.1.25" => Some("DC"),
                    "0.9.2342.19200300.100.1.1" => Some("UID"),
                    _ => None,
                };
                match (short, atv.as_str()) {
                    (Some(short), Ok(value)) => format!("{short}={}", escape_rfc4514(value)),
                    _ => {
                        let value = atv.attr_value();
                        let mut der = Vec::new();
                        der.push(value.header.tag().0 as u8);
                        push_der_len(&mut der, value.data.len());
                        der.extend_from_slice(value.data);
                        let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
                        format!("{oid}=#{hex}")
                    }
                }
            })
            .collect();
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

fn push_der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
}

fn escape_rfc4514(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == ' ' || c == '#'))
            || (i == last && c == ' ');
        if c == '\0' {
            out.push_str("\\00");
            continue;
        }
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Client verification plus `tls.allowed_clients`: a verified certificate is accepted
/// only when its subject (RFC 4514) or one of its SANs is listed (DNS names compared
/// case-insensitively). A refusal is a handshake failure the client sees as an alert.
#[derive(Debug)]
struct AllowList {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl AllowList {
    fn permits(&self, subject: &str, sans: &[String]) -> bool {
        self.allowed
            .iter()
            .any(|a| a == subject || sans.iter().any(|s| s == a || s.eq_ignore_ascii_case(a)))
    }
}

impl ClientCertVerifier for AllowList {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let (subject, sans) = identity(end_entity);
        if self.permits(&subject, &sans) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

// ---------------------------------------------------------------------------------------
// The client side, for `lumberd send`.

/// How `lumberd send` verifies the endpoint and identifies itself.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// CA certificates to verify the server with; the system's roots when `None`.
    pub ca: Option<PathBuf>,
    /// Client certificate chain and key, for servers with client_auth.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name to verify the certificate against; the host of `--host` when `None`.
    pub server_name: Option<String>,
    /// Accept any server certificate (still encrypted, not authenticated).
    pub insecure: bool,
}

impl ClientTls {
    /// The rustls client config and the name to verify, for connecting to `host`.
    pub fn config(&self, host: &str) -> Result<(Arc<ClientConfig>, ServerName<'static>), TlsError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions(TlsVersion::Tls12))?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider.clone())))
        } else {
            let mut roots = RootCertStore::empty();
            match &self.ca {
                Some(path) => {
                    for ca in certs(&read("--tls-ca", path)?, "--tls-ca", path)? {
                        roots.add(ca).map_err(|e| TlsError::ClientCa {
                            path: path.display().to_string(),
                            detail: e.to_string(),
                        })?;
                    }
                }
                None => {
                    for ca in rustls_native_certs::load_native_certs().certs {
                        let _ = roots.add(ca);
                    }
                }
            }
            builder.with_root_certificates(roots)
        };
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = certs(&read("--tls-cert", cert)?, "--tls-cert", cert)?;
                let key = private_key(&read("--tls-key", key)?, None, key)?;
                builder.with_client_auth_cert(chain, key)?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::UnsupportedKey {
                    path: "--tls-cert/--tls-key".into(),
                    detail: "give both a client certificate and its key, or neither".into(),
                })
            }
        };
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| host_part(host).to_string());
        let name = ServerName::try_from(name.clone()).map_err(|_| TlsError::Pem {
            what: "--tls-server-name",
            path: name,
            detail: "not a DNS name or IP address".into(),
        })?;
        Ok((Arc::new(config), name))
    }
}

/// `host` of `host:port` or `[v6]:port`.
fn host_part(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// `--tls-insecure`: any certificate is accepted; handshake signatures are still checked
/// so the session is at least bound to the certificate presented.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(dn: &[(rcgen::DnType, &str)], sans: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn subject_is_rfc_4514_with_special_characters_escaped_and_sans_of_every_kind_listed() {
        let der = cert_with(
            &[
                (rcgen::DnType::CommonName, " lead, \"quoted\"+plus "),
                (rcgen::DnType::OrganizationName, "#Acme;Logs"),
            ],
            &["fb.example", "10.0.0.7", "::1"],
        );
        let (subject, sans) = identity(&der);
        assert_eq!(
            subject, r#"O=\#Acme\;Logs,CN=\ lead\, \"quoted\"\+plus\ "#,
            "last RDN first, RFC 4514 escapes"
        );
        assert_eq!(sans, vec!["fb.example", "10.0.0.7", "::1"]);
    }

    #[test]
    fn first_byte_names_plain_beats_http_and_other_garbage_and_lets_tls_through() {
        assert_eq!(HandshakeFailure::from_first_byte(0x16), None);
        assert_eq!(
            HandshakeFailure::from_first_byte(b'2'),
            Some(HandshakeFailure::PlainBeats)
        );
        assert_eq!(
            HandshakeFailure::from_first_byte(b'1'),
            Some(HandshakeFailure::PlainBeats)
        );
        for b in [b'G', b'P', b'H'] {
            assert_eq!(
                HandshakeFailure::from_first_byte(b),
                Some(HandshakeFailure::Http)
            );
        }
        assert_eq!(
            HandshakeFailure::from_first_byte(0x00),
            Some(HandshakeFailure::NotTls)
        );
    }

    #[test]
    fn handshake_errors_map_to_fixed_reasons() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let cases = [
            (
                rustls::Error::NoCertificatesPresented,
                "client_cert_missing",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "client_cert_untrusted",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                "client_cert_expired",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure),
                "client_not_allowed",
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
                "client_rejected_server_cert",
            ),
        ];
        for (err, label) in cases {
            assert_eq!(HandshakeFailure::from_io(&io(err)).label(), label);
        }
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(HandshakeFailure::from_io(&reset), HandshakeFailure::Io);
    }

    #[test]
    fn counters_count_each_reason_separately_and_labels_are_unique() {
        let c = TlsCounters::default();
        assert_eq!(c.handshake_failed(HandshakeFailure::Http), 1);
        assert_eq!(c.handshake_failed(HandshakeFailure::Http), 2);
        assert_eq!(c.handshake_failed(HandshakeFailure::Timeout), 1);
        c.handshake_ok();
        let s = c.snapshot();
        assert_eq!(s.handshakes_ok, 1);
        assert!(s.handshakes_failed.contains(&(HandshakeFailure::Http, 2)));
        let mut labels: Vec<_> = HandshakeFailure::ALL.iter().map(|r| r.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), HandshakeFailure::ALL.len());
    }

    #[test]
    fn legacy_encrypted_pem_is_refused_with_the_conversion_command() {
        let pem = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let err = private_key(pem, None, Path::new("k.pem")).unwrap_err();
        assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
    }
}
