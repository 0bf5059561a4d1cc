//! The API server's OpenAPI documents: `/openapi/v2` (JSON and gnostic protobuf) and
//! `/openapi/v3` (discovery plus one document per group-version), as the real kube-apiserver
//! serves them, so that the real kubectl can `explain` every served kind, find that the server
//! does server-side field validation (`fieldValidation` on every PATCH operation, which is what
//! kubectl's query-parameter verifier looks for) and build its validation models.
//!
//! Schemas come from `k8s-openapi`'s `schemars` impls (their names are the real definition names,
//! `io.k8s.api.core.v1.Pod`); list kinds, `x-kubernetes-group-version-kind`, paths and operations
//! are added here. Everything is built once by [`OpenApi::build`] and then served as bytes.
//!
//! Serving (what the real server does, `k8s.io/kube-openapi` handler and handler3):
//! - `GET /openapi/v2`: [`OpenApi::v2_protobuf`] when [`wants_v2_protobuf`]`(Accept)` (kubectl
//!   1.27/1.28 send `application/com.github.proto-openapi.spec.v2@v1.0+protobuf` and decode the
//!   answer as protobuf, no JSON fallback), with Content-Type [`V2_PROTOBUF_CONTENT_TYPE`];
//!   otherwise [`OpenApi::v2_json`] (`application/json`). Header `Etag:` [`OpenApi::v2_etag`]
//!   for both; `If-None-Match` equal to it → 304.
//! - `GET /openapi/v3`: [`OpenApi::v3_discovery`], `application/json`.
//! - `GET /openapi/v3/<api/v1|apis/G/V>`: [`OpenApi::v3_group_version`] gives the body and its
//!   hash; `Etag: "<hash>"`. With `?hash=` equal to it, add `Cache-Control: public, immutable`
//!   and an `Expires` a year ahead; with another `?hash=`, answer 301 to
//!   [`OpenApi::v3_server_relative_url`]. Unknown group-version → 404.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use prost::encoding::{WireType, encode_key, encode_varint};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

