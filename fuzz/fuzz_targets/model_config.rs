//! Triton `config.pbtxt` text (a file in an untrusted model directory): parses or fails, never
//! panics; what parses prints back to text that parses again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelmesh_proto::text_format::{model_config_to_text, parse_model_config};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = parse_model_config(s) {
        let text = model_config_to_text(&c);
        assert!(
            parse_model_config(&text).is_ok(),
            "printed config does not parse: {text}"
        );
    }
});
