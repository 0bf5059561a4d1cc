//! `minik etcd …`: serve the store, and work with its snapshot images.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::cluster::profile::{DEFAULT_PROFILE, Profile};
use crate::cluster::{backup, setup};
use crate::etcd::server::{self, ServeConfig, TlsFiles};
use crate::etcd::snapshot;

#[derive(Subcommand, Debug)]
pub enum EtcdCommand {
    /// Run the etcd-compatible store (the process the cluster's supervisor runs as `etcd`).
    Serve(ServeArgs),
    /// Restore a snapshot: into the profile's running cluster (stops the control plane,
    /// restores, starts it again), or with --data-dir into a new data dir.
    Restore(RestoreArgs),
    /// Take a consistent snapshot of the running cluster's store (over mutual TLS).
    Backup(BackupArgs),
    /// List the profile's snapshots with their revision and size.
    Backups {
        /// The profile (cluster) name.
        #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
        name: String,
    },
    /// Inspect snapshot images.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

/// Flags are named as etcd names them.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Human-readable name of this member.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Directory of the database (default: `<name>.etcd`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated URLs to serve clients on (http:// or https://).
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    pub listen_client_urls: Vec<String>,
    /// Comma-separated client URLs to advertise in the member list (default: the listen URLs).
    #[arg(long, value_delimiter = ',')]
    pub advertise_client_urls: Vec<String>,
    /// Peer URLs shown in the member list (the store is a single member and has no peers).
    #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
    pub initial_advertise_peer_urls: Vec<String>,
    /// Server certificate (PEM) for https client URLs.
    #[arg(long, requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// CA bundle client certificates are checked against.
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by --trusted-ca-file (`--client-cert-auth` or
    /// `--client-cert-auth=true`, as etcd takes it).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    pub client_cert_auth: bool,
    /// How often idle watchers that asked for progress notifications get one (e.g. 10m, 5s).
    #[arg(long = "experimental-watch-progress-notify-interval", default_value = "10m", value_parser = parse_duration)]
    pub watch_progress_notify_interval: Duration,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The snapshot image.
    pub file: PathBuf,
    /// Restore into this new data dir (must not exist or be empty) instead of a profile.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The profile (cluster) to restore into.
    #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE", conflicts_with = "data_dir")]
    pub name: String,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The snapshot file (default: `<state>/backups/<timestamp>.snap`).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// The profile (cluster) name.
    #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
    pub name: String,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Verify an image and show its hash, revision, key count and size.
    Status {
        file: PathBuf,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value = "simple")]
        write_out: OutputFormat,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Simple,
    Table,
    Json,
}

pub use crate::cluster::config::parse_duration;

