//! The user's kubeconfig: `up` merges the profile's context into it and makes it current, and
//! `delete` takes it out again, as kind does.
//!
//! The file is the first one of `$KUBECONFIG` (a `:`-separated list), else `~/.kube/config`.
//! Cluster, user and context entries are all named after the profile's context (`minik`,
//! `minik-<profile>`); other entries are left as they are.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_yaml::{Mapping, Value};

/// The kubeconfig file `up` writes into.
pub fn user_kubeconfig_path() -> anyhow::Result<PathBuf> {
    if let Some(list) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty())
    {
        return Ok(first);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".kube/config")),
        None => bail!("neither KUBECONFIG nor HOME is set: cannot find your kubeconfig"),
    }
}

fn load(path: &Path) -> anyhow::Result<Mapping> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if text.trim().is_empty() {
        let mut m = Mapping::new();
        m.insert("apiVersion".into(), "v1".into());
        m.insert("kind".into(), "Config".into());
        m.insert("preferences".into(), Value::Mapping(Mapping::new()));
        return Ok(m);
    }
    match serde_yaml::from_str::<Value>(&text)
        .with_context(|| format!("{} is not a kubeconfig (YAML)", path.display()))?
    {
        Value::Mapping(m) => Ok(m),
        _ => bail!(
            "{} is not a kubeconfig (not a YAML mapping)",
            path.display()
        ),
    }
}

fn save(path: &Path, config: &Mapping) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_yaml::to_string(config)?;
    // Write a sibling file and rename it over, so a reader never sees half a kubeconfig.
    let tmp = path.with_extension(format!("minik-{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The list under `key`, created when missing.
fn list<'a>(config: &'a mut Mapping, key: &str) -> &'a mut Vec<Value> {
    let slot = config
        .entry(key.into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !slot.is_sequence() {
        *slot = Value::Sequence(Vec::new());
    }
    match slot {
        Value::Sequence(s) => s,
        _ => unreachable!("just made a sequence"),
    }
}

fn upsert(items: &mut Vec<Value>, name: &str, field: &str, body: Value) {
    let mut entry = Mapping::new();
    entry.insert("name".into(), name.into());
    entry.insert(field.into(), body);
    let entry = Value::Mapping(entry);
    match items
        .iter_mut()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
    {
        Some(slot) => *slot = entry,
        None => items.push(entry),
    }
}

/// Merges the single-context kubeconfig `source` (as `up` writes it) into the user's kubeconfig
/// at `target` under the name `context`, and makes it the current context.
pub fn merge(target: &Path, source: &Path, context: &str) -> anyhow::Result<()> {
    let src = load(source)?;
    let first = |key: &str, field: &str| -> anyhow::Result<Value> {
        src.get(key)
            .and_then(Value::as_sequence)
            .and_then(|s| s.first())
            .and_then(|e| e.get(field))
            .cloned()
            .with_context(|| format!("{}: no {key}[0].{field}", source.display()))
    };
    let cluster = first("clusters", "cluster")?;
    let user = first("users", "user")?;
    let mut cfg = load(target)?;
    upsert(list(&mut cfg, "clusters"), context, "cluster", cluster);
    upsert(list(&mut cfg, "users"), context, "user", user);
    let mut ctx = Mapping::new();
    ctx.insert("cluster".into(), context.into());
    ctx.insert("user".into(), context.into());
    upsert(
        list(&mut cfg, "contexts"),
        context,
        "context",
        Value::Mapping(ctx),
    );
    cfg.insert("current-context".into(), context.into());
    save(target, &cfg)
}

/// Removes the cluster, user and context named `context` from the kubeconfig at `target`; when
/// it was the current context, none is current afterwards (as `kind delete cluster` leaves it).
/// A missing file is fine. Returns whether the context was there.
pub fn remove(target: &Path, context: &str) -> anyhow::Result<bool> {
    if !target.exists() {
        return Ok(false);
    }
    let mut cfg = load(target)?;
    let (mut changed, mut had_context) = (false, false);
    for key in ["clusters", "users", "contexts"] {
        let entries = list(&mut cfg, key);
        let before = entries.len();
        entries.retain(|v| v.get("name").and_then(Value::as_str) != Some(context));
        changed |= entries.len() != before;
        had_context |= key == "contexts" && entries.len() != before;
    }
    if cfg.get("current-context").and_then(Value::as_str) == Some(context) {
        cfg.insert("current-context".into(), "".into());
        changed = true;
    }
    // Nothing of this profile's there (a `--no-kubeconfig` cluster): the file stays as it is.
    if changed {
        save(target, &cfg)?;
    }
    Ok(had_context)
}

/// Whether the kubeconfig at `target` has a context named `context`.
pub fn has_context(target: &Path, context: &str) -> bool {
    load(target).is_ok_and(|cfg| {
        cfg.get("contexts")
            .and_then(Value::as_sequence)
            .is_some_and(|s| {
                s.iter()
                    .any(|v| v.get("name").and_then(Value::as_str) == Some(context))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: minik\n  cluster: {server: 'https://127.0.0.1:6443', certificate-authority-data: Q0E=}\nusers:\n- name: kubernetes-admin\n  user: {client-certificate-data: Qw==, client-key-data: Sw==}\ncontexts:\n- name: kubernetes-admin@minik\n  context: {cluster: minik, user: kubernetes-admin}\ncurrent-context: kubernetes-admin@minik\n";

    #[test]
    fn merge_and_remove_keep_other_entries() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, SOURCE).unwrap();
        let target = dir.path().join("kube/config");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(
            &target,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster: {server: 'https://x'}\ncontexts:\n- name: other\n  context: {cluster: other, user: other}\nusers:\n- name: other\n  user: {token: t}\ncurrent-context: other\n",
        )
        .unwrap();
        merge(&target, &src, "minik-lab").unwrap();
        merge(&target, &src, "minik-lab").unwrap(); // idempotent
        let cfg = load(&target).unwrap();
        assert_eq!(cfg["current-context"], Value::from("minik-lab"));
        assert_eq!(cfg["contexts"].as_sequence().unwrap().len(), 2);
        assert_eq!(
            cfg["clusters"][1]["cluster"]["server"],
            Value::from("https://127.0.0.1:6443")
        );
        assert!(has_context(&target, "minik-lab"));
        assert!(remove(&target, "minik-lab").unwrap());
        let cfg = load(&target).unwrap();
        assert_eq!(cfg["current-context"], Value::from(""));
        for key in ["clusters", "users", "contexts"] {
            assert_eq!(cfg[key].as_sequence().unwrap().len(), 1, "{key}");
        }
        assert!(!has_context(&target, "minik-lab"));
        // A profile that never had a context there (`--no-kubeconfig`): nothing removed, the
        // file untouched.
        let before = std::fs::read(&target).unwrap();
        assert!(!remove(&target, "minik-other").unwrap());
        assert_eq!(std::fs::read(&target).unwrap(), before);
        assert!(!remove(&dir.path().join("missing"), "minik-lab").unwrap());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&target).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn merge_creates_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, SOURCE).unwrap();
        let target = dir.path().join("new/config");
        merge(&target, &src, "minik").unwrap();
        let cfg = load(&target).unwrap();
        assert_eq!(cfg["kind"], Value::from("Config"));
        assert_eq!(cfg["users"][0]["name"], Value::from("minik"));
    }
}
