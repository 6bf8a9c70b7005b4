//! Tensor element types: the KServe v2 names on the wire (`"FP32"`), Triton's config enum
//! (`TYPE_FP32`) and tract's `DatumType`, and the conversions between them.

use modelmesh_proto::inference::DataType as ConfigType;
use tract_onnx::prelude::DatumType;

/// An element type the runtime can carry in and out of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// One byte per element, 0 or 1.
    Bool,
    /// Unsigned 8-bit integer.
    Uint8,
    /// Unsigned 16-bit integer.
    Uint16,
    /// Unsigned 32-bit integer.
    Uint32,
    /// Unsigned 64-bit integer.
    Uint64,
    /// Signed 8-bit integer.
    Int8,
    /// Signed 16-bit integer.
    Int16,
    /// Signed 32-bit integer.
    Int32,
    /// Signed 64-bit integer.
    Int64,
    /// IEEE half precision.
    Fp16,
    /// IEEE single precision.
    Fp32,
    /// IEEE double precision.
    Fp64,
}

impl DataType {
    /// Every supported type, for listing in error messages.
    pub const ALL: [DataType; 12] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
    ];

    /// The KServe v2 name, e.g. `FP32`.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
        }
    }

    /// Parses a KServe v2 name; `None` for unknown or unsupported ones (such as `BYTES`).
    pub fn from_name(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Bytes per element in `raw_*_contents`.
    pub fn size(self) -> usize {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
        }
    }

    /// tract's element type.
    pub fn datum_type(self) -> DatumType {
        match self {
            DataType::Bool => DatumType::Bool,
            DataType::Uint8 => DatumType::U8,
            DataType::Uint16 => DatumType::U16,
            DataType::Uint32 => DatumType::U32,
            DataType::Uint64 => DatumType::U64,
            DataType::Int8 => DatumType::I8,
            DataType::Int16 => DatumType::I16,
            DataType::Int32 => DatumType::I32,
            DataType::Int64 => DatumType::I64,
            DataType::Fp16 => DatumType::F16,
            DataType::Fp32 => DatumType::F32,
            DataType::Fp64 => DatumType::F64,
        }
    }

    /// The type for a tract element type, if the runtime supports it.
    pub fn from_datum_type(dt: DatumType) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.datum_type() == dt)
    }

    /// Triton's model-config enum value.
    pub fn config_type(self) -> ConfigType {
        match self {
            DataType::Bool => ConfigType::TypeBool,
            DataType::Uint8 => ConfigType::TypeUint8,
            DataType::Uint16 => ConfigType::TypeUint16,
            DataType::Uint32 => ConfigType::TypeUint32,
            DataType::Uint64 => ConfigType::TypeUint64,
            DataType::Int8 => ConfigType::TypeInt8,
            DataType::Int16 => ConfigType::TypeInt16,
            DataType::Int32 => ConfigType::TypeInt32,
            DataType::Int64 => ConfigType::TypeInt64,
            DataType::Fp16 => ConfigType::TypeFp16,
            DataType::Fp32 => ConfigType::TypeFp32,
            DataType::Fp64 => ConfigType::TypeFp64,
        }
    }

    /// The type for a Triton model-config enum value, if supported.
    pub fn from_config_type(t: ConfigType) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.config_type() == t)
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DataType::ALL {
            assert_eq!(DataType::from_name(d.name()), Some(d));
            assert_eq!(DataType::from_datum_type(d.datum_type()), Some(d));
            assert_eq!(DataType::from_config_type(d.config_type()), Some(d));
        }
        assert_eq!(DataType::from_name("BYTES"), None);
        assert_eq!(DataType::from_name("fp32"), None);
    }
}