/// Content-Type of the protobuf form of `/openapi/v2` (the real server's spelling).
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Whether an `Accept` header asks `/openapi/v2` for protobuf (either spelling the real server
/// accepts; kubectl 1.27/1.28 send `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`).
pub fn wants_v2_protobuf(accept: &str) -> bool {
    accept.split(',').any(|clause| {
        let media = clause.split(';').next().unwrap_or("").trim();
        media.eq_ignore_ascii_case("application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
            || media.eq_ignore_ascii_case(V2_PROTOBUF_CONTENT_TYPE)
    })
}

/// The Kubernetes version the documents describe (`info.version`).
const SPEC_VERSION: &str = "v1.33.0";

/// STRATEGIC HOOK — the single call site of the `x-kubernetes-patch-strategy` /
/// `x-kubernetes-patch-merge-key` extensions (`strategic.rs`). [`OpenApi::build`] runs it on the
/// v2 definitions before anything is serialized, so v2 JSON, v2 protobuf (which kubectl 1.27/1.28
/// read patch strategies from), v3 and [`OpenApi::definitions`] all carry what it adds.
const ADD_EXTENSIONS: fn(&mut Map<String, Value>) = super::strategic::add_extensions;

/// One served kind (the lead fills these from the API server's resource table).
#[derive(Debug, Clone, Copy)]
pub struct ServedKind {
    /// API group, `""` for core.
    pub group: &'static str,
    /// Version, `v1`.
    pub version: &'static str,
    /// Kind, `Pod`.
    pub kind: &'static str,
    /// Resource (plural, lower case), `pods`.
    pub plural: &'static str,
    /// Whether the kind lives in namespaces.
    pub namespaced: bool,
    /// Subresources, e.g. `["status", "scale", "log"]`; paths are described for `status` and
    /// `scale`, the others are left out of the documents.
    pub subresources: &'static [&'static str],
}

/// The OpenAPI documents, serialized once.
pub struct OpenApi {
    definitions: Map<String, Value>,
    v2_json: Vec<u8>,
    v2_protobuf: Vec<u8>,
    v2_etag: String,
    v3_discovery: Vec<u8>,
    v3: V3Documents,
}

/// `api/v1` or `apis/G/V` → (document, hash).
type V3Documents = BTreeMap<String, (Vec<u8>, String)>;

impl OpenApi {
    /// Builds every document for `kinds`.
    pub fn build(kinds: &[ServedKind]) -> OpenApi {
        Self::build_with(kinds, ADD_EXTENSIONS)
    }

    /// Builds every document, running `add_extensions` on the v2 definitions first.
    pub fn build_with(
        kinds: &[ServedKind],
        add_extensions: fn(&mut Map<String, Value>),
    ) -> OpenApi {
        let (mut definitions, names) = build_definitions(kinds);
        add_extensions(&mut definitions);
        let paths = build_paths(kinds, &names);

        // v2: keys in sorted order, like the real document.
        let v2_paths: Map<String, Value> =
            paths.iter().map(|p| (p.path.clone(), p.to_v2())).collect();
        // The three serializations are independent: run them side by side.
        let (v2_json, v2_protobuf, (v3, v3_discovery)) = std::thread::scope(|scope| {
            let protobuf = scope.spawn(|| pb::document(&definitions, &v2_paths));
            let v3 = scope.spawn(|| v3_documents(&definitions, &paths));
            let json = v2_document(&definitions, &v2_paths);
            // A panic in a builder thread is a bug here; surface it rather than serve half a document.
            let protobuf = protobuf
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            let v3 = v3.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            (json, protobuf, v3)
        });
        let v2_etag = format!("\"{}\"", etag_of(&v2_json));

        OpenApi {
            definitions,
            v2_json,
            v2_protobuf,
            v2_etag,
            v3_discovery,
            v3,
        }
    }

    /// `GET /openapi/v2` as JSON.
    pub fn v2_json(&self) -> &[u8] {
        &self.v2_json
    }

    /// `GET /openapi/v2` as gnostic's `openapi.v2.Document` protobuf (what kubectl 1.27/1.28 ask for).
    pub fn v2_protobuf(&self) -> &[u8] {
        &self.v2_protobuf
    }

    /// The `Etag` header value (quoted) for `/openapi/v2`, both forms: sha512 of the JSON, upper-case hex.
    pub fn v2_etag(&self) -> &str {
        &self.v2_etag
    }

    /// `GET /openapi/v3`: `{"paths":{"api/v1":{"serverRelativeURL":"/openapi/v3/api/v1?hash=…"},…}}`.
    pub fn v3_discovery(&self) -> &[u8] {
        &self.v3_discovery
    }

    /// `GET /openapi/v3/<path>` for `path` = `api/v1` or `apis/<group>/<version>` (a leading `/`,
    /// a leading `openapi/v3/` and a query string are tolerated): the document and its hash
    /// (sha512 of the document, upper-case hex; quote it for the `Etag` header).
    pub fn v3_group_version(&self, path: &str) -> Option<(&[u8], &str)> {
        let key = v3_key(path);
        self.v3
            .get(key)
            .map(|(doc, hash)| (doc.as_slice(), hash.as_str()))
    }

    /// `/openapi/v3/<path>?hash=<hash>`, where a stale `?hash=` is redirected to (301).
    pub fn v3_server_relative_url(&self, path: &str) -> Option<String> {
        let key = v3_key(path);
        self.v3
            .get(key)
            .map(|(_, hash)| format!("/openapi/v3/{key}?hash={hash}"))
    }

    /// The v2 `definitions` (refs are `#/definitions/…`), after the extensions hook ran.
    pub fn definitions(&self) -> &Map<String, Value> {
        &self.definitions
    }
}

fn v3_key(path: &str) -> &str {
    let path = path.split('?').next().unwrap_or(path);
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("openapi/v3/").unwrap_or(path);
    path.trim_end_matches('/')
}

fn etag_of(bytes: &[u8]) -> String {
    let digest = Sha512::digest(bytes);
    let mut out = String::with_capacity(128);
    for b in digest.iter() {
        out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
    }
    out
}

fn v2_global_parameters() -> Map<String, Value> {
    GLOBAL_PARAMS
        .iter()
        .map(|p| (p.name.to_owned(), p.to_v2()))
        .collect()
}

fn v2_document(definitions: &Map<String, Value>, paths: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 << 20);
    out.extend_from_slice(b"{\"definitions\":");
    write_json(&mut out, definitions);
    out.extend_from_slice(b",\"info\":");
    write_json(
        &mut out,
        &json!({"title": "Kubernetes", "version": SPEC_VERSION}),
    );
    out.extend_from_slice(b",\"parameters\":");
    write_json(&mut out, &v2_global_parameters());
    out.extend_from_slice(b",\"paths\":");
    write_json(&mut out, paths);
    out.extend_from_slice(b",\"swagger\":\"2.0\"}");
    out.shrink_to_fit();
    out
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Serializing a `serde_json::Value`/`Map` into a Vec cannot fail (string keys, no I/O).
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

// ---------------------------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------------------------

const DEFS: &str = "#/definitions/";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const GVK_EXT: &str = "x-kubernetes-group-version-kind";

const API_VERSION_DESC: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DESC: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

/// Adds `T`'s schema and everything it references; returns its definition name.
fn add<T: JsonSchema>(generator: &mut SchemaGenerator) -> String {
    generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

macro_rules! known_kinds {
    ($( ($g:literal, $v:literal, $k:literal) => $ty:ty, )*) => {
        /// Adds the schema of a kind k8s-openapi knows; `None` for any other kind.
        fn add_known(generator: &mut SchemaGenerator, group: &str, version: &str, kind: &str) -> Option<String> {
            match (group, version, kind) {
                $( ($g, $v, $k) => Some(add::<$ty>(generator)), )*
                _ => None,
            }
        }
    };
}

known_kinds! {
        ("", "v1", "APIGroup") => k8s_openapi::apimachinery::pkg::apis::meta::v1::APIGroup,
        ("", "v1", "APIGroupList") => k8s_openapi::apimachinery::pkg::apis::meta::v1::APIGroupList,
        ("", "v1", "APIResourceList") => k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList,
        ("", "v1", "APIVersions") => k8s_openapi::apimachinery::pkg::apis::meta::v1::APIVersions,
        ("", "v1", "Binding") => k8s_openapi::api::core::v1::Binding,
        ("", "v1", "ComponentStatus") => k8s_openapi::api::core::v1::ComponentStatus,
        ("", "v1", "ConfigMap") => k8s_openapi::api::core::v1::ConfigMap,
        ("", "v1", "Endpoints") => k8s_openapi::api::core::v1::Endpoints,
        ("", "v1", "Event") => k8s_openapi::api::core::v1::Event,
        ("", "v1", "LimitRange") => k8s_openapi::api::core::v1::LimitRange,
        ("", "v1", "Namespace") => k8s_openapi::api::core::v1::Namespace,
        ("", "v1", "Node") => k8s_openapi::api::core::v1::Node,
        ("", "v1", "PersistentVolume") => k8s_openapi::api::core::v1::PersistentVolume,
        ("", "v1", "PersistentVolumeClaim") => k8s_openapi::api::core::v1::PersistentVolumeClaim,
        ("", "v1", "Pod") => k8s_openapi::api::core::v1::Pod,
        ("", "v1", "PodTemplate") => k8s_openapi::api::core::v1::PodTemplate,
        ("", "v1", "ReplicationController") => k8s_openapi::api::core::v1::ReplicationController,
        ("", "v1", "ResourceQuota") => k8s_openapi::api::core::v1::ResourceQuota,
        ("", "v1", "Secret") => k8s_openapi::api::core::v1::Secret,
        ("", "v1", "Service") => k8s_openapi::api::core::v1::Service,
        ("", "v1", "ServiceAccount") => k8s_openapi::api::core::v1::ServiceAccount,
        ("", "v1", "Status") => k8s_openapi::apimachinery::pkg::apis::meta::v1::Status,
        ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration") => k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
        ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy") => k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy,
        ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding") => k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
        ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration") => k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
        ("admissionregistration.k8s.io", "v1alpha1", "MutatingAdmissionPolicy") => k8s_openapi::api::admissionregistration::v1alpha1::MutatingAdmissionPolicy,
        ("admissionregistration.k8s.io", "v1alpha1", "MutatingAdmissionPolicyBinding") => k8s_openapi::api::admissionregistration::v1alpha1::MutatingAdmissionPolicyBinding,
        ("admissionregistration.k8s.io", "v1beta1", "ValidatingAdmissionPolicy") => k8s_openapi::api::admissionregistration::v1beta1::ValidatingAdmissionPolicy,
        ("admissionregistration.k8s.io", "v1beta1", "ValidatingAdmissionPolicyBinding") => k8s_openapi::api::admissionregistration::v1beta1::ValidatingAdmissionPolicyBinding,
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition") => k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        ("apiregistration.k8s.io", "v1", "APIService") => k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService,
        ("apps", "v1", "ControllerRevision") => k8s_openapi::api::apps::v1::ControllerRevision,
        ("apps", "v1", "DaemonSet") => k8s_openapi::api::apps::v1::DaemonSet,
        ("apps", "v1", "Deployment") => k8s_openapi::api::apps::v1::Deployment,
        ("apps", "v1", "ReplicaSet") => k8s_openapi::api::apps::v1::ReplicaSet,
        ("apps", "v1", "StatefulSet") => k8s_openapi::api::apps::v1::StatefulSet,
        ("authentication.k8s.io", "v1", "SelfSubjectReview") => k8s_openapi::api::authentication::v1::SelfSubjectReview,
        ("authentication.k8s.io", "v1", "TokenRequest") => k8s_openapi::api::authentication::v1::TokenRequest,
        ("authentication.k8s.io", "v1", "TokenReview") => k8s_openapi::api::authentication::v1::TokenReview,
        ("authorization.k8s.io", "v1", "LocalSubjectAccessReview") => k8s_openapi::api::authorization::v1::LocalSubjectAccessReview,
        ("authorization.k8s.io", "v1", "SelfSubjectAccessReview") => k8s_openapi::api::authorization::v1::SelfSubjectAccessReview,
        ("authorization.k8s.io", "v1", "SelfSubjectRulesReview") => k8s_openapi::api::authorization::v1::SelfSubjectRulesReview,
        ("authorization.k8s.io", "v1", "SubjectAccessReview") => k8s_openapi::api::authorization::v1::SubjectAccessReview,
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler,
        ("autoscaling", "v1", "Scale") => k8s_openapi::api::autoscaling::v1::Scale,
        ("autoscaling", "v2", "HorizontalPodAutoscaler") => k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler,
        ("batch", "v1", "CronJob") => k8s_openapi::api::batch::v1::CronJob,
        ("batch", "v1", "Job") => k8s_openapi::api::batch::v1::Job,
        ("certificates.k8s.io", "v1", "CertificateSigningRequest") => k8s_openapi::api::certificates::v1::CertificateSigningRequest,
        ("certificates.k8s.io", "v1alpha1", "ClusterTrustBundle") => k8s_openapi::api::certificates::v1alpha1::ClusterTrustBundle,
        ("certificates.k8s.io", "v1beta1", "ClusterTrustBundle") => k8s_openapi::api::certificates::v1beta1::ClusterTrustBundle,
        ("coordination.k8s.io", "v1", "Lease") => k8s_openapi::api::coordination::v1::Lease,
        ("coordination.k8s.io", "v1alpha2", "LeaseCandidate") => k8s_openapi::api::coordination::v1alpha2::LeaseCandidate,
        ("coordination.k8s.io", "v1beta1", "LeaseCandidate") => k8s_openapi::api::coordination::v1beta1::LeaseCandidate,
        ("discovery.k8s.io", "v1", "EndpointSlice") => k8s_openapi::api::discovery::v1::EndpointSlice,
        ("events.k8s.io", "v1", "Event") => k8s_openapi::api::events::v1::Event,
        ("flowcontrol.apiserver.k8s.io", "v1", "FlowSchema") => k8s_openapi::api::flowcontrol::v1::FlowSchema,
        ("flowcontrol.apiserver.k8s.io", "v1", "PriorityLevelConfiguration") => k8s_openapi::api::flowcontrol::v1::PriorityLevelConfiguration,
        ("internal.apiserver.k8s.io", "v1alpha1", "StorageVersion") => k8s_openapi::api::apiserverinternal::v1alpha1::StorageVersion,
        ("networking.k8s.io", "v1", "IPAddress") => k8s_openapi::api::networking::v1::IPAddress,
        ("networking.k8s.io", "v1", "Ingress") => k8s_openapi::api::networking::v1::Ingress,
        ("networking.k8s.io", "v1", "IngressClass") => k8s_openapi::api::networking::v1::IngressClass,
        ("networking.k8s.io", "v1", "NetworkPolicy") => k8s_openapi::api::networking::v1::NetworkPolicy,
        ("networking.k8s.io", "v1", "ServiceCIDR") => k8s_openapi::api::networking::v1::ServiceCIDR,
        ("networking.k8s.io", "v1beta1", "IPAddress") => k8s_openapi::api::networking::v1beta1::IPAddress,
        ("networking.k8s.io", "v1beta1", "ServiceCIDR") => k8s_openapi::api::networking::v1beta1::ServiceCIDR,
        ("node.k8s.io", "v1", "RuntimeClass") => k8s_openapi::api::node::v1::RuntimeClass,
        ("policy", "v1", "Eviction") => k8s_openapi::api::policy::v1::Eviction,
        ("policy", "v1", "PodDisruptionBudget") => k8s_openapi::api::policy::v1::PodDisruptionBudget,
        ("rbac.authorization.k8s.io", "v1", "ClusterRole") => k8s_openapi::api::rbac::v1::ClusterRole,
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => k8s_openapi::api::rbac::v1::ClusterRoleBinding,
        ("rbac.authorization.k8s.io", "v1", "Role") => k8s_openapi::api::rbac::v1::Role,
        ("rbac.authorization.k8s.io", "v1", "RoleBinding") => k8s_openapi::api::rbac::v1::RoleBinding,
        ("resource.k8s.io", "v1alpha3", "DeviceClass") => k8s_openapi::api::resource::v1alpha3::DeviceClass,
        ("resource.k8s.io", "v1alpha3", "DeviceTaintRule") => k8s_openapi::api::resource::v1alpha3::DeviceTaintRule,
        ("resource.k8s.io", "v1alpha3", "ResourceClaim") => k8s_openapi::api::resource::v1alpha3::ResourceClaim,
        ("resource.k8s.io", "v1alpha3", "ResourceClaimTemplate") => k8s_openapi::api::resource::v1alpha3::ResourceClaimTemplate,
        ("resource.k8s.io", "v1alpha3", "ResourceSlice") => k8s_openapi::api::resource::v1alpha3::ResourceSlice,
        ("resource.k8s.io", "v1beta1", "DeviceClass") => k8s_openapi::api::resource::v1beta1::DeviceClass,
        ("resource.k8s.io", "v1beta1", "ResourceClaim") => k8s_openapi::api::resource::v1beta1::ResourceClaim,
        ("resource.k8s.io", "v1beta1", "ResourceClaimTemplate") => k8s_openapi::api::resource::v1beta1::ResourceClaimTemplate,
        ("resource.k8s.io", "v1beta1", "ResourceSlice") => k8s_openapi::api::resource::v1beta1::ResourceSlice,
        ("resource.k8s.io", "v1beta2", "DeviceClass") => k8s_openapi::api::resource::v1beta2::DeviceClass,
        ("resource.k8s.io", "v1beta2", "ResourceClaim") => k8s_openapi::api::resource::v1beta2::ResourceClaim,
        ("resource.k8s.io", "v1beta2", "ResourceClaimTemplate") => k8s_openapi::api::resource::v1beta2::ResourceClaimTemplate,
        ("resource.k8s.io", "v1beta2", "ResourceSlice") => k8s_openapi::api::resource::v1beta2::ResourceSlice,
        ("scheduling.k8s.io", "v1", "PriorityClass") => k8s_openapi::api::scheduling::v1::PriorityClass,
        ("storage.k8s.io", "v1", "CSIDriver") => k8s_openapi::api::storage::v1::CSIDriver,
        ("storage.k8s.io", "v1", "CSINode") => k8s_openapi::api::storage::v1::CSINode,
        ("storage.k8s.io", "v1", "CSIStorageCapacity") => k8s_openapi::api::storage::v1::CSIStorageCapacity,
        ("storage.k8s.io", "v1", "StorageClass") => k8s_openapi::api::storage::v1::StorageClass,
        ("storage.k8s.io", "v1", "VolumeAttachment") => k8s_openapi::api::storage::v1::VolumeAttachment,
        ("storage.k8s.io", "v1alpha1", "VolumeAttributesClass") => k8s_openapi::api::storage::v1alpha1::VolumeAttributesClass,
        ("storage.k8s.io", "v1beta1", "VolumeAttributesClass") => k8s_openapi::api::storage::v1beta1::VolumeAttributesClass,
        ("storagemigration.k8s.io", "v1alpha1", "StorageVersionMigration") => k8s_openapi::api::storagemigration::v1alpha1::StorageVersionMigration,
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("{DEFS}{name}") })
}

