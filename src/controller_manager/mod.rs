//! kube-controller-manager: the control loops that turn desired state into actual state.
//!
//! The API server only stores objects. Something must notice that a Deployment wants 3 pods and
//! none exist, and create them: that is a *controller*. kube-controller-manager is one process
//! running dozens of them, each watching some resource types and nudging the cluster towards
//! what their objects' `spec` asks, then writing what it sees into their `status`:
//!
//! - [`replicaset`]: keeps `replicas` pods of a template running;
//! - [`deployment`]: rolls a template out through replica sets (rolling update, recreate,
//!   revision history, pause, progress deadline);
//! - [`garbage_collector`]: deletes objects whose owners are gone, and carries out
//!   foreground and orphan deletion;
//! - [`namespace`]: empties a namespace being deleted, then lets it go;
//! - [`serviceaccount`]: a `default` service account in every namespace;
//! - [`root_ca_publisher`]: the `kube-root-ca.crt` configMap (the cluster CA) in every
//!   namespace;
//! - [`endpoints`] and [`endpointslice`]: the addresses of the ready pods behind each service;
//! - [`daemonset`]: one pod per eligible node (rolling update, OnDelete);
//! - [`statefulset`]: pods with stable names and ordinals, created and removed in order, with
//!   their volume claims (rolling update with partition, OnDelete); [`history`] keeps the
//!   ControllerRevisions both of them roll out from;
//! - [`node_lifecycle`]: watches node heartbeats (Leases), marks silent nodes Unknown and
//!   taints nodes from their conditions, at per-zone rates ([`zones`]) that slow down or stop
//!   when many nodes fail at once;
//! - [`taint_eviction`]: deletes pods from nodes with `NoExecute` taints they do not tolerate;
//! - [`podgc`]: deletes pods of deleted nodes, surplus finished pods, and unscheduled
//!   terminating pods;
//! - [`job`]: runs a Job's pods to completion (parallelism, completions, Indexed jobs, back-off
//!   limit, active deadline, suspend);
//! - [`cronjob`]: creates Jobs on a cron schedule (see [`cron`]), with concurrency policies,
//!   starting deadlines and history limits;
//! - [`ttl_after_finished`]: deletes finished Jobs after `ttlSecondsAfterFinished`;
//! - [`resourcequota`]: keeps each ResourceQuota's `status.used` equal to what the namespace's
//!   objects use (the API server's quota admission charges creates; this gives back what
//!   deleted and finished objects no longer use);
//! - [`horizontal`]: the horizontal pod autoscaler: reads each HPA's target scale, keeps the
//!   replicas within `minReplicas`/`maxReplicas`, and reports (as the real one does without a
//!   metrics server) that no metrics can be had.
//!
//! Every controller has the same shape (Kubernetes' "sync one key" loop): event handlers on
//! shared informers (one watch and one cache per resource type for the whole process: see
//! [`informer`]) put the keys (`namespace/name`) of objects to reconcile on the controller's work
//! queue; workers take a key, read desired and actual state from the caches, act through the
//! API, and return. Nothing polls: a controller only looks again when something changed or
//! when it asked to be woken at a known time (a progress deadline, a cron schedule).
//!
//! Only one controller-manager acts at a time: leader election on a Lease
//! ([`crate::component_base::leader`]) decides which.

pub mod cron;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod expectations;
pub mod garbage_collector;
pub mod history;
pub mod horizontal;
pub mod informer;
pub mod job;
pub mod namespace;
pub mod node_lifecycle;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod root_ca_publisher;
pub mod serviceaccount;
pub mod statefulset;
pub mod taint_eviction;
pub mod ttl_after_finished;
pub mod util;
pub mod zones;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Node, PersistentVolumeClaim, Pod, ResourceQuota, Secret,
    Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;

use informer::Informer;

