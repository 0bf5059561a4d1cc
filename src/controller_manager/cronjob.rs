//! The cronjob controller: creates a Job from a CronJob's `jobTemplate` at each time its
//! `schedule` names.
//!
//! A CronJob (batch/v1) is a cron line for the cluster: `schedule` in cron syntax (see
//! [`super::cron`]), read in `spec.timeZone` (an IANA name; UTC when unset, as in a kubeadm
//! control plane). Each sync of a cronjob key:
//!
//! - reconciles `status.active` with the Jobs it controls: a finished Job leaves the list
//!   (`SawCompletedJob`), a vanished one too (`MissingJob`), an unfinished Job it controls but
//!   did not list is reported (`UnexpectedJob` — e.g. one made by
//!   `kubectl create job --from=cronjob/NAME`) and otherwise left alone; the newest completion
//!   of a successful Job is `status.lastSuccessfulTime`;
//! - deletes the oldest finished Jobs beyond `successfulJobsHistoryLimit` (3) and
//!   `failedJobsHistoryLimit` (1) (`SuccessfulDelete`);
//! - unless suspended, finds the most recent scheduled time not yet run since
//!   `lastScheduleTime` (or the CronJob's creation). Only the most recent missed time runs;
//!   more than 100 missed times is warned about (`TooManyMissedTimes`), and a time older than
//!   `startingDeadlineSeconds` is skipped (`MissSchedule`). With `concurrencyPolicy: Forbid` a
//!   time is skipped while a Job is active (`JobAlreadyActive`); with `Replace` the active Jobs
//!   are deleted first. The Job is named `<cronjob>-<scheduled time in minutes since the
//!   epoch>` (so it is never created twice for one time), carries the annotation
//!   `batch.kubernetes.io/cronjob-scheduled-timestamp` and the CronJob as its controller
//!   (`SuccessfulCreate`), and joins `status.active`; `lastScheduleTime` records the time.
//!
//! Nothing polls: after each sync the key is queued again for the next scheduled time
//! (+100 ms), and Job changes wake their CronJob.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::reflector::ObjectRef;

use super::Ctx;
use super::cron::{self, Schedule};
use super::informer::Queue;
use super::job::finished_condition;
use super::util::{self, Events};

/// The annotation with a Job's scheduled time (RFC 3339, in the CronJob's time zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Requeue this long after a scheduled time, against clock skew (`nextScheduleDelta`).
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);

pub struct CronJobController {
    ctx: Arc<Ctx>,
    queue: Arc<Queue>,
    events: Events,
}

pub fn start(ctx: &Arc<Ctx>, workers: usize) {
    let queue = Queue::new("cronjob");
    let c = Arc::new(CronJobController {
        ctx: ctx.clone(),
        queue: queue.clone(),
        events: Events::new(ctx.client.clone(), "cronjob-controller"),
    });
    let q = queue.clone();
    ctx.inf
        .cronjobs
        .on_change(move |cj, _| q.add(util::key_of(&cj.metadata)));
    let q = queue.clone();
    ctx.inf.jobs.on_change(move |job, _| {
        if let Some(r) = util::controller_ref(&job.metadata)
            && r.kind == "CronJob"
        {
            q.add(format!(
                "{}/{}",
                job.metadata.namespace.as_deref().unwrap_or(""),
                r.name
            ));
        }
    });
    let c2 = c.clone();
    c.queue.run_when_synced(ctx, workers, move |key| {
        let c = c2.clone();
        Box::pin(async move { c.sync(&key).await })
    });
}

/// How many scheduled times were missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    None,
    Few,
    Many,
}

/// What [`most_recent_schedule_time`] finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recent {
    /// The time scheduling counts from: the last scheduled time, or the creation time (or the
    /// starting deadline, when later).
    pub earliest: Timestamp,
    /// The most recent scheduled time at or before now, after `earliest`.
    pub most_recent: Option<Timestamp>,
    pub missed: Missed,
}

