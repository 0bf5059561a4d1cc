//! `minik up` and friends, with real processes: the supervisor, the store and the API server as
//! `minik up` starts them, checked with the real kubectl and `ps`/`/proc`.
//!
//! Every test has its own `MINIK_HOME` and `KUBECONFIG` in a temp dir and profiles on free
//! ports; dropping the [`Lab`] runs `minik delete --all` and kills anything left, also when the
//! test fails.

use std::io::Write as _;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

mod lab;

use lab::{Lab, MINIK, comm, libc_kill, pod_json};

#[test]
fn up_runs_the_control_plane_as_static_pods() {
    let lab = Lab::new();
    let out = lab.up("one");
    assert!(out.contains("Done!"), "{out}");
    let ctx = "minik-one";

    // The real kubectl sees the control plane as Running and Ready pods in kube-system.
    let pods: Value = serde_json::from_str(
        &lab.kubectl_ok(ctx, &["get", "pods", "-n", "kube-system", "-o", "json"]),
    )
    .unwrap();
    let mut names: Vec<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "etcd-one",
            "kube-apiserver-one",
            "kube-controller-manager-one",
            "kube-scheduler-one"
        ]
    );
    for p in pods["items"].as_array().unwrap() {
        assert_eq!(p["status"]["phase"], "Running", "{p}");
        assert_eq!(p["status"]["containerStatuses"][0]["ready"], true, "{p}");
        assert_eq!(p["status"]["hostIP"], "127.0.0.1");
        assert_eq!(p["spec"]["nodeName"], "one");
        assert!(p["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string());
        assert_eq!(p["metadata"]["labels"]["tier"], "control-plane");
    }
    let table = lab.kubectl_ok(ctx, &["get", "pods", "-n", "kube-system"]);
    assert!(table.contains("1/1     Running"), "{table}");

    // cluster-info prints the control plane's URL.
    let st = lab.status("one");
    let url = st["apiserver"].as_str().unwrap().to_string();
    let info = lab.kubectl_ok(ctx, &["cluster-info"]);
    assert!(
        info.contains(&format!("Kubernetes control plane is running at {url}")),
        "{info}"
    );
    // What a kubeadm cluster holds at start.
    let ns = lab.kubectl_ok(ctx, &["get", "ns", "-o", "name"]);
    for want in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&format!("namespace/{want}\n")), "{ns}");
    }
    lab.kubectl_ok(ctx, &["get", "service", "kubernetes"]);
    lab.kubectl_ok(ctx, &["get", "endpoints", "kubernetes"]);
    // The root CA publisher runs with kubeadm's --root-ca-file: every namespace gets the
    // profile's CA as the configMap kube-root-ca.crt.
    let ca = std::fs::read_to_string(lab.profile_dir("one").join("pki/ca.crt")).unwrap();
    lab.wait_for(
        "kube-root-ca.crt in default",
        Duration::from_secs(30),
        || {
            let out = lab.kubectl(
                ctx,
                &[
                    "get",
                    "configmap",
                    "kube-root-ca.crt",
                    "-o",
                    "jsonpath={.data.ca\\.crt}",
                ],
            );
            out.status.success() && String::from_utf8_lossy(&out.stdout) == ca
        },
    );

    // ps shows the components under their Kubernetes names.
    let procs = lab.processes();
    for name in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        let pid = lab.component_pid("one", name).expect("pid");
        // The kernel keeps 15 bytes of a process name: `kube-controller`, as for the real one.
        assert_eq!(comm(pid), &name[..name.len().min(15)]);
        assert!(
            procs
                .iter()
                .any(|(p, cmd)| u64::from(*p) == pid && cmd.starts_with(&format!("{name} --"))),
            "{procs:?}"
        );
    }
    assert_eq!(st["healthy"], true);
    assert!(lab.minik(&["status", "--name", "one"]).status.success());

    // Manifests in kubeadm's shape.
    for name in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        let path = lab
            .profile_dir("one")
            .join(format!("manifests/{name}.yaml"));
        let m: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(m["kind"], "Pod");
        assert_eq!(m["metadata"]["namespace"], "kube-system");
        assert_eq!(m["metadata"]["labels"]["component"], name);
        assert_eq!(m["spec"]["hostNetwork"], true);
        assert_eq!(m["spec"]["priorityClassName"], "system-node-critical");
        assert_eq!(m["spec"]["containers"][0]["command"][0], name);
    }
    // Key files are private.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(lab.profile_dir("one").join("pki/ca.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // A second up changes nothing.
    let again = lab.up("one");
    assert!(again.contains("already running"), "{again}");
    assert_eq!(
        lab.component_pid("one", "kube-apiserver"),
        st["components"][1]["pid"].as_u64()
    );

    // logs, profile list, kubectl pass-through.
    let logs = lab.ok(&["logs", "kube-apiserver", "--name", "one", "--tail", "50"]);
    assert!(
        logs.contains("minik supervisor: starting kube-apiserver"),
        "{logs}"
    );
    let list = lab.ok(&["profile", "list"]);
    assert!(list.contains("one") && list.contains("Running"), "{list}");
    let via = lab
        .cmd(MINIK)
        .args([
            "kubectl",
            "--name",
            "one",
            "get",
            "ns",
            "kube-system",
            "-o",
            "name",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&via.stdout).trim(),
        "namespace/kube-system"
    );
}

