//! Images without a registry: build them from `images/`, list them, load tarballs.
//!
//! minik runs on machines where no registry may be reachable, so the images its pods need are
//! made locally. Each folder `images/<name>/` of the repository holds:
//!
//! - a std-only Rust crate whose binary is called `<name>` (its own `[workspace]`, outside
//!   minik's dependency graph), or a `host-binary` file naming a static binary of the host to
//!   use instead (`path: /bin/busybox`, `debian-package: busybox-static`);
//! - a `Dockerfile`, `FROM scratch`, that `COPY`s the binary `<name>`;
//! - `tags`: the image names, one a line (the first is the build's tag, the others are added).
//!
//! [`build`] compiles the crate with `cargo build --release` for the host's `*-unknown-linux-gnu`
//! target with `-C target-feature=+crt-static` (a static glibc binary: no loader, no libc in the
//! image), into `images/<name>/target`, makes the build context in memory (the Dockerfile and the
//! binary, with fixed owners and times) and sends it to the engine. The context's SHA-256 is
//! stored as the image label `dev.minik.context-digest`: when an image with the same digest is
//! already there, nothing is built and only missing tags are added, so a second build is quick
//! and leaves the image ID unchanged.
//!
//! The pause image is tagged both `minik/pause:3.10` and `registry.k8s.io/pause:3.10`: pods,
//! kubeadm and the kubelet's `--pod-infra-container-image` default name the latter, and with it
//! present in the engine nothing is ever pulled.
//!
//! [`list`] shows the images that matter to minik (built here, or named `minik/…` or
//! `registry.k8s.io/…`), or all of them. [`load_tarball`] is `docker load` of a `docker save`
//! tarball; [`check_present`] checks that a named image is in the engine: with one engine shared
//! by every node, that is all `kind load docker-image` needs to do here.

use std::collections::HashMap;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use bollard::models::ImageInspect;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ImportImageOptionsBuilder, ListImagesOptionsBuilder,
    RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};

use super::docker::{self, Engine};
use super::tar::TarWriter;

/// The sandbox image pods and kubeadm name (an alias of [`MINIK_PAUSE_IMAGE`]).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// The pause image as minik builds it.
pub const MINIK_PAUSE_IMAGE: &str = "minik/pause:3.10";
/// The demo echo server of `examples/`.
pub const ECHO_IMAGE: &str = "minik/echo:1.0";
/// A shell and tools (the host's static busybox) for jobs, probes and `kubectl exec`.
pub const BUSYBOX_IMAGE: &str = "minik/busybox:1.0";
/// Label with the `images/` folder an image was built from.
pub const LABEL_IMAGE: &str = "dev.minik.image";
/// Label with the SHA-256 of the build context.
pub const LABEL_DIGEST: &str = "dev.minik.context-digest";

/// The images folder of the source tree minik was built from.
const BUILT_IN_IMAGES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/images");

/// Where the image sources are: `explicit` (`--images-dir` / `MINIK_IMAGES_DIR`), else the
/// `images/` folder of the source tree this binary was built from.
pub fn images_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        if !dir.is_dir() {
            bail!("the images folder {} does not exist", dir.display());
        }
        return Ok(dir.to_path_buf());
    }
    let built_in = PathBuf::from(BUILT_IN_IMAGES_DIR);
    if built_in.is_dir() {
        return Ok(built_in);
    }
    bail!(
        "no images folder: {} is gone; pass --images-dir (the images/ folder of minik's sources)",
        built_in.display()
    )
}

/// The Rust target the image binaries are built for: the host's architecture with glibc.
pub fn rust_target() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// One `images/<name>/` folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    pub name: String,
    pub dir: PathBuf,
    /// The image names; the first is the build's tag.
    pub tags: Vec<String>,
    /// Where the image's binary comes from.
    pub binary_from: BinaryFrom,
}

/// Where an image's binary comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryFrom {
    /// The folder's crate, compiled as a static binary.
    Crate,
    /// A static binary of the host (and the Debian package that installs it).
    Host {
        path: PathBuf,
        package: Option<String>,
    },
}

impl ImageSource {
    /// Where cargo builds the crate.
    pub fn target_dir(&self) -> PathBuf {
        self.dir.join("target")
    }

