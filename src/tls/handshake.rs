//! What a failed handshake is called: fixed labels (for log lines and metrics) and the
//! wording of each failure, first-byte sniffing included. Knows no sockets.

use std::fmt;
use std::time::Duration;

use rustls::CertificateError;

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

    /// The fixed label: the log line's `reason=` and the metric's label value.
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

    /// What the first byte of a connection says before any TLS parsing: `None` for a TLS
    /// handshake record (0x16), the kind of garbage otherwise (docs/PROTOCOL.md rule 7).
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

impl HandshakeError {
    /// What the first byte of a connection says before rustls parses anything, so that a
    /// plain Beats client or an HTTP request is named as such (docs/PROTOCOL.md rule 7): `None`
    /// for a TLS handshake record, the failure otherwise.
    pub fn sniff(first: u8) -> Option<HandshakeError> {
        let reason = HandshakeFailure::from_first_byte(first)?;
        let detail = match reason {
            HandshakeFailure::PlainBeats => {
                "a plain Beats client on the TLS port (enable ssl in the client's output.logstash)"
            }
            HandshakeFailure::Http => "an HTTP request on the TLS Beats port",
            _ => "not a TLS ClientHello",
        };
        Some(HandshakeError {
            reason,
            detail: format!("{detail} (first byte 0x{first:02x})"),
        })
    }

    /// No complete handshake within `tls.handshake_timeout`.
    pub fn timed_out(limit: Duration) -> HandshakeError {
        HandshakeError {
            reason: HandshakeFailure::Timeout,
            detail: format!("no complete handshake within tls.handshake_timeout ({limit:?})"),
        }
    }

    /// The connection failed before its first byte could be read.
    pub fn io(error: &std::io::Error) -> HandshakeError {
        HandshakeError {
            reason: HandshakeFailure::Io,
            detail: error.to_string(),
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn sniffing_names_what_came_instead_of_a_client_hello() {
        assert!(
            HandshakeError::sniff(0x16).is_none(),
            "a TLS record goes to rustls"
        );
        let plain = HandshakeError::sniff(b'2').unwrap();
        assert_eq!(plain.reason, HandshakeFailure::PlainBeats);
        assert_eq!(
            plain.detail,
            "a plain Beats client on the TLS port (enable ssl in the client's output.logstash) \
             (first byte 0x32)"
        );
        let http = HandshakeError::sniff(b'G').unwrap();
        assert_eq!(
            (http.reason, http.detail.as_str()),
            (
                HandshakeFailure::Http,
                "an HTTP request on the TLS Beats port (first byte 0x47)"
            )
        );
        let other = HandshakeError::sniff(0x00).unwrap();
        assert_eq!(other.detail, "not a TLS ClientHello (first byte 0x00)");
        assert_eq!(
            HandshakeError::timed_out(Duration::from_secs(10)).to_string(),
            "no complete handshake within tls.handshake_timeout (10s)"
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
    fn labels_are_unique() {
        let mut labels: Vec<_> = HandshakeFailure::ALL.iter().map(|r| r.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), HandshakeFailure::ALL.len());
    }
}
