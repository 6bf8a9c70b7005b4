//! The shared registry: models, vmodels and instances, each a KV prefix under
//! `<root>/<prefix>/<service>/`, kept locally by a watch.

pub mod records;
pub mod table;

/// Key prefixes of one mesh (one service in one namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    base: String,
}

impl Layout {
    /// `root` is etcd's root prefix (may be empty), `prefix` is `MM_KVSTORE_PREFIX`, `service`
    /// is `MM_SERVICE_NAME`.
    pub fn new(root: &str, prefix: &str, service: &str) -> Self {
        let root = root.trim_end_matches('/');
        let root = if root.is_empty() || root.starts_with('/') {
            root.to_string()
        } else {
            format!("/{root}")
        };
        Layout {
            base: format!("{root}/{prefix}/{service}/"),
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

#[cfg(test)]
mod tests {
    use super::Layout;

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
    }
}
