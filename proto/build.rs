//! Compiles the `.proto` sources with protox (a pure-Rust protobuf compiler), so building needs no
//! system `protoc`. The serialized descriptor set is also kept for reflection and text-format parsing.
use std::path::PathBuf;

const FILES: &[&str] = &[
    "mmesh/model-mesh.proto",
    "mmesh/model-runtime.proto",
    "inference/model_config.proto",
    "inference/grpc_service.proto",
    "inference/model_repository.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let files: Vec<PathBuf> = FILES.iter().map(|f| root.join(f)).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptors.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::StrictCodec")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
