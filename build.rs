//! Compiles `proto/` with a vendored `protoc`, so a machine with only Rust installed builds the crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        // Module chunks are handed from the file reader to the wire without a copy.
        .bytes(".wasmcache.v1.FetchResponse.chunk")
        .compile_protos(&["proto/wasmcache/v1/cache.proto"], &["proto"])?;
    Ok(())
}