/// What `minik controller-manager` was asked to do (kube-controller-manager's flags).
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: PathBuf,
    pub leader_elect: bool,
    pub leader_elect_lease_duration: Duration,
    pub node_monitor_grace_period: Duration,
    /// `--node-startup-grace-period`: how long a node that never posted status may stay silent.
    pub node_startup_grace_period: Duration,
    /// `--node-eviction-rate`: nodes per second whose NoExecute taints are added in a healthy
    /// zone (see [`zones`]).
    pub node_eviction_rate: f32,
    /// `--secondary-node-eviction-rate`: the rate in a partly disrupted large zone.
    pub secondary_node_eviction_rate: f32,
    /// `--unhealthy-zone-threshold`: the share of not-Ready nodes making a zone unhealthy.
    pub unhealthy_zone_threshold: f32,
    /// `--large-cluster-size-threshold`: zones of more nodes are large.
    pub large_cluster_size_threshold: i32,
    /// `--terminated-pod-gc-threshold`: finished pods kept before the oldest are deleted
    /// (0 or less: never).
    pub terminated_pod_gc_threshold: i64,
    /// `--controllers`: `*` (all on by default), `name` (on), `-name` (off).
    pub controllers: Vec<String>,
    /// `--root-ca-file`: the cluster CA bundle published in every namespace as the configMap
    /// `kube-root-ca.crt` (none: the root-ca-cert-publisher does not run).
    pub root_ca_file: Option<PathBuf>,
    pub bind_address: String,
    pub secure_port: u16,
    pub concurrent_deployment_syncs: usize,
    pub concurrent_replicaset_syncs: usize,
    pub concurrent_gc_syncs: usize,
    pub concurrent_namespace_syncs: usize,
    pub concurrent_service_endpoint_syncs: usize,
    pub concurrent_serviceaccount_syncs: usize,
    pub concurrent_daemonset_syncs: usize,
    pub concurrent_statefulset_syncs: usize,
    pub concurrent_job_syncs: usize,
    pub concurrent_cron_job_syncs: usize,
    pub concurrent_ttl_after_finished_syncs: usize,
}

/// The controllers this process runs: (name, old alias).
pub const CONTROLLERS: &[(&str, &str)] = &[
    ("replicaset-controller", "replicaset"),
    ("deployment-controller", "deployment"),
    ("garbage-collector-controller", "garbagecollector"),
    ("namespace-controller", "namespace"),
    ("serviceaccount-controller", "serviceaccount"),
    (
        "root-ca-certificate-publisher-controller",
        "root-ca-cert-publisher",
    ),
    ("endpoints-controller", "endpoint"),
    ("endpointslice-controller", "endpointslice"),
    ("daemonset-controller", "daemonset"),
    ("statefulset-controller", "statefulset"),
    ("node-lifecycle-controller", "nodelifecycle"),
    ("taint-eviction-controller", "taint-eviction-controller"),
    ("pod-garbage-collector", "podgc"),
    ("job-controller", "job"),
    ("cronjob-controller", "cronjob"),
    ("ttl-after-finished-controller", "ttl-after-finished"),
    ("resourcequota-controller", "resourcequota"),
    (
        "horizontal-pod-autoscaler-controller",
        "horizontalpodautoscaling",
    ),
];

impl Config {
    /// Whether `--controllers` enables the controller `name` (or its old alias).
    pub fn enabled(&self, name: &str) -> bool {
        let alias = CONTROLLERS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
            .unwrap_or(name);
        let is = |s: &str| s == name || s == alias;
        let mut on = false;
        for c in &self.controllers {
            let c = c.trim();
            if let Some(off) = c.strip_prefix('-')
                && is(off)
            {
                return false;
            }
            if c == "*" || is(c) {
                on = true;
            }
        }
        on
    }
}

