//! TLS for `lumberd send`: verify the endpoint as Filebeat would, present a
//! client certificate, or (`--tls-insecure`) accept any certificate.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::tls::pem::{certs, private_key};
use crate::tls::settings::TlsVersion;
use crate::tls::{provider, read, versions, TlsError};

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
pub(super) fn host_part(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// `--tls-insecure`: any certificate is accepted; handshake signatures are still checked
/// so the session is at least bound to the certificate presented.
#[derive(Debug)]
pub(super) struct AnyServerCert(Arc<CryptoProvider>);

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
