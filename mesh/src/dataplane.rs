//! The dataplane config (`MM_DATAPLANE_CONFIG[_PATH]`): which request field holds the model id
//! for which gRPC method, and whether other methods are allowed.

use serde::Deserialize;
use std::collections::HashMap;

/// Per-method id extraction.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RpcConfig {
    /// Field-number path of the id in the request.
    #[serde(default)]
    pub id_extraction_path: Vec<u32>,
    /// Whether the extracted id is a vmodel id.
    #[serde(default, rename = "vModelId")]
    pub vmodel_id: bool,
}

/// The whole config.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DataplaneConfig {
    /// Method (`pkg.Svc/Method`) → extraction.
    #[serde(default)]
    pub rpc_configs: HashMap<String, RpcConfig>,
    /// Whether methods without a config are allowed.
    #[serde(default = "yes")]
    pub allow_other_rpcs: bool,
}

fn yes() -> bool {
    true
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            rpc_configs: HashMap::new(),
            allow_other_rpcs: true,
        }
    }
}

impl DataplaneConfig {
    /// Parses the JSON form; the error names the problem.
    pub fn parse(json: &str) -> Result<Self, String> {
        modelmesh_settings::json::parse(json).map_err(|e| format!("invalid dataplane config: {e}"))
    }

    /// KServe v2: `model_name` (field 1) of ModelInfer / ModelMetadata / ModelReady is a vmodel
    /// id, so a client can route with `model_name` alone.
    pub fn kserve_v2() -> Self {
        let c = RpcConfig {
            id_extraction_path: vec![1],
            vmodel_id: true,
        };
        let rpc_configs = [
            "ModelInfer",
            "ModelMetadata",
            "ModelReady",
            "ModelStreamInfer",
        ]
        .iter()
        .map(|m| (format!("inference.GRPCInferenceService/{m}"), c.clone()))
        .collect();
        DataplaneConfig {
            rpc_configs,
            allow_other_rpcs: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_json() {
        let c = DataplaneConfig::parse(
            r#"{"rpcConfigs": {"inference.GRPCInferenceService/ModelInfer": {"idExtractionPath": [1], "vModelId": true}}, "allowOtherRpcs": false}"#,
        )
        .unwrap();
        assert!(!c.allow_other_rpcs);
        assert_eq!(
            c.rpc_configs["inference.GRPCInferenceService/ModelInfer"].id_extraction_path,
            vec![1]
        );
        assert!(DataplaneConfig::parse("{").is_err());
        assert!(DataplaneConfig::parse("{}").unwrap().allow_other_rpcs);
    }
}
