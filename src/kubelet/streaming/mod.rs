//! The kubelet's streaming server: how `kubectl logs`, `exec`, `attach` and `port-forward` reach
//! a container.
//!
//! In Kubernetes a client never talks to a kubelet directly. kubectl asks the API server for the
//! pod's `log`, `exec`, `attach` or `portforward` subresource; the API server checks the pod and
//! the user's rights, looks up the pod's node and opens the same request to that node's kubelet
//! (`https://<node InternalIP>:<daemonEndpoints.kubeletEndpoint.Port>`, authenticating with its
//! kubelet client certificate), then relays the answer: a streamed body for logs, and for the
//! interactive verbs an upgraded connection (HTTP 101) whose bytes it copies both ways.
//!
//! This module is that kubelet end, over the local Docker engine:
//!
//! - [`server`]: HTTPS (rustls) that only accepts client certificates from the cluster CA, with
//!   the real kubelet's paths (`/containerLogs/…`, `/exec/…`, `/attach/…`, `/portForward/…`,
//!   `/healthz`, `/pods`), and the lookup of a pod's containers by their dockershim labels;
//! - [`logs`]: container logs (follow, tailLines, timestamps, previous, sinceSeconds/sinceTime,
//!   limitBytes);
//! - [`remotecommand`]: exec and attach — stdin, stdout, stderr, the error stream with its v4/v5
//!   Status (exit codes), TTYs and resizes — over either transport:
//! - [`spdy`]: SPDY/3.1 framing (kubectl 1.27–1.29 for exec/attach; every port-forward), and
//! - [`websocket`]: RFC 6455 with the `v4`/`v5.channel.k8s.io` channel protocols (kubectl 1.30+)
//!   and the `SPDY/3.1+portforward.k8s.io` tunnel (kubectl 1.31+);
//! - [`portforward`]: the `portforward.k8s.io` protocol — per forwarded connection a data and an
//!   error stream, dialled to the pod's IP.

pub mod logs;
pub mod portforward;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod websocket;

pub use server::{PodSource, ServerOptions, serve, serve_on};
