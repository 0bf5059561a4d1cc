//! The job controller: runs a Job's pods until enough of them succeed, or the Job fails.
//!
//! A Job (batch/v1) asks for pods from its template that run to completion: `completions`
//! successful pods in all (or, without `completions`, until one succeeds), at most
//! `parallelism` at a time. Each sync of a job key counts the Job's pods (those whose
//! controller owner reference is the Job, adopting orphans its selector matches): active,
//! ready, terminating, succeeded and failed. Then:
//!
//! - more failed pods than `backoffLimit` (6), or a Job active for longer than
//!   `activeDeadlineSeconds` since `status.startTime`, fails the Job: the controller adds the
//!   interim `FailureTarget` condition (reason `BackoffLimitExceeded` or `DeadlineExceeded`),
//!   deletes the active pods (they count as failed), and once none is left adds `Failed` with
//!   the same reason and records it as a warning event;
//! - otherwise it creates or deletes pods so that `min(parallelism, completions - succeeded)`
//!   run (named `<job>-` + random, or for an `Indexed` Job `<job>-<index>-` with hostname
//!   `<job>-<index>`, the `batch.kubernetes.io/job-completion-index` annotation and label and
//!   the `JOB_COMPLETION_INDEX` variable; indexes still pending are started first). After a
//!   failure, new pods wait an exponential back-off (10 s, 20 s, … up to 6 min) counted from
//!   the last failure;
//! - once enough pods succeeded and none is active, `SuccessCriteriaMet` then `Complete`
//!   (reason `CompletionsReached`) and `status.completionTime` are set, with the `Completed`
//!   event;
//! - `suspend: true` deletes the active pods and sets the `Suspended` condition; resuming sets it
//!   False (`JobResumed`) and restarts the `activeDeadlineSeconds` clock.
//!
//! Expectations keep a sync from creating or deleting pods the cache has not caught up with,
//! so a pod is never created twice. Nothing polls: pod and job changes wake the job, and the
//! deadline and the failure back-off are known times (`Queue::add_after`).
//!
//! Terminated pods are counted while they exist (they are owned by the Job and stay until it is
//! deleted); the counters never go down, so a finished pod deleted by hand is not forgotten.
//! Kubernetes counts through a `batch.kubernetes.io/job-tracking` pod finalizer instead, which
//! this controller does not use.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::Ctx;
use super::expectations::Expectations;
use super::history;
use super::informer::Queue;
use super::util::{self, Events};

/// The annotation (and label) with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// `spec.managedBy` of the Jobs this controller handles (also when unset).
const MANAGED_BY: &str = "kubernetes.io/job-controller";
/// At most this many pods are created or deleted per sync (`MaxPodCreateDeletePerSync`).
const MAX_PER_SYNC: usize = 500;
/// The pod failure back-off: 10 s doubled per failure since the last success, up to 6 min.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

pub struct JobController {
    ctx: Arc<Ctx>,
    queue: Arc<Queue>,
    expectations: Expectations,
    events: Events,
}

pub fn start(ctx: &Arc<Ctx>, workers: usize) {
    let queue = Queue::new("job");
    let c = Arc::new(JobController {
        ctx: ctx.clone(),
        queue: queue.clone(),
        expectations: Expectations::default(),
        events: Events::new(ctx.client.clone(), "job-controller"),
    });
    let q = queue.clone();
    ctx.inf
        .jobs
        .on_change(move |job, _| q.add(util::key_of(&job.metadata)));
    let weak = Arc::downgrade(&c);
    ctx.inf.pods.on_change(move |pod, _| {
        if let Some(c) = weak.upgrade() {
            let jobs = c.ctx.inf.jobs.store().state();
            for key in util::owners_to_wake(&pod.metadata, "Job", &jobs, |j| {
                j.spec.as_ref().and_then(|s| s.selector.as_ref())
            }) {
                c.queue.add(key);
            }
        }
    });
    let c2 = c.clone();
    c.queue.run_when_synced(ctx, workers, move |key| {
        let c = c2.clone();
        Box::pin(async move { c.sync(&key).await })
    });
}

/// How a Job ends: the interim condition, then the terminal one.
#[derive(Debug, Clone, PartialEq)]
enum Finish {
    Success,
    Failure { reason: String, message: String },
}

/// The counts and conditions a sync writes into `status`.
struct Tally {
    active: i32,
    ready: i32,
    terminating: i32,
    succeeded: i32,
    failed: i32,
}

