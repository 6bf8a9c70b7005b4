//! Triton `config.pbtxt` (protobuf text format) for [`ModelConfig`], via prost-reflect.
//! Hand-writing a text-format parser would be a second, weaker copy of what prost-reflect does.

use crate::inference::ModelConfig;
use prost_reflect::{DynamicMessage, text_format::FormatOptions};

/// Fully-qualified name of Triton's model configuration message.
pub const MODEL_CONFIG: &str = "inference.ModelConfig";

/// Inserts the optional colon in `field [ ... ]` (list syntax for message fields), which Triton
/// configs nearly always omit and prost-reflect's parser requires. Strings and comments are
/// skipped so their contents are never changed.
fn add_list_colons(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    // Whether the last significant token was a field name (an identifier not followed by ':').
    let mut after_ident = false;
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                out.push(c);
                while let Some(d) = chars.next() {
                    out.push(d);
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            out.push(e);
                        }
                    } else if d == c {
                        break;
                    }
                }
                after_ident = false;
            }
            '#' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '[' if after_ident => {
                out.push_str(": [");
                after_ident = false;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                out.push(c);
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' || d == '.' {
                        out.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                after_ident = true;
            }
            c if c.is_whitespace() => out.push(c),
            c => {
                out.push(c);
                after_ident = false;
            }
        }
    }
    out
}

/// Parses a `config.pbtxt`; the error says where the text is wrong.
pub fn parse_model_config(text: &str) -> Result<ModelConfig, String> {
    let desc = crate::descriptor_pool()
        .get_message_by_name(MODEL_CONFIG)
        .ok_or_else(|| format!("{MODEL_CONFIG} missing from the descriptor pool"))?;
    let text = add_list_colons(text);
    let dynamic = DynamicMessage::parse_text_format(desc, &text).map_err(|e| e.to_string())?;
    dynamic
        .transcode_to::<ModelConfig>()
        .map_err(|e| e.to_string())
}

/// Renders a [`ModelConfig`] as multi-line text format, as Triton writes it.
pub fn model_config_to_text(config: &ModelConfig) -> String {
    let Some(desc) = crate::descriptor_pool().get_message_by_name(MODEL_CONFIG) else {
        return String::new();
    };
    let mut dynamic = DynamicMessage::new(desc);
    // Transcoding between two views of the same descriptor cannot fail.
    if dynamic.transcode_from(config).is_err() {
        return String::new();
    }
    let mut text = dynamic.to_text_format_with_options(&FormatOptions::new().pretty(true));
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_a_triton_config() {
        let text = r#"
            name: "add_one"
            backend: "python"
            max_batch_size: 0
            input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
            output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
            instance_group [ { kind: KIND_CPU count: 1 } ]
        "#;
        let cfg = parse_model_config(text).expect("valid config");
        assert_eq!(cfg.name, "add_one");
        assert_eq!(cfg.input[0].dims, vec![-1]);
        assert_eq!(cfg.instance_group[0].count, 1);
        let again = parse_model_config(&model_config_to_text(&cfg)).expect("round trip");
        assert_eq!(again, cfg);
    }

    #[test]
    fn list_colons_are_added_outside_strings_and_comments() {
        assert_eq!(add_list_colons("input [ {} ]"), "input : [ {} ]");
        assert_eq!(add_list_colons("dims: [ 1 ]"), "dims: [ 1 ]");
        assert_eq!(
            add_list_colons("name: \"a [b\" # c [d\nx [ ]"),
            "name: \"a [b\" # c [d\nx : [ ]"
        );
    }

    #[test]
    fn reports_where_the_text_is_wrong() {
        let err = parse_model_config("name: \"x\"\nnot_a_field: 3\n").unwrap_err();
        assert!(err.contains("not_a_field"), "{err}");
    }
}
