//! Untrusted model paths and model keys: a cleaned path never leaves its root (no `..`, never
//! absolute), and model keys parse or fail without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelmesh_adapters::model_key::ModelKey;
use modelmesh_adapters::puller::safe_path::{clean_relative, join};
use std::path::{Component, Path};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = clean_relative(s) {
        assert!(
            p.components().all(|c| matches!(c, Component::Normal(_))),
            "{s:?} cleaned to {p:?}"
        );
    }
    if let Ok(p) = join(Path::new("/models/root"), s) {
        assert!(p.starts_with("/models/root"), "{s:?} escaped to {p:?}");
    }
    if let Ok(k) = ModelKey::parse(s) {
        let _ = k.disk_size_bytes();
        let _ = k.model_type("onnx");
        let _ = k.to_json();
    }
});
