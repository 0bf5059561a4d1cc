//! One supervised component: a static pod run as a local process, restarted when it exits.
//!
//! The restart rule is the kubelet's for `restartPolicy: Always`, scaled down for processes that
//! start in milliseconds: after an exit the component waits [`INITIAL_BACKOFF`], doubling with
//! each quick exit up to [`MAX_BACKOFF`]; a process that ran for [`BACKOFF_RESET`] starts the
//! count again.

use std::fs::OpenOptions;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::cluster::manifests::StaticPod;
use crate::cluster::profile::Profile;

use super::state::{ComponentState, ExitInfo, rfc3339};

pub const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
pub const MAX_BACKOFF: Duration = Duration::from_secs(20);
pub const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// A static pod and its process.
#[derive(Debug)]
pub struct Component {
    pub pod: StaticPod,
    pub child: Option<Child>,
    started: Option<(Instant, SystemTime)>,
    pub first_started: Option<SystemTime>,
    pub restarts: u32,
    backoff: Duration,
    /// While in back-off: when the next start may happen.
    pub next_start: Option<Instant>,
    pub last_exit: Option<ExitInfo>,
    pub last_error: Option<String>,
    /// A new version of the manifest, started once the old process has exited.
    pub replacement: Option<StaticPod>,
    /// The manifest file is gone: stop and forget the component.
    pub removed: bool,
    /// When SIGTERM was sent (for the SIGKILL after the grace period).
    pub terminating_since: Option<Instant>,
    pub ready: bool,
}

impl Component {
    pub fn new(pod: StaticPod) -> Component {
        Component {
            pod,
            child: None,
            started: None,
            first_started: None,
            restarts: 0,
            backoff: INITIAL_BACKOFF,
            next_start: None,
            last_exit: None,
            last_error: None,
            replacement: None,
            removed: false,
            terminating_since: None,
            ready: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.pod.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the back-off (if any) is over.
    pub fn may_start(&self, now: Instant) -> bool {
        self.child.is_none()
            && !self.removed
            && self.replacement.is_none()
            && self.next_start.is_none_or(|t| now >= t)
    }

    /// Starts the process: `program` with argv[0] = the manifest's command name, output
    /// appended to the component's log file. The child gets SIGTERM if the supervisor dies.
    pub fn start(&mut self, program: &Path, profile: &Profile) -> std::io::Result<()> {
        let log_path = profile.log_file(&self.pod.name);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        {
            use std::io::Write as _;
            let _ = writeln!(
                log,
                "---- minik supervisor: starting {} (restart {}) at {} ----",
                self.pod.name,
                self.restarts,
                rfc3339(SystemTime::now())
            );
        }
        let (argv0, args) = self
            .pod
            .argv
            .split_first()
            .ok_or_else(|| std::io::Error::other("the manifest has no command"))?;
        let mut cmd = Command::new(program);
        // The container's `env` entries with a value (valueFrom needs a kubelet: not here).
        let env = self
            .pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.env.clone())
            .unwrap_or_default();
        for e in env {
            if let Some(v) = e.value {
                cmd.env(e.name, v);
            }
        }
        cmd.arg0(argv0)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it only sets this process's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let now = SystemTime::now();
        self.started = Some((Instant::now(), now));
        self.first_started.get_or_insert(now);
        self.child = Some(child);
        self.next_start = None;
        self.ready = false;
        self.terminating_since = None;
        Ok(())
    }

    /// Records a start that failed (no such program, …) as an exit, so it is retried with
    /// back-off like a crash.
    pub fn start_failed(&mut self, error: String) {
        self.last_error = Some(error);
        self.schedule_restart(Duration::ZERO);
    }

    /// Checks whether the process exited; if so records how, and returns true.
    pub fn reap(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        let status = match child.try_wait() {
            Ok(Some(s)) => s,
            Ok(None) => return false,
            Err(e) => {
                self.last_error = Some(format!("waiting for the process: {e}"));
                return false;
            }
        };
        let (started_i, started_t) = self
            .started
            .take()
            .unwrap_or((Instant::now(), SystemTime::now()));
        let ran = started_i.elapsed();
        let (exit_code, signal) = match (status.code(), status.signal()) {
            (Some(c), _) => (c, None),
            (None, Some(s)) => (128 + s, Some(s)),
            (None, None) => (-1, None),
        };
        let reason = if exit_code == 0 { "Completed" } else { "Error" };
        self.last_exit = Some(ExitInfo {
            exit_code,
            signal,
            reason: reason.into(),
            started_at: rfc3339(started_t),
            finished_at: rfc3339(SystemTime::now()),
        });
        self.child = None;
        self.ready = false;
        let expected = self.terminating_since.take().is_some();
        if !expected {
            self.last_error = Some(match signal {
                Some(s) => format!("killed by signal {s} after {:.1}s", ran.as_secs_f64()),
                None => format!(
                    "exited with code {exit_code} after {:.1}s",
                    ran.as_secs_f64()
                ),
            });
            self.schedule_restart(ran);
        }
        true
    }

    /// Puts the component into back-off after a run of `ran`.
    fn schedule_restart(&mut self, ran: Duration) {
        if ran >= BACKOFF_RESET {
            self.backoff = INITIAL_BACKOFF;
        }
        self.restarts += 1;
        self.next_start = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Sends SIGTERM (once) and remembers when, for the SIGKILL after the grace period.
    pub fn terminate(&mut self) {
        if self.terminating_since.is_some() {
            return;
        }
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGTERM);
            self.terminating_since = Some(Instant::now());
        }
    }