pub fn run(cmd: EtcdCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EtcdCommand::Serve(a) => {
            let tls = match (a.cert_file, a.key_file) {
                (Some(cert_file), Some(key_file)) => Some(TlsFiles {
                    cert_file,
                    key_file,
                    trusted_ca_file: a.trusted_ca_file,
                    client_cert_auth: a.client_cert_auth,
                }),
                _ => {
                    if a.client_cert_auth || a.trusted_ca_file.is_some() {
                        anyhow::bail!(
                            "--client-cert-auth and --trusted-ca-file need --cert-file and --key-file"
                        );
                    }
                    None
                }
            };
            let advertise = if a.advertise_client_urls.is_empty() {
                a.listen_client_urls.clone()
            } else {
                a.advertise_client_urls
            };
            let config = ServeConfig {
                data_dir: a
                    .data_dir
                    .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", a.name))),
                name: a.name,
                listen_client_urls: a.listen_client_urls,
                client_urls: advertise,
                peer_urls: a.initial_advertise_peer_urls,
                tls,
                watch_progress_interval: a.watch_progress_notify_interval,
            };
            super::runtime()?.block_on(server::serve(config, super::shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        EtcdCommand::Restore(RestoreArgs {
            file,
            data_dir: Some(data_dir),
            ..
        }) => {
            let st = snapshot::restore(&file, &data_dir)?;
            println!(
                "restored snapshot {} into {} (revision {}, {} keys)",
                file.display(),
                data_dir.display(),
                st.revision,
                st.total_keys
            );
            Ok(ExitCode::SUCCESS)
        }
        EtcdCommand::Restore(a) => restore_profile(&a.file, &a.name),
        EtcdCommand::Backup(a) => {
            let profile = existing(&a.name)?;
            let cfg = setup::load_config(&profile)?;
            let info = super::runtime()?.block_on(backup::save(&profile, &cfg, a.output, ""))?;
            println!(
                "Snapshot saved to {} (revision {}, {} keys, {})",
                info.path.display(),
                info.revision,
                info.keys,
                human_bytes(info.size)
            );
            Ok(ExitCode::SUCCESS)
        }
        EtcdCommand::Backups { name } => {
            let profile = existing(&name)?;
            let list = backup::list(&profile);
            if list.is_empty() {
                println!("No snapshots in {}", profile.backups_dir().display());
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<44} {:>9} {:>6} {:>9}  TIME",
                "FILE", "REVISION", "KEYS", "SIZE"
            );
            for b in list {
                match b {
                    Ok(b) => println!(
                        "{:<44} {:>9} {:>6} {:>9}  {}",
                        b.path
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        b.revision,
                        b.keys,
                        human_bytes(b.size),
                        b.time
                    ),
                    Err((path, e)) => println!("{:<44} unreadable: {e}", path.display()),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        EtcdCommand::Snapshot(SnapshotCommand::Status { file, write_out }) => {
            let st = snapshot::status(&file)?;
            match write_out {
                OutputFormat::Simple => println!(
                    "{:x}, {}, {}, {}",
                    st.hash,
                    st.revision,
                    st.total_keys,
                    human_bytes(st.total_size)
                ),
                OutputFormat::Json => println!(
                    "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}",
                    st.hash, st.revision, st.total_keys, st.total_size
                ),
                OutputFormat::Table => {
                    let row = [
                        format!("{:x}", st.hash),
                        st.revision.to_string(),
                        st.total_keys.to_string(),
                        human_bytes(st.total_size),
                    ];
                    print_table(&["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"], &row);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn existing(name: &str) -> anyhow::Result<Profile> {
    let profile = Profile::named(name)?;
    if !profile.exists() {
        anyhow::bail!(
            "profile {:?} does not exist (`minik profile list`)",
            profile.name
        );
    }
    Ok(profile)
}

/// Restores a snapshot into a profile: stop the control plane, replace the store's data, start
/// it again if it was running. The cluster comes back holding exactly the snapshot's objects.
fn restore_profile(file: &std::path::Path, name: &str) -> anyhow::Result<ExitCode> {
    let profile = existing(name)?;
    let cfg = setup::load_config(&profile)?;
    if !cfg.etcd.servers.is_empty() {
        anyhow::bail!("this profile uses an external etcd: restore it with that etcd's tools");
    }
    // Check the file before stopping anything.
    let st = snapshot::status(file)?;
    let was_running = super::lifecycle::stop(&profile)?;
    if was_running {
        println!("* Stopped the control plane of profile {:?}", profile.name);
    }
    backup::restore_data(&profile, file)?;
    println!(
        "* Restored {} (revision {}, {} keys)",
        file.display(),
        st.revision,
        st.total_keys
    );
    if !was_running {
        println!(
            "* Profile {:?} was not running; `minik up` starts it with the restored data",
            profile.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    super::up::run(super::up::UpArgs::resume(&profile.name))
}

/// Sizes as etcdctl prints them (go-humanize: 1.2 MB, 20 kB).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let e = e.min(UNITS.len() - 1);
    let v = n as f64 / 1000f64.powi(e as i32);
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[e])
    } else {
        format!("{v:.0} {}", UNITS[e])
    }
}

fn print_table(headers: &[&str], row: &[String]) {
    let widths: Vec<usize> = headers
        .iter()
        .zip(row)
        .map(|(h, c)| h.len().max(c.len()) + 2)
        .collect();
    let line: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(*w)))
        .collect::<String>()
        + "+";
    let fmt = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("|{:^w$}", c, w = *w))
            .collect::<String>()
            + "|"
    };
    println!("{line}");
    println!("{}", fmt(headers.to_vec()));
    println!("{line}");
    println!("{}", fmt(row.iter().map(String::as_str).collect()));
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5x").is_err());
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
    }
}
