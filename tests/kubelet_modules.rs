//! The kubelet's volume, environment and probe modules against real Docker containers: volumes
//! mounted with `PodVolumes::mounts_for` are read from inside a `minik/busybox:1.0` container
//! (contents, modes, an atomic update seen by the running container, a non-root user reading
//! through fsGroup), and probes run against `minik/echo:1.0` and busybox containers.
//!
//! Needs the Docker daemon and the images (`minik image build`); every container is named
//! `minik-test-kmod-…` and removed by a drop guard, also when a test fails.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestStatus};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
    EmptyDirVolumeSource, ExecAction, HTTPGetAction, KeyToPath, LifecycleHandler,
    ObjectFieldSelector, Pod, PodSecurityContext, PodSpec, Probe, Secret, SecretVolumeSource,
    Service, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use minik::kubelet::docker::Engine;
use minik::kubelet::env::{ApiSource, SourceError};
use minik::kubelet::prober::{
    ContainerProbes, DockerProbeRunner, HandlerTarget, ProbeResult, exec_probe, http_probe,
    run_handler, tcp_probe,
};
use minik::kubelet::volumes::VolumeManager;

mod lab;

const BUSYBOX: &str = "minik/busybox:1.0";
const ECHO: &str = "minik/echo:1.0";

/// Removes the containers it was given when dropped.
struct Guard {
    docker: Docker,
    ids: Mutex<Vec<String>>,
}

impl Guard {
    fn new(docker: &Docker) -> Guard {
        Guard {
            docker: docker.clone(),
            ids: Mutex::new(Vec::new()),
        }
    }

    /// Creates and starts a container; returns its id.
    async fn run(
        &self,
        tag: &str,
        image: &str,
        cmd: Option<Vec<&str>>,
        user: Option<&str>,
        mounts: Vec<Mount>,
        group_add: Vec<String>,
    ) -> String {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("minik-test-kmod-{tag}-{}-{seq}-{nanos}", std::process::id());
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: cmd.map(|c| c.into_iter().map(str::to_string).collect()),
            user: user.map(str::to_string),
            host_config: Some(HostConfig {
                mounts: Some(mounts),
                group_add: Some(group_add),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .unwrap_or_else(|e| {
                panic!("create {name} from {image} (run `minik image build`?): {e}")
            });
        self.ids.lock().expect("lock").push(created.id.clone());
        self.docker
            .start_container(&created.id, None)
            .await
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        created.id
    }

    async fn ip(&self, id: &str) -> String {
        let info = self
            .docker
            .inspect_container(id, None)
            .await
            .expect("inspect");
        info.network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.get("bridge").and_then(|b| b.ip_address.clone()))
            .filter(|ip| !ip.is_empty())
            .expect("the container has an IP on the default bridge")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.ids.lock().unwrap_or_else(|e| e.into_inner()));
        if ids.is_empty() {
            return;
        }
        let docker = self.docker.clone();
        // Drop may run inside the test's runtime: remove from a thread with its own.
        let t = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                for id in ids {
                    let _ = docker
                        .remove_container(
                            &id,
                            Some(RemoveContainerOptions {
                                force: true,
                                v: true,
                                ..Default::default()
                            }),
                        )
                        .await;
                }
            });
        });
        let _ = t.join();
    }
}