    /// Kills the process now (SIGKILL), e.g. after a failed liveness probe; it is restarted
    /// like any exit.
    pub fn kill(&mut self, why: String) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGKILL);
            self.last_error = Some(why);
        }
    }

    /// SIGKILL when the grace period after SIGTERM is over.
    pub fn enforce_grace(&mut self, grace: Duration) {
        if let (Some(t), Some(pid)) = (self.terminating_since, self.pid())
            && t.elapsed() >= grace
        {
            signal(pid, libc::SIGKILL);
        }
    }

    /// Installs the replacement manifest as a new pod (restart count and start time anew).
    pub fn take_replacement(&mut self) -> bool {
        match self.replacement.take() {
            Some(pod) if self.child.is_none() => {
                *self = Component::new(pod);
                true
            }
            other => {
                self.replacement = other;
                false
            }
        }
    }

    /// The state as the state file shows it.
    pub fn view(&self, now: Instant) -> ComponentState {
        let state = if self.child.is_some() {
            "Running"
        } else if self.removed {
            "Stopped"
        } else if self.next_start.is_some() && self.restarts > 0 {
            "CrashLoopBackOff"
        } else {
            "Starting"
        };
        ComponentState {
            name: self.pod.name.clone(),
            manifest: self.pod.file.clone(),
            hash: self.pod.hash.clone(),
            state: state.into(),
            ready: self.child.is_some() && self.ready,
            pid: self.pid(),
            started_at: self.started.map(|(_, t)| rfc3339(t)),
            first_started_at: self.first_started.map(rfc3339),
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            backoff_ms: self
                .next_start
                .filter(|_| self.child.is_none())
                .map(|t| t.saturating_duration_since(now).as_millis() as u64),
            last_error: self.last_error.clone(),
            argv: self.pod.argv.clone(),
        }
    }
}

/// Sends a signal to a process (errors, e.g. an already-gone process, are ignored).
pub fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill only sends a signal.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(argv: &[&str]) -> StaticPod {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: t, namespace: kube-system}}\nspec:\n  containers:\n  - name: t\n    image: x\n    command: {argv:?}\n"
        );
        crate::cluster::manifests::parse("t.yaml", &text).unwrap()
    }

    fn wait_reaped(c: &mut Component) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !c.reap() {
            assert!(Instant::now() < deadline, "the process did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn crashes_back_off_and_double() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile {
            name: "t".into(),
            dir: dir.path().to_path_buf(),
        };
        profile.create_dirs().unwrap();
        let mut c = Component::new(pod(&["sh", "-c", "echo hello; exit 3"]));
        c.start(Path::new("/bin/sh"), &profile).unwrap();
        wait_reaped(&mut c);
        assert_eq!(c.restarts, 1);
        assert_eq!(c.last_exit.as_ref().unwrap().exit_code, 3);
        assert_eq!(c.view(Instant::now()).state, "CrashLoopBackOff");
        let first = c.next_start.unwrap();
        assert!(!c.may_start(Instant::now()));
        assert!(c.may_start(first));
        c.start(Path::new("/bin/sh"), &profile).unwrap();
        wait_reaped(&mut c);
        let second = c.next_start.unwrap().duration_since(Instant::now());
        assert!(second > INITIAL_BACKOFF, "{second:?}");
        let log = std::fs::read_to_string(profile.log_file("t")).unwrap();
        assert_eq!(log.matches("hello").count(), 2, "{log}");
    }

    #[test]
    fn a_kill_is_an_exit_with_128_plus_the_signal() {
        let dir = tempfile::tempdir().unwrap();
        let profile = Profile {
            name: "t".into(),
            dir: dir.path().to_path_buf(),
        };
        profile.create_dirs().unwrap();
        let mut c = Component::new(pod(&["sleep", "30"]));
        c.start(Path::new("/bin/sleep"), &profile).unwrap();
        c.kill("liveness".into());
        wait_reaped(&mut c);
        let exit = c.last_exit.clone().unwrap();
        assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
        // An expected stop is not a crash.
        c.start(Path::new("/bin/sleep"), &profile).unwrap();
        c.terminate();
        wait_reaped(&mut c);
        assert_eq!(c.restarts, 1);
        assert!(c.next_start.is_none() || c.restarts == 1);
    }
}
