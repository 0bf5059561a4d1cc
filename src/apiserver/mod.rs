//! **kube-apiserver** — the front door of the control plane.
//!
//! Every request from kubectl and from every component goes through the API server: it
//! authenticates, validates, defaults and stores objects in etcd, and serves the watches that
//! drive the whole cluster. It is the only component that talks to the store.
//!
//! Built so far (issue 3 is under way):
//! - [`server`]: HTTPS with client-certificate authentication (CN user, O groups), the REST
//!   verbs (get, list, create, update, delete, watch) and legacy discovery;
//! - [`resources`]: the served types (core/v1 namespaces, configmaps, secrets, serviceaccounts,
//!   events so far), their names, defaults and checks;
//! - [`storage`]: Kubernetes objects in etcd — the `/registry/...` key layout, create/update/delete
//!   guarded by resourceVersion, paged lists with continue tokens, watches from a resourceVersion —
//!   over the etcd v3 API only, so it runs on minik's store and on a real etcd alike;
//! - [`printers`]: the `Table` kubectl prints, with the real columns;
//! - [`status`]: `Status` errors as kubectl reads them; [`selector`]: label selectors;
//! - [`quota`]: the ResourceQuota admission plugin (creates over a quota refused, usage charged).

pub mod admission;
pub mod auth;
mod bootstrap;
pub mod cache;
pub mod convert;
pub mod crd;
pub mod defaults;
pub mod gojson;
pub mod handlers;
pub mod kubelet_proxy;
pub mod openapi;
pub mod printers;
pub mod protobuf;
pub mod proxy;
pub mod quota;
pub mod resources;
pub mod selector;
pub mod server;
pub mod ssa;
pub mod status;
pub mod storage;
pub mod strategic;
pub mod subresources;
pub mod typed;
pub mod validation;