#[test]
fn a_killed_component_is_restarted_and_nothing_is_lost() {
    let lab = Lab::new();
    lab.up("crash");
    let ctx = "minik-crash";
    lab.kubectl_ok(ctx, &["create", "namespace", "keep"]);
    lab.kubectl_ok(
        ctx,
        &[
            "create",
            "configmap",
            "c1",
            "-n",
            "keep",
            "--from-literal=k=v",
        ],
    );
    for name in [
        "kube-apiserver",
        "etcd",
        "kube-scheduler",
        "kube-controller-manager",
    ] {
        let old = lab.component_pid("crash", name).expect("running");
        let t0 = Instant::now();
        unsafe {
            libc_kill(old as i32, 9);
        }
        // Restarted within a second: a new process runs under the component's name.
        lab.wait_for(
            &format!("{name} to restart"),
            Duration::from_secs(10),
            || {
                lab.component_pid("crash", name)
                    .is_some_and(|p| p != old && comm(p) == name[..name.len().min(15)])
            },
        );
        let restarted = t0.elapsed();
        assert!(
            restarted < Duration::from_secs(1),
            "{name} took {restarted:?} to restart"
        );
        // The mirror pod counts the restart.
        let pod = format!("{name}-crash");
        lab.wait_for(
            &format!("{pod} RESTARTS to go up"),
            Duration::from_secs(30),
            || {
                let out = lab.kubectl(
                    ctx,
                    &["get", "pod", "-n", "kube-system", &pod, "-o", "json"],
                );
                serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|p| {
                    p["status"]["containerStatuses"][0]["restartCount"] == 1
                        && p["status"]["containerStatuses"][0]["ready"] == true
                })
            },
        );
        let p = pod_json(&lab, ctx, &pod);
        assert_eq!(
            p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 137,
            "{p}"
        );
    }
    // No object lost.
    let cm = lab.kubectl_ok(
        ctx,
        &[
            "get",
            "configmap",
            "c1",
            "-n",
            "keep",
            "-o",
            "jsonpath={.data.k}",
        ],
    );
    assert_eq!(cm, "v");
    let st = lab.status("crash");
    assert_eq!(st["healthy"], true, "{st}");
    assert_eq!(st["components"][0]["restarts"], 1);
}

