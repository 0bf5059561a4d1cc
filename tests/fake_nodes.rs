//! Simulated nodes (`minik up --fake-nodes N`, the `fake-kubelet` static pod): nodes registered
//! and Ready with Leases, pods bound to them Running with an IP, deletion finished, pods that
//! complete, and `minik node stop/start`.

mod lab;

use std::time::Duration;

use lab::Lab;
use serde_json::Value;

const CTX: &str = "minik-fakes";

#[test]
fn fake_nodes_run_pods_for_the_scheduler() {
    let lab = Lab::new();
    let out = lab.ok(&[
        "up",
        "--name",
        "fakes",
        "--fake-nodes",
        "3",
        "--wait",
        "60s",
    ]);
    assert!(out.contains("Done!"), "{out}");
    let pods = lab.kubectl_ok(CTX, &["get", "pods", "-n", "kube-system", "-o", "name"]);
    assert!(pods.contains("pod/fake-kubelet-fakes"), "{pods}");
    lab.wait_for("3 Ready nodes", Duration::from_secs(30), || {
        let out = lab.kubectl(CTX, &["get", "nodes", "-o", "json"]);
        serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| {
            v["items"].as_array().is_some_and(|items| {
                items.len() == 3
                    && items.iter().all(|n| {
                        n["status"]["conditions"].as_array().is_some_and(|c| {
                            c.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                    })
            })
        })
    });
    let table = lab.kubectl_ok(CTX, &["get", "nodes"]);
    assert!(
        table.contains("fake-0") && table.contains("Ready"),
        "{table}"
    );
    lab.wait_for("node leases", Duration::from_secs(30), || {
        lab.kubectl_ok(
            CTX,
            &["get", "leases", "-n", "kube-node-lease", "-o", "name"],
        )
        .lines()
        .count()
            == 3
    });

    // A deployment-less pod: scheduled, then Running with an IP from its node's CIDR.
    lab.kubectl_ok(CTX, &["run", "web", "--image=nginx"]);
    lab.wait_for("web Running", Duration::from_secs(30), || {
        lab.kubectl_ok(
            CTX,
            &["get", "pod", "web", "-o", "jsonpath={.status.phase}"],
        ) == "Running"
    });
    let ip = lab.kubectl_ok(
        CTX,
        &["get", "pod", "web", "-o", "jsonpath={.status.podIP}"],
    );
    assert!(ip.starts_with("10.64."), "{ip}");
    let ready = lab.kubectl_ok(CTX, &["get", "pod", "web"]);
    assert!(
        ready.contains("1/1") && ready.contains("Running"),
        "{ready}"
    );
    // Deletion completes: the fake kubelet finishes the graceful delete.
    lab.kubectl_ok(CTX, &["delete", "pod", "web", "--timeout=30s"]);

    // A pod that completes (kwok-style stage by annotation).
    let path = lab.home.path().join("done.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: done\n  annotations: {fake.minik.dev/complete-after: 1s}\nspec:\n  restartPolicy: Never\n  containers: [{name: c, image: busybox}]\n",
    )
    .unwrap();
    lab.kubectl_ok(CTX, &["create", "-f", path.to_str().unwrap()]);
    lab.wait_for("done Succeeded", Duration::from_secs(30), || {
        lab.kubectl_ok(
            CTX,
            &["get", "pod", "done", "-o", "jsonpath={.status.phase}"],
        ) == "Succeeded"
    });

    // A node's heartbeat stops and resumes.
    let out = lab.ok(&["node", "stop", "fake-1", "--name", "fakes"]);
    assert!(out.contains("heartbeat stopped"), "{out}");
    let list = lab.ok(&["node", "list", "--name", "fakes"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("fake-1") && l.contains("stopped")),
        "{list}"
    );
    lab.ok(&["node", "start", "fake-1", "--name", "fakes"]);
    let list = lab.ok(&["node", "list", "--name", "fakes"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("fake-1") && l.contains("running")),
        "{list}"
    );
    let out = lab.minik(&["node", "stop", "nope", "--name", "fakes"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("node \"nope\" not found"));
}
