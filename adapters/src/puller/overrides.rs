//! Which storage fields a model registration may set (`modelKey.storage_params`, from a
//! Predictor's `storage.parameters` or an InferenceService's `storageUri`) over the namespace's
//! storage-config secret. Anyone who can register a model can write these, so they may only say
//! *which object* to read (a bucket, a container, a PVC, a URL path on the secret's host), never
//! *where or how* to connect: the provider type, roots, endpoints, headers and credentials come
//! from the secret alone. Upstream applied every parameter, so a registration could read
//! `/etc` through `type: local`, fetch any URL, or send the namespace's cloud credentials to an
//! endpoint of its choosing.

use crate::error::AdapterError;
use serde_json::{Map, Value};

/// Fields that pick an object inside the storage the secret describes.
const OBJECT_FIELDS: &[&str] = &["bucket", "container"];

/// Why a parameter is refused, for the message.
fn refused(field: &str, why: &str) -> AdapterError {
    AdapterError::invalid(format!(
        "storage_params.{field} cannot be set by a model registration: {why}"
    ))
}

/// The origin (`scheme://host[:port]`) of a URL, lower-cased, or None if it has none.
fn origin(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?.to_ascii_lowercase();
    Some(match u.port_or_known_default() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    })
}

/// Field the resolved config carries when a registration named its own `url` on the secret's
/// origin: the secret URL's path, under which every fetched URL must stay (the http provider
/// checks the joined URL, model path included).
pub const URL_PATH_PREFIX: &str = "_url_path_prefix";