/// The real `mostRecentScheduleTime`: the latest scheduled time in (earliest, now], and how
/// many were missed (estimated from the interval between two runs, as Kubernetes does, so
/// that a clock decades off does not make it list them all).
pub fn most_recent_schedule_time(
    created: Timestamp,
    last_scheduled: Option<Timestamp>,
    starting_deadline_seconds: Option<i64>,
    now: Timestamp,
    schedule: &Schedule,
    include_deadline: bool,
) -> Result<Recent, String> {
    let mut earliest = last_scheduled.unwrap_or(created);
    if include_deadline && let Some(d) = starting_deadline_seconds {
        let deadline = Timestamp::from_second(now.as_second().saturating_sub(d))
            .unwrap_or(Timestamp::MIN)
            .checked_add(jiff::SignedDuration::from_nanos(i64::from(
                now.subsec_nanosecond(),
            )))
            .unwrap_or(now);
        if deadline > earliest {
            earliest = deadline;
        }
    }
    let none = |missed| Recent {
        earliest,
        most_recent: None,
        missed,
    };
    let invalid = || "time difference between two schedules is less than 1 second".to_string();
    let Some(t1) = schedule.next(earliest) else {
        return Err(invalid());
    };
    if now < t1 {
        return Ok(none(Missed::None));
    }
    let Some(t2) = schedule.next(t1) else {
        return Err(invalid());
    };
    if now < t2 {
        return Ok(Recent {
            earliest,
            most_recent: Some(t1),
            missed: Missed::None,
        });
    }
    let between = (t2.as_millisecond() - t1.as_millisecond() + 500) / 1000;
    if between < 1 {
        return Err(invalid());
    }
    let elapsed = (now.as_millisecond() - t1.as_millisecond()) / 1000;
    let missed_count = elapsed / between + 1;
    let potential_earliest = t1
        .checked_add(jiff::SignedDuration::from_secs(
            (missed_count - 2).saturating_mul(between),
        ))
        .unwrap_or(t1);
    let mut most_recent = None;
    let mut t = schedule.next(potential_earliest);
    while let Some(x) = t.filter(|x| *x <= now) {
        most_recent = Some(x);
        t = schedule.next(x);
    }
    let missed = match missed_count {
        n if n > 100 => Missed::Many,
        n if n > 1 => Missed::Few,
        _ => Missed::None,
    };
    Ok(Recent {
        earliest,
        most_recent,
        missed,
    })
}

/// How long until the next scheduled time after the last one run (+100 ms).
pub fn next_schedule_delay(
    created: Timestamp,
    last_scheduled: Option<Timestamp>,
    now: Timestamp,
    schedule: &Schedule,
) -> Option<Duration> {
    let base = match most_recent_schedule_time(created, last_scheduled, None, now, schedule, false)
    {
        Err(_) => now,
        Ok(Recent {
            most_recent: Some(t),
            ..
        }) => t,
        Ok(Recent {
            earliest,
            missed: Missed::None,
            ..
        }) => earliest,
        Ok(_) => now,
    };
    let next = schedule.next(base)?;
    let ms = next.as_millisecond() - now.as_millisecond();
    Some(Duration::from_millis(ms.max(0) as u64) + NEXT_SCHEDULE_DELTA)
}

/// The Job name for a scheduled time: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// Go's RFC 3339 in a zone: `Z` for UTC, otherwise `±hh:mm`.
pub fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        namespace: job.namespace(),
        name: Some(job.name_any()),
        uid: job.uid(),
        resource_version: job.resource_version(),
        ..Default::default()
    }
}

