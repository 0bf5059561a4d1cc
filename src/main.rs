//! `minik`: one multi-call binary for the whole cluster lab.
//!
//! The binary is thin, as Kubernetes' `cmd/` mains are: it parses the command line and hands over
//! to [`minik::cli`], where each verb and each component entry point lives.

fn main() -> std::process::ExitCode {
    minik::cli::main()
}
