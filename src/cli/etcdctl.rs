//! `minik etcdctl …`: a built-in subset of etcdctl (v3), already pointed at the profile's store
//! with its certificates, so `minik etcdctl get / --prefix --keys-only` works with no flags.
//!
//! Commands and output follow etcdctl 3.4's `simple` format: `get`, `put`, `del`, `watch`,
//! `member list`, `endpoint status`, `endpoint health`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use tonic::transport::Channel;

use crate::cluster::profile::{DEFAULT_PROFILE, Profile};
use crate::cluster::{backup, setup};
use crate::etcd::client::{self, ClientConfig};
use crate::etcd::proto::etcdserverpb::{
    DeleteRangeRequest, MemberListRequest, PutRequest, RangeRequest, StatusRequest,
    WatchCreateRequest, WatchRequest, cluster_client::ClusterClient, kv_client::KvClient,
    maintenance_client::MaintenanceClient, watch_client::WatchClient, watch_request,
};
use crate::etcd::proto::mvccpb::event::EventType;

#[derive(Args, Debug)]
pub struct EtcdctlArgs {
    /// The profile (cluster) name.
    #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
    pub name: String,
    #[command(subcommand)]
    pub command: EtcdctlCommand,
}

#[derive(Subcommand, Debug)]
pub enum EtcdctlCommand {
    /// Gets the key or a range of keys.
    Get {
        key: String,
        range_end: Option<String>,
        /// Get keys with a matching prefix.
        #[arg(long)]
        prefix: bool,
        /// Get keys greater than or equal to the given key.
        #[arg(long)]
        from_key: bool,
        /// Get only the keys.
        #[arg(long)]
        keys_only: bool,
        /// Only write values.
        #[arg(long)]
        print_value_only: bool,
        /// Get only the count.
        #[arg(long)]
        count_only: bool,
        /// Maximum number of results.
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Revision to read at (0 = latest).
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
    /// Puts the given key into the store.
    Put { key: String, value: String },
    /// Removes the key or a range of keys.
    Del {
        key: String,
        range_end: Option<String>,
        #[arg(long)]
        prefix: bool,
        #[arg(long)]
        from_key: bool,
    },
    /// Watches events on a key or prefix (until interrupted).
    Watch {
        key: String,
        range_end: Option<String>,
        #[arg(long)]
        prefix: bool,
        /// Revision to start watching from.
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Get the previous key-value pair before the event happened.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Membership commands.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Endpoint commands.
    Endpoint {
        #[command(subcommand)]
        command: EndpointCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Lists all members in the cluster.
    List,
}

#[derive(Subcommand, Debug)]
pub enum EndpointCommand {
    /// Prints the status of the endpoint.
    Status,
    /// Checks the health of the endpoint.
    Health,
}

/// etcdctl's range for KEY [RANGE_END] with --prefix / --from-key.
fn range(key: &str, end: Option<&str>, prefix: bool, from_key: bool) -> (Vec<u8>, Vec<u8>) {
    let k = key.as_bytes().to_vec();
    if prefix {
        if k.is_empty() {
            return (vec![0], vec![0]);
        }
        let mut e = k.clone();
        while let Some(last) = e.pop() {
            if last < 0xff {
                e.push(last + 1);
                return (k, e);
            }
        }
        return (k, vec![0]);
    }
    if from_key {
        return (k, vec![0]);
    }
    (k, end.map(|e| e.as_bytes().to_vec()).unwrap_or_default())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The client config for the profile's store (or its external etcd).
fn target(profile: &Profile) -> anyhow::Result<ClientConfig> {
    let cfg = setup::load_config(profile)?;
    if cfg.etcd.servers.is_empty() {
        Ok(backup::store_client(profile, &cfg))
    } else {
        Ok(ClientConfig {
            servers: cfg.etcd.servers.clone(),
            ..Default::default()
        })
    }
}

pub fn run(a: EtcdctlArgs) -> anyhow::Result<ExitCode> {
    let profile = Profile::named(&a.name)?;
    if !profile.exists() {
        anyhow::bail!(
            "profile {:?} does not exist (`minik profile list`)",
            profile.name
        );
    }
    let target = target(&profile)?;
    super::runtime()?.block_on(async move {
        let channel = client::connect(&target)
            .await
            .context("connecting to the cluster's store (is it running? `minik status`)")?;
        tokio::select! {
            r = command(a.command, channel, &target) => r,
            _ = super::shutdown_signal() => Ok(ExitCode::SUCCESS),
        }
    })
}

async fn command(
    cmd: EtcdctlCommand,
    ch: Channel,
    target: &ClientConfig,
) -> anyhow::Result<ExitCode> {
    let endpoint = target.servers.first().cloned().unwrap_or_default();
    match cmd {
        EtcdctlCommand::Get {
            key,
            range_end,
            prefix,
            from_key,
            keys_only,
            print_value_only,
            count_only,
            limit,
            rev,
        } => {
            let (key, range_end) = range(&key, range_end.as_deref(), prefix, from_key);
            let r = KvClient::new(ch)
                .max_decoding_message_size(usize::MAX)
                .range(RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision: rev,
                    keys_only,
                    count_only,
                    ..Default::default()
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if count_only {
                println!("{}", r.count);
            }
            for kv in r.kvs {
                if !print_value_only {
                    println!("{}", text(&kv.key));
                }
                if !keys_only {
                    println!("{}", text(&kv.value));
                }
            }
        }
        EtcdctlCommand::Put { key, value } => {
            KvClient::new(ch)
                .put(PutRequest {
                    key: key.into_bytes(),
                    value: value.into_bytes(),
                    ..Default::default()
                })
                .await
                .map_err(status_error)?;
            println!("OK");
        }
        EtcdctlCommand::Del {
            key,
            range_end,
            prefix,
            from_key,
        } => {
            let (key, range_end) = range(&key, range_end.as_deref(), prefix, from_key);
            let r = KvClient::new(ch)
                .delete_range(DeleteRangeRequest {
                    key,
                    range_end,
                    ..Default::default()
                })
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{}", r.deleted);
        }
        EtcdctlCommand::Watch {
            key,
            range_end,
            prefix,
            rev,
            prev_kv,
        } => {
            let (key, range_end) = range(&key, range_end.as_deref(), prefix, false);
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        key,
                        range_end,
                        start_revision: rev,
                        prev_kv,
                        ..Default::default()
                    },
                )),
            })
            .await
            .ok();
            let mut stream = WatchClient::new(ch)
                .max_decoding_message_size(usize::MAX)
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map_err(status_error)?
                .into_inner();
            while let Some(resp) = stream.message().await.map_err(status_error)? {
                if resp.canceled {
                    anyhow::bail!("watch is canceled by the server: {}", resp.cancel_reason);
                }
                for ev in resp.events {
                    let kind = if ev.r#type == EventType::Delete as i32 {
                        "DELETE"
                    } else {
                        "PUT"
                    };
                    println!("{kind}");
                    if let Some(p) = ev.prev_kv.filter(|_| prev_kv) {
                        println!("{}\n{}", text(&p.key), text(&p.value));
                    }
                    if let Some(kv) = ev.kv {
                        println!("{}\n{}", text(&kv.key), text(&kv.value));
                    }
                }
            }
            drop(tx);
        }
        EtcdctlCommand::Member {
            command: MemberCommand::List,
        } => {
            let r = ClusterClient::new(ch)
                .member_list(MemberListRequest::default())
                .await
                .map_err(status_error)?
                .into_inner();
            for m in r.members {
                println!(
                    "{:x}, started, {}, {}, {}, {}",
                    m.id,
                    m.name,
                    m.peer_urls.join(","),
                    m.client_urls.join(","),
                    m.is_learner
                );
            }
        }
        EtcdctlCommand::Endpoint {
            command: EndpointCommand::Status,
        } => {
            let r = MaintenanceClient::new(ch)
                .status(StatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let id = r.header.as_ref().map_or(0, |h| h.member_id);
            println!(
                "{endpoint}, {id:x}, {}, {}, {}, {}, {}, {}, {}, {}",
                r.version,
                super::etcd::human_bytes(u64::try_from(r.db_size).unwrap_or(0)),
                r.leader == id,
                r.is_learner,
                r.raft_term,
                r.raft_index,
                r.raft_applied_index,
                r.errors.join(", ")
            );
        }
        EtcdctlCommand::Endpoint {
            command: EndpointCommand::Health,
        } => {
            // etcdctl's check: a linearizable read of a key that need not exist.
            let t = Instant::now();
            let r = KvClient::new(ch)
                .range(RangeRequest {
                    key: b"health".to_vec(),
                    ..Default::default()
                })
                .await;
            match r {
                Ok(_) => println!(
                    "{endpoint} is healthy: successfully committed proposal: took = {:?}",
                    t.elapsed()
                ),
                Err(e) => {
                    println!(
                        "{endpoint} is unhealthy: failed to commit proposal: {}",
                        e.message()
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// etcdctl prints gRPC errors as "Error: <message>".
fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_etcdctl_makes_them() {
        assert_eq!(
            range("/a", None, true, false),
            (b"/a".to_vec(), b"/b".to_vec())
        );
        assert_eq!(range("", None, true, false), (vec![0], vec![0]));
        assert_eq!(range("k", None, false, true), (b"k".to_vec(), vec![0]));
        assert_eq!(
            range("a", Some("c"), false, false),
            (b"a".to_vec(), b"c".to_vec())
        );
        assert_eq!(range("a", None, false, false), (b"a".to_vec(), vec![]));
    }
}