impl JobController {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(job) = self
            .ctx
            .inf
            .jobs
            .store()
            .get(&ObjectRef::new(name).within(ns))
        else {
            self.expectations.forget(key);
            return Ok(());
        };
        let Some(spec) = job.spec.as_ref() else {
            return Ok(());
        };
        if spec.managed_by.as_deref().is_some_and(|m| m != MANAGED_BY) {
            return Ok(());
        }
        if is_finished(&job) || job.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let now = util::now();
        let satisfied = self
            .expectations
            .satisfied(key, ns, self.ctx.inf.pods.store());
        let pods_api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        let pods = self.claim_pods(&job).await?;

        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completions = spec.completions;
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let suspended = spec.suspend == Some(true);
        let old = job.status.clone().unwrap_or_default();
        let mut conditions = old.conditions.clone().unwrap_or_default();
        let mut start_time = old.start_time.clone();
        if start_time.is_none() && !suspended {
            start_time = Some(Time(now));
        }

        let active_pods: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| util::pod_is_active(p))
            .cloned()
            .collect();
        let terminating = pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_some()
                    && !matches!(util::pod_phase(p), "Succeeded" | "Failed")
            })
            .count() as i32;
        let succeeded_pods: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| util::pod_phase(p) == "Succeeded")
            .collect();
        let failed_pods: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| util::pod_phase(p) == "Failed")
            .collect();

        // Completed indexes (Indexed) or succeeded pods; neither count ever goes down.
        let mut completed: BTreeSet<i32> = BTreeSet::new();
        let succeeded = if indexed {
            completed = parse_indexes(old.completed_indexes.as_deref().unwrap_or(""));
            let n = completions.unwrap_or(0);
            for p in &succeeded_pods {
                if let Some(i) = completion_index(p).filter(|i| *i < n) {
                    completed.insert(i);
                }
            }
            completed.len() as i32
        } else {
            old.succeeded.unwrap_or(0).max(succeeded_pods.len() as i32)
        };
        let mut tally = Tally {
            active: active_pods.len() as i32,
            ready: active_pods.iter().filter(|p| util::pod_is_ready(p)).count() as i32,
            terminating,
            succeeded,
            failed: old.failed.unwrap_or(0).max(failed_pods.len() as i32),
        };

        // Has the Job already met its end, or does it now?
        let mut finish = None;
        if let Some(c) = condition(&conditions, "FailureTarget") {
            finish = Some(Finish::Failure {
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            });
        } else if condition(&conditions, "SuccessCriteriaMet").is_some() {
            finish = Some(Finish::Success);
        } else if tally.failed > backoff_limit || past_backoff_limit_on_failure(&job, &pods) {
            finish = Some(Finish::Failure {
                reason: "BackoffLimitExceeded".into(),
                message: "Job has reached the specified backoff limit".into(),
            });
        } else if let Some(left) = deadline_left(&job, now) {
            if left.is_zero() {
                finish = Some(Finish::Failure {
                    reason: "DeadlineExceeded".into(),
                    message: "Job was active longer than specified deadline".into(),
                });
            } else {
                self.queue.add_after(key.to_string(), left);
            }
        }

        let mut manage_err = None;
        if let Some(Finish::Failure { .. }) = &finish {
            // Remove the active pods: they count as failed.
            let (deleted, deleted_ready, err) =
                self.delete_pods(key, &job, &active_pods, &pods_api).await;
            tally.active -= deleted;
            tally.ready -= deleted_ready;
            tally.terminating += deleted;
            tally.failed += deleted;
            manage_err = err;
        } else if finish.is_none() {
            if satisfied {
                match self
                    .manage(
                        key,
                        &job,
                        &active_pods,
                        &completed,
                        &tally,
                        parallelism,
                        &pods_api,
                        &pods,
                        now,
                    )
                    .await
                {
                    Ok((active, ready_removed, removed)) => {
                        tally.terminating += removed;
                        tally.ready -= ready_removed;
                        tally.active = active;
                    }
                    Err(e) => manage_err = Some(e),
                }
                // Suspension: a condition and an event when it changes.
                if suspended {
                    if ensure_condition(
                        &mut conditions,
                        "Suspended",
                        "True",
                        "JobSuspended",
                        "Job suspended",
                        now,
                    ) {
                        self.events.normal(
                            util::object_ref(job.as_ref()),
                            "Suspended",
                            "Job suspended".into(),
                        );
                    }
                } else if ensure_condition(
                    &mut conditions,
                    "Suspended",
                    "False",
                    "JobResumed",
                    "Job resumed",
                    now,
                ) {
                    self.events.normal(
                        util::object_ref(job.as_ref()),
                        "Resumed",
                        "Job resumed".into(),
                    );
                    // activeDeadlineSeconds counts the time the Job has been running.
                    start_time = Some(Time(now));
                }
            }
            let complete = match completions {
                None => tally.succeeded > 0 && tally.active == 0,
                Some(n) => tally.succeeded >= n && tally.active == 0,
            };
            if complete {
                finish = Some(Finish::Success);
            }
        }

        // The interim condition now; the terminal one once no pod is left running.
        let mut completion_time = old.completion_time.clone();
        let mut finished_now = None;
        if let Some(f) = &finish {
            let (interim, terminal, reason, message) = match f {
                Finish::Success => (
                    "SuccessCriteriaMet",
                    "Complete",
                    "CompletionsReached".to_string(),
                    "Reached expected number of succeeded pods".to_string(),
                ),
                Finish::Failure { reason, message } => {
                    ("FailureTarget", "Failed", reason.clone(), message.clone())
                }
            };
            ensure_condition(&mut conditions, interim, "True", &reason, &message, now);
            if satisfied && tally.active == 0 && tally.terminating == 0 {
                ensure_condition(&mut conditions, terminal, "True", &reason, &message, now);
                if matches!(f, Finish::Success) {
                    completion_time = Some(Time(now));
                }
                finished_now = Some(f.clone());
            }
        }

        let mut status = json!({
            "active": tally.active,
            "ready": tally.ready,
            "terminating": tally.terminating,
            "succeeded": tally.succeeded,
            "failed": tally.failed,
            "startTime": start_time,
            "completionTime": completion_time,
            "conditions": conditions,
            "uncountedTerminatedPods": {},
        });
        if indexed {
            status["completedIndexes"] = json!(format_indexes(&completed));
        }
        let old_json = serde_json::to_value(&old).unwrap_or_default();
        let changed = status
            .as_object()
            .into_iter()
            .flatten()
            .any(|(k, v)| !same_field(old_json.get(k), v));
        if changed {
            // A full update at the cached resourceVersion: a sync working from a stale copy
            // (which could count less than an earlier sync wrote) gets a conflict and retries.
            let mut merged = old_json.as_object().cloned().unwrap_or_default();
            for (k, v) in status.as_object().into_iter().flatten() {
                if v.is_null() {
                    merged.remove(k);
                } else {
                    merged.insert(k.clone(), v.clone());
                }
            }
            let mut updated = (*job).clone();
            updated.status = Some(serde_json::from_value(serde_json::Value::Object(merged))?);
            let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), ns);
            match api
                .replace_status(name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            match finished_now {
                Some(Finish::Success) => self.events.normal(
                    util::object_ref(job.as_ref()),
                    "Completed",
                    "Job completed".into(),
                ),
                Some(Finish::Failure { reason, message }) => {
                    self.events
                        .warning(util::object_ref(job.as_ref()), &reason, message)
                }
                None => {}
            }
        }
        match manage_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The Job's pods: those it controls and its selector still matches, plus orphans its
    /// selector matches (adopted), as every controller claims them ([`history::claim_pods`]).
    /// A job without a selector (the API server always sets one) adopts nothing.
    async fn claim_pods(&self, job: &Job) -> anyhow::Result<Vec<Arc<Pod>>> {
        match job.spec.as_ref().and_then(|s| s.selector.as_ref()) {
            Some(selector) => history::claim_pods(&self.ctx, job, selector, |_| true).await,
            None => {
                let uid = job.uid().unwrap_or_default();
                Ok(self
                    .ctx
                    .inf
                    .pods
                    .store()
                    .state()
                    .into_iter()
                    .filter(|p| util::controller_ref(&p.metadata).is_some_and(|r| r.uid == uid))
                    .collect())
            }
        }
    }

    /// Creates or deletes pods so that the right number run. Returns the new active count and
    /// how many (ready) pods it deleted.
    #[allow(clippy::too_many_arguments)]
    async fn manage(
        &self,
        key: &str,
        job: &Job,
        active_pods: &[Arc<Pod>],
        completed: &BTreeSet<i32>,
        tally: &Tally,
        parallelism: i32,
        pods_api: &Api<Pod>,
        all_pods: &[Arc<Pod>],
        now: Timestamp,
    ) -> anyhow::Result<(i32, i32, i32)> {
        let spec = job.spec.as_ref();
        let indexed = spec.and_then(|s| s.completion_mode.as_deref()) == Some("Indexed");
        let completions = spec.and_then(|s| s.completions);
        let mut active = active_pods.len() as i32;
        if spec.and_then(|s| s.suspend) == Some(true) {
            let (deleted, ready, err) = self.delete_pods(key, job, active_pods, pods_api).await;
            return match err {
                Some(e) => Err(e),
                None => Ok((active - deleted, ready, deleted)),
            };
        }
        let want = match completions {
            None if tally.succeeded > 0 => active,
            None => parallelism,
            Some(n) => (n - tally.succeeded).clamp(0, parallelism),
        };

        // Surplus pods: for an Indexed Job first those with a bad, completed or duplicate index.
        let mut doomed: Vec<Arc<Pod>> = Vec::new();
        let mut keep: Vec<Arc<Pod>> = Vec::new();
        if indexed {
            let n = completions.unwrap_or(0);
            let mut seen = BTreeSet::new();
            for p in active_pods {
                match completion_index(p) {
                    Some(i) if i < n && !completed.contains(&i) && seen.insert(i) => {
                        keep.push(p.clone())
                    }
                    _ => doomed.push(p.clone()),
                }
            }
        } else {
            keep = active_pods.to_vec();
        }
        let surplus = (active - want).max(0) as usize;
        if doomed.len() < surplus {
            // Not ready before ready, newest first.
            keep.sort_by_key(|p| {
                (
                    util::pod_is_ready(p),
                    std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
                )
            });
            let more = surplus - doomed.len();
            doomed.extend(keep.iter().take(more).cloned());
        }
        let mut ready_removed = 0;
        let mut removed = 0;
        if !doomed.is_empty() {
            doomed.truncate(MAX_PER_SYNC);
            let (deleted, ready, err) = self.delete_pods(key, job, &doomed, pods_api).await;
            active -= deleted;
            ready_removed = ready;
            removed = deleted;
            if let Some(e) = err {
                return Err(e);
            }
        }

        if active < want {
            let wait = backoff_left(all_pods, now);
            if !wait.is_zero() {
                self.queue.add_after(key.to_string(), wait);
                return Ok((active, ready_removed, removed));
            }
            let mut n = ((want - active) as usize).min(MAX_PER_SYNC);
            let mut indexes: Vec<Option<i32>> = vec![None; n];
            if indexed {
                let running: BTreeSet<i32> = active_pods
                    .iter()
                    .filter_map(|p| completion_index(p))
                    .collect();
                indexes = (0..completions.unwrap_or(0))
                    .filter(|i| !completed.contains(i) && !running.contains(i))
                    .take(n)
                    .map(Some)
                    .collect();
                n = indexes.len();
            }
            // Slow start: 1, 2, 4, … pods at a time, stopping at the first error.
            let mut next = 0usize;
            let mut batch = 1usize;
            while next < n {
                let size = batch.min(n - next);
                let pp = PostParams::default();
                let templates: Vec<Pod> = indexes[next..next + size]
                    .iter()
                    .map(|i| pod_from_template(job, *i))
                    .collect();
                let results = futures_util::future::join_all(
                    templates.iter().map(|p| pods_api.create(&pp, p)),
                )
                .await;
                let mut first_err = None;
                for r in results {
                    match r {
                        Ok(p) => {
                            let pname = p.name_any();
                            self.expectations.created(key, pname.clone());
                            active += 1;
                            self.events.normal(
                                util::object_ref(job),
                                "SuccessfulCreate",
                                format!("Created pod: {pname}"),
                            );
                        }
                        Err(e) => {
                            self.events.warning(
                                util::object_ref(job),
                                "FailedCreate",
                                format!("Error creating: {}", util::error_message(&e)),
                            );
                            first_err.get_or_insert(e);
                        }
                    }
                }
                if let Some(e) = first_err {
                    return Err(e.into());
                }
                next += size;
                batch *= 2;
            }
        }
        Ok((active, ready_removed, removed))
    }

    /// Deletes pods (recording the expected deletions): (deleted, of which ready, first error).
    async fn delete_pods(
        &self,
        key: &str,
        job: &Job,
        pods: &[Arc<Pod>],
        pods_api: &Api<Pod>,
    ) -> (i32, i32, Option<anyhow::Error>) {
        let mut deleted = 0;
        let mut ready = 0;
        let mut first_err = None;
        for pod in pods {
            let pname = pod.name_any();
            self.expectations
                .deleted(key, pod.uid().unwrap_or_default());
            match pods_api.delete(&pname, &DeleteParams::default()).await {
                Ok(_) => {
                    deleted += 1;
                    ready += i32::from(util::pod_is_ready(pod));
                    self.events.normal(
                        util::object_ref(job),
                        "SuccessfulDelete",
                        format!("Deleted pod: {pname}"),
                    );
                }
                Err(e) if util::is_not_found(&e) => {
                    deleted += 1;
                }
                Err(e) => {
                    self.expectations.forget(key);
                    self.events.warning(
                        util::object_ref(job),
                        "FailedDelete",
                        format!("Error deleting: {}", util::error_message(&e)),
                    );
                    first_err.get_or_insert(e.into());
                }
            }
        }
        (deleted, ready, first_err)
    }
}

