//! The RBAC authorizer, with the semantics of kube-apiserver's
//! (`plugin/pkg/auth/authorizer/rbac` and `pkg/registry/rbac/validation`).
//!
//! A request is allowed when some rule reachable from the user allows it. Rules are reached
//! through every ClusterRoleBinding whose subjects include the user, then (for a namespaced
//! request) every RoleBinding of the request's namespace whose subjects include the user. A
//! subject is a `User` (by name), a `Group` (one of the user's groups) or a `ServiceAccount`
//! (the user `system:serviceaccount:<ns>:<name>`; a RoleBinding's subject without a namespace
//! means the binding's namespace, a ClusterRoleBinding's never matches). A binding refers to a
//! ClusterRole or, for RoleBindings, a Role of its own namespace.
//!
//! A rule allows a resource request when its verbs, API groups, resources and resource names
//! all match (`*` matches any verb, group or resource; `pods/log` is the `log` subresource of
//! pods and `*/scale` any resource's `scale` subresource; no resource names means any name), and
//! a non-resource request when its verbs and `nonResourceURLs` match (`*` any path, a trailing
//! `*` a prefix).
//!
//! A ClusterRole with an `aggregationRule` has the union of the rules of every other ClusterRole
//! its label selectors match (transitively: `admin` picks up `edit`, which picks up `view`), as
//! the clusterrole-aggregation controller maintains it. This authorizer computes those rules
//! itself; [`Rbac::aggregated_rules`] gives them to write into the object.
//!
//! `system:masters` may do everything, before RBAC is asked.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{Map, Value, json};

use super::{Attributes, Decision, SYSTEM_MASTERS, User};

