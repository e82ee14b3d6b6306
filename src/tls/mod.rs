//! The one place TLS policy is decided: which certificate and key are served (and when a
//! rotated pair replaces them), which protocol versions, how clients are verified, what a
//! failed handshake is called, and what the pipeline learns about a verified client.
//! Knows no sockets: it works on any byte stream, and on the files named in `[tls]`.
//!
//! rustls with the `ring` provider. Keys: PKCS#8, PKCS#1 (RSA), SEC1 (EC) and encrypted
//! PKCS#8 (PBES2), because users move their Logstash/Filebeat files over unchanged.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use self::settings::{ClientAuth, Passphrase, TlsSettings, TlsVersion};
use crate::record::TlsPeer;

mod handshake;
mod identity;
pub(crate) mod pem;
pub mod settings;

pub use handshake::{HandshakeError, HandshakeFailure};
use identity::{identity, AllowList};
use pem::{certs, check_validity, private_key, summarise};

pub(crate) fn provider() -> Arc<CryptoProvider> {
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

/// The TLS side of the listener: the current server config (replaced on rotation) and
/// the handshake policy.
pub struct TlsServer {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
    state: Mutex<ReloadState>,
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
    /// `not_after` as Unix seconds (0 when unknown), for the expiry metric.
    pub not_after_unix: i64,
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
            not_after_unix: 0,
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
    /// that matters once and handing every outcome to `report` (the metrics).
    pub async fn watch(self: Arc<Self>, stop: CancellationToken, report: impl Fn(&Reload)) {
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
            report(&outcome);
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

pub(crate) fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
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

pub(crate) fn versions(min: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
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
    Ok(Arc::new(AllowList::new(
        verifier,
        s.allowed_clients.clone(),
    )))
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
