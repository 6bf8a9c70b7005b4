//! What a GGUF model file says about its memory: the header's architecture, layer count,
//! context length and attention shape, read from the metadata without touching the tensors.
//! Hand-written rather than taken from a crate: the GGUF crates decode every key (the tokenizer's
//! vocabulary included) into memory and allocate whatever lengths the file claims, and a file
//! named by a registration is untrusted input. This reader keeps only the keys it needs, skips
//! the rest, and refuses lengths and counts beyond fixed caps.

use std::io::{BufReader, Read, Seek};
use std::path::Path;

/// Why a file is not a usable GGUF model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GgufError {
    /// Not a GGUF file at all.
    #[error("not a GGUF file (the first bytes are not 'GGUF')")]
    NotGguf,
    /// A GGUF version this reader does not know.
    #[error("GGUF version {0} is not supported (2 and 3 are)")]
    Version(u32),
    /// The file ends inside its header.
    #[error("the GGUF header is truncated")]
    Truncated,
    /// A length or count in the header is beyond what a real model has.
    #[error("the GGUF header is malformed: {0}")]
    Malformed(String),
    /// A key the size estimate needs is missing.
    #[error("the GGUF metadata has no {0}")]
    Missing(String),
    /// The file is shorter than its tensors need (a truncated copy or download).
    #[error(
        "the file ends before its tensor data: the header places tensors up to byte {need}, the file has {have} bytes (a truncated copy or download?)"
    )]
    TensorsMissing {
        /// The least size the header implies.
        need: u64,
        /// The file's size.
        have: u64,
    },
    /// The file could not be read.
    #[error("cannot read the model file: {0}")]
    Io(String),
}

/// The memory-relevant facts of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufInfo {
    /// `general.architecture` (llama, qwen2, ...).
    pub architecture: String,
    /// Transformer layers.
    pub block_count: u64,
    /// The context the model was trained for (tokens).
    pub context_length: u64,
    /// Key and value width per token and layer, all KV heads together.
    pub kv_width: u64,
    /// The file's size in bytes (the weights are mapped from it).
    pub file_bytes: u64,
    /// The least size the file must have: where its last tensor's data starts.
    pub min_file_bytes: u64,
}

impl GgufInfo {
    /// Bytes of the KV cache for `n_ctx` tokens with 16-bit keys and values (llama.cpp's
    /// default cache type).
    pub fn kv_cache_bytes(&self, n_ctx: u64) -> u64 {
        // K and V, per layer, per token.
        2u64.saturating_mul(self.block_count)
            .saturating_mul(n_ctx)
            .saturating_mul(self.kv_width)
            .saturating_mul(2)
    }
}

// Caps on what the header may claim: far above real models (a 256k-token vocabulary, a few
// thousand keys), far below what would exhaust memory or time.
const MAX_KEYS: u64 = 1 << 16;
const MAX_KEY_BYTES: u64 = 1 << 16;
const MAX_STRING_BYTES: u64 = 1 << 24;
const MAX_ARRAY_ITEMS: u64 = 1 << 24;
const MAX_HEADER_BYTES: u64 = 1 << 28;
const MAX_TENSORS: u64 = 1 << 20;
const MAX_DIMS: u32 = 8;

/// Value types of the GGUF format.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

struct Reader<R> {
    r: BufReader<R>,
    read: u64,
}

/// A metadata value the estimate can use.
enum Val {
    Int(u64),
    Str(String),
    Other,
}

