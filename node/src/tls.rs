//! Mutual TLS 1.3 between mesh nodes with libp2p-style certificates and our own verifiers.
//!
//! Why not libp2p-tls's stock configs: they put ChaCha20-Poly1305 first, which cost about a
//! third of QUIC throughput on AES-NI machines (see DEPENDENCIES.md). We keep its certificate
//! format (`certificate::generate` / `parse`) and build the rustls configs ourselves with the
//! provider's default cipher order (AES-GCM first), one crypto backend (aws-lc-rs), and no key
//! log. A client pins the PeerId it expects; a server accepts any well-formed libp2p
//! certificate and learns the client's PeerId, and the trust decision is made above TLS, where
//! it can be logged and answered with an error code.

use std::sync::Arc;

use libp2p_identity::{Keypair, PeerId};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The server name a client presents; verifiers ignore it (PeerIds, not names, are checked).
pub const SERVER_NAME: &str = "fillmesh.invalid";

/// Why TLS material could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate the node's certificate: {0}")]
    Certificate(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The process's one crypto provider: aws-lc-rs with its default (AES-GCM first) suites.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A node's certificate and signing key, and the configs built from them.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    key: Arc<CertifiedKey>,
    peer_id: PeerId,
    provider: Arc<CryptoProvider>,
}

impl TlsIdentity {
    pub fn new(keypair: &Keypair) -> Result<Self, TlsError> {
        let provider = provider();
        let (cert, key) =
            libp2p_tls::certificate::generate(keypair).map_err(|e| TlsError::Certificate(e.to_string()))?;
        let signer = provider.key_provider.load_private_key(key)?;
        Ok(Self {
            key: Arc::new(CertifiedKey::new(vec![cert], signer)),
            peer_id: keypair.public().to_peer_id(),
            provider,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Server side: TLS 1.3 only, client certificate required, any of `alpn` accepted.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(PeerVerifier {
                expected: None,
                provider: self.provider.clone(),
            }))
            .with_cert_resolver(Arc::new(AlwaysOurs(self.key.clone())));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.max_early_data_size = 0;
        Ok(config)
    }

    /// Client side: TLS 1.3 only, the server must prove it is `expected`.
    pub fn client_config(&self, expected: PeerId, alpn: &[u8]) -> Result<rustls::ClientConfig, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerVerifier {
                expected: Some(expected),
                provider: self.provider.clone(),
            }))
            .with_client_cert_resolver(Arc::new(AlwaysOurs(self.key.clone())));
        config.alpn_protocols = vec![alpn.to_vec()];
        config.enable_early_data = false;
        Ok(config)
    }
}

/// The PeerId in a libp2p certificate chain as the TLS layer handed it over.
pub fn peer_id_of_chain(chain: &[CertificateDer<'_>]) -> Option<PeerId> {
    let [cert] = chain else { return None };
    libp2p_tls::certificate::parse(cert).ok().map(|c| c.peer_id())
}

#[derive(Debug)]
struct AlwaysOurs(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for AlwaysOurs {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl rustls::client::ResolvesClientCert for AlwaysOurs {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks a peer's libp2p certificate (self-signed, carrying a signature by the peer's
/// identity key over the certificate key) and, on the client side, the PeerId it names.
#[derive(Debug)]
struct PeerVerifier {
    expected: Option<PeerId>,
    provider: Arc<CryptoProvider>,
}

impl PeerVerifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General(
                "a libp2p certificate chain has exactly one certificate".into(),
            ));
        }
        let cert = libp2p_tls::certificate::parse(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
        match self.expected {
            Some(expected) if cert.peer_id() != expected => {
                Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
            }
            _ => Ok(()),
        }
    }

    fn signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let cert = libp2p_tls::certificate::parse(cert)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
        cert.verify_signature(dss.scheme, message, dss.signature())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
        Ok(HandshakeSignatureValid::assertion())
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        // What libp2p certificates use and `P2pCertificate::verify_signature` checks, in the
        // provider's preference order.
        const LIBP2P: [SignatureScheme; 5] = [
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256,
        ];
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
            .into_iter()
            .filter(|s| LIBP2P.contains(s))
            .collect()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}
