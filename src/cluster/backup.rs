//! Backups of a running cluster's store: consistent snapshots taken over etcd's Maintenance API
//! with mutual TLS (as `etcdctl snapshot save` takes them), kept in `<state>/backups/`.
//!
//! File names say when and why: `<YYYYMMDD-HHMMSS>.snap` for `minik etcd backup`,
//! `scheduled-<YYYYMMDD-HHMMSS>.snap` for the supervisor's scheduled ones (of which the newest
//! `etcd.snapshots.keep` are kept).

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::io::AsyncWriteExt as _;

use super::config::ClusterConfig;
use super::profile::Profile;
use super::setup;
use crate::etcd::client::{self, ClientConfig};
use crate::etcd::proto::etcdserverpb::SnapshotRequest;
use crate::etcd::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::etcd::snapshot;

/// One snapshot file.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupInfo {
    pub path: PathBuf,
    pub revision: i64,
    pub keys: usize,
    pub size: u64,
    /// Modification time, RFC 3339.
    pub time: String,
}

/// The store's client config for this profile (its CA and the health-check client certificate).
pub fn store_client(profile: &Profile, cfg: &ClusterConfig) -> ClientConfig {
    let (client, ca) = setup::etcd_client(profile);
    ClientConfig {
        servers: vec![format!("https://127.0.0.1:{}", cfg.ports.etcd)],
        ca_file: Some(ca),
        cert_file: Some(client.cert),
        key_file: Some(client.key),
    }
}

/// Takes a snapshot of the running store into `out` (default: a new file in the backups
/// folder, prefixed with `tag` unless it is empty). The file appears only when complete and
/// verified.
pub async fn save(
    profile: &Profile,
    cfg: &ClusterConfig,
    out: Option<PathBuf>,
    tag: &str,
) -> anyhow::Result<BackupInfo> {
    if !cfg.etcd.servers.is_empty() {
        anyhow::bail!(
            "this profile uses an external etcd ({}): back it up with its own tools (etcdctl \
             snapshot save)",
            cfg.etcd.servers.join(",")
        );
    }
    let path = match out {
        Some(p) => p,
        None => new_name(&profile.backups_dir(), tag),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let channel = client::connect(&store_client(profile, cfg))
        .await
        .context("connecting to the cluster's store (is the cluster running? `minik status`)")?;
    let mut stream = MaintenanceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .snapshot(SnapshotRequest {})
        .await
        .context("asking the store for a snapshot")?
        .into_inner();
    let part = path.with_extension("part");
    let mut file = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("creating {}", part.display()))?;
    let result: anyhow::Result<()> = async {
        while let Some(chunk) = stream.message().await.context("receiving the snapshot")? {
            file.write_all(&chunk.blob).await?;
        }
        file.sync_all().await?;
        Ok(())
    }
    .await;
    drop(file);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    if let Err(e) = snapshot::status(&part) {
        let _ = std::fs::remove_file(&part);
        return Err(e).context("the snapshot received does not verify");
    }
    std::fs::rename(&part, &path).with_context(|| format!("writing {}", path.display()))?;
    info(&path)
}

/// A file name in `dir` for a snapshot taken now.
fn new_name(dir: &Path, tag: &str) -> PathBuf {
    let stamp = jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S").to_string();
    let base = if tag.is_empty() {
        stamp
    } else {
        format!("{tag}-{stamp}")
    };
    let mut path = dir.join(format!("{base}.snap"));
    let mut n = 1;
    while path.exists() {
        n += 1;
        path = dir.join(format!("{base}-{n}.snap"));
    }
    path
}

/// What a snapshot file holds (verifying it).
pub fn info(path: &Path) -> anyhow::Result<BackupInfo> {
    let st = snapshot::status(path)?;
    let time = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(crate::supervisor::state::rfc3339)
        .unwrap_or_default();
    Ok(BackupInfo {
        path: path.to_path_buf(),
        revision: st.revision,
        keys: st.total_keys,
        size: st.total_size,
        time,
    })
}

/// The snapshots in the profile's backups folder, oldest first; unreadable files are listed
/// with their error.
pub fn list(profile: &Profile) -> Vec<Result<BackupInfo, (PathBuf, String)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(profile.backups_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "snap"))
                .collect()
        })
        .unwrap_or_default();
    files.sort_by_key(|p| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH)
    });
    files
        .into_iter()
        .map(|p| info(&p).map_err(|e| (p, format!("{e:#}"))))
        .collect()
}

/// Deletes all but the newest `keep` snapshots whose names start with `<tag>-`.
pub fn prune(profile: &Profile, tag: &str, keep: usize) -> anyhow::Result<()> {
    let prefix = format!("{tag}-");
    let mut tagged: Vec<PathBuf> = std::fs::read_dir(profile.backups_dir())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "snap")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    tagged.sort(); // the names sort by time
    let excess = tagged.len().saturating_sub(keep);
    for p in &tagged[..excess] {
        std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

/// Replaces the profile's store data with a snapshot's (the control plane must be stopped).
/// The old data is kept until the restore succeeded, and put back if it fails.
pub fn restore_data(profile: &Profile, file: &Path) -> anyhow::Result<snapshot::Status> {
    // Verify before touching anything.
    snapshot::status(file)?;
    let data = profile.etcd_data_dir();
    let old = profile.dir.join("etcd.before-restore");
    let _ = std::fs::remove_dir_all(&old);
    if data.exists() {
        std::fs::rename(&data, &old).with_context(|| format!("moving {} aside", data.display()))?;
    }
    match snapshot::restore(file, &data) {
        Ok(st) => {
            let _ = std::fs::remove_dir_all(&old);
            Ok(st)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&data);
            if old.exists() {
                let _ = std::fs::rename(&old, &data);
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest_of_a_tag() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile {
            name: "p".into(),
            dir: dir.path().to_path_buf(),
        };
        profile.create_dirs().unwrap();
        for n in [
            "scheduled-20260101-000000",
            "scheduled-20260102-000000",
            "scheduled-20260103-000000",
            "20260101-000000",
        ] {
            std::fs::write(profile.backups_dir().join(format!("{n}.snap")), b"x").unwrap();
        }
        prune(&profile, "scheduled", 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(profile.backups_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "20260101-000000.snap",
                "scheduled-20260102-000000.snap",
                "scheduled-20260103-000000.snap"
            ]
        );
        let a = new_name(&profile.backups_dir(), "");
        std::fs::write(&a, b"").unwrap();
        assert_ne!(new_name(&profile.backups_dir(), ""), a);
    }
}
