//! Reading and replacing a string field of a serialized protobuf message by field-number path
//! (the runtime's `idInjectionPath`, e.g. `[1]` for ModelInfer's `model_name`), without a
//! schema and without decoding anything else. Hand-written because no crate edits raw protobuf
//! by path; it touches only the tags on the path and copies every other byte as it is.

/// Malformed protobuf input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes are not a valid protobuf message.
    #[error("request is not a valid protobuf message: {0}")]
    Malformed(&'static str),
    /// The field on the path has a different wire type.
    #[error("field {0} on the model-id path is not a string or message")]
    WrongType(u32),
    /// The path names a field number protobuf does not allow (0, or above 2^29 - 1).
    #[error("field number {0} on the model-id path is not a valid protobuf field number")]
    InvalidPath(u32),
}

/// The largest protobuf field number.
const MAX_FIELD: u32 = (1 << 29) - 1;

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or(WireError::Malformed("truncated varint"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(WireError::Malformed("varint too long"))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// One field: number, wire type, and the byte ranges of the whole field and its payload.
struct Field {
    number: u32,
    wire: u8,
    start: usize,
    payload: std::ops::Range<usize>,
}

fn fields(buf: &[u8]) -> Result<Vec<Field>, WireError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let key = varint(buf, &mut pos)?;
        let number =
            u32::try_from(key >> 3).map_err(|_| WireError::Malformed("field number too large"))?;
        if number == 0 {
            return Err(WireError::Malformed("field number 0"));
        }
        let wire = (key & 7) as u8;
        let payload_start = pos;
        match wire {
            0 => {
                varint(buf, &mut pos)?;
            }
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?)
                    .map_err(|_| WireError::Malformed("length too large"))?;
                let begin = pos;
                pos = pos
                    .checked_add(len)
                    .ok_or(WireError::Malformed("length overflow"))?;
                if pos > buf.len() {
                    return Err(WireError::Malformed("truncated length-delimited field"));
                }
                out.push(Field {
                    number,
                    wire,
                    start,
                    payload: begin..pos,
                });
                continue;
            }
            _ => return Err(WireError::Malformed("unsupported wire type (groups)")),
        }
        if pos > buf.len() {
            return Err(WireError::Malformed("truncated fixed-width field"));
        }
        out.push(Field {
            number,
            wire,
            start,
            payload: payload_start..pos,
        });
    }
    Ok(out)
}

/// The string at `path` (the last occurrence wins, as in protobuf), if present.
pub fn read_string(msg: &[u8], path: &[u32]) -> Result<Option<String>, WireError> {
    let Some((&first, rest)) = path.split_first() else {
        return Ok(None);
    };
    let fs = fields(msg)?;
    let Some(f) = fs.iter().rev().find(|f| f.number == first) else {
        return Ok(None);
    };
    if f.wire != 2 {
        return Err(WireError::WrongType(first));
    }
    let payload = &msg[f.payload.clone()];
    if rest.is_empty() {
        return std::str::from_utf8(payload)
            .map(|s| Some(s.to_string()))
            .map_err(|_| WireError::Malformed("model id field is not UTF-8"));
    }
    read_string(payload, rest)
}

