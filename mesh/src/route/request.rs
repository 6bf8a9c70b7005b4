//! What an inference request names and carries: which model or vmodel (headers or a request
//! field), its deadline, and the headers the runtime and a peer get.

use crate::dataplane::DataplaneConfig;
use crate::idpath;
use std::str::FromStr;
use std::time::{Duration, Instant};
use tonic::Status;
use tonic::metadata::{AsciiMetadataValue, BinaryMetadataValue, KeyAndValueRef, MetadataMap};

/// Which id a request named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A concrete model id.
    Model(String),
    /// A vmodel id.
    VModel(String),
}

fn header(md: &MetadataMap, name: &str) -> Result<Option<String>, Status> {
    let mut values: Vec<String> = Vec::new();
    for v in md.get_all(name).iter() {
        values.push(
            v.to_str()
                .map_err(|_| Status::invalid_argument(format!("{name} header is not ASCII")))?
                .to_string(),
        );
    }
    let bin = format!("{name}-bin");
    for v in md.get_all_bin(bin.as_str()).iter() {
        let bytes = v
            .to_bytes()
            .map_err(|_| Status::invalid_argument(format!("{bin} header is not valid base64")))?;
        values.push(
            String::from_utf8(bytes.to_vec())
                .map_err(|_| Status::invalid_argument(format!("{bin} header is not UTF-8")))?,
        );
    }
    match values.len() {
        0 => Ok(None),
        1 => Ok(values.pop()),
        _ => Err(Status::unimplemented(format!(
            "multiple {name} values (multi-model requests) are not supported"
        ))),
    }
}

/// Finds the id a request targets (pure but for header decoding).
pub fn find_target(
    method: &str,
    md: &MetadataMap,
    body: &[u8],
    dp: &DataplaneConfig,
) -> Result<Target, Status> {
    if let Some(rc) = dp.rpc_configs.get(method)
        && !rc.id_extraction_path.is_empty()
    {
        let id = idpath::read_string(body, &rc.id_extraction_path)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(id) = id.filter(|s| !s.is_empty()) {
            return Ok(if rc.vmodel_id {
                Target::VModel(id)
            } else {
                Target::Model(id)
            });
        }
    } else if !dp.allow_other_rpcs && !dp.rpc_configs.contains_key(method) {
        return Err(Status::unimplemented(format!(
            "method {method} is not allowed by the dataplane config"
        )));
    }
    header_target(md)
}

/// The id the `mm-model-id` / `mm-vmodel-id` headers name (one of them, not empty).
pub fn header_target(md: &MetadataMap) -> Result<Target, Status> {
    let model = header(md, "mm-model-id")?;
    let vmodel = header(md, "mm-vmodel-id")?;
    match (model, vmodel) {
        (Some(_), Some(_)) => Err(Status::invalid_argument(
            "must include only one of model id and vmodel id (headers mm-model-id and mm-vmodel-id)",
        )),
        (Some(m), None) if m.is_empty() => Err(Status::invalid_argument(
            "provided model-id header must be non-empty",
        )),
        (None, Some(v)) if v.is_empty() => Err(Status::invalid_argument(
            "provided vmodel-id header must be non-empty",
        )),
        (Some(m), None) => Ok(Target::Model(m)),
        (None, Some(v)) => Ok(Target::VModel(v)),
        (None, None) => Err(Status::invalid_argument(
            "must include mm-model-id or mm-vmodel-id header (or set the model name in the request)",
        )),
    }
}

/// Parses a `grpc-timeout` header value (e.g. `100m`).
pub fn parse_timeout(v: &str) -> Option<Duration> {
    // Found by fuzzing: splitting off the unit byte panicked inside a multi-byte character.
    if !v.is_ascii() {
        return None;
    }
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Headers for the runtime: the client's, minus `grpc-*`, `mm-*`, `content-type`, `user-agent`,
/// `te`, plus the resolved model id.
pub(super) fn runtime_headers(md: &MetadataMap, model_id: &str) -> MetadataMap {
    let mut out = MetadataMap::new();
    for kv in md.iter() {
        match kv {
            KeyAndValueRef::Ascii(k, v) => {
                let name = k.as_str();
                if name.starts_with("grpc-")
                    || name.starts_with("mm-")
                    || matches!(name, "content-type" | "user-agent" | "te" | "tas-model-id")
                {
                    continue;
                }
                out.append(k.clone(), v.clone());
            }
            KeyAndValueRef::Binary(k, v) => {
                if k.as_str().starts_with("mm-") || k.as_str().starts_with("grpc-") {
                    continue;
                }
                out.append_bin(k.clone(), v.clone());
            }
        }
    }
    out.insert_bin(
        "mm-model-id-bin",
        BinaryMetadataValue::from_bytes(model_id.as_bytes()),
    );
    if model_id.bytes().all(|b| (32..127).contains(&b))
        && let Ok(v) = AsciiMetadataValue::from_str(model_id)
    {
        out.insert("mm-model-id", v);
    }
    out
}

/// One call being routed: what every attempt needs to know about it.
pub struct Req<'a> {
    /// `package.Service/Method`.
    pub method: &'a str,
    /// The method as an HTTP/2 path.
    pub path: http::uri::PathAndQuery,
    /// The client's metadata.
    pub md: &'a MetadataMap,
    /// The model or vmodel it named.
    pub target: &'a Target,
    /// The client's deadline.
    pub deadline: Option<Instant>,
}