    /// The static binary that goes into the image.
    pub fn binary(&self) -> PathBuf {
        match &self.binary_from {
            BinaryFrom::Crate => self
                .target_dir()
                .join(rust_target())
                .join("release")
                .join(&self.name),
            BinaryFrom::Host { path, .. } => path.clone(),
        }
    }
}

/// The image sources in `dir`: each sub-folder with a `Dockerfile` and a `Cargo.toml` or a
/// `host-binary` file, by name.
pub fn discover(dir: &Path) -> anyhow::Result<Vec<ImageSource>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = entry.path();
        if !path.join("Dockerfile").is_file() {
            continue;
        }
        let binary_from = if path.join("Cargo.toml").is_file() {
            BinaryFrom::Crate
        } else if path.join("host-binary").is_file() {
            read_host_binary(&path.join("host-binary"))?
        } else {
            continue;
        };
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let tags = read_tags(&path.join("tags"), &name)?;
        out.push(ImageSource {
            name,
            dir: path,
            tags,
            binary_from,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A `host-binary` file: `path: /abs/path` and optionally `debian-package: name`.
fn read_host_binary(file: &Path) -> anyhow::Result<BinaryFrom> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut path = None;
    let mut package = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("path", v)) if v.starts_with('/') => path = Some(PathBuf::from(v)),
            Some(("debian-package", v)) if !v.is_empty() => package = Some(v.to_string()),
            _ => bail!("{}: unexpected line {line:?}", file.display()),
        }
    }
    let Some(path) = path else {
        bail!("{} names no `path: /absolute/path`", file.display());
    };
    Ok(BinaryFrom::Host { path, package })
}

/// Whether an ELF file asks for a program interpreter (the dynamic loader): a static binary
/// doesn't. Looks at the program headers.
pub fn is_dynamic_elf(data: &[u8]) -> bool {
    fn u16_at(d: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
    }
    fn u32_at(d: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
    }
    fn u64_at(d: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
    }
    // 64-bit little-endian ELF only (what the supported targets produce).
    if data.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    const PT_INTERP: u32 = 3;
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (u64_at(data, 0x20), u16_at(data, 0x36), u16_at(data, 0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        usize::try_from(phoff)
            .ok()
            .and_then(|off| off.checked_add(i * usize::from(phentsize)))
            .and_then(|at| u32_at(data, at))
            == Some(PT_INTERP)
    })
}

/// The `tags` file's names (blank lines and `#` comments skipped); `minik/<name>:latest` when
/// there is no such file.
fn read_tags(path: &Path, name: &str) -> anyhow::Result<Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(vec![format!("minik/{name}:latest")]);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let tags: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    for tag in &tags {
        if split_reference(tag).is_none() {
            bail!("{}: {tag:?} is not an image name", path.display());
        }
    }
    if tags.is_empty() {
        bail!("{} names no image", path.display());
    }
    Ok(tags)
}

/// `repo:tag` split at the tag's colon (`localhost:5000/x` has no tag: `:latest` is implied).
pub fn split_reference(reference: &str) -> Option<(&str, &str)> {
    if reference.is_empty()
        || reference.contains('@')
        || reference.chars().any(|c| c.is_whitespace())
    {
        return None;
    }
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[slash..].rfind(':') {
        Some(i) => {
            let (repo, tag) = (&reference[..slash + i], &reference[slash + i + 1..]);
            (!repo.is_empty() && !tag.is_empty()).then_some((repo, tag))
        }
        None => Some((reference, "latest")),
    }
}

