//! `minik bench …`: benchmarks that put minik's components next to the real thing, on this machine.
//!
//! - [`etcd`]: minik's etcd-compatible store against the real etcd, side by side
//!   (`etcdctl check perf`, single-client put latency, a 100k-key Range).
//! - [`apiserver`]: `minik apiserver` over HTTPS on minik's store and on the real etcd, side by
//!   side (single-object latency at 1/10/100 clients, LIST of 10,000 pods, watch fan-out).
//! - [`noop_etcd`]: an etcd KV endpoint that stores nothing: the ceiling of `etcdctl check perf`
//!   on this machine (`minik bench etcd --ceiling`).
//! - [`up`]: `minik up` to a ready control plane, and the idle control plane's memory.
//! - [`scheduler`]: pods bound per second on simulated nodes, end to end.
//!
//! Benchmarks print Markdown to stdout (ready to paste into BENCHMARKS.md) and progress to stderr.
//! Helpers shared by benchmarks live here: temp dirs, free ports, machine info, tables.

pub mod apiserver;
pub mod deployment;
pub mod etcd;
pub mod kubelet;
pub mod noop_etcd;
pub mod scale;
pub mod scheduler;
pub mod up;

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A directory under the system temp dir, removed (with its contents) when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<temp>/<prefix>-<pid>-<nanos>`.
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `n` distinct TCP ports on 127.0.0.1 that were free a moment ago (all bound at once, then
/// released, so they differ from each other).
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// This process's command line, shell-quoted where needed.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes `s` for a POSIX shell unless it is made of safe characters only.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What the machine is, for the header of a benchmark report.
#[derive(Debug, Clone)]
pub struct MachineInfo {
    pub cpus: usize,
    pub cpu_model: Option<String>,
    pub mem_total: Option<String>,
    pub kernel: Option<String>,
    /// Where data dirs live, with the file system type backing it.
    pub data_fs: String,
}

impl MachineInfo {
    pub fn collect(data_dir: &Path) -> MachineInfo {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        });
        let mem_total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
            let kb: u64 = s
                .lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.1} GiB RAM", kb as f64 / (1024.0 * 1024.0)))
        });
        let kernel = std::fs::read_to_string("/proc/version")
            .ok()
            .map(|s| s.trim().to_string());
        let fs = mount_of(data_dir)
            .map(|(mnt, fstype)| format!("{fstype} on {mnt}"))
            .unwrap_or_else(|| "unknown file system".into());
        MachineInfo {
            cpus,
            cpu_model,
            mem_total,
            kernel,
            data_fs: format!("`{}` ({fs})", data_dir.display()),
        }
    }

    /// Markdown list items describing the machine.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let mut cpu = format!("{} CPUs (nproc)", self.cpus);
        if let Some(m) = &self.cpu_model {
            let _ = write!(cpu, ", {m}");
        }
        if let Some(m) = &self.mem_total {
            let _ = write!(cpu, ", {m}");
        }
        let _ = writeln!(s, "- Machine: {cpu}");
        if let Some(k) = &self.kernel {
            let _ = writeln!(s, "- Kernel: `{k}`");
        }
        let _ = writeln!(s, "- Data dirs: {}", self.data_fs);
        s
    }
}

/// The 1, 5 and 15 minute load averages from /proc/loadavg (`"0.12 0.30 0.25"`).
pub fn load_average() -> Option<String> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// The mount point and file system type holding `path` (longest matching /proc/mounts entry).
fn mount_of(path: &Path) -> Option<(String, String)> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mnt, fstype) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mnt)
                .then(|| (mnt.to_string(), fstype.to_string()))
        })
        .max_by_key(|(mnt, _)| mnt.len())
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// A Markdown table, padded so it also reads well as plain text.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers; the first column is left-aligned, the others right.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        let headers: Vec<String> = headers.into_iter().map(Into::into).collect();
        let right = (0..headers.len()).map(|i| i > 0).collect();
        Table {
            headers,
            right,
            rows: Vec::new(),
        }
    }

    /// Left-aligns column `i`.
    pub fn left(mut self, i: usize) -> Table {
        if let Some(r) = self.right.get_mut(i) {
            *r = false;
        }
        self
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| width(&r[i]))
                    .chain([width(&self.headers[i]), 3])
                    .max()
                    .unwrap_or(3)
            })
            .collect();
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, c) in cells.iter().enumerate() {
                let pad = " ".repeat(widths[i] - width(c));
                if self.right[i] {
                    let _ = write!(s, " {pad}{c} |");
                } else {
                    let _ = write!(s, " {c}{pad} |");
                }
            }
            s.push('\n');
            s
        };
        let mut out = line(&self.headers);
        out.push('|');
        for (i, w) in widths.iter().enumerate() {
            if self.right[i] {
                let _ = write!(out, " {}: |", "-".repeat(w - 1));
            } else {
                let _ = write!(out, " {} |", "-".repeat(*w));
            }
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

/// A duration in milliseconds with three significant digits or so (`0.842 ms`, `12.3 ms`, `1520 ms`).
pub fn fmt_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{ms:.3} ms")
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// An integer with thousands separators (`12,345`).
pub fn fmt_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte count in binary units (`97.7 MiB`).
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// User + system CPU time of a process (`"self"` or a pid) from `/proc/<pid>/stat`.
pub(crate) fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start with the state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux architecture minik runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// Polls `probe` (each try bounded by 3 s) every 100 ms until it succeeds, until `child` exits
/// early, or until `timeout` passes (the error says the last reason).
pub(crate) async fn wait_until_ready<F, Fut>(
    child: &mut Option<std::process::Child>,
    timeout: Duration,
    mut probe: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            anyhow::bail!("the process exited early with {status}");
        }
        let last = match tokio::time::timeout(Duration::from_secs(3), probe()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "the probe timed out".to_string(),
        };
        if std::time::Instant::now() > deadline {
            anyhow::bail!("not ready after {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(fmt_thousands(1_234_567), "1,234,567");
        assert_eq!(fmt_thousands(999), "999");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_ms(Duration::from_micros(842)), "0.842 ms");
        assert_eq!(fmt_ms(Duration::from_millis(1520)), "1520 ms");
        assert_eq!(shell_quote("--load=l,xl"), "--load=l,xl");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert!(utc_now().ends_with(" UTC"));
    }

    #[test]
    fn table_renders_markdown() {
        let mut t = Table::new(["metric", "minik"]);
        t.row(["p50", "1.00 ms"]);
        assert_eq!(
            t.render(),
            "| metric |   minik |\n| ------ | ------: |\n| p50    | 1.00 ms |\n"
        );
    }
}
