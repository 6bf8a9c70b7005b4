//! Parsing JSON settings (KV_STORE connection files, type constraints, dataplane config) so
//! that an error names the field at fault (`onnx.required: invalid type ...`), not only a
//! line and column.

/// Parses `text`; the error starts with the path of the offending field, when there is one.
pub fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // "." is the document itself and "?" an unknown position: no field to name.
        if matches!(path.as_str(), "" | "." | "?") {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        struct Inner {
            #[allow(dead_code)]
            required: Vec<String>,
        }
        let e = super::parse::<std::collections::HashMap<String, Inner>>(
            r#"{"onnx": {"required": "x"}}"#,
        )
        .unwrap_err();
        assert!(e.starts_with("onnx.required: invalid type"), "{e}");
        let e = super::parse::<Vec<u8>>("{").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }
}
