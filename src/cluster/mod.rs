//! **cluster** — what a minik cluster is on disk and on the machine: profiles, PKI, kubeconfigs
//! and the ports its components listen on (the profile part arrives with `minik up`).
//!
//! - [`pki`]: the cluster's certificates and keys in kubeadm's layout, and kubeconfigs.
//! - [`ports`]: which process holds a port, for errors that say what to stop.

pub mod pki;
pub mod ports;
