//! The model-id field path into a protobuf message: reading never panics on any bytes, and a
//! successful splice reads back as the spliced id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelmesh_mesh::idpath::{read_string, write_string};

fuzz_target!(|data: &[u8]| {
    // First byte: path depth (0-3); then one byte per field number; the rest is the message.
    let Some((&depth, rest)) = data.split_first() else {
        return;
    };
    let depth = (depth % 4) as usize;
    if rest.len() < depth {
        return;
    }
    let (fields, msg) = rest.split_at(depth);
    let path: Vec<u32> = fields.iter().map(|&f| u32::from(f % 20)).collect();
    let _ = read_string(msg, &path);
    if let Ok(out) = write_string(msg, &path, "model-7") {
        if !path.is_empty() {
            assert_eq!(
                read_string(&out, &path).ok().flatten().as_deref(),
                Some("model-7"),
                "a splice must read back"
            );
        }
    }
});
