//! The resource types the API server serves, where each lives in etcd, and what discovery
//! (legacy `/api/v1`, `/apis/<group>/<version>` and aggregated) says about them.

use serde_json::{Value, json};

/// How a resource's names are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 label: namespaces, services.
    Label,
    /// RFC 1123 subdomain: most objects.
    Subdomain,
    /// Path segment (RBAC names may hold ':'): anything but '/', '%', '.' and '..'.
    PathSegment,
}

/// Which verbs a resource serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbs {
    /// create, delete, deletecollection, get, list, patch, update, watch.
    All,
    /// Reviews: only `create`, nothing is stored.
    CreateOnly,
}

/// One served resource type.
#[derive(Debug, Clone)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    /// Plural, lower case, as in URLs (`configmaps`).
    pub name: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub names: NameRule,
    /// The folder under `/registry/` that kube-apiserver stores this type in (`minions` for
    /// nodes, `services/specs` for services, …).
    pub storage: &'static str,
    /// Subresources served under `<name>/<subresource>`.
    pub subresources: &'static [&'static str],
    pub verbs: Verbs,
    /// For a custom resource: its CustomResourceDefinition's version (schema, columns, scale).
    pub custom: Option<&'static super::crd::CustomVersion>,
}

#[allow(clippy::too_many_arguments)]
const fn res(
    group: &'static str,
    version: &'static str,
    name: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    storage: &'static str,
) -> Resource {
    Resource {
        group,
        version,
        name,
        singular,
        kind,
        namespaced,
        short_names,
        categories: &[],
        names: NameRule::Subdomain,
        storage,
        subresources: &[],
        verbs: Verbs::All,
        custom: None,
    }
}

impl Resource {
    const fn cats(mut self, categories: &'static [&'static str]) -> Self {
        self.categories = categories;
        self
    }
    const fn subs(mut self, subresources: &'static [&'static str]) -> Self {
        self.subresources = subresources;
        self
    }
    const fn names(mut self, rule: NameRule) -> Self {
        self.names = rule;
        self
    }
    const fn create_only(mut self) -> Self {
        self.verbs = Verbs::CreateOnly;
        self
    }
}

const ALL: &[&str] = &["all"];
const STATUS: &[&str] = &["status"];
const SCALE_STATUS: &[&str] = &["scale", "status"];

