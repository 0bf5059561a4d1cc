//! Pod volumes as the kubelet's volume manager sets them up, on the host under a root directory
//! (the kubelet's `--root-dir`, `/var/lib/kubelet` on a kubeadm node), bind-mounted into the
//! containers by Docker.
//!
//! Layout, as the real kubelet's: `<root>/pods/<pod-uid>/volumes/kubernetes.io~<plugin>/<name>`
//! with the plugins `empty-dir`, `configmap`, `secret`, `downward-api` and `projected`
//! (`hostPath` volumes are the host path itself).
//!
//! - **emptyDir**: a directory with mode 0777 (so any container user can write). `medium:
//!   Memory` is a Docker tmpfs mount instead (size `sizeLimit`); *caveat*: Docker gives each
//!   container its own tmpfs, so unlike Kubernetes a memory emptyDir is not shared between the
//!   containers of a pod, and subPath is refused on it.
//! - **hostPath**: the `type` check of the real plugin with its wording (`hostPath type check
//!   failed: /x is not a directory`); `DirectoryOrCreate` makes the directory (0755),
//!   `FileOrCreate` the file (0644, parents 0755); without a type a missing path is made a
//!   directory, as the container runtime does for a missing bind source.
//! - **configMap**, **secret**, **downwardAPI**, **projected** (configMap, secret, downwardAPI
//!   and serviceAccountToken sources; clusterTrustBundle is skipped): the files are written with
//!   the kubelet's atomic writer ([`AtomicWriter`]): the data lives in a `..<timestamp>`
//!   directory, `..data` is a symlink to it that is swapped with a rename, and each user-visible
//!   top-level name is a symlink through `..data`. An update (a configMap edit, a token rotation)
//!   therefore appears at once and whole in a running container; a re-sync with unchanged
//!   content writes nothing. Modes: `defaultMode` (0644 when unset), a per-item `mode` wins.
//!   These volumes are always mounted read-only, as the kubelet mounts them. (The real kubelet
//!   backs secret and token volumes with a tmpfs so they never touch a disk; minik writes them
//!   to the root directory.)
//! - **Tokens** come from the TokenRequest API bound to the pod (`boundObjectRef` kind Pod with
//!   the pod's name and uid), with the source's audience and `expirationSeconds`; a cached token
//!   is reused until 80% of its lifetime has passed or it is older than 24 h (the kubelet's token
//!   manager, without its 10 s random jitter).
//! - **fsGroup** (pod `securityContext.fsGroup`): as the kubelet's `SetVolumeOwnership`, every
//!   file and directory of emptyDir, configMap, secret, downwardAPI and projected volumes gets
//!   group `fsGroup`; files get `g+rw` (read-only volumes: `ug+r`), directories additionally
//!   `ug+x` and setgid. So a container with `runAsUser: 1000` and the pod's fsGroup can read a
//!   secret written with mode 0400 (it becomes 0440 group fsGroup). When every container runs as
//!   the same `runAsUser` (the kubelet's "fsUser"), a projected service-account token gets mode
//!   0600 and that owner, so only that user reads it. Changing owners needs root (the kubelet
//!   runs as root); without it the change is skipped with a log line.
//!
//! Not supported (an error naming the type): persistentVolumeClaim and the other storage
//! plugins. `mountPropagation` is accepted and ignored (every mount is `rprivate`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bollard::models::{Mount, MountTmpfsOptions, MountType};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KQuantity;
use parking_lot::Mutex;

use super::env::{
    ApiSource, ContainerEnv, KubeSource, container_resource_value, defaulted_container, expand,
    metadata_field_value,
};
use crate::component_base::quantity::Quantity;

/// The default file mode of configMap, secret, downwardAPI and projected files.
pub const DEFAULT_MODE: u32 = 0o644;

/// A volume could not be set up; `Display` is the kubelet's `FailedMount` event message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountError {
    /// The volume's name in the pod spec.
    pub volume: String,
    /// What went wrong (`configmap "missing" not found`).
    pub message: String,
}

impl MountError {
    /// The event reason the caller records.
    pub const REASON: &'static str = "FailedMount";

    fn new(volume: &str, message: impl Into<String>) -> MountError {
        MountError {
            volume: volume.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MountVolume.SetUp failed for volume {:?} : {}",
            self.volume, self.message
        )
    }
}

impl std::error::Error for MountError {}

/// A container's volumeMounts could not be turned into Docker mounts (the kubelet's
/// `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountsError(pub String);

impl fmt::Display for MountsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MountsError {}

/// What one set-up volume is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostVolume {
    /// A host directory or file, bind-mounted; `read_only` forces a read-only mount
    /// (configMap, secret, downwardAPI, projected).
    Bind { path: PathBuf, read_only: bool },
    /// A Docker tmpfs mount (emptyDir with medium Memory), of at most `size_bytes`.
    Tmpfs { size_bytes: Option<i64> },
}

/// A pod's volumes after [`VolumeManager::setup`], by volume name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodVolumes {
    /// The host side of each volume.
    pub volumes: BTreeMap<String, HostVolume>,
}

impl PodVolumes {
    /// The Docker mounts for a container's `volumeMounts`: `subPath` (created when missing, and
    /// refused when it leaves the volume through `..` or a symlink), `readOnly` (forced for
    /// configMap, secret, downwardAPI and projected volumes); `mountPropagation` is ignored
    /// (every mount is private). A `subPathExpr` needs the container's environment: see
    /// [`PodVolumes::mounts_for_env`]; here it may use no variables.
    pub fn mounts_for(&self, container: &Container) -> Result<Vec<Mount>, MountsError> {
        self.mounts_for_env(container, &ContainerEnv::default())
    }

