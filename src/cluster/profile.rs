//! Profiles: one cluster's state folder, and where every file of it lives.
//!
//! A profile is a named cluster (`minik` by default; `minik up --name lab` makes another). Its
//! folder is `$MINIK_HOME/<profile>/`, where `MINIK_HOME` defaults to the XDG data dir
//! (`$XDG_DATA_HOME/minik`, else `~/.local/share/minik`):
//!
//! ```text
//! config.yaml        the resolved cluster config (ports, CIDRs, nodes, snapshots)
//! pki/               kubeadm's file names: ca.*, apiserver.*, etcd/ca.*, etcd/server.*, sa.* …
//! kubeconfig         the admin kubeconfig (context `minik` / `minik-<profile>`)
//! admin.conf …       a kubeconfig per identity, as kubeadm writes them
//! manifests/         static-pod manifests, one per control-plane component
//! etcd/              the store's database
//! backups/           snapshots (`minik etcd backup`)
//! logs/<c>.log       each component's log
//! run/               the supervisor's pid, state file and locks
//! ```

use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The default profile's name (and the kubeconfig context it gets).
pub const DEFAULT_PROFILE: &str = "minik";

/// Where all profiles live: `$MINIK_HOME`, else `$XDG_DATA_HOME/minik`, else
/// `~/.local/share/minik`.
pub fn home() -> anyhow::Result<PathBuf> {
    if let Some(h) = std::env::var_os("MINIK_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(x).join("minik"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/minik")),
        None => bail!(
            "neither MINIK_HOME nor HOME is set: set MINIK_HOME to a folder for minik's state"
        ),
    }
}

/// Checks a profile name: it becomes a folder name, a kubeconfig context and part of node names,
/// so it must be a DNS label (lowercase letters, digits and `-`, at most 63 characters).
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "invalid profile name {name:?}: use lowercase letters, digits and '-' (a DNS label, \
             at most 63 characters, starting and ending with a letter or digit)"
        );
    }
    Ok(())
}

/// One profile's state folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub dir: PathBuf,
}

impl Profile {
    /// The profile `name` under [`home`] (whether or not it exists yet).
    pub fn named(name: &str) -> anyhow::Result<Profile> {
        validate_name(name)?;
        Ok(Profile {
            name: name.to_string(),
            dir: home()?.join(name),
        })
    }

    /// The profile whose folder is `dir` (the supervisor is started with its folder).
    pub fn at(dir: &Path) -> anyhow::Result<Profile> {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} is not a profile folder", dir.display()))?;
        validate_name(name)?;
        Ok(Profile {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        })
    }

    /// Whether `minik up` has made this profile.
    pub fn exists(&self) -> bool {
        self.config_file().is_file()
    }

    /// The kubeconfig context (and cluster) name: `minik` for the default profile,
    /// `minik-<profile>` for the others.
    pub fn context_name(&self) -> String {
        if self.name == DEFAULT_PROFILE {
            DEFAULT_PROFILE.to_string()
        } else {
            format!("minik-{}", self.name)
        }
    }

    /// The control-plane node's name: the profile's name, as minikube names it.
    pub fn node_name(&self) -> String {
        self.name.clone()
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }
    pub fn pki_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }
    pub fn etcd_pki_dir(&self) -> PathBuf {
        self.dir.join("pki/etcd")
    }
    /// The admin kubeconfig the user's context is copied from.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    /// A kubeconfig per identity, kubeadm's names (`admin.conf`, `scheduler.conf`, …).
    pub fn conf(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.conf"))
    }
    pub fn manifests_dir(&self) -> PathBuf {
        self.dir.join("manifests")
    }
    pub fn etcd_data_dir(&self) -> PathBuf {
        self.dir.join("etcd")
    }
    pub fn backups_dir(&self) -> PathBuf {
        self.dir.join("backups")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn log_file(&self, component: &str) -> PathBuf {
        self.logs_dir().join(format!("{component}.log"))
    }
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    /// The supervisor's state file, which `status`, `up` and the dashboard read.
    pub fn state_file(&self) -> PathBuf {
        self.run_dir().join("state.json")
    }
    pub fn supervisor_pid_file(&self) -> PathBuf {
        self.run_dir().join("supervisor.pid")
    }

    /// Creates the folder and its subfolders (0700: it holds keys).
    pub fn create_dirs(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::DirBuilderExt as _;
        for d in [
            self.dir.clone(),
            self.pki_dir(),
            self.manifests_dir(),
            self.backups_dir(),
            self.logs_dir(),
            self.run_dir(),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(())
    }

    /// The pid of this profile's running supervisor, if one is running.
    pub fn supervisor_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.supervisor_pid_file()).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        // The supervisor holds its lock for as long as it lives: a stale pid file (a crash, a
        // reboot, a reused pid) is told apart by the lock being free.
        if pid_alive(pid) && Lock::is_held(&self.run_dir().join("supervisor.lock")) {
            Some(pid)
        } else {
            None
        }
    }
}

/// All profiles under [`home`], sorted by name.
pub fn list() -> anyhow::Result<Vec<Profile>> {
    let home = home()?;
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(&home) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if validate_name(&name).is_err() {
            continue;
        }
        let p = Profile {
            name,
            dir: e.path(),
        };
        if p.exists() || p.run_dir().is_dir() {
            out.push(p);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Whether a process with this pid exists.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// An exclusive lock on a file (flock), held until dropped. The file holds the holder's pid, so
/// a refused caller can say who holds it.
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
}

impl Lock {
    /// Takes the lock without waiting; `Ok(None)` when another process holds it.
    pub fn try_acquire(path: &Path) -> anyhow::Result<Option<Lock>> {
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(Some(Lock {
            file,
            path: path.to_path_buf(),
        }))
    }

    /// The pid written by the process holding the lock at `path`, if any.
    pub fn holder(path: &Path) -> Option<u32> {
        let mut s = String::new();
        File::open(path).ok()?.read_to_string(&mut s).ok()?;
        s.trim().parse().ok()
    }

    /// Whether some process holds the lock at `path`.
    pub fn is_held(path: &Path) -> bool {
        let Ok(file) = File::open(path) else {
            return false;
        };
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(_) => true,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for ok in ["minik", "lab-2", "a"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Lab", "a_b", "-a", "a-", "../x", &"x".repeat(64)] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains("invalid profile name"), "{e}");
        }
    }

    #[test]
    fn context_names_follow_kind() {
        let p = Profile {
            name: "minik".into(),
            dir: "/x/minik".into(),
        };
        assert_eq!(p.context_name(), "minik");
        let p = Profile {
            name: "lab".into(),
            dir: "/x/lab".into(),
        };
        assert_eq!(p.context_name(), "minik-lab");
        assert_eq!(p.log_file("etcd"), PathBuf::from("/x/lab/logs/etcd.log"));
    }

    #[test]
    fn a_lock_is_exclusive_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = Lock::try_acquire(&path).unwrap().expect("free");
        assert!(Lock::is_held(&path));
        assert_eq!(Lock::holder(&path), Some(std::process::id()));
        // flock locks belong to the open file: a second open in the same process conflicts too.
        assert!(Lock::try_acquire(&path).unwrap().is_none());
        drop(held);
        assert!(!Lock::is_held(&path));
        assert!(Lock::try_acquire(&path).unwrap().is_some());
    }
}
