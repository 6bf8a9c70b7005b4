//! Generated protobuf and gRPC code for every wire format modelmesh speaks.
//!
//! - [`mmesh`]: the `mmesh.ModelMesh` management API and the `mmesh.ModelRuntime` SPI.
//! - [`inference`]: KServe v2 / Triton `inference.GRPCInferenceService` (with the repository
//!   extension) and Triton's model-config messages.
//! - [`inference::model_repository`]: MLServer's `ModelRepositoryService`.
//!
//! Package, message and field names and numbers match upstream exactly; `tests/wire_compat.rs`
//! checks that against the descriptors the real Python clients ship.

#![allow(clippy::all, missing_docs)]

/// `mmesh.ModelMesh` and `mmesh.ModelRuntime`.
pub mod mmesh {
    tonic::include_proto!("mmesh");
}

/// KServe v2 / Triton data plane and model configuration.
pub mod inference {
    tonic::include_proto!("inference");

    /// MLServer's model-repository service.
    pub mod model_repository {
        tonic::include_proto!("inference.model_repository");
    }
}

pub mod codec;
pub mod kserve_json;
pub mod openai;
pub mod text_format;

/// The serialized `FileDescriptorSet` of every proto file in this crate.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// A descriptor pool over [`FILE_DESCRIPTOR_SET`], for reflection and text-format parsing.
pub fn descriptor_pool() -> &'static prost_reflect::DescriptorPool {
    static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        // The bytes were produced by our own build script from protox output; decoding them
        // can only fail if the build itself is broken.
        prost_reflect::DescriptorPool::decode(FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("embedded descriptor set is invalid: {e}"))
    })
}
