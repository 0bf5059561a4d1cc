//! `minik etcd …`: serve the store, and work with its snapshot images.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::etcd::server::{self, ServeConfig, TlsFiles};
use crate::etcd::snapshot;

#[derive(Subcommand, Debug)]
pub enum EtcdCommand {
    /// Run the etcd-compatible store (the process the cluster's supervisor runs as `etcd`).
    Serve(ServeArgs),
    /// Restore a snapshot image (from `etcdctl snapshot save`) into a new data dir.
    Restore(RestoreArgs),
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
    /// Require a client certificate signed by --trusted-ca-file.
    #[arg(long)]
    pub client_cert_auth: bool,
    /// How often idle watchers that asked for progress notifications get one (e.g. 10m, 5s).
    #[arg(long = "experimental-watch-progress-notify-interval", default_value = "10m", value_parser = parse_duration)]
    pub watch_progress_notify_interval: Duration,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The snapshot image.
    pub file: PathBuf,
    /// The data dir to create (must not exist or be empty).
    #[arg(long)]
    pub data_dir: PathBuf,
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

/// Parses durations as etcd's flags write them: `500ms`, `5s`, `10m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("{s:?}: missing unit (ms, s, m or h)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a number followed by a unit"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if secs <= 0.0 {
        return Err(format!("{s:?}: must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

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
        EtcdCommand::Restore(a) => {
            let st = snapshot::restore(&a.file, &a.data_dir)?;
            println!(
                "restored snapshot {} into {} (revision {}, {} keys)",
                a.file.display(),
                a.data_dir.display(),
                st.revision,
                st.total_keys
            );
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