/// The definition name of a kind k8s-openapi does not know: the real convention, reversed group.
fn synthetic_name(kind: &ServedKind) -> String {
    if kind.group.is_empty() {
        return format!("io.k8s.api.core.{}.{}", kind.version, kind.kind);
    }
    let mut parts: Vec<&str> = kind.group.split('.').collect();
    parts.reverse();
    format!("{}.{}.{}", parts.join("."), kind.version, kind.kind)
}

/// The v2 definitions for `kinds`, and each kind's definition name (same order as `kinds`).
fn build_definitions(kinds: &[ServedKind]) -> (Map<String, Value>, Vec<String>) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    let mut generator = SchemaSettings::draft07()
        .with(|s| {
            s.meta_schema = None;
            s.transforms = Vec::new();
        })
        .into_generator();

    // What every document references.
    add::<meta::ObjectMeta>(&mut generator);
    add::<meta::ListMeta>(&mut generator);
    add::<meta::Status>(&mut generator);
    add::<meta::DeleteOptions>(&mut generator);
    add::<meta::WatchEvent<k8s_openapi::apimachinery::pkg::runtime::RawExtension>>(&mut generator);
    add::<meta::Patch>(&mut generator);
    add::<meta::APIResourceList>(&mut generator);
    add::<meta::APIGroupList>(&mut generator);
    add::<meta::APIGroup>(&mut generator);
    add::<meta::APIVersions>(&mut generator);
    if kinds.iter().any(|k| k.subresources.contains(&"scale")) {
        add::<k8s_openapi::api::autoscaling::v1::Scale>(&mut generator);
    }

    let mut names = Vec::with_capacity(kinds.len());
    let mut synthetic = Vec::new();
    for kind in kinds {
        let name = match add_known(&mut generator, kind.group, kind.version, kind.kind) {
            Some(name) => name,
            None => {
                let name = synthetic_name(kind);
                synthetic.push((name.clone(), kind));
                name
            }
        };
        names.push(name);
    }
    let mut defs = generator.take_definitions(false);

    for (name, kind) in synthetic {
        defs.insert(
            name,
            json!({
                "description": format!("{} ({}) is served by this API server; its fields are not described.", kind.kind, api_version(kind)),
                "properties": {
                    "apiVersion": {"description": API_VERSION_DESC, "type": "string"},
                    "kind": {"description": KIND_DESC, "type": "string"},
                    "metadata": {"$ref": format!("{DEFS}{OBJECT_META}"), "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"},
                },
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
            }),
        );
    }

    // x-kubernetes-group-version-kind, as the real document lists them.
    let mut gvks: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut push = |def: &str, value: Value| {
        let list = gvks.entry(def.to_owned()).or_default();
        if !list.contains(&value) {
            list.push(value);
        }
    };
    let mut group_versions: BTreeSet<(&str, &str)> = BTreeSet::new();
    group_versions.insert(("", "v1"));
    for (kind, name) in kinds.iter().zip(&names) {
        group_versions.insert((kind.group, kind.version));
        push(name, gvk(kind.group, kind.version, kind.kind));
        let list_kind = format!("{}List", kind.kind);
        push(
            &format!("{name}List"),
            gvk(kind.group, kind.version, &list_kind),
        );
        if kind.subresources.contains(&"scale") {
            push(SCALE, gvk("autoscaling", "v1", "Scale"));
        }
    }
    for (group, version) in &group_versions {
        push(DELETE_OPTIONS, gvk(group, version, "DeleteOptions"));
        push(WATCH_EVENT, gvk(group, version, "WatchEvent"));
    }
    push(STATUS, gvk("", "v1", "Status"));
    for kind in ["APIResourceList", "APIGroupList", "APIGroup", "APIVersions"] {
        push(
            &format!("io.k8s.apimachinery.pkg.apis.meta.v1.{kind}"),
            gvk("", "v1", kind),
        );
    }

    // List kinds (k8s-openapi has one generic List<T> without a schema).
    for (kind, name) in kinds.iter().zip(&names) {
        let list = format!("{name}List");
        if defs.contains_key(&list) {
            continue;
        }
        defs.insert(
            list,
            json!({
                "description": format!("{}List is a list of {} objects.", kind.kind, kind.kind),
                "properties": {
                    "apiVersion": {"description": API_VERSION_DESC, "type": "string"},
                    "items": {
                        "description": format!("List of {}.", kind.plural),
                        "items": reference(name),
                        "type": "array",
                    },
                    "kind": {"description": KIND_DESC, "type": "string"},
                    "metadata": {
                        "$ref": format!("{DEFS}{LIST_META}"),
                        "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                    },
                },
                "required": ["items"],
                "type": "object",
            }),
        );
    }

    for (def, list) in gvks {
        if let Some(Value::Object(schema)) = defs.get_mut(&def) {
            schema.insert(GVK_EXT.to_owned(), Value::Array(list));
        }
    }

    // The few definitions k8s-openapi spells differently from the real v2 document.
    if let Some(Value::Object(s)) = defs.get_mut(INT_OR_STRING) {
        s.insert("type".into(), "string".into());
        s.insert("format".into(), "int-or-string".into());
        s.insert("x-kubernetes-int-or-string".into(), true.into());
    }
    if let Some(Value::Object(s)) = defs.get_mut(QUANTITY) {
        s.remove("x-kubernetes-int-or-string");
        s.insert("type".into(), "string".into());
    }
    for schema in defs.values_mut() {
        if let Value::Object(s) = schema {
            // JSON, JSONSchemaPropsOr*: the real v2 document has only their description.
            if s.contains_key("oneOf") && !s.contains_key("type") {
                s.remove("oneOf");
            }
        }
    }
    if let Some(Value::Object(s)) =
        defs.get_mut("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON")
    {
        s.remove("type");
    }
    (defs, names)
}

fn api_version(kind: &ServedKind) -> String {
    if kind.group.is_empty() {
        kind.version.to_owned()
    } else {
        format!("{}/{}", kind.group, kind.version)
    }
}

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum In {
    Path,
    Query,
}

struct Param {
    name: &'static str,
    location: In,
    ty: &'static str,
    description: &'static str,
    /// v2: defined once under `parameters` and referred to. The write parameters stay inline,
    /// as in the real document: kubectl 1.27's v2 verifier reads `fieldValidation` only inline.
    global: bool,
}

const fn query(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: In::Query,
        ty,
        description,
        global: true,
    }
}

const fn query_inline(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: In::Query,
        ty,
        description,
        global: false,
    }
}

static P_NAME: Param = Param {
    name: "name",
    location: In::Path,
    ty: "string",
    description: "name of the object",
    global: false,
};
static P_NAMESPACE: Param = Param {
    name: "namespace",
    location: In::Path,
    ty: "string",
    description: "object name and auth scope, such as for teams and projects",
    global: false,
};
static P_PRETTY: Param = query(
    "pretty",
    "string",
    "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).",
);
static P_DRY_RUN: Param = query_inline(
    "dryRun",
    "string",
    "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
);
static P_FIELD_MANAGER: Param = query_inline(
    "fieldManager",
    "string",
    "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
);
static P_FIELD_VALIDATION: Param = query_inline(
    "fieldValidation",
    "string",
    "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
);
static P_FORCE: Param = query_inline(
    "force",
    "boolean",
    "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
);
static P_ALLOW_WATCH_BOOKMARKS: Param = query(
    "allowWatchBookmarks",
    "boolean",
    "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not assume bookmarks are returned at any specific interval, nor may they assume the server will send any BOOKMARK event during a session. If this is not a watch, this field is ignored.",
);
static P_CONTINUE: Param = query(
    "continue",
    "string",
    "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue) and the server may reject a continue value it does not recognize.",
);
static P_FIELD_SELECTOR: Param = query(
    "fieldSelector",
    "string",
    "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
);
static P_LABEL_SELECTOR: Param = query(
    "labelSelector",
    "string",
    "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
);
static P_LIMIT: Param = query(
    "limit",
    "integer",
    "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results.",
);
static P_RESOURCE_VERSION: Param = query(
    "resourceVersion",
    "string",
    "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
);
static P_RESOURCE_VERSION_MATCH: Param = query(
    "resourceVersionMatch",
    "string",
    "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
);
static P_SEND_INITIAL_EVENTS: Param = query(
    "sendInitialEvents",
    "boolean",
    "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection.",
);
static P_TIMEOUT_SECONDS: Param = query(
    "timeoutSeconds",
    "integer",
    "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.",
);
static P_WATCH: Param = query(
    "watch",
    "boolean",
    "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.",
);
static P_GRACE_PERIOD: Param = query(
    "gracePeriodSeconds",
    "integer",
    "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately.",
);
static P_IGNORE_STORE_READ_ERROR: Param = query(
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "boolean",
    "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error.",
);
static P_ORPHAN: Param = query(
    "orphanDependents",
    "boolean",
    "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both.",
);
static P_PROPAGATION: Param = query(
    "propagationPolicy",
    "string",
    "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground.",
);