/// Checks `params` against the secret's `entry` (empty when the model names no entry and there
/// is no default) and returns the parameters to apply. Refused parameters are
/// INVALID_ARGUMENT naming `storage_params.<field>`, before anything is fetched.
pub fn allowed(
    entry: &Map<String, Value>,
    params: Map<String, Value>,
) -> Result<Map<String, Value>, AdapterError> {
    let entry_type = entry
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    let mut out = Map::new();
    for (field, value) in params {
        // Dot paths (`a.b`) address nested fields; only top-level object fields are allowed.
        let top = field.split('.').next().unwrap_or("");
        match top {
            "type" => {
                let asked = value.as_str().map(str::to_ascii_lowercase);
                match (&entry_type, asked.as_deref()) {
                    (Some(have), Some(want)) if have == want => {}
                    (Some(have), _) => {
                        return Err(refused(
                            "type",
                            &format!("the storage entry is of type '{have}'"),
                        ));
                    }
                    // No entry: public storage (an InferenceService's `https://`, `s3://` or
                    // `gs://` URI, or a PVC): no credentials are involved, and the http
                    // provider's address checks still apply. Never a directory of the adapter.
                    (None, Some("pvc" | "http" | "https" | "s3" | "gcs" | "gs" | "azure")) => {}
                    (None, _) => {
                        return Err(refused(
                            "type",
                            "without a storage-config entry only pvc, http, s3, gcs or azure (public storage) may be chosen; name a storage key instead",
                        ));
                    }
                }
                out.insert(field, value);
            }
            f if OBJECT_FIELDS.contains(&f) && field == f => {
                if !value.is_string() {
                    return Err(AdapterError::invalid(format!(
                        "storage_params.{field} must be a string"
                    )));
                }
                out.insert(field, value);
            }
            // The PVC to read, one the controller mounted; safe_path keeps it inside the mounts.
            "name" if field == "name" => {
                let is_pvc = entry_type.as_deref().is_none_or(|t| t == "pvc");
                if !is_pvc || !value.is_string() {
                    return Err(refused("name", "only a pvc storage entry takes a name"));
                }
                out.insert(field, value);
            }
            // An InferenceService's `https://host/path` storageUri names the host too: accepted
            // only when it is the secret's own host, so it selects a path there and nothing else.
            "url" | "endpoint_url" | "account_name" if field == top => {
                let mine = entry.get(top).and_then(Value::as_str);
                let same = match (mine, value.as_str()) {
                    (Some(a), Some(b)) if top == "url" => {
                        origin(a).is_some() && origin(a) == origin(b)
                    }
                    (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                    // Public storage (no entry, so no credentials): its own URL or account.
                    (None, Some(_)) => entry.is_empty() && top != "endpoint_url",
                    _ => false,
                };
                if !same {
                    return Err(refused(
                        top,
                        "where to connect comes from the storage-config secret only (it may only repeat the secret's own value)",
                    ));
                }
                if top == "url" {
                    if let Some(base) = mine.and_then(|u| reqwest::Url::parse(u).ok()) {
                        let prefix = base.path().trim_end_matches('/').to_string();
                        if !prefix.is_empty() {
                            out.insert(URL_PATH_PREFIX.into(), Value::String(prefix));
                        }
                    }
                    out.insert(field, value);
                }
            }
            "root" => {
                return Err(refused(
                    "root",
                    "a directory root comes from the storage-config secret only",
                ));
            }
            "headers" => {
                return Err(refused(
                    "headers",
                    "headers come from the storage-config secret only",
                ));
            }
            _ if field == URL_PATH_PREFIX => {
                return Err(refused(&field, "it is set by the adapter only"));
            }
            _ => {
                return Err(refused(
                    &field,
                    "only type, bucket, container, name (pvc) and a url on the secret's own host may be set; endpoints, regions and credentials come from the storage-config secret",
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn check(entry: Value, params: Value) -> Result<Map<String, Value>, String> {
        allowed(&map(entry), map(params)).map_err(|e| {
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
            e.to_string()
        })
    }

    #[test]
    fn object_fields_are_allowed() {
        let s3 = json!({"type": "s3", "bucket": "a", "endpoint_url": "http://minio:9000", "access_key_id": "k", "secret_access_key": "s"});
        assert_eq!(
            check(s3.clone(), json!({"bucket": "b", "type": "s3"})),
            Ok(map(json!({"bucket": "b", "type": "s3"})))
        );
        assert!(
            check(
                json!({"type": "azure", "account_name": "acct"}),
                json!({"container": "c", "account_name": "acct"})
            )
            .is_ok()
        );
        assert!(check(json!({}), json!({"type": "pvc", "name": "models-pvc"})).is_ok());
        // Public storage named by an InferenceService's URI, with no storage entry at all.
        assert!(
            check(
                json!({}),
                json!({"type": "http", "url": "https://huggingface.example/org"})
            )
            .is_ok()
        );
        assert!(check(json!({}), json!({"type": "s3", "bucket": "public"})).is_ok());
        assert!(check(json!({"type": "pvc", "name": "a"}), json!({"name": "b"})).is_ok());
        assert!(
            check(
                json!({"type": "http", "url": "https://models.example.com/base"}),
                json!({"type": "http", "url": "https://models.example.com"})
            )
            .is_ok()
        );
        assert!(
            check(
                json!({"type": "http", "url": "https://Models.example.com:443/"}),
                json!({"url": "https://models.example.com/x"})
            )
            .is_ok()
        );
    }

    #[test]
    fn where_and_how_to_connect_are_refused_naming_the_field() {
        let cases = [
            // A local root anywhere on the adapter's disk.
            (
                json!({"type": "s3", "bucket": "a"}),
                json!({"type": "local", "root": "/etc"}),
                "storage_params.root",
            ),
            (
                json!({"type": "s3", "bucket": "a"}),
                json!({"type": "local"}),
                "storage_params.type",
            ),
            (
                json!({"type": "local", "root": "/models"}),
                json!({"root": "/etc"}),
                "storage_params.root",
            ),
            (
                json!({}),
                json!({"type": "local", "root": "/etc"}),
                "storage_params.root",
            ),
            (json!({}), json!({"type": "local"}), "storage_params.type"),
            // Any URL, loopback or the cloud metadata service.
            // Public storage may name its URL, but a secret's entry is not to be left.
            (
                json!({"type": "s3", "bucket": "b"}),
                json!({"type": "http", "url": "http://127.0.0.1:9000"}),
                "storage_params.type",
            ),
            (
                json!({"type": "http", "url": "https://models.example.com"}),
                json!({"url": "http://169.254.169.254/latest"}),
                "storage_params.url",
            ),
            (
                json!({"type": "http", "url": "https://models.example.com"}),
                json!({"url": "https://models.example.com.evil.net/"}),
                "storage_params.url",
            ),
            (
                json!({"type": "http", "url": "https://models.example.com"}),
                json!({"headers": {"Authorization": "x"}}),
                "storage_params.headers",
            ),
            // The namespace's credentials sent to another endpoint.
            (
                json!({"type": "s3", "endpoint_url": "http://minio:9000"}),
                json!({"endpoint_url": "http://attacker:9000"}),
                "storage_params.endpoint_url",
            ),
            (
                json!({"type": "s3"}),
                json!({"endpoint_url": "http://attacker:9000"}),
                "storage_params.endpoint_url",
            ),
            (
                json!({"type": "azure", "account_name": "mine"}),
                json!({"account_name": "theirs"}),
                "storage_params.account_name",
            ),
            (
                json!({"type": "s3"}),
                json!({"access_key_id": "k"}),
                "storage_params.access_key_id",
            ),
            (
                json!({"type": "s3"}),
                json!({"region": "x"}),
                "storage_params.region",
            ),
            (
                json!({"type": "s3"}),
                json!({"certificate": "pem"}),
                "storage_params.certificate",
            ),
            (
                json!({"type": "gcs"}),
                json!({"private_key": "pem"}),
                "storage_params.private_key",
            ),
            (
                json!({"type": "s3"}),
                json!({"bucket.x": "y"}),
                "storage_params.bucket.x",
            ),
            (
                json!({"type": "s3"}),
                json!({"name": "p"}),
                "storage_params.name",
            ),
            (
                json!({"type": "s3"}),
                json!({"type": "gcs"}),
                "storage_params.type",
            ),
        ];
        for (entry, params, field) in cases {
            let e = check(entry.clone(), params.clone())
                .err()
                .unwrap_or_default();
            assert!(e.contains(field), "{entry} + {params}: {e}");
        }
    }
}