    /// [`PodVolumes::mounts_for`] with `subPathExpr` expanded from the container's
    /// environment (`$(VAR)`; an unset or empty variable is the kubelet's error `missing value
    /// for VAR`).
    pub fn mounts_for_env(
        &self,
        container: &Container,
        env: &ContainerEnv,
    ) -> Result<Vec<Mount>, MountsError> {
        let mut out = Vec::new();
        for m in container.volume_mounts.iter().flatten() {
            let Some(vol) = self.volumes.get(&m.name) else {
                return Err(MountsError(format!(
                    "cannot find volume {:?} to mount into container {:?}",
                    m.name, container.name
                )));
            };
            let expanded;
            let sub = match m.sub_path_expr.as_deref().filter(|s| !s.is_empty()) {
                Some(expr) => {
                    expanded = expand_sub_path_expr(expr, env)?;
                    Some(expanded.as_str())
                }
                None => m.sub_path.as_deref().filter(|s| !s.is_empty()),
            };
            let mount_ro = m.read_only.unwrap_or(false);
            match vol {
                HostVolume::Tmpfs { size_bytes } => {
                    if sub.is_some() {
                        return Err(MountsError(format!(
                            "failed to prepare subPath for volumeMount {:?} of container {:?}: \
                             minik mounts a Memory emptyDir as a Docker tmpfs, which has no subPath",
                            m.name, container.name
                        )));
                    }
                    out.push(Mount {
                        target: Some(m.mount_path.clone()),
                        typ: Some(MountType::TMPFS),
                        read_only: Some(mount_ro),
                        tmpfs_options: Some(MountTmpfsOptions {
                            size_bytes: *size_bytes,
                            mode: Some(0o1777),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
                HostVolume::Bind { path, read_only } => {
                    let source = match sub {
                        None => path.clone(),
                        Some(sub) => subpath(path, sub).map_err(|e| {
                            MountsError(match e {
                                SubpathError::Absolute => {
                                    format!("error SubPath `{sub}` must not be an absolute path")
                                }
                                SubpathError::Backsteps => format!(
                                    "unable to provision SubPath `{sub}`: must not contain '..'"
                                ),
                                SubpathError::Create => format!(
                                    "failed to create subPath directory for volumeMount {:?} of container {:?}",
                                    m.name, container.name
                                ),
                                SubpathError::Prepare => format!(
                                    "failed to prepare subPath for volumeMount {:?} of container {:?}",
                                    m.name, container.name
                                ),
                            })
                        })?,
                    };
                    out.push(Mount {
                        target: Some(m.mount_path.clone()),
                        source: Some(source.to_string_lossy().into_owned()),
                        typ: Some(MountType::BIND),
                        read_only: Some(mount_ro || *read_only),
                        ..Default::default()
                    });
                }
            }
        }
        Ok(out)
    }
}

enum SubpathError {
    Absolute,
    Backsteps,
    Create,
    Prepare,
}

/// `volume/sub`, resolved inside the volume: missing directories are made (with the volume
/// directory's mode, one at a time so a symlink can't redirect the creation), and a path that
/// leaves the volume through a symlink is refused.
fn subpath(volume: &Path, sub: &str) -> Result<PathBuf, SubpathError> {
    let rel = Path::new(sub);
    if rel.is_absolute() {
        return Err(SubpathError::Absolute);
    }
    if rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(SubpathError::Backsteps);
    }
    let base = std::fs::canonicalize(volume).map_err(|_| SubpathError::Prepare)?;
    let mode = std::fs::metadata(&base)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o755);
    let mut cur = base.clone();
    for c in rel.components() {
        let Component::Normal(name) = c else {
            continue;
        };
        let next = cur.join(name);
        if std::fs::symlink_metadata(&next).is_ok() {
            let real = std::fs::canonicalize(&next).map_err(|_| SubpathError::Prepare)?;
            if !real.starts_with(&base) {
                return Err(SubpathError::Prepare);
            }
            cur = real;
        } else {
            std::fs::create_dir(&next).map_err(|_| SubpathError::Create)?;
            let _ = std::fs::set_permissions(&next, std::fs::Permissions::from_mode(mode));
            cur = next;
        }
    }
    Ok(cur)
}

fn expand_sub_path_expr(expr: &str, env: &ContainerEnv) -> Result<String, MountsError> {
    let missing = std::cell::RefCell::new(BTreeSet::new());
    let out = expand(expr, |name| match env.get(name).filter(|v| !v.is_empty()) {
        Some(v) => Some(v.to_string()),
        None => {
            missing.borrow_mut().insert(name.to_string());
            Some(String::new())
        }
    });
    let missing = missing.into_inner();
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(MountsError(format!(
            "missing value for {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        )))
    }
}

/// Seconds since the Unix epoch; injectable for tests of token rotation.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

fn system_clock() -> Clock {
    Arc::new(|| jiff::Timestamp::now().as_second())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    namespace: String,
    service_account: String,
    audience: String,
    expiration_seconds: i64,
    pod_name: String,
    pod_uid: String,
}

#[derive(Debug, Clone)]
struct CachedToken {
    token: String,
    expires: i64,
    expiration_seconds: i64,
}

/// The kubelet's token manager: tokens per (service account, audience, lifetime, pod), refreshed
/// when 80% of the lifetime has passed or the token is older than 24 hours.
struct TokenManager {
    cache: Mutex<HashMap<TokenKey, CachedToken>>,
}

const MAX_TOKEN_AGE: i64 = 24 * 3600;

fn requires_refresh(t: &CachedToken, now: i64) -> bool {
    let issued = t.expires - t.expiration_seconds;
    now > issued + MAX_TOKEN_AGE || now > t.expires - t.expiration_seconds * 20 / 100
}

/// Sets up and tears down pod volumes under `<root>/pods/`.
pub struct VolumeManager<S: ApiSource = KubeSource> {
    root: PathBuf,
    source: S,
    node_allocatable: BTreeMap<String, KQuantity>,
    tokens: TokenManager,
    clock: Clock,
}

impl VolumeManager<KubeSource> {
    /// A manager reading objects through the API server.
    pub fn with_client(root: impl Into<PathBuf>, client: kube::Client) -> Self {
        VolumeManager::new(root, KubeSource { client })
    }
}

impl<S: ApiSource> VolumeManager<S> {
    /// A manager for the kubelet root `root`, reading objects from `source`.
    pub fn new(root: impl Into<PathBuf>, source: S) -> Self {
        VolumeManager {
            root: root.into(),
            source,
            node_allocatable: BTreeMap::new(),
            tokens: TokenManager {
                cache: Mutex::new(HashMap::new()),
            },
            clock: system_clock(),
        }
    }

    /// The node's allocatable resources (the default of a downwardAPI `resourceFieldRef` to a
    /// limit the container does not set).
    pub fn with_node_allocatable(mut self, allocatable: BTreeMap<String, KQuantity>) -> Self {
        self.node_allocatable = allocatable;
        self
    }

    /// Replaces the clock (seconds since the epoch) token refreshes are judged by.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The source objects are read from.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// `<root>/pods/<uid>`.
    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.root.join("pods").join(pod_uid)
    }

    /// `<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>`.
    pub fn volume_dir(&self, pod_uid: &str, plugin: &str, name: &str) -> PathBuf {
        self.pod_dir(pod_uid)
            .join("volumes")
            .join(format!("kubernetes.io~{plugin}"))
            .join(name)
    }

    /// Sets up every volume of the pod (idempotent: call it on every sync; unchanged content is
    /// not rewritten, changed content is swapped in atomically). The first volume that fails
    /// stops the setup with its `FailedMount` error.
    pub async fn setup(&self, pod: &Pod) -> Result<PodVolumes, MountError> {
        let uid = pod
            .metadata
            .uid
            .as_deref()
            .filter(|u| !u.is_empty() && !u.contains('/') && *u != "." && *u != "..")
            .ok_or_else(|| MountError::new("", "the pod has no usable metadata.uid"))?;
        let mut out = PodVolumes::default();
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_deref())
            .unwrap_or(&[]);
        for v in volumes {
            if v.name.is_empty() || v.name.contains('/') || v.name == "." || v.name == ".." {
                return Err(MountError::new(&v.name, "not a valid volume name"));
            }
            let hv = self
                .setup_volume(pod, uid, v)
                .await
                .map_err(|m| MountError::new(&v.name, m))?;
            out.volumes.insert(v.name.clone(), hv);
        }
        Ok(out)
    }

    async fn setup_volume(&self, pod: &Pod, uid: &str, v: &Volume) -> Result<HostVolume, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let fs_group = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|sc| sc.fs_group);
        if let Some(e) = &v.empty_dir {
            if e.medium.as_deref() == Some("Memory") {
                let size_bytes = match &e.size_limit {
                    Some(q) => Some(
                        Quantity::parse(&q.0)
                            .map_err(|err| format!("emptyDir sizeLimit: {err}"))?
                            .value(),
                    ),
                    None => None,
                };
                return Ok(HostVolume::Tmpfs { size_bytes });
            }
            let dir = self.volume_dir(uid, "empty-dir", &v.name);
            // Set up once: later syncs leave the directory (and what the pod wrote) alone.
            if !dir.is_dir() {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                    .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
                if let Some(g) = fs_group {
                    set_volume_ownership(&dir, g, false);
                }
            }
            return Ok(HostVolume::Bind {
                path: dir,
                read_only: false,
            });
        }
        if let Some(h) = &v.host_path {
            let path = PathBuf::from(&h.path);
            let ty = h.type_.as_deref().unwrap_or("");
            check_host_path_type(&path, ty)?;
            if ty.is_empty() && std::fs::symlink_metadata(&path).is_err() {
                // No type check: a missing path becomes a directory, as the container runtime
                // (containerd's CRI, dockershim's binds) makes a missing bind-mount source.
                std::fs::create_dir_all(&path)
                    .map_err(|e| format!("mkdir {}: {e}", path.display()))?;
            }
            return Ok(HostVolume::Bind {
                path,
                read_only: false,
            });
        }
        let (plugin, payload) = if let Some(c) = &v.config_map {
            let optional = c.optional.unwrap_or(false);
            let mode = c.default_mode.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
            let cm = self
                .source
                .config_map(ns, &c.name)
                .await
                .map_err(|e| e.to_string())?;
            let cm = match cm {
                Some(cm) => cm,
                None if optional => ConfigMap::default(),
                None => return Err(format!("configmap {:?} not found", c.name)),
            };
            let p = config_map_payload(&cm, c.items.as_deref(), mode, optional)?;
            ("configmap", p)
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let optional = s.optional.unwrap_or(false);
            let mode = s.default_mode.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
            let secret = self
                .source
                .secret(ns, &name)
                .await
                .map_err(|e| e.to_string())?;
            let secret = match secret {
                Some(s) => s,
                None if optional => Secret::default(),
                None => return Err(format!("secret {name:?} not found")),
            };
            let p = secret_payload(&secret, s.items.as_deref(), mode, optional)?;
            ("secret", p)
        } else if let Some(d) = &v.downward_api {
            let mode = d.default_mode.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
            let p = self.downward_payload(pod, d.items.as_deref().unwrap_or(&[]), mode)?;
            ("downward-api", p)
        } else if let Some(p) = &v.projected {
            let mode = p.default_mode.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
            let fs_user = fs_user_of(pod);
            let payload = self
                .projected_payload(
                    pod,
                    p.sources.as_deref().unwrap_or(&[]),
                    mode,
                    fs_group,
                    fs_user,
                )
                .await?;
            ("projected", payload)
        } else {
            return Err(format!(
                "minik's kubelet does not support the volume type of {:?} ({}); it supports \
                 emptyDir, hostPath, configMap, secret, downwardAPI and projected",
                v.name,
                volume_type(v)
            ));
        };
        let dir = self.volume_dir(uid, plugin, &v.name);
        let writer = AtomicWriter {
            target: dir.clone(),
        };
        let changed = writer.write(&payload).map_err(|e| e.to_string())?;
        if changed && let Some(g) = fs_group {
            set_volume_ownership(&dir, g, true);
        }
        Ok(HostVolume::Bind {
            path: dir,
            read_only: true,
        })
    }

    fn downward_payload(
        &self,
        pod: &Pod,
        items: &[DownwardAPIVolumeFile],
        default_mode: u32,
    ) -> Result<BTreeMap<String, FileProjection>, String> {
        let mut out = BTreeMap::new();
        for item in items {
            let data = if let Some(f) = &item.field_ref {
                metadata_field_value(pod, &f.field_path)?
            } else if let Some(r) = &item.resource_field_ref {
                let cname = r.container_name.as_deref().unwrap_or("");
                let spec = pod.spec.as_ref();
                let c = spec
                    .into_iter()
                    .flat_map(|s| {
                        s.containers
                            .iter()
                            .chain(s.init_containers.iter().flatten())
                    })
                    .find(|c| c.name == cname)
                    .ok_or_else(|| format!("failed to find container {cname:?} in pod"))?;
                let c = defaulted_container(c, &self.node_allocatable);
                container_resource_value(r, &c).map_err(|e| e.to_string())?
            } else {
                continue;
            };
            out.insert(
                item.path.clone(),
                FileProjection {
                    data: data.into_bytes(),
                    mode: item.mode.map(|m| m as u32).unwrap_or(default_mode),
                    owner: None,
                },
            );
        }
        Ok(out)
    }

    async fn projected_payload(
        &self,
        pod: &Pod,
        sources: &[k8s_openapi::api::core::v1::VolumeProjection],
        default_mode: u32,
        fs_group: Option<i64>,
        fs_user: Option<i64>,
    ) -> Result<BTreeMap<String, FileProjection>, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut out = BTreeMap::new();
        let mut errors: Vec<String> = Vec::new();
        for s in sources {
            if let Some(c) = &s.config_map {
                let optional = c.optional.unwrap_or(false);
                match self.source.config_map(ns, &c.name).await {
                    Ok(Some(cm)) => {
                        match config_map_payload(&cm, c.items.as_deref(), default_mode, optional) {
                            Ok(p) => out.extend(p),
                            Err(e) => errors.push(e),
                        }
                    }
                    Ok(None) if optional => {}
                    Ok(None) => errors.push(format!("configmap {:?} not found", c.name)),
                    Err(e) => errors.push(e.to_string()),
                }
            } else if let Some(sec) = &s.secret {
                let optional = sec.optional.unwrap_or(false);
                match self.source.secret(ns, &sec.name).await {
                    Ok(Some(secret)) => {
                        match secret_payload(&secret, sec.items.as_deref(), default_mode, optional)
                        {
                            Ok(p) => out.extend(p),
                            Err(e) => errors.push(e),
                        }
                    }
                    Ok(None) if optional => {}
                    Ok(None) => errors.push(format!("secret {:?} not found", sec.name)),
                    Err(e) => errors.push(e.to_string()),
                }
            } else if let Some(d) = &s.downward_api {
                match self.downward_payload(pod, d.items.as_deref().unwrap_or(&[]), default_mode) {
                    Ok(p) => out.extend(p),
                    Err(e) => errors.push(e),
                }
            } else if let Some(t) = &s.service_account_token {
                let sa = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "default".to_string());
                let key = TokenKey {
                    namespace: ns.to_string(),
                    service_account: sa,
                    audience: t.audience.clone().unwrap_or_default(),
                    expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                    pod_name: pod.metadata.name.clone().unwrap_or_default(),
                    pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
                };
                match self.token(&key).await {
                    Ok(token) => {
                        // The kubelet: with an fsUser or fsGroup the token is 0600 (plus the
                        // group bit fsGroup ownership adds), owned by the fsUser.
                        let mode = if fs_user.is_some() || fs_group.is_some() {
                            0o600
                        } else {
                            default_mode
                        };
                        out.insert(
                            t.path.clone(),
                            FileProjection {
                                data: token.into_bytes(),
                                mode,
                                owner: fs_user,
                            },
                        );
                    }
                    Err(e) => errors.push(format!("failed to fetch token: {e}")),
                }
            }
            // clusterTrustBundle sources are skipped (no ClusterTrustBundle API in minik).
        }
        match errors.len() {
            0 => Ok(out),
            1 => Err(errors.remove(0)),
            _ => Err(format!("[{}]", errors.join(", "))),
        }
    }

    async fn token(&self, key: &TokenKey) -> Result<String, String> {
        let now = (self.clock)();
        if let Some(t) = self.tokens.cache.lock().get(key)
            && !requires_refresh(t, now)
        {
            return Ok(t.token.clone());
        }
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: if key.audience.is_empty() {
                    Vec::new()
                } else {
                    vec![key.audience.clone()]
                },
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(key.pod_name.clone()),
                    uid: Some(key.pod_uid.clone()),
                }),
            },
            ..Default::default()
        };
        let answer = self
            .source
            .request_token(&key.namespace, &key.service_account, &req)
            .await
            .map_err(|e| e.to_string())?;
        let status = answer
            .status
            .ok_or_else(|| "the TokenRequest answer has no status".to_string())?;
        let expiration_seconds = answer
            .spec
            .expiration_seconds
            .unwrap_or(key.expiration_seconds);
        let cached = CachedToken {
            token: status.token.clone(),
            expires: status.expiration_timestamp.0.as_second(),
            expiration_seconds,
        };
        self.tokens.cache.lock().insert(key.clone(), cached);
        Ok(status.token)
    }

    /// Removes everything of a pod under `<root>/pods/<uid>` (after its containers are gone).
    /// Tokens cached for the pod are forgotten.
    pub async fn teardown(&self, pod_uid: &str) -> io::Result<()> {
        self.tokens.cache.lock().retain(|k, _| k.pod_uid != pod_uid);
        if pod_uid.is_empty() || pod_uid.contains('/') || pod_uid == "." || pod_uid == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a pod uid: {pod_uid:?}"),
            ));
        }
        let dir = self.pod_dir(pod_uid);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The uids of pod directories under `<root>/pods/` that are not in `live`.
    pub fn orphaned(&self, live: &HashSet<String>) -> Vec<String> {
        orphaned(&self.root, live)
    }

    /// Tears down every orphaned pod directory; returns the uids removed.
    pub async fn cleanup(&self, live: &HashSet<String>) -> Vec<String> {
        let mut removed = Vec::new();
        for uid in self.orphaned(live) {
            match self.teardown(&uid).await {
                Ok(()) => removed.push(uid),
                Err(e) => tracing::warn!(pod_uid = %uid, "removing orphaned pod volumes: {e}"),
            }
        }
        removed
    }
}

