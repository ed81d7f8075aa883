//! The network surfaces of `sluice serve`: Arrow Flight SQL and the Flight data plane
//! ([`flight`]), behind users and roles ([`auth`]), optionally over TLS, and the web console
//! ([`console`]); the command's arguments are in [`cli`].

pub mod auth;
pub mod cli;
pub mod flight;
pub mod console;
pub mod predict;

pub use sluice_catalog::{Error, Result, error};

use std::future::Future;
use std::path::Path;

use arrow_flight::flight_service_server::FlightServiceServer;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use auth::{Access, AccessConfig, Permission, Principal, Role};
pub use flight::{FlightServer, Launch};


/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The certificate chain.
    pub cert: std::path::PathBuf,
    /// The private key.
    pub key: std::path::PathBuf,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(Error::io(format!("reading the TLS {what} {}", path.display())))
}

/// Picks rustls' ring provider for this process (the dependency tree enables two, so rustls
/// cannot choose one itself). Idempotent.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Serves `server` on `listener` (TLS when `tls` is given) until `shutdown` resolves.
pub async fn serve_flight(
    listener: tokio::net::TcpListener,
    tls: Option<&Tls>,
    server: FlightServer,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        install_crypto();
        let identity = Identity::from_pem(read(&tls.cert, "certificate")?, read(&tls.key, "key")?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::Invalid(format!("TLS certificate {} or key {}: {e}", tls.cert.display(), tls.key.display())))?;
    }
    // Results of large queries and uploads exceed tonic's 4 MiB default message size.
    let service = FlightServiceServer::new(server).max_decoding_message_size(256 << 20).max_encoding_message_size(256 << 20);
    builder
        .add_service(service)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
        .map_err(|e| Error::Invalid(format!("the Flight server stopped: {e}")))
}