impl<R: Read + Seek> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => GgufError::Truncated,
            _ => GgufError::Io(e.to_string()),
        })?;
        self.count(N as u64)?;
        Ok(b)
    }

    fn count(&mut self, n: u64) -> Result<(), GgufError> {
        self.read = self.read.saturating_add(n);
        if self.read > MAX_HEADER_BYTES {
            return Err(GgufError::Malformed(format!(
                "the metadata is larger than {MAX_HEADER_BYTES} bytes"
            )));
        }
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes::<4>()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes::<8>()?))
    }

    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        self.count(n)?;
        let n = i64::try_from(n).map_err(|_| GgufError::Malformed("a length overflows".into()))?;
        // Relative seeks within the buffer keep it: a vocabulary of 150,000 strings is
        // skipped without a system call each.
        self.r
            .seek_relative(n)
            .map_err(|e| GgufError::Io(e.to_string()))?;
        Ok(())
    }

    fn len(&mut self, max: u64, what: &str) -> Result<u64, GgufError> {
        let n = self.u64()?;
        if n > max {
            return Err(GgufError::Malformed(format!(
                "{what} of {n} is over the limit of {max}"
            )));
        }
        Ok(n)
    }

    fn string(&mut self, max: u64) -> Result<String, GgufError> {
        let n = self.len(max, "a string length")?;
        let mut buf = vec![0u8; n as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|_| GgufError::Truncated)?;
        self.count(n)?;
        String::from_utf8(buf).map_err(|_| GgufError::Malformed("a string is not UTF-8".into()))
    }

    /// Reads a value of type `t`, keeping integers and short strings.
    fn value(&mut self, t: u32) -> Result<Val, GgufError> {
        Ok(match t {
            T_U8 | T_BOOL => Val::Int(u64::from(self.bytes::<1>()?[0])),
            T_I8 => {
                self.skip(1)?;
                Val::Other
            }
            T_U16 => Val::Int(u64::from(u16::from_le_bytes(self.bytes::<2>()?))),
            T_I16 => {
                self.skip(2)?;
                Val::Other
            }
            T_U32 => Val::Int(u64::from(self.u32()?)),
            T_I32 => Val::Int(u64::try_from(i32::from_le_bytes(self.bytes::<4>()?)).unwrap_or(0)),
            T_F32 => {
                self.skip(4)?;
                Val::Other
            }
            T_U64 => Val::Int(self.u64()?),
            T_I64 => Val::Int(u64::try_from(i64::from_le_bytes(self.bytes::<8>()?)).unwrap_or(0)),
            T_F64 => {
                self.skip(8)?;
                Val::Other
            }
            T_STRING => {
                let n = self.len(MAX_STRING_BYTES, "a string length")?;
                if n <= 256 {
                    let mut buf = vec![0u8; n as usize];
                    self.r
                        .read_exact(&mut buf)
                        .map_err(|_| GgufError::Truncated)?;
                    self.count(n)?;
                    String::from_utf8(buf).map_or(Val::Other, Val::Str)
                } else {
                    self.skip(n)?;
                    Val::Other
                }
            }
            T_ARRAY => {
                let item = self.u32()?;
                let n = self.len(MAX_ARRAY_ITEMS, "an array length")?;
                match fixed_width(item) {
                    Some(w) => self.skip(n.saturating_mul(w))?,
                    None if item == T_STRING => {
                        for _ in 0..n {
                            let len = self.len(MAX_STRING_BYTES, "a string length")?;
                            self.skip(len)?;
                        }
                    }
                    None => {
                        return Err(GgufError::Malformed(format!(
                            "an array of value type {item} (nested arrays are not used by models)"
                        )));
                    }
                }
                Val::Other
            }
            other => {
                return Err(GgufError::Malformed(format!("unknown value type {other}")));
            }
        })
    }
}

fn fixed_width(t: u32) -> Option<u64> {
    match t {
        T_U8 | T_I8 | T_BOOL => Some(1),
        T_U16 | T_I16 => Some(2),
        T_U32 | T_I32 | T_F32 => Some(4),
        T_U64 | T_I64 | T_F64 => Some(8),
        _ => None,
    }
}

