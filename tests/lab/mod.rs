//! A lab for tests that drive `minik up`: a temp `MINIK_HOME` and `KUBECONFIG`, the minik binary
//! and the real kubectl against a profile's context; dropping the [`Lab`] runs `minik delete --all`
//! and kills anything left, also when the test fails.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const MINIK: &str = env!("CARGO_BIN_EXE_minik");

pub struct Lab {
    pub home: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Lab {
        Lab {
            home: tempfile::Builder::new()
                .prefix("minik-up-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn minik_home(&self) -> PathBuf {
        self.home.path().join("home")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.home.path().join("kube/config")
    }

    pub fn profile_dir(&self, name: &str) -> PathBuf {
        self.minik_home().join(name)
    }

    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("MINIK_HOME", self.minik_home())
            .env("KUBECONFIG", self.kubeconfig())
            .env_remove("MINIK_PROFILE")
            .env("NO_COLOR", "1");
        c
    }

    pub fn minik(&self, args: &[&str]) -> Output {
        self.cmd(MINIK).args(args).output().expect("run minik")
    }

    /// `minik ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.minik(args);
        assert!(
            out.status.success(),
            "minik {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn up(&self, name: &str) -> String {
        self.ok(&["up", "--name", name, "--wait", "60s"])
    }

    /// The real kubectl against a profile's context.
    pub fn kubectl(&self, context: &str, args: &[&str]) -> Output {
        self.cmd("kubectl")
            .arg("--context")
            .arg(context)
            .args(args)
            .output()
            .expect("the real kubectl must be installed (it is never skipped)")
    }

    /// `minik up --name NAME --config <file with CONFIG> --wait WAIT`, which must succeed.
    pub fn up_with_config(&self, name: &str, config: &str, wait: &str) -> String {
        let cfg = self.home.path().join(format!("{name}-cluster.yaml"));
        std::fs::write(&cfg, config).expect("write config");
        self.ok(&[
            "up",
            "--name",
            name,
            "--config",
            cfg.to_str().expect("utf-8 path"),
            "--wait",
            wait,
        ])
    }

    /// `kubectl ARGS -o json` against `context`, parsed; Null when it fails.
    pub fn kubectl_json(&self, context: &str, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.kubectl(context, &a);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    pub fn kubectl_ok(&self, context: &str, args: &[&str]) -> String {
        let out = self.kubectl(context, args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status(&self, name: &str) -> Value {
        let out = self.minik(&["status", "--name", name, "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status -o json: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    pub fn component_pid(&self, profile: &str, component: &str) -> Option<u64> {
        let st = self.status(profile);
        st["components"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == component)?
            .get("pid")?
            .as_u64()
    }

    /// Waits until `f` holds (polling), or fails the test with `what`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Processes whose command line mentions this lab's home (i.e. started for it).
    pub fn processes(&self) -> Vec<(u32, String)> {
        let needle = self.minik_home().display().to_string();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                out.push((pid, cmdline));
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.minik(&["delete", "--all"]);
        for (pid, _) in self.processes() {
            unsafe {
                libc_kill(pid as i32, 9);
            }
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    pub fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub fn comm(pid: u64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A node's taints as `key:effect`.
pub fn taints(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    format!(
                        "{}:{}",
                        t["key"].as_str().unwrap_or(""),
                        t["effect"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn pod_json(lab: &Lab, context: &str, name: &str) -> Value {
    let out = lab.kubectl_ok(
        context,
        &["get", "pod", "-n", "kube-system", name, "-o", "json"],
    );
    serde_json::from_str(&out).expect("pod JSON")
}
