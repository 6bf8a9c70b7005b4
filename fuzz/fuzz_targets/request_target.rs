//! Which model a request names: any metadata (ids, `-bin` ids, repeated or conflicting
//! headers), any body and any dataplane config give a target or a status, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelmesh_mesh::dataplane::DataplaneConfig;
use modelmesh_mesh::route::{find_target, parse_timeout};
use tonic::metadata::{AsciiMetadataValue, BinaryMetadataValue, MetadataMap};

const KEYS: [&str; 6] = [
    "mm-model-id",
    "mm-vmodel-id",
    "mm-balanced",
    "mm-hop",
    "grpc-timeout",
    "x-other",
];
const BIN_KEYS: [&str; 2] = ["mm-model-id-bin", "mm-vmodel-id-bin"];
const METHODS: [&str; 3] = [
    "inference.GRPCInferenceService/ModelInfer",
    "inference.GRPCInferenceService/ModelMetadata",
    "other.Service/Method",
];

fuzz_target!(|data: &[u8]| {
    // Sections split by 0xFF: headers (key index byte + value), body, dataplane JSON.
    let mut parts = data.split(|b| *b == 0xFF);
    let headers = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let dataplane = parts
        .next()
        .and_then(|j| std::str::from_utf8(j).ok())
        .and_then(|j| DataplaneConfig::parse(j).ok())
        .unwrap_or_else(DataplaneConfig::kserve_v2);
    let mut md = MetadataMap::new();
    for chunk in headers.split(|b| *b == 0xFE) {
        let Some((&k, v)) = chunk.split_first() else {
            continue;
        };
        if k % 3 == 0 {
            md.append_bin(BIN_KEYS[(k as usize / 3) % 2], BinaryMetadataValue::from_bytes(v));
        } else if let Ok(s) = std::str::from_utf8(v)
            && let Ok(val) = AsciiMetadataValue::try_from(s)
        {
            md.append(KEYS[k as usize % KEYS.len()], val);
            let _ = parse_timeout(s);
        }
    }
    let method = METHODS[body.len() % METHODS.len()];
    let _ = find_target(method, &md, body, &dataplane);
});
