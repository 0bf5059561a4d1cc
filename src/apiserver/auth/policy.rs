//! The default RBAC policy a new cluster starts with, as kube-apiserver's bootstrap policy
//! (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`, Kubernetes 1.33 with its default feature
//! gates) creates it: the user-facing roles (`cluster-admin`, and `admin` ⊃ `edit` ⊃ `view`,
//! aggregated from the `system:aggregate-to-*` roles), the discovery roles everyone gets, the
//! roles of the control-plane components and of each controller of the controller-manager
//! (`system:controller:<name>`, bound to the service account `kube-system/<name>`), and their
//! bindings. Every object carries the label `kubernetes.io/bootstrapping: rbac-defaults` and the
//! annotation `rbac.authorization.kubernetes.io/autoupdate: "true"`.

use serde_json::{Map, Value, json};

const API_VERSION: &str = "rbac.authorization.k8s.io/v1";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const CREATE_PATCH_UPDATE: &[&str] = &["create", "patch", "update"];

/// The core ("legacy") API group.
const CORE: &[&str] = &[""];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn named(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Value {
    json!({"apiGroups": groups, "resourceNames": names, "resources": resources, "verbs": verbs})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

/// Writing events, in both event APIs.
fn events() -> Value {
    rule(CREATE_PATCH_UPDATE, &["", "events.k8s.io"], &["events"])
}

fn metadata(name: &str, extra_labels: &[(&str, &str)]) -> Value {
    let mut labels = Map::new();
    labels.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    for (k, v) in extra_labels {
        labels.insert((*k).to_string(), json!(v));
    }
    json!({
        "name": name,
        "labels": labels,
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    })
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    labelled_role(name, &[], rules)
}

fn labelled_role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "ClusterRole",
        "metadata": metadata(name, labels),
        "rules": rules,
    })
}

/// A ClusterRole whose rules are those of the ClusterRoles labelled `<selector>: "true"`.
fn aggregated_role(name: &str, labels: &[(&str, &str)], selector: &str) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "ClusterRole",
        "metadata": metadata(name, labels),
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {selector: "true"}}]},
        "rules": [],
    })
}

enum Subject<'a> {
    User(&'a str),
    Group(&'a str),
    ServiceAccount(&'a str, &'a str),
}

fn binding(name: &str, role: &str, subjects: &[Subject]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|s| match s {
            Subject::User(n) => json!({"apiGroup": RBAC_GROUP, "kind": "User", "name": n}),
            Subject::Group(n) => json!({"apiGroup": RBAC_GROUP, "kind": "Group", "name": n}),
            Subject::ServiceAccount(ns, n) => {
                json!({"kind": "ServiceAccount", "name": n, "namespace": ns})
            }
        })
        .collect();
    let mut b = json!({
        "apiVersion": API_VERSION,
        "kind": "ClusterRoleBinding",
        "metadata": metadata(name, &[]),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
    });
    if !subjects.is_empty() {
        b["subjects"] = json!(subjects);
    }
    b
}

const TO_ADMIN: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-admin", "true");
const TO_EDIT: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-edit", "true");
const TO_VIEW: (&str, &str) = ("rbac.authorization.k8s.io/aggregate-to-view", "true");

