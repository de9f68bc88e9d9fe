//! TLS client (to the pool, or to an `https://` proxy) with rustls on the `ring` provider.
//!
//! rustls + ring: builds for 32-bit MIPS/ARM musl (ring has portable C fallbacks), no
//! OpenSSL to ship, and the handshake code is shared with nothing else in the binary.
//! Certificates are checked against a PEM bundle (SSL_CERT_FILE, else the path Debian
//! and OpenWrt's `ca-bundle` use) unless `advanced.tls_skip_certificate_verify`.

pub use imp::*;

/// Built without the `tls` feature: TLS settings are refused at startup.
#[cfg(not(feature = "tls"))]
mod imp {
    use super::super::error::FailureReason;
    use super::super::PoolStream;
    use std::io;
    use std::sync::Arc;

    pub type TlsConfig = ();

    pub fn client_config(
        _skip_verify: bool,
        _ssl_cert_file: Option<String>,
    ) -> Result<Arc<TlsConfig>, String> {
        Err(
            "this btcagent was built without TLS (cargo feature \"tls\"): \
             pool_use_tls and https:// proxies are unavailable"
                .into(),
        )
    }

    pub async fn connect(
        _: &Arc<TlsConfig>,
        _: &str,
        _: PoolStream,
    ) -> Result<PoolStream, FailureReason> {
        Err(FailureReason::Protocol("built without TLS".into()))
    }

    pub fn classify(_: &io::Error) -> Option<FailureReason> {
        None
    }
}

#[cfg(feature = "tls")]
mod imp {
    use super::super::error::FailureReason;
    use super::super::PoolStream;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
    use std::io;
    use std::sync::Arc;

    pub type TlsConfig = ClientConfig;

    /// Where Debian (ca-certificates) and OpenWrt (ca-bundle) keep the system roots.
    pub const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

    /// Builds the client config. `ssl_cert_file` is the value of SSL_CERT_FILE, which,
    /// as with OpenSSL, replaces the default bundle.
    pub fn client_config(
        skip_verify: bool,
        ssl_cert_file: Option<String>,
    ) -> Result<Arc<ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let config = if skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let path = ssl_cert_file
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| DEFAULT_CA_BUNDLE.to_string());
            builder
                .with_root_certificates(load_roots(&path)?)
                .with_no_client_auth()
        };
        Ok(Arc::new(config))
    }

    fn load_roots(path: &str) -> Result<RootCertStore, String> {
        let hint = "needed because advanced.tls_skip_certificate_verify is false; \
                install ca-certificates (OpenWrt: ca-bundle) or set SSL_CERT_FILE";
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("CA bundle {path}: {e} ({hint})"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("CA bundle {path}: {e}"))?;
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("CA bundle {path}: no usable certificate ({hint})"));
        }
        log::debug!("loaded {added} CA certificates from {path}");
        Ok(roots)
    }

    /// TLS handshake over `stream` with SNI (and the name checked) = `host`.
    pub async fn connect(
        config: &Arc<ClientConfig>,
        host: &str,
        stream: PoolStream,
    ) -> Result<PoolStream, FailureReason> {
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            FailureReason::Protocol(format!("\"{host}\" is not a valid TLS server name"))
        })?;
        let tls = futures_rustls::TlsConnector::from(config.clone())
            .connect(name, stream)
            .await?;
        Ok(Box::new(tls))
    }

    /// Recognises rustls errors inside an `io::Error` so the operator reads
    /// "certificate error: ..." rather than a generic I/O failure.
    pub fn classify(e: &io::Error) -> Option<FailureReason> {
        let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(match tls {
            rustls::Error::InvalidCertificate(why) => FailureReason::Certificate(why.to_string()),
            other => FailureReason::Protocol(format!("TLS: {other}")),
        })
    }

    /// `tls_skip_certificate_verify`: any certificate is taken, but the handshake
    /// signatures are still checked so the session keys belong to whoever sent it.
    #[derive(Debug)]
    struct AcceptAnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCertificate {
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
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;
    use crate::upstream::error::FailureReason;
    use std::io;

    #[test]
    fn missing_bundle_is_a_clear_error() {
        let err = client_config(false, Some("/nonexistent/ca.pem".into())).unwrap_err();
        assert!(
            err.contains("/nonexistent/ca.pem") && err.contains("SSL_CERT_FILE"),
            "{err}"
        );
        assert!(client_config(true, Some("/nonexistent/ca.pem".into())).is_ok());
    }

    #[test]
    fn bundle_without_certificates_is_refused() {
        let path =
            std::env::temp_dir().join(format!("btcagent-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(false, Some(path.display().to_string())).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(err.contains("no usable certificate"), "{err}");
    }

    #[test]
    fn classifies_certificate_errors() {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(
            classify(&e),
            Some(FailureReason::Certificate("UnknownIssuer".into()))
        );
        assert_eq!(classify(&io::Error::other("x")), None);
    }
}