/// Whether the Job has its terminal condition (Complete or Failed, True).
pub fn is_finished(job: &Job) -> bool {
    finished_condition(job).is_some()
}

/// The Job's True Complete or Failed condition.
pub fn finished_condition(job: &Job) -> Option<&JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn condition<'a>(conditions: &'a [JobCondition], type_: &str) -> Option<&'a JobCondition> {
    conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// Sets a condition (the real `ensureJobConditionStatus`): a missing False condition is not
/// added. Returns whether it changed.
fn ensure_condition(
    conditions: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let new = JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    };
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status
            || c.reason.as_deref() != Some(reason)
            || c.message.as_deref() != Some(message)
        {
            *c = new;
            return true;
        }
        return false;
    }
    if status == "False" {
        return false;
    }
    conditions.push(new);
    true
}

/// The time left before `activeDeadlineSeconds` (zero when past); None without a deadline, a
/// start time, or while suspended.
fn deadline_left(job: &Job, now: Timestamp) -> Option<Duration> {
    let spec = job.spec.as_ref()?;
    let secs = spec.active_deadline_seconds?;
    if spec.suspend == Some(true) {
        return None;
    }
    let start = job.status.as_ref()?.start_time.as_ref()?.0;
    let end = start
        .as_millisecond()
        .saturating_add(secs.saturating_mul(1000));
    let left = end - now.as_millisecond();
    Some(Duration::from_millis(left.max(0) as u64))
}

