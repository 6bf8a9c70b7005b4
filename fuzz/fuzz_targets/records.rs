//! KV store records (models, vmodels, instances): any bytes parse or fail, and whatever parses
//! survives a write and re-read unchanged (unknown fields included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelmesh_mesh::registry::records::{InstanceRecord, ModelRecord, VModelRecord};
use serde::{Serialize, de::DeserializeOwned};

fn round_trip<R: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<R>(data)
        && let Ok(bytes) = serde_json::to_vec(&r)
    {
        let again: R = serde_json::from_slice(&bytes).expect("a written record reads back");
        assert_eq!(r, again);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<ModelRecord>(data);
    round_trip::<VModelRecord>(data);
    round_trip::<InstanceRecord>(data);
});