impl CronJobController {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(cj) = self
            .ctx
            .inf
            .cronjobs
            .store()
            .get(&ObjectRef::new(name).within(ns))
        else {
            return Ok(());
        };
        let uid = cj.uid().unwrap_or_default();
        let mut jobs: Vec<Arc<Job>> = self
            .ctx
            .inf
            .jobs
            .store()
            .state()
            .into_iter()
            .filter(|j| j.namespace().as_deref() == Some(ns))
            .filter(|j| util::controller_ref(&j.metadata).is_some_and(|r| r.uid == uid))
            .collect();
        jobs.sort_by_key(|j| j.name_any());
        let mut status = cj.status.clone().unwrap_or_default();
        let mut update = self.cleanup_finished_jobs(&cj, &mut status, &jobs).await;
        let (requeue, changed) = self.sync_cronjob(&cj, &mut status, &jobs).await?;
        update |= changed;
        if update {
            // A full update at the cached resourceVersion (a stale copy gets a conflict).
            let mut updated = (*cj).clone();
            updated.status = Some(status);
            let api: Api<CronJob> = Api::namespaced(self.ctx.client.clone(), ns);
            match api
                .replace_status(name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(d) = requeue {
            self.queue.add_after(key.to_string(), d);
        }
        Ok(())
    }

    /// The real `syncCronJob`: returns when to look again and whether the status changed.
    async fn sync_cronjob(
        &self,
        cj: &CronJob,
        status: &mut k8s_openapi::api::batch::v1::CronJobStatus,
        jobs: &[Arc<Job>],
    ) -> anyhow::Result<(Option<Duration>, bool)> {
        let ns = cj.namespace().unwrap_or_default();
        let jobs_api: Api<Job> = Api::namespaced(self.ctx.client.clone(), &ns);
        let me = util::object_ref(cj);
        let now = util::now();
        let mut update = false;
        let in_active = |status: &k8s_openapi::api::batch::v1::CronJobStatus, uid: &str| {
            status
                .active
                .iter()
                .flatten()
                .any(|r| r.uid.as_deref() == Some(uid))
        };
        for j in jobs {
            let juid = j.uid().unwrap_or_default();
            let found = in_active(status, &juid);
            let finished = finished_condition(j);
            if !found && finished.is_none() {
                // The cache may not have our own status update yet: ask the API.
                let cj_api: Api<CronJob> = Api::namespaced(self.ctx.client.clone(), &ns);
                let fresh = cj_api.get_opt(&cj.name_any()).await?;
                if let Some(r) = fresh
                    .as_ref()
                    .and_then(|f| f.status.as_ref())
                    .and_then(|s| s.active.as_ref())
                    .and_then(|a| a.iter().find(|r| r.uid.as_deref() == Some(&juid)))
                {
                    status.active.get_or_insert_with(Vec::new).push(r.clone());
                    continue;
                }
                self.events.warning(
                    me.clone(),
                    "UnexpectedJob",
                    format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        j.name_any()
                    ),
                );
            } else if found && let Some(c) = finished {
                if let Some(active) = status.active.as_mut() {
                    active.retain(|r| r.uid.as_deref() != Some(&juid));
                }
                self.events.normal(
                    me.clone(),
                    "SawCompletedJob",
                    format!(
                        "Saw completed job: {}, condition: {}",
                        j.name_any(),
                        c.type_
                    ),
                );
                update = true;
            }
            if finished.is_some_and(|c| c.type_ == "Complete")
                && let Some(done) = j.status.as_ref().and_then(|s| s.completion_time.clone())
                && status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|t| done.0 > t.0)
            {
                status.last_successful_time = Some(done);
                update = true;
            }
        }
        // Active Jobs that are gone.
        for r in status.active.clone().unwrap_or_default() {
            let ruid = r.uid.clone().unwrap_or_default();
            if jobs.iter().any(|j| j.uid().as_deref() == Some(&ruid)) {
                continue;
            }
            // The cache may lag behind a Job just created: ask the API.
            let rname = r.name.clone().unwrap_or_default();
            match jobs_api.get_opt(&rname).await? {
                Some(j) if j.uid().as_deref() == Some(&ruid) => {}
                _ => {
                    self.events.normal(
                        me.clone(),
                        "MissingJob",
                        format!("Active job went missing: {rname}"),
                    );
                    if let Some(active) = status.active.as_mut() {
                        active.retain(|x| x.uid.as_deref() != Some(&ruid));
                    }
                    update = true;
                }
            }
        }
        if cj.metadata.deletion_timestamp.is_some() {
            return Ok((None, update));
        }
        let spec = match cj.spec.as_ref() {
            Some(s) => s,
            None => return Ok((None, update)),
        };
        let mut tz = TimeZone::UTC;
        if let Some(zone) = spec.time_zone.as_deref() {
            match cron::load_location(zone) {
                Ok(z) => tz = z,
                Err(e) => {
                    self.events.warning(
                        me,
                        "UnknownTimeZone",
                        format!("invalid timeZone: {zone:?}: {e}"),
                    );
                    return Ok((None, update));
                }
            }
        }
        if spec.suspend == Some(true) {
            return Ok((None, update));
        }
        if spec.schedule.contains("TZ") {
            self.events.warning(
                me.clone(),
                "UnsupportedSchedule",
                format!(
                    "CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
                    spec.schedule
                ),
            );
        }
        let sched = match Schedule::parse_in(&spec.schedule, tz.clone()) {
            Ok(s) => s,
            Err(e) => {
                self.events.warning(
                    me,
                    "UnparseableSchedule",
                    format!("unparseable schedule: {:?} : {e}", spec.schedule),
                );
                return Ok((None, update));
            }
        };
        let created = cj
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(now);
        let last = |status: &k8s_openapi::api::batch::v1::CronJobStatus| {
            status.last_schedule_time.as_ref().map(|t| t.0)
        };
        let deadline = spec.starting_deadline_seconds;
        let recent =
            match most_recent_schedule_time(created, last(status), deadline, now, &sched, true) {
                Ok(r) => r,
                Err(e) => {
                    self.events.warning(
                        me,
                        "InvalidSchedule",
                        format!("invalid schedule: {} : {e}", spec.schedule),
                    );
                    return Ok((None, update));
                }
            };
        let Some(scheduled) = recent.most_recent else {
            return Ok((
                next_schedule_delay(created, last(status), now, &sched),
                update,
            ));
        };
        if recent.missed == Missed::Many {
            self.events.warning(
                me.clone(),
                "TooManyMissedTimes",
                "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
            );
        }
        let requeue = |status: &k8s_openapi::api::batch::v1::CronJobStatus| {
            next_schedule_delay(created, last(status), now, &sched)
        };
        if let Some(d) = deadline
            && scheduled.as_second().saturating_add(d) < now.as_second()
        {
            self.events.warning(
                me,
                "MissSchedule",
                format!(
                    "Missed scheduled time to start a job: {}",
                    scheduled
                        .to_zoned(TimeZone::UTC)
                        .strftime("%a, %d %b %Y %H:%M:%S %z")
                ),
            );
            return Ok((requeue(status), update));
        }
        let name = job_name(&cj.name_any(), scheduled);
        let already = status
            .active
            .iter()
            .flatten()
            .any(|r| r.name.as_deref() == Some(name.as_str()))
            || last(status) == Some(scheduled);
        if already {
            return Ok((requeue(status), update));
        }
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        let active_count = status.active.as_ref().map(|a| a.len()).unwrap_or(0);
        if policy == "Forbid" && active_count > 0 {
            self.events.normal(
                me,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            );
            return Ok((requeue(status), update));
        }
        if policy == "Replace" {
            for r in status.active.clone().unwrap_or_default() {
                let rname = r.name.clone().unwrap_or_default();
                if !self.delete_job(cj, status, &rname, r.uid.as_deref()).await {
                    anyhow::bail!("could not replace job {ns}/{rname}");
                }
                update = true;
            }
        }

