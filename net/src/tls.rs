//! Mutual TLS 1.3 between mesh nodes with libp2p-style certificates and our own verifiers.
//!
//! Why not libp2p-tls's stock configs: they put ChaCha20-Poly1305 first, which cost about a
//! third of QUIC throughput on AES-NI machines (see DEPENDENCIES.md). We keep its certificate
//! format (`certificate::generate` / `parse`) and build the rustls configs ourselves with the
//! provider's default cipher order (AES-GCM first), one crypto backend (aws-lc-rs), and no key
//! log. A client pins the PeerId it expects; a server accepts any well-formed libp2p
//! certificate and learns the client's PeerId, and the trust decision is made above TLS, where
//! it can be logged and answered with an error code.
//!
//! The same endpoint serves players over HTTP/3 (ALPN `h3`). Players have no libp2p identity,
//! so a client certificate is offered but not required at the TLS layer; the mesh refuses a
//! connection without one right after the handshake. Players pin the SHA-256 of the
//! certificate's SubjectPublicKeyInfo, which steering hands them; an operator may give a real
//! certificate for `h3` instead (`--tls-cert`/`--tls-key`).

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
    /// The node's libp2p certificate could not be generated, or the operator's certificate
    /// or key (PEM) could not be read or holds no certificate; carries the reason.
    #[error("cannot generate the node's certificate: {0}")]
    Certificate(String),
    /// rustls refused a key (an unsupported key type, say) or a configuration.
    #[error("TLS configuration")]
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
    /// What players see on `h3`: the operator's certificate, or the node's own.
    player_key: Arc<CertifiedKey>,
    peer_id: PeerId,
    provider: Arc<CryptoProvider>,
}

impl TlsIdentity {
    /// The identity of `keypair`: a libp2p certificate for a fresh certificate key (a new one
    /// each call) that `keypair` signs, shown to peers and, until
    /// [`TlsIdentity::with_player_certificate`], to players.
    pub fn new(keypair: &Keypair) -> Result<Self, TlsError> {
        let provider = provider();
        let (cert, key) =
            libp2p_tls::certificate::generate(keypair).map_err(|e| TlsError::Certificate(e.to_string()))?;
        let signer = provider.key_provider.load_private_key(key)?;
        let key = Arc::new(CertifiedKey::new(vec![cert], signer));
        Ok(Self { player_key: key.clone(), key, peer_id: keypair.public().to_peer_id(), provider })
    }

    /// Presents `chain` (leaf first, PEM) with `key` (PEM) to players instead of the node's
    /// own certificate.
    pub fn with_player_certificate(mut self, chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        use rustls::pki_types::pem::PemObject;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Certificate(format!("certificate file: {e}")))?;
        if chain.is_empty() {
            return Err(TlsError::Certificate("the certificate file holds no certificate".into()));
        }
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| TlsError::Certificate(format!("key file: {e}")))?;
        let signer = self.provider.key_provider.load_private_key(key)?;
        self.player_key = Arc::new(CertifiedKey::new(chain, signer));
        Ok(self)
    }

    /// SHA-256 of the SubjectPublicKeyInfo of the certificate players see: what they pin.
    pub fn player_spki_sha256(&self) -> Option<[u8; 32]> {
        self.player_key.cert.first().and_then(spki_sha256)
    }

    /// The PeerId of the keypair: what the certificate proves to peers.
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
            .with_cert_resolver(Arc::new(ByAlpn { mesh: self.key.clone(), player: self.player_key.clone() }));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.max_early_data_size = 0;
        Ok(config)
    }

    /// Players' HTTPS on TCP: the player certificate, no client certificate, ALPN `h2` then
    /// `http/1.1`, TLS 1.3 and 1.2 (as browsers and ordinary clients offer).
    pub fn player_tcp_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Always(self.player_key.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
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

/// A client config for players: TLS 1.3, ALPN `h3`, and a server whose certificate's
/// SubjectPublicKeyInfo hashes to `pin` (whatever issued it).
pub fn player_client_config(pin: [u8; 32]) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedSpki { pin, provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h3".to_vec()];
    config.enable_early_data = false;
    Ok(config)
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo.
pub fn spki_sha256(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    use sha2::Digest;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(sha2::Sha256::digest(parsed.tbs_certificate.subject_pki.raw).into())
}

/// The PeerId in a libp2p certificate chain as the TLS layer handed it over.
pub fn peer_id_of_chain(chain: &[CertificateDer<'_>]) -> Option<PeerId> {
    let [cert] = chain else { return None };
    libp2p_tls::certificate::parse(cert).ok().map(|c| c.peer_id())
}

#[derive(Debug)]
struct AlwaysOurs(Arc<CertifiedKey>);

/// One certificate whatever the client asks for.
#[derive(Debug)]
struct Always(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Always {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The node's own certificate on the mesh, the player certificate on `h3`.
#[derive(Debug)]
struct ByAlpn {
    mesh: Arc<CertifiedKey>,
    player: Arc<CertifiedKey>,
}

impl rustls::server::ResolvesServerCert for ByAlpn {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mesh = hello.alpn().is_some_and(|mut offered| offered.any(|p| p == fillmesh_protocol::ALPN));
        Some(if mesh { self.mesh.clone() } else { self.player.clone() })
    }
}

/// Accepts exactly the server whose SPKI hashes to the pin; signatures are checked with the
/// libp2p certificate parser (which knows its critical extension) or, for ordinary
/// certificates, with the provider's own verification.
#[derive(Debug)]
struct PinnedSpki {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedSpki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if spki_sha256(end_entity) == Some(self.pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
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
        if let Ok(p2p) = libp2p_tls::certificate::parse(cert) {
            p2p.verify_signature(dss.scheme, message, dss.signature())
                .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
            return Ok(HandshakeSignatureValid::assertion());
        }
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
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
        // Players (h3) have no certificate; the mesh refuses such connections itself.
        false
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
