//! The supervisor's state file (`<state>/run/state.json`): what `minik status`, `minik up` and
//! the dashboard read to learn how each component is doing. Written atomically on every change.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The supervisor as a whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorState {
    pub pid: u32,
    pub profile: String,
    /// `Starting`, `Running`, `Stopping` or `Stopped`.
    pub phase: String,
    pub started_at: String,
    pub apiserver_url: String,
    pub etcd_servers: String,
    pub node: String,
    pub components: Vec<ComponentState>,
    /// Manifests that could not be read: the file and why.
    #[serde(default)]
    pub manifest_errors: Vec<ManifestError>,
    /// Whether the node can run containers (Docker reachable), and why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<String>,
    /// Whether the mirror pods in the API server match the components (set by the mirror loop).
    #[serde(default)]
    pub mirrors_synced: bool,
    /// The last scheduled etcd snapshot, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot: Option<String>,
}

/// One supervised component (one static pod).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentState {
    pub name: String,
    pub manifest: String,
    pub hash: String,
    /// `Starting` (waiting for its dependencies or its first start), `Running`,
    /// `CrashLoopBackOff` (waiting to be restarted after an exit) or `Stopped`.
    pub state: String,
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When the current process started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When this component (its static pod) was first started by this supervisor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_started_at: Option<String>,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ExitInfo>,
    /// Back-off before the next start, in milliseconds, while in CrashLoopBackOff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub argv: Vec<String>,
}

/// How a process ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitInfo {
    /// The exit code, or 128 + the signal number as container runtimes report it.
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// `Completed`, `Error` or `Killed`.
    pub reason: String,
    pub started_at: String,
    pub finished_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestError {
    pub file: String,
    pub error: String,
}

impl SupervisorState {
    /// Reads the state file.
    pub fn read(path: &Path) -> anyhow::Result<SupervisorState> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    /// Writes the state file atomically (a temporary file renamed over it).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }

    /// Whether every component runs and is ready.
    pub fn all_ready(&self) -> bool {
        !self.components.is_empty()
            && self
                .components
                .iter()
                .all(|c| c.ready && c.state == "Running")
    }

    pub fn component(&self, name: &str) -> Option<&ComponentState> {
        self.components.iter().find(|c| c.name == name)
    }
}

/// Now as RFC 3339 (seconds, UTC), as Kubernetes writes times.
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// A time as RFC 3339 (seconds, UTC).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    jiff::Timestamp::from_second(secs)
        .map(|ts| ts.to_string())
        .unwrap_or_default()
}

/// Seconds since an RFC 3339 time (0 when it can't be read).
pub fn age_secs(t: &str) -> u64 {
    let Ok(ts) = t.parse::<jiff::Timestamp>() else {
        return 0;
    };
    let now = jiff::Timestamp::now();
    u64::try_from(now.as_second() - ts.as_second()).unwrap_or(0)
}

/// A duration as kubectl prints ages: `45s`, `3m12s`, `5h`, `2d3h`.
pub fn human_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_ages() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert!(age_secs(&rfc3339(t)) > 86_400);
        assert_eq!(age_secs("nonsense"), 0);
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(192), "3m12s");
        assert_eq!(human_age(7300), "2h");
        assert_eq!(human_age(183_600), "2d3h");
    }

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let s = SupervisorState {
            pid: 7,
            components: vec![ComponentState {
                name: "etcd".into(),
                state: "Running".into(),
                ready: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        s.write(&path).unwrap();
        assert_eq!(SupervisorState::read(&path).unwrap(), s);
        assert!(s.all_ready());
    }
}