/// The sources to build: all of them when `names` is empty, else the named ones.
pub fn select(all: Vec<ImageSource>, names: &[String]) -> anyhow::Result<Vec<ImageSource>> {
    if names.is_empty() {
        return Ok(all);
    }
    let mut out = Vec::new();
    for name in names {
        match all.iter().find(|s| &s.name == name) {
            Some(s) if !out.contains(s) => out.push(s.clone()),
            Some(_) => {}
            None => bail!(
                "no image source {name:?}; the images folder has: {}",
                all.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    Ok(out)
}

/// What [`build`] did.
#[derive(Debug, Clone)]
pub struct Built {
    pub name: String,
    /// The image ID (`sha256:…`).
    pub id: String,
    pub tags: Vec<String>,
    /// Nothing was built: an image from the same context was already there.
    pub up_to_date: bool,
    /// The static binary's size in bytes.
    pub binary_size: u64,
}

/// How to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Build the image even when one from the same context exists (the binary is still only
    /// recompiled when its sources changed: that is cargo's business).
    pub force: bool,
}

/// Compiles `src`'s crate and builds its image (or finds it up to date), then tags it.
/// `progress` receives one line per step.
pub async fn build(
    engine: &Engine,
    src: &ImageSource,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Built> {
    // One build of a folder at a time (parallel `minik image build`s, parallel tests).
    let _lock = lock(&src.target_dir()).await?;
    let binary = match &src.binary_from {
        BinaryFrom::Crate => {
            progress(&format!(
                "{}: compiling the static binary ({})",
                src.name,
                rust_target()
            ));
            compile(src).await?;
            tokio::fs::read(src.binary())
                .await
                .with_context(|| format!("cannot read {}", src.binary().display()))?
        }
        BinaryFrom::Host { path, package } => match tokio::fs::read(path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{} is missing{}",
                path.display(),
                package
                    .as_ref()
                    .map(|p| format!(": install Debian's {p} (apt-get install {p})"))
                    .unwrap_or_default()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        },
    };
    if is_dynamic_elf(&binary) {
        bail!(
            "{} is dynamically linked: a FROM scratch image has no loader or libc, it needs a \
             static binary",
            src.binary().display()
        );
    }
    let dockerfile = tokio::fs::read(src.dir.join("Dockerfile"))
        .await
        .with_context(|| format!("cannot read {}", src.dir.join("Dockerfile").display()))?;
    let context = build_context(&src.name, &dockerfile, &binary)?;
    let digest = hex(&Sha256::digest(&context));

    if !opts.force
        && let Some(id) = image_with_digest(engine, &digest).await?
    {
        tag_all(engine, &id, &src.tags).await?;
        return Ok(Built {
            name: src.name.clone(),
            id,
            tags: src.tags.clone(),
            up_to_date: true,
            binary_size: binary.len() as u64,
        });
    }

    // The image the first tag names now, if minik built it: replaced below, then removed (so
    // edits to an image's sources don't pile up untagged images).
    let previous = engine
        .docker
        .inspect_image(&src.tags[0])
        .await
        .ok()
        .filter(|i| {
            i.config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .is_some_and(|l| l.contains_key(LABEL_IMAGE))
        })
        .and_then(|i| i.id);
    progress(&format!(
        "{}: building {} ({} context)",
        src.name,
        src.tags[0],
        human_size(context.len() as i64)
    ));
    let labels = HashMap::from([
        (LABEL_IMAGE.to_string(), src.name.clone()),
        (LABEL_DIGEST.to_string(), digest),
    ]);
    let options = BuildImageOptionsBuilder::new()
        .dockerfile("Dockerfile")
        .t(&src.tags[0])
        .labels(&labels)
        .rm(true)
        .forcerm(true)
        .nocache(opts.force)
        .build();
    let mut stream = engine.docker.build_image(
        options,
        None,
        Some(bollard::body_full(bytes::Bytes::from(context))),
    );
    let mut log = String::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| {
            anyhow::anyhow!(
                "building {} failed: {}\n{}",
                src.tags[0],
                docker::message(&e),
                log.trim_end()
            )
        })?;
        if let Some(s) = &info.stream {
            log.push_str(s);
        }
        if let Some(detail) = info.error_detail {
            bail!(
                "building {} failed: {}\n{}",
                src.tags[0],
                detail.message.unwrap_or_default(),
                log.trim_end()
            );
        }
    }
    let inspect = engine
        .docker
        .inspect_image(&src.tags[0])
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the build of {} left no image: {}",
                src.tags[0],
                docker::message(&e)
            )
        })?;
    let id = inspect.id.unwrap_or_default();
    tag_all(engine, &id, &src.tags).await?;
    if let Some(old) = previous.filter(|old| *old != id) {
        // Fails (and is left alone) while a container uses it or another name points at it.
        let removed = engine
            .docker
            .remove_image(&old, Some(RemoveImageOptionsBuilder::new().build()), None)
            .await;
        if removed.is_ok() {
            progress(&format!(
                "{}: removed the previous image {}",
                src.name,
                short_id(&old)
            ));
        }
    }
    Ok(Built {
        name: src.name.clone(),
        id,
        tags: src.tags.clone(),
        up_to_date: false,
        binary_size: binary.len() as u64,
    })
}

