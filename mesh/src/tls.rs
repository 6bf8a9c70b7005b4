//! TLS for the sidecar's ports, from upstream's settings (`MM_TLS_KEY_CERT_PATH`,
//! `MM_TLS_PRIVATE_KEY_PATH`, `MM_TLS_CLIENT_AUTH`, `MM_TLS_TRUST_CERT_PATH`): the external
//! gRPC port and REST use the key pair with the configured client authentication; the internal
//! hop between pods reuses the same key pair and always requires a client certificate, so
//! only pods of the mesh can call it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Whether clients must present a certificate (`MM_TLS_CLIENT_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificates asked for.
    #[default]
    None,
    /// Verified when presented, not required.
    Optional,
    /// Required and verified (mutual TLS).
    Require,
}

impl ClientAuth {
    /// Parses upstream's values (any case).
    pub fn parse(v: &str) -> Result<ClientAuth, TlsError> {
        match v.trim().to_ascii_uppercase().as_str() {
            "" | "NONE" => Ok(ClientAuth::None),
            "OPTIONAL" => Ok(ClientAuth::Optional),
            "REQUIRE" | "REQUIRED" => Ok(ClientAuth::Require),
            _ => Err(TlsError::Config(format!(
                "MM_TLS_CLIENT_AUTH '{v}' is not one of NONE, OPTIONAL, REQUIRE"
            ))),
        }
    }
}

/// Where the TLS material is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, PEM (`MM_TLS_KEY_CERT_PATH`).
    pub cert_chain: PathBuf,
    /// Private key, PEM: PKCS#8, PKCS#1 or SEC1, unencrypted (`MM_TLS_PRIVATE_KEY_PATH`).
    pub private_key: PathBuf,
    /// Client certificates (`MM_TLS_CLIENT_AUTH`).
    pub client_auth: ClientAuth,
    /// CA certificates clients (and peers) are verified against (`MM_TLS_TRUST_CERT_PATH`,
    /// comma-separated); empty: the certificate chain itself.
    pub trust: Vec<PathBuf>,
    /// Name peers verify this pod's certificate against; default: the certificate's first DNS
    /// name.
    pub internal_server_name: Option<String>,
}

/// TLS set-up failures; each names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The contents or the settings are not usable.
    #[error("{0}")]
    Config(String),
}

/// Loaded and checked TLS material.
#[derive(Clone)]
pub struct TlsConfig {
    chain_pem: Vec<u8>,
    key_pem: Vec<u8>,
    trust_pem: Vec<u8>,
    client_auth: ClientAuth,
    internal_name: String,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: Arc<rustls_pki_types::PrivateKeyDer<'static>>,
    trust: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl std::fmt::Debug for TlsConfig {
    // Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("certificates", &self.chain.len())
            .field("trusted", &self.trust.len())
            .field("client_auth", &self.client_auth)
            .field("internal_name", &self.internal_name)
            .finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn certs(
    what: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError::Config(format!("{what} {} is not valid PEM: {e}", path.display()))
        })?;
    if certs.is_empty() {
        return Err(TlsError::Config(format!(
            "{what} {} holds no CERTIFICATE block",
            path.display()
        )));
    }
    Ok(certs)
}

