//! The job, cronjob and ttl-after-finished controllers, end to end: `minik apiserver` with a
//! controller-manager, the scheduler and a fake kubelet (which finishes pods as their
//! `fake.minik.dev/complete-after` / `exit-code` annotations ask), driven by the real kubectl
//! 1.33.

mod apiserver_util;
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiserver_util::{Cluster, Identity, Kubectl, Store};
use serde_json::{Value, json};
use tempfile::TempDir;

const V: &str = "1.33";
const WAIT: Duration = Duration::from_secs(60);

/// A `minik` component child process with its log, killed on drop.
struct Component {
    child: Child,
    log: std::path::PathBuf,
}

impl Component {
    fn start(dir: &TempDir, name: &str, args: &[&str]) -> Component {
        let log = dir.path().join(format!("{name}.log"));
        let out = fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(common::minik_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn minik component");
        Component { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Env {
    // Field order: the components go before the cluster.
    cm: Component,
    _scheduler: Component,
    _kubelet: Component,
    k: Kubectl,
    c: Cluster,
    _dir: TempDir,
}

fn setup() -> Env {
    let c = Cluster::start(Store::Minik);
    let k = c.kubectl(V, Identity::Admin);
    let dir = tempfile::Builder::new()
        .prefix("minik-batch-test-")
        .tempdir()
        .expect("temp dir");
    let kubeconfig = c.kubeconfig(Identity::Admin);
    let kc = kubeconfig.to_str().expect("utf-8 path");
    let cm = Component::start(
        &dir,
        "controller-manager",
        &[
            "controller-manager",
            "--kubeconfig",
            kc,
            "--secure-port",
            &common::free_port().to_string(),
            "--log-level",
            "info,minik=debug",
        ],
    );
    let scheduler = Component::start(
        &dir,
        "scheduler",
        &[
            "scheduler",
            "--kubeconfig",
            kc,
            "--secure-port",
            &common::free_port().to_string(),
        ],
    );
    let kubelet = Component::start(
        &dir,
        "fake-kubelet",
        &["fake-kubelet", "--kubeconfig", kc, "--nodes", "2"],
    );
    Env {
        cm,
        _scheduler: scheduler,
        _kubelet: kubelet,
        k,
        c,
        _dir: dir,
    }
}

impl Env {
    fn create(&self, file: &str, obj: &Value) {
        let path = self.c.manifest(file, obj);
        self.k.ok(&["create", "-f", &path]);
    }

    fn get(&self, args: &[&str]) -> Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        self.k.json(&a)
    }

    fn items(&self, args: &[&str]) -> Vec<Value> {
        self.get(args)["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn pods_of(&self, job: &str) -> Vec<Value> {
        self.items(&["pods", "-l", &format!("batch.kubernetes.io/job-name={job}")])
    }

    /// Polls `f` until it returns Some; fails with `what` and the controller-manager's log.
    fn wait<T>(&self, what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            if start.elapsed() > limit {
                panic!(
                    "timed out waiting for {what}\n--- controller-manager log (tail):\n{}",
                    common::tail(&self.cm.log(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Events about `name` (of kind `kind`): (type, reason, message).
    fn events(&self, kind: &str, name: &str) -> Vec<(String, String, String)> {
        self.items(&[
            "events",
            "--field-selector",
            &format!("involvedObject.kind={kind},involvedObject.name={name}"),
        ])
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
    }

    fn wait_event(&self, kind: &str, name: &str, reason: &str) -> (String, String, String) {
        self.wait(&format!("event {reason} on {kind} {name}"), WAIT, || {
            self.events(kind, name)
                .into_iter()
                .find(|(_, r, _)| r == reason)
        })
    }

    fn condition(&self, job: &Value, type_: &str) -> Option<Value> {
        job["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_ && c["status"] == "True")
            .cloned()
    }
}

/// A Job whose pods finish after `after` with `exit` code.
fn job(name: &str, spec: Value, after: &str, exit: i32) -> Value {
    let mut spec = spec;
    spec["template"] = json!({
        "metadata": {"annotations": {
            "fake.minik.dev/complete-after": after,
            "fake.minik.dev/exit-code": exit.to_string(),
        }},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox"}]}
    });
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec})
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
        .collect()
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("Pending")
}

#[test]
fn jobs_complete_in_parallel_indexed_and_expire_after_their_ttl() {
    let e = setup();

    // parallelism 2, completions 4: never more than 2 at once, 4 successes, Complete.
    e.create(
        "par.json",
        &job("par", json!({"parallelism": 2, "completions": 4}), "2s", 0),
    );
    let indexed = job(
        "idx",
        json!({"parallelism": 3, "completions": 3, "completionMode": "Indexed"}),
        "1s",
        0,
    );
    e.create("idx.json", &indexed);
    let ttl = job("short", json!({"ttlSecondsAfterFinished": 0}), "1s", 0);
    e.create("short.json", &ttl);

    let mut most_running = 0;
    let done = e.wait("job par to complete", Duration::from_secs(90), || {
        let pods = e.pods_of("par");
        let running = pods
            .iter()
            .filter(|p| !matches!(phase(p), "Succeeded" | "Failed"))
            .count();
        most_running = most_running.max(running);
        let j = e.get(&["job", "par"]);
        let active = j["status"]["active"].as_i64().unwrap_or(0);
        assert!(active <= 2, "more than 2 active: {}", j["status"]);
        assert!(running <= 2, "more than 2 pods running: {:?}", names(&pods));
        e.condition(&j, "Complete").map(|_| j)
    });
    assert!(most_running >= 1);
    // kubectl agrees.
    let out = e.k.ok(&[
        "wait",
        "--for=condition=complete",
        "job/par",
        "--timeout=10s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    assert_eq!(done["status"]["succeeded"], 4, "{}", done["status"]);
    assert_eq!(done["status"]["active"].as_i64().unwrap_or(0), 0);
    assert!(done["status"]["completionTime"].is_string());
    assert!(done["status"]["startTime"].is_string());
    let complete = e.condition(&done, "Complete").unwrap();
    assert_eq!(complete["reason"], "CompletionsReached");
    assert_eq!(
        complete["message"],
        "Reached expected number of succeeded pods"
    );
    assert!(e.condition(&done, "SuccessCriteriaMet").is_some());
    let pods = e.pods_of("par");
    assert_eq!(pods.len(), 4, "{:?}", names(&pods));
    assert!(pods.iter().all(|p| phase(p) == "Succeeded"));
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("par-"), "{name}");
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Job");
        assert_eq!(owner["controller"], true);
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/controller-uid"],
            done["metadata"]["uid"]
        );
        assert_eq!(p["metadata"]["labels"]["job-name"], "par");
    }
    let events = e.events("Job", "par");
    let created: Vec<_> = events
        .iter()
        .filter(|(_, r, _)| r == "SuccessfulCreate")
        .collect();
    assert_eq!(created.len(), 4, "{events:?}");
    assert!(
        created
            .iter()
            .all(|(t, _, m)| t == "Normal" && m.starts_with("Created pod: par-"))
    );
    let (t, _, m) = e.wait_event("Job", "par", "Completed");
    assert_eq!((t.as_str(), m.as_str()), ("Normal", "Job completed"));
    let table = e.k.ok(&["get", "job", "par"]);
    assert!(
        table.contains("Complete") && table.contains("4/4"),
        "{table}"
    );

    // Indexed: one pod per index 0..2, with its hostname; completedIndexes "0-2".
    let idx = e.wait("job idx to complete", WAIT, || {
        let j = e.get(&["job", "idx"]);
        e.condition(&j, "Complete").map(|_| j)
    });
    assert_eq!(
        idx["status"]["completedIndexes"], "0-2",
        "{}",
        idx["status"]
    );
    assert_eq!(idx["status"]["succeeded"], 3);
    let pods = e.pods_of("idx");
    let mut seen = BTreeSet::new();
    for p in &pods {
        let i = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
            i.as_str()
        );
        assert!(
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("idx-{i}-"))
        );
        assert_eq!(p["spec"]["hostname"], format!("idx-{i}"));
        let env = &p["spec"]["containers"][0]["env"][0];
        assert_eq!(env["name"], "JOB_COMPLETION_INDEX");
        seen.insert(i);
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["0", "1", "2"],
        "{:?}",
        names(&pods)
    );

    // ttlSecondsAfterFinished: 0 — the job and its pod are deleted once it completes.
    e.wait("job short to be deleted after its TTL", WAIT, || {
        let out = e.k.run(&["get", "job", "short", "-o", "name"]);
        (!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound"))
            .then_some(())
    });
    e.wait("the pods of short to be deleted", WAIT, || {
        e.pods_of("short").is_empty().then_some(())
    });
}

#[test]
fn jobs_fail_at_the_backoff_limit_and_the_deadline_and_suspend() {
    let e = setup();
    // Each pod exits 1: the second failure is past backoffLimit 1 (after a 10 s back-off).
    e.create(
        "fail.json",
        &job("fail", json!({"backoffLimit": 1}), "1s", 1),
    );
    // Pods that would run 10 minutes, in a job allowed 4 seconds.
    e.create(
        "slow.json",
        &job(
            "slow",
            json!({"activeDeadlineSeconds": 4, "parallelism": 2, "completions": 2}),
            "600s",
            0,
        ),
    );
    // A suspended job: no pods until resumed.
    e.create(
        "later.json",
        &job("later", json!({"suspend": true, "completions": 1}), "1s", 0),
    );

    let slow = e.wait("job slow to fail at its deadline", WAIT, || {
        let j = e.get(&["job", "slow"]);
        e.condition(&j, "Failed").map(|_| j)
    });
    let failed = e.condition(&slow, "Failed").unwrap();
    assert_eq!(failed["reason"], "DeadlineExceeded");
    assert_eq!(
        failed["message"],
        "Job was active longer than specified deadline"
    );
    let target = e.condition(&slow, "FailureTarget").unwrap();
    assert_eq!(target["reason"], "DeadlineExceeded");
    assert_eq!(slow["status"]["failed"], 2, "{}", slow["status"]);
    assert_eq!(slow["status"]["active"].as_i64().unwrap_or(0), 0);
    let (t, _, m) = e.wait_event("Job", "slow", "DeadlineExceeded");
    assert_eq!(
        (t.as_str(), m.as_str()),
        ("Warning", "Job was active longer than specified deadline")
    );
    e.wait("the active pods of slow to be deleted", WAIT, || {
        e.pods_of("slow").is_empty().then_some(())
    });
    assert!(
        e.events("Job", "slow")
            .iter()
            .any(|(_, r, m)| r == "SuccessfulDelete" && m.starts_with("Deleted pod: slow-"))
    );

    // The suspended job: the Suspended condition, no pods; resumed, it runs and completes.
    let later = e.wait("job later to be suspended", WAIT, || {
        let j = e.get(&["job", "later"]);
        e.condition(&j, "Suspended").map(|_| j)
    });
    assert_eq!(
        e.condition(&later, "Suspended").unwrap()["reason"],
        "JobSuspended"
    );
    assert!(e.pods_of("later").is_empty());
    assert!(later["status"]["startTime"].is_null());
    e.k.ok(&[
        "patch",
        "job",
        "later",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    let later = e.wait("job later to complete once resumed", WAIT, || {
        let j = e.get(&["job", "later"]);
        e.condition(&j, "Complete").map(|_| j)
    });
    let resumed = later["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Suspended")
        .cloned()
        .unwrap();
    assert_eq!(resumed["status"], "False");
    assert_eq!(resumed["reason"], "JobResumed");
    e.wait_event("Job", "later", "Resumed");

    // The failing job.
    let fail = e.wait("job fail to fail", Duration::from_secs(60), || {
        let j = e.get(&["job", "fail"]);
        e.condition(&j, "Failed").map(|_| j)
    });
    let failed = e.condition(&fail, "Failed").unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(
        failed["message"],
        "Job has reached the specified backoff limit"
    );
    assert_eq!(fail["status"]["failed"], 2, "{}", fail["status"]);
    let pods = e.pods_of("fail");
    assert_eq!(pods.len(), 2, "{:?}", names(&pods));
    assert!(pods.iter().all(|p| phase(p) == "Failed"));
    let (t, _, m) = e.wait_event("Job", "fail", "BackoffLimitExceeded");
    assert_eq!(
        (t.as_str(), m.as_str()),
        ("Warning", "Job has reached the specified backoff limit")
    );
    let out = e.k.ok(&[
        "wait",
        "--for=condition=failed",
        "job/fail",
        "--timeout=10s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    // Nothing more is created after the end.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(e.pods_of("fail").len(), 2);
}

/// A CronJob, its status.lastScheduleTime set back a few minutes (as if the controller had been
/// down), so that its most recent missed time runs at once.
fn cronjob(e: &Env, name: &str, policy: &str, after: &str, extra: Value) {
    let mut spec = json!({
        "schedule": "* * * * *",
        "concurrencyPolicy": policy,
        "suspend": true,
        "successfulJobsHistoryLimit": 1,
        "failedJobsHistoryLimit": 1,
        "jobTemplate": {"metadata": {"labels": {"cron": name}}, "spec": {"template": {
            "metadata": {"annotations": {"fake.minik.dev/complete-after": after}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "busybox"}]}
        }}}
    });
    if let (Some(s), Some(x)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in x {
            s.insert(k.clone(), v.clone());
        }
    }
    e.create(
        &format!("{name}.json"),
        &json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name}, "spec": spec}),
    );
    let back = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(180))
        .unwrap();
    let back = jiff::Timestamp::from_second(back.as_second() / 60 * 60).unwrap();
    e.k.ok(&[
        "patch",
        "cronjob",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &json!({"status": {"lastScheduleTime": back.to_string()}}).to_string(),
    ]);
    e.k.ok(&[
        "patch",
        "cronjob",
        name,
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
}

fn jobs_of(e: &Env, cron: &str) -> Vec<Value> {
    e.items(&["jobs", "-l", &format!("cron={cron}")])
}

#[test]
fn cronjobs_fire_keep_their_history_and_forbid_overlaps() {
    let e = setup();
    let minute_of = |t: jiff::Timestamp| t.as_second() / 60;
    // tick's first job and its status read below must fall in one minute (the next minute's
    // job moves lastScheduleTime on): start early in a minute.
    let second = jiff::Timestamp::now().as_second().rem_euclid(60);
    if second > 40 {
        std::thread::sleep(Duration::from_secs((61 - second) as u64));
    }
    cronjob(&e, "tick", "Allow", "1s", json!({}));
    cronjob(&e, "hold", "Forbid", "600s", json!({}));
    cronjob(
        &e,
        "zoned",
        "Allow",
        "1s",
        json!({"timeZone": "Mars/Olympus_Mons"}),
    );

    // The most recent missed minute runs at once, named after it.
    let first = e.wait("tick's first job", WAIT, || {
        jobs_of(&e, "tick").into_iter().next()
    });
    let fname = first["metadata"]["name"].as_str().unwrap().to_string();
    let stamp = first["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap()
        .to_string();
    let scheduled: jiff::Timestamp = stamp.parse().expect("RFC 3339");
    assert!(
        stamp.ends_with('Z') && scheduled.as_second() % 60 == 0,
        "{stamp}"
    );
    assert_eq!(fname, format!("tick-{}", minute_of(scheduled)));
    let owner = &first["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["controller"].as_bool()),
        (Some("CronJob"), Some(true))
    );
    let (t, _, m) = e.wait_event("CronJob", "tick", "SuccessfulCreate");
    assert_eq!((t.as_str(), m), ("Normal", format!("Created job {fname}")));
    let cj = e.get(&["cronjob", "tick"]);
    assert_eq!(
        cj["status"]["lastScheduleTime"].as_str(),
        Some(stamp.as_str())
    );

    // Two manual runs (`kubectl create job --from`): controlled by the cronjob, unexpected.
    e.k.ok(&["create", "job", "manual-1", "--from=cronjob/tick"]);
    e.k.ok(&["create", "job", "manual-2", "--from=cronjob/tick"]);
    let unexpected = e.wait("UnexpectedJob events for the manual jobs", WAIT, || {
        let ev: Vec<_> = e
            .events("CronJob", "tick")
            .into_iter()
            .filter(|(_, r, _)| r == "UnexpectedJob")
            .collect();
        (!ev.is_empty()).then_some(ev)
    });
    for (t, _, m) in &unexpected {
        assert_eq!(t, "Warning");
        assert!(
            m.starts_with("Saw a job that the controller did not create or forgot: manual-"),
            "{m}"
        );
    }
    // All three complete; successfulJobsHistoryLimit 1 keeps the newest only.
    let (_, _, m) = e.wait_event("CronJob", "tick", "SawCompletedJob");
    assert_eq!(
        m,
        format!("Saw completed job: {fname}, condition: Complete")
    );
    e.wait("tick's history to shrink to 1", WAIT, || {
        let jobs = jobs_of(&e, "tick");
        (jobs.len() == 1
            && e.events("CronJob", "tick")
                .iter()
                .filter(|(_, r, _)| r == "SuccessfulDelete")
                .count()
                == 2)
            .then_some(())
    });
    let (_, _, m) = e.wait_event("CronJob", "tick", "SuccessfulDelete");
    assert!(m.starts_with("Deleted job "), "{m}");
    let cj = e.wait("lastSuccessfulTime", WAIT, || {
        let cj = e.get(&["cronjob", "tick"]);
        (cj["status"]["lastSuccessfulTime"].is_string()
            && cj["status"]["active"]
                .as_array()
                .is_none_or(|a| a.is_empty()))
        .then_some(cj)
    });
    assert!(cj["status"]["lastSuccessfulTime"].is_string());

    // The Forbid cronjob's job runs for 10 minutes.
    let held = e.wait("hold's first job", WAIT, || {
        jobs_of(&e, "hold").into_iter().next()
    });
    let hname = held["metadata"]["name"].as_str().unwrap().to_string();
    e.wait("hold's job in status.active", WAIT, || {
        let cj = e.get(&["cronjob", "hold"]);
        cj["status"]["active"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["name"] == hname.as_str()))
            .then_some(())
    });

    // An unknown time zone is reported, and nothing runs.
    let (t, _, m) = e.wait_event("CronJob", "zoned", "UnknownTimeZone");
    assert_eq!(t, "Warning");
    assert!(
        m.starts_with("invalid timeZone: \"Mars/Olympus_Mons\""),
        "{m}"
    );
    assert!(jobs_of(&e, "zoned").is_empty());

    // The next minute: tick runs again on time; hold is still busy (Forbid).
    let next_minute = minute_of(scheduled) + 1;
    let second = e.wait("tick's next scheduled job", Duration::from_secs(75), || {
        jobs_of(&e, "tick")
            .into_iter()
            .map(|j| {
                j["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .find(|n| {
                n.strip_prefix("tick-")
                    .and_then(|m| m.parse::<i64>().ok())
                    .is_some_and(|m| m >= next_minute)
            })
    });
    assert!(second.starts_with("tick-"));
    let (_, _, m) = e.wait_event("CronJob", "hold", "JobAlreadyActive");
    assert_eq!(
        m,
        "Not starting job because prior execution is running and concurrency policy is Forbid"
    );
    assert_eq!(names(&jobs_of(&e, "hold")), [hname]);
}
