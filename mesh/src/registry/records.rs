//! The records the mesh keeps in the KV store, with upstream's JSON field names so tools and
//! the controller read the same keys. Default values are omitted, as upstream writes them, and
//! fields this version does not know are kept and written back unchanged.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// A failure message kept per instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FailureMessage {
    /// The load error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub msg: String,
}

/// A registered model: `<root>/<prefix>/<service>/registry/<modelId>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ModelRecord {
    /// Model type (placement label).
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub model_type: String,
    /// ModelInfo.path.
    #[serde(rename = "mPath", default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// ModelInfo.key.
    #[serde(rename = "encKey", default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// Instances holding a copy → load start time (ms).
    #[serde(
        rename = "instanceIds",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub instance_ids: BTreeMap<String, u64>,
    /// Instances where the load failed → failure time (ms).
    #[serde(
        rename = "failedIn",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub failed_in: BTreeMap<String, u64>,
    /// Failure messages per instance.
    #[serde(rename = "fails", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fails: BTreeMap<String, FailureMessage>,
    /// Number of vmodels referring to this model.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub refs: i64,
    /// Delete when `refs` drops to zero.
    #[serde(rename = "autoDel", default, skip_serializing_if = "is_false")]
    pub auto_delete: bool,
    /// Last used (ms).
    #[serde(rename = "lu", default, skip_serializing_if = "is_zero_u64")]
    pub last_used: u64,
    /// Last unload (ms).
    #[serde(rename = "lul", default, skip_serializing_if = "is_zero_u64")]
    pub last_unload: u64,
    /// Copies to keep loaded at all times (ours; 0 = none).
    #[serde(rename = "minCopies", default, skip_serializing_if = "is_zero_u32")]
    pub min_copies: u32,
    /// Copies never to exceed (ours; 0 = no limit).
    #[serde(rename = "maxCopies", default, skip_serializing_if = "is_zero_u32")]
    pub max_copies: u32,
    /// Fields written by other versions.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A vmodel: `<root>/<prefix>/<service>/vmodels/<vModelId>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct VModelRecord {
    /// Owner.
    #[serde(rename = "o", default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Active model id (serves traffic).
    #[serde(rename = "amid", default, skip_serializing_if = "String::is_empty")]
    pub active: String,
    /// Target model id (desired).
    #[serde(rename = "tmid", default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// The target's load failed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub failed: bool,
    /// Fields written by other versions.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl VModelRecord {
    /// Whether a transition to a new target is in progress.
    pub fn in_transition(&self) -> bool {
        self.active != self.target
    }
}

/// A mesh instance (pod): `<root>/<prefix>/<service>/instances/<instanceId>`, lease-bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InstanceRecord {
    /// Start time (ms).
    #[serde(rename = "startTime", default, skip_serializing_if = "is_zero_u64")]
    pub start_time: u64,
    /// Numeric instance version.
    #[serde(rename = "vers", default, skip_serializing_if = "is_zero_i64")]
    pub version: i64,
    /// Location (node).
    #[serde(rename = "loc", default, skip_serializing_if = "String::is_empty")]
    pub location: String,
    /// Zone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// Labels, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Last-used time of the least recently used local copy (ms).
    #[serde(rename = "lruTime", default, skip_serializing_if = "is_zero_u64")]
    pub lru_time: u64,
    /// Model copies held.
    #[serde(rename = "count", default, skip_serializing_if = "is_zero_i64")]
    pub count: i64,
    /// Capacity in 8 KiB units.
    #[serde(rename = "cap", default, skip_serializing_if = "is_zero_i64")]
    pub capacity: i64,
    /// Used, in 8 KiB units.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub used: i64,
    /// Loading threads.
    #[serde(rename = "lThreads", default, skip_serializing_if = "is_zero_i64")]
    pub loading_threads: i64,
    /// Loads queued or running.
    #[serde(rename = "lInProg", default, skip_serializing_if = "is_zero_i64")]
    pub loads_in_progress: i64,
    /// Busyness.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub rpm: i64,
    /// Shutting down.
    #[serde(default, skip_serializing_if = "is_false")]
    pub shutdown: bool,
    /// Address (`host:port`) of this pod's internal hop port (ours; not in upstream records).
    #[serde(rename = "iaddr", default, skip_serializing_if = "String::is_empty")]
    pub internal_address: String,
    /// Fields written by other versions.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_float_fields_survive_a_rewrite_exactly() {
        // Found by fuzzing: without serde_json's float_roundtrip the last digit changed.
        let text = r#"{"refs":0,"lu":4444444444444444444444444444444440,"x":0.1}"#;
        let r: VModelRecord = serde_json::from_str(text).unwrap();
        let again: VModelRecord = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(r, again);
    }

    #[test]
    fn upstream_json_round_trips_with_unknown_fields() {
        let text = r#"{"type":"onnx","mPath":"p","encKey":"{}","instanceIds":{"i1":1700000000000},"refs":1,"autoDel":true,"lu":5,"actionable":true,"future":{"x":1}}"#;
        let r: ModelRecord = serde_json::from_str(text).unwrap();
        assert_eq!(r.model_type, "onnx");
        assert_eq!(r.instance_ids["i1"], 1_700_000_000_000);
        assert!(r.auto_delete);
        let back: Value = serde_json::to_value(&r).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());
        let v: VModelRecord =
            serde_json::from_str(r#"{"o":"ksp","amid":"a","tmid":"b","failed":true}"#).unwrap();
        assert!(v.in_transition() && v.failed);
        assert_eq!(
            serde_json::to_string(&VModelRecord::default()).unwrap(),
            "{}"
        );
    }
}
