//! Certificates for the TLS tests, generated with rcgen: a CA, a server/pod certificate it
//! signs (for `localhost`, `127.0.0.1` and a mesh service name, usable as server and client),
//! a client certificate it signs, and a client certificate from an unrelated CA.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// PEM files in one directory.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

/// The name pods verify each other by (a DNS SAN of the server certificate).
pub const MESH_NAME: &str = "modelmesh-serving.tls-test";

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("self-signed CA");
    (cert, Issuer::new(p, key))
}

fn leaf(
    names: &[&str],
    cn: &str,
    usages: Vec<ExtendedKeyUsagePurpose>,
    issuer: &Issuer<'static, KeyPair>,
) -> (String, String) {
    let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(sans).expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = usages;
    p.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

/// Writes a fresh PKI into `dir`.
pub fn make(dir: &Path) -> Pki {
    use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write pem");
        p
    };
    let (ca_cert, issuer) = ca("modelmesh test CA");
    let (server_cert, server_key) = leaf(
        &[MESH_NAME, "localhost", "127.0.0.1"],
        "modelmesh-serving",
        vec![ServerAuth, ClientAuth],
        &issuer,
    );
    let (client_cert, client_key) = leaf(&["client.test"], "a client", vec![ClientAuth], &issuer);
    let (_, rogue_issuer) = ca("someone else's CA");
    let (rogue_cert, rogue_key) = leaf(
        &["client.test"],
        "a stranger",
        vec![ClientAuth],
        &rogue_issuer,
    );
    Pki {
        ca: write("ca.crt", &ca_cert.pem()),
        server_cert: write("tls.crt", &server_cert),
        server_key: write("tls.key", &server_key),
        client_cert: write("client.crt", &client_cert),
        client_key: write("client.key", &client_key),
        rogue_cert: write("rogue.crt", &rogue_cert),
        rogue_key: write("rogue.key", &rogue_key),
    }
}

impl Pki {
    /// A gRPC channel to `port` over TLS, trusting the test CA, with a client certificate
    /// (`client`: the CA's, `rogue`: the stranger's, none).
    pub async fn channel(
        &self,
        port: u16,
        client: Option<&str>,
    ) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let read = |p: &PathBuf| std::fs::read(p).expect("read pem");
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)))
            .domain_name("localhost");
        match client {
            Some("client") => {
                tls = tls.identity(Identity::from_pem(
                    read(&self.client_cert),
                    read(&self.client_key),
                ))
            }
            Some(_) => {
                tls = tls.identity(Identity::from_pem(
                    read(&self.rogue_cert),
                    read(&self.rogue_key),
                ))
            }
            None => {}
        }
        Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .expect("uri")
            .tls_config(tls)?
            .connect_timeout(std::time::Duration::from_secs(2))
            .connect()
            .await
    }

    /// A REST client trusting the test CA, with the CA's client certificate or none.
    pub fn http(&self, with_cert: bool) -> reqwest::Client {
        let read = |p: &PathBuf| std::fs::read(p).expect("read pem");
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&read(&self.ca)).expect("ca"));
        if with_cert {
            let mut pem = read(&self.client_cert);
            pem.extend(read(&self.client_key));
            b = b.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
        }
        b.build().expect("client")
    }
}
