//! `minik`: one multi-call binary for the whole cluster lab.
//!
//! The binary is thin, as Kubernetes' `cmd/` mains are: it parses the command line and hands over
//! to [`minik::cli`], where each verb and each component entry point lives.

/// mimalloc: the store and the gRPC stack allocate per request; mimalloc's thread-local free lists
/// cost measurably less CPU per request than glibc's malloc under many concurrent clients.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    minik::cli::main()
}
