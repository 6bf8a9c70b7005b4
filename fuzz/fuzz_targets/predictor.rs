//! The controller's conversions of user resources: any Predictor or InferenceService JSON and
//! any `model-serving-config` YAML give a registration, a named InvalidSpec or a parse error,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelmesh_controller::config::Config;
use modelmesh_controller::crd::inference_service::InferenceService;
use modelmesh_controller::crd::predictor::Predictor;
use modelmesh_controller::isvc::{parse_storage_uri, predictor_spec};
use modelmesh_controller::registration::{OWNER_ISVC, OWNER_PREDICTOR, registration};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::parse(s);
    let _ = parse_storage_uri(s);
    if let Ok(p) = serde_json::from_str::<Predictor>(s) {
        let ann = p.metadata.annotations.clone().unwrap_or_default();
        let _ = registration("p", OWNER_PREDICTOR, &p.spec, &ann);
    }
    if let Ok(i) = serde_json::from_str::<InferenceService>(s) {
        let ann = i.metadata.annotations.clone().unwrap_or_default();
        if let Ok(spec) = predictor_spec(&i.spec, &ann) {
            let _ = registration("i", OWNER_ISVC, &spec, &ann);
        }
    }
});
