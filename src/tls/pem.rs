//! Reading the PEM files: certificate chains, private keys in their four accepted forms
//! (PKCS#8, PKCS#1, SEC1, encrypted PKCS#8), and the validity dates of a certificate.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::identity::rfc4514;
use super::{CertSummary, TlsError};

/// Every CERTIFICATE block of a PEM file, at least one.
pub(crate) fn certs(
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
pub(crate) fn private_key(
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
pub(crate) struct PemSection(Option<PrivateKeyDer<'static>>);

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
pub(super) fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = text[start..].find(&end)? + start + end.len();
    Some(&text[start..stop])
}

pub(super) fn check_validity(
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
        not_after_unix: validity.not_after.timestamp(),
    })
}

pub(super) fn summarise(
    cert: &CertificateDer<'_>,
) -> Result<CertSummary, x509_parser::nom::Err<x509_parser::error::X509Error>> {
    let (_, parsed) = X509Certificate::from_der(cert)?;
    Ok(CertSummary {
        subject: rfc4514(parsed.subject()),
        not_after: parsed.validity().not_after.to_string(),
        not_after_unix: parsed.validity().not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_encrypted_pem_is_refused_with_the_conversion_command() {
        let pem = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let err = private_key(pem, None, Path::new("k.pem")).unwrap_err();
        assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
    }
}