/// Everything served, in the order discovery lists them (groups in kube-apiserver's order).
pub static RESOURCES: &[Resource] = &[
    // core/v1
    res(
        "",
        "v1",
        "bindings",
        "binding",
        "Binding",
        true,
        &[],
        "bindings",
    )
    .create_only(),
    res(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        "configmaps",
    ),
    res(
        "",
        "v1",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        "services/endpoints",
    ),
    res(
        "",
        "v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        "events",
    ),
    res(
        "",
        "v1",
        "limitranges",
        "limitrange",
        "LimitRange",
        true,
        &["limits"],
        "limitranges",
    ),
    res(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        "namespaces",
    )
    .names(NameRule::Label)
    .subs(&["finalize", "status"]),
    res("", "v1", "nodes", "node", "Node", false, &["no"], "minions").subs(&["proxy", "status"]),
    res(
        "",
        "v1",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        "persistentvolumeclaims",
    )
    .subs(STATUS),
    res(
        "",
        "v1",
        "persistentvolumes",
        "persistentvolume",
        "PersistentVolume",
        false,
        &["pv"],
        "persistentvolumes",
    )
    .subs(STATUS),
    res("", "v1", "pods", "pod", "Pod", true, &["po"], "pods")
        .cats(ALL)
        .subs(&[
            "attach",
            "binding",
            "ephemeralcontainers",
            "eviction",
            "exec",
            "log",
            "portforward",
            "proxy",
            "resize",
            "status",
        ]),
    res(
        "",
        "v1",
        "podtemplates",
        "podtemplate",
        "PodTemplate",
        true,
        &[],
        "podtemplates",
    ),
    res(
        "",
        "v1",
        "replicationcontrollers",
        "replicationcontroller",
        "ReplicationController",
        true,
        &["rc"],
        "controllers",
    )
    .cats(ALL)
    .subs(SCALE_STATUS),
    res(
        "",
        "v1",
        "resourcequotas",
        "resourcequota",
        "ResourceQuota",
        true,
        &["quota"],
        "resourcequotas",
    )
    .subs(STATUS),
    res(
        "",
        "v1",
        "secrets",
        "secret",
        "Secret",
        true,
        &[],
        "secrets",
    ),
    res(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        "serviceaccounts",
    )
    .subs(&["token"]),
    res(
        "",
        "v1",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        "services/specs",
    )
    .names(NameRule::Label)
    .cats(ALL)
    .subs(&["proxy", "status"]),
    // apps/v1
    res(
        "apps",
        "v1",
        "controllerrevisions",
        "controllerrevision",
        "ControllerRevision",
        true,
        &[],
        "controllerrevisions",
    ),
    res(
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        &["ds"],
        "daemonsets",
    )
    .cats(ALL)
    .subs(STATUS),
    res(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        &["deploy"],
        "deployments",
    )
    .cats(ALL)
    .subs(SCALE_STATUS),
    res(
        "apps",
        "v1",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        true,
        &["rs"],
        "replicasets",
    )
    .cats(ALL)
    .subs(SCALE_STATUS),
    res(
        "apps",
        "v1",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        true,
        &["sts"],
        "statefulsets",
    )
    .cats(ALL)
    .subs(SCALE_STATUS),
    // authentication.k8s.io/v1, authorization.k8s.io/v1
    res(
        "authentication.k8s.io",
        "v1",
        "selfsubjectreviews",
        "selfsubjectreview",
        "SelfSubjectReview",
        false,
        &[],
        "",
    )
    .create_only(),
    res(
        "authentication.k8s.io",
        "v1",
        "tokenreviews",
        "tokenreview",
        "TokenReview",
        false,
        &[],
        "",
    )
    .create_only(),
    res(
        "authorization.k8s.io",
        "v1",
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        "LocalSubjectAccessReview",
        true,
        &[],
        "",
    )
    .create_only(),
    res(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
        false,
        &[],
        "",
    )
    .create_only(),
    res(
        "authorization.k8s.io",
        "v1",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        "SelfSubjectRulesReview",
        false,
        &[],
        "",
    )
    .create_only(),
    res(
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "subjectaccessreview",
        "SubjectAccessReview",
        false,
        &[],
        "",
    )
    .create_only(),
    // autoscaling/v2
    res(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        "HorizontalPodAutoscaler",
        true,
        &["hpa"],
        "horizontalpodautoscalers",
    )
    .cats(ALL)
    .subs(STATUS),
    res(
        "autoscaling",
        "v1",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        "HorizontalPodAutoscaler",
        true,
        &["hpa"],
        "horizontalpodautoscalers",
    )
    .cats(ALL)
    .subs(STATUS),
    // batch/v1
    res(
        "batch",
        "v1",
        "cronjobs",
        "cronjob",
        "CronJob",
        true,
        &["cj"],
        "cronjobs",
    )
    .cats(ALL)
    .subs(STATUS),
    res("batch", "v1", "jobs", "job", "Job", true, &[], "jobs")
        .cats(ALL)
        .subs(STATUS),
    // coordination.k8s.io/v1
    res(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        &[],
        "leases",
    ),
    // discovery.k8s.io/v1
    res(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        &[],
        "endpointslices",
    ),
    // events.k8s.io/v1 (stored as core v1 Events)
    res(
        "events.k8s.io",
        "v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        "events",
    ),
    // networking.k8s.io/v1
    res(
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "ingressclass",
        "IngressClass",
        false,
        &[],
        "ingressclasses",
    ),
    res(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "ingress",
        "Ingress",
        true,
        &["ing"],
        "ingress",
    )
    .subs(STATUS),
    res(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "networkpolicy",
        "NetworkPolicy",
        true,
        &["netpol"],
        "networkpolicies",
    ),
    // policy/v1
    res(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        "poddisruptionbudgets",
    )
    .subs(STATUS),
    // rbac.authorization.k8s.io/v1
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
        "clusterrolebindings",
    )
    .names(NameRule::PathSegment),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &[],
        "clusterroles",
    )
    .names(NameRule::PathSegment),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
        "rolebindings",
    )
    .names(NameRule::PathSegment),
    res(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
        &[],
        "roles",
    )
    .names(NameRule::PathSegment),
    // storage.k8s.io/v1
    res(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "storageclass",
        "StorageClass",
        false,
        &["sc"],
        "storageclasses",
    ),
    // scheduling.k8s.io/v1
    res(
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "priorityclass",
        "PriorityClass",
        false,
        &["pc"],
        "priorityclasses",
    ),
    // apiextensions.k8s.io/v1
    res(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        "apiextensions.k8s.io/customresourcedefinitions",
    )
    .subs(STATUS),
];

