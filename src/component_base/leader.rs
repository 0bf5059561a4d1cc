//! Leader election on a Lease in kube-system, as client-go's leaderelection does it: one instance
//! of a component works, the others wait. The holder renews the Lease every 2 s; a Lease not
//! renewed within its duration may be taken over. A holder that cannot renew within the duration
//! exits (as kube-scheduler and kube-controller-manager do: "leaderelection lost"), and the
//! supervisor starts it again.

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

const RENEW: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(500);

/// This process's identity as a holder: `<hostname>_<random>`, as client-go builds it.
pub fn identity() -> String {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("{host}_{:016x}", crate::etcd::lease::random_id())
    })
    .clone()
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// Whether the Lease may be taken: free, ours, or not renewed within its duration.
fn takeable(spec: &LeaseSpec, me: &str) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == me {
        return true;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    match &spec.renew_time {
        Some(t) => jiff::Timestamp::now().as_second() > t.0.as_second() + duration,
        None => true,
    }
}

/// Tries once to take or renew the Lease `name`; `Ok(true)` when this process holds it.
async fn try_hold(api: &Api<Lease>, name: &str, duration: Duration) -> Result<bool, kube::Error> {
    let me = identity();
    let secs = i32::try_from(duration.as_secs()).unwrap_or(15);
    match api.get_opt(name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some("kube-system".into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &lease)
                .await
                .map(|_| true)
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if !takeable(spec, &me) {
                return Ok(false);
            }
            if spec.holder_identity.as_deref() != Some(me.as_str()) {
                spec.acquire_time = Some(now());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                spec.holder_identity = Some(me);
            }
            spec.lease_duration_seconds = Some(secs);
            spec.renew_time = Some(now());
            match api.replace(name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Waits until this process holds the Lease `name` in kube-system, then keeps renewing it in
/// the background; exits the process when the lease is lost.
pub async fn acquire(client: kube::Client, name: &str, duration: Duration) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(client, "kube-system");
    let mut said = false;
    loop {
        match try_hold(&api, name, duration).await {
            Ok(true) => break,
            Ok(false) if !said => {
                tracing::info!(
                    lease = name,
                    "another instance leads; waiting for the lease"
                );
                said = true;
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(lease = name, "leader election: {e}"),
        }
        tokio::time::sleep(RETRY).await;
    }
    tracing::info!(lease = name, identity = %identity(), "successfully acquired lease");
    let name = name.to_string();
    tokio::spawn(async move {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW).await;
            match try_hold(&api, &name, duration).await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %name, "leaderelection lost: another instance holds the lease");
                    std::process::exit(1);
                }
                Err(e) => {
                    tracing::warn!(lease = %name, "renewing the lease: {e}");
                    if last_ok.elapsed() >= duration {
                        tracing::error!(lease = %name, "leaderelection lost: could not renew in time");
                        std::process::exit(1);
                    }
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_lease_is_takeable() {
        let fresh = LeaseSpec {
            holder_identity: Some("other".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(now()),
            ..Default::default()
        };
        assert!(!takeable(&fresh, "me"));
        assert!(takeable(&fresh, "other"));
        let stale = LeaseSpec {
            renew_time: Some(MicroTime(
                jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - 60).unwrap(),
            )),
            ..fresh
        };
        assert!(takeable(&stale, "me"));
        assert!(takeable(&LeaseSpec::default(), "me"));
    }
}
