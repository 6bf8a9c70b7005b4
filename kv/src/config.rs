//! `KV_STORE`: which store to use, in upstream's forms plus the embedded one.
//!
//! - `etcd:<path to etcd_connection JSON>` (`endpoints`, `userid`, `password`, `root_prefix`)
//! - `etcd:http://h1:p1,h2:p2[;rootPrefix=<prefix>]`
//! - `memory` / `memory:<snapshot file>`

use super::etcd::{EtcdConfig, EtcdTls};

/// A parsed `KV_STORE`.
#[derive(Clone, PartialEq)]
pub enum KvConfig {
    /// Embedded store, optionally snapshotted to a file.
    Memory(Option<std::path::PathBuf>),
    /// etcd, with a root prefix for every key.
    Etcd {
        /// Endpoints (`http://h:p`).
        endpoints: Vec<String>,
        /// User and password.
        user: Option<(String, String)>,
        /// Root prefix (namespace) of every key.
        root_prefix: String,
        /// TLS to etcd.
        tls: Option<EtcdTls>,
    },
}

impl std::fmt::Debug for KvConfig {
    // Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvConfig::Memory(p) => f.debug_tuple("Memory").field(p).finish(),
            KvConfig::Etcd {
                endpoints,
                user,
                root_prefix,
                tls,
            } => f
                .debug_struct("Etcd")
                .field("endpoints", endpoints)
                .field("user", &user.as_ref().map(|(u, _)| u))
                .field("root_prefix", root_prefix)
                .field("tls", tls)
                .finish(),
        }
    }
}

#[derive(serde::Deserialize)]
struct ConnectionFile {
    endpoints: String,
    #[serde(default)]
    userid: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    root_prefix: Option<String>,
    #[serde(default)]
    certificate: Option<String>,
    #[serde(default)]
    certificate_file: Option<String>,
    #[serde(default)]
    client_certificate: Option<String>,
    #[serde(default)]
    client_certificate_file: Option<String>,
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    client_key_file: Option<String>,
    #[serde(default)]
    override_authority: Option<String>,
}

/// One PEM value: given inline, or named (`*_file`: another key of the same secret, i.e. a
/// file next to the connection file); both is an error.
fn pem_value(
    field: &str,
    inline: Option<String>,
    file: Option<String>,
    read: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<Option<Vec<u8>>, String> {
    match (
        inline.filter(|s| !s.trim().is_empty()),
        file.filter(|s| !s.is_empty()),
    ) {
        (Some(_), Some(_)) => Err(format!("set {field} or {field}_file, not both")),
        (Some(pem), None) => Ok(Some(pem.into_bytes())),
        (None, Some(name)) => read(&name)
            .map(Some)
            .map_err(|e| format!("{field}_file '{name}': {e}")),
        (None, None) => Ok(None),
    }
}

fn endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains("://") {
                s.to_string()
            } else {
                format!("http://{s}")
            }
        })
        .collect()
}

