//! Triton's repository layout: `<dir>/<modelId>/[config.pbtxt]` and
//! `<dir>/<modelId>/<version>/model.<ext>`. Rules follow the upstream Triton adapter:
//! a single file goes to version 1 under its framework's file name; a directory with a
//! `config.pbtxt` is a native Triton model (the config's `name` is cleared so Triton uses the
//! directory name, i.e. the model id); any other directory is placed as one version.

use super::{entries, fresh_dir, link, schema};
use crate::error::AdapterError;
use modelmesh_proto::inference::{DataType as ConfigType, ModelConfig, ModelInput, ModelOutput};
use modelmesh_proto::text_format::{model_config_to_text, parse_model_config};
use std::path::{Path, PathBuf};

/// The file name Triton's backend for `model_type` looks for, if it has a fixed one.
pub fn model_file_name(model_type: &str) -> Option<&'static str> {
    match model_type {
        "onnx" => Some("model.onnx"),
        "tensorflow" => Some("model.graphdef"),
        "tensorrt" => Some("model.plan"),
        "pytorch" => Some("model.pt"),
        _ => None,
    }
}

fn backend(model_type: &str) -> Option<&'static str> {
    match model_type {
        "tensorflow" | "keras" => Some("tensorflow"),
        "tensorrt" => Some("tensorrt"),
        "onnx" => Some("onnxruntime"),
        "pytorch" => Some("pytorch"),
        _ => None,
    }
}

fn config_type(datatype: &str) -> Result<i32, AdapterError> {
    let t = match datatype {
        "BOOL" => ConfigType::TypeBool,
        "UINT8" => ConfigType::TypeUint8,
        "UINT16" => ConfigType::TypeUint16,
        "UINT32" => ConfigType::TypeUint32,
        "UINT64" => ConfigType::TypeUint64,
        "INT8" => ConfigType::TypeInt8,
        "INT16" => ConfigType::TypeInt16,
        "INT32" => ConfigType::TypeInt32,
        "INT64" => ConfigType::TypeInt64,
        "FP16" => ConfigType::TypeFp16,
        "FP32" => ConfigType::TypeFp32,
        "FP64" => ConfigType::TypeFp64,
        "BYTES" => ConfigType::TypeString,
        "BF16" => ConfigType::TypeBf16,
        other => {
            return Err(AdapterError::invalid(format!(
                "model schema datatype '{other}' is not a KServe v2 datatype"
            )));
        }
    };
    Ok(t as i32)
}

/// Converts a schema to Triton config inputs and outputs. With batching, every tensor's first
/// dim must be -1 and is dropped (Triton's dims exclude the batch dimension).
fn apply_schema(cfg: &mut ModelConfig, s: &schema::Schema) -> Result<(), AdapterError> {
    let batch = cfg.max_batch_size > 0;
    let dims = |t: &schema::SchemaTensor| -> Result<Vec<i64>, AdapterError> {
        if !batch {
            return Ok(t.shape.clone());
        }
        match t.shape.split_first() {
            Some((-1, rest)) => Ok(rest.to_vec()),
            _ => Err(AdapterError::invalid(format!(
                "model schema tensor '{}' must have -1 as its first dimension when max_batch_size > 0",
                t.name
            ))),
        }
    };
    cfg.input = s
        .inputs
        .iter()
        .map(|t| {
            Ok(ModelInput {
                name: t.name.clone(),
                data_type: config_type(&t.datatype)?,
                dims: dims(t)?,
                ..Default::default()
            })
        })
        .collect::<Result<_, AdapterError>>()?;
    cfg.output = s
        .outputs
        .iter()
        .map(|t| {
            Ok(ModelOutput {
                name: t.name.clone(),
                data_type: config_type(&t.datatype)?,
                dims: dims(t)?,
                ..Default::default()
            })
        })
        .collect::<Result<_, AdapterError>>()?;
    Ok(())
}

fn is_numeric_dir(e: &std::fs::DirEntry) -> bool {
    e.path().is_dir()
        && e.file_name()
            .to_str()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Builds `<triton_dir>/<model_id>` for a pulled model at `src`; returns that directory.
pub fn adapt(
    triton_dir: &Path,
    model_id: &str,
    model_type: &str,
    src: &Path,
    schema_path: Option<&Path>,
) -> Result<PathBuf, AdapterError> {
    let target = triton_dir.join(model_id);
    fresh_dir(&target)?;
    if model_type == "keras" && src.extension().is_some_and(|e| e == "h5") {
        return Err(AdapterError::Unimplemented(
            "keras .h5 models are not converted by this adapter: save the model as a TensorFlow SavedModel".into(),
        ));
    }
    let meta = std::fs::metadata(src).map_err(|e| {
        AdapterError::NotFound(format!(
            "model path {} is not accessible: {e}",
            src.display()
        ))
    })?;
    if meta.is_dir() && src.join("config.pbtxt").is_file() {
        return adapt_native(src, &target, schema_path);
    }
    let mut version = "1".to_string();
    let mut cur = src.to_path_buf();
    if meta.is_dir() {
        let items: Vec<_> = entries(&cur)?
            .into_iter()
            .filter(|e| e.file_name() != "_schema.json")
            .collect();
        if !items.is_empty() && items.iter().all(is_numeric_dir) {
            // `is_numeric_dir` guarantees the name parses.
            if let Some(best) = items
                .iter()
                .max_by_key(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()))
            {
                version = best.file_name().to_string_lossy().into_owned();
                cur = best.path();
            }
        }
        let inner: Vec<_> = entries(&cur)?
            .into_iter()
            .filter(|e| e.file_name() != "_schema.json")
            .collect();
        if inner.len() == 1 && model_file_name(model_type).is_some() {
            cur = inner[0].path();
        }
    }
    let vdir = target.join(&version);
    if cur.is_file() {
        let name = model_file_name(model_type)
            .map(str::to_string)
            .unwrap_or_else(|| {
                cur.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "model".into())
            });
        link(&cur, &vdir.join(name))?;
    } else {
        match model_type {
            "tensorflow" | "keras" => link(&cur, &vdir.join("model.savedmodel"))?,
            "onnx" => link(&cur, &vdir.join("model.onnx"))?,
            _ => link(&cur, &vdir)?,
        }
    }
    if let Some(sp) = schema_path {
        let s = schema::read(sp)?;
        let mut cfg = ModelConfig {
            backend: backend(model_type).unwrap_or_default().to_string(),
            ..Default::default()
        };
        apply_schema(&mut cfg, &s)?;
        write_config(&target, &cfg)?;
    }
    Ok(target)
}

