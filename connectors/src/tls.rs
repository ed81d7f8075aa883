//! TLS to the servers sources and sinks talk to (PostgreSQL, MQTT brokers, the run catalog):
//! `tls = { mode = "verify-full", ca = "/etc/ssl/db-ca.pem" }`, with rustls (ring), as libpq
//! names the modes:
//! - `disable` (the default): plain TCP;
//! - `require`: encrypted, the server's certificate not checked (only against eavesdropping);
//! - `verify-ca`: encrypted, the certificate must chain to `ca` (or the system's roots);
//! - `verify-full`: as `verify-ca`, and the certificate must name the host connected to.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP.
    #[default]
    Disable,
    /// Encrypted; the server's certificate is not checked.
    Require,
    /// Encrypted; the certificate chains to a trusted CA.
    VerifyCa,
    /// Encrypted; the certificate chains to a trusted CA and names the host.
    VerifyFull,
}

impl std::str::FromStr for TlsMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "disable" => Ok(Self::Disable),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            other => Err(Error::Config(format!(
                "TLS mode '{other}' is not known; use disable, require, verify-ca or verify-full"
            ))),
        }
    }
}

/// `tls = { mode, ca }` of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// `disable`, `require`, `verify-ca` or `verify-full` (default `verify-full` once `tls` is
    /// given).
    #[serde(default = "verify_full")]
    pub mode: TlsMode,
    /// PEM file of the CA certificates to trust (default: the system's roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

fn verify_full() -> TlsMode {
    TlsMode::VerifyFull
}

impl TlsOptions {
    /// The rustls client settings, or None for plain TCP; `key` names the setting in errors.
    pub fn client_config(&self, key: &str) -> Result<Option<Arc<rustls::ClientConfig>>> {
        if self.mode == TlsMode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = self.roots(key)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("{key}: {e}")))?;
        let config = match self.mode {
            TlsMode::VerifyFull => builder.with_root_certificates(roots).with_no_client_auth(),
            mode => {
                let chain = match mode {
                    TlsMode::VerifyCa => Some(
                        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                            .build()
                            .map_err(|e| Error::Config(format!("{key}: {e}")))?,
                    ),
                    _ => None,
                };
                let verifier = Relaxed { chain, algorithms: provider.signature_verification_algorithms };
                builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
            }
        };
        Ok(Some(Arc::new(config)))
    }

    fn roots(&self, key: &str) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        match &self.ca {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| Error::Config(format!("{key}.ca: cannot read CA certificates from {}: {e}", path.display())))?;
                if certs.is_empty() {
                    return Err(Error::Config(format!("{key}.ca: {} holds no PEM certificate", path.display())));
                }
                let (_, ignored) = roots.add_parsable_certificates(certs);
                if roots.is_empty() {
                    return Err(Error::Config(format!(
                        "{key}.ca: none of the {ignored} certificates in {} can be used as a CA",
                        path.display()
                    )));
                }
            }
            None if self.mode != TlsMode::Require => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(Error::Config(format!(
                        "{key}: this machine has no system CA certificates; give the server's CA with ca = \"/path/ca.pem\""
                    )));
                }
            }
            None => {}
        }
        Ok(roots)
    }
}

/// `require` (no chain) and `verify-ca` (a chain, any host name): the handshake's signatures are
/// always checked.
#[derive(Debug)]
struct Relaxed {
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Relaxed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The same settings for mysql_async (which builds its own rustls client): roots from `ca`
/// (else the webpki roots), nothing checked with `require`. `verify-ca` is refused: mysql_async
/// 0.36 recognises a wrong host name only by an error text rustls 0.23 no longer writes, so it
/// would check the name anyway. None for plain TCP.
pub fn mysql_ssl(options: &TlsOptions, key: &str) -> Result<Option<mysql_async::SslOpts>> {
    // mysql_async asks rustls for the process's default provider: make it ring, as everywhere.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ssl = match options.mode {
        TlsMode::Disable => return Ok(None),
        TlsMode::Require => mysql_async::SslOpts::default().with_danger_accept_invalid_certs(true),
        TlsMode::VerifyCa => {
            return Err(Error::Config(format!(
                "{key}: mode = \"verify-ca\" is not available for MySQL/MariaDB (the driver checks the host name \
                 whenever it checks the certificate); use verify-full with a host name the certificate holds, or require"
            )));
        }
        TlsMode::VerifyFull => mysql_async::SslOpts::default(),
    };
    Ok(Some(match &options.ca {
        Some(path) => {
            options.roots(key)?;
            ssl.with_root_certs(vec![path.clone().into()])
        }
        None => ssl,
    }))
}
