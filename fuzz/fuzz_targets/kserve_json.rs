//! The REST (KServe v2 JSON) translation: any body becomes a request or an error naming the
//! problem, never a panic; raw tensor bytes of any length convert for every datatype.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelmesh_proto::kserve_json::{raw_to_values, request_from_json};

const TYPES: [&str; 14] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
    "FP32", "FP64", "BYTES", "BF16",
];

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = request_from_json("m", "", data) {
        for (i, raw) in req.raw_input_contents.iter().enumerate() {
            let _ = raw_to_values(TYPES[i % TYPES.len()], raw);
        }
    }
    if let Some((&t, raw)) = data.split_first() {
        let _ = raw_to_values(TYPES[t as usize % TYPES.len()], raw);
    }
});