/// The HTTP/2 path of `method`.
pub fn method_path(method: &str) -> Result<http::uri::PathAndQuery, Status> {
    http::uri::PathAndQuery::from_str(&format!("/{method}"))
        .map_err(|_| Status::invalid_argument(format!("invalid method path /{method}")))
}

/// The deadline a client set (`grpc-timeout`); a value that is not a gRPC timeout is refused
/// rather than silently dropped.
pub fn request_deadline(md: &MetadataMap) -> Result<Option<Instant>, Status> {
    let Some(v) = md.get("grpc-timeout") else {
        return Ok(None);
    };
    match v.to_str().ok().and_then(parse_timeout) {
        // A timeout too far away to represent is no deadline (never a panic).
        Some(d) => Ok(Instant::now().checked_add(d)),
        None => Err(Status::invalid_argument(format!(
            "grpc-timeout {v:?} is not a gRPC timeout (digits and a unit of H, M, S, m, u or n, e.g. 500m)"
        ))),
    }
}

/// Gives an outgoing call what is left of the client's deadline; DEADLINE_EXCEEDED when
/// nothing is.
pub fn set_deadline<T>(
    r: &mut tonic::Request<T>,
    deadline: Option<Instant>,
    to: &str,
) -> Result<(), Status> {
    if let Some(d) = deadline {
        let left = d.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Status::deadline_exceeded(format!(
                "deadline expired before the request reached {to}"
            )));
        }
        r.set_timeout(left);
    }
    Ok(())
}

/// Headers for a peer: the client's, minus `grpc-*`, `mm-*`, `content-type`, `te`,
/// `user-agent`, plus the concrete id, the hop and, for a load, the size this pod knows.
pub(super) fn peer_headers(
    md: &MetadataMap,
    model_id: &str,
    hop: crate::hop::Hop,
    known_size: Option<u64>,
) -> MetadataMap {
    let mut out = MetadataMap::new();
    for kv in md.iter() {
        match kv {
            KeyAndValueRef::Ascii(k, v) => {
                let n = k.as_str();
                if n.starts_with("grpc-")
                    || n.starts_with("mm-")
                    || matches!(n, "content-type" | "te" | "user-agent")
                {
                    continue;
                }
                out.append(k.clone(), v.clone());
            }
            KeyAndValueRef::Binary(k, v) => {
                if !k.as_str().starts_with("mm-") {
                    out.append_bin(k.clone(), v.clone());
                }
            }
        }
    }
    out.insert_bin(
        "mm-model-id-bin",
        BinaryMetadataValue::from_bytes(model_id.as_bytes()),
    );
    if let Some(v) = hop.header_value() {
        out.insert(crate::hop::HOP, AsciiMetadataValue::from_static(v));
    }
    if let Some(bytes) = known_size {
        out.insert(crate::hop::KNOWN_SIZE, AsciiMetadataValue::from(bytes));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelmesh_proto::inference::ModelInferRequest;
    use prost::Message;
    use tonic::Code;

    fn md(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn timeouts_with_non_ascii_text_are_ignored() {
        assert_eq!(parse_timeout("ϒ"), None);
        assert_eq!(parse_timeout("1ϒ"), None);
        assert_eq!(parse_timeout(""), None);
        assert_eq!(parse_timeout("15m"), Some(Duration::from_millis(15)));
    }

    #[test]
    fn model_id_sources_and_errors() {
        let dp = DataplaneConfig::kserve_v2();
        let body = ModelInferRequest {
            model_name: "vm1".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let m = "inference.GRPCInferenceService/ModelInfer";
        assert_eq!(
            find_target(m, &md(&[]), &body, &dp).unwrap(),
            Target::VModel("vm1".into())
        );
        let empty = ModelInferRequest::default().encode_to_vec();
        assert_eq!(
            find_target(m, &md(&[("mm-model-id", "m1")]), &empty, &dp).unwrap(),
            Target::Model("m1".into())
        );
        let both = md(&[("mm-model-id", "m1"), ("mm-vmodel-id", "v1")]);
        assert_eq!(
            find_target(m, &both, &empty, &dp).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            find_target(m, &md(&[]), &empty, &dp).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            find_target(m, &md(&[("mm-model-id", "")]), &empty, &dp)
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
        assert_eq!(
            find_target(m, &md(&[]), b"\x0a\x05ab", &dp)
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
        let mut bin = MetadataMap::new();
        bin.insert_bin(
            "mm-vmodel-id-bin",
            BinaryMetadataValue::from_bytes("vmödel".as_bytes()),
        );
        assert_eq!(
            find_target("x.Y/z", &bin, &[], &DataplaneConfig::default()).unwrap(),
            Target::VModel("vmödel".into())
        );
    }

    #[test]
    fn headers_to_the_runtime() {
        let out = runtime_headers(
            &md(&[
                ("mm-vmodel-id", "v"),
                ("user-agent", "x"),
                ("custom", "keep"),
            ]),
            "m-1",
        );
        assert!(out.get("mm-vmodel-id").is_none() && out.get("user-agent").is_none());
        assert_eq!(out.get("custom").unwrap(), "keep");
        assert_eq!(out.get("mm-model-id").unwrap(), "m-1");
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("x"), None);
    }
}