/// An exclusive lock on `<dir>/.minik-build.lock`, released when the file is dropped.
async fn lock(dir: &Path) -> anyhow::Result<std::fs::File> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(".minik-build.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    tokio::task::spawn_blocking(move || {
        // SAFETY: flock on a file descriptor we own; it blocks until the lock is ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot lock {}", path.display()));
        }
        Ok(file)
    })
    .await
    .context("the lock task failed")?
}

/// `cargo build --release` of the image crate as a static binary.
async fn compile(src: &ImageSource) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = tokio::process::Command::new(&cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(src.dir.join("Cargo.toml"))
        .arg("--target")
        .arg(rust_target())
        .arg("--target-dir")
        .arg(src.target_dir())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // These would override the flags, target or folder chosen here.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = cmd.output().await.with_context(|| {
        format!(
            "cannot run {} (needed to compile the image binaries)",
            Path::new(&cargo).display()
        )
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        bail!(
            "compiling {} ({}) failed ({}); a static build needs glibc's libc.a (Debian: libc6-dev):\n{}",
            src.name,
            src.dir.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    if !src.binary().is_file() {
        bail!(
            "cargo built {} but left no binary at {} (the crate's binary must be called {:?})",
            src.name,
            src.binary().display(),
            src.name
        );
    }
    Ok(())
}

/// The build context: the Dockerfile and the binary (named as the image folder, mode 0755).
pub fn build_context(name: &str, dockerfile: &[u8], binary: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut tar = TarWriter::new();
    tar.file("Dockerfile", 0o644, dockerfile)?;
    tar.file(name, 0o755, binary)?;
    Ok(tar.finish())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The ID of an image built from the context with this digest, if the engine has one.
async fn image_with_digest(engine: &Engine, digest: &str) -> anyhow::Result<Option<String>> {
    let filters = HashMap::from([("label", vec![format!("{LABEL_DIGEST}={digest}")])]);
    let images = engine
        .docker
        .list_images(Some(
            ListImagesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(|e| anyhow::anyhow!("cannot list images: {}", docker::message(&e)))?;
    Ok(images.into_iter().max_by_key(|i| i.created).map(|i| i.id))
}

/// Points every name in `tags` at image `id` (tags that already do are left alone).
async fn tag_all(engine: &Engine, id: &str, tags: &[String]) -> anyhow::Result<()> {
    for tag in tags {
        let current = engine.docker.inspect_image(tag).await.ok();
        if current.and_then(|i| i.id).as_deref() == Some(id) {
            continue;
        }
        let Some((repo, t)) = split_reference(tag) else {
            bail!("{tag:?} is not an image name");
        };
        engine
            .docker
            .tag_image(
                id,
                Some(TagImageOptionsBuilder::new().repo(repo).tag(t).build()),
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot tag {id} as {tag}: {}", docker::message(&e)))?;
    }
    Ok(())
}

/// One line of `minik image ls`: an image name (or an untagged image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    pub repository: String,
    pub tag: String,
    /// `sha256:…`
    pub id: String,
    pub size: i64,
    /// Unix seconds.
    pub created: i64,
}

/// Whether an image matters to minik: built from `images/`, or named `minik/…` or
/// `registry.k8s.io/…` (the names pods and kubeadm use for the cluster's own images).
pub fn is_minik_image(tags: &[String], labels: &HashMap<String, String>) -> bool {
    labels.contains_key(LABEL_IMAGE)
        || tags.iter().any(|t| {
            let t = t.strip_prefix("docker.io/").unwrap_or(t);
            t.starts_with("minik/") || t.starts_with("registry.k8s.io/")
        })
}

/// The engine's images, one row per name, sorted: minik's only, or all with `all`.
pub async fn list(engine: &Engine, all: bool) -> anyhow::Result<Vec<ImageRow>> {
    let images = engine
        .docker
        .list_images(None::<bollard::query_parameters::ListImagesOptions>)
        .await
        .map_err(|e| anyhow::anyhow!("cannot list images: {}", docker::message(&e)))?;
    let mut rows = Vec::new();
    for image in images {
        let tags: Vec<String> = image
            .repo_tags
            .iter()
            .filter(|t| t.as_str() != "<none>:<none>")
            .cloned()
            .collect();
        if !all && !is_minik_image(&tags, &image.labels) {
            continue;
        }
        if tags.is_empty() {
            rows.push(ImageRow {
                repository: "<none>".into(),
                tag: "<none>".into(),
                id: image.id.clone(),
                size: image.size,
                created: image.created,
            });
        }
        for t in tags {
            let (repo, tag) = split_reference(&t).unwrap_or((t.as_str(), "<none>"));
            rows.push(ImageRow {
                repository: repo.to_string(),
                tag: tag.to_string(),
                id: image.id.clone(),
                size: image.size,
                created: image.created,
            });
        }
    }
    rows.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
    Ok(rows)
}

/// An image ID as `docker images` shows it: 12 hex digits.
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// A size as `docker images` prints it (decimal units, 3 significant digits: `1.13MB`).
pub fn human_size(size: i64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = size.max(0) as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let text = if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[unit])
}

/// What `minik image load ARG` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadTarget {
    /// A `docker save` tarball.
    Tarball(PathBuf),
    /// An image name that must be in the engine.
    Image(String),
}

/// A path to an existing file, or written as a path (`./x`, `/x`, `x.tar`), is a tarball;
/// anything else is an image name.
pub fn classify(arg: &str) -> LoadTarget {
    let path = Path::new(arg);
    let looks_like_path = arg.starts_with('/')
        || arg.starts_with("./")
        || arg.starts_with("../")
        || arg.starts_with('~')
        || [".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.zst"]
            .iter()
            .any(|ext| arg.ends_with(ext));
    if path.is_file() || looks_like_path {
        LoadTarget::Tarball(path.to_path_buf())
    } else {
        LoadTarget::Image(arg.to_string())
    }
}

/// `docker load`s a `docker save` tarball; returns the engine's lines (`Loaded image: …`).
pub async fn load_tarball(engine: &Engine, path: &Path) -> anyhow::Result<Vec<String>> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    if !file.metadata().await.map(|m| m.is_file()).unwrap_or(false) {
        bail!("{} is not a file", path.display());
    }
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let mut stream = engine.docker.import_image(
        ImportImageOptionsBuilder::new().quiet(true).build(),
        bollard::body_try_stream(chunks),
        None,
    );
    let mut lines = Vec::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| {
            anyhow::anyhow!(
                "the Docker engine could not load {} (is it a `docker save` tarball?): {}",
                path.display(),
                docker::message(&e)
            )
        })?;
        if let Some(detail) = info.error_detail {
            bail!(
                "the Docker engine could not load {} (is it a `docker save` tarball?): {}",
                path.display(),
                detail.message.unwrap_or_default()
            );
        }
        for text in [info.stream, info.status].into_iter().flatten() {
            let text = text.trim();
            if !text.is_empty() {
                lines.push(text.to_string());
            }
        }
    }
    if lines.is_empty() {
        bail!(
            "the Docker engine loaded nothing from {} (is it a `docker save` tarball?)",
            path.display()
        );
    }
    Ok(lines)
}

