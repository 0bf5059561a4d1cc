//! Who holds a port: so that "address in use" can say which process to stop, as a user needs.
//!
//! Linux only: listening sockets are read from `/proc/net/tcp{,6}` (state `0A` = LISTEN) and matched
//! to a process through the socket inodes in `/proc/<pid>/fd`. Anything unreadable (another user's
//! processes, no /proc) just yields no answer.

use std::collections::HashSet;

/// A process listening on a TCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub name: String,
}

/// The socket inodes listening on `port` (any address).
fn listening_inodes(port: u16) -> HashSet<u64> {
    let mut out = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A"
                && local_port == Some(port)
                && let Ok(inode) = inode.parse::<u64>()
                && inode != 0
            {
                out.insert(inode);
            }
        }
    }
    out
}

/// The process listening on `port`, when it can be found.
pub fn holder(port: u16) -> Option<Holder> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|t| {
                    let t = t.to_string_lossy().into_owned();
                    t.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .and_then(|n| n.parse::<u64>().ok())
                })
                .is_some_and(|inode| inodes.contains(&inode))
        });
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            return Some(Holder { pid, name });
        }
    }
    None
}

/// "port 2379 is in use by pid 123 (etcd)", or "port 2379 is in use" when the holder is unknown.
pub fn in_use_message(port: u16) -> String {
    match holder(port) {
        Some(h) => format!("port {port} is in use by pid {} ({})", h.pid, h.name),
        None => format!("port {port} is in use"),
    }
}

/// A port nothing listens on now (the kernel's pick on 127.0.0.1).
pub fn free_port() -> anyhow::Result<u16> {
    use anyhow::Context as _;
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_process_listening() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = holder(port).expect("our own listener is found");
        assert_eq!(h.pid, std::process::id());
        assert!(in_use_message(port).contains(&format!("pid {}", std::process::id())));
        drop(l);
        assert_eq!(holder(port), None);
    }
}
