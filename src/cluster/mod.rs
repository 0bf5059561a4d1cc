//! **cluster** — what a minik cluster is on disk and on the machine: profiles, PKI, kubeconfigs
//! and the ports its components listen on (the profile, PKI and kubeconfig parts arrive with
//! `minik up`).
//!
//! - [`ports`]: which process holds a port, for errors that say what to stop.

pub mod ports;