/// The shared informers: one watch and one cache per resource type.
pub struct Informers {
    pub pods: Arc<Informer<Pod>>,
    pub replicasets: Arc<Informer<ReplicaSet>>,
    pub deployments: Arc<Informer<Deployment>>,
    pub jobs: Arc<Informer<Job>>,
    pub cronjobs: Arc<Informer<CronJob>>,
    pub services: Arc<Informer<Service>>,
    pub endpoints: Arc<Informer<Endpoints>>,
    pub endpointslices: Arc<Informer<EndpointSlice>>,
    pub namespaces: Arc<Informer<Namespace>>,
    pub serviceaccounts: Arc<Informer<ServiceAccount>>,
    pub nodes: Arc<Informer<Node>>,
    pub daemonsets: Arc<Informer<DaemonSet>>,
    pub statefulsets: Arc<Informer<StatefulSet>>,
    pub controllerrevisions: Arc<Informer<ControllerRevision>>,
    pub persistentvolumeclaims: Arc<Informer<PersistentVolumeClaim>>,
    pub configmaps: Arc<Informer<ConfigMap>>,
    pub secrets: Arc<Informer<Secret>>,
    pub resourcequotas: Arc<Informer<ResourceQuota>>,
    pub hpas: Arc<Informer<HorizontalPodAutoscaler>>,
    /// The configMaps named `kube-root-ca.crt` only (the root CA publisher's).
    pub root_ca_configmaps: Arc<Informer<ConfigMap>>,
    /// The node heartbeats: Leases in `kube-node-lease` only.
    pub node_leases: Arc<Informer<Lease>>,
}

impl Informers {
    fn new(client: &Client) -> Informers {
        Informers {
            pods: Informer::new(client.clone()),
            replicasets: Informer::new(client.clone()),
            deployments: Informer::new(client.clone()),
            jobs: Informer::new(client.clone()),
            cronjobs: Informer::new(client.clone()),
            services: Informer::new(client.clone()),
            endpoints: Informer::new(client.clone()),
            endpointslices: Informer::new(client.clone()),
            namespaces: Informer::new(client.clone()),
            serviceaccounts: Informer::new(client.clone()),
            nodes: Informer::new(client.clone()),
            daemonsets: Informer::new(client.clone()),
            statefulsets: Informer::new(client.clone()),
            controllerrevisions: Informer::new(client.clone()),
            persistentvolumeclaims: Informer::new(client.clone()),
            configmaps: Informer::new(client.clone()),
            secrets: Informer::new(client.clone()),
            resourcequotas: Informer::new(client.clone()),
            hpas: Informer::new(client.clone()),
            root_ca_configmaps: Informer::with_fields(
                client.clone(),
                &format!("metadata.name={}", root_ca_publisher::CONFIG_MAP),
            ),
            node_leases: Informer::namespaced(client.clone(), "kube-node-lease"),
        }
    }

    fn start(&self) {
        self.pods.start();
        self.replicasets.start();
        self.deployments.start();
        self.jobs.start();
        self.cronjobs.start();
        self.services.start();
        self.endpoints.start();
        self.endpointslices.start();
        self.namespaces.start();
        self.serviceaccounts.start();
        self.nodes.start();
        self.daemonsets.start();
        self.statefulsets.start();
        self.controllerrevisions.start();
        self.persistentvolumeclaims.start();
        self.configmaps.start();
        self.secrets.start();
        self.resourcequotas.start();
        self.hpas.start();
        self.root_ca_configmaps.start();
        self.node_leases.start();
    }
}

/// What every controller shares: the API client, the informers and the configuration.
pub struct Ctx {
    pub client: Client,
    pub inf: Informers,
    pub config: Config,
}

impl Ctx {
    /// Waits until every informer has its first list in its cache.
    pub async fn synced(&self) {
        self.inf.pods.synced().await;
        self.inf.replicasets.synced().await;
        self.inf.deployments.synced().await;
        self.inf.jobs.synced().await;
        self.inf.cronjobs.synced().await;
        self.inf.services.synced().await;
        self.inf.endpoints.synced().await;
        self.inf.endpointslices.synced().await;
        self.inf.namespaces.synced().await;
        self.inf.serviceaccounts.synced().await;
        self.inf.nodes.synced().await;
        self.inf.daemonsets.synced().await;
        self.inf.statefulsets.synced().await;
        self.inf.controllerrevisions.synced().await;
        self.inf.persistentvolumeclaims.synced().await;
        self.inf.configmaps.synced().await;
        self.inf.secrets.synced().await;
        self.inf.resourcequotas.synced().await;
        self.inf.hpas.synced().await;
        self.inf.root_ca_configmaps.synced().await;
        self.inf.node_leases.synced().await;
    }
}

