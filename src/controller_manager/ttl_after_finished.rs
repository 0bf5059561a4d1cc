//! The ttl-after-finished controller: deletes finished Jobs once their
//! `spec.ttlSecondsAfterFinished` has passed.
//!
//! A Job that is Complete or Failed keeps its pods (and its place in `kubectl get jobs`) until
//! someone deletes it. With `ttlSecondsAfterFinished: N` set, this controller deletes it N
//! seconds after it finished (the last transition time of its Complete/Failed condition), with
//! foreground propagation so that its pods go first, as kube-controller-manager's
//! `ttl-after-finished-controller` does. Before deleting it reads the Job again from the API
//! (the TTL may have just been changed) and deletes with a UID precondition. A Job whose TTL
//! has not yet run out is looked at again exactly when it does (`Queue::add_after`).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::reflector::ObjectRef;

use super::Ctx;
use super::informer::Queue;
use super::job::finished_condition;
use super::util;

pub fn start(ctx: &Arc<Ctx>, workers: usize) {
    let queue = Queue::new("ttl-after-finished");
    let q = queue.clone();
    ctx.inf.jobs.on_change(move |job, _| {
        if job.metadata.deletion_timestamp.is_none() && expires_at(job).is_some() {
            q.add(util::key_of(&job.metadata));
        }
    });
    let (c, q) = (ctx.clone(), queue.clone());
    queue.run_when_synced(ctx, workers, move |key| {
        let (c, q) = (c.clone(), q.clone());
        Box::pin(async move { sync(&c, &q, &key).await })
    });
}

/// When a finished Job with a TTL expires.
pub fn expires_at(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = finished_condition(job)?.last_transition_time.as_ref()?.0;
    finished
        .checked_add(jiff::SignedDuration::from_secs(i64::from(ttl)))
        .ok()
}

/// The time left before `job` may be deleted: None when it need not be, zero when it may now.
fn time_left(job: &Job, now: Timestamp) -> Option<Duration> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let at = expires_at(job)?;
    let left = at.as_millisecond() - now.as_millisecond();
    Some(Duration::from_millis(left.max(0) as u64))
}

async fn sync(ctx: &Ctx, queue: &Arc<Queue>, key: &str) -> anyhow::Result<()> {
    let (ns, name) = util::split_key(key);
    let Some(job) = ctx.inf.jobs.store().get(&ObjectRef::new(name).within(ns)) else {
        return Ok(());
    };
    match time_left(&job, util::now()) {
        None => return Ok(()),
        Some(left) if !left.is_zero() => {
            queue.add_after(key.to_string(), left);
            return Ok(());
        }
        Some(_) => {}
    }
    // The cache may be stale: check the TTL on the Job as the API has it now.
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let Some(fresh) = api.get_opt(name).await? else {
        return Ok(());
    };
    match time_left(&fresh, util::now()) {
        None => return Ok(()),
        Some(left) if !left.is_zero() => {
            queue.add_after(key.to_string(), left);
            return Ok(());
        }
        Some(_) => {}
    }
    tracing::debug!(job = key, "cleaning up finished job after its TTL");
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions {
            uid: fresh.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if util::is_not_found(&e) || util::is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expiry_counts_from_the_finish() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "j"},
            "spec": {"ttlSecondsAfterFinished": 30, "template": {}},
            "status": {"conditions": [
                {"type": "Complete", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}
            ]}
        }))
        .unwrap();
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            time_left(&job, t("2024-01-01T00:00:10Z")),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            time_left(&job, t("2024-01-01T00:01:00Z")),
            Some(Duration::ZERO)
        );
        let mut running = job.clone();
        running.status = None;
        assert_eq!(time_left(&running, t("2024-01-01T00:01:00Z")), None);
        let mut no_ttl = job;
        no_ttl.spec.as_mut().unwrap().ttl_seconds_after_finished = None;
        assert_eq!(time_left(&no_ttl, t("2024-01-01T00:01:00Z")), None);
    }
}
