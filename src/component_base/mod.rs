//! **component_base** — what every control-plane component shares, as Kubernetes'
//! `k8s.io/component-base`: the HTTPS endpoint for health checks and debug pages
//! ([`health`]), a client from a kubeconfig ([`client`]) and leader election on a Lease
//! ([`leader`]), label selectors ([`labels`]), the probes' TLS client ([`tls`]), and the
//! process-wide memory settings ([`memory`]).

pub mod client;
pub mod health;
pub mod labels;
pub mod leader;
pub mod memory;
pub mod tls;
