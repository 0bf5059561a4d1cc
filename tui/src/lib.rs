//! minik's live dashboard (ratatui): the cluster's components and pods at a glance.
//!
//! The dashboard is an API client like every other part of minik: it reads the cluster through
//! kube-apiserver and never through the store. Its widgets land with the dashboard issue; this crate
//! is the workspace member they will live in.
