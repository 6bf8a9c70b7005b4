//! Where the mesh's state lives in the store, the one place that knows it: every mesh (one
//! service in one namespace) keeps `registry/`, `vmodels/` and `instances/` under
//! `<root>/<prefix>/<service>/`, upstream's layout, so tools and the controller read the same
//! keys. A namespace other than the controller's gets its own root, `<root>/mm_ns/<namespace>`.

/// `MM_KVSTORE_PREFIX`'s default.
pub const DEFAULT_PREFIX: &str = "mm";

/// A root prefix as keys start with it: a leading `/`, no trailing one (empty stays empty).
pub fn normalize_root(root: &str) -> String {
    let r = root.trim_end_matches('/');
    if r.is_empty() || r.starts_with('/') {
        r.to_string()
    } else {
        format!("/{r}")
    }
}

/// The root prefix of `namespace`'s mesh, given the controller namespace's root (as the etcd
/// connection's `root_prefix` writes it: no leading `/` added).
pub fn namespace_root(root: &str, namespace: &str) -> String {
    format!("{}/mm_ns/{namespace}", root.trim_end_matches('/'))
}

/// Key prefixes of one mesh (one service in one namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    base: String,
}

/// The tables of a mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `registry/`: models.
    Registry,
    /// `vmodels/`.
    VModels,
    /// `instances/`: pods.
    Instances,
}

/// What a key names: a record of a table of the mesh of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// The namespace (`None`: the controller's own, which uses the root as it is).
    pub namespace: Option<String>,
    /// The table.
    pub table: Table,
    /// The record's id.
    pub id: String,
}

impl Layout {
    /// `root` is etcd's root prefix (may be empty), `prefix` is `MM_KVSTORE_PREFIX`, `service`
    /// is `MM_SERVICE_NAME`.
    pub fn new(root: &str, prefix: &str, service: &str) -> Self {
        Layout {
            base: format!("{}/{prefix}/{service}/", normalize_root(root)),
        }
    }

    /// `.../registry/`
    pub fn registry(&self) -> String {
        format!("{}registry/", self.base)
    }

    /// `.../vmodels/`
    pub fn vmodels(&self) -> String {
        format!("{}vmodels/", self.base)
    }

    /// `.../instances/`
    pub fn instances(&self) -> String {
        format!("{}instances/", self.base)
    }
}

/// Parses a key under `root` (the controller namespace's root): which namespace's mesh of
/// `service`, which table, which record. None for any other key.
pub fn parse(root: &str, service: &str, key: &str) -> Option<KeyRef> {
    let rest = key.strip_prefix(&normalize_root(root))?;
    let (namespace, rest) = match rest.strip_prefix("/mm_ns/") {
        Some(r) => {
            let (ns, tail) = r.split_once('/')?;
            (Some(ns.to_string()), tail)
        }
        None => (None, rest.strip_prefix('/')?),
    };
    let rest = rest.strip_prefix(DEFAULT_PREFIX)?.strip_prefix('/')?;
    let rest = rest.strip_prefix(service)?.strip_prefix('/')?;
    let (table, id) = if let Some(id) = rest.strip_prefix("registry/") {
        (Table::Registry, id)
    } else if let Some(id) = rest.strip_prefix("vmodels/") {
        (Table::VModels, id)
    } else {
        (Table::Instances, rest.strip_prefix("instances/")?)
    };
    (!id.is_empty()).then(|| KeyRef {
        namespace,
        table,
        id: id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_upstream_layout() {
        let l = Layout::new("", "mm", "modelmesh-serving");
        assert_eq!(l.registry(), "/mm/modelmesh-serving/registry/");
        let l = Layout::new("modelmesh-serving/mm_ns/ns1/", "mm", "svc");
        assert_eq!(l.vmodels(), "/modelmesh-serving/mm_ns/ns1/mm/svc/vmodels/");
        assert_eq!(
            l.instances(),
            "/modelmesh-serving/mm_ns/ns1/mm/svc/instances/"
        );
        assert_eq!(
            namespace_root("modelmesh-serving", "ns1"),
            "modelmesh-serving/mm_ns/ns1"
        );
    }

    #[test]
    fn parsing_a_key_is_the_inverse_of_making_it() {
        let own = Layout::new("modelmesh-serving", "mm", "svc");
        let other = Layout::new(&namespace_root("modelmesh-serving", "team-a"), "mm", "svc");
        assert_eq!(
            parse("modelmesh-serving", "svc", &format!("{}m1", own.registry())),
            Some(KeyRef {
                namespace: None,
                table: Table::Registry,
                id: "m1".into()
            })
        );
        assert_eq!(
            parse(
                "/modelmesh-serving/",
                "svc",
                &format!("{}v1", other.vmodels())
            ),
            Some(KeyRef {
                namespace: Some("team-a".into()),
                table: Table::VModels,
                id: "v1".into()
            })
        );
        assert_eq!(
            parse(
                "modelmesh-serving",
                "svc",
                &format!("{}p", other.instances())
            )
            .map(|k| k.table),
            Some(Table::Instances)
        );
        for bad in [
            "/other/mm/svc/registry/m",
            "/modelmesh-serving/mm/other/registry/m",
            "/modelmesh-serving/mm/svc/registry/",
            "/modelmesh-serving/mm/svc/leader",
            "/modelmesh-serving/mm_ns/team-a",
        ] {
            assert_eq!(parse("modelmesh-serving", "svc", bad), None, "{bad}");
        }
    }
}