/// The uids of pod directories under `<root>/pods/` that are not in `live`, sorted.
pub fn orphaned(root: &Path, live: &HashSet<String>) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|uid| !live.contains(uid))
        .collect();
    out.sort();
    out
}

fn volume_type(v: &Volume) -> &'static str {
    if v.persistent_volume_claim.is_some() {
        "persistentVolumeClaim"
    } else if v.nfs.is_some() {
        "nfs"
    } else if v.csi.is_some() {
        "csi"
    } else if v.ephemeral.is_some() {
        "ephemeral"
    } else if v.image.is_some() {
        "image"
    } else {
        "unknown"
    }
}

/// The pod's "fsUser": the `runAsUser` every container (init and app) runs with, when they all
/// agree (container securityContext first, then the pod's).
pub fn fs_user_of(pod: &Pod) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let pod_user = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    let mut users = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.run_as_user)
                .or(pod_user)
        });
    let first = users.next()??;
    users.all(|u| u == Some(first)).then_some(first)
}

/// The hostPath `type` check, with the real plugin's messages.
pub fn check_host_path_type(path: &Path, ty: &str) -> Result<(), String> {
    let meta = std::fs::metadata(path).ok();
    let shown = path.display();
    let is = |f: fn(&std::fs::FileType) -> bool| meta.as_ref().is_some_and(|m| f(&m.file_type()));
    match ty {
        "" => Ok(()),
        "DirectoryOrCreate" if meta.is_none() => {
            std::fs::create_dir_all(path).map_err(|e| format!("mkdir {shown}: {e}"))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("chmod {shown}: {e}"))
        }
        "DirectoryOrCreate" | "Directory" => is(|t| t.is_dir())
            .then_some(())
            .ok_or_else(|| format!("hostPath type check failed: {shown} is not a directory")),
        "FileOrCreate" if meta.is_none() => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("create {shown}: {e}"))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| format!("chmod {shown}: {e}"))
        }
        "FileOrCreate" | "File" => is(|t| t.is_file())
            .then_some(())
            .ok_or_else(|| format!("hostPath type check failed: {shown} is not a file")),
        "Socket" => is(FileTypeExt::is_socket)
            .then_some(())
            .ok_or_else(|| format!("hostPath type check failed: {shown} is not a socket file")),
        "CharDevice" => is(FileTypeExt::is_char_device)
            .then_some(())
            .ok_or_else(|| {
                format!("hostPath type check failed: {shown} is not a character device")
            }),
        "BlockDevice" => is(FileTypeExt::is_block_device)
            .then_some(())
            .ok_or_else(|| format!("hostPath type check failed: {shown} is not a block device")),
        other => Err(format!("{other} is an invalid volume type")),
    }
}

