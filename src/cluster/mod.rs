//! **cluster** — what a minik cluster is on disk and on the machine: profiles, config, PKI,
//! kubeconfigs, static-pod manifests, backups and the ports its components listen on.
//!
//! - [`profile`]: a profile's state folder, its files and locks;
//! - [`config`]: the cluster config file (`apiVersion: minik.dev/v1alpha1`, `kind: Cluster`);
//! - [`pki`]: the cluster's certificates and keys in kubeadm's layout, and kubeconfigs;
//! - [`setup`]: everything a new profile needs before its first process starts;
//! - [`manifests`]: the control plane's static-pod manifests (kubeadm's shape);
//! - [`kubeconfig`]: merging the profile's context into the user's kubeconfig;
//! - [`backup`]: snapshots of the running store;
//! - [`ports`]: which process holds a port, for errors that say what to stop.

pub mod backup;
pub mod config;
pub mod kubeconfig;
pub mod manifests;
pub mod nodes;
pub mod pki;
pub mod ports;
pub mod profile;
pub mod setup;