        let job = job_from_template(cj, scheduled, &tz);
        let created_job = match jobs_api.create(&PostParams::default(), &job).await {
            Ok(j) => {
                self.events.normal(
                    me.clone(),
                    "SuccessfulCreate",
                    format!("Created job {}", j.name_any()),
                );
                j
            }
            Err(e) if util::is_conflict(&e) => {
                // Made by an earlier sync whose status update was lost, or by someone else.
                let Some(j) = jobs_api.get_opt(&name).await? else {
                    return Err(e.into());
                };
                let ours = util::controller_ref(&j.metadata)
                    .is_some_and(|r| Some(&r.uid) == cj.metadata.uid.as_ref());
                if !ours || in_active(status, &j.uid().unwrap_or_default()) {
                    return Ok((None, update));
                }
                j
            }
            Err(e) => {
                self.events.warning(
                    me,
                    "FailedCreate",
                    format!("Error creating job: {}", util::error_message(&e)),
                );
                return Err(e.into());
            }
        };
        status
            .active
            .get_or_insert_with(Vec::new)
            .push(job_ref(&created_job));
        status.last_schedule_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            scheduled,
        ));
        Ok((requeue(status), true))
    }

    /// Deletes finished Jobs beyond the history limits, oldest first.
    async fn cleanup_finished_jobs(
        &self,
        cj: &CronJob,
        status: &mut k8s_openapi::api::batch::v1::CronJobStatus,
        jobs: &[Arc<Job>],
    ) -> bool {
        let Some(spec) = cj.spec.as_ref() else {
            return false;
        };
        let mut succeeded: Vec<&Arc<Job>> = Vec::new();
        let mut failed: Vec<&Arc<Job>> = Vec::new();
        for j in jobs {
            match finished_condition(j).map(|c| c.type_.as_str()) {
                Some("Complete") => succeeded.push(j),
                Some("Failed") => failed.push(j),
                _ => {}
            }
        }
        let mut update = false;
        for (mut list, limit) in [
            (succeeded, spec.successful_jobs_history_limit),
            (failed, spec.failed_jobs_history_limit),
        ] {
            let Some(limit) = limit else { continue };
            let surplus = list.len().saturating_sub(limit.max(0) as usize);
            if surplus == 0 {
                continue;
            }
            // Oldest start first; Jobs that never started last; then by name.
            list.sort_by_key(|j| {
                let start = j
                    .status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0);
                (start.is_none(), start, j.name_any())
            });
            for j in list.into_iter().take(surplus) {
                if self
                    .delete_job(cj, status, &j.name_any(), j.uid().as_deref())
                    .await
                {
                    update = true;
                }
            }
        }
        update
    }

    /// Deletes a Job (background propagation) and drops it from `status.active`.
    async fn delete_job(
        &self,
        cj: &CronJob,
        status: &mut k8s_openapi::api::batch::v1::CronJobStatus,
        name: &str,
        uid: Option<&str>,
    ) -> bool {
        let api: Api<Job> =
            Api::namespaced(self.ctx.client.clone(), &cj.namespace().unwrap_or_default());
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) => {}
            Err(e) => {
                self.events.warning(
                    util::object_ref(cj),
                    "FailedDelete",
                    format!("Deleted job: {}", util::error_message(&e)),
                );
                return false;
            }
        }
        if let Some(active) = status.active.as_mut() {
            active.retain(|r| r.uid.as_deref() != uid);
        }
        self.events.normal(
            util::object_ref(cj),
            "SuccessfulDelete",
            format!("Deleted job {name}"),
        );
        true
    }
}

