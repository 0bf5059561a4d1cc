//! `minik image build|ls|load`: the cluster's images, without a registry.
//!
//! `build` compiles the crates in `images/` as static binaries and builds their `FROM scratch`
//! images in the local Docker engine; `ls` lists the images that matter to minik (`--all`: every
//! image); `load` makes an image available to the cluster — a `docker save` tarball is loaded into
//! the engine, a name is checked to be there (one engine serves every node, so that is what
//! `kind load docker-image` and `minikube image load` amount to here).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum, ValueHint};

use crate::kubelet::docker::with_engine;
use crate::kubelet::images::{self, BuildOptions, LoadTarget};

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build images from the images/ folder (all of them when none is named).
    ///
    /// Compiles each crate as a static binary and builds its FROM-scratch image in the local
    /// Docker engine. Quick, and the image unchanged, when nothing changed.
    Build(BuildArgs),
    /// List the cluster's images in the Docker engine (--all: every image).
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Make images available to the cluster (as `kind load docker-image` does).
    ///
    /// A `docker save` tarball is loaded into the Docker engine; a name is checked to be there
    /// (one engine serves every node).
    Load(LoadArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Images to build (folder names in the images folder, e.g. `pause`, `echo`); all when none.
    #[arg(value_name = "NAME", value_hint = ValueHint::Other)]
    pub names: Vec<String>,
    /// The folder with the image sources (default: the images/ folder of minik's sources).
    #[arg(long, env = "MINIK_IMAGES_DIR", value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub images_dir: Option<PathBuf>,
    /// Build the image even when one from the same binary and Dockerfile is already there.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Every image in the Docker engine, not only minik's.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = LsFormat::Table)]
    pub format: LsFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LsFormat {
    /// Repository, tag, image ID and size, as `crictl images` prints them.
    Table,
    /// One `repository:tag` a line.
    Short,
    /// A JSON array.
    Json,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// `docker save` tarballs (a path) or image names (e.g. `minik/echo:1.0`).
    #[arg(required = true, value_name = "IMAGE|TARBALL", value_hint = ValueHint::AnyPath)]
    pub images: Vec<String>,
}

pub fn run(cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCommand::Build(a) => build(a),
        ImageCommand::Ls(a) => ls(a),
        ImageCommand::Load(a) => load(a),
    }
}

fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let dir = images::images_dir(args.images_dir.as_deref())?;
    let sources = images::select(images::discover(&dir)?, &args.names)?;
    if sources.is_empty() {
        anyhow::bail!("{} holds no image sources", dir.display());
    }
    let opts = BuildOptions { force: args.force };
    with_engine(async |engine| {
        for src in &sources {
            let built = images::build(engine, src, &opts, &mut |line| eprintln!("{line}"))
                .await
                .with_context(|| format!("image {}", src.name))?;
            println!(
                "{}: {} {} ({}, binary {})",
                built.name,
                built.tags.join(", "),
                images::short_id(&built.id),
                if built.up_to_date {
                    "up to date"
                } else {
                    "built"
                },
                images::human_size(built.binary_size as i64)
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn ls(args: LsArgs) -> anyhow::Result<ExitCode> {
    with_engine(async |engine| {
        let rows = images::list(engine, args.all).await?;
        match args.format {
            LsFormat::Table => {
                let w_repo = rows
                    .iter()
                    .map(|r| r.repository.len())
                    .max()
                    .unwrap_or(0)
                    .max(5);
                let w_tag = rows.iter().map(|r| r.tag.len()).max().unwrap_or(0).max(3);
                println!(
                    "{:w_repo$}   {:w_tag$}   {:12}   SIZE",
                    "IMAGE", "TAG", "IMAGE ID"
                );
                for r in &rows {
                    println!(
                        "{:w_repo$}   {:w_tag$}   {:12}   {}",
                        r.repository,
                        r.tag,
                        images::short_id(&r.id),
                        images::human_size(r.size)
                    );
                }
            }
            LsFormat::Short => {
                for r in rows.iter().filter(|r| r.tag != "<none>") {
                    println!("{}:{}", r.repository, r.tag);
                }
            }
            LsFormat::Json => {
                let list: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "repository": r.repository,
                            "tag": r.tag,
                            "id": r.id,
                            "size": r.size,
                            "created": r.created,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    with_engine(async |engine| {
        let mut failed = false;
        for arg in &args.images {
            let result = match images::classify(arg) {
                LoadTarget::Tarball(path) => images::load_tarball(engine, &path)
                    .await
                    .map(|lines| lines.iter().for_each(|l| println!("{l}"))),
                LoadTarget::Image(name) => {
                    images::check_present(engine, &name).await.map(|image| {
                        println!(
                            "Image {name:?} ({}, {}) is in the Docker engine: every node can run \
                             it (imagePullPolicy IfNotPresent or Never)",
                            images::short_id(image.id.as_deref().unwrap_or("")),
                            images::human_size(image.size.unwrap_or(0))
                        )
                    })
                }
            };
            if let Err(e) = result {
                eprintln!("Error: {e:#}");
                failed = true;
            }
        }
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}
