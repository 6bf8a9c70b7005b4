//! What an LLM call or model brings in from outside: a GGUF header (a registration names the
//! file), and an OpenAI request body. The header reader never panics or allocates beyond its
//! caps; the body reader never panics; a body whose `model` is replaced still parses, with the
//! new model and nothing else changed (checked where serde_json's tree reads the input: other
//! fields pass through unjudged, so a lone surrogate or deep nesting stays the runtime's call).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = modelmesh_adapters::gguf::read_from(std::io::Cursor::new(data));
    let _ = modelmesh_mesh::openai::request::parse(data, false);
    let spliced = modelmesh_mesh::route::with_model(data, "m-\"1");
    if let Ok(before) = serde_json::from_slice::<serde_json::Value>(data)
        && before.is_object()
    {
        let out = spliced.expect("an object body is spliced");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("spliced body is JSON");
        assert_eq!(v["model"], "m-\"1");
        if let (Some(a), Some(b)) = (before.as_object(), v.as_object()) {
            for (k, val) in a {
                if k != "model" {
                    assert_eq!(b.get(k), Some(val), "{k}");
                }
            }
        }
    }
});
