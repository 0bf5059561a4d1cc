//! Generates the etcd v3 gRPC API (messages, tonic servers and clients) from `proto/etcd/*.proto`.
//!
//! The .proto files are parsed in-process by `protox`, so no system `protoc` is needed.
//!
//! It also hands the linker `link/kubelet.order`, which lays the kubelet's functions out side by
//! side in optimized builds (the file says why).

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

    kubelet_code_layout();
    Ok(())
}

/// LLD's `--symbol-ordering-file` for the `minik` binary, where LLD is the linker: rustc 1.90 and
/// later link with their own LLD on x86_64-unknown-linux-gnu. Debug builds keep the default
/// layout.
fn kubelet_code_layout() {
    println!("cargo:rerun-if-changed=link/kubelet.order");
    let target = std::env::var("TARGET").unwrap_or_default();
    let optimized = std::env::var("OPT_LEVEL").is_ok_and(|l| l != "0");
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    if target == "x86_64-unknown-linux-gnu" && optimized && rustc_links_with_lld() {
        println!(
            "cargo:rustc-link-arg-bin=minik=-Wl,--symbol-ordering-file={dir}/link/kubelet.order"
        );
        println!("cargo:rustc-link-arg-bin=minik=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether this rustc is 1.90 or later (the first to link with LLD by default on Linux x86_64).
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let Ok(out) = std::process::Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