impl TlsConfig {
    /// Reads and checks the files: certificates parse, the key is a supported unencrypted
    /// key, and a name for peer verification exists.
    pub fn load(files: &TlsFiles) -> Result<TlsConfig, TlsError> {
        use rustls_pki_types::pem::PemObject;
        let chain_pem = read("MM_TLS_KEY_CERT_PATH", &files.cert_chain)?;
        let chain = certs("MM_TLS_KEY_CERT_PATH", &files.cert_chain, &chain_pem)?;
        let key_pem = read("MM_TLS_PRIVATE_KEY_PATH", &files.private_key)?;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            let hint = if String::from_utf8_lossy(&key_pem).contains("ENCRYPTED PRIVATE KEY") {
                "it is encrypted, which is not supported: decrypt it (openssl pkcs8 -topk8 -nocrypt) and keep it in a Secret".to_string()
            } else {
                format!("no PKCS#8, PKCS#1 or SEC1 private key found ({e})")
            };
            TlsError::Config(format!(
                "MM_TLS_PRIVATE_KEY_PATH {}: {hint}",
                files.private_key.display()
            ))
        })?;
        let (trust_pem, trust) = if files.trust.is_empty() {
            (chain_pem.clone(), chain.clone())
        } else {
            let (mut pem, mut all) = (Vec::new(), Vec::new());
            for p in &files.trust {
                // The controller lists `ca.crt` of the TLS secret, which is optional there.
                if !p.exists() {
                    tracing::warn!(path = %p.display(), "MM_TLS_TRUST_CERT_PATH: file not found, skipped");
                    continue;
                }
                let text = read("MM_TLS_TRUST_CERT_PATH", p)?;
                all.extend(certs("MM_TLS_TRUST_CERT_PATH", p, &text)?);
                pem.extend_from_slice(&text);
                pem.push(b'\n');
            }
            if all.is_empty() {
                let names: Vec<String> = files
                    .trust
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                return Err(TlsError::Config(format!(
                    "MM_TLS_TRUST_CERT_PATH: none of {} exists",
                    names.join(", ")
                )));
            }
            (pem, all)
        };
        let internal_name = match &files.internal_server_name {
            Some(n) if !n.is_empty() => n.clone(),
            _ => {
                let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| {
                    TlsError::Config(format!(
                        "MM_TLS_KEY_CERT_PATH {}: the first certificate does not parse: {e:?}",
                        files.cert_chain.display()
                    ))
                })?;
                leaf.valid_dns_names().next().map(str::to_string).ok_or_else(|| {
                    TlsError::Config(format!(
                        "MM_TLS_KEY_CERT_PATH {}: the certificate has no DNS name for pods to verify each other by; add one (e.g. modelmesh-serving.<namespace>) or set MM_TLS_INTERNAL_SERVER_NAME",
                        files.cert_chain.display()
                    ))
                })?
            }
        };
        // Fail now, not at the first connection, if rustls refuses the pair.
        let cfg = TlsConfig {
            chain_pem,
            key_pem,
            trust_pem,
            client_auth: files.client_auth,
            internal_name,
            chain,
            key: Arc::new(key),
            trust,
        };
        cfg.rest_acceptor()?;
        Ok(cfg)
    }

    /// The configured client authentication.
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    /// The name peers verify this pod's certificate against.
    pub fn internal_name(&self) -> &str {
        &self.internal_name
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.chain_pem, &self.key_pem)
    }

    /// Trust roots for the internal hop: the configured ones and this pod's own chain (pods of
    /// one mesh share the key pair).
    fn internal_roots(&self) -> Vec<u8> {
        let mut pem = self.trust_pem.clone();
        pem.push(b'\n');
        pem.extend_from_slice(&self.chain_pem);
        pem
    }

    /// The external gRPC port's server TLS.
    pub fn grpc_server(&self) -> ServerTlsConfig {
        let cfg = ServerTlsConfig::new()
            .identity(self.identity())
            .timeout(std::time::Duration::from_secs(10));
        match self.client_auth {
            ClientAuth::None => cfg,
            ClientAuth::Optional => cfg
                .client_ca_root(Certificate::from_pem(&self.trust_pem))
                .client_auth_optional(true),
            ClientAuth::Require => cfg.client_ca_root(Certificate::from_pem(&self.trust_pem)),
        }
    }

    /// The internal hop's server TLS: a client certificate is always required.
    pub fn internal_server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(self.internal_roots()))
            .timeout(std::time::Duration::from_secs(10))
    }

    /// TLS for this pod's calls to peers' internal ports.
    pub fn internal_client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.internal_roots()))
            .identity(self.identity())
            .domain_name(self.internal_name.clone())
    }

    /// A TLS acceptor for the REST port (HTTP/1.1 and h2), with the same client authentication
    /// as the gRPC port.
    pub fn rest_acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        use rustls::server::WebPkiClientVerifier;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = match self.client_auth {
            ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
            auth => {
                let mut roots = rustls::RootCertStore::empty();
                for c in &self.trust {
                    roots.add(c.clone()).map_err(|e| {
                        TlsError::Config(format!(
                            "MM_TLS_TRUST_CERT_PATH: a certificate cannot be a trust root: {e}"
                        ))
                    })?;
                }
                let b =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let b = if auth == ClientAuth::Optional {
                    b.allow_unauthenticated()
                } else {
                    b
                };
                b.build().map_err(|e| {
                    TlsError::Config(format!("client certificate verification: {e}"))
                })?
            }
        };
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(format!("TLS versions: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| {
                TlsError::Config(format!(
                    "MM_TLS_KEY_CERT_PATH / MM_TLS_PRIVATE_KEY_PATH are not a usable pair: {e}"
                ))
            })?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
    }
}

/// TLS handshakes a REST listener runs (or holds finished) at once.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// A listener whose connections are TLS, for `axum::serve`: handshakes run in their own
/// tasks (a slow or hostile client cannot hold up other connections) with a 10 s limit.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::io::Result<std::net::SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsListener {
    /// Accepts on `tcp`, handing out connections whose handshake completed.
    pub fn new(tcp: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        let local = tcp.local_addr();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        // Handshakes in progress or finished and not yet taken by the server: bounded, so a flood
        // of connections waits in the kernel's backlog instead of holding descriptors here.
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, as axum does.
                        tracing::warn!(error = %e, "REST accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let hs = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await;
                    match hs {
                        Ok(Ok(tls)) => {
                            // The server takes it within the handshake limit, or it is closed.
                            let sent = tokio::time::timeout(
                                std::time::Duration::from_secs(10),
                                tx.send((tls, peer)),
                            )
                            .await;
                            if sent.is_err() {
                                tracing::debug!(%peer, "REST connection not taken in time; closed");
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "REST TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "REST TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { rx, local, task }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_auth_values() {
        assert_eq!(ClientAuth::parse("require").ok(), Some(ClientAuth::Require));
        assert_eq!(
            ClientAuth::parse("OPTIONAL").ok(),
            Some(ClientAuth::Optional)
        );
        assert_eq!(ClientAuth::parse("").ok(), Some(ClientAuth::None));
        let e = ClientAuth::parse("sometimes").expect_err("bad value");
        assert!(e.to_string().contains("NONE, OPTIONAL, REQUIRE"), "{e}");
    }

    #[test]
    fn missing_and_unusable_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles {
            cert_chain: dir.path().join("tls.crt"),
            private_key: dir.path().join("tls.key"),
            ..Default::default()
        };
        let e = TlsConfig::load(&files).expect_err("missing");
        assert!(e.to_string().contains("MM_TLS_KEY_CERT_PATH"), "{e}");
        std::fs::write(&files.cert_chain, "not a certificate").expect("write");
        let e = TlsConfig::load(&files).expect_err("garbage");
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    }
}