fn write_config(target: &Path, cfg: &ModelConfig) -> Result<(), AdapterError> {
    let path = target.join("config.pbtxt");
    std::fs::write(&path, model_config_to_text(cfg))
        .map_err(|e| AdapterError::io(format!("writing {}", path.display()), e))
}

/// A native Triton model directory: link everything, rewrite `config.pbtxt` without its name.
fn adapt_native(
    src: &Path,
    target: &Path,
    schema_path: Option<&Path>,
) -> Result<PathBuf, AdapterError> {
    for e in entries(src)? {
        if e.file_name() == "config.pbtxt" {
            continue;
        }
        link(&e.path(), &target.join(e.file_name()))?;
    }
    let cfg_path = src.join("config.pbtxt");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| AdapterError::io(format!("reading {}", cfg_path.display()), e))?;
    match parse_model_config(&text) {
        Ok(mut cfg) => {
            // Triton requires the name to match the directory, which is the model id.
            cfg.name.clear();
            if let Some(sp) = schema_path {
                apply_schema(&mut cfg, &schema::read(sp)?)?;
            }
            write_config(target, &cfg)?;
        }
        Err(e) => {
            tracing::warn!(path = %cfg_path.display(), error = %e, "config.pbtxt does not parse; copying it unchanged");
            std::fs::write(target.join("config.pbtxt"), text)
                .map_err(|e| AdapterError::io(format!("writing {}", target.display()), e))?;
        }
    }
    Ok(target.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_link(p: &Path) -> PathBuf {
        std::fs::read_link(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn single_file_goes_to_version_one_under_the_framework_name() {
        let src = tempfile::tempdir().unwrap();
        let f = src.path().join("mnist.onnx");
        std::fs::write(&f, b"x").unwrap();
        let out = tempfile::tempdir().unwrap();
        let t = adapt(out.path(), "m1", "onnx", &f, None).unwrap();
        assert_eq!(read_link(&t.join("1/model.onnx")), f);
        let t = adapt(out.path(), "m2", "custom", &f, None).unwrap();
        assert_eq!(read_link(&t.join("1/mnist.onnx")), f);
    }

    #[test]
    fn versioned_directory_uses_the_largest_version() {
        let src = tempfile::tempdir().unwrap();
        for v in ["1", "7", "3"] {
            std::fs::create_dir_all(src.path().join(v)).unwrap();
            std::fs::write(src.path().join(v).join("model.onnx"), v).unwrap();
        }
        let out = tempfile::tempdir().unwrap();
        let t = adapt(out.path(), "m", "onnx", src.path(), None).unwrap();
        assert_eq!(
            read_link(&t.join("7/model.onnx")),
            src.path().join("7/model.onnx")
        );
    }

    #[test]
    fn native_layout_clears_the_config_name() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("1")).unwrap();
        std::fs::write(src.path().join("1/model.py"), b"x").unwrap();
        std::fs::write(
            src.path().join("config.pbtxt"),
            "name: \"add_one\"\nbackend: \"python\"\nmax_batch_size: 0\n",
        )
        .unwrap();
        let out = tempfile::tempdir().unwrap();
        let t = adapt(out.path(), "id-1", "python", src.path(), None).unwrap();
        let cfg =
            parse_model_config(&std::fs::read_to_string(t.join("config.pbtxt")).unwrap()).unwrap();
        assert_eq!(cfg.name, "");
        assert_eq!(cfg.backend, "python");
        assert_eq!(read_link(&t.join("1")), src.path().join("1"));
    }

    #[test]
    fn schema_becomes_a_config() {
        let src = tempfile::tempdir().unwrap();
        let f = src.path().join("m.onnx");
        std::fs::write(&f, b"x").unwrap();
        let sp = src.path().join("_schema.json");
        std::fs::write(&sp, r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[-1,4]}],"outputs":[{"name":"y","datatype":"INT64","shape":[1]}]}"#).unwrap();
        let out = tempfile::tempdir().unwrap();
        let t = adapt(out.path(), "m", "onnx", &f, Some(&sp)).unwrap();
        let cfg =
            parse_model_config(&std::fs::read_to_string(t.join("config.pbtxt")).unwrap()).unwrap();
        assert_eq!(cfg.backend, "onnxruntime");
        assert_eq!(cfg.input[0].dims, vec![-1, 4]);
        assert_eq!(cfg.output[0].data_type, ConfigType::TypeInt64 as i32);
    }
}