/// The kubelet's `SetVolumeOwnership`: group `fs_group` on everything below `dir`; files `g+rw`
/// (`ug+r` when `read_only`), directories also `ug+x` and setgid; symlinks keep their mode.
/// Without the privilege to change owners, this logs and leaves the modes alone.
pub fn set_volume_ownership(dir: &Path, fs_group: i64, read_only: bool) {
    let Ok(gid) = u32::try_from(fs_group) else {
        tracing::warn!(fs_group, "fsGroup out of range; volume ownership unchanged");
        return;
    };
    let mask = if read_only { 0o440 } else { 0o660 };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if let Err(e) = std::os::unix::fs::lchown(&p, None, Some(gid)) {
            tracing::warn!(path = %p.display(), "setting fsGroup {gid}: {e}; volume ownership unchanged");
            return;
        }
        if meta.file_type().is_symlink() {
            continue;
        }
        let mut mode = meta.permissions().mode() & 0o7777 | mask;
        if meta.is_dir() {
            mode |= 0o2000 | 0o110;
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode));
    }
}

/// One file of a configMap/secret/downwardAPI/projected volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// The content.
    pub data: Vec<u8>,
    /// The permission bits (`0o644`).
    pub mode: u32,
    /// The owner uid to set (a projected token with an fsUser).
    pub owner: Option<i64>,
}