#[test]
fn down_up_and_backup_restore_keep_the_objects() {
    let lab = Lab::new();
    lab.up("data");
    let ctx = "minik-data";
    lab.kubectl_ok(ctx, &["create", "namespace", "team"]);
    lab.kubectl_ok(
        ctx,
        &[
            "create",
            "configmap",
            "settings",
            "-n",
            "team",
            "--from-literal=a=1",
        ],
    );
    lab.kubectl_ok(
        ctx,
        &[
            "create",
            "secret",
            "generic",
            "s",
            "-n",
            "team",
            "--from-literal=p=x",
        ],
    );

    let down = lab.ok(&["down", "--name", "data"]);
    assert!(down.contains("Stopped"), "{down}");
    assert!(lab.processes().is_empty(), "{:?}", lab.processes());
    assert!(!lab.minik(&["status", "--name", "data"]).status.success());
    assert_eq!(lab.status("data")["state"], "Stopped");

    let up = lab.up("data");
    assert!(up.contains("Resuming"), "{up}");
    assert_eq!(
        lab.kubectl_ok(
            ctx,
            &[
                "get",
                "configmap",
                "settings",
                "-n",
                "team",
                "-o",
                "jsonpath={.data.a}"
            ]
        ),
        "1"
    );

    let out = lab.ok(&["etcd", "backup", "--name", "data"]);
    assert!(out.contains("Snapshot saved to"), "{out}");
    let listed = lab.ok(&["etcd", "backups", "--name", "data"]);
    assert!(listed.contains(".snap"), "{listed}");
    let snap = std::fs::read_dir(lab.profile_dir("data").join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "snap"))
        .expect("a snapshot file");

    lab.kubectl_ok(ctx, &["delete", "configmap", "settings", "-n", "team"]);
    // The namespace controller empties the namespace and removes it.
    lab.kubectl_ok(ctx, &["delete", "namespace", "team", "--timeout=60s"]);
    assert!(!lab.kubectl(ctx, &["get", "ns", "team"]).status.success());

    let out = lab.ok(&["etcd", "restore", snap.to_str().unwrap(), "--name", "data"]);
    assert!(out.contains("Restored"), "{out}");
    assert_eq!(
        lab.kubectl_ok(
            ctx,
            &["get", "ns", "team", "-o", "jsonpath={.status.phase}"]
        ),
        "Active"
    );
    assert_eq!(
        lab.kubectl_ok(
            ctx,
            &[
                "get",
                "configmap",
                "settings",
                "-n",
                "team",
                "-o",
                "jsonpath={.data.a}"
            ]
        ),
        "1"
    );
    lab.kubectl_ok(ctx, &["get", "secret", "s", "-n", "team"]);
    let pods = lab.kubectl_ok(ctx, &["get", "pods", "-n", "kube-system"]);
    assert_eq!(pods.matches("Running").count(), 4, "{pods}");
}

#[test]
fn two_profiles_side_by_side_and_delete_all_leaves_nothing() {
    let lab = Lab::new();
    std::fs::create_dir_all(lab.kubeconfig().parent().unwrap()).unwrap();
    std::fs::write(
        lab.kubeconfig(),
        "apiVersion: v1\nkind: Config\nclusters:\n- name: mine\n  cluster: {server: 'https://10.0.0.1'}\nusers:\n- name: mine\n  user: {token: t}\ncontexts:\n- name: mine\n  context: {cluster: mine, user: mine}\ncurrent-context: mine\n",
    )
    .unwrap();
    lab.up("left");
    lab.up("right");
    let (a, b) = (lab.status("left"), lab.status("right"));
    assert_ne!(a["apiserver"], b["apiserver"]);
    assert_ne!(a["etcd"], b["etcd"]);
    lab.kubectl_ok("minik-left", &["create", "namespace", "only-left"]);
    assert!(
        !lab.kubectl("minik-right", &["get", "namespace", "only-left"])
            .status
            .success()
    );
    let kc = std::fs::read_to_string(lab.kubeconfig()).unwrap();
    assert!(kc.contains("minik-left") && kc.contains("minik-right") && kc.contains("name: mine"));
    assert!(kc.contains("current-context: minik-right"), "{kc}");

    let out = lab.ok(&["delete", "--all"]);
    assert!(
        out.contains("\"left\"") && out.contains("\"right\""),
        "{out}"
    );
    assert!(lab.processes().is_empty(), "{:?}", lab.processes());
    let left: Vec<_> = std::fs::read_dir(lab.minik_home())
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let kc = std::fs::read_to_string(lab.kubeconfig()).unwrap();
    assert!(!kc.contains("minik-"), "{kc}");
    assert!(kc.contains("name: mine"), "{kc}");
}

