//! What the mesh reads from an OpenAI request body: the `model` it names and whether the answer
//! streams. Nothing else is parsed (every other field goes to the runtime as it came); an error
//! names the field, as OpenAI's own 400 answers do.

use serde::Deserialize;

/// The fields routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The vmodel (or, with `mm-model-id`, the model) the call is for.
    pub model: String,
    /// `"stream": true`: the answer is server-sent events.
    pub stream: bool,
}

/// Why a body cannot be routed, with the field at fault (`None`: the body as a whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadBody {
    /// What is wrong, for the client.
    pub message: String,
    /// The field at fault, as OpenAI's `param`.
    pub param: Option<&'static str>,
}

/// The two fields, unparsed; every other field is skipped without being kept.
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default)]
    model: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a serde_json::value::RawValue>,
}

/// Reads the routing fields of `body`. With `model_header` (an `mm-model-id` header) the body's
/// `model` may be absent.
pub fn parse(body: &[u8], model_header: bool) -> Result<Head, BadBody> {
    // serde would read a struct from an array too (`[1]` as model 1): only objects are bodies.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(BadBody {
            message: "the request body must be a JSON object".into(),
            param: None,
        });
    }
    let raw: Raw<'_> = serde_json::from_slice(body).map_err(|e| BadBody {
        message: if e.is_syntax() || e.is_eof() {
            format!("the request body is not valid JSON: {e}")
        } else {
            format!("the request body must be a JSON object: {e}")
        },
        param: None,
    })?;
    let model = match raw.model {
        None if model_header => String::new(),
        None => {
            return Err(BadBody {
                message: "you must provide a model parameter: the model (vmodel) to use".into(),
                param: Some("model"),
            });
        }
        Some(v) => serde_json::from_str::<String>(v.get()).map_err(|_| BadBody {
            message: format!("'model' must be a string, got {}", short(v.get())),
            param: Some("model"),
        })?,
    };
    if model.is_empty() && !model_header {
        return Err(BadBody {
            message: "'model' must not be empty".into(),
            param: Some("model"),
        });
    }
    let stream = match raw.stream {
        None => false,
        Some(v) if v.get() == "null" => false,
        Some(v) => serde_json::from_str::<bool>(v.get()).map_err(|_| BadBody {
            message: format!("'stream' must be true or false, got {}", short(v.get())),
            param: Some("stream"),
        })?,
    };
    Ok(Head { model, stream })
}

fn short(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_and_stream() {
        let h = parse(
            br#"{"model":"chat","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            false,
        )
        .unwrap();
        assert_eq!(
            h,
            Head {
                model: "chat".into(),
                stream: true
            }
        );
        let h = parse(br#"{"model":"m","stream":null}"#, false).unwrap();
        assert!(!h.stream);
        assert_eq!(parse(br#"{"prompt":"x"}"#, true).unwrap().model, "");
        // Escapes in keys and values are read as JSON means them.
        let h = parse(br#"{"mo\u0064el":"a\u0062","x\n":1}"#, false).unwrap();
        assert_eq!(h.model, "ab");
    }

    #[test]
    fn each_bad_body_names_its_field() {
        for (body, param, words) in [
            (&br#"{"messages":[]}"#[..], Some("model"), "provide a model"),
            (br#"{"model":7}"#, Some("model"), "must be a string"),
            (br#"{"model":""}"#, Some("model"), "must not be empty"),
            (
                br#"{"model":"m","stream":"yes"}"#,
                Some("stream"),
                "true or false",
            ),
            (b"{", None, "not valid JSON"),
            (b"[1]", None, "JSON object"),
            (b"", None, "not valid JSON"),
        ] {
            let e = parse(body, false).unwrap_err();
            assert_eq!(e.param, param, "{}", String::from_utf8_lossy(body));
            assert!(
                e.message.contains(words),
                "{}: {}",
                String::from_utf8_lossy(body),
                e.message
            );
        }
    }
}
