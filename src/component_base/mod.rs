//! **component_base** — what every control-plane component shares, as Kubernetes'
//! `k8s.io/component-base`: the HTTPS endpoint for health checks and debug pages
//! ([`health`]), a client from a kubeconfig ([`client`]) and leader election on a Lease
//! ([`leader`]), label selectors ([`labels`]), resource quantities ("100m", "128Mi") read
//! as apimachinery reads them ([`quantity`]: the scheduler's requests, the kubelet's limits,
//! the quota admission), the probes' TLS client ([`tls`]), and the process-wide memory
//! settings ([`memory`]).

pub mod client;
pub mod health;
pub mod labels;
pub mod leader;
pub mod memory;
pub mod quantity;
pub mod tls;
