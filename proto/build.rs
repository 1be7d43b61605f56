//! Compiles Ferry's .proto files with the protoc binary shipped in `protoc-bin-vendored`, so a
//! build never depends on a system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "ferry/admin/v1/admin.proto",
        "ferry/cluster/v1/cluster.proto",
    ];
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known_types = protoc_bin_vendored::include_path()?;

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Binary fields become `bytes::Bytes`, tonic's own buffer type, so payloads move without copies.
    config.bytes(["."]);

    tonic_prost_build::configure().compile_with_config(
        config,
        &protos.map(PathBuf::from),
        &[PathBuf::from("."), well_known_types],
    )?;
    Ok(())
}