/// One PolicyRule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Rule {
    verbs: Vec<String>,
    api_groups: Vec<String>,
    resources: Vec<String>,
    resource_names: Vec<String>,
    non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    fn from_json(v: &Value) -> Rule {
        Rule {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    /// The rule as rbac.authorization.k8s.io/v1 writes it (empty lists omitted, verbs always).
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: &[String]| {
            if !v.is_empty() {
                m.insert(k.to_string(), json!(v));
            }
        };
        put("apiGroups", &self.api_groups);
        put("nonResourceURLs", &self.non_resource_urls);
        put("resourceNames", &self.resource_names);
        put("resources", &self.resources);
        m.insert("verbs".to_string(), json!(self.verbs));
        Value::Object(m)
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    fn allows(&self, a: &Attributes) -> bool {
        match a.path {
            None => {
                let combined = if a.subresource.is_empty() {
                    a.resource.to_string()
                } else {
                    format!("{}/{}", a.resource, a.subresource)
                };
                self.verb_matches(a.verb)
                    && self.api_groups.iter().any(|g| g == "*" || g == a.api_group)
                    && self.resource_matches(&combined, a.subresource)
                    && (self.resource_names.is_empty()
                        || self.resource_names.iter().any(|n| n == a.name))
            }
            Some(path) => {
                self.verb_matches(a.verb)
                    && self.non_resource_urls.iter().any(|u| {
                        u == "*"
                            || u == path
                            || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
                    })
            }
        }
    }

    fn resource_matches(&self, combined: &str, subresource: &str) -> bool {
        self.resources.iter().any(|r| {
            r == "*"
                || r == combined
                || (!subresource.is_empty()
                    && r.len() == subresource.len() + 2
                    && r.starts_with("*/")
                    && r.ends_with(subresource))
        })
    }
}

/// A label selector (`matchLabels` and `matchExpressions`).
#[derive(Debug, Clone)]
struct Selector {
    match_labels: BTreeMap<String, String>,
    /// (key, operator, values); an unknown operator makes the selector match nothing.
    expressions: Vec<(String, String, Vec<String>)>,
}

impl Selector {
    fn from_json(v: &Value) -> Selector {
        let match_labels = v["matchLabels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let expressions = v["matchExpressions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["key"].as_str().unwrap_or("").to_string(),
                            e["operator"].as_str().unwrap_or("").to_string(),
                            strings(&e["values"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Selector {
            match_labels,
            expressions,
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|(k, op, values)| {
                let got = labels.get(k);
                match op.as_str() {
                    "In" => got.is_some_and(|g| values.contains(g)),
                    "NotIn" => got.is_none_or(|g| !values.contains(g)),
                    "Exists" => got.is_some(),
                    "DoesNotExist" => got.is_none(),
                    _ => false,
                }
            })
    }
}

#[derive(Debug, Clone)]
struct ClusterRole {
    labels: BTreeMap<String, String>,
    rules: Arc<Vec<Rule>>,
    aggregation: Option<Vec<Selector>>,
}

/// Who a binding grants to: a user name (service accounts as their user name) or a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum SubjectKey {
    User(String),
    Group(String),
}

#[derive(Debug, Clone)]
struct Binding {
    role_kind: String,
    role_name: String,
    subjects: Vec<SubjectKey>,
}

impl Binding {
    /// `namespace`: the RoleBinding's, or "" for a ClusterRoleBinding.
    fn from_json(obj: &Value, namespace: &str) -> Binding {
        let subjects = obj["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let name = s["name"].as_str().unwrap_or("");
                match s["kind"].as_str().unwrap_or("") {
                    "User" => Some(SubjectKey::User(name.to_string())),
                    "Group" => Some(SubjectKey::Group(name.to_string())),
                    "ServiceAccount" => {
                        let ns = s["namespace"]
                            .as_str()
                            .filter(|n| !n.is_empty())
                            .unwrap_or(namespace);
                        (!ns.is_empty())
                            .then(|| SubjectKey::User(format!("system:serviceaccount:{ns}:{name}")))
                    }
                    _ => None,
                }
            })
            .collect();
        Binding {
            role_kind: obj["roleRef"]["kind"].as_str().unwrap_or("").to_string(),
            role_name: obj["roleRef"]["name"].as_str().unwrap_or("").to_string(),
            subjects,
        }
    }
}

/// Called with each applicable binding's rules (or the error finding its role); returns
/// whether to go on.
type RuleVisitor<'a> = dyn FnMut(Result<&[Rule], String>) -> bool + 'a;

#[derive(Debug, Default)]
struct State {
    /// (namespace, name) → rules.
    roles: HashMap<(String, String), Arc<Vec<Rule>>>,
    cluster_roles: HashMap<String, ClusterRole>,
    /// Every ClusterRole's effective rules (aggregated ones computed).
    effective: HashMap<String, Arc<Vec<Rule>>>,
    cluster_role_bindings: HashMap<String, Binding>,
    /// subject → ClusterRoleBinding names.
    crb_index: HashMap<SubjectKey, BTreeSet<String>>,
    /// (namespace, name) → RoleBinding.
    role_bindings: HashMap<(String, String), Binding>,
    /// (namespace, subject) → RoleBinding names.
    rb_index: HashMap<(String, SubjectKey), BTreeSet<String>>,
}

impl State {
    /// Refreshes `effective`: plain ClusterRoles share their rules, aggregated ones are
    /// recomputed.
    fn recompute_effective(&mut self) {
        let mut effective = HashMap::with_capacity(self.cluster_roles.len());
        for (name, role) in &self.cluster_roles {
            let rules = match role.aggregation {
                None => Arc::clone(&role.rules),
                Some(_) => Arc::new(self.aggregate(name, &mut HashSet::new())),
            };
            effective.insert(name.clone(), rules);
        }
        self.effective = effective;
    }

    /// The rules of a ClusterRole, aggregating as the clusterrole-aggregation controller does:
    /// for each selector, the matching roles by name (not the role itself), their rules in
    /// order, each rule once.
    fn aggregate(&self, name: &str, visiting: &mut HashSet<String>) -> Vec<Rule> {
        let Some(role) = self.cluster_roles.get(name) else {
            return Vec::new();
        };
        let Some(selectors) = &role.aggregation else {
            return role.rules.as_ref().clone();
        };
        visiting.insert(name.to_string());
        let mut out: Vec<Rule> = Vec::new();
        for selector in selectors {
            let mut matched: Vec<&String> = self
                .cluster_roles
                .iter()
                .filter(|(n, r)| n.as_str() != name && selector.matches(&r.labels))
                .map(|(n, _)| n)
                .collect();
            matched.sort();
            for m in matched {
                if visiting.contains(m.as_str()) {
                    // A cycle: use the stored rules, as the controller would see them.
                    for r in self
                        .cluster_roles
                        .get(m)
                        .map(|r| r.rules.iter())
                        .into_iter()
                        .flatten()
                    {
                        if !out.contains(r) {
                            out.push(r.clone());
                        }
                    }
                    continue;
                }
                for r in self.aggregate(m, visiting) {
                    if !out.contains(&r) {
                        out.push(r);
                    }
                }
            }
        }
        visiting.remove(name);
        out
    }

    fn unindex_crb(&mut self, name: &str) {
        if let Some(old) = self.cluster_role_bindings.remove(name) {
            for s in old.subjects {
                if let Some(set) = self.crb_index.get_mut(&s) {
                    set.remove(name);
                    if set.is_empty() {
                        self.crb_index.remove(&s);
                    }
                }
            }
        }
    }

    fn unindex_rb(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(old) = self.role_bindings.remove(&key) {
            for s in old.subjects {
                let k = (namespace.to_string(), s);
                if let Some(set) = self.rb_index.get_mut(&k) {
                    set.remove(name);
                    if set.is_empty() {
                        self.rb_index.remove(&k);
                    }
                }
            }
        }
    }

    fn subject_keys(user: &User) -> Vec<SubjectKey> {
        let mut keys = vec![SubjectKey::User(user.name.clone())];
        keys.extend(user.groups.iter().map(|g| SubjectKey::Group(g.clone())));
        keys
    }

    fn role_rules(
        &self,
        kind: &str,
        name: &str,
        namespace: &str,
    ) -> Result<Arc<Vec<Rule>>, String> {
        match kind {
            "ClusterRole" => self.effective.get(name).cloned().ok_or_else(|| {
                format!("clusterrole.rbac.authorization.k8s.io \"{name}\" not found")
            }),
            "Role" => self
                .roles
                .get(&(namespace.to_string(), name.to_string()))
                .cloned()
                .ok_or_else(|| format!("role.rbac.authorization.k8s.io \"{name}\" not found")),
            other => Err(format!("unsupported role reference kind: \"{other}\"")),
        }
    }

    /// Calls `visit` with the rules of every binding that applies to `user` in `namespace`
    /// (cluster bindings first), or the error resolving its role; stops when `visit` says so.
    fn visit_rules_for(&self, user: &User, namespace: &str, visit: &mut RuleVisitor<'_>) {
        let keys = Self::subject_keys(user);
        let mut crbs: BTreeSet<&String> = BTreeSet::new();
        for k in &keys {
            crbs.extend(self.crb_index.get(k).into_iter().flatten());
        }
        for name in crbs {
            let Some(b) = self.cluster_role_bindings.get(name) else {
                continue;
            };
            let go_on = match self.role_rules(&b.role_kind, &b.role_name, "") {
                Ok(rules) => visit(Ok(&rules)),
                Err(e) => visit(Err(e)),
            };
            if !go_on {
                return;
            }
        }
        if namespace.is_empty() {
            return;
        }
        let mut rbs: BTreeSet<&String> = BTreeSet::new();
        for k in keys {
            rbs.extend(
                self.rb_index
                    .get(&(namespace.to_string(), k))
                    .into_iter()
                    .flatten(),
            );
        }
        for name in rbs {
            let Some(b) = self
                .role_bindings
                .get(&(namespace.to_string(), name.clone()))
            else {
                continue;
            };
            let go_on = match self.role_rules(&b.role_kind, &b.role_name, namespace) {
                Ok(rules) => visit(Ok(&rules)),
                Err(e) => visit(Err(e)),
            };
            if !go_on {
                return;
            }
        }
    }
}

/// Errors joined as Go's `utilerrors.NewAggregate(..).Error()` joins them.
fn aggregate_errors(errors: &[String]) -> String {
    match errors {
        [] => String::new(),
        [one] => one.clone(),
        many => {
            let mut seen = Vec::new();
            for e in many {
                if !seen.contains(&e.as_str()) {
                    seen.push(e.as_str());
                }
            }
            if seen.len() == 1 {
                seen[0].to_string()
            } else {
                format!("[{}]", seen.join(", "))
            }
        }
    }
}

/// The RBAC authorizer, fed with the cluster's Role, ClusterRole, RoleBinding and
/// ClusterRoleBinding objects.
#[derive(Debug, Default)]
pub struct Rbac {
    state: RwLock<State>,
}

impl Rbac {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an object of kind `Role`, `ClusterRole`, `RoleBinding` or
    /// `ClusterRoleBinding` (other kinds are ignored).
    pub fn upsert(&self, kind: &str, obj: &Value) {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let namespace = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            return;
        }
        let rules = || -> Vec<Rule> {
            obj["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(Rule::from_json)
                .collect()
        };
        let mut st = self.state.write();
        match kind {
            "Role" => {
                st.roles.insert((namespace, name), Arc::new(rules()));
            }
            "ClusterRole" => {
                let labels = obj["metadata"]["labels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let aggregation = obj["aggregationRule"].is_object().then(|| {
                    obj["aggregationRule"]["clusterRoleSelectors"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        // A selector that is not an object selects nothing.
                        .filter(|s| s.is_object())
                        .map(Selector::from_json)
                        .collect()
                });
                st.cluster_roles.insert(
                    name,
                    ClusterRole {
                        labels,
                        rules: Arc::new(rules()),
                        aggregation,
                    },
                );
                st.recompute_effective();
            }
            "ClusterRoleBinding" => {
                st.unindex_crb(&name);
                let b = Binding::from_json(obj, "");
                for s in &b.subjects {
                    st.crb_index
                        .entry(s.clone())
                        .or_default()
                        .insert(name.clone());
                }
                st.cluster_role_bindings.insert(name, b);
            }
            "RoleBinding" => {
                if namespace.is_empty() {
                    return;
                }
                st.unindex_rb(&namespace, &name);
                let b = Binding::from_json(obj, &namespace);
                for s in &b.subjects {
                    st.rb_index
                        .entry((namespace.clone(), s.clone()))
                        .or_default()
                        .insert(name.clone());
                }
                st.role_bindings.insert((namespace, name), b);
            }
            _ => {}
        }
    }

    /// Forgets an object (namespace "" for the cluster-scoped kinds).
    pub fn remove(&self, kind: &str, namespace: &str, name: &str) {
        let mut st = self.state.write();
        match kind {
            "Role" => {
                st.roles.remove(&(namespace.to_string(), name.to_string()));
            }
            "ClusterRole" if st.cluster_roles.remove(name).is_some() => {
                st.recompute_effective();
            }
            "ClusterRoleBinding" => st.unindex_crb(name),
            "RoleBinding" => st.unindex_rb(namespace, name),
            _ => {}
        }
    }

    /// Whether the request is allowed (the Node authorizer first, then RBAC). `Deny` carries kube-apiserver's reason: empty, or
    /// `RBAC: <errors>` when a binding's role could not be found.
    pub fn authorize(&self, a: &Attributes) -> Decision {
        if a.user.in_group(SYSTEM_MASTERS) {
            return Decision::Allow;
        }
        let st = self.state.read();
        if node_authorizer_allows(&st, a) {
            return Decision::Allow;
        }
        let mut allowed = false;
        let mut errors = Vec::new();
        st.visit_rules_for(a.user, a.namespace, &mut |r| match r {
            Ok(rules) => {
                allowed = rules.iter().any(|rule| rule.allows(a));
                !allowed
            }
            Err(e) => {
                errors.push(e);
                true
            }
        });
        if allowed {
            Decision::Allow
        } else if errors.is_empty() {
            Decision::Deny(String::new())
        } else {
            Decision::Deny(format!("RBAC: {}", aggregate_errors(&errors)))
        }
    }

    /// The rules that apply to `user` in `namespace`, as a SelfSubjectRulesReview lists them:
    /// (resourceRules, nonResourceRules), authorization.k8s.io/v1 JSON. `system:masters` get
    /// the privileged-group rules first, as kube-apiserver's first authorizer gives them.
    pub fn rules_for(&self, user: &User, namespace: &str) -> (Vec<Value>, Vec<Value>) {
        let (r, n, _) = self.rules_for_with_errors(user, namespace);
        (r, n)
    }

    /// A SelfSubjectRulesReview's `status`: `resourceRules`, `nonResourceRules`, `incomplete`
    /// and, when a binding's role is missing, `evaluationError`.
    pub fn rules_review_status(&self, user: &User, namespace: &str) -> Value {
        let (resource, non_resource, err) = self.rules_for_with_errors(user, namespace);
        let mut status = json!({
            "resourceRules": resource,
            "nonResourceRules": non_resource,
            "incomplete": !err.is_empty(),
        });
        if !err.is_empty() {
            status["evaluationError"] = json!(err);
        }
        status
    }

    fn rules_for_with_errors(
        &self,
        user: &User,
        namespace: &str,
    ) -> (Vec<Value>, Vec<Value>, String) {
        let mut resource = Vec::new();
        let mut non_resource = Vec::new();
        if user.in_group(SYSTEM_MASTERS) {
            resource.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
            non_resource.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
        }
        let mut errors = Vec::new();
        let st = self.state.read();
        st.visit_rules_for(user, namespace, &mut |r| {
            match r {
                Ok(rules) => {
                    for rule in rules {
                        if !rule.resources.is_empty() {
                            let mut v = json!({"verbs": rule.verbs});
                            if !rule.api_groups.is_empty() {
                                v["apiGroups"] = json!(rule.api_groups);
                            }
                            v["resources"] = json!(rule.resources);
                            if !rule.resource_names.is_empty() {
                                v["resourceNames"] = json!(rule.resource_names);
                            }
                            resource.push(v);
                        }
                        if !rule.non_resource_urls.is_empty() {
                            non_resource.push(json!({
                                "verbs": rule.verbs,
                                "nonResourceURLs": rule.non_resource_urls,
                            }));
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
            true
        });
        (resource, non_resource, aggregate_errors(&errors))
    }

    /// The rules an aggregated ClusterRole has (the union of the rules of the ClusterRoles its
    /// `aggregationRule` selects), to write into its `rules`; `None` for an unknown ClusterRole
    /// or one without an `aggregationRule`.
    pub fn aggregated_rules(&self, cluster_role: &str) -> Option<Vec<Value>> {
        let st = self.state.read();
        st.cluster_roles.get(cluster_role)?.aggregation.as_ref()?;
        let rules = st.effective.get(cluster_role)?;
        Some(rules.iter().map(Rule::to_json).collect())
    }

    /// The names of the ClusterRoles that have an `aggregationRule`, sorted.
    pub fn aggregating_cluster_roles(&self) -> Vec<String> {
        let st = self.state.read();
        let mut names: Vec<String> = st
            .cluster_roles
            .iter()
            .filter(|(_, r)| r.aggregation.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }
}

/// Go's `%q` for the strings in these messages.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The message of kube-apiserver's 403 for a refused request (`reason` from [`Decision::Deny`]):
///
/// - `secrets is forbidden: User "u" cannot list resource "secrets" in API group "" in the namespace "lab"`
/// - `deployments.apps "web" is forbidden: User "u" cannot get resource "deployments" in API group "apps" in the namespace "lab"`
/// - `pods "p" is forbidden: User "u" cannot create resource "pods/exec" in API group "" in the namespace "lab"`
/// - `nodes is forbidden: User "u" cannot list resource "nodes" in API group "" at the cluster scope`
/// - `forbidden: User "u" cannot get path "/apis"`
///
/// with `: <reason>` appended when there is one.
pub fn forbidden_message(a: &Attributes, reason: &str) -> String {
    let user = quote(&a.user.name);
    let mut msg = match a.path {
        Some(path) => format!("User {user} cannot {} path {}", a.verb, quote(path)),
        None => {
            let resource = if a.subresource.is_empty() {
                a.resource.to_string()
            } else {
                format!("{}/{}", a.resource, a.subresource)
            };
            let scope = if a.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {}", quote(a.namespace))
            };
            format!(
                "User {user} cannot {} resource {} in API group {} {scope}",
                a.verb,
                quote(&resource),
                quote(a.api_group)
            )
        }
    };
    if !reason.is_empty() {
        msg.push_str(": ");
        msg.push_str(reason);
    }
    // apierrors.NewForbidden(GroupResource{group, resource}, name, msg).
    let (group, resource) = match a.path {
        Some(_) => ("", ""),
        None => (a.api_group, a.resource),
    };
    if group.is_empty() && resource.is_empty() {
        return format!("forbidden: {msg}");
    }
    let qualified = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    if a.name.is_empty() {
        format!("{qualified} is forbidden: {msg}")
    } else {
        format!("{qualified} {} is forbidden: {msg}", quote(a.name))
    }
}

/// kube-apiserver's `Node` authorizer, which runs before RBAC (`--authorization-mode=Node,RBAC`):
/// a kubelet (user `system:node:<name>` in group `system:nodes`) may do what the `system:node`
/// ClusterRole lists (the real authorizer's node rules), and may write only its own Node and
/// its own Lease in `kube-node-lease`. The real one also walks a graph of which pods, secrets
/// and configMaps belong to the node; minik's allows a kubelet the node rules on all of them.
fn node_authorizer_allows(st: &State, a: &Attributes) -> bool {
    let Some(node) = a.user.name.strip_prefix("system:node:") else {
        return false;
    };
    if node.is_empty() || !a.user.in_group("system:nodes") {
        return false;
    }
    let writes = !matches!(a.verb, "get" | "list" | "watch");
    let own_object = match (a.api_group, a.resource) {
        ("", "nodes") => a.name.is_empty() || a.name == node,
        ("coordination.k8s.io", "leases") => {
            a.namespace == "kube-node-lease" && (a.name.is_empty() || a.name == node)
        }
        _ => true,
    };
    if writes && !own_object {
        return false;
    }
    st.role_rules("ClusterRole", "system:node", "")
        .is_ok_and(|rules| rules.iter().any(|rule| rule.allows(a)))
}

#[cfg(test)]
mod tests {
    use super::super::policy::bootstrap_policy;
    use super::*;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    fn sa(ns: &str, name: &str) -> User {
        user(
            &format!("system:serviceaccount:{ns}:{name}"),
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{ns}"),
                "system:authenticated",
            ],
        )
    }

    fn res<'a>(
        u: &'a User,
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: &'a str,
        ns: &'a str,
        name: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            user: u,
            verb,
            api_group: group,
            resource,
            subresource: sub,
            namespace: ns,
            name,
            path: None,
        }
    }

    fn url<'a>(u: &'a User, verb: &'a str, path: &'a str) -> Attributes<'a> {
        Attributes {
            user: u,
            verb,
            api_group: "",
            resource: "",
            subresource: "",
            namespace: "",
            name: "",
            path: Some(path),
        }
    }

    fn allowed(r: &Rbac, a: &Attributes) -> bool {
        r.authorize(a) == Decision::Allow
    }

    fn cluster_role(name: &str, rules: Value) -> Value {
        json!({"metadata": {"name": name}, "rules": rules})
    }

    fn role(ns: &str, name: &str, rules: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": ns}, "rules": rules})
    }

    fn binding(ns: Option<&str>, name: &str, kind: &str, role: &str, subjects: Value) -> Value {
        let mut meta = json!({"name": name});
        if let Some(ns) = ns {
            meta["namespace"] = json!(ns);
        }
        json!({"metadata": meta,
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
               "subjects": subjects})
    }

    fn bootstrapped() -> Rbac {
        let r = Rbac::new();
        for obj in bootstrap_policy() {
            let kind = obj["kind"].as_str().unwrap_or("").to_string();
            r.upsert(&kind, &obj);
        }
        r
    }

    #[test]
    fn rule_matching() {
        let r = Rbac::new();
        r.upsert(
            "ClusterRole",
            &cluster_role(
                "mixed",
                json!([
                    {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]},
                    {"verbs": ["*"], "apiGroups": ["apps"], "resources": ["deployments"]},
                    {"verbs": ["get", "update"], "apiGroups": ["*"], "resources": ["*/scale"]},
                    {"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"]},
                    {"verbs": ["get"], "nonResourceURLs": ["/healthz", "/metrics/*", "/logs*"]},
                ]),
            ),
        );
        r.upsert(
            "ClusterRoleBinding",
            &binding(
                None,
                "b",
                "ClusterRole",
                "mixed",
                json!([{"kind": "User", "name": "alice"}]),
            ),
        );
        let u = user("alice", &[]);
        let yes = |a: Attributes| assert!(allowed(&r, &a), "{a:?}");
        let no = |a: Attributes| assert!(!allowed(&r, &a), "{a:?}");
        yes(res(&u, "get", "", "pods", "", "lab", "p"));
        yes(res(&u, "list", "", "pods", "", "", ""));
        no(res(&u, "delete", "", "pods", "", "lab", "p"));
        no(res(&u, "get", "apps", "pods", "", "lab", "p"));
        yes(res(&u, "get", "", "pods", "log", "lab", "p"));
        no(res(&u, "create", "", "pods", "exec", "lab", "p"));
        no(res(&u, "get", "", "pods", "status", "lab", "p"));
        yes(res(&u, "patch", "apps", "deployments", "", "lab", "d"));
        no(res(
            &u,
            "patch",
            "apps",
            "deployments",
            "status",
            "lab",
            "d",
        ));
        yes(res(
            &u,
            "update",
            "apps",
            "deployments",
            "scale",
            "lab",
            "d",
        ));
        yes(res(
            &u,
            "get",
            "",
            "replicationcontrollers",
            "scale",
            "lab",
            "rc",
        ));
        no(res(&u, "get", "apps", "scale", "", "lab", "x"));
        no(res(&u, "get", "apps", "deployments2", "xscale", "lab", "x"));
        yes(res(&u, "get", "", "configmaps", "", "lab", "cfg"));
        no(res(&u, "get", "", "configmaps", "", "lab", "other"));
        no(res(&u, "list", "", "configmaps", "", "lab", ""));
        yes(url(&u, "get", "/healthz"));
        no(url(&u, "get", "/healthz/etcd"));
        no(url(&u, "post", "/healthz"));
        yes(url(&u, "get", "/metrics/slis"));
        yes(url(&u, "get", "/metrics/"));
        no(url(&u, "get", "/metrics"));
        yes(url(&u, "get", "/logs"));
        yes(url(&u, "get", "/logsomething"));
        // Resource rules never match paths, nor the other way round.
        no(url(&u, "get", "/api/v1/pods"));
        // Other users get nothing.
        no(res(&user("bob", &[]), "get", "", "pods", "", "lab", "p"));
    }

    #[test]
    fn bindings_and_subjects() {
        let r = Rbac::new();
        r.upsert(
            "Role",
            &role(
                "lab",
                "reader",
                json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["secrets"]}]),
            ),
        );
        r.upsert(
            "ClusterRole",
            &cluster_role(
                "pod-reader",
                json!([{"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}]),
            ),
        );
        // SA subject without namespace: the binding's namespace.
        r.upsert(
            "RoleBinding",
            &binding(
                Some("lab"),
                "robot-reads",
                "Role",
                "reader",
                json!([{"kind": "ServiceAccount", "name": "robot"}]),
            ),
        );
        // A RoleBinding to a ClusterRole grants it in that namespace only.
        r.upsert(
            "RoleBinding",
            &binding(
                Some("lab"),
                "devs",
                "ClusterRole",
                "pod-reader",
                json!([{"kind": "Group", "name": "devs", "apiGroup": "rbac.authorization.k8s.io"},
                       {"kind": "ServiceAccount", "name": "ci", "namespace": "tools"}]),
            ),
        );
        let robot = sa("lab", "robot");
        assert!(allowed(
            &r,
            &res(&robot, "list", "", "secrets", "", "lab", "")
        ));
        assert!(!allowed(
            &r,
            &res(&robot, "list", "", "secrets", "", "prod", "")
        ));
        assert!(!allowed(
            &r,
            &res(&robot, "list", "", "secrets", "", "", "")
        ));
        // A robot of the same name elsewhere is another account.
        assert!(!allowed(
            &r,
            &res(&sa("prod", "robot"), "list", "", "secrets", "", "lab", "")
        ));
        let dev = user("carol", &["devs"]);
        assert!(allowed(&r, &res(&dev, "list", "", "pods", "", "lab", "")));
        assert!(!allowed(&r, &res(&dev, "list", "", "pods", "", "prod", "")));
        assert!(!allowed(&r, &res(&dev, "list", "", "pods", "", "", "")));
        let ci = sa("tools", "ci");
        assert!(allowed(&r, &res(&ci, "list", "", "pods", "", "lab", "")));
        assert!(!allowed(
            &r,
            &res(&sa("lab", "ci"), "list", "", "pods", "", "lab", "")
        ));
        // A ClusterRoleBinding's SA subject needs a namespace.
        r.upsert(
            "ClusterRoleBinding",
            &binding(
                None,
                "nons",
                "ClusterRole",
                "pod-reader",
                json!([{"kind": "ServiceAccount", "name": "x"}]),
            ),
        );
        assert!(!allowed(
            &r,
            &res(&sa("", "x"), "list", "", "pods", "", "lab", "")
        ));
        // Users by name, including an SA named as a user.
        r.upsert(
            "ClusterRoleBinding",
            &binding(
                None,
                "byname",
                "ClusterRole",
                "pod-reader",
                json!([{"kind": "User", "name": "system:serviceaccount:kube-system:gc"}]),
            ),
        );
        assert!(allowed(
            &r,
            &res(&sa("kube-system", "gc"), "list", "", "pods", "", "", "")
        ));
        // Removing and replacing bindings takes effect.
        r.remove("RoleBinding", "lab", "robot-reads");
        assert!(!allowed(
            &r,
            &res(&robot, "list", "", "secrets", "", "lab", "")
        ));
        r.upsert(
            "ClusterRoleBinding",
            &binding(
                None,
                "byname",
                "ClusterRole",
                "pod-reader",
                json!([{"kind": "User", "name": "dave"}]),
            ),
        );
        assert!(!allowed(
            &r,
            &res(&sa("kube-system", "gc"), "list", "", "pods", "", "", "")
        ));
        assert!(allowed(
            &r,
            &res(&user("dave", &[]), "list", "", "pods", "", "", "")
        ));
        r.remove("ClusterRole", "", "pod-reader");
        assert_eq!(
            r.authorize(&res(&user("dave", &[]), "list", "", "pods", "", "", "")),
            Decision::Deny(
                "RBAC: clusterrole.rbac.authorization.k8s.io \"pod-reader\" not found".to_string()
            )
        );
        // Masters may do anything, bound or not.
        let admin = user("kubernetes-admin", &["system:masters"]);
        assert!(allowed(&r, &res(&admin, "delete", "x", "y", "z", "", "")));
        assert!(allowed(&r, &url(&admin, "get", "/anything")));
    }

    #[test]
    fn missing_roles_make_the_reason() {
        let r = Rbac::new();
        r.upsert(
            "RoleBinding",
            &binding(
                Some("lab"),
                "a",
                "Role",
                "gone",
                json!([{"kind": "User", "name": "eve"}]),
            ),
        );
        r.upsert(
            "ClusterRoleBinding",
            &binding(
                None,
                "b",
                "ClusterRole",
                "gone2",
                json!([{"kind": "User", "name": "eve"}]),
            ),
        );
        let u = user("eve", &[]);
        let a = res(&u, "list", "", "pods", "", "lab", "");
        let Decision::Deny(reason) = r.authorize(&a) else {
            panic!("allowed");
        };
        assert_eq!(
            reason,
            "RBAC: [clusterrole.rbac.authorization.k8s.io \"gone2\" not found, role.rbac.authorization.k8s.io \"gone\" not found]"
        );
        assert_eq!(
            forbidden_message(&a, &reason),
            "pods is forbidden: User \"eve\" cannot list resource \"pods\" in API group \"\" in the namespace \"lab\": RBAC: [clusterrole.rbac.authorization.k8s.io \"gone2\" not found, role.rbac.authorization.k8s.io \"gone\" not found]"
        );
        let status = r.rules_review_status(&u, "lab");
        assert_eq!(status["incomplete"], json!(true));
        assert!(
            status["evaluationError"]
                .as_str()
                .is_some_and(|e| e.contains("gone2"))
        );
    }

    #[test]
    fn forbidden_messages() {
        let u = sa("lab", "robot");
        assert_eq!(
            forbidden_message(&res(&u, "list", "", "secrets", "", "lab", ""), ""),
            "secrets is forbidden: User \"system:serviceaccount:lab:robot\" cannot list resource \"secrets\" in API group \"\" in the namespace \"lab\""
        );
        assert_eq!(
            forbidden_message(&res(&u, "create", "", "pods", "exec", "lab", "p"), ""),
            "pods \"p\" is forbidden: User \"system:serviceaccount:lab:robot\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"lab\""
        );
        assert_eq!(
            forbidden_message(&res(&u, "get", "apps", "deployments", "", "lab", "web"), ""),
            "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:lab:robot\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"lab\""
        );
        let x = user("x", &[]);
        assert_eq!(
            forbidden_message(&res(&x, "list", "", "nodes", "", "", ""), ""),
            "nodes is forbidden: User \"x\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        );
        assert_eq!(
            forbidden_message(
                &res(
                    &x,
                    "create",
                    "rbac.authorization.k8s.io",
                    "clusterroles",
                    "",
                    "",
                    ""
                ),
                ""
            ),
            "clusterroles.rbac.authorization.k8s.io is forbidden: User \"x\" cannot create resource \"clusterroles\" in API group \"rbac.authorization.k8s.io\" at the cluster scope"
        );
        assert_eq!(
            forbidden_message(&url(&x, "get", "/apis"), ""),
            "forbidden: User \"x\" cannot get path \"/apis\""
        );
        assert_eq!(
            forbidden_message(&url(&user("a\"b", &[]), "get", "/"), "why"),
            "forbidden: User \"a\\\"b\" cannot get path \"/\": why"
        );
    }

    #[test]
    fn aggregation() {
        let r = bootstrapped();
        let view = r.aggregated_rules("view").expect("view aggregates");
        let edit = r.aggregated_rules("edit").expect("edit aggregates");
        let admin = r.aggregated_rules("admin").expect("admin aggregates");
        assert!(!view.is_empty());
        for rule in &view {
            assert!(edit.contains(rule), "edit lacks {rule}");
        }
        for rule in &edit {
            assert!(admin.contains(rule), "admin lacks {rule}");
        }
        assert!(edit.len() > view.len() && admin.len() > edit.len());
        assert_eq!(r.aggregated_rules("cluster-admin"), None);
        assert_eq!(r.aggregated_rules("nope"), None);
        assert_eq!(r.aggregating_cluster_roles(), vec!["admin", "edit", "view"]);
        // A new role labelled to aggregate into view shows up in view, edit and admin.
        r.upsert(
            "ClusterRole",
            &json!({"metadata": {"name": "widgets-view",
                                 "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                    "rules": [{"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}]}),
        );
        let widget =
            json!({"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]});
        for role in ["view", "edit", "admin"] {
            assert!(
                r.aggregated_rules(role).expect("rules").contains(&widget),
                "{role}"
            );
        }
        // Through a RoleBinding to view.
        r.upsert(
            "RoleBinding",
            &binding(
                Some("lab"),
                "v",
                "ClusterRole",
                "view",
                json!([{"kind": "User", "name": "v"}]),
            ),
        );
        let v = user("v", &["system:authenticated"]);
        assert!(allowed(
            &r,
            &res(&v, "get", "example.com", "widgets", "", "lab", "w")
        ));
        assert!(allowed(
            &r,
            &res(&v, "list", "apps", "deployments", "", "lab", "")
        ));
        assert!(!allowed(&r, &res(&v, "list", "", "secrets", "", "lab", "")));
        assert!(!allowed(&r, &res(&v, "get", "", "secrets", "", "lab", "s")));
        assert!(!allowed(&r, &res(&v, "create", "", "pods", "", "lab", "")));
        assert!(!allowed(
            &r,
            &res(&v, "list", "apps", "deployments", "", "prod", "")
        ));
        r.remove("ClusterRole", "", "widgets-view");
        assert!(!allowed(
            &r,
            &res(&v, "get", "example.com", "widgets", "", "lab", "w")
        ));
        // matchExpressions.
        r.upsert(
            "ClusterRole",
            &json!({"metadata": {"name": "agg"},
                    "aggregationRule": {"clusterRoleSelectors": [
                        {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}]}}),
        );
        r.upsert(
            "ClusterRole",
            &json!({"metadata": {"name": "part", "labels": {"tier": "b"}},
                    "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
        );
        assert_eq!(
            r.aggregated_rules("agg"),
            Some(vec![
                json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]})
            ])
        );
    }

    #[test]
    fn edit_and_admin_through_bindings() {
        let r = bootstrapped();
        r.upsert(
            "RoleBinding",
            &binding(
                Some("lab"),
                "e",
                "ClusterRole",
                "edit",
                json!([{"kind": "User", "name": "ed"}]),
            ),
        );
        r.upsert(
            "RoleBinding",
            &binding(
                Some("lab"),
                "a",
                "ClusterRole",
                "admin",
                json!([{"kind": "User", "name": "ad"}]),
            ),
        );
        let ed = user("ed", &["system:authenticated"]);
        let ad = user("ad", &["system:authenticated"]);
        assert!(allowed(&r, &res(&ed, "get", "", "secrets", "", "lab", "s")));
        assert!(allowed(
            &r,
            &res(&ed, "create", "", "pods", "exec", "lab", "p")
        ));
        assert!(allowed(
            &r,
            &res(&ed, "patch", "apps", "deployments", "scale", "lab", "d")
        ));
        assert!(!allowed(
            &r,
            &res(
                &ed,
                "create",
                "rbac.authorization.k8s.io",
                "rolebindings",
                "",
                "lab",
                ""
            )
        ));
        assert!(allowed(
            &r,
            &res(
                &ad,
                "create",
                "rbac.authorization.k8s.io",
                "rolebindings",
                "",
                "lab",
                ""
            )
        ));
        assert!(allowed(&r, &res(&ad, "list", "", "pods", "", "lab", "")));
        assert!(!allowed(&r, &res(&ad, "list", "", "pods", "", "", "")));
    }

    #[test]
    fn bootstrap_policy_grants() {
        let r = bootstrapped();
        let sched = user("system:kube-scheduler", &["system:authenticated"]);
        assert!(allowed(
            &r,
            &res(&sched, "create", "", "pods", "binding", "lab", "p")
        ));
        assert!(allowed(
            &r,
            &res(&sched, "create", "", "bindings", "", "lab", "")
        ));
        assert!(allowed(&r, &res(&sched, "watch", "", "pods", "", "", "")));
        assert!(allowed(&r, &res(&sched, "list", "", "nodes", "", "", "")));
        assert!(allowed(
            &r,
            &res(
                &sched,
                "update",
                "coordination.k8s.io",
                "leases",
                "",
                "kube-system",
                "kube-scheduler"
            )
        ));
        assert!(!allowed(
            &r,
            &res(
                &sched,
                "update",
                "coordination.k8s.io",
                "leases",
                "",
                "kube-system",
                "other"
            )
        ));
        assert!(!allowed(
            &r,
            &res(&sched, "list", "", "secrets", "", "", "")
        ));
        let kcm = user("system:kube-controller-manager", &["system:authenticated"]);
        assert!(allowed(
            &r,
            &res(&kcm, "list", "apps", "deployments", "", "", "")
        ));
        assert!(allowed(
            &r,
            &res(
                &kcm,
                "create",
                "",
                "serviceaccounts",
                "token",
                "kube-system",
                "x"
            )
        ));
        let proxy = user("system:kube-proxy", &["system:authenticated"]);
        assert!(allowed(
            &r,
            &res(
                &proxy,
                "watch",
                "discovery.k8s.io",
                "endpointslices",
                "",
                "",
                ""
            )
        ));
        let rs = sa("kube-system", "replicaset-controller");
        assert!(allowed(&r, &res(&rs, "create", "", "pods", "", "lab", "")));
        assert!(allowed(
            &r,
            &res(&rs, "update", "apps", "replicasets", "status", "lab", "r")
        ));
        let anyone = user("someone", &["system:authenticated"]);
        assert!(allowed(&r, &url(&anyone, "get", "/apis")));
        assert!(allowed(&r, &url(&anyone, "get", "/apis/apps/v1")));
        assert!(allowed(&r, &url(&anyone, "get", "/version")));
        assert!(allowed(
            &r,
            &res(
                &anyone,
                "create",
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "",
                "",
                ""
            )
        ));
        assert!(allowed(
            &r,
            &res(
                &anyone,
                "create",
                "authentication.k8s.io",
                "selfsubjectreviews",
                "",
                "",
                ""
            )
        ));
        assert!(!allowed(
            &r,
            &res(&anyone, "list", "", "pods", "", "default", "")
        ));
        assert!(!allowed(&r, &url(&anyone, "get", "/metrics")));
        let anon = user("system:anonymous", &["system:unauthenticated"]);
        assert!(allowed(&r, &url(&anon, "get", "/healthz")));
        assert!(allowed(&r, &url(&anon, "get", "/version")));
        assert!(!allowed(&r, &url(&anon, "get", "/apis")));
        // Nodes are authorized by the Node authorizer (system:node is bound to nobody): the
        // node rules, writes only to its own Node and Lease.
        let node = user("system:node:n1", &["system:nodes", "system:authenticated"]);
        assert!(allowed(&r, &res(&node, "create", "", "nodes", "", "", "")));
        assert!(allowed(
            &r,
            &res(&node, "patch", "", "nodes", "status", "", "n1")
        ));
        assert!(!allowed(
            &r,
            &res(&node, "patch", "", "nodes", "status", "", "n2")
        ));
        assert!(allowed(&r, &res(&node, "list", "", "nodes", "", "", "")));
        let lease = |name| {
            res(
                &node,
                "update",
                "coordination.k8s.io",
                "leases",
                "",
                "kube-node-lease",
                name,
            )
        };
        assert!(allowed(&r, &lease("n1")));
        assert!(!allowed(&r, &lease("n2")));
        assert!(allowed(
            &r,
            &res(&node, "patch", "", "pods", "status", "ns", "p")
        ));
        assert!(!allowed(
            &r,
            &res(&node, "delete", "", "namespaces", "", "", "ns")
        ));
        // Only a node name in the system:nodes group.
        let pretender = user("system:node:n1", &["system:authenticated"]);
        assert!(!allowed(
            &r,
            &res(&pretender, "list", "", "nodes", "", "", "")
        ));
    }

    #[test]
    fn rules_for_users() {
        let r = bootstrapped();
        r.upsert(
            "Role",
            &role("lab", "reader", json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s1"]}])),
        );
        r.upsert(
            "RoleBinding",
            &binding(
                Some("lab"),
                "rb",
                "Role",
                "reader",
                json!([{"kind": "ServiceAccount", "name": "robot"}]),
            ),
        );
        let (res_rules, url_rules) = r.rules_for(&sa("lab", "robot"), "lab");
        assert!(res_rules.contains(&json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s1"]})));
        assert!(res_rules.contains(&json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]})));
        assert!(url_rules.iter().any(|u| {
            u["nonResourceURLs"]
                .as_array()
                .is_some_and(|a| a.contains(&json!("/apis/*")))
        }));
        let (other_ns, _) = r.rules_for(&sa("lab", "robot"), "prod");
        assert!(
            !other_ns
                .iter()
                .any(|r| r["resources"] == json!(["secrets"]))
        );
        let (m, n) = r.rules_for(
            &user("admin", &["system:masters", "system:authenticated"]),
            "",
        );
        assert_eq!(
            m[0],
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
        );
        assert_eq!(n[0], json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
        let status = r.rules_review_status(&sa("lab", "robot"), "lab");
        assert_eq!(status["incomplete"], json!(false));
        assert!(status.get("evaluationError").is_none());
    }

    #[test]
    fn junk_objects_are_harmless() {
        let r = Rbac::new();
        for junk in [
            json!(null),
            json!(1),
            json!({"metadata": {}}),
            json!({"metadata": {"name": 5}}),
            json!({"metadata": {"name": "x"}, "rules": "no", "subjects": {"a": 1}, "roleRef": 7}),
            json!({"metadata": {"name": "x"}, "aggregationRule": {"clusterRoleSelectors": [1, null]}}),
        ] {
            for kind in [
                "Role",
                "ClusterRole",
                "RoleBinding",
                "ClusterRoleBinding",
                "Pod",
            ] {
                r.upsert(kind, &junk);
            }
        }
        let u = user("x", &[]);
        assert!(!allowed(&r, &res(&u, "get", "", "pods", "", "lab", "p")));
        let _ = r.rules_for(&u, "lab");
    }
}