/// The Job for a scheduled time: the template's labels, annotations and spec, the scheduled
/// time annotation, and the CronJob as controller.
pub fn job_from_template(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), rfc3339_in(scheduled, tz));
    let mut job = Job {
        metadata: Default::default(),
        spec: template.spec,
        status: None,
    };
    job.metadata.name = Some(job_name(&cj.name_any(), scheduled));
    job.metadata.namespace = cj.namespace();
    job.metadata.labels = tmeta.labels;
    job.metadata.annotations = Some(annotations);
    job.metadata.owner_references = Some(vec![util::new_controller_ref(cj)]);
    job
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn every_minute() -> Schedule {
        Schedule::parse("* * * * *").unwrap()
    }

    #[test]
    fn nothing_due_before_the_first_time() {
        let r = most_recent_schedule_time(
            ts("2024-01-01T00:00:10Z"),
            None,
            None,
            ts("2024-01-01T00:00:50Z"),
            &every_minute(),
            true,
        )
        .unwrap();
        assert_eq!(r.most_recent, None);
        assert_eq!(r.missed, Missed::None);
        assert_eq!(
            next_schedule_delay(
                ts("2024-01-01T00:00:10Z"),
                None,
                ts("2024-01-01T00:00:50Z"),
                &every_minute()
            ),
            Some(Duration::from_millis(10_100))
        );
    }

    #[test]
    fn the_time_just_passed_is_due() {
        let r = most_recent_schedule_time(
            ts("2024-01-01T00:00:10Z"),
            None,
            None,
            ts("2024-01-01T00:01:00.2Z"),
            &every_minute(),
            true,
        )
        .unwrap();
        assert_eq!(r.most_recent, Some(ts("2024-01-01T00:01:00Z")));
        assert_eq!(r.missed, Missed::None);
        // Once it ran, the next is a minute later.
        assert_eq!(
            next_schedule_delay(
                ts("2024-01-01T00:00:10Z"),
                Some(ts("2024-01-01T00:01:00Z")),
                ts("2024-01-01T00:01:00.5Z"),
                &every_minute()
            ),
            Some(Duration::from_millis(59_600))
        );
    }

    #[test]
    fn missed_runs_start_only_the_most_recent() {
        let s = Schedule::parse("0 * * * *").unwrap();
        let r = most_recent_schedule_time(
            ts("2024-01-01T00:00:00Z"),
            Some(ts("2024-01-01T01:00:00Z")),
            None,
            ts("2024-01-01T05:30:00Z"),
            &s,
            true,
        )
        .unwrap();
        assert_eq!(r.most_recent, Some(ts("2024-01-01T05:00:00Z")));
        assert_eq!(r.missed, Missed::Few);
        // Over a hundred missed: many.
        let r = most_recent_schedule_time(
            ts("2024-01-01T00:00:00Z"),
            None,
            None,
            ts("2024-01-10T00:30:00Z"),
            &s,
            true,
        )
        .unwrap();
        assert_eq!(r.most_recent, Some(ts("2024-01-10T00:00:00Z")));
        assert_eq!(r.missed, Missed::Many);
    }

    #[test]
    fn starting_deadline_narrows_the_window() {
        let s = Schedule::parse("0 * * * *").unwrap();
        // 200 s of deadline at 05:30: nothing since 05:26:40 is due.
        let r = most_recent_schedule_time(
            ts("2024-01-01T00:00:00Z"),
            None,
            Some(200),
            ts("2024-01-01T05:30:00Z"),
            &s,
            true,
        )
        .unwrap();
        assert_eq!(r.most_recent, None);
        assert_eq!(r.earliest, ts("2024-01-01T05:26:40Z"));
        // With a deadline the >100 missed times are not counted either.
        let r = most_recent_schedule_time(
            ts("2024-01-01T00:00:00Z"),
            None,
            Some(3600),
            ts("2024-01-10T00:30:00Z"),
            &s,
            true,
        )
        .unwrap();
        assert_eq!(r.most_recent, Some(ts("2024-01-10T00:00:00Z")));
        assert_eq!(r.missed, Missed::None);
    }

    #[test]
    fn impossible_schedules_are_invalid() {
        let s = Schedule::parse("0 0 30 2 *").unwrap();
        assert!(
            most_recent_schedule_time(
                ts("2024-01-01T00:00:00Z"),
                None,
                None,
                ts("2024-03-01T00:00:00Z"),
                &s,
                true
            )
            .is_err()
        );
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        let tz = cron::load_location("Europe/Berlin").unwrap();
        let s = Schedule::parse_in("0 9 * * *", tz.clone()).unwrap();
        // 09:00 in Berlin is 08:00 UTC in winter.
        let r = most_recent_schedule_time(
            ts("2024-01-01T00:00:00Z"),
            None,
            None,
            ts("2024-01-01T08:00:30Z"),
            &s,
            true,
        )
        .unwrap();
        let t = r.most_recent.unwrap();
        assert_eq!(t, ts("2024-01-01T08:00:00Z"));
        assert_eq!(rfc3339_in(t, &tz), "2024-01-01T09:00:00+01:00");
        assert_eq!(rfc3339_in(t, &TimeZone::UTC), "2024-01-01T08:00:00Z");
        assert_eq!(job_name("backup", t), "backup-28401600");
    }

    #[test]
    fn jobs_from_the_template() {
        let cj: CronJob = serde_json::from_value(json!({
            "metadata": {"name": "hello", "namespace": "ns", "uid": "u"},
            "spec": {"schedule": "* * * * *",
                     "jobTemplate": {"metadata": {"labels": {"a": "b"}, "annotations": {"x": "y"}},
                                     "spec": {"template": {"spec": {"containers": []}}}}}
        }))
        .unwrap();
        let t = ts("2024-01-01T00:01:00Z");
        let j = job_from_template(&cj, t, &TimeZone::UTC);
        assert_eq!(j.metadata.name.as_deref(), Some("hello-28401121"));
        let ann = j.metadata.annotations.unwrap();
        assert_eq!(ann[SCHEDULED_TIMESTAMP], "2024-01-01T00:01:00Z");
        assert_eq!(ann["x"], "y");
        assert_eq!(j.metadata.labels.unwrap()["a"], "b");
        let o = &j.metadata.owner_references.unwrap()[0];
        assert_eq!((o.kind.as_str(), o.uid.as_str()), ("CronJob", "u"));
    }
}
