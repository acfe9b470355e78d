//! Compiles `proto/` with a vendored `protoc`, so a machine with only Rust installed builds the crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Served by gRPC reflection, so grpcurl works without the .proto file.
        .file_descriptor_set_path(out_dir.join("wasmcache_descriptor.bin"))
        // Module chunks are handed from the file reader to the wire without a copy.
        .bytes(".wasmcache.v1.FetchResponse.chunk")
        .compile_protos(&["proto/wasmcache/v1/cache.proto"], &["proto"])?;
    Ok(())
}