/// The named image as the engine has it; a clear error when it has none by that name.
pub async fn check_present(engine: &Engine, name: &str) -> anyhow::Result<ImageInspect> {
    match engine.docker.inspect_image(name).await {
        Ok(i) => Ok(i),
        Err(e) if docker::is_not_found(&e) => bail!(
            "image {name:?} is not in the Docker engine at {} (and is not a file): build it \
             (`minik image build`, `docker build`) or `docker load` it first; minik pulls from no \
             registry",
            engine.host
        ),
        Err(e) => bail!("cannot inspect image {name:?}: {}", docker::message(&e)),
    }
}

/// Pulls `image` from its registry, as the kubelet does for `imagePullPolicy: Always` or a
/// missing image. On a machine without a registry this fails with the engine's reason (the
/// error text is what `ErrImagePull` shows).
pub async fn pull(engine: &Engine, image: &str) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    let (repo, tag) = match image.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') && !image.contains('@') => (r, t),
        _ => (image, ""),
    };
    let opts = bollard::query_parameters::CreateImageOptions {
        from_image: Some(repo.to_string()),
        tag: (!tag.is_empty()).then(|| tag.to_string()),
        ..Default::default()
    };
    let mut stream = engine.docker.create_image(Some(opts), None, None);
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(e) = info.error_detail.and_then(|d| d.message) {
                    anyhow::bail!("Error response from daemon: {e}");
                }
            }
            Err(e) => anyhow::bail!("Error response from daemon: {}", super::docker::message(&e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_tag() {
        assert_eq!(
            split_reference("minik/echo:1.0"),
            Some(("minik/echo", "1.0"))
        );
        assert_eq!(
            split_reference("registry.k8s.io/pause:3.10"),
            Some(("registry.k8s.io/pause", "3.10"))
        );
        assert_eq!(split_reference("busybox"), Some(("busybox", "latest")));
        assert_eq!(
            split_reference("localhost:5000/x"),
            Some(("localhost:5000/x", "latest"))
        );
        assert_eq!(split_reference("x:"), None);
        assert_eq!(split_reference("a b"), None);
        assert_eq!(split_reference("x@sha256:00"), None);
    }

    #[test]
    fn sizes_print_as_docker_prints_them() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_125_600), "1.13MB");
        assert_eq!(human_size(13_256), "13.3kB");
        assert_eq!(human_size(72_800_000), "72.8MB");
        assert_eq!(human_size(2_000_000_000), "2GB");
    }

    #[test]
    fn the_repository_images_are_found() {
        let all = discover(Path::new(BUILT_IN_IMAGES_DIR)).unwrap();
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["busybox", "echo", "pause"]);
        let pause = &all[2];
        assert_eq!(pause.tags, [MINIK_PAUSE_IMAGE, PAUSE_IMAGE]);
        assert_eq!(pause.binary_from, BinaryFrom::Crate);
        assert_eq!(all[1].tags[0], ECHO_IMAGE);
        assert_eq!(all[0].tags[0], BUSYBOX_IMAGE);
        assert_eq!(
            all[0].binary_from,
            BinaryFrom::Host {
                path: "/bin/busybox".into(),
                package: Some("busybox-static".into())
            }
        );
        assert!(select(all.clone(), &["nope".into()]).is_err());
        assert_eq!(
            select(all.clone(), &["pause".into()]).unwrap(),
            std::slice::from_ref(pause)
        );
        assert_eq!(select(all.clone(), &[]).unwrap().len(), 3);
        // The Dockerfiles copy the binary the build context holds.
        for s in &all {
            let df = std::fs::read_to_string(s.dir.join("Dockerfile")).unwrap();
            assert!(df.contains("FROM scratch"), "{}", s.name);
            assert!(df.contains(&format!("COPY {} /", s.name)), "{}", s.name);
        }
    }

    #[test]
    fn load_arguments() {
        assert_eq!(
            classify("minik/echo:1.0"),
            LoadTarget::Image("minik/echo:1.0".into())
        );
        assert_eq!(classify("x.tar"), LoadTarget::Tarball("x.tar".into()));
        assert_eq!(classify("/tmp/x"), LoadTarget::Tarball("/tmp/x".into()));
        let f = tempfile::NamedTempFile::new().unwrap();
        let p = f.path().to_str().unwrap().to_string();
        assert_eq!(classify(&p), LoadTarget::Tarball(p.clone().into()));
    }

    #[test]
    fn static_and_dynamic_binaries() {
        // This test binary is dynamically linked (the dev profile links glibc dynamically).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(is_dynamic_elf(&me));
        assert!(!is_dynamic_elf(b"#!/bin/sh\n"));
        assert!(!is_dynamic_elf(b"\x7fELF"));
    }

    #[test]
    fn minik_images() {
        let none = HashMap::new();
        assert!(is_minik_image(&["minik/echo:1.0".into()], &none));
        assert!(is_minik_image(
            &["registry.k8s.io/pause:3.10".into()],
            &none
        ));
        assert!(!is_minik_image(&["busybox:latest".into()], &none));
        let labelled = HashMap::from([(LABEL_IMAGE.to_string(), "x".to_string())]);
        assert!(is_minik_image(&[], &labelled));
    }
}
