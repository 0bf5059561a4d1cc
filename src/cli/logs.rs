//! `minik logs [COMPONENT] [-f] [--tail N]`: the components' log files.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use crate::cluster::profile::{DEFAULT_PROFILE, Profile};

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The component (etcd, kube-apiserver, …, or supervisor); all of them when left out.
    pub component: Option<String>,
    /// The profile (cluster) name.
    #[arg(long, short = 'p', default_value = DEFAULT_PROFILE, env = "MINIK_PROFILE")]
    pub name: String,
    /// Keep printing what is appended (one component).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines (-1 = all).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub tail: i64,
}

/// The components that have a log file, sorted.
fn known(profile: &Profile) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(profile.logs_dir())
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".log"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn last_lines(text: &str, n: i64) -> String {
    if n < 0 {
        return text.to_string();
    }
    let lines: Vec<&str> = text.lines().collect();
    let keep = &lines[lines.len().saturating_sub(n as usize)..];
    let mut s = keep.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

pub fn run(a: LogsArgs) -> anyhow::Result<ExitCode> {
    let profile = Profile::named(&a.name)?;
    if !profile.exists() {
        bail!("profile {:?} does not exist", profile.name);
    }
    let names = known(&profile);
    let Some(component) = a.component else {
        if a.follow {
            bail!("-f follows one component: name it ({})", names.join(", "));
        }
        for n in &names {
            let text = std::fs::read_to_string(profile.log_file(n)).unwrap_or_default();
            println!("==> {n} <==");
            print!("{}", last_lines(&text, a.tail));
        }
        return Ok(ExitCode::SUCCESS);
    };
    if !names.contains(&component) {
        bail!(
            "no log for {component:?} in profile {:?}; components with logs: {}",
            profile.name,
            names.join(", ")
        );
    }
    let path = profile.log_file(&component);
    let mut file = std::fs::File::open(&path)?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let mut out = std::io::stdout();
    out.write_all(last_lines(&text, a.tail).as_bytes())?;
    out.flush()?;
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut pos = file.stream_position()?;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < pos {
            // Truncated or replaced: start again from the top.
            file = std::fs::File::open(&path)?;
            pos = 0;
        }
        if len > pos {
            file.seek(SeekFrom::Start(pos))?;
            let mut buf = Vec::new();
            file.read_to_end(&mut buf)?;
            pos += buf.len() as u64;
            if out.write_all(&buf).and_then(|_| out.flush()).is_err() {
                return Ok(ExitCode::SUCCESS); // the reader went away (| head)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_counts_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb\nc\n", -1), "a\nb\nc\n");
        assert_eq!(last_lines("a\n", 0), "");
    }
}