/// The read and delete query parameters: the v2 document defines them once under `parameters`
/// and refers to them (`#/parameters/<name>`) as the real one does; v3 operations carry every
/// parameter inline (kubectl's v3 verifier reads the names there).
static GLOBAL_PARAMS: [&Param; 15] = [
    &P_ALLOW_WATCH_BOOKMARKS,
    &P_CONTINUE,
    &P_FIELD_SELECTOR,
    &P_GRACE_PERIOD,
    &P_IGNORE_STORE_READ_ERROR,
    &P_LABEL_SELECTOR,
    &P_LIMIT,
    &P_ORPHAN,
    &P_PRETTY,
    &P_PROPAGATION,
    &P_RESOURCE_VERSION,
    &P_RESOURCE_VERSION_MATCH,
    &P_SEND_INITIAL_EVENTS,
    &P_TIMEOUT_SECONDS,
    &P_WATCH,
];

static LIST_PARAMS: [&Param; 10] = [
    &P_ALLOW_WATCH_BOOKMARKS,
    &P_CONTINUE,
    &P_FIELD_SELECTOR,
    &P_LABEL_SELECTOR,
    &P_LIMIT,
    &P_RESOURCE_VERSION,
    &P_RESOURCE_VERSION_MATCH,
    &P_SEND_INITIAL_EVENTS,
    &P_TIMEOUT_SECONDS,
    &P_WATCH,
];
static WRITE_PARAMS: [&Param; 3] = [&P_DRY_RUN, &P_FIELD_MANAGER, &P_FIELD_VALIDATION];
static PATCH_PARAMS: [&Param; 4] = [&P_DRY_RUN, &P_FIELD_MANAGER, &P_FIELD_VALIDATION, &P_FORCE];
static DELETE_PARAMS: [&Param; 5] = [
    &P_DRY_RUN,
    &P_GRACE_PERIOD,
    &P_IGNORE_STORE_READ_ERROR,
    &P_ORPHAN,
    &P_PROPAGATION,
];
static DELETE_COLLECTION_PARAMS: [&Param; 13] = [
    &P_CONTINUE,
    &P_DRY_RUN,
    &P_FIELD_SELECTOR,
    &P_GRACE_PERIOD,
    &P_IGNORE_STORE_READ_ERROR,
    &P_LABEL_SELECTOR,
    &P_LIMIT,
    &P_ORPHAN,
    &P_PROPAGATION,
    &P_RESOURCE_VERSION,
    &P_RESOURCE_VERSION_MATCH,
    &P_SEND_INITIAL_EVENTS,
    &P_TIMEOUT_SECONDS,
];

const PRODUCES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];
const PRODUCES_LIST: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
];
const CONSUMES_ANY: &[&str] = &["*/*"];
const CONSUMES_PATCH: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

struct Body {
    def: String,
    required: bool,
}

struct Op {
    method: &'static str,
    action: &'static str,
    id: String,
    description: String,
    gvk: Value,
    tag: String,
    params: Vec<&'static Param>,
    body: Option<Body>,
    consumes: &'static [&'static str],
    produces: &'static [&'static str],
    /// (code, definition)
    responses: Vec<(&'static str, String)>,
}

struct PathSpec {
    path: String,
    /// `api/v1` or `apis/G/V`: the v3 document the path belongs to.
    gv_path: String,
    params: Vec<&'static Param>,
    ops: Vec<Op>,
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `rbac.authorization.k8s.io` → `RbacAuthorization`, `""` → `Core` (operation ids and tags).
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    let short = group.strip_suffix(".k8s.io").unwrap_or(group);
    short.split(['.', '-']).map(upper_first).collect()
}

fn response_code_description(code: &str) -> &'static str {
    match code {
        "200" => "OK",
        "201" => "Created",
        "202" => "Accepted",
        _ => "Unauthorized",
    }
}

fn build_paths(kinds: &[ServedKind], names: &[String]) -> Vec<PathSpec> {
    let mut out = Vec::new();
    for (k, def) in kinds.iter().zip(names) {
        let gv_path = if k.group.is_empty() {
            format!("api/{}", k.version)
        } else {
            format!("apis/{}/{}", k.group, k.version)
        };
        let g = group_camel(k.group);
        let v = upper_first(k.version);
        let tag = format!("{}_{}", lower_first(&g), k.version);
        let ns_word = if k.namespaced { "Namespaced" } else { "" };
        let ns_seg = if k.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let ns_param: Vec<&'static Param> = if k.namespaced {
            vec![&P_NAMESPACE]
        } else {
            vec![]
        };
        let kind = k.kind;
        let list_def = format!("{def}List");
        let this_gvk = gvk(k.group, k.version, kind);
        let op = |method: &'static str, action: &'static str, id: String, description: String| Op {
            method,
            action,
            id,
            description,
            gvk: this_gvk.clone(),
            tag: tag.clone(),
            params: Vec::new(),
            body: None,
            consumes: CONSUMES_ANY,
            produces: PRODUCES,
            responses: Vec::new(),
        };
        let with = |mut o: Op,
                    params: &[&'static Param],
                    body: Option<Body>,
                    responses: &[(&'static str, &str)]| {
            o.params.extend_from_slice(params);
            o.body = body;
            o.responses = responses
                .iter()
                .map(|(c, d)| (*c, (*d).to_owned()))
                .collect();
            o
        };
        let body = |def: &str, required: bool| {
            Some(Body {
                def: def.to_owned(),
                required,
            })
        };
        let collection = format!("/{gv_path}{ns_seg}/{}", k.plural);
        let item = format!("{collection}/{{name}}");

        // The collection.
        let mut list = with(
            op(
                "get",
                "list",
                format!("list{g}{v}{ns_word}{kind}"),
                format!("list or watch objects of kind {kind}"),
            ),
            &LIST_PARAMS,
            None,
            &[("200", &list_def)],
        );
        list.produces = PRODUCES_LIST;
        let create = with(
            op(
                "post",
                "post",
                format!("create{g}{v}{ns_word}{kind}"),
                format!("create a {kind}"),
            ),
            &WRITE_PARAMS,
            body(def, true),
            &[("200", def), ("201", def), ("202", def)],
        );
        let delete_collection = with(
            op(
                "delete",
                "deletecollection",
                format!("delete{g}{v}Collection{ns_word}{kind}"),
                format!("delete collection of {kind}"),
            ),
            &DELETE_COLLECTION_PARAMS,
            body(DELETE_OPTIONS, false),
            &[("200", STATUS)],
        );
        let mut params = ns_param.clone();
        params.push(&P_PRETTY);
        out.push(PathSpec {
            path: collection.clone(),
            gv_path: gv_path.clone(),
            params,
            ops: vec![list, create, delete_collection],
        });

        // One object.
        let item_ops = vec![
            with(
                op(
                    "get",
                    "get",
                    format!("read{g}{v}{ns_word}{kind}"),
                    format!("read the specified {kind}"),
                ),
                &[],
                None,
                &[("200", def)],
            ),
            with(
                op(
                    "put",
                    "put",
                    format!("replace{g}{v}{ns_word}{kind}"),
                    format!("replace the specified {kind}"),
                ),
                &WRITE_PARAMS,
                body(def, true),
                &[("200", def), ("201", def)],
            ),
            {
                let mut o = with(
                    op(
                        "patch",
                        "patch",
                        format!("patch{g}{v}{ns_word}{kind}"),
                        format!("partially update the specified {kind}"),
                    ),
                    &PATCH_PARAMS,
                    body(PATCH, true),
                    &[("200", def), ("201", def)],
                );
                o.consumes = CONSUMES_PATCH;
                o
            },
            with(
                op(
                    "delete",
                    "delete",
                    format!("delete{g}{v}{ns_word}{kind}"),
                    format!("delete a {kind}"),
                ),
                &DELETE_PARAMS,
                body(DELETE_OPTIONS, false),
                &[("200", STATUS), ("202", STATUS)],
            ),
        ];
        let mut item_params = vec![&P_NAME];
        item_params.extend(ns_param.iter().copied());
        item_params.push(&P_PRETTY);
        out.push(PathSpec {
            path: item.clone(),
            gv_path: gv_path.clone(),
            params: item_params.clone(),
            ops: item_ops,
        });

        // Subresources with a body of their own kind.
        for sub in k.subresources {
            let (sub_def, sub_gvk, word): (&str, Value, &str) = match *sub {
                "status" => (def, this_gvk.clone(), "Status"),
                "scale" => (SCALE, gvk("autoscaling", "v1", "Scale"), "Scale"),
                _ => continue,
            };
            let lower = word.to_lowercase();
            let mut ops = vec![
                with(
                    op(
                        "get",
                        "get",
                        format!("read{g}{v}{ns_word}{kind}{word}"),
                        format!("read {lower} of the specified {kind}"),
                    ),
                    &[],
                    None,
                    &[("200", sub_def)],
                ),
                with(
                    op(
                        "put",
                        "put",
                        format!("replace{g}{v}{ns_word}{kind}{word}"),
                        format!("replace {lower} of the specified {kind}"),
                    ),
                    &WRITE_PARAMS,
                    body(sub_def, true),
                    &[("200", sub_def), ("201", sub_def)],
                ),
                {
                    let mut o = with(
                        op(
                            "patch",
                            "patch",
                            format!("patch{g}{v}{ns_word}{kind}{word}"),
                            format!("partially update {lower} of the specified {kind}"),
                        ),
                        &PATCH_PARAMS,
                        body(PATCH, true),
                        &[("200", sub_def), ("201", sub_def)],
                    );
                    o.consumes = CONSUMES_PATCH;
                    o
                },
            ];
            for o in &mut ops {
                o.gvk = sub_gvk.clone();
            }
            out.push(PathSpec {
                path: format!("{item}/{sub}"),
                gv_path: gv_path.clone(),
                params: item_params.clone(),
                ops,
            });
        }

        // Every namespace.
        if k.namespaced {
            let mut o = with(
                op(
                    "get",
                    "list",
                    format!("list{g}{v}{kind}ForAllNamespaces"),
                    format!("list or watch objects of kind {kind}"),
                ),
                &[],
                None,
                &[("200", &list_def)],
            );
            o.produces = PRODUCES_LIST;
            let mut params: Vec<&'static Param> = LIST_PARAMS.to_vec();
            params.push(&P_PRETTY);
            params.sort_by_key(|p| p.name);
            out.push(PathSpec {
                path: format!("/{gv_path}/{}", k.plural),
                gv_path: gv_path.clone(),
                params,
                ops: vec![o],
            });
        }

        // The deprecated watch paths.
        let watch_op = |action: &'static str, id: String, description: String| {
            let mut o = with(
                op("get", action, id, description),
                &[],
                None,
                &[("200", WATCH_EVENT)],
            );
            o.produces = PRODUCES_LIST;
            o
        };
        let watch_params = |extra: &[&'static Param]| {
            let mut params: Vec<&'static Param> = LIST_PARAMS.to_vec();
            params.extend_from_slice(extra);
            params.push(&P_PRETTY);
            params.sort_by_key(|p| p.name);
            params
        };
        let mut ns_and_name = ns_param.clone();
        ns_and_name.push(&P_NAME);
        out.push(PathSpec {
            path: format!("/{gv_path}/watch{ns_seg}/{}", k.plural),
            gv_path: gv_path.clone(),
            params: watch_params(&ns_param),
            ops: vec![watch_op(
                "watchlist",
                format!("watch{g}{v}{ns_word}{kind}List"),
                format!("watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."),
            )],
        });
        out.push(PathSpec {
            path: format!("/{gv_path}/watch{ns_seg}/{}/{{name}}", k.plural),
            gv_path: gv_path.clone(),
            params: watch_params(&ns_and_name),
            ops: vec![watch_op(
                "watch",
                format!("watch{g}{v}{ns_word}{kind}"),
                format!("watch changes to an object of kind {kind}. deprecated: use the 'watch' parameter with a list operation instead, filtered to a single item with the 'fieldSelector' parameter."),
            )],
        });
        if k.namespaced {
            out.push(PathSpec {
                path: format!("/{gv_path}/watch/{}", k.plural),
                gv_path: gv_path.clone(),
                params: watch_params(&[]),
                ops: vec![watch_op(
                    "watchlist",
                    format!("watch{g}{v}{kind}ListForAllNamespaces"),
                    format!("watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."),
                )],
            });
        }
    }
    // Two kinds on one path (should not happen) keep the first.
    let mut seen = BTreeSet::new();
    out.retain(|p| seen.insert(p.path.clone()));
    out
}