/// A copy of `msg` whose field at `path` holds `value`: every occurrence of the last field is
/// replaced by one (at the first occurrence's place), missing parent messages are created.
pub fn write_string(msg: &[u8], path: &[u32], value: &str) -> Result<Vec<u8>, WireError> {
    let Some((&first, rest)) = path.split_first() else {
        return Ok(msg.to_vec());
    };
    // Found by fuzzing: field 0 was written, and then nothing could read the message.
    if first == 0 || first > MAX_FIELD {
        return Err(WireError::InvalidPath(first));
    }
    let fs = fields(msg)?;
    let new_payload: Vec<u8> = if rest.is_empty() {
        value.as_bytes().to_vec()
    } else {
        // Nested: protobuf merges repeated occurrences of a message field; edit the last one.
        let inner = match fs.iter().rev().find(|f| f.number == first) {
            Some(f) if f.wire != 2 => return Err(WireError::WrongType(first)),
            Some(f) => &msg[f.payload.clone()],
            None => &[][..],
        };
        write_string(inner, rest, value)?
    };
    let mut encoded = Vec::with_capacity(new_payload.len() + 8);
    put_varint(&mut encoded, (u64::from(first) << 3) | 2);
    put_varint(&mut encoded, new_payload.len() as u64);
    encoded.extend_from_slice(&new_payload);

    let mut out = Vec::with_capacity(msg.len() + encoded.len());
    let mut written = false;
    let mut pos = 0;
    for f in &fs {
        if f.number == first {
            out.extend_from_slice(&msg[pos..f.start]);
            if !written {
                out.extend_from_slice(&encoded);
                written = true;
            }
            pos = f.payload.end;
        }
    }
    out.extend_from_slice(&msg[pos..]);
    if !written {
        out.extend_from_slice(&encoded);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_field_numbers_are_refused_not_written() {
        // fuzz/artifacts: path [0, 10, 1] on an empty message.
        assert_eq!(
            write_string(&[], &[0, 10, 1], "m"),
            Err(WireError::InvalidPath(0))
        );
        assert_eq!(
            write_string(&[], &[1, 1 << 29], "m"),
            Err(WireError::InvalidPath(1 << 29))
        );
        let ok = write_string(&[], &[2, 1], "m").unwrap();
        assert_eq!(read_string(&ok, &[2, 1]).unwrap().as_deref(), Some("m"));
    }
    use modelmesh_proto::inference::{ModelInferRequest, model_infer_request::InferInputTensor};
    use prost::Message;

    fn sample() -> ModelInferRequest {
        ModelInferRequest {
            model_name: "vmodel-a".into(),
            id: "req-1".into(),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                shape: vec![1, 4],
                ..Default::default()
            }],
            raw_input_contents: vec![vec![1, 2, 3, 4]],
            ..Default::default()
        }
    }

    #[test]
    fn reads_and_splices_model_name() {
        let bytes = sample().encode_to_vec();
        assert_eq!(
            read_string(&bytes, &[1]).unwrap().as_deref(),
            Some("vmodel-a")
        );
        let out = write_string(&bytes, &[1], "concrete-model__isvc-0123456789").unwrap();
        let decoded = ModelInferRequest::decode(out.as_slice()).unwrap();
        let mut want = sample();
        want.model_name = "concrete-model__isvc-0123456789".into();
        assert_eq!(decoded, want);
        // Absent field is added.
        let empty = ModelInferRequest::default().encode_to_vec();
        let out = write_string(&empty, &[1], "m").unwrap();
        assert_eq!(
            ModelInferRequest::decode(out.as_slice())
                .unwrap()
                .model_name,
            "m"
        );
        // Nested path: input[0].name (field 5 then field 1).
        assert_eq!(read_string(&bytes, &[5, 1]).unwrap().as_deref(), Some("x"));
        let out = write_string(&bytes, &[5, 1], "y").unwrap();
        assert_eq!(
            ModelInferRequest::decode(out.as_slice()).unwrap().inputs[0].name,
            "y"
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(read_string(&[0x0a, 0x05, b'a'], &[1]).is_err());
        assert!(read_string(&[0x08], &[1]).is_err());
        assert_eq!(
            read_string(&[0x08, 0x01], &[1]),
            Err(WireError::WrongType(1))
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_round_trips(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
                                        name in "[a-z0-9_-]{0,20}") {
            let _ = read_string(&bytes, &[1]);
            if let Ok(out) = write_string(&bytes, &[1], &name) {
                proptest::prop_assert_eq!(read_string(&out, &[1]).unwrap(), Some(name.clone()));
            }
            let mut m = sample();
            m.model_name = name.clone();
            let enc = m.encode_to_vec();
            let out = write_string(&enc, &[1], "z").unwrap();
            proptest::prop_assert_eq!(ModelInferRequest::decode(out.as_slice()).unwrap().model_name, "z");
        }
    }
}