/// restartPolicy OnFailure: the containers' restarts count as failures.
fn past_backoff_limit_on_failure(job: &Job, pods: &[Arc<Pod>]) -> bool {
    let Some(spec) = job.spec.as_ref() else {
        return false;
    };
    let policy = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref());
    if policy != Some("OnFailure") {
        return false;
    }
    let limit = spec.backoff_limit.unwrap_or(6);
    let restarts: i32 = pods
        .iter()
        .filter(|p| util::pod_is_active(p))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    limit == 0 && restarts > 0 || limit > 0 && restarts >= limit
}

/// When a pod finished: its containers' last finish, else when it stopped being ready.
fn finish_time(p: &Pod) -> Option<Timestamp> {
    let s = p.status.as_ref()?;
    let from_containers = s
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    from_containers
        .or_else(|| {
            s.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Ready" && c.status == "False")
                .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0))
        })
        .or_else(|| p.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// How long new pods must still wait after failures: 10 s × 2^(failures since the last
/// success − 1), at most 6 min, from the last failure.
fn backoff_left(pods: &[Arc<Pod>], now: Timestamp) -> Duration {
    let last_success = pods
        .iter()
        .filter(|p| util::pod_phase(p) == "Succeeded")
        .filter_map(|p| finish_time(p))
        .max();
    let failures: Vec<Timestamp> = pods
        .iter()
        .filter(|p| util::pod_phase(p) == "Failed")
        .filter_map(|p| finish_time(p))
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    let Some(last) = failures.iter().max() else {
        return Duration::ZERO;
    };
    backoff_for(failures.len(), last.as_millisecond(), now.as_millisecond())
}

fn backoff_for(failures: usize, last_failure_ms: i64, now_ms: i64) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let mut d = BACKOFF_BASE;
    for _ in 1..failures {
        d *= 2;
        if d >= BACKOFF_MAX {
            d = BACKOFF_MAX;
            break;
        }
    }
    let elapsed = Duration::from_millis((now_ms - last_failure_ms).max(0) as u64);
    d.saturating_sub(elapsed)
}