impl Param {
    /// In a v2 operation or path: a reference to the global definition, path parameters inline.
    fn to_v2_use(&self) -> Value {
        if self.global {
            json!({ "$ref": format!("#/parameters/{}", self.name) })
        } else {
            self.to_v2()
        }
    }

    fn to_v2(&self) -> Value {
        let mut p = json!({
            "description": self.description,
            "in": if self.location == In::Path { "path" } else { "query" },
            "name": self.name,
            "type": self.ty,
            "uniqueItems": true,
        });
        if self.location == In::Path {
            p["required"] = true.into();
        }
        p
    }

    fn to_v3(&self) -> Value {
        let mut p = json!({
            "description": self.description,
            "in": if self.location == In::Path { "path" } else { "query" },
            "name": self.name,
            "schema": {"type": self.ty, "uniqueItems": true},
        });
        if self.location == In::Path {
            p["required"] = true.into();
        }
        p
    }
}

impl Op {
    fn to_v2(&self) -> Value {
        let mut params = Vec::with_capacity(self.params.len() + 1);
        if let Some(body) = &self.body {
            let mut b = json!({"in": "body", "name": "body", "schema": reference(&body.def)});
            if body.required {
                b["required"] = true.into();
            }
            params.push(b);
        }
        params.extend(self.params.iter().map(|p| p.to_v2_use()));
        let mut responses = Map::new();
        for (code, def) in &self.responses {
            responses.insert(
                (*code).to_owned(),
                json!({"description": response_code_description(code), "schema": reference(def)}),
            );
        }
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        json!({
            "consumes": self.consumes,
            "description": self.description,
            "operationId": self.id,
            "parameters": params,
            "produces": self.produces,
            "responses": responses,
            "schemes": ["https"],
            "tags": [self.tag],
            "x-kubernetes-action": self.action,
            GVK_EXT: self.gvk,
        })
    }

    fn to_v3(&self) -> Value {
        let v3_ref = |def: &str| json!({ "$ref": format!("{SCHEMAS}{def}") });
        let mut o = json!({
            "description": self.description,
            "operationId": self.id,
            "tags": [self.tag],
            "x-kubernetes-action": self.action,
            GVK_EXT: self.gvk,
        });
        if !self.params.is_empty() {
            o["parameters"] = self.params.iter().map(|p| p.to_v3()).collect();
        }
        if let Some(body) = &self.body {
            let content: Map<String, Value> = self
                .consumes
                .iter()
                .map(|ct| ((*ct).to_owned(), json!({"schema": v3_ref(&body.def)})))
                .collect();
            let mut rb = json!({ "content": content });
            if body.required {
                rb["required"] = true.into();
            }
            o["requestBody"] = rb;
        }
        let mut responses = Map::new();
        for (code, def) in &self.responses {
            let content: Map<String, Value> = self
                .produces
                .iter()
                .map(|mt| ((*mt).to_owned(), json!({"schema": v3_ref(def)})))
                .collect();
            responses.insert(
                (*code).to_owned(),
                json!({"content": content, "description": response_code_description(code)}),
            );
        }
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        o["responses"] = Value::Object(responses);
        o
    }
}

impl PathSpec {
    fn to_v2(&self) -> Value {
        let mut item = Map::new();
        for op in &self.ops {
            item.insert(op.method.to_owned(), op.to_v2());
        }
        item.insert(
            "parameters".into(),
            self.params.iter().map(|p| p.to_v2_use()).collect(),
        );
        Value::Object(item)
    }

    fn to_v3(&self) -> Value {
        let mut item = Map::new();
        for op in &self.ops {
            item.insert(op.method.to_owned(), op.to_v3());
        }
        item.insert(
            "parameters".into(),
            self.params.iter().map(|p| p.to_v3()).collect(),
        );
        Value::Object(item)
    }