/// Reads the memory-relevant metadata of the model at `path`.
pub fn read(path: &Path) -> Result<GgufInfo, GgufError> {
    let file = std::fs::File::open(path).map_err(|e| GgufError::Io(e.to_string()))?;
    let file_bytes = file
        .metadata()
        .map_err(|e| GgufError::Io(e.to_string()))?
        .len();
    let mut info = read_from(file)?;
    if file_bytes < info.min_file_bytes {
        return Err(GgufError::TensorsMissing {
            need: info.min_file_bytes,
            have: file_bytes,
        });
    }
    info.file_bytes = file_bytes;
    Ok(info)
}

/// [`read`] from any seekable reader (the file size is left 0).
pub fn read_from<R: Read + Seek>(r: R) -> Result<GgufInfo, GgufError> {
    let mut r = Reader {
        r: BufReader::new(r),
        read: 0,
    };
    if &r.bytes::<4>().map_err(|_| GgufError::NotGguf)? != b"GGUF" {
        return Err(GgufError::NotGguf);
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version(version));
    }
    let tensors = r.len(MAX_TENSORS, "a tensor count")?;
    let keys = r.len(MAX_KEYS, "a metadata key count")?;
    let mut strings: Vec<(String, String)> = Vec::new();
    let mut ints: Vec<(String, u64)> = Vec::new();
    for _ in 0..keys {
        let key = r.string(MAX_KEY_BYTES)?;
        let t = r.u32()?;
        match r.value(t)? {
            Val::Int(v) => ints.push((key, v)),
            Val::Str(s) => strings.push((key, s)),
            Val::Other => {}
        }
    }
    // Tensor descriptions follow the metadata: name, dimensions, type, offset in the data.
    let mut last_offset = None::<u64>;
    for _ in 0..tensors {
        let name = r.len(MAX_KEY_BYTES, "a tensor name length")?;
        r.skip(name)?;
        let dims = r.u32()?;
        if dims > MAX_DIMS {
            return Err(GgufError::Malformed(format!(
                "a tensor with {dims} dimensions (at most {MAX_DIMS})"
            )));
        }
        r.skip(8 * u64::from(dims))?;
        let _type = r.u32()?;
        let offset = r.u64()?;
        last_offset = Some(last_offset.map_or(offset, |o: u64| o.max(offset)));
    }
    let alignment = ints
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .map(|(_, v)| *v)
        .filter(|a| *a > 0 && *a <= 1 << 20)
        .unwrap_or(32);
    let data_start = r.read.div_ceil(alignment).saturating_mul(alignment);
    let min_file_bytes =
        last_offset.map_or(r.read, |o| data_start.saturating_add(o).saturating_add(1));
    let architecture = strings
        .iter()
        .find(|(k, _)| k == "general.architecture")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| GgufError::Missing("general.architecture".into()))?;
    let int = |name: &str| {
        let key = format!("{architecture}.{name}");
        ints.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    };
    let need =
        |name: &str| int(name).ok_or_else(|| GgufError::Missing(format!("{architecture}.{name}")));
    let block_count = need("block_count")?;
    let context_length = need("context_length")?;
    let embedding = need("embedding_length")?;
    let heads = need("attention.head_count")?.max(1);
    let kv_heads = int("attention.head_count_kv").unwrap_or(heads);
    let key_len = int("attention.key_length").unwrap_or(embedding / heads);
    let value_len = int("attention.value_length").unwrap_or(key_len);
    // The width of K and V together is counted by kv_cache_bytes' factor of 2; use their mean.
    let kv_width = kv_heads.saturating_mul(key_len.saturating_add(value_len)) / 2;
    Ok(GgufInfo {
        architecture,
        block_count,
        context_length,
        kv_width,
        file_bytes: 0,
        min_file_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend_from_slice(&(v.len() as u64).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }

    fn kv_u32(out: &mut Vec<u8>, k: &str, v: u32) {
        s(out, k);
        out.extend_from_slice(&T_U32.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }

    /// A header like the tiny test models': llama, 2 layers, 64 wide, 4 heads, 2 KV heads.
    fn header(extra_keys: u64, extra: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&(7 + extra_keys).to_le_bytes());
        s(&mut out, "general.architecture");
        out.extend_from_slice(&T_STRING.to_le_bytes());
        s(&mut out, "llama");
        // The vocabulary: an array of strings, skipped.
        s(&mut out, "tokenizer.ggml.tokens");
        out.extend_from_slice(&T_ARRAY.to_le_bytes());
        out.extend_from_slice(&T_STRING.to_le_bytes());
        out.extend_from_slice(&3u64.to_le_bytes());
        for t in ["<unk>", "<s>", "</s>"] {
            s(&mut out, t);
        }
        kv_u32(&mut out, "llama.block_count", 2);
        kv_u32(&mut out, "llama.context_length", 2048);
        kv_u32(&mut out, "llama.embedding_length", 64);
        kv_u32(&mut out, "llama.attention.head_count", 4);
        kv_u32(&mut out, "llama.attention.head_count_kv", 2);
        extra(&mut out);
        out
    }

    #[test]
    fn reads_the_shape_and_sizes_the_kv_cache() {
        let info = read_from(Cursor::new(header(0, |_| {}))).expect("parses");
        assert_eq!(info.architecture, "llama");
        assert_eq!((info.block_count, info.context_length), (2, 2048));
        // 2 KV heads of 16.
        assert_eq!(info.kv_width, 32);
        // K and V, 2 layers, 512 tokens, 32 wide, 2 bytes.
        assert_eq!(info.kv_cache_bytes(512), 2 * 2 * 512 * 32 * 2);
    }

    #[test]
    fn refuses_what_is_not_a_model() {
        assert_eq!(
            read_from(Cursor::new(b"PK\x03\x04....".to_vec())),
            Err(GgufError::NotGguf)
        );
        assert_eq!(
            read_from(Cursor::new(b"GG".to_vec())),
            Err(GgufError::NotGguf)
        );
        let mut v = header(0, |_| {});
        v.truncate(60);
        assert_eq!(read_from(Cursor::new(v)), Err(GgufError::Truncated));
        let mut v1 = b"GGUF".to_vec();
        v1.extend_from_slice(&9u32.to_le_bytes());
        assert_eq!(read_from(Cursor::new(v1)), Err(GgufError::Version(9)));
    }

    #[test]
    fn lengths_beyond_the_caps_are_refused_before_allocating() {
        let v = header(1, |out| {
            s(out, "huge");
            out.extend_from_slice(&T_STRING.to_le_bytes());
            out.extend_from_slice(&u64::MAX.to_le_bytes());
        });
        assert!(matches!(
            read_from(Cursor::new(v)),
            Err(GgufError::Malformed(_))
        ));
        let v = header(1, |out| {
            s(out, "many");
            out.extend_from_slice(&T_ARRAY.to_le_bytes());
            out.extend_from_slice(&T_U8.to_le_bytes());
            out.extend_from_slice(&(1u64 << 40).to_le_bytes());
        });
        assert!(matches!(
            read_from(Cursor::new(v)),
            Err(GgufError::Malformed(_))
        ));
        let mut v = b"GGUF".to_vec();
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            read_from(Cursor::new(v)),
            Err(GgufError::Malformed(_))
        ));
    }

    #[test]
    fn a_missing_shape_key_is_named() {
        let mut v = b"GGUF".to_vec();
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
        s(&mut v, "general.architecture");
        v.extend_from_slice(&T_STRING.to_le_bytes());
        s(&mut v, "qwen2");
        assert_eq!(
            read_from(Cursor::new(v)),
            Err(GgufError::Missing("qwen2.block_count".into()))
        );
    }

    #[test]
    fn never_panics_on_garbage() {
        let base = header(0, |_| {});
        for cut in 0..base.len() {
            let _ = read_from(Cursor::new(base[..cut].to_vec()));
            let mut flipped = base.clone();
            flipped[cut] ^= 0xff;
            let _ = read_from(Cursor::new(flipped));
        }
    }
}
