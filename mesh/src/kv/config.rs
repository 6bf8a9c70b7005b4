//! `KV_STORE`: which store to use, in upstream's forms plus the embedded one.
//!
//! - `etcd:<path to etcd_connection JSON>` (`endpoints`, `userid`, `password`, `root_prefix`)
//! - `etcd:http://h1:p1,h2:p2[;rootPrefix=<prefix>]`
//! - `memory` / `memory:<snapshot file>`

use super::etcd::EtcdConfig;

/// A parsed `KV_STORE`.
#[derive(Debug, Clone, PartialEq)]
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
    },
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
            });
        }
        let text = std::fs::read_to_string(rest)
            .map_err(|e| format!("cannot read etcd connection file {rest}: {e}"))?;
        KvConfig::from_connection_json(&text)
            .map_err(|e| format!("etcd connection file {rest} is not valid: {e}"))
    }

    /// The etcd form from an `etcd_connection` JSON document (`endpoints`, `userid`,
    /// `password`, `root_prefix`), as the etcd secret holds it.
    pub fn from_connection_json(text: &str) -> Result<KvConfig, String> {
        let f: ConnectionFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let user = match (f.userid, f.password) {
            (Some(u), Some(p)) if !u.is_empty() => Some((u, p)),
            _ => None,
        };
        Ok(KvConfig::Etcd {
            endpoints: endpoints(&f.endpoints),
            user,
            root_prefix: f.root_prefix.unwrap_or_default(),
        })
    }

    /// The etcd client settings, for the etcd form.
    pub fn etcd(&self) -> Option<EtcdConfig> {
        match self {
            KvConfig::Etcd {
                endpoints, user, ..
            } => Some(EtcdConfig {
                endpoints: endpoints.clone(),
                user: user.clone(),
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
}