fn key_to_path_payload(
    all: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
    missing: impl Fn(&str) -> String,
) -> Result<BTreeMap<String, FileProjection>, String> {
    let mut out = BTreeMap::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in all {
                out.insert(
                    k.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: default_mode,
                        owner: None,
                    },
                );
            }
        }
        Some(items) => {
            for it in items {
                let Some(v) = all.get(&it.key) else {
                    if optional {
                        continue;
                    }
                    return Err(missing(&it.key));
                };
                out.insert(
                    it.path.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: it.mode.map(|m| m as u32).unwrap_or(default_mode),
                        owner: None,
                    },
                );
            }
        }
    }
    Ok(out)
}

/// The files of a configMap volume (`data` and `binaryData`; `items` select and rename keys).
pub fn config_map_payload(
    cm: &ConfigMap,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<BTreeMap<String, FileProjection>, String> {
    let mut all: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in cm.binary_data.iter().flatten() {
        all.insert(k.clone(), v.0.clone());
    }
    for (k, v) in cm.data.iter().flatten() {
        all.insert(k.clone(), v.clone().into_bytes());
    }
    key_to_path_payload(&all, items, default_mode, optional, |k| {
        format!("configmap references non-existent config key: {k}")
    })
}

/// The files of a secret volume (`data`; `items` select and rename keys).
pub fn secret_payload(
    s: &Secret,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<BTreeMap<String, FileProjection>, String> {
    let mut all: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in s.data.iter().flatten() {
        all.insert(k.clone(), v.0.clone());
    }
    for (k, v) in s.string_data.iter().flatten() {
        all.insert(k.clone(), v.clone().into_bytes());
    }
    key_to_path_payload(&all, items, default_mode, optional, |k| {
        format!("references non-existent secret key: {k}")
    })
}

/// The kubelet's atomic writer (pkg/volume/util/atomic_writer.go), behaviour re-implemented:
///
/// ```text
/// <target>/..2026_12_03_21_40_00.123456789/   the payload (dirs 0755, files with their modes)
/// <target>/..data -> ..2026_12_03_21_40_00.123456789
/// <target>/key    -> ..data/key               one symlink per top-level name
/// ```
///
/// A write with changed content makes a new timestamped directory, points `..data_tmp` at it
/// and renames that over `..data` (one atomic step for readers), adds the new top-level
/// symlinks, removes the names no longer in the payload and the old directory.
pub struct AtomicWriter {
    /// The volume directory.
    pub target: PathBuf,
}

const DATA_DIR: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

fn validate_payload_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("invalid path: must not be empty".into());
    }
    if p.len() > 4096 {
        return Err(format!(
            "invalid path: must be less than or equal to 4096 characters: {p}"
        ));
    }
    if Path::new(p).is_absolute() {
        return Err(format!("invalid path: must be relative path: {p}"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("invalid path: must not contain '..': {p}"));
    }
    if p.starts_with("..") {
        return Err(format!("invalid path: must not start with '..': {p}"));
    }
    Ok(())
}

impl AtomicWriter {
    /// Writes `payload` (path → file) if it differs from what is there; `Ok(true)` when it
    /// wrote.
    pub fn write(&self, payload: &BTreeMap<String, FileProjection>) -> io::Result<bool> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        for p in payload.keys() {
            validate_payload_path(p).map_err(bad)?;
        }
        std::fs::create_dir_all(&self.target)?;
        let data_link = self.target.join(DATA_DIR);
        let old_ts = std::fs::read_link(&data_link).ok();
        if let Some(old) = &old_ts
            && self.unchanged(&self.target.join(old), payload)
        {
            return Ok(false);
        }
        // The new timestamped directory.
        let ts_name = timestamp_dir_name();
        let ts_dir = self.target.join(&ts_name);
        std::fs::create_dir(&ts_dir)?;
        std::fs::set_permissions(&ts_dir, std::fs::Permissions::from_mode(0o755))?;
        let result = self.fill(&ts_dir, payload).and_then(|()| {
            let tmp = self.target.join(DATA_TMP);
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&ts_name, &tmp)?;
            std::fs::rename(&tmp, &data_link)
        });
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&ts_dir);
            return Err(e);
        }
        // User-visible names.
        let top: BTreeSet<String> = payload
            .keys()
            .filter_map(|p| p.split('/').find(|c| !c.is_empty() && *c != "."))
            .map(str::to_string)
            .collect();
        for name in &top {
            let link = self.target.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &link)?;
            }
        }
        for entry in std::fs::read_dir(&self.target)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("..") || top.contains(&name) {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                std::fs::remove_file(entry.path())?;
            }
        }
        if let Some(old) = old_ts {
            let old = self.target.join(old);
            if old.parent() == Some(self.target.as_path()) && old != ts_dir {
                let _ = std::fs::remove_dir_all(old);
            }
        }
        Ok(true)
    }

    fn fill(&self, dir: &Path, payload: &BTreeMap<String, FileProjection>) -> io::Result<()> {
        for (p, f) in payload {
            let path = dir.join(p);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, &f.data)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode & 0o7777))?;
            if let Some(uid) = f.owner.and_then(|u| u32::try_from(u).ok())
                && let Err(e) = std::os::unix::fs::chown(&path, Some(uid), None)
            {
                tracing::warn!(path = %path.display(), "chown to fsUser {uid}: {e}");
            }
        }
        Ok(())
    }

    /// Whether `dir` holds exactly `payload` (contents and modes).
    fn unchanged(&self, dir: &Path, payload: &BTreeMap<String, FileProjection>) -> bool {
        for (p, f) in payload {
            let path = dir.join(p);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                return false;
            };
            // fsGroup ownership may have added group bits: compare the owner bits and "other".
            if meta.permissions().mode() & 0o707 != f.mode & 0o707 {
                return false;
            }
            match std::fs::read(&path) {
                Ok(d) if d == f.data => {}
                _ => return false,
            }
        }
        count_files(dir) == payload.len()
    }
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => n += count_files(&e.path()),
            Ok(_) => n += 1,
            Err(_) => {}
        }
    }
    n
}