/// Runs the controller-manager until `shutdown` resolves (or leadership is lost).
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let client = crate::component_base::client::from_kubeconfig(&config.kubeconfig).await?;
    crate::component_base::health::serve(
        &config.bind_address,
        config.secure_port,
        Arc::new(|_: &str| None),
    )
    .await?;

    let work = async {
        if config.leader_elect {
            // Holds the Lease `kube-controller-manager` from here on; losing it ends the
            // process (the supervisor starts it again), as kube-controller-manager does.
            crate::component_base::leader::acquire(
                client.clone(),
                "kube-controller-manager",
                config.leader_elect_lease_duration,
            )
            .await?;
        }
        let ctx = Arc::new(Ctx {
            client: client.clone(),
            inf: Informers::new(&client),
            config: config.clone(),
        });
        start_controllers(&ctx)?;
        ctx.inf.start();
        let c = ctx.clone();
        tokio::spawn(async move {
            c.synced().await;
            tracing::info!("caches are synced");
        });
        std::future::pending::<anyhow::Result<()>>().await
    };
    tokio::select! {
        r = work => r,
        _ = shutdown => Ok(()),
    }
}

fn start_controllers(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let c = &ctx.config;
    let mut enabled: Vec<&str> = CONTROLLERS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| c.enabled(n))
        .collect();
    // A CA file that cannot be read stops the process before any controller starts, as
    // kube-controller-manager's "error starting controllers".
    let root_ca = match &c.root_ca_file {
        Some(path) if c.enabled("root-ca-certificate-publisher-controller") => {
            Some(root_ca_publisher::read_ca(path)?)
        }
        _ => None,
    };
    if c.enabled("replicaset-controller") {
        replicaset::start(ctx, c.concurrent_replicaset_syncs);
    }
    if c.enabled("deployment-controller") {
        deployment::start(ctx, c.concurrent_deployment_syncs);
    }
    if c.enabled("garbage-collector-controller") {
        garbage_collector::start(ctx, c.concurrent_gc_syncs);
    }
    if c.enabled("namespace-controller") {
        namespace::start(ctx, c.concurrent_namespace_syncs);
    }
    if c.enabled("serviceaccount-controller") {
        serviceaccount::start(ctx, c.concurrent_serviceaccount_syncs);
    }
    if c.enabled("root-ca-certificate-publisher-controller") {
        match root_ca {
            Some(ca) => root_ca_publisher::start(ctx, ca),
            None => {
                tracing::warn!(
                    controller = "root-ca-certificate-publisher-controller",
                    "not starting the root CA publisher: no --root-ca-file"
                );
                enabled.retain(|n| *n != "root-ca-certificate-publisher-controller");
            }
        }
    }
    if c.enabled("endpoints-controller") {
        endpoints::start(ctx, c.concurrent_service_endpoint_syncs);
    }
    if c.enabled("endpointslice-controller") {
        endpointslice::start(ctx, c.concurrent_service_endpoint_syncs);
    }
    if c.enabled("daemonset-controller") {
        daemonset::start(ctx, c.concurrent_daemonset_syncs);
    }
    if c.enabled("statefulset-controller") {
        statefulset::start(ctx, c.concurrent_statefulset_syncs);
    }
    if c.enabled("node-lifecycle-controller") {
        node_lifecycle::start(ctx);
    }
    if c.enabled("taint-eviction-controller") {
        taint_eviction::start(ctx);
    }
    if c.enabled("pod-garbage-collector") {
        podgc::start(ctx);
    }
    if c.enabled("job-controller") {
        job::start(ctx, c.concurrent_job_syncs);
    }
    if c.enabled("cronjob-controller") {
        cronjob::start(ctx, c.concurrent_cron_job_syncs);
    }
    if c.enabled("ttl-after-finished-controller") {
        ttl_after_finished::start(ctx, c.concurrent_ttl_after_finished_syncs);
    }
    if c.enabled("resourcequota-controller") {
        resourcequota::start(ctx, resourcequota::WORKERS);
    }
    if c.enabled("horizontal-pod-autoscaler-controller") {
        horizontal::start(ctx, horizontal::WORKERS);
    }
    tracing::info!(controllers = ?enabled, "started controllers");
    Ok(())
}
