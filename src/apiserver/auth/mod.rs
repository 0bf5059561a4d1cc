//! Authentication and authorization: who is asking, and may they do it.
//!
//! Every request to the kube-apiserver passes two gates before any handler runs.
//!
//! **Authentication** turns the request's credentials into a [`User`]: a name, a uid, groups and
//! extra attributes. A client certificate gives its CN as the name and its O fields as the groups
//! (that is how the admin, the scheduler, the controller-manager and the kubelets identify
//! themselves). A bearer token that is a service-account JWT ([`token`]) gives
//! `system:serviceaccount:<namespace>:<name>` with the groups `system:serviceaccounts`,
//! `system:serviceaccounts:<namespace>` and `system:authenticated`, plus the pod it is bound to as
//! extra. Pods get such tokens projected into `/var/run/secrets/kubernetes.io/serviceaccount/`;
//! the API server issues them (TokenRequest, signed with `--service-account-signing-key-file`)
//! and checks them (`--service-account-key-file`, `--service-account-issuer`,
//! `--api-audiences`). A credential that does not check out is a 401; no credential at all makes
//! the caller `system:anonymous` in `system:unauthenticated`.
//!
//! **Authorization** decides whether that user may perform the request, described as
//! [`Attributes`]: a verb (`get`, `list`, `create`, …) on a resource in an API group, possibly
//! a subresource, a namespace and a name, or a verb on a non-resource path such as `/healthz`.
//! Members of `system:masters` may do everything. Everyone else goes through RBAC ([`rbac`]):
//! Roles and ClusterRoles list allowed rules; RoleBindings (in one namespace) and
//! ClusterRoleBindings (everywhere) grant those rules to users, groups and service accounts.
//! RBAC only ever allows; anything no rule allows is a 403 whose message says exactly what was
//! refused ([`forbidden_message`]). A fresh cluster starts with the default roles and bindings
//! of [`policy`] (cluster-admin for `system:masters`, discovery for everyone authenticated, the
//! scheduler's and controller-manager's own roles, the user-facing admin/edit/view, …).

pub mod policy;
pub mod rbac;
pub mod token;

use std::collections::BTreeMap;

pub use policy::bootstrap_policy;
pub use rbac::{Rbac, forbidden_message};
pub use token::{AuthError, Claims, ObjectRef, TokenAuthenticator, TokenIssuer, TokenRequest};

/// Who is asking, once authenticated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// What is being asked, as the authorizer sees it. A resource request has `path: None`; a
/// non-resource request (`/healthz`, `/apis`, …) has `path: Some(..)` and leaves the resource
/// fields empty.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    pub user: &'a User,
    pub verb: &'a str,
    pub api_group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// The request path for non-resource requests.
    pub path: Option<&'a str>,
}

impl Attributes<'_> {
    /// Whether this is a request on a resource (as opposed to a non-resource path).
    pub fn is_resource_request(&self) -> bool {
        self.path.is_none()
    }
}

/// The authorizer's answer. `Deny` carries the reason to append to the forbidden message
/// (empty unless something went wrong, e.g. a binding to a missing role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

/// The group whose members may do everything.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// The group every authenticated user is in.
pub const ALL_AUTHENTICATED: &str = "system:authenticated";
/// The group of requests without credentials.
pub const ALL_UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user name of requests without credentials.
pub const ANONYMOUS: &str = "system:anonymous";