fn timestamp_dir_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let now = jiff::Timestamp::now();
    let stamp = now.strftime("%Y_%m_%d_%H_%M_%S").to_string();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("..{stamp}.{:09}{seq}", now.subsec_nanosecond())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::env::tests::{FakeSource, pod};
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, ConfigMapVolumeSource, DownwardAPIProjection, DownwardAPIVolumeSource,
        EmptyDirVolumeSource, HostPathVolumeSource, ObjectFieldSelector, PodSecurityContext,
        ProjectedVolumeSource, ResourceFieldSelector, SecretVolumeSource,
        ServiceAccountTokenProjection, VolumeMount, VolumeProjection,
    };
    use std::sync::atomic::{AtomicI64, Ordering};

    fn vol(name: &str) -> Volume {
        Volume {
            name: name.into(),
            ..Default::default()
        }
    }

    fn with_volumes(vs: Vec<Volume>) -> Pod {
        let mut p = pod("ns", "web-0");
        let spec = p.spec.as_mut().expect("spec");
        spec.volumes = Some(vs);
        spec.containers = vec![Container {
            name: "app".into(),
            ..Default::default()
        }];
        p
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).expect("read")
    }

    #[test]
    fn atomic_writer_layout_and_update() {
        let dir = tempfile::tempdir().expect("tmp");
        let w = AtomicWriter {
            target: dir.path().join("vol"),
        };
        let file = |d: &str, m: u32| FileProjection {
            data: d.as_bytes().to_vec(),
            mode: m,
            owner: None,
        };
        let mut payload = BTreeMap::new();
        payload.insert("a".to_string(), file("one", 0o644));
        payload.insert("sub/b".to_string(), file("two", 0o400));
        assert!(w.write(&payload).expect("write"));
        let t = &w.target;
        let data = std::fs::read_link(t.join("..data")).expect("..data");
        let data = data.to_string_lossy().into_owned();
        assert!(data.starts_with("..20"), "{data}");
        assert_eq!(
            std::fs::read_link(t.join("a")).expect("a link"),
            Path::new("..data/a")
        );
        assert_eq!(
            std::fs::read_link(t.join("sub")).expect("sub link"),
            Path::new("..data/sub")
        );
        assert_eq!(read(&t.join("a")), "one");
        assert_eq!(read(&t.join("sub/b")), "two");
        assert_eq!(mode(&t.join("sub/b")), 0o400);
        assert_eq!(mode(&t.join(&data)), 0o755);

        // Unchanged: nothing written, same directory.
        assert!(!w.write(&payload).expect("rewrite"));
        assert_eq!(
            std::fs::read_link(t.join("..data"))
                .expect("..data")
                .to_string_lossy(),
            data
        );

        // Changed: new directory, old one gone, a removed name gone.
        payload.insert("a".to_string(), file("uno", 0o644));
        payload.remove("sub/b");
        payload.insert("c".to_string(), file("three", 0o600));
        assert!(w.write(&payload).expect("update"));
        let data2 = std::fs::read_link(t.join("..data")).expect("..data");
        assert_ne!(data2.to_string_lossy(), data);
        assert!(!t.join(&data).exists(), "old timestamp dir removed");
        assert!(
            std::fs::symlink_metadata(t.join("sub")).is_err(),
            "sub removed"
        );
        assert_eq!(read(&t.join("a")), "uno");
        assert_eq!(read(&t.join("c")), "three");
        assert_eq!(mode(&t.join("c")), 0o600);
        assert!(!t.join("..data_tmp").exists());

        // A mode change alone is a change.
        payload.insert("c".to_string(), file("three", 0o644));
        assert!(w.write(&payload).expect("mode update"));
        assert_eq!(mode(&t.join("c")), 0o644);

        for bad in ["/abs", "../up", "..hidden", "a/../../b"] {
            let mut p = BTreeMap::new();
            p.insert(bad.to_string(), file("x", 0o644));
            assert!(w.write(&p).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn config_map_and_secret_volumes() {
        let root = tempfile::tempdir().expect("tmp");
        let src = FakeSource::default();
        src.put_config_map("ns", "cfg", &[("app.conf", "x=1"), ("other", "o")]);
        src.put_secret("ns", "creds", &[("password", b"s3cret"), ("user", b"me")]);
        let mut cfg = vol("cfg");
        cfg.config_map = Some(ConfigMapVolumeSource {
            name: "cfg".into(),
            items: Some(vec![KeyToPath {
                key: "app.conf".into(),
                path: "conf/app.conf".into(),
                mode: Some(0o600),
            }]),
            ..Default::default()
        });
        let mut sec = vol("sec");
        sec.secret = Some(SecretVolumeSource {
            secret_name: Some("creds".into()),
            default_mode: Some(0o400),
            ..Default::default()
        });
        let mut p = with_volumes(vec![cfg, sec]);
        let vm = VolumeManager::new(root.path(), src);
        let pv = vm.setup(&p).await.expect("setup");
        let cdir = vm.volume_dir("uid-1234", "configmap", "cfg");
        assert_eq!(
            pv.volumes["cfg"],
            HostVolume::Bind {
                path: cdir.clone(),
                read_only: true
            }
        );
        assert_eq!(read(&cdir.join("conf/app.conf")), "x=1");
        assert_eq!(mode(&cdir.join("conf/app.conf")), 0o600);
        assert!(!cdir.join("other").exists());
        let sdir = vm.volume_dir("uid-1234", "secret", "sec");
        assert_eq!(read(&sdir.join("password")), "s3cret");
        assert_eq!(mode(&sdir.join("user")), 0o400);

        // An edit appears on the next sync.
        vm.source()
            .put_config_map("ns", "cfg", &[("app.conf", "x=2")]);
        vm.setup(&p).await.expect("resync");
        assert_eq!(read(&cdir.join("conf/app.conf")), "x=2");

        // fsGroup: group-readable, group owned.
        p.spec.as_mut().expect("spec").security_context = Some(PodSecurityContext {
            fs_group: Some(2000),
            ..Default::default()
        });
        vm.source()
            .put_secret("ns", "creds", &[("password", b"new")]);
        vm.setup(&p).await.expect("fsgroup");
        let f = sdir.join("password");
        assert_eq!(mode(&f), 0o440);
        use std::os::unix::fs::MetadataExt;
        if nix_is_root() {
            assert_eq!(std::fs::metadata(&f).expect("stat").gid(), 2000);
        }

        // Missing sources and keys.
        let mut missing = vol("cfg");
        missing.config_map = Some(ConfigMapVolumeSource {
            name: "missing".into(),
            ..Default::default()
        });
        let err = vm
            .setup(&with_volumes(vec![missing.clone()]))
            .await
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"missing\" not found"
        );
        missing.config_map.as_mut().expect("cm").optional = Some(true);
        vm.setup(&with_volumes(vec![missing]))
            .await
            .expect("optional");
        let mut badkey = vol("k");
        badkey.secret = Some(SecretVolumeSource {
            secret_name: Some("creds".into()),
            items: Some(vec![KeyToPath {
                key: "nope".into(),
                path: "nope".into(),
                mode: None,
            }]),
            ..Default::default()
        });
        let err = vm
            .setup(&with_volumes(vec![badkey]))
            .await
            .expect_err("key");
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"k\" : references non-existent secret key: nope"
        );
        let mut gone = vol("s");
        gone.secret = Some(SecretVolumeSource {
            secret_name: Some("gone".into()),
            ..Default::default()
        });
        let err = vm.setup(&with_volumes(vec![gone])).await.expect_err("gone");
        assert_eq!(err.message, "secret \"gone\" not found");
    }

    fn nix_is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    #[tokio::test]
    async fn downward_api_files() {
        let root = tempfile::tempdir().expect("tmp");
        let mut d = vol("info");
        let fr = |path: &str, fp: &str| DownwardAPIVolumeFile {
            path: path.into(),
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: fp.into(),
            }),
            ..Default::default()
        };
        d.downward_api = Some(DownwardAPIVolumeSource {
            items: Some(vec![
                fr("labels", "metadata.labels"),
                fr("annotations", "metadata.annotations"),
                fr("name", "metadata.name"),
                fr("app", "metadata.labels['app']"),
                DownwardAPIVolumeFile {
                    path: "mem".into(),
                    resource_field_ref: Some(ResourceFieldSelector {
                        container_name: Some("app".into()),
                        divisor: Some(KQuantity("1Mi".into())),
                        resource: "limits.memory".into(),
                    }),
                    mode: Some(0o600),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        });
        let p = with_volumes(vec![d]);
        let alloc = [("memory".to_string(), KQuantity("2Gi".into()))]
            .into_iter()
            .collect();
        let vm =
            VolumeManager::new(root.path(), FakeSource::default()).with_node_allocatable(alloc);
        vm.setup(&p).await.expect("setup");
        let dir = vm.volume_dir("uid-1234", "downward-api", "info");
        assert_eq!(
            read(&dir.join("labels")),
            "app=\"web\"\ntier=\"front \\\"end\\\"\""
        );
        assert_eq!(read(&dir.join("annotations")), "note=\"a\\nb\"");
        assert_eq!(read(&dir.join("name")), "web-0");
        assert_eq!(read(&dir.join("app")), "web");
        assert_eq!(read(&dir.join("mem")), "2048");
        assert_eq!(mode(&dir.join("mem")), 0o600);
        assert_eq!(mode(&dir.join("name")), 0o644);
    }

    fn access_volume() -> Volume {
        let mut v = vol("kube-api-access-abcde");
        v.projected = Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: None,
                        expiration_seconds: Some(3607),
                        path: "token".into(),
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                api_version: Some("v1".into()),
                                field_path: "metadata.namespace".into(),
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
            ]),
        });
        v
    }

    #[tokio::test]
    async fn projected_service_account_volume_and_token_rotation() {
        let root = tempfile::tempdir().expect("tmp");
        let src = FakeSource::default();
        *src.now.lock().expect("lock") = 1_000_000;
        src.put_config_map("ns", "kube-root-ca.crt", &[("ca.crt", "PEM")]);
        let now = Arc::new(AtomicI64::new(1_000_000));
        let clock_now = now.clone();
        let vm = VolumeManager::new(root.path(), src)
            .with_clock(Arc::new(move || clock_now.load(Ordering::SeqCst)));
        let p = with_volumes(vec![access_volume()]);
        vm.setup(&p).await.expect("setup");
        let dir = vm.volume_dir("uid-1234", "projected", "kube-api-access-abcde");
        assert_eq!(read(&dir.join("token")), "token-ns-builder-web-0-1");
        assert_eq!(read(&dir.join("ca.crt")), "PEM");
        assert_eq!(read(&dir.join("namespace")), "ns");
        let first = std::fs::read_link(dir.join("..data")).expect("..data");

        // Before 80% of 3607 s: same token, nothing rewritten.
        now.store(1_000_000 + 2_800, Ordering::SeqCst);
        vm.setup(&p).await.expect("resync");
        assert_eq!(*vm.source().tokens_issued.lock().expect("lock"), 1);
        assert_eq!(
            std::fs::read_link(dir.join("..data")).expect("..data"),
            first
        );

        // After 80%: a new token, swapped in.
        now.store(1_000_000 + 2_900, Ordering::SeqCst);
        vm.setup(&p).await.expect("rotate");
        assert_eq!(*vm.source().tokens_issued.lock().expect("lock"), 2);
        assert_eq!(read(&dir.join("token")), "token-ns-builder-web-0-2");
        assert_ne!(
            std::fs::read_link(dir.join("..data")).expect("..data"),
            first
        );

        // Every container runs as 1000 (the fsUser): the token is 0600 and owned by 1000.
        let mut as_user = with_volumes(vec![access_volume()]);
        as_user.metadata.uid = Some("uid-user".into());
        as_user.spec.as_mut().expect("spec").security_context = Some(PodSecurityContext {
            run_as_user: Some(1000),
            ..Default::default()
        });
        vm.setup(&as_user).await.expect("fsUser");
        let token = vm
            .volume_dir("uid-user", "projected", "kube-api-access-abcde")
            .join("token");
        assert_eq!(mode(&token), 0o600);
        assert_eq!(mode(&token.with_file_name("ca.crt")), 0o644);
        if nix_is_root() {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(std::fs::metadata(&token).expect("stat").uid(), 1000);
        }

        // No root CA configMap: the real error.
        let vm2 = VolumeManager::new(root.path(), FakeSource::default());
        let err = vm2.setup(&p).await.expect_err("no ca");
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"kube-api-access-abcde\" : configmap \"kube-root-ca.crt\" not found"
        );
    }

    #[test]
    fn token_refresh_rule() {
        let t = CachedToken {
            token: String::new(),
            expires: 10_000 + 3600,
            expiration_seconds: 3600,
        };
        assert!(!requires_refresh(&t, 10_000 + 2880));
        assert!(requires_refresh(&t, 10_000 + 2881));
        let long = CachedToken {
            token: String::new(),
            expires: 10_000 + 7 * 86_400,
            expiration_seconds: 7 * 86_400,
        };
        assert!(!requires_refresh(&long, 10_000 + 86_400));
        assert!(requires_refresh(&long, 10_000 + 86_401));
    }

    #[tokio::test]
    async fn empty_dir_host_path_mounts_and_teardown() {
        let root = tempfile::tempdir().expect("tmp");
        let host = tempfile::tempdir().expect("host");
        let mut scratch = vol("scratch");
        scratch.empty_dir = Some(EmptyDirVolumeSource::default());
        let mut mem = vol("mem");
        mem.empty_dir = Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(KQuantity("64Mi".into())),
        });
        let mut hp = vol("data");
        hp.host_path = Some(HostPathVolumeSource {
            path: host.path().join("made").to_string_lossy().into_owned(),
            type_: Some("DirectoryOrCreate".into()),
        });
        let mut untyped = vol("untyped");
        untyped.host_path = Some(HostPathVolumeSource {
            path: host.path().join("plain/dir").to_string_lossy().into_owned(),
            type_: None,
        });
        let mut p = with_volumes(vec![scratch, mem, hp, untyped]);
        let vm = VolumeManager::new(root.path(), FakeSource::default());
        let pv = vm.setup(&p).await.expect("setup");
        let sdir = vm.volume_dir("uid-1234", "empty-dir", "scratch");
        assert_eq!(mode(&sdir), 0o777);
        assert!(host.path().join("made").is_dir());
        assert!(host.path().join("plain/dir").is_dir());
        assert_eq!(
            pv.volumes["mem"],
            HostVolume::Tmpfs {
                size_bytes: Some(64 << 20)
            }
        );
        let c = Container {
            name: "app".into(),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "scratch".into(),
                    mount_path: "/scratch".into(),
                    ..Default::default()
                },
                VolumeMount {
                    name: "scratch".into(),
                    mount_path: "/logs".into(),
                    sub_path: Some("logs/app".into()),
                    read_only: Some(true),
                    ..Default::default()
                },
                VolumeMount {
                    name: "mem".into(),
                    mount_path: "/mem".into(),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let ms = pv.mounts_for(&c).expect("mounts");
        assert_eq!(ms.len(), 3);
        assert_eq!(ms[0].source.as_deref(), Some(sdir.to_str().expect("utf8")));
        assert_eq!(ms[0].read_only, Some(false));
        assert_eq!(
            ms[1].source.as_deref(),
            Some(
                std::fs::canonicalize(sdir.join("logs/app"))
                    .expect("made")
                    .to_str()
                    .expect("utf8")
            )
        );
        assert_eq!(ms[1].read_only, Some(true));
        assert_eq!(ms[2].typ, Some(MountType::TMPFS));

        let bad = |sub: &str| Container {
            name: "app".into(),
            volume_mounts: Some(vec![VolumeMount {
                name: "scratch".into(),
                mount_path: "/x".into(),
                sub_path: Some(sub.into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(
            pv.mounts_for(&bad("../escape")).expect_err("..").0,
            "unable to provision SubPath `../escape`: must not contain '..'"
        );
        assert_eq!(
            pv.mounts_for(&bad("/abs")).expect_err("abs").0,
            "error SubPath `/abs` must not be an absolute path"
        );
        let outside = tempfile::tempdir().expect("outside");
        std::os::unix::fs::symlink(outside.path(), sdir.join("evil")).expect("symlink");
        for sub in ["evil", "evil/made"] {
            let err = pv.mounts_for(&bad(sub)).expect_err("escape");
            assert_eq!(
                err.0,
                "failed to prepare subPath for volumeMount \"scratch\" of container \"app\""
            );
        }
        assert!(
            !outside.path().join("made").exists(),
            "nothing is created through a symlink"
        );
        // subPathExpr from the container's environment.
        let mut expr = bad("unused");
        if let Some(m) = expr.volume_mounts.as_mut().and_then(|m| m.first_mut()) {
            m.sub_path = None;
            m.sub_path_expr = Some("logs/$(POD_NAME)".into());
        }
        let env = ContainerEnv {
            vars: vec![("POD_NAME".into(), "web-0".into())],
            events: vec![],
        };
        let ms = pv.mounts_for_env(&expr, &env).expect("expr");
        assert!(
            ms[0]
                .source
                .as_deref()
                .is_some_and(|s| s.ends_with("/logs/web-0")),
            "{ms:?}"
        );
        assert_eq!(
            pv.mounts_for(&expr).expect_err("no env").0,
            "missing value for POD_NAME"
        );
        let none = Container {
            name: "app".into(),
            volume_mounts: Some(vec![VolumeMount {
                name: "nope".into(),
                mount_path: "/x".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(
            pv.mounts_for(&none).expect_err("none").to_string(),
            "cannot find volume \"nope\" to mount into container \"app\""
        );

        // Type checks.
        let file = host.path().join("f");
        std::fs::write(&file, "x").expect("write");
        let shown = file.display().to_string();
        assert_eq!(
            check_host_path_type(&file, "Directory").expect_err("dir"),
            format!("hostPath type check failed: {shown} is not a directory")
        );
        check_host_path_type(&file, "File").expect("file");
        check_host_path_type(&file, "FileOrCreate").expect("file");
        let dir = host.path().to_path_buf();
        for (ty, what) in [
            ("File", "a file"),
            ("Socket", "a socket file"),
            ("CharDevice", "a character device"),
            ("BlockDevice", "a block device"),
        ] {
            assert_eq!(
                check_host_path_type(&dir, ty).expect_err(ty),
                format!(
                    "hostPath type check failed: {} is not {what}",
                    dir.display()
                )
            );
        }
        check_host_path_type(Path::new("/dev/null"), "CharDevice").expect("null");
        let created = host.path().join("new/dir/file");
        check_host_path_type(&created, "FileOrCreate").expect("create");
        assert_eq!(mode(&created), 0o644);
        let mut missing = vol("m");
        missing.host_path = Some(HostPathVolumeSource {
            path: "/nonexistent/minik".into(),
            type_: Some("Directory".into()),
        });
        p.spec.as_mut().expect("spec").volumes = Some(vec![missing]);
        assert_eq!(
            vm.setup(&p).await.expect_err("missing").to_string(),
            "MountVolume.SetUp failed for volume \"m\" : hostPath type check failed: /nonexistent/minik is not a directory"
        );

        // Orphans and teardown.
        std::fs::create_dir_all(root.path().join("pods/other-uid")).expect("mkdir");
        let live: HashSet<String> = ["uid-1234".to_string()].into_iter().collect();
        assert_eq!(vm.orphaned(&live), vec!["other-uid".to_string()]);
        assert_eq!(vm.cleanup(&live).await, vec!["other-uid".to_string()]);
        vm.teardown("uid-1234").await.expect("teardown");
        assert!(!vm.pod_dir("uid-1234").exists());
        vm.teardown("uid-1234").await.expect("teardown twice");
        assert!(vm.teardown("../x").await.is_err());
    }

    #[test]
    fn fs_user_needs_agreement() {
        let mut p = with_volumes(vec![]);
        assert_eq!(fs_user_of(&p), None);
        p.spec.as_mut().expect("spec").security_context = Some(PodSecurityContext {
            run_as_user: Some(1000),
            ..Default::default()
        });
        assert_eq!(fs_user_of(&p), Some(1000));
        p.spec.as_mut().expect("spec").containers.push(Container {
            name: "side".into(),
            security_context: Some(k8s_openapi::api::core::v1::SecurityContext {
                run_as_user: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(fs_user_of(&p), None);
    }
}