async fn engine() -> Engine {
    let engine = Engine::connect()
        .await
        .expect("the Docker daemon must be running");
    // The images come from `minik image build` (idempotent, locked against parallel builds).
    let mut missing = false;
    for image in [BUSYBOX, ECHO] {
        missing |= engine.docker.inspect_image(image).await.is_err();
    }
    if missing {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_minik"))
            .args(["image", "build"])
            .output()
            .expect("run minik image build");
        assert!(
            out.status.success(),
            "minik image build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    engine
}

/// `docker exec` as `user`: (exit code, output).
async fn exec_as(docker: &Docker, id: &str, user: &str, cmd: &str) -> (i64, String) {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    use futures_util::StreamExt;
    let ex = docker
        .create_exec(
            id,
            CreateExecOptions {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                user: Some(user.to_string()),
                cmd: Some(vec!["sh".to_string(), "-c".to_string(), cmd.to_string()]),
                ..Default::default()
            },
        )
        .await
        .expect("create exec");
    let mut out = String::new();
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&ex.id, None).await.expect("start exec")
    {
        while let Some(Ok(chunk)) = output.next().await {
            out.push_str(&chunk.to_string());
        }
    }
    let mut code = -1;
    for _ in 0..100 {
        let info = docker.inspect_exec(&ex.id).await.expect("inspect exec");
        if info.running != Some(true) {
            code = info.exit_code.unwrap_or(-1);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (code, out)
}

#[derive(Default)]
struct Objects {
    config_maps: Mutex<BTreeMap<String, ConfigMap>>,
    secrets: Mutex<BTreeMap<String, Secret>>,
    tokens: Mutex<u32>,
}

impl Objects {
    fn put_config_map(&self, name: &str, data: &[(&str, &str)]) {
        let cm = ConfigMap {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        self.config_maps
            .lock()
            .expect("lock")
            .insert(name.into(), cm);
    }
}

impl ApiSource for Objects {
    async fn config_map(&self, _ns: &str, name: &str) -> Result<Option<ConfigMap>, SourceError> {
        Ok(self.config_maps.lock().expect("lock").get(name).cloned())
    }
    async fn secret(&self, _ns: &str, name: &str) -> Result<Option<Secret>, SourceError> {
        Ok(self.secrets.lock().expect("lock").get(name).cloned())
    }
    async fn services(&self, _ns: &str) -> Result<Vec<Service>, SourceError> {
        Ok(Vec::new())
    }
    async fn request_token(
        &self,
        _ns: &str,
        sa: &str,
        req: &TokenRequest,
    ) -> Result<TokenRequest, SourceError> {
        let mut n = self.tokens.lock().expect("lock");
        *n += 1;
        let mut out = req.clone();
        let exp = jiff::Timestamp::now().as_second() + req.spec.expiration_seconds.unwrap_or(3600);
        out.status = Some(TokenRequestStatus {
            token: format!("{sa}-token-{n}"),
            expiration_timestamp: Time(
                jiff::Timestamp::from_second(exp).map_err(|e| SourceError(e.to_string()))?,
            ),
        });
        Ok(out)
    }
}

fn volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, sub: Option<&str>) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        sub_path: sub.map(str::to_string),
        ..Default::default()
    }
}

#[tokio::test]
async fn volumes_seen_from_inside_a_container() {
    let engine = engine().await;
    let guard = Guard::new(&engine.docker);
    let root = tempfile::Builder::new()
        .prefix("minik-test-kmod-")
        .tempdir()
        .expect("tmp");
    let objects = Objects::default();
    objects.put_config_map("app", &[("app.conf", "level=debug\n"), ("extra", "x")]);
    objects.secrets.lock().expect("lock").insert(
        "creds".into(),
        Secret {
            data: Some(
                [("password".to_string(), ByteString(b"s3cret".to_vec()))]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        },
    );

    let mut cfg = volume("cfg");
    cfg.config_map = Some(ConfigMapVolumeSource {
        name: "app".into(),
        items: Some(vec![KeyToPath {
            key: "app.conf".into(),
            path: "app.conf".into(),
            mode: Some(0o400),
        }]),
        ..Default::default()
    });
    let mut sec = volume("sec");
    sec.secret = Some(SecretVolumeSource {
        secret_name: Some("creds".into()),
        default_mode: Some(0o400),
        ..Default::default()
    });
    let mut info = volume("info");
    info.downward_api = Some(DownwardAPIVolumeSource {
        items: Some(vec![DownwardAPIVolumeFile {
            path: "labels".into(),
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: "metadata.labels".into(),
            }),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let mut scratch = volume("scratch");
    scratch.empty_dir = Some(EmptyDirVolumeSource::default());
    let mut mem = volume("mem");
    mem.empty_dir = Some(EmptyDirVolumeSource {
        medium: Some("Memory".into()),
        size_limit: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
            "16Mi".into(),
        )),
    });
    let container = Container {
        name: "app".into(),
        volume_mounts: Some(vec![
            mount("cfg", "/etc/app", None),
            mount("cfg", "/app.conf", Some("app.conf")),
            mount("sec", "/secrets", None),
            mount("info", "/etc/podinfo", None),
            mount("scratch", "/scratch", None),
            mount("mem", "/mem", None),
        ]),
        ..Default::default()
    };
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("web-0".into()),
            namespace: Some("default".into()),
            uid: Some(format!("kmod-{}", std::process::id())),
            labels: Some(
                [("app", "web"), ("tier", "front")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container.clone()],
            volumes: Some(vec![cfg, sec, info, scratch, mem]),
            security_context: Some(PodSecurityContext {
                fs_group: Some(2000),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let vm = VolumeManager::new(root.path(), objects);
    let volumes = vm.setup(&pod).await.expect("setup");
    let mounts = volumes.mounts_for(&container).expect("mounts");
    // As the kubelet runs a container with runAsUser 1000 and the pod's fsGroup as a
    // supplementary group.
    let id = guard
        .run(
            "vol",
            BUSYBOX,
            Some(vec!["sleep", "3600"]),
            Some("1000:3000"),
            mounts,
            vec!["2000".into()],
        )
        .await;
    let d = &engine.docker;

    let (code, out) = exec_as(d, &id, "1000:3000", "cat /etc/app/app.conf /app.conf").await;
    assert_eq!((code, out.as_str()), (0, "level=debug\nlevel=debug\n"));
    let (_, out) = exec_as(
        d,
        &id,
        "0",
        "stat -L -c '%a %g' /etc/app/app.conf /secrets/password",
    )
    .await;
    assert_eq!(
        out, "440 2000\n440 2000\n",
        "fsGroup made the 0400 files group-readable"
    );
    let (code, out) = exec_as(d, &id, "1000:3000", "cat /secrets/password").await;
    assert_eq!((code, out.as_str()), (0, "s3cret"));
    let (_, out) = exec_as(
        d,
        &id,
        "0",
        "ls /etc/app | sort; readlink /etc/app/app.conf",
    )
    .await;
    assert_eq!(out, "app.conf\n..data/app.conf\n");
    let (_, out) = exec_as(d, &id, "0", "cat /etc/podinfo/labels").await;
    assert_eq!(out, "app=\"web\"\ntier=\"front\"");
    let (code, out) = exec_as(
        d,
        &id,
        "1000:3000",
        "echo hi > /scratch/f && cat /scratch/f && stat -c %a /scratch",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "hi\n2777\n"));
    // The Memory emptyDir is a tmpfs of sizeLimit, writable by the container user.
    let (code, out) = exec_as(
        d,
        &id,
        "1000:3000",
        "echo m > /mem/f && grep ' /mem ' /proc/mounts | cut -d' ' -f1,3 && df -k /mem | tail -1 | tr -s ' ' | cut -d' ' -f2",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "tmpfs tmpfs\n16384\n"));
    // Read-only mounts.
    let (code, _) = exec_as(d, &id, "0", "touch /etc/app/new").await;
    assert_ne!(code, 0, "a configMap volume is mounted read-only");

    // An edit of the configMap reaches the running container through ..data.
    vm.source()
        .put_config_map("app", &[("app.conf", "level=info\n")]);
    vm.setup(&pod).await.expect("resync");
    let (_, out) = exec_as(d, &id, "1000:3000", "cat /etc/app/app.conf").await;
    assert_eq!(out, "level=info\n");

    drop(guard);
    vm.teardown(pod.metadata.uid.as_deref().unwrap_or_default())
        .await
        .expect("teardown");
}

#[tokio::test]
async fn probes_against_real_containers() {
    let engine = engine().await;
    let guard = Guard::new(&engine.docker);
    let d = &engine.docker;
    let echo = guard.run("echo", ECHO, None, None, vec![], vec![]).await;
    let bb = guard
        .run(
            "busybox",
            BUSYBOX,
            Some(vec!["sleep", "3600"]),
            None,
            vec![],
            vec![],
        )
        .await;
    let ip = guard.ip(&echo).await;
    let c = Container {
        name: "echo".into(),
        ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            ..Default::default()
        }]),
        ..Default::default()
    };
    let t = Duration::from_secs(2);
    let get = |port: IntOrString, path: &str| HTTPGetAction {
        path: Some(path.into()),
        port,
        ..Default::default()
    };

    // The echo server answers any path; give it a moment to listen.
    let mut ok = ProbeResult::Unknown(String::new());
    for _ in 0..50 {
        ok = http_probe(
            &get(IntOrString::String("http".into()), "/probe-path"),
            &c,
            &ip,
            t,
            "kube-probe/1.33",
        )
        .await;
        if matches!(ok, ProbeResult::Success(_)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match &ok {
        ProbeResult::Success(body) => assert!(body.contains("/probe-path"), "{body}"),
        other => panic!("http probe against the echo server: {other:?}"),
    }
    assert_eq!(
        http_probe(
            &get(IntOrString::Int(8081), "/"),
            &c,
            &ip,
            t,
            "kube-probe/1.33"
        )
        .await,
        ProbeResult::Failure(format!(
            "Get \"http://{ip}:8081/\": dial tcp {ip}:8081: connect: connection refused"
        ))
    );
    let tcp = |port: i32| TCPSocketAction {
        host: None,
        port: IntOrString::Int(port),
    };
    assert_eq!(
        tcp_probe(&tcp(8080), &c, &ip, t).await,
        ProbeResult::Success(String::new())
    );
    assert!(matches!(
        tcp_probe(&tcp(8081), &c, &ip, t).await,
        ProbeResult::Failure(_)
    ));

    // exec probes in busybox.
    let ex = |cmd: &str| ExecAction {
        command: Some(vec!["sh".into(), "-c".into(), cmd.into()]),
    };
    assert_eq!(
        exec_probe(d, &bb, &ex("echo alive"), t).await,
        ProbeResult::Success("alive\n".into())
    );
    assert_eq!(
        exec_probe(d, &bb, &ex("echo sick >&2; exit 3"), t).await,
        ProbeResult::Failure("sick\n".into())
    );
    assert_eq!(
        exec_probe(d, &bb, &ex("sleep 5"), Duration::from_secs(1)).await,
        ProbeResult::Failure("command \"sh -c sleep 5\" timed out".into())
    );
    let big = exec_probe(d, &bb, &ex("yes 0123456789 | head -c 20000; exit 1"), t).await;
    match big {
        ProbeResult::Failure(out) => assert_eq!(out.len(), 10 * 1024),
        other => panic!("{other:?}"),
    }

    // The worker with a real runner: a liveness exec probe that fails → Killing.
    let bc = Container {
        name: "bb".into(),
        liveness_probe: Some(Probe {
            exec: Some(ex("test -e /healthy")),
            period_seconds: Some(1),
            failure_threshold: Some(2),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut probes = ContainerProbes::new(&bc, Some("Always"));
    let t0 = Instant::now();
    probes.container_started(t0);
    let runner = DockerProbeRunner {
        docker: d,
        container_id: &bb,
        pod_ip: &ip,
        container: &bc,
    };
    let ev = probes.tick(t0, &runner).await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].message, "Liveness probe failed: ");
    let ev = probes.tick(t0 + Duration::from_secs(1), &runner).await;
    assert_eq!(
        ev.iter().map(|e| e.reason).collect::<Vec<_>>(),
        vec!["Unhealthy", "Killing"]
    );
    assert_eq!(
        ev[1].message,
        "Container bb failed liveness probe, will be restarted"
    );
    probes.container_started(t0 + Duration::from_secs(2));
    let (code, _) = exec_as(d, &bb, "0", "touch /healthy").await;
    assert_eq!(code, 0);
    assert!(
        probes
            .tick(t0 + Duration::from_secs(2), &runner)
            .await
            .is_empty()
    );
    assert_eq!(probes.needs_kill(), None);

    // Lifecycle hooks.
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("ns".into()),
            uid: Some("u".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let target = HandlerTarget {
        docker: d,
        container_id: &bb,
        pod_ip: &ip,
        pod: &pod,
        container: &bc,
    };
    let hook = |cmd: &str| LifecycleHandler {
        exec: Some(ex(cmd)),
        ..Default::default()
    };
    run_handler(&hook("echo started > /hook"), &target)
        .await
        .expect("postStart ok");
    let (_, out) = exec_as(d, &bb, "0", "cat /hook").await;
    assert_eq!(out, "started\n");
    let err = run_handler(&hook("echo bad >&2; echo oops; exit 1"), &target)
        .await
        .expect_err("fails");
    assert_eq!(
        err,
        "Exec lifecycle hook ([sh -c echo bad >&2; echo oops; exit 1]) for Container \"bb\" in Pod \"p_ns(u)\" failed - error: command 'sh -c echo bad >&2; echo oops; exit 1' exited with 1: bad\n, message: \"oops\\nbad\\n\""
    );
    let http_hook = LifecycleHandler {
        http_get: Some(get(IntOrString::Int(8080), "/prestop")),
        ..Default::default()
    };
    let echo_target = HandlerTarget {
        container_id: &echo,
        container: &c,
        ..target
    };
    run_handler(&http_hook, &echo_target)
        .await
        .expect("http hook");
    let bad_http = LifecycleHandler {
        http_get: Some(get(IntOrString::Int(8081), "/prestop")),
        ..Default::default()
    };
    let err = run_handler(&bad_http, &echo_target)
        .await
        .expect_err("refused");
    assert_eq!(
        err,
        format!(
            "HTTP lifecycle hook (/prestop) for Container \"echo\" in Pod \"p_ns(u)\" failed - error: Get \"http://{ip}:8081/prestop\": dial tcp {ip}:8081: connect: connection refused"
        )
    );
    drop(guard);
}

/// The API-backed parts through a real cluster (`minik up`): a TokenRequest bound to a pod for
/// the injected `kube-api-access-…` volume, configMaps read with `kube::Client`, the real
/// `not found` errors, and the service variables of the `kubernetes` service.
#[tokio::test]
async fn api_backed_volumes_and_env_on_a_real_cluster() {
    use k8s_openapi::api::core::v1::{
        ConfigMapKeySelector, EnvVar, EnvVarSource, Namespace, ServiceAccount,
    };
    use kube::api::{Api, PostParams};
    use kube::config::{KubeConfigOptions, Kubeconfig};
    use minik::kubelet::env::{EnvContext, KubeSource, container_env};

    let lab = lab::Lab::new();
    lab.up("kmod");
    let kubeconfig =
        Kubeconfig::read_from(lab.profile_dir("kmod").join("admin.conf")).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube config");
    let client = kube::Client::try_from(config).expect("client");
    let ns = "kmod";
    let pp = PostParams::default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &pp,
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("namespace");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    sas.create(
        &pp,
        &ServiceAccount {
            metadata: ObjectMeta {
                name: Some("builder".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .expect("service account");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    // The root CA configMap: kube-controller-manager's root-ca-cert-publisher publishes the
    // profile's CA in every namespace.
    let ca = std::fs::read_to_string(lab.profile_dir("kmod").join("pki/ca.crt")).expect("ca");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let published = cms
            .get_opt("kube-root-ca.crt")
            .await
            .expect("get configmap");
        if published
            .and_then(|c| c.data)
            .and_then(|d| d.get("ca.crt").cloned())
            == Some(ca.clone())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kube-root-ca.crt not published in {ns}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let settings = ConfigMap {
        metadata: ObjectMeta {
            name: Some("settings".into()),
            ..Default::default()
        },
        data: Some([("level".to_string(), "debug".to_string())].into()),
        ..Default::default()
    };
    cms.create(&pp, &settings).await.expect("configmap");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let container = Container {
        name: "app".into(),
        image: Some(BUSYBOX.into()),
        env: Some(vec![EnvVar {
            name: "LEVEL".into(),
            value: None,
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: "settings".into(),
                    key: "level".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
        }]),
        ..Default::default()
    };
    let pod = pods
        .create(
            &pp,
            &Pod {
                metadata: ObjectMeta {
                    name: Some("web-0".into()),
                    ..Default::default()
                },
                spec: Some(PodSpec {
                    service_account_name: Some("builder".into()),
                    containers: vec![container],
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("pod");
    let spec = pod.spec.clone().expect("spec");
    let access = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name.starts_with("kube-api-access-"))
        .expect("the admission plugin injected kube-api-access-…")
        .name
        .clone();
    let root = tempfile::Builder::new()
        .prefix("minik-test-kmod-")
        .tempdir()
        .expect("tmp");
    let vm = VolumeManager::with_client(root.path(), client.clone());
    let volumes = vm.setup(&pod).await.expect("setup");
    let uid = pod.metadata.uid.clone().expect("uid");
    let dir = vm.volume_dir(&uid, "projected", &access);
    let token = std::fs::read_to_string(dir.join("token")).expect("token");
    let claims = token.split('.').nth(1).expect("a JWT");
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .expect("base64"),
    )
    .expect("claims");
    assert_eq!(
        claims["sub"], "system:serviceaccount:kmod:builder",
        "{claims}"
    );
    assert!(
        claims.to_string().contains("web-0"),
        "bound to the pod: {claims}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("namespace")).expect("ns"),
        "kmod"
    );
    assert_eq!(std::fs::read_to_string(dir.join("ca.crt")).expect("ca"), ca);
    let mounts = volumes.mounts_for(&spec.containers[0]).expect("mounts");
    assert_eq!(
        mounts[0].target.as_deref(),
        Some("/var/run/secrets/kubernetes.io/serviceaccount")
    );
    assert_eq!(mounts[0].read_only, Some(true));

    // A missing configMap through the real API.
    let mut broken = pod.clone();
    let mut v = volume("cfg");
    v.config_map = Some(ConfigMapVolumeSource {
        name: "missing".into(),
        ..Default::default()
    });
    broken.spec.as_mut().expect("spec").volumes = Some(vec![v]);
    assert_eq!(
        vm.setup(&broken).await.expect_err("missing").to_string(),
        "MountVolume.SetUp failed for volume \"cfg\" : configmap \"missing\" not found"
    );

    // The environment: configMapKeyRef and the kubernetes service's variables.
    let source = KubeSource {
        client: client.clone(),
    };
    let env = container_env(&source, &pod, &spec.containers[0], &EnvContext::default())
        .await
        .expect("env");
    assert_eq!(env.get("LEVEL"), Some("debug"));
    assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
    assert_eq!(env.get("KUBERNETES_PORT_443_TCP_PROTO"), Some("tcp"));

    // An HTTPS probe against the API server (its certificate is not verified, as the kubelet
    // does not verify probe certificates): a TLS answer, success or a status code.
    let kubeconfig =
        Kubeconfig::read_from(lab.profile_dir("kmod").join("admin.conf")).expect("kubeconfig");
    let url = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .expect("server URL");
    let port: i32 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("a port in the server URL");
    let https = HTTPGetAction {
        path: Some("/livez".into()),
        port: IntOrString::Int(port),
        host: Some("127.0.0.1".into()),
        scheme: Some("HTTPS".into()),
        ..Default::default()
    };
    let r = http_probe(
        &https,
        &Container::default(),
        "",
        Duration::from_secs(3),
        "kube-probe/1.33",
    )
    .await;
    match &r {
        ProbeResult::Success(body) => assert_eq!(body, "ok"),
        ProbeResult::Failure(m) => {
            assert!(m.starts_with("HTTP probe failed with statuscode: "), "{m}")
        }
        other => panic!("{other:?}"),
    }
    vm.teardown(&uid).await.expect("teardown");
}
