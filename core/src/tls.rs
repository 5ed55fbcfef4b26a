//! rustls configurations: the server side presented to clients (`[tls]`) and the
//! client side used towards upstreams (`upstream_tls`).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use sluice_config::{Target, Tls, UpstreamTls};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configuration from `[tls]`.
pub fn server_config(tls: &Tls) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| format!("tls.cert {}: {e}", tls.cert))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert {}: {e}", tls.cert))?;
    if certs.is_empty() {
        return Err(format!("tls.cert {}: no certificates", tls.cert));
    }
    let key =
        PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| format!("tls.key {}: {e}", tls.key))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: {e}"))?;
    Ok(Arc::new(config))
}

/// The client configuration for one target's upstream, or `None` for plain TCP.
pub fn upstream_config(target: &Target) -> Result<Option<Arc<ClientConfig>>, String> {
    client_config(
        target.upstream_tls,
        target.upstream_ca.as_deref(),
        "upstream_ca",
    )
}

/// A client configuration for `tls` (`ca`, named `ca_key` in errors, holds
/// the trusted CAs for `verify`), or `None` for plain TCP.
pub fn client_config(
    tls: UpstreamTls,
    ca: Option<&str>,
    ca_key: &str,
) -> Result<Option<Arc<ClientConfig>>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match tls {
        UpstreamTls::Disable => return Ok(None),
        UpstreamTls::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
        UpstreamTls::Verify => {
            let path = ca.unwrap_or_default();
            let mut roots = RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(path).map_err(|e| format!("{ca_key} {path}: {e}"))?
            {
                let cert = cert.map_err(|e| format!("{ca_key} {path}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{ca_key} {path}: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

/// The server name to check an upstream certificate against (the host of `host:port`).
pub fn server_name(upstream: &str) -> Result<ServerName<'static>, String> {
    let host = upstream.rsplit_once(':').map_or(upstream, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))
}

/// `upstream_tls = "require"`: encrypt, but accept any certificate (like libpq's
/// `sslmode=require`). Handshake signatures are still verified, so the session
/// keys belong to whoever holds the presented certificate's key.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        verify_tls12_signature(
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
        verify_tls13_signature(
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