/// An Indexed Job pod's completion index (annotation, else label).
pub fn completion_index(p: &Pod) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(COMPLETION_INDEX))
        .or_else(|| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(COMPLETION_INDEX))
        })
        .and_then(|v| v.parse().ok())
        .filter(|i: &i32| *i >= 0)
}

/// Parses `status.completedIndexes` ("1,3-5,7").
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(a) = part.parse() {
                    out.insert(a);
                }
            }
        }
    }
    out
}

/// Formats indexes as intervals: "0-2,4".
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last += 1;
            iter.next();
        }
        out.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    out.join(",")
}

/// Whether a computed `status` field equals the stored one, an absent field counting as an
/// empty one (the API omits empty values).
fn same_field(stored: Option<&serde_json::Value>, computed: &serde_json::Value) -> bool {
    fn empty(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Null => true,
            serde_json::Value::Number(n) => n.as_i64() == Some(0),
            serde_json::Value::String(s) => s.is_empty(),
            serde_json::Value::Array(a) => a.is_empty(),
            serde_json::Value::Object(o) => o.is_empty(),
            serde_json::Value::Bool(_) => false,
        }
    }
    match stored {
        Some(v) => v == computed || empty(v) && empty(computed),
        None => empty(computed),
    }
}

/// A new pod from the Job's template, for `index` when the Job is Indexed.
pub fn pod_from_template(job: &Job, index: Option<i32>) -> Pod {
    let name = job.name_any();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut pod = Pod {
        metadata: Default::default(),
        spec: template.spec,
        status: None,
    };
    pod.metadata.namespace = job.namespace();
    pod.metadata.labels = tmeta.labels;
    pod.metadata.annotations = tmeta.annotations;
    pod.metadata.finalizers = tmeta.finalizers;
    pod.metadata.owner_references = Some(vec![util::new_controller_ref(job)]);
    match index {
        None => pod.metadata.generate_name = Some(format!("{name}-")),
        Some(i) => {
            pod.metadata.generate_name = Some(format!("{name}-{i}-"));
            pod.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(COMPLETION_INDEX.into(), i.to_string());
            pod.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(COMPLETION_INDEX.into(), i.to_string());
            if let Some(spec) = pod.spec.as_mut() {
                if spec.hostname.as_deref().unwrap_or("").is_empty() {
                    spec.hostname = Some(format!("{name}-{i}"));
                }
                let env = EnvVar {
                    name: "JOB_COMPLETION_INDEX".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            api_version: None,
                            field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                        }),
                        ..Default::default()
                    }),
                };
                for c in spec
                    .containers
                    .iter_mut()
                    .chain(spec.init_containers.iter_mut().flatten())
                {
                    let list = c.env.get_or_insert_with(Vec::new);
                    if !list.iter().any(|e| e.name == env.name) {
                        list.push(env.clone());
                    }
                }
            }
        }
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_round_trip() {
        let set = parse_indexes("0-2,4,7-8");
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 4, 7, 8]);
        assert_eq!(format_indexes(&set), "0-2,4,7-8");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert_eq!(format_indexes(&[5].into_iter().collect()), "5");
        assert!(parse_indexes("").is_empty());
    }

    #[test]
    fn failure_backoff_doubles_up_to_six_minutes() {
        assert_eq!(backoff_for(0, 0, 0), Duration::ZERO);
        assert_eq!(backoff_for(1, 0, 0), Duration::from_secs(10));
        assert_eq!(backoff_for(1, 0, 4_000), Duration::from_secs(6));
        assert_eq!(backoff_for(3, 0, 0), Duration::from_secs(40));
        assert_eq!(backoff_for(10, 0, 0), Duration::from_secs(360));
        assert_eq!(backoff_for(2, 0, 60_000), Duration::ZERO);
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "sq", "namespace": "default", "uid": "u1"},
            "spec": {"completionMode": "Indexed", "completions": 3,
                     "template": {"metadata": {"labels": {"a": "b"}},
                                  "spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .unwrap();
        let p = pod_from_template(&job, Some(2));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("sq-2-"));
        assert_eq!(completion_index(&p), Some(2));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("sq-2"));
        assert_eq!(
            spec.containers[0].env.as_ref().unwrap()[0].name,
            "JOB_COMPLETION_INDEX"
        );
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
        let plain = pod_from_template(&job, None);
        assert_eq!(plain.metadata.generate_name.as_deref(), Some("sq-"));
        assert_eq!(completion_index(&plain), None);
    }
}