fn cluster_roles() -> Vec<Value> {
    vec![
        cluster_role(
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        cluster_role(
            "system:discovery",
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:monitoring",
            vec![urls(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        aggregated_role("admin", &[], TO_ADMIN.0),
        aggregated_role("edit", &[TO_ADMIN], TO_EDIT.0),
        aggregated_role("view", &[TO_EDIT], TO_VIEW.0),
        labelled_role(
            "system:aggregate-to-admin",
            &[TO_ADMIN],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                rule(READ_WRITE, &[RBAC_GROUP], &["rolebindings", "roles"]),
            ],
        ),
        labelled_role(
            "system:aggregate-to-edit",
            &[TO_EDIT],
            vec![
                rule(
                    READ,
                    CORE,
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], CORE, &["serviceaccounts"]),
                rule(
                    WRITE,
                    CORE,
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                ),
                rule(&["create"], CORE, &["pods/eviction"]),
                rule(
                    WRITE,
                    CORE,
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                rule(&["create"], CORE, &["serviceaccounts/token"]),
                rule(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
                rule(
                    WRITE,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "ingresses",
                        "networkpolicies",
                        "replicasets",
                        "replicasets/scale",
                        "replicationcontrollers/scale",
                    ],
                ),
                rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
                rule(
                    WRITE,
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                ),
                rule(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
            ],
        ),
        labelled_role(
            "system:aggregate-to-view",
            &[TO_VIEW],
            vec![
                rule(
                    READ,
                    CORE,
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                rule(
                    READ,
                    CORE,
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                rule(READ, CORE, &["namespaces"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                rule(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                rule(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                rule(
                    READ,
                    &["extensions"],
                    &[
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "ingresses",
                        "ingresses/status",
                        "networkpolicies",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "replicationcontrollers/scale",
                    ],
                ),
                rule(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
            ],
        ),
        cluster_role(
            "system:auth-delegator",
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:kube-aggregator",
            vec![rule(READ, CORE, &["endpoints", "services"])],
        ),
        cluster_role(
            "system:kube-controller-manager",
            vec![
                events(),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-controller-manager"],
                ),
                rule(&["create"], CORE, &["secrets", "serviceaccounts"]),
                rule(&["delete"], CORE, &["secrets"]),
                rule(
                    &["get"],
                    CORE,
                    &["configmaps", "namespaces", "secrets", "serviceaccounts"],
                ),
                rule(&["update"], CORE, &["secrets", "serviceaccounts"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                rule(&["list", "watch"], &["*"], &["*"]),
                rule(&["create"], CORE, &["serviceaccounts/token"]),
            ],
        ),
        cluster_role(
            "system:kube-dns",
            vec![rule(&["list", "watch"], CORE, &["endpoints", "services"])],
        ),
        cluster_role(
            "system:kube-scheduler",
            vec![
                events(),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "list", "update", "watch"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-scheduler"],
                ),
                rule(READ, CORE, &["nodes"]),
                rule(&["delete", "get", "list", "watch"], CORE, &["pods"]),
                rule(&["create"], CORE, &["bindings", "pods/binding"]),
                rule(&["patch", "update"], CORE, &["pods/status"]),
                rule(READ, CORE, &["replicationcontrollers", "services"]),
                rule(READ, &["apps", "extensions"], &["replicasets"]),
                rule(READ, &["apps"], &["statefulsets"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(READ, CORE, &["persistentvolumeclaims", "persistentvolumes"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                rule(READ, &["storage.k8s.io"], &["csinodes"]),
                rule(READ, &["storage.k8s.io"], &["volumeattachments"]),
                rule(READ, CORE, &["namespaces"]),
                rule(READ, &["storage.k8s.io"], &["csidrivers"]),
                rule(READ, &["storage.k8s.io"], &["csistoragecapacities"]),
            ],
        ),
        cluster_role(
            "system:volume-scheduler",
            vec![
                rule(
                    &["get", "list", "patch", "update", "watch"],
                    CORE,
                    &["persistentvolumes"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(
                    &["get", "list", "patch", "update", "watch"],
                    CORE,
                    &["persistentvolumeclaims"],
                ),
            ],
        ),
        cluster_role(
            "system:kubelet-api-admin",
            vec![
                rule(READ, CORE, &["nodes"]),
                rule(&["proxy"], CORE, &["nodes"]),
                rule(
                    &["*"],
                    CORE,
                    &["nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats"],
                ),
            ],
        ),
        cluster_role(
            "system:node",
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews", "subjectaccessreviews"],
                ),
                rule(READ, CORE, &["services"]),
                rule(&["create", "get", "list", "watch"], CORE, &["nodes"]),
                rule(&["patch", "update"], CORE, &["nodes/status"]),
                rule(&["patch", "update"], CORE, &["nodes"]),
                rule(CREATE_PATCH_UPDATE, CORE, &["events"]),
                rule(READ, CORE, &["pods"]),
                rule(&["create", "delete"], CORE, &["pods"]),
                rule(&["patch", "update"], CORE, &["pods/status"]),
                rule(&["create"], CORE, &["pods/eviction"]),
                rule(READ, CORE, &["configmaps", "secrets"]),
                rule(
                    &["get"],
                    CORE,
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                rule(&["get"], CORE, &["endpoints"]),
                rule(
                    &["create", "get", "list", "watch"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
                rule(
                    &["create", "delete", "get", "patch", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                rule(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
                rule(&["create"], CORE, &["serviceaccounts/token"]),
                rule(
                    &["get", "patch", "update"],
                    CORE,
                    &["persistentvolumeclaims/status"],
                ),
                rule(READ, &["storage.k8s.io"], &["csidrivers"]),
                rule(
                    &["create", "delete", "get", "patch", "update"],
                    &["storage.k8s.io"],
                    &["csinodes"],
                ),
                rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
            ],
        ),
        cluster_role(
            "system:node-bootstrapper",
            vec![rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        cluster_role(
            "system:node-problem-detector",
            vec![
                rule(&["get"], CORE, &["nodes"]),
                rule(&["patch"], CORE, &["nodes/status"]),
                events(),
            ],
        ),
        cluster_role(
            "system:node-proxier",
            vec![
                rule(&["list", "watch"], CORE, &["endpoints", "services"]),
                rule(READ, CORE, &["nodes"]),
                events(),
                rule(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        cluster_role(
            "system:persistent-volume-provisioner",
            vec![
                rule(
                    &["create", "delete", "get", "list", "watch"],
                    CORE,
                    &["persistentvolumes"],
                ),
                rule(
                    &["get", "list", "update", "watch"],
                    CORE,
                    &["persistentvolumeclaims"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(&["watch"], CORE, &["events"]),
                events(),
            ],
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            vec![urls(
                &["get"],
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        signer_approver(
            "system:certificates.k8s.io:kube-apiserver-client-approver",
            "kubernetes.io/kube-apiserver-client",
        ),
        signer_approver(
            "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
            "kubernetes.io/kube-apiserver-client-kubelet",
        ),
        signer_approver(
            "system:certificates.k8s.io:kubelet-serving-approver",
            "kubernetes.io/kubelet-serving",
        ),
        signer_approver(
            "system:certificates.k8s.io:legacy-unknown-approver",
            "kubernetes.io/legacy-unknown",
        ),
    ]
}

fn signer_approver(name: &str, signer: &str) -> Value {
    cluster_role(
        name,
        vec![named(
            &["approve"],
            &["certificates.k8s.io"],
            &["signers"],
            &[signer],
        )],
    )
}

/// The controller-manager's controllers' roles: (controller name, rules). Each becomes the
/// ClusterRole `system:controller:<name>` bound to the service account `kube-system/<name>`,
/// which the controller-manager uses with `--use-service-account-credentials` (kubeadm's
/// setting).
fn controller_roles() -> Vec<(&'static str, Vec<Value>)> {
    let apps_ext: &[&str] = &["apps", "extensions"];
    vec![
        (
            "attachdetach-controller",
            vec![
                rule(
                    &["list", "watch"],
                    CORE,
                    &["persistentvolumeclaims", "persistentvolumes"],
                ),
                rule(READ, CORE, &["nodes"]),
                rule(&["patch", "update"], CORE, &["nodes/status"]),
                rule(&["list", "watch"], CORE, &["pods"]),
                events(),
                rule(
                    &["create", "delete", "get", "list", "watch"],
                    &["storage.k8s.io"],
                    &["volumeattachments"],
                ),
                rule(READ, &["storage.k8s.io"], &["csidrivers"]),
                rule(READ, &["storage.k8s.io"], &["csinodes"]),
            ],
        ),
        (
            "certificate-controller",
            vec![
                rule(
                    &["delete", "get", "list", "watch"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
                rule(
                    &["update"],
                    &["certificates.k8s.io"],
                    &[
                        "certificatesigningrequests/approval",
                        "certificatesigningrequests/status",
                    ],
                ),
                named(
                    &["approve"],
                    &["certificates.k8s.io"],
                    &["signers"],
                    &["kubernetes.io/kube-apiserver-client-kubelet"],
                ),
                named(
                    &["sign"],
                    &["certificates.k8s.io"],
                    &["signers"],
                    &[
                        "kubernetes.io/kube-apiserver-client",
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                        "kubernetes.io/legacy-unknown",
                    ],
                ),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
                events(),
            ],
        ),
        (
            "clusterrole-aggregation-controller",
            vec![rule(
                &["escalate", "get", "list", "patch", "update", "watch"],
                &[RBAC_GROUP],
                &["clusterroles"],
            )],
        ),
        (
            "cronjob-controller",
            vec![
                rule(
                    &["get", "list", "update", "watch"],
                    &["batch"],
                    &["cronjobs"],
                ),
                rule(
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                    &["batch"],
                    &["jobs"],
                ),
                rule(&["update"], &["batch"], &["cronjobs/status"]),
                rule(&["update"], &["batch"], &["cronjobs/finalizers"]),
                rule(&["delete", "list"], CORE, &["pods"]),
                events(),
            ],
        ),
        (
            "daemon-set-controller",
            vec![
                rule(READ, apps_ext, &["daemonsets"]),
                rule(&["update"], apps_ext, &["daemonsets/status"]),
                rule(&["update"], apps_ext, &["daemonsets/finalizers"]),
                rule(&["list", "watch"], CORE, &["nodes"]),
                rule(
                    &["create", "delete", "list", "patch", "watch"],
                    CORE,
                    &["pods"],
                ),
                rule(&["create"], CORE, &["pods/binding"]),
                rule(
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                    &["apps"],
                    &["controllerrevisions"],
                ),
                events(),
            ],
        ),
        (
            "deployment-controller",
            vec![
                rule(
                    &["get", "list", "update", "watch"],
                    apps_ext,
                    &["deployments"],
                ),
                rule(&["update"], apps_ext, &["deployments/status"]),
                rule(&["update"], apps_ext, &["deployments/finalizers"]),
                rule(
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                    apps_ext,
                    &["replicasets"],
                ),
                rule(&["get", "list", "update", "watch"], CORE, &["pods"]),
                events(),
            ],
        ),
        (
            "disruption-controller",
            vec![
                rule(READ, apps_ext, &["deployments"]),
                rule(READ, apps_ext, &["replicasets"]),
                rule(READ, CORE, &["replicationcontrollers"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(READ, &["apps"], &["statefulsets"]),
                rule(&["update"], &["policy"], &["poddisruptionbudgets/status"]),
                rule(&["patch", "update"], CORE, &["pods/status"]),
                rule(&["get"], &["*"], &["*/scale"]),
                events(),
            ],
        ),
        (
            "endpoint-controller",
            vec![
                rule(READ, CORE, &["pods", "services"]),
                rule(
                    &["create", "delete", "get", "list", "update"],
                    CORE,
                    &["endpoints"],
                ),
                rule(&["create"], CORE, &["endpoints/restricted"]),
                events(),
            ],
        ),
        (
            "endpointslice-controller",
            vec![
                rule(READ, CORE, &["nodes", "pods", "services"]),
                rule(&["update"], CORE, &["services/finalizers"]),
                rule(
                    &["create", "delete", "get", "list", "update"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                events(),
            ],
        ),
        (
            "endpointslicemirroring-controller",
            vec![
                rule(READ, CORE, &["endpoints", "services"]),
                rule(&["update"], CORE, &["services/finalizers"]),
                rule(&["update"], CORE, &["endpoints/finalizers"]),
                rule(
                    &["create", "delete", "get", "list", "update"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                events(),
            ],
        ),
        (
            "ephemeral-volume-controller",
            vec![
                rule(READ, CORE, &["pods"]),
                rule(&["update"], CORE, &["pods/finalizers"]),
                rule(
                    &["create", "get", "list", "watch"],
                    CORE,
                    &["persistentvolumeclaims"],
                ),
                events(),
            ],
        ),
        (
            "expand-controller",
            vec![
                rule(
                    &["get", "list", "patch", "update", "watch"],
                    CORE,
                    &["persistentvolumes"],
                ),
                rule(
                    &["patch", "update"],
                    CORE,
                    &["persistentvolumeclaims/status"],
                ),
                rule(READ, CORE, &["persistentvolumeclaims"]),
                events(),
                rule(&["get"], CORE, &["services"]),
            ],
        ),
        (
            "generic-garbage-collector",
            vec![
                rule(
                    &["delete", "get", "list", "patch", "update", "watch"],
                    &["*"],
                    &["*"],
                ),
                events(),
            ],
        ),
        (
            "horizontal-pod-autoscaler",
            vec![
                rule(READ, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(
                    &["update"],
                    &["autoscaling"],
                    &["horizontalpodautoscalers/status"],
                ),
                rule(&["get", "update"], &["*"], &["*/scale"]),
                rule(&["list"], CORE, &["pods"]),
                rule(&["list"], &["metrics.k8s.io"], &["pods"]),
                rule(&["get", "list"], &["custom.metrics.k8s.io"], &["*"]),
                rule(&["get", "list"], &["external.metrics.k8s.io"], &["*"]),
                events(),
            ],
        ),
        (
            "job-controller",
            vec![
                rule(
                    &["get", "list", "patch", "update", "watch"],
                    &["batch"],
                    &["jobs"],
                ),
                rule(&["update"], &["batch"], &["jobs/status"]),
                rule(&["update"], &["batch"], &["jobs/finalizers"]),
                rule(
                    &["create", "delete", "list", "patch", "watch"],
                    CORE,
                    &["pods"],
                ),
                events(),
            ],
        ),
        (
            "legacy-service-account-token-cleaner",
            vec![
                named(
                    &["get"],
                    CORE,
                    &["configmaps"],
                    &["kube-apiserver-legacy-service-account-token-tracking"],
                ),
                rule(&["delete", "patch"], CORE, &["secrets"]),
            ],
        ),
        (
            "namespace-controller",
            vec![
                rule(&["delete", "get", "list", "watch"], CORE, &["namespaces"]),
                rule(
                    &["update"],
                    CORE,
                    &["namespaces/finalize", "namespaces/status"],
                ),
                rule(
                    &["delete", "deletecollection", "get", "list"],
                    &["*"],
                    &["*"],
                ),
            ],
        ),
        (
            "node-controller",
            vec![
                rule(
                    &["delete", "get", "list", "patch", "update"],
                    CORE,
                    &["nodes"],
                ),
                rule(&["patch", "update"], CORE, &["nodes/status"]),
                rule(&["patch", "update"], CORE, &["pods/status"]),
                rule(&["delete", "get", "list"], CORE, &["pods"]),
                events(),
            ],
        ),
        (
            "persistent-volume-binder",
            vec![
                rule(
                    &["create", "delete", "get", "list", "update", "watch"],
                    CORE,
                    &["persistentvolumes"],
                ),
                rule(&["update"], CORE, &["persistentvolumes/status"]),
                rule(
                    &["get", "list", "update", "watch"],
                    CORE,
                    &["persistentvolumeclaims"],
                ),
                rule(&["update"], CORE, &["persistentvolumeclaims/status"]),
                rule(
                    &["create", "delete", "get", "list", "watch"],
                    CORE,
                    &["pods"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses"]),
                rule(&["list", "watch"], CORE, &["nodes"]),
                events(),
                rule(&["watch"], CORE, &["events"]),
                rule(&["get"], CORE, &["services"]),
            ],
        ),
        (
            "pod-garbage-collector",
            vec![
                rule(&["delete", "list", "watch"], CORE, &["pods"]),
                rule(&["get", "list"], CORE, &["nodes"]),
                rule(&["patch"], CORE, &["pods/status"]),
            ],
        ),
        (
            "pv-protection-controller",
            vec![
                rule(
                    &["get", "list", "update", "watch"],
                    CORE,
                    &["persistentvolumes"],
                ),
                events(),
            ],
        ),
        (
            "pvc-protection-controller",
            vec![
                rule(
                    &["get", "list", "update", "watch"],
                    CORE,
                    &["persistentvolumeclaims"],
                ),
                rule(READ, CORE, &["pods"]),
                events(),
            ],
        ),
        (
            "replicaset-controller",
            vec![
                rule(
                    &["get", "list", "update", "watch"],
                    apps_ext,
                    &["replicasets"],
                ),
                rule(&["update"], apps_ext, &["replicasets/status"]),
                rule(&["update"], apps_ext, &["replicasets/finalizers"]),
                rule(
                    &["create", "delete", "list", "patch", "watch"],
                    CORE,
                    &["pods"],
                ),
                events(),
            ],
        ),
        (
            "replication-controller",
            vec![
                rule(
                    &["get", "list", "update", "watch"],
                    CORE,
                    &["replicationcontrollers"],
                ),
                rule(&["update"], CORE, &["replicationcontrollers/status"]),
                rule(&["update"], CORE, &["replicationcontrollers/finalizers"]),
                rule(
                    &["create", "delete", "list", "patch", "watch"],
                    CORE,
                    &["pods"],
                ),
                events(),
            ],
        ),
        (
            "resourcequota-controller",
            vec![
                rule(&["list", "watch"], &["*"], &["*"]),
                rule(&["update"], CORE, &["resourcequotas/status"]),
                events(),
            ],
        ),
        (
            "root-ca-cert-publisher",
            vec![rule(&["create", "update"], CORE, &["configmaps"]), events()],
        ),
        (
            "route-controller",
            vec![
                rule(&["list", "watch"], CORE, &["nodes"]),
                rule(&["patch"], CORE, &["nodes/status"]),
                events(),
            ],
        ),
        (
            "service-account-controller",
            vec![rule(&["create"], CORE, &["serviceaccounts"]), events()],
        ),
        (
            "service-controller",
            vec![
                rule(READ, CORE, &["services"]),
                rule(&["patch", "update"], CORE, &["services/status"]),
                rule(&["list", "watch"], CORE, &["nodes"]),
                events(),
            ],
        ),
        (
            "statefulset-controller",
            vec![
                rule(&["list", "watch"], CORE, &["pods"]),
                rule(READ, &["apps"], &["statefulsets"]),
                rule(&["update"], &["apps"], &["statefulsets/status"]),
                rule(&["update"], &["apps"], &["statefulsets/finalizers"]),
                rule(
                    &["create", "delete", "get", "patch", "update"],
                    CORE,
                    &["pods"],
                ),
                rule(
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                    &["apps"],
                    &["controllerrevisions"],
                ),
                rule(
                    &["create", "get", "list", "watch"],
                    CORE,
                    &["persistentvolumeclaims"],
                ),
                events(),
                rule(&["delete", "update"], CORE, &["persistentvolumeclaims"]),
                rule(&["update"], CORE, &["pods/finalizers"]),
            ],
        ),
        (
            "ttl-after-finished-controller",
            vec![
                rule(&["delete", "get", "list", "watch"], &["batch"], &["jobs"]),
                events(),
            ],
        ),
        (
            "ttl-controller",
            vec![
                rule(&["list", "patch", "update", "watch"], CORE, &["nodes"]),
                events(),
            ],
        ),
        (
            "validatingadmissionpolicy-status-controller",
            vec![
                rule(
                    READ,
                    &["admissionregistration.k8s.io"],
                    &["validatingadmissionpolicies"],
                ),
                rule(
                    &["get", "patch", "update"],
                    &["admissionregistration.k8s.io"],
                    &["validatingadmissionpolicies/status"],
                ),
                events(),
            ],
        ),
    ]
}

fn cluster_role_bindings() -> Vec<Value> {
    use Subject::*;
    vec![
        binding("cluster-admin", "cluster-admin", &[Group("system:masters")]),
        binding(
            "system:monitoring",
            "system:monitoring",
            &[Group("system:monitoring")],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            &[Group("system:authenticated")],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &[Group("system:authenticated")],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                Group("system:authenticated"),
                Group("system:unauthenticated"),
            ],
        ),
        binding(
            "system:node-proxier",
            "system:node-proxier",
            &[User("system:kube-proxy")],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[User("system:kube-controller-manager")],
        ),
        binding(
            "system:kube-dns",
            "system:kube-dns",
            &[ServiceAccount("kube-system", "kube-dns")],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[User("system:kube-scheduler")],
        ),
        binding(
            "system:volume-scheduler",
            "system:volume-scheduler",
            &[User("system:kube-scheduler")],
        ),
        // Nodes are authorized by the Node authorizer; the binding exists without subjects.
        binding("system:node", "system:node", &[]),
        binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &[Group("system:serviceaccounts")],
        ),
    ]
}

/// The default ClusterRoles, then the default ClusterRoleBindings, as
/// rbac.authorization.k8s.io/v1 JSON objects (no namespace, uid or resourceVersion: the caller
/// creates them). Aggregated roles (`admin`, `edit`, `view`) have empty `rules`; see
/// [`super::Rbac::aggregated_rules`].
pub fn bootstrap_policy() -> Vec<Value> {
    let mut out = cluster_roles();
    let controllers = controller_roles();
    for (name, rules) in &controllers {
        out.push(cluster_role(
            &format!("system:controller:{name}"),
            rules.clone(),
        ));
    }
    out.extend(cluster_role_bindings());
    for (name, _) in &controllers {
        let full = format!("system:controller:{name}");
        out.push(binding(
            &full,
            &full,
            &[Subject::ServiceAccount("kube-system", name)],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn objects_are_well_formed() {
        let policy = bootstrap_policy();
        let mut names = BTreeSet::new();
        let roles: BTreeSet<String> = policy
            .iter()
            .filter(|o| o["kind"] == "ClusterRole")
            .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        for o in &policy {
            assert_eq!(o["apiVersion"], API_VERSION);
            let kind = o["kind"].as_str().unwrap_or("");
            let name = o["metadata"]["name"].as_str().unwrap_or("");
            assert!(
                names.insert((kind.to_string(), name.to_string())),
                "{kind} {name} twice"
            );
            assert_eq!(
                o["metadata"]["labels"]["kubernetes.io/bootstrapping"],
                "rbac-defaults"
            );
            assert_eq!(
                o["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"],
                "true"
            );
            match kind {
                "ClusterRole" => {
                    for r in o["rules"].as_array().expect("rules") {
                        assert!(!r["verbs"].as_array().expect("verbs").is_empty());
                        let resources = r.get("resources").is_some();
                        let urls = r.get("nonResourceURLs").is_some();
                        assert!(resources != urls, "{name}: {r}");
                        assert_eq!(resources, r.get("apiGroups").is_some(), "{name}: {r}");
                    }
                }
                "ClusterRoleBinding" => {
                    let role = o["roleRef"]["name"].as_str().unwrap_or("");
                    assert!(roles.contains(role), "{name} binds missing {role}");
                }
                other => panic!("unexpected kind {other}"),
            }
        }
        for must in [
            "cluster-admin",
            "admin",
            "edit",
            "view",
            "system:basic-user",
            "system:discovery",
            "system:public-info-viewer",
            "system:kube-scheduler",
            "system:kube-controller-manager",
            "system:node",
            "system:node-proxier",
            "system:kube-dns",
            "system:auth-delegator",
            "system:controller:deployment-controller",
            "system:controller:replicaset-controller",
            "system:controller:job-controller",
            "system:controller:namespace-controller",
            "system:controller:service-account-controller",
            "system:controller:endpoint-controller",
            "system:controller:generic-garbage-collector",
        ] {
            assert!(roles.contains(must), "{must}");
        }
        let view = policy
            .iter()
            .find(|o| o["metadata"]["name"] == "view")
            .expect("view");
        assert_eq!(
            view["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]["rbac.authorization.k8s.io/aggregate-to-view"],
            "true"
        );
        assert_eq!(
            view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
            "true"
        );
        let piv = policy
            .iter()
            .find(|o| {
                o["kind"] == "ClusterRoleBinding"
                    && o["metadata"]["name"] == "system:public-info-viewer"
            })
            .expect("binding");
        assert_eq!(
            piv["subjects"],
            json!([
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"},
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"},
            ])
        );
        let node = policy
            .iter()
            .find(|o| o["kind"] == "ClusterRoleBinding" && o["metadata"]["name"] == "system:node")
            .expect("binding");
        assert!(node.get("subjects").is_none());
    }
}