impl KvConfig {
    /// Parses a `KV_STORE` value; the error says what was expected.
    pub fn parse(v: &str) -> Result<KvConfig, String> {
        if v == "memory" {
            return Ok(KvConfig::Memory(None));
        }
        if let Some(path) = v.strip_prefix("memory:") {
            return Ok(KvConfig::Memory(Some(path.into())));
        }
        let Some(rest) = v.strip_prefix("etcd:") else {
            return Err(format!(
                "KV_STORE '{v}' is not supported: use memory, memory:<file>, etcd:<connection-json-file> or etcd:http://host:port[,...]"
            ));
        };
        if rest.starts_with("http://") || rest.starts_with("https://") {
            let (list, opts) = rest.split_once(';').unwrap_or((rest, ""));
            let root_prefix = opts
                .split(';')
                .find_map(|o| o.strip_prefix("rootPrefix="))
                .unwrap_or("")
                .to_string();
            return Ok(KvConfig::Etcd {
                endpoints: endpoints(list),
                user: None,
                root_prefix,
                tls: None,
            });
        }
        let text = std::fs::read_to_string(rest)
            .map_err(|e| format!("cannot read etcd connection file {rest}: {e}"))?;
        // `*_file` fields name other keys of the mounted secret: files in the same directory.
        let dir = std::path::Path::new(rest)
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let read = move |name: &str| -> Result<Vec<u8>, String> {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        KvConfig::from_connection_json_with(&text, &read)
            .map_err(|e| format!("etcd connection file {rest} is not valid: {e}"))
    }

    /// The etcd form from an `etcd_connection` JSON document, as the etcd secret holds it,
    /// with inline certificates only.
    pub fn from_connection_json(text: &str) -> Result<KvConfig, String> {
        KvConfig::from_connection_json_with(text, &|name: &str| {
            Err(format!(
                "cannot resolve '{name}': only inline certificates are available here"
            ))
        })
    }

    /// The etcd form from an `etcd_connection` JSON document (`endpoints`, `userid`,
    /// `password`, `root_prefix`, `certificate[_file]`, `client_certificate[_file]`,
    /// `client_key[_file]`, `override_authority`); `read` resolves `*_file` names.
    pub fn from_connection_json_with(
        text: &str,
        read: &dyn Fn(&str) -> Result<Vec<u8>, String>,
    ) -> Result<KvConfig, String> {
        let f: ConnectionFile = modelmesh_settings::json::parse(text)?;
        let user = match (f.userid, f.password) {
            (Some(u), Some(p)) if !u.is_empty() => Some((u, p)),
            _ => None,
        };
        let ca = pem_value("certificate", f.certificate, f.certificate_file, read)?;
        let cert = pem_value(
            "client_certificate",
            f.client_certificate,
            f.client_certificate_file,
            read,
        )?;
        let key = pem_value("client_key", f.client_key, f.client_key_file, read)?;
        let client = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err("client_certificate and client_key must be given together".to_string());
            }
        };
        let endpoints = endpoints(&f.endpoints);
        let secure = endpoints.iter().any(|e| e.starts_with("https://"));
        let tls = match ca {
            Some(ca_pem) => Some(EtcdTls {
                ca_pem,
                client,
                authority: f.override_authority.filter(|a| !a.is_empty()),
            }),
            None if secure || client.is_some() => {
                return Err(
                    "TLS to etcd (https endpoints or a client certificate) needs the CA: set certificate or certificate_file".to_string(),
                );
            }
            None => None,
        };
        Ok(KvConfig::Etcd {
            endpoints,
            user,
            root_prefix: f.root_prefix.unwrap_or_default(),
            tls,
        })
    }

    /// The etcd client settings, for the etcd form.
    pub fn etcd(&self) -> Option<EtcdConfig> {
        match self {
            KvConfig::Etcd {
                endpoints,
                user,
                tls,
                ..
            } => Some(EtcdConfig {
                endpoints: endpoints.clone(),
                user: user.clone(),
                tls: tls.clone(),
            }),
            KvConfig::Memory(_) => None,
        }
    }

    /// The root prefix of every key.
    pub fn root_prefix(&self) -> &str {
        match self {
            KvConfig::Etcd { root_prefix, .. } => root_prefix,
            KvConfig::Memory(_) => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(KvConfig::parse("memory").unwrap(), KvConfig::Memory(None));
        assert_eq!(
            KvConfig::parse("memory:/tmp/x.json").unwrap(),
            KvConfig::Memory(Some("/tmp/x.json".into()))
        );
        let c = KvConfig::parse("etcd:http://a:1,b:2;rootPrefix=ns1").unwrap();
        assert_eq!(
            c.etcd().unwrap().endpoints,
            vec!["http://a:1", "http://b:2"]
        );
        assert_eq!(c.root_prefix(), "ns1");
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("etcd_connection");
        std::fs::write(&f, r#"{"endpoints":"http://e:2379","userid":"u","password":"p","root_prefix":"modelmesh-serving"}"#).unwrap();
        let c = KvConfig::parse(&format!("etcd:{}", f.display())).unwrap();
        assert_eq!(c.root_prefix(), "modelmesh-serving");
        assert_eq!(c.etcd().unwrap().user, Some(("u".into(), "p".into())));
        assert!(
            KvConfig::parse("zookeeper:x")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(KvConfig::parse("etcd:/nonexistent").is_err());
    }

    #[test]
    fn tls_settings_come_inline_or_from_files_next_to_the_connection() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ca.crt"), "CA PEM").unwrap();
        let f = d.path().join("etcd_connection");
        std::fs::write(
            &f,
            r#"{"endpoints":"https://e:2379","certificate_file":"ca.crt","client_certificate":"CERT","client_key":"KEY","override_authority":"etcd.local"}"#,
        )
        .unwrap();
        let c = KvConfig::parse(&format!("etcd:{}", f.display())).unwrap();
        let tls = c.etcd().unwrap().tls.unwrap();
        assert_eq!(tls.ca_pem, b"CA PEM");
        assert_eq!(tls.client, Some((b"CERT".to_vec(), b"KEY".to_vec())));
        assert_eq!(tls.authority.as_deref(), Some("etcd.local"));
        assert!(
            !format!("{tls:?}").contains("KEY"),
            "the key is never printed"
        );
        let with_password = KvConfig::from_connection_json(
            r#"{"endpoints":"e:1","userid":"u","password":"hunter2"}"#,
        )
        .unwrap();
        assert!(!format!("{with_password:?} {:?}", with_password.etcd()).contains("hunter2"));
        let bad = |json: &str| KvConfig::from_connection_json(json).unwrap_err();
        assert!(bad(r#"{"endpoints":"https://e:2379"}"#).contains("needs the CA"));
        assert!(
            bad(r#"{"endpoints":"e:1","certificate":"x","client_key":"k"}"#).contains("together")
        );
        assert!(
            bad(r#"{"endpoints":"e:1","certificate":"x","certificate_file":"y"}"#)
                .contains("not both")
        );
        assert!(bad(r#"{"endpoints":"e:1","certificate_file":"ca.crt"}"#).contains("inline"));
    }
}