/// The API groups in the order `/apis` lists them, each with its served versions (preferred
/// first).
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in all().into_iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version);
                }
            }
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// What a subresource answers: (group, version, kind, verbs); an empty group and version mean the
/// parent's.
fn subresource_info(
    parent: &Resource,
    sub: &str,
) -> (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
) {
    const GPU: &[&str] = &["get", "patch", "update"];
    match sub {
        "status" => ("", "", parent.kind, GPU),
        "scale" => ("autoscaling", "v1", "Scale", GPU),
        "log" => ("", "", "Pod", &["get"]),
        "exec" => ("", "", "PodExecOptions", &["create", "get"]),
        "attach" => ("", "", "PodAttachOptions", &["create", "get"]),
        "portforward" => ("", "", "PodPortForwardOptions", &["create", "get"]),
        "binding" => ("", "", "Binding", &["create"]),
        "eviction" => ("policy", "v1", "Eviction", &["create"]),
        "ephemeralcontainers" | "resize" => ("", "", "Pod", GPU),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest", &["create"]),
        "finalize" => ("", "", "Namespace", &["update"]),
        "proxy" => (
            "",
            "",
            if parent.name == "nodes" {
                "NodeProxyOptions"
            } else if parent.name == "services" {
                "ServiceProxyOptions"
            } else {
                "PodProxyOptions"
            },
            &["create", "delete", "get", "patch", "update"],
        ),
        _ => ("", "", parent.kind, &["get"]),
    }
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The etcd key of an object (`/registry/configmaps/<ns>/<name>`), or of the collection
    /// prefix when `name` is empty.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/{name}", self.storage),
            _ => format!("/registry/{}/{name}", self.storage),
        }
    }

    /// Verbs served: the list discovery advertises holds only what works.
    pub fn verbs(&self) -> Vec<&'static str> {
        match self.verbs {
            Verbs::All => VERBS.to_vec(),
            Verbs::CreateOnly => vec!["create"],
        }
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// Legacy discovery: the entry of `/api/v1` or `/apis/<g>/<v>`, followed by one entry per
    /// subresource (`pods/status`, `deployments/scale`, …).
    pub fn discovery_entries(&self) -> Vec<Value> {
        let mut main = json!({
            "name": self.name,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs(),
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut out = vec![main];
        for sub in self.subresources {
            let (group, version, kind, verbs) = subresource_info(self, sub);
            let mut e = json!({
                "name": format!("{}/{sub}", self.name),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if !group.is_empty() {
                e["group"] = json!(group);
                e["version"] = json!(version);
            }
            out.push(e);
        }
        out
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2`): the resource with its subresources.
    pub fn aggregated_entry(&self) -> Value {
        let mut e = json!({
            "resource": self.name,
            "responseKind": {"group": "", "version": "", "kind": self.kind},
            "scope": if self.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": self.singular,
            "verbs": self.verbs(),
        });
        if !self.short_names.is_empty() {
            e["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            e["categories"] = json!(self.categories);
        }
        if !self.subresources.is_empty() {
            e["subresources"] = self
                .subresources
                .iter()
                .map(|sub| {
                    let (group, version, kind, verbs) = subresource_info(self, sub);
                    json!({
                        "subresource": sub,
                        "responseKind": {"group": group, "version": version, "kind": kind},
                        "verbs": verbs,
                    })
                })
                .collect();
        }
        e
    }

    /// The fields `?fieldSelector=` may name for this type (as the real apiserver allows them).
    pub fn field_selectors(&self) -> Vec<&'static str> {
        let mut f = vec!["metadata.name"];
        if self.namespaced {
            f.push("metadata.namespace");
        }
        f.extend_from_slice(match self.name {
            "namespaces" => &["status.phase"][..],
            "secrets" => &["type"][..],
            "pods" => &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.podIPs",
                "status.nominatedNodeName",
            ][..],
            "nodes" => &["spec.unschedulable"][..],
            "replicasets" | "replicationcontrollers" => &["status.replicas"][..],
            "jobs" => &["status.successful"][..],
            "services" => &["spec.clusterIP", "spec.type"][..],
            "events" => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ][..],
            _ => &[][..],
        });
        f
    }
}

/// Custom resources registered from CustomResourceDefinitions (see [`super::crd`]).
static CUSTOM: parking_lot::RwLock<Vec<&'static Resource>> = parking_lot::RwLock::new(Vec::new());

/// Every served resource: the built-in ones, then the custom ones.
pub fn all() -> Vec<&'static Resource> {
    let mut v: Vec<&'static Resource> = RESOURCES.iter().collect();
    v.extend(CUSTOM.read().iter().copied());
    v
}

/// Replaces the custom resources of one CRD (`<plural>.<group>`) with `served` (none to remove).
pub fn set_custom(group: &str, plural: &str, served: Vec<&'static Resource>) {
    let mut custom = CUSTOM.write();
    custom.retain(|r| !(r.group == group && r.name == plural));
    custom.extend(served);
}

pub fn find(group: &str, version: &str, name: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.name == name)
        .or_else(|| {
            CUSTOM
                .read()
                .iter()
                .copied()
                .find(|r| r.group == group && r.version == version && r.name == name)
        })
}

/// The resource of a kind (`Namespace` → namespaces).
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
        .or_else(|| {
            CUSTOM
                .read()
                .iter()
                .copied()
                .find(|r| r.group == group && r.kind == kind)
        })
}

/// `GET /api/v1` or `GET /apis/<group>/<version>`: an APIResourceList, or None for a
/// group/version not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let entries: Vec<Value> = all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| r.discovery_entries())
        .collect();
    if entries.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": entries,
    }))
}

/// One group of `/apis` (APIGroup).
pub fn api_group(group: &str, versions: &[&str]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "preferredVersion": gvs.first().cloned().unwrap_or(Value::Null),
        "versions": gvs,
    })
}

/// `GET /apis` (legacy): the APIGroupList.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|(g, v)| {
            let mut a = api_group(g, &v);
            if let Some(m) = a.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            a
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Aggregated discovery (`/api` when `core` is true, else `/apis`) in `apidiscovery.k8s.io/<version>`
/// (v2 or v2beta1: the same shape).
pub fn aggregated(core: bool, version: &str) -> Value {
    let groups: Vec<(&str, Vec<&str>)> = if core {
        vec![("", vec!["v1"])]
    } else {
        groups()
    };
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(g, versions)| {
            let versions: Vec<Value> = versions
                .into_iter()
                .map(|v| {
                    let resources: Vec<Value> = all()
                        .into_iter()
                        .filter(|r| r.group == g && r.version == v)
                        .map(|r| r.aggregated_entry())
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({
                "metadata": {"name": g, "creationTimestamp": null},
                "versions": versions,
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_kubernetes_layout() {
        let cm = find("", "v1", "configmaps").unwrap();
        assert_eq!(cm.key(Some("lab"), "x"), "/registry/configmaps/lab/x");
        assert_eq!(cm.key(Some("lab"), ""), "/registry/configmaps/lab/");
        let ns = find("", "v1", "namespaces").unwrap();
        assert_eq!(ns.key(None, "lab"), "/registry/namespaces/lab");
        assert!(cm.verbs().contains(&"patch"));
        let svc = find("", "v1", "services").unwrap();
        assert_eq!(
            svc.key(Some("default"), "kubernetes"),
            "/registry/services/specs/default/kubernetes"
        );
        assert_eq!(
            find("", "v1", "nodes").unwrap().key(None, "n1"),
            "/registry/minions/n1"
        );
        let deploy = find("apps", "v1", "deployments").unwrap();
        let entries = deploy.discovery_entries();
        assert_eq!(entries[1]["name"], "deployments/scale");
        assert_eq!(entries[1]["group"], "autoscaling");
        assert_eq!(by_kind("", "Namespace").unwrap().name, "namespaces");
        let agg = aggregated(false, "v2");
        assert_eq!(agg["items"][0]["metadata"]["name"], "apps");
        assert!(resource_list("apps", "v1").is_some());
        assert!(resource_list("apps", "v2").is_none());
        // Every kind is unique within its group version; the preferred version comes first.
        assert_eq!(
            by_kind("autoscaling", "HorizontalPodAutoscaler")
                .unwrap()
                .version,
            "v2"
        );
        for r in RESOURCES {
            assert_eq!(
                RESOURCES
                    .iter()
                    .filter(|o| o.group == r.group && o.version == r.version && o.kind == r.kind)
                    .count(),
                1,
                "{}",
                r.kind
            );
        }
    }
}