    /// Definition names the operations use directly.
    fn referenced(&self) -> impl Iterator<Item = &str> {
        self.ops.iter().flat_map(|o| {
            o.body
                .iter()
                .map(|b| b.def.as_str())
                .chain(o.responses.iter().map(|(_, d)| d.as_str()))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// v3
// ---------------------------------------------------------------------------------------------

const SCHEMAS: &str = "#/components/schemas/";

/// The v3 documents (one per group-version, with the schemas its paths reach, keyed
/// `api/v1` / `apis/G/V`, with their hashes) and the discovery document listing them.
fn v3_documents(defs: &Map<String, Value>, paths: &[PathSpec]) -> (V3Documents, Vec<u8>) {
    let mut by_gv: BTreeMap<&str, Vec<&PathSpec>> = BTreeMap::new();
    for p in paths {
        by_gv.entry(p.gv_path.as_str()).or_default().push(p);
    }
    // Each schema is converted and serialized once, however many documents carry it.
    let mut serialized: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    let mut documents = BTreeMap::new();
    let mut discovery = Map::new();
    for (gv, gv_paths) in by_gv {
        let mut reached: BTreeSet<&str> = BTreeSet::new();
        let mut todo: Vec<&str> = gv_paths.iter().flat_map(|p| p.referenced()).collect();
        while let Some(name) = todo.pop() {
            if let Some((key, schema)) = defs.get_key_value(name)
                && reached.insert(key.as_str())
            {
                collect_refs(schema, &mut todo);
            }
        }
        let mut doc = Vec::with_capacity(1 << 20);
        doc.extend_from_slice(b"{\"components\":{\"schemas\":{");
        for (i, name) in reached.into_iter().enumerate() {
            if i > 0 {
                doc.push(b',');
            }
            write_json(&mut doc, name);
            doc.push(b':');
            let bytes = serialized.entry(name).or_insert_with(|| {
                let mut b = Vec::new();
                write_json(&mut b, &v3_definition(name, &defs[name]));
                b
            });
            doc.extend_from_slice(bytes);
        }
        doc.extend_from_slice(b"}},\"info\":");
        write_json(
            &mut doc,
            &json!({"title": "Kubernetes", "version": SPEC_VERSION}),
        );
        doc.extend_from_slice(b",\"openapi\":\"3.0.0\",\"paths\":");
        let v3_paths: Map<String, Value> = gv_paths
            .iter()
            .map(|p| (p.path.clone(), p.to_v3()))
            .collect();
        write_json(&mut doc, &v3_paths);
        doc.push(b'}');
        doc.shrink_to_fit();
        let hash = etag_of(&doc);
        discovery.insert(
            gv.to_owned(),
            json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")}),
        );
        documents.insert(gv.to_owned(), (doc, hash));
    }
    let mut bytes = Vec::new();
    write_json(&mut bytes, &json!({ "paths": discovery }));
    (documents, bytes)
}

fn collect_refs<'a>(schema: &'a Value, out: &mut Vec<&'a str>) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "$ref" {
                    if let Some(name) = value.as_str().and_then(|r| r.strip_prefix(DEFS)) {
                        out.push(name);
                    }
                } else if !key.starts_with("x-") {
                    collect_refs(value, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn v3_definition(name: &str, schema: &Value) -> Value {
    let mut converted = to_v3_schema(schema);
    if let Value::Object(s) = &mut converted {
        // The real v3 spells the two "either" types with oneOf.
        let one_of = match name {
            INT_OR_STRING => Some(json!([{"type": "integer"}, {"type": "string"}])),
            QUANTITY => Some(json!([{"type": "string"}, {"type": "number"}])),
            _ => None,
        };
        if let Some(one_of) = one_of {
            s.remove("type");
            s.insert("oneOf".into(), one_of);
        }
    }
    converted
}

/// v2 schema → v3: refs point into `components/schemas`, and a ref with siblings (a field's
/// own description) becomes `allOf: [{$ref}]` beside them, as the real v3 document spells it
/// (kubectl explain then prints the field's description, then the type's).
fn to_v3_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            let mut reference = None;
            for (key, value) in map {
                if key == "$ref" {
                    let target = value.as_str().unwrap_or_default();
                    let name = target.strip_prefix(DEFS).unwrap_or(target);
                    reference = Some(Value::String(format!("{SCHEMAS}{name}")));
                } else if key.starts_with("x-")
                    || key == "enum"
                    || key == "default"
                    || key == "example"
                {
                    out.insert(key.clone(), value.clone());
                } else {
                    out.insert(key.clone(), to_v3_schema(value));
                }
            }
            if let Some(reference) = reference {
                if out.is_empty() {
                    out.insert("$ref".into(), reference);
                } else {
                    out.insert("allOf".into(), json!([{ "$ref": reference }]));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_v3_schema).collect()),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// v2 as protobuf (gnostic openapi_v2, field numbers from OpenAPIv2.proto)
// ---------------------------------------------------------------------------------------------

mod pb {
    use super::*;

    fn bytes(out: &mut Vec<u8>, tag: u32, data: &[u8]) {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    /// A sub-message, written even when empty (presence matters: `properties: {}`).
    fn message(out: &mut Vec<u8>, tag: u32, fill: impl FnOnce(&mut Vec<u8>)) {
        let mut buf = Vec::new();
        fill(&mut buf);
        bytes(out, tag, &buf);
    }

    fn string(out: &mut Vec<u8>, tag: u32, value: Option<&Value>) {
        if let Some(s) = value.and_then(Value::as_str)
            && !s.is_empty()
        {
            bytes(out, tag, s.as_bytes());
        }
    }

    fn strings(out: &mut Vec<u8>, tag: u32, value: Option<&Value>) {
        match value {
            Some(Value::Array(items)) => {
                for s in items.iter().filter_map(Value::as_str) {
                    bytes(out, tag, s.as_bytes());
                }
            }
            Some(Value::String(s)) => bytes(out, tag, s.as_bytes()),
            _ => {}
        }
    }

    fn boolean(out: &mut Vec<u8>, tag: u32, value: Option<&Value>) {
        if value.and_then(Value::as_bool) == Some(true) {
            encode_key(tag, WireType::Varint, out);
            encode_varint(1, out);
        }
    }

    fn int64(out: &mut Vec<u8>, tag: u32, value: Option<&Value>) {
        if let Some(n) = value.and_then(Value::as_i64)
            && n != 0
        {
            encode_key(tag, WireType::Varint, out);
            encode_varint(n as u64, out);
        }
    }

    fn double(out: &mut Vec<u8>, tag: u32, value: Option<&Value>) {
        if let Some(n) = value.and_then(Value::as_f64) {
            encode_key(tag, WireType::SixtyFourBit, out);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }

    /// gnostic `Any`: only `yaml` (2) is set. JSON is YAML, which is how kubectl reads it.
    fn any(out: &mut Vec<u8>, tag: u32, value: &Value) {
        message(out, tag, |m| {
            let text = serde_json::to_string(value).unwrap_or_default();
            bytes(m, 2, text.as_bytes());
        });
    }

    /// `NamedAny` vendor extensions: every `x-` key of `map`.
    fn extensions(out: &mut Vec<u8>, tag: u32, map: &Map<String, Value>) {
        for (name, value) in map.iter().filter(|(k, _)| k.starts_with("x-")) {
            message(out, tag, |m| {
                bytes(m, 1, name.as_bytes());
                any(m, 2, value);
            });
        }
    }

    pub(super) fn document(
        definitions: &Map<String, Value>,
        paths: &Map<String, Value>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 << 20);
        bytes(&mut out, 1, b"2.0");
        message(&mut out, 2, |info| {
            bytes(info, 1, b"Kubernetes");
            bytes(info, 2, SPEC_VERSION.as_bytes());
        });
        message(&mut out, 10, |m| {
            for (name, p) in &v2_global_parameters() {
                message(m, 1, |named| {
                    bytes(named, 1, name.as_bytes());
                    if let Some(p) = p.as_object() {
                        message(named, 2, |m| parameter(m, p));
                    }
                });
            }
        });
        message(&mut out, 8, |m| {
            for (path, item) in paths {
                message(m, 2, |named| {
                    bytes(named, 1, path.as_bytes());
                    message(named, 2, |p| path_item(p, item));
                });
            }
        });
        message(&mut out, 9, |m| {
            for (name, def) in definitions {
                message(m, 1, |named| {
                    bytes(named, 1, name.as_bytes());
                    message(named, 2, |s| schema(s, def));
                });
            }
        });
        out.shrink_to_fit();
        out
    }

    fn path_item(out: &mut Vec<u8>, item: &Value) {
        let Some(map) = item.as_object() else { return };
        string(out, 1, map.get("$ref"));
        for (method, tag) in [
            ("get", 2),
            ("put", 3),
            ("post", 4),
            ("delete", 5),
            ("options", 6),
            ("head", 7),
            ("patch", 8),
        ] {
            if let Some(op) = map.get(method) {
                message(out, tag, |m| operation(m, op));
            }
        }
        for p in map
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            message(out, 9, |m| parameters_item(m, p));
        }
        extensions(out, 10, map);
    }

    fn operation(out: &mut Vec<u8>, op: &Value) {
        let Some(map) = op.as_object() else { return };
        strings(out, 1, map.get("tags"));
        string(out, 2, map.get("summary"));
        string(out, 3, map.get("description"));
        string(out, 5, map.get("operationId"));
        strings(out, 6, map.get("produces"));
        strings(out, 7, map.get("consumes"));
        for p in map
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            message(out, 8, |m| parameters_item(m, p));
        }
        if let Some(Value::Object(responses)) = map.get("responses") {
            message(out, 9, |m| {
                for (code, response) in responses.iter().filter(|(k, _)| !k.starts_with("x-")) {
                    message(m, 1, |named| {
                        bytes(named, 1, code.as_bytes());
                        // ResponseValue { response = 1 }
                        message(named, 2, |rv| {
                            message(rv, 1, |r| {
                                string(r, 1, response.get("description"));
                                if let Some(s) = response.get("schema") {
                                    // SchemaItem { schema = 1 }
                                    message(r, 2, |si| message(si, 1, |m| schema(m, s)));
                                }
                            });
                        });
                    });
                }
                extensions(m, 2, responses);
            });
        }
        strings(out, 10, map.get("schemes"));
        boolean(out, 11, map.get("deprecated"));
        extensions(out, 13, map);
    }

    fn parameters_item(out: &mut Vec<u8>, p: &Value) {
        let Some(map) = p.as_object() else { return };
        if map.contains_key("$ref") {
            // JsonReference { _ref = 1, description = 2 }
            message(out, 2, |r| {
                string(r, 1, map.get("$ref"));
                string(r, 2, map.get("description"));
            });
            return;
        }
        message(out, 1, |m| parameter(m, map));
    }

    /// gnostic `Parameter`: body, or non-body (header 1, formData 2, query 3, path 4). Query and
    /// formData share one field numbering, header and path another (no allowEmptyValue).
    fn parameter(param: &mut Vec<u8>, map: &Map<String, Value>) {
        if map.get("in").and_then(Value::as_str) == Some("body") {
            message(param, 1, |b| {
                string(b, 1, map.get("description"));
                string(b, 2, map.get("name"));
                string(b, 3, map.get("in"));
                boolean(b, 4, map.get("required"));
                if let Some(s) = map.get("schema") {
                    message(b, 5, |m| schema(m, s));
                }
                extensions(b, 6, map);
            });
            return;
        }
        let (tag, query_like) = match map.get("in").and_then(Value::as_str) {
            Some("header") => (1, false),
            Some("formData") => (2, true),
            Some("path") => (4, false),
            _ => (3, true),
        };
        message(param, 2, |nb| {
            message(nb, tag, |s| {
                boolean(s, 1, map.get("required"));
                string(s, 2, map.get("in"));
                string(s, 3, map.get("description"));
                string(s, 4, map.get("name"));
                let shift = u32::from(query_like);
                boolean(s, 5, map.get("allowEmptyValue").filter(|_| query_like));
                string(s, 5 + shift, map.get("type"));
                string(s, 6 + shift, map.get("format"));
                string(s, 8 + shift, map.get("collectionFormat"));
                if let Some(d) = map.get("default") {
                    any(s, 9 + shift, d);
                }
                boolean(s, 19 + shift, map.get("uniqueItems"));
                for e in map
                    .get("enum")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    any(s, 20 + shift, e);
                }
                extensions(s, 22 + shift, map);
            });
        });
    }

    fn schema(out: &mut Vec<u8>, value: &Value) {
        let Some(map) = value.as_object() else { return };
        string(out, 1, map.get("$ref"));
        string(out, 2, map.get("format"));
        string(out, 3, map.get("title"));
        string(out, 4, map.get("description"));
        if let Some(d) = map.get("default") {
            any(out, 5, d);
        }
        double(out, 6, map.get("multipleOf"));
        double(out, 7, map.get("maximum"));
        boolean(out, 8, map.get("exclusiveMaximum"));
        double(out, 9, map.get("minimum"));
        boolean(out, 10, map.get("exclusiveMinimum"));
        int64(out, 11, map.get("maxLength"));
        int64(out, 12, map.get("minLength"));
        string(out, 13, map.get("pattern"));
        int64(out, 14, map.get("maxItems"));
        int64(out, 15, map.get("minItems"));
        boolean(out, 16, map.get("uniqueItems"));
        int64(out, 17, map.get("maxProperties"));
        int64(out, 18, map.get("minProperties"));
        strings(out, 19, map.get("required"));
        for e in map
            .get("enum")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            any(out, 20, e);
        }
        match map.get("additionalProperties") {
            // AdditionalPropertiesItem { schema = 1 | boolean = 2 }
            Some(Value::Bool(b)) => message(out, 21, |m| {
                encode_key(2, WireType::Varint, m);
                encode_varint(u64::from(*b), m);
            }),
            Some(s @ Value::Object(_)) => message(out, 21, |m| message(m, 1, |m| schema(m, s))),
            _ => {}
        }
        if map.contains_key("type") {
            message(out, 22, |m| strings(m, 1, map.get("type")));
        }
        match map.get("items") {
            Some(Value::Array(items)) => message(out, 23, |m| {
                for item in items {
                    message(m, 1, |m| schema(m, item));
                }
            }),
            Some(item @ Value::Object(_)) => {
                message(out, 23, |m| message(m, 1, |m| schema(m, item)))
            }
            _ => {}
        }
        for s in map
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            message(out, 24, |m| schema(m, s));
        }
        if let Some(Value::Object(properties)) = map.get("properties") {
            message(out, 25, |m| {
                for (name, s) in properties {
                    message(m, 1, |named| {
                        bytes(named, 1, name.as_bytes());
                        message(named, 2, |v| schema(v, s));
                    });
                }
            });
        }
        string(out, 26, map.get("discriminator"));
        boolean(out, 27, map.get("readOnly"));
        if let Some(e) = map.get("example") {
            any(out, 30, e);
        }
        extensions(out, 31, map);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    const fn kind(
        group: &'static str,
        version: &'static str,
        kind: &'static str,
        plural: &'static str,
        namespaced: bool,
        subresources: &'static [&'static str],
    ) -> ServedKind {
        ServedKind {
            group,
            version,
            kind,
            plural,
            namespaced,
            subresources,
        }
    }

    fn kinds() -> Vec<ServedKind> {
        vec![
            kind(
                "",
                "v1",
                "Namespace",
                "namespaces",
                false,
                &["status", "finalize"],
            ),
            kind(
                "",
                "v1",
                "Pod",
                "pods",
                true,
                &["status", "log", "binding", "eviction", "exec"],
            ),
            kind("", "v1", "Service", "services", true, &["status"]),
            kind("", "v1", "ConfigMap", "configmaps", true, &[]),
            kind("", "v1", "Node", "nodes", false, &["status"]),
            kind(
                "apps",
                "v1",
                "Deployment",
                "deployments",
                true,
                &["status", "scale"],
            ),
            kind(
                "apps",
                "v1",
                "StatefulSet",
                "statefulsets",
                true,
                &["status", "scale"],
            ),
            kind(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
                "clusterroles",
                false,
                &[],
            ),
            kind(
                "example.com",
                "v1alpha1",
                "Widget",
                "widgets",
                true,
                &["status"],
            ),
        ]
    }

    /// The rules of kube-openapi's `proto.NewOpenAPIData` (kubectl's v2 models): any error
    /// there fails kubectl's validation setup.
    fn parses(defs: &Map<String, Value>, s: &Value, path: &str) -> Result<(), String> {
        let Some(map) = s.as_object() else {
            return Err(format!("{path}: not an object"));
        };
        if let Some(r) = map.get("$ref") {
            let target = r
                .as_str()
                .and_then(|r| r.strip_prefix(DEFS))
                .ok_or(format!("{path}: bad ref {r}"))?;
            if !defs.contains_key(target) {
                return Err(format!("{path}: unknown model {target}"));
            }
            if map
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| !p.is_empty())
            {
                return Err(format!("{path}: embedded type definition"));
            }
            if map.contains_key("type") {
                return Err(format!("{path}: reference with a type"));
            }
            return Ok(());
        }
        let ty = match map.get("type") {
            None => None,
            Some(Value::String(t)) => Some(t.as_str()),
            Some(other) => return Err(format!("{path}: type {other}")),
        };
        let props = |m: &Map<String, Value>| -> Result<(), String> {
            for (name, p) in m
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                parses(defs, p, &format!("{path}.{name}"))?;
            }
            Ok(())
        };
        match ty {
            None => props(map),
            Some("object") if map.contains_key("properties") => props(map),
            Some("object") => match map.get("additionalProperties") {
                Some(s @ Value::Object(_)) => parses(defs, s, path),
                _ => Ok(()),
            },
            Some("array") => match map.get("items") {
                Some(s @ Value::Object(_)) => parses(defs, s, path),
                _ => Err(format!("{path}: array without one item schema")),
            },
            Some("string" | "number" | "integer" | "boolean") => Ok(()),
            Some(other) => Err(format!("{path}: unknown primitive {other}")),
        }
    }

    #[test]
    fn definitions_are_complete_and_parse_as_kubectl_does() {
        let api = OpenApi::build(&kinds());
        let defs = api.definitions();
        for (name, def) in defs {
            parses(defs, def, name).unwrap();
        }
        let pod = &defs["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod[GVK_EXT],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        assert!(
            pod["description"]
                .as_str()
                .is_some_and(|d| d.starts_with("Pod is a collection"))
        );
        assert_eq!(
            defs["io.k8s.api.apps.v1.DeploymentList"][GVK_EXT],
            json!([{"group": "apps", "kind": "DeploymentList", "version": "v1"}])
        );
        assert_eq!(
            defs[SCALE][GVK_EXT],
            json!([{"group": "autoscaling", "kind": "Scale", "version": "v1"}])
        );
        let delete_gvks = defs[DELETE_OPTIONS][GVK_EXT].as_array().map(Vec::len);
        assert_eq!(delete_gvks, Some(4)); // "" v1, apps v1, rbac v1, example.com v1alpha1
        assert_eq!(defs[INT_OR_STRING]["format"], "int-or-string");
        assert_eq!(defs[INT_OR_STRING]["type"], "string");
        assert_eq!(defs[INT_OR_STRING]["x-kubernetes-int-or-string"], true);
        assert_eq!(defs[QUANTITY]["type"], "string");
        assert!(defs.contains_key("com.example.v1alpha1.Widget"));
        let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(
            containers["items"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Container"
        );
        // The JSON document is the same data.
        let doc: Value = serde_json::from_slice(api.v2_json()).unwrap();
        assert_eq!(&doc["definitions"], &Value::Object(defs.clone()));
        assert_eq!(doc["swagger"], "2.0");
    }

    #[test]
    fn build_carries_the_strategic_merge_extensions() {
        let api = OpenApi::build(&kinds());
        let containers =
            &api.definitions()["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    }

    #[test]
    fn extensions_hook_runs_before_serializing() {
        fn hook(defs: &mut Map<String, Value>) {
            defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"] =
                "name".into();
        }
        let api = OpenApi::build_with(&kinds(), hook);
        let doc: Value = serde_json::from_slice(api.v2_json()).unwrap();
        assert_eq!(
            doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        let (v3, _) = api.v3_group_version("api/v1").unwrap();
        let v3: Value = serde_json::from_slice(v3).unwrap();
        assert_eq!(
            v3["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        let decoded = proto::Document::decode(api.v2_protobuf()).unwrap();
        let spec = decoded.definitions.unwrap().additional_properties;
        let spec = spec
            .iter()
            .find(|d| d.name == "io.k8s.api.core.v1.PodSpec")
            .unwrap();
        let containers = spec.value.as_ref().unwrap().properties.as_ref().unwrap();
        let containers = containers
            .additional_properties
            .iter()
            .find(|p| p.name == "containers")
            .unwrap();
        let ext = &containers.value.as_ref().unwrap().vendor_extension;
        assert_eq!(ext[0].name, "x-kubernetes-patch-merge-key");
        assert_eq!(ext[0].value.as_ref().unwrap().yaml, "\"name\"");
    }

    /// kubectl's `supportsQueryParam` (v2, protobuf) for every served kind.
    #[test]
    fn v2_protobuf_decodes_and_every_kind_supports_field_validation() {
        let api = OpenApi::build(&kinds());
        let doc = proto::Document::decode(api.v2_protobuf()).unwrap();
        assert_eq!(doc.swagger, "2.0");
        let defs = doc.definitions.as_ref().unwrap();
        assert_eq!(defs.additional_properties.len(), api.definitions().len());
        let pod = defs
            .additional_properties
            .iter()
            .find(|d| d.name == "io.k8s.api.core.v1.Pod")
            .unwrap();
        let pod = pod.value.as_ref().unwrap();
        assert_eq!(pod.r#type.as_ref().unwrap().value, ["object"]);
        assert_eq!(pod.vendor_extension[0].name, GVK_EXT);
        assert_eq!(
            pod.vendor_extension[0].value.as_ref().unwrap().yaml,
            r#"[{"group":"","kind":"Pod","version":"v1"}]"#
        );
        let props = &pod.properties.as_ref().unwrap().additional_properties;
        let spec = props
            .iter()
            .find(|p| p.name == "spec")
            .unwrap()
            .value
            .as_ref()
            .unwrap();
        assert_eq!(spec.r#ref, "#/definitions/io.k8s.api.core.v1.PodSpec");
        assert!(!spec.description.is_empty());

        let globals: BTreeMap<String, proto::Parameter> = doc
            .parameters
            .as_ref()
            .unwrap()
            .additional_properties
            .iter()
            .map(|p| (format!("#/parameters/{}", p.name), p.value.clone().unwrap()))
            .collect();
        assert_eq!(globals.len(), GLOBAL_PARAMS.len());
        let paths = &doc.paths.as_ref().unwrap().path;
        for k in kinds() {
            let mut found = None;
            for p in paths {
                let Some(patch) = p.value.as_ref().and_then(|v| v.patch.as_ref()) else {
                    continue;
                };
                let gvk = patch.vendor_extension.iter().find(|e| e.name == GVK_EXT);
                let Some(yaml) = gvk.and_then(|e| e.value.as_ref()).map(|a| a.yaml.as_str()) else {
                    continue;
                };
                let gvk: Value = serde_json::from_str(yaml).unwrap();
                if gvk != super::gvk(k.group, k.version, k.kind) {
                    continue;
                }
                // As kubectl: an inline query parameter, or a reference to a global one.
                let query_name = |p: &proto::Parameter| match &p.oneof {
                    Some(proto::parameter::Oneof::NonBodyParameter(proto::NonBodyParameter {
                        oneof: Some(proto::non_body_parameter::Oneof::Query(q)),
                    })) => q.name.clone(),
                    _ => String::new(),
                };
                found = Some(patch.parameters.iter().any(|param| match &param.oneof {
                    Some(proto::parameters_item::Oneof::Parameter(p)) => {
                        query_name(p) == "fieldValidation"
                    }
                    // kubectl 1.27 does not follow references: fieldValidation must be inline.
                    Some(proto::parameters_item::Oneof::JsonReference(r)) => {
                        assert!(globals.contains_key(r.r#ref.as_str()), "{}", r.r#ref);
                        false
                    }
                    None => false,
                }));
                break;
            }
            assert_eq!(found, Some(true), "{k:?}");
        }
    }

    /// kubectl's `supportsQueryParamV3` and `kubectl explain`'s GVK lookup, on each GV document.
    #[test]
    fn v3_documents_serve_explain_and_field_validation() {
        let api = OpenApi::build(&kinds());
        let discovery: Value = serde_json::from_slice(api.v3_discovery()).unwrap();
        for k in kinds() {
            let gv = if k.group.is_empty() {
                format!("api/{}", k.version)
            } else {
                format!("apis/{}/{}", k.group, k.version)
            };
            let url = discovery["paths"][&gv]["serverRelativeURL"]
                .as_str()
                .unwrap();
            let (bytes, hash) = api.v3_group_version(url).unwrap();
            assert_eq!(url, format!("/openapi/v3/{gv}?hash={hash}"));
            assert_eq!(hash, etag_of(bytes));
            let doc: Value = serde_json::from_slice(bytes).unwrap();
            let want = gvk(k.group, k.version, k.kind);
            // Field validation: the PATCH operations of this GVK all take fieldValidation.
            let mut patches = 0;
            for item in doc["paths"].as_object().unwrap().values() {
                if item["patch"][GVK_EXT] == want {
                    patches += 1;
                    let names: Vec<&str> = item["patch"]["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(|p| p["name"].as_str())
                        .collect();
                    assert!(names.contains(&"fieldValidation"), "{k:?}");
                }
            }
            assert!(patches >= 1, "{k:?}");
            // explain: GVK from the collection path's operation, schema by its GVK list.
            let ns = if k.namespaced {
                "/namespaces/{namespace}"
            } else {
                ""
            };
            let op_gvk = &doc["paths"][format!("/{gv}{ns}/{}", k.plural)]["get"][GVK_EXT];
            assert_eq!(op_gvk, &want);
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            let hit = schemas
                .values()
                .find(|s| s[GVK_EXT].as_array().is_some_and(|l| l.contains(&want)))
                .unwrap_or_else(|| panic!("{k:?}"));
            assert!(hit["properties"]["metadata"]["allOf"][0]["$ref"].is_string());
            // Every reference resolves inside the document.
            let mut refs = Vec::new();
            collect_v3_refs(&doc, &mut refs);
            for r in refs {
                let name = r.strip_prefix(SCHEMAS).unwrap();
                assert!(schemas.contains_key(name), "{gv}: {name}");
            }
        }
        let (core, _) = api.v3_group_version("/openapi/v3/api/v1").unwrap();
        let core: Value = serde_json::from_slice(core).unwrap();
        let schemas = &core["components"]["schemas"];
        assert_eq!(
            schemas[INT_OR_STRING]["oneOf"],
            json!([{"type": "integer"}, {"type": "string"}])
        );
        assert_eq!(schemas[INT_OR_STRING]["format"], "int-or-string");
        assert!(schemas[QUANTITY]["type"].is_null());
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        assert_eq!(
            containers["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
        assert!(api.v3_group_version("apis/nope/v1").is_none());
        assert!(
            api.v3_server_relative_url("apis/apps/v1")
                .is_some_and(|u| u.starts_with("/openapi/v3/apis/apps/v1?hash="))
        );
    }

    fn collect_v3_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "$ref" {
                        out.extend(v.as_str());
                    } else {
                        collect_v3_refs(v, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| collect_v3_refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn protobuf_accept() {
        assert!(wants_v2_protobuf(
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
        ));
        assert!(wants_v2_protobuf(
            "application/json, application/com.github.proto-openapi.spec.v2.v1.0+protobuf;q=0.9"
        ));
        assert!(!wants_v2_protobuf("application/json, */*"));
    }

    #[test]
    fn etags_are_sha512_hex() {
        let api = OpenApi::build(&kinds()[..2]);
        assert_eq!(api.v2_etag().len(), 130);
        assert!(api.v2_etag().starts_with('"') && api.v2_etag().ends_with('"'));
        assert_eq!(&api.v2_etag()[1..129], etag_of(api.v2_json()));
    }

    /// The subset of gnostic's openapi_v2 messages the tests read back.
    #[allow(dead_code)]
    mod proto {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Document {
            #[prost(string, tag = "1")]
            pub swagger: String,
            #[prost(message, optional, tag = "8")]
            pub paths: Option<Paths>,
            #[prost(message, optional, tag = "9")]
            pub definitions: Option<Definitions>,
            #[prost(message, optional, tag = "10")]
            pub parameters: Option<ParameterDefinitions>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct ParameterDefinitions {
            #[prost(message, repeated, tag = "1")]
            pub additional_properties: Vec<NamedParameter>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct NamedParameter {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(message, optional, tag = "2")]
            pub value: Option<Parameter>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Paths {
            #[prost(message, repeated, tag = "2")]
            pub path: Vec<NamedPathItem>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct NamedPathItem {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(message, optional, tag = "2")]
            pub value: Option<PathItem>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct PathItem {
            #[prost(message, optional, tag = "2")]
            pub get: Option<Operation>,
            #[prost(message, optional, tag = "8")]
            pub patch: Option<Operation>,
            #[prost(message, repeated, tag = "9")]
            pub parameters: Vec<ParametersItem>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Operation {
            #[prost(string, tag = "5")]
            pub operation_id: String,
            #[prost(message, repeated, tag = "8")]
            pub parameters: Vec<ParametersItem>,
            #[prost(message, repeated, tag = "13")]
            pub vendor_extension: Vec<NamedAny>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct ParametersItem {
            #[prost(oneof = "parameters_item::Oneof", tags = "1, 2")]
            pub oneof: Option<parameters_item::Oneof>,
        }
        pub mod parameters_item {
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum Oneof {
                #[prost(message, tag = "1")]
                Parameter(super::Parameter),
                #[prost(message, tag = "2")]
                JsonReference(super::JsonReference),
            }
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct JsonReference {
            #[prost(string, tag = "1")]
            pub r#ref: String,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Parameter {
            #[prost(oneof = "parameter::Oneof", tags = "1, 2")]
            pub oneof: Option<parameter::Oneof>,
        }
        pub mod parameter {
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum Oneof {
                #[prost(message, tag = "1")]
                BodyParameter(super::BodyParameter),
                #[prost(message, tag = "2")]
                NonBodyParameter(super::NonBodyParameter),
            }
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct BodyParameter {
            #[prost(string, tag = "2")]
            pub name: String,
            #[prost(bool, tag = "4")]
            pub required: bool,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct NonBodyParameter {
            #[prost(oneof = "non_body_parameter::Oneof", tags = "3, 4")]
            pub oneof: Option<non_body_parameter::Oneof>,
        }
        pub mod non_body_parameter {
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum Oneof {
                #[prost(message, tag = "3")]
                Query(super::QueryParameter),
                #[prost(message, tag = "4")]
                Path(super::PathParameter),
            }
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct QueryParameter {
            #[prost(string, tag = "2")]
            pub r#in: String,
            #[prost(string, tag = "4")]
            pub name: String,
            #[prost(string, tag = "6")]
            pub r#type: String,
            #[prost(bool, tag = "20")]
            pub unique_items: bool,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct PathParameter {
            #[prost(bool, tag = "1")]
            pub required: bool,
            #[prost(string, tag = "4")]
            pub name: String,
            #[prost(string, tag = "5")]
            pub r#type: String,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct NamedAny {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(message, optional, tag = "2")]
            pub value: Option<Any>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Any {
            #[prost(string, tag = "2")]
            pub yaml: String,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Definitions {
            #[prost(message, repeated, tag = "1")]
            pub additional_properties: Vec<NamedSchema>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct NamedSchema {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(message, optional, tag = "2")]
            pub value: Option<Schema>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Schema {
            #[prost(string, tag = "1")]
            pub r#ref: String,
            #[prost(string, tag = "2")]
            pub format: String,
            #[prost(string, tag = "4")]
            pub description: String,
            #[prost(string, repeated, tag = "19")]
            pub required: Vec<String>,
            #[prost(message, optional, boxed, tag = "21")]
            pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
            #[prost(message, optional, tag = "22")]
            pub r#type: Option<TypeItem>,
            #[prost(message, optional, tag = "23")]
            pub items: Option<ItemsItem>,
            #[prost(message, optional, tag = "25")]
            pub properties: Option<Properties>,
            #[prost(message, repeated, tag = "31")]
            pub vendor_extension: Vec<NamedAny>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct AdditionalPropertiesItem {
            #[prost(message, optional, tag = "1")]
            pub schema: Option<Schema>,
            #[prost(bool, tag = "2")]
            pub boolean: bool,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct TypeItem {
            #[prost(string, repeated, tag = "1")]
            pub value: Vec<String>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct ItemsItem {
            #[prost(message, repeated, tag = "1")]
            pub schema: Vec<Schema>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Properties {
            #[prost(message, repeated, tag = "1")]
            pub additional_properties: Vec<NamedSchema>,
        }
    }
}
