//! Leader election on a Lease, as kube-controller-manager does it (client-go's leaderelection).
//!
//! Several controller-managers may run (one per control-plane node in a kubeadm HA cluster);
//! only the holder of the Lease `kube-system/kube-controller-manager` runs the controllers. The
//! holder renews `spec.renewTime` every 2 s; the others retry every 2 s and take over once the
//! renew time is older than `leaseDurationSeconds`. A leader that cannot renew within the renew
//! deadline (10 s) exits — the real one exits too, and its supervisor restarts it as a follower.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

use super::util;

pub const LEASE_NAME: &str = "kube-controller-manager";
const RETRY: Duration = Duration::from_secs(2);
const RENEW_DEADLINE: Duration = Duration::from_secs(10);

pub struct LeaderElection {
    api: Api<Lease>,
    identity: String,
    lease_duration: Duration,
}

impl LeaderElection {
    pub fn new(client: Client, identity: String, lease_duration: Duration) -> Self {
        LeaderElection {
            api: Api::namespaced(client, "kube-system"),
            identity,
            lease_duration,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, "successfully acquired lease kube-system/{LEASE_NAME}");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "leader election"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Renews the lease every 2 s; returns when leadership is lost.
    pub async fn hold(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RETRY).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("leaderelection lost: another holder took the lease");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "failed to renew lease");
                    if last_ok.elapsed() > RENEW_DEADLINE {
                        tracing::error!("leaderelection lost: could not renew within the deadline");
                        return;
                    }
                }
            }
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let secs = self.lease_duration.as_secs().max(1) as i32;
        let current = match self.api.get(LEASE_NAME).await {
            Ok(l) => l,
            Err(e) if util::is_not_found(&e) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        namespace: Some("kube-system".into()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if util::is_conflict(&e) => Ok(false),
                    Err(e) => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let mut lease = current.clone();
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        if !ours && !holder.is_empty() {
            let dur = i64::from(spec.lease_duration_seconds.unwrap_or(secs));
            let renewed = spec
                .renew_time
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0);
            if renewed + dur > now.as_second() {
                return Ok(false); // someone else holds a fresh lease
            }
        }
        if !ours {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(secs);
        spec.renew_time = Some(MicroTime(now));
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if util::is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// `<hostname>_<uuid>`, the real holder identity's form.
pub fn identity() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    let host = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".into()
    };
    format!("{host}_{}", uuid_v4())
}

/// A random (version 4) UUID.
pub fn uuid_v4() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        let t = Timestamp::now().as_nanosecond() as u128;
        b = t.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
