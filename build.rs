//! Generates the etcd v3 gRPC API (messages, tonic servers and clients) from `proto/etcd/*.proto`.
//!
//! The .proto files are parsed in-process by `protox`, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(
        ["etcd/rpc.proto", "etcd/kv.proto", "etcd/auth.proto"],
        ["proto"],
    )?;

    // The etcd codec adds etcd's request-size and txn-nesting checks to prost (src/etcd/codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::etcd::codec::EtcdCodec")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;

    Ok(())
}