#[test]
fn refusals_name_what_is_wrong() {
    let lab = Lab::new();
    // A port in use: the error names the port and who holds it.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let out = lab.minik(&["up", "--name", "busy", "--apiserver-port", &port]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "port {port} is in use by pid {}",
            std::process::id()
        )),
        "{err}"
    );
    assert!(lab.processes().is_empty());

    // A bad config file: file, line and field.
    let cfg = lab.home.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: minik.dev/v1alpha1\nkind: Cluster\nnetworking:\n  serviceSubnet: 10.96.0.0\n",
    )
    .unwrap();
    let out = lab.minik(&["up", "--name", "cfg", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:4: networking.serviceSubnet: invalid value"),
        "{err}"
    );
    std::fs::write(
        &cfg,
        "apiVersion: minik.dev/v1alpha1\nkind: Cluster\nnodez: 2\n",
    )
    .unwrap();
    let err = String::from_utf8_lossy(
        &lab.minik(&["up", "--name", "cfg", "--config", cfg.to_str().unwrap()])
            .stderr,
    )
    .into_owned();
    assert!(
        err.contains("bad.yaml:3:") && err.contains("unknown field `nodez`"),
        "{err}"
    );

    // Two `up`s at once: one starts the cluster, the other is refused or finds it running;
    // never two supervisors.
    let spawn = || {
        lab.cmd(MINIK)
            .args(["up", "--name", "race", "--wait", "60s"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (c1, c2) = (spawn(), spawn());
    let (o1, o2) = (
        c1.wait_with_output().unwrap(),
        c2.wait_with_output().unwrap(),
    );
    let text = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let (t1, t2) = (text(&o1), text(&o2));
    assert!(t1.contains("Done!") || t2.contains("Done!"), "{t1}\n{t2}");
    let other = if t1.contains("Done!") { &t2 } else { &t1 };
    assert!(
        other.contains("is in progress") || other.contains("already"),
        "{other}"
    );
    let supervisors = lab
        .processes()
        .into_iter()
        .filter(|(_, c)| c.starts_with("minik-supervisor"))
        .count();
    assert_eq!(supervisors, 1);
    // While an `up` holds the lock, another is refused cleanly.
    let lock = lab.profile_dir("race").join("run/up.lock");
    let holder = lab
        .cmd("flock")
        .arg("--no-fork")
        .arg(&lock)
        .args(["sleep", "30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("flock (util-linux)");
    std::thread::sleep(Duration::from_millis(300));
    let out = lab.minik(&["up", "--name", "race"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is in progress"),
        "{err}"
    );
    let mut holder = holder;
    let _ = holder.kill();
    let _ = holder.wait();

    // A corrupted manifest is reported with its location; everything keeps running.
    let manifest = lab
        .profile_dir("race")
        .join("manifests/kube-apiserver.yaml");
    let good = std::fs::read_to_string(&manifest).unwrap();
    let apiserver = lab.component_pid("race", "kube-apiserver").unwrap();
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [oops\n",
    )
    .unwrap();
    lab.wait_for(
        "the manifest error in status",
        Duration::from_secs(10),
        || lab.status("race")["manifestErrors"][0]["file"] == "kube-apiserver.yaml",
    );
    let st = lab.status("race");
    let e = st["manifestErrors"][0]["error"].as_str().unwrap();
    assert!(
        e.starts_with("kube-apiserver.yaml:") && e.contains("at line 4 column 9"),
        "{e}"
    );
    assert!(!lab.minik(&["status", "--name", "race"]).status.success());
    assert_eq!(lab.component_pid("race", "kube-apiserver"), Some(apiserver));
    lab.kubectl_ok("minik-race", &["get", "ns"]);

    // An edited manifest restarts its component with the new flags.
    std::fs::write(
        &manifest,
        good.replace(
            "--service-node-port-range=30000-32767",
            "--service-node-port-range=31000-31999",
        ),
    )
    .unwrap();
    lab.wait_for(
        "kube-apiserver to restart with the new flags",
        Duration::from_secs(30),
        || {
            lab.component_pid("race", "kube-apiserver")
                .is_some_and(|p| {
                    p != apiserver
                        && std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                            .is_ok_and(|c| c.contains("--service-node-port-range=31000-31999"))
                })
                && lab.status("race")["healthy"] == true
        },
    );
    lab.wait_for("the new mirror pod", Duration::from_secs(30), || {
        let out = lab.kubectl(
            "minik-race",
            &[
                "get",
                "pod",
                "-n",
                "kube-system",
                "kube-apiserver-race",
                "-o",
                "json",
            ],
        );
        serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|p| {
            p["spec"]["containers"][0]["command"]
                .as_array()
                .is_some_and(|c| {
                    c.iter()
                        .any(|a| a == "--service-node-port-range=31000-31999")
                })
                && p["status"]["containerStatuses"][0]["ready"] == true
        })
    });
    let out = lab.kubectl(
        "minik-race",
        &[
            "create",
            "service",
            "nodeport",
            "np",
            "--tcp=80:80",
            "--node-port=30500",
        ],
    );
    assert!(!out.status.success(), "the new range is in force");

    // A new manifest is a new static pod; removing it stops it.
    let extra = lab.profile_dir("race").join("manifests/sleeper.yaml");
    let mut f = std::fs::File::create(&extra).unwrap();
    writeln!(f, "apiVersion: v1\nkind: Pod\nmetadata: {{name: sleeper, namespace: kube-system}}\nspec:\n  containers:\n  - name: sleeper\n    image: busybox\n    command: [/bin/sleep, '1000']").unwrap();
    drop(f);
    lab.wait_for("the sleeper's mirror pod", Duration::from_secs(30), || {
        lab.kubectl(
            "minik-race",
            &["get", "pod", "-n", "kube-system", "sleeper-race"],
        )
        .status
        .success()
    });
    let sleeper = lab
        .component_pid("race", "sleeper")
        .expect("the sleeper runs");
    assert_eq!(comm(sleeper), "sleep");
    std::fs::remove_file(&extra).unwrap();
    lab.wait_for("the sleeper to stop", Duration::from_secs(30), || {
        comm(sleeper) != "sleep"
            && !lab
                .kubectl(
                    "minik-race",
                    &["get", "pod", "-n", "kube-system", "sleeper-race"],
                )
                .status
                .success()
    });
    drop(busy);
}

#[test]
fn without_docker_the_control_plane_still_comes_up() {
    let lab = Lab::new();
    let out = lab
        .cmd(MINIK)
        .args(["up", "--name", "nodocker", "--wait", "60s"])
        .env(
            "DOCKER_HOST",
            format!(
                "unix://{}",
                lab.home.path().join("no-docker.sock").display()
            ),
        )
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("nodes cannot run containers"), "{text}");
    assert!(text.contains("Done!"), "{text}");
    let st = lab.status("nodocker");
    assert!(
        st["docker"]
            .as_str()
            .is_some_and(|d| d.contains("no Docker engine")),
        "{st}"
    );
    assert_eq!(st["healthy"], true);
}

#[test]
fn an_external_etcd_replaces_the_embedded_store() {
    let etcd = common::Server::real_etcd(None);
    let lab = Lab::new();
    let out = lab.ok(&[
        "up",
        "--name",
        "ext",
        "--etcd-servers",
        &etcd.endpoint(),
        "--wait",
        "60s",
    ]);
    assert!(out.contains("Done!"), "{out}");
    // No local store: no etcd manifest, no etcd process, no etcd mirror pod.
    assert!(!lab.profile_dir("ext").join("manifests/etcd.yaml").exists());
    let st = lab.status("ext");
    assert_eq!(st["etcd"], etcd.endpoint().as_str());
    // The control plane without etcd, and the node's kubelet.
    let names: Vec<&str> = st["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet-ext"
        ],
        "{st}"
    );
    let pods = lab.kubectl_ok(
        "minik-ext",
        &["get", "pods", "-n", "kube-system", "-o", "name"],
    );
    assert_eq!(
        pods.trim(),
        "pod/kube-apiserver-ext\npod/kube-controller-manager-ext\npod/kube-scheduler-ext"
    );
    // The objects are in the real etcd, under Kubernetes' key layout.
    lab.kubectl_ok("minik-ext", &["create", "namespace", "outside"]);
    let keys = common::etcdctl(
        &etcd,
        &["get", "/registry/namespaces/", "--prefix", "--keys-only"],
        None,
    );
    let keys = String::from_utf8_lossy(&keys.stdout);
    assert!(keys.contains("/registry/namespaces/outside"), "{keys}");
    // A backup of an external etcd is its owners' job.
    let out = lab.minik(&["etcd", "backup", "--name", "ext"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("external etcd"));
}

#[test]
fn scheduled_snapshots_keep_the_newest() {
    let lab = Lab::new();
    let cfg = lab.home.path().join("snap.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: minik.dev/v1alpha1\nkind: Cluster\netcd:\n  snapshots: {interval: 1s, keep: 2}\n",
    )
    .unwrap();
    lab.ok(&[
        "up",
        "--name",
        "snaps",
        "--config",
        cfg.to_str().unwrap(),
        "--wait",
        "60s",
    ]);
    let scheduled = || -> Vec<String> {
        std::fs::read_dir(lab.profile_dir("snaps").join("backups"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.starts_with("scheduled-") && n.ends_with(".snap"))
                    .collect()
            })
            .unwrap_or_default()
    };
    lab.wait_for("two scheduled snapshots", Duration::from_secs(30), || {
        scheduled().len() == 2
    });
    // More keep coming, and only the newest two stay.
    let first = scheduled();
    lab.wait_for("a newer snapshot", Duration::from_secs(30), || {
        let now = scheduled();
        now.len() <= 2 && now.iter().any(|n| !first.contains(n))
    });
    let listed = lab.ok(&["etcd", "backups", "--name", "snaps"]);
    assert!(listed.contains("scheduled-"), "{listed}");
}
