//! Generates the `grpc` transform's TransformService client and server from
//! `proto/transform/v1/transform.proto` into `$OUT_DIR/transform.v1.rs`. protox parses the proto
//! in Rust (well-known types included), so the build needs no `protoc`.

use std::path::Path;

pub fn generate(manifest_dir: &Path) -> Result<(), String> {
    let proto_dir = manifest_dir.join("proto");
    let file = proto_dir.join("transform/v1/transform.proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let fds = protox::compile([&file], [&proto_dir]).map_err(|e| format!("{e}"))?;
    tonic_prost_build::configure()
        .build_client(true)
        // The server half is what the example transform server in tests/ implements.
        .build_server(true)
        .build_transport(false)
        .compile_fds(fds)
        .map_err(|e| format!("generating the TransformService code: {e}"))
}
