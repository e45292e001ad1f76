//! TLS on the node link: both ends prove themselves with a certificate the cluster's CA signed (mutual TLS), on
//! top of the cookie. The home's acceptor refuses a node without such a certificate; a worker checks the home's
//! certificate names the address it dialled.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::ClusterError;
use crate::settings::ClusterSettings;

/// One provider named explicitly: more than one is built into this binary, so rustls would not pick.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider())
}

fn bad(what: &str, path: &Path, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Config(format!("cluster.{what} {}: {e}", path.display()))
}

fn chain(c: &ClusterSettings) -> Result<Vec<CertificateDer<'static>>, ClusterError> {
    let certs = CertificateDer::pem_file_iter(&c.tls_cert)
        .map_err(|e| bad("tls_cert", &c.tls_cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("tls_cert", &c.tls_cert, e))?;
    if certs.is_empty() {
        return Err(bad("tls_cert", &c.tls_cert, "holds no certificate"));
    }
    Ok(certs)
}

fn key(c: &ClusterSettings) -> Result<PrivateKeyDer<'static>, ClusterError> {
    PrivateKeyDer::from_pem_file(&c.tls_key).map_err(|e| bad("tls_key", &c.tls_key, e))
}

fn roots(c: &ClusterSettings) -> Result<Arc<RootCertStore>, ClusterError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&c.tls_ca).map_err(|e| bad("tls_ca", &c.tls_ca, e))? {
        let cert = cert.map_err(|e| bad("tls_ca", &c.tls_ca, e))?;
        roots.add(cert).map_err(|e| bad("tls_ca", &c.tls_ca, e))?;
    }
    if roots.is_empty() {
        return Err(bad("tls_ca", &c.tls_ca, "holds no certificate"));
    }
    Ok(Arc::new(roots))
}

/// The home's acceptor: its certificate, and client certificates required, checked against the CA.
pub fn acceptor(c: &ClusterSettings) -> Result<TlsAcceptor, ClusterError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(c)?, provider())
        .build()
        .map_err(|e| bad("tls_ca", &c.tls_ca, e))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClusterError::Config(format!("TLS: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(c)?, key(c)?)
        .map_err(|e| bad("tls_key", &c.tls_key, e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A worker's connector and the name the home's certificate must carry (the IP address it dials).
pub fn connector(
    c: &ClusterSettings,
    home: std::net::SocketAddr,
) -> Result<(TlsConnector, ServerName<'static>), ClusterError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClusterError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots(c)?)
        .with_client_auth_cert(chain(c)?, key(c)?)
        .map_err(|e| bad("tls_key", &c.tls_key, e))?;
    Ok((
        TlsConnector::from(Arc::new(config)),
        ServerName::IpAddress(home.ip().into()),
    ))
}
