//! The real `etcdctl` (3.4) against minik, compared with the real etcd (3.4).
//!
//! Each test starts a fresh real etcd and a fresh `minik etcd serve`, runs the same etcdctl
//! commands against both and asserts that the transcripts — exit status, stdout and (where it is
//! meaningful) stderr, all passed through [`common::normalize`] — are equal. A failure prints a
//! diff of the two transcripts.
//!
//! Run: `cargo test --test etcdctl_interop` (tests run in parallel; they mostly wait on servers,
//! so `-- --test-threads=8` is faster on a small machine). Needs `/usr/bin/etcd` and
//! `/usr/bin/etcdctl` (Debian `etcd-server`, `etcd-client`); without them the tests fail.
//!
//! `MINIK_INTEROP_SELFTEST=1` replaces minik by a second real etcd: every test must then pass,
//! which shows the normalization hides only what legitimately differs between two servers.

mod common;

use std::process::Output;
use std::thread;
use std::time::Duration;

use common::*;

// ---------------------------------------------------------------------------------------------
// Scenario machinery
// ---------------------------------------------------------------------------------------------

/// What to do with a command's stderr in the transcript.
#[derive(Clone, Copy, PartialEq)]
enum StderrMode {
    /// Record it, normalized.
    Compare,
    /// Record only its last line, normalized (the `Error: …` etcdctl ends with).
    LastLine,
}

/// One server's side of a scenario: runs etcdctl commands and records a normalized transcript.
struct Session<'a> {
    server: &'a Server,
    transcript: String,
}

impl<'a> Session<'a> {
    fn new(server: &'a Server) -> Self {
        Session {
            server,
            transcript: String::new(),
        }
    }

    /// Runs and records `etcdctl ARGS` (stderr compared).
    fn ctl(&mut self, args: &[&str]) -> Output {
        self.exec(args, None, StderrMode::Compare, Creds::Good)
    }

    /// Runs and records `etcdctl ARGS` with `input` on stdin (stderr compared).
    fn ctl_in(&mut self, args: &[&str], input: &str) -> Output {
        self.exec(args, Some(input), StderrMode::Compare, Creds::Good)
    }

    fn exec(
        &mut self,
        args: &[&str],
        input: Option<&str>,
        err: StderrMode,
        creds: Creds,
    ) -> Output {
        let mut cmd = Etcdctl::new(self.server)
            .args(args.iter().copied())
            .creds(creds.clone());
        if let Some(i) = input {
            cmd = cmd.stdin(i);
        }
        let out = cmd.run();
        let shown_args: Vec<String> = args.iter().map(|a| shell_word(a)).collect();
        let creds_note = match creds {
            Creds::Good => String::new(),
            c => format!(" [creds: {c:?}]"),
        };
        self.record(&format!("$ etcdctl {}{creds_note}", shown_args.join(" ")));
        if let Some(i) = input {
            for l in i.lines() {
                self.record(&format!("< {l}"));
            }
        }
        self.record_output(&out, err, true);
        out
    }

    fn record_output(&mut self, out: &Output, err: StderrMode, with_status: bool) {
        if with_status {
            self.record(&format!("[exit {}]", exit_code(&out.status)));
        }
        let stdout = out.out();
        if !stdout.is_empty() {
            self.transcript.push_str(&normalize(&stdout));
            if !stdout.ends_with('\n') {
                self.transcript.push_str("⏎(no newline)\n");
            }
        }
        let stderr = out.err();
        match err {
            StderrMode::Compare => {
                for l in normalize(&stderr).lines() {
                    self.record(&format!("! {l}"));
                }
            }
            StderrMode::LastLine => {
                let last = stderr.trim_end().lines().last().unwrap_or("");
                self.record(&format!("! (last line) {last}"));
            }
        }
    }

    /// Adds a free-form line (e.g. a derived check) to the transcript.
    fn note(&mut self, line: &str) {
        self.record(&format!("# {line}"));
    }

    fn record(&mut self, line: &str) {
        self.transcript.push_str(&normalize(line));
        self.transcript.push('\n');
    }
}

fn shell_word(a: &str) -> String {
    if a.len() > 60 {
        return format!("<{} bytes>", a.len());
    }
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_=.:,".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// Starts a real etcd and minik (with `tls`), runs `scenario` against each (in parallel) and
/// asserts the transcripts are equal.
fn differential(name: &str, tls: Option<&Pki>, scenario: impl Fn(&mut Session) + Sync) {
    let (etcd, minik) = start_pair(tls);
    let run = |server: &Server| {
        let mut s = Session::new(server);
        scenario(&mut s);
        s.transcript
    };
    let (a, b) = thread::scope(|sc| {
        let a = sc.spawn(|| run(&etcd));
        let b = sc.spawn(|| run(&minik));
        (a.join(), b.join())
    });
    let a = a.unwrap_or_else(|e| std::panic::resume_unwind(e));
    let b = match b {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "{name}: scenario panicked against {}; etcd's transcript was:\n{a}",
                minik.label()
            );
            eprintln!(
                "--- last lines of {}'s log:\n{}",
                minik.label(),
                tail(&minik.log(), 30)
            );
            std::panic::resume_unwind(e)
        }
    };
    // Shown with `-- --nocapture` (and by libtest for a failing test).
    println!("=== {name}: transcript against {} ===\n{a}", etcd.label());
    if a != b {
        eprintln!(
            "--- last lines of {}'s log:\n{}",
            minik.label(),
            tail(&minik.log(), 30)
        );
    }
    assert_same_text(name, etcd.label(), &a, minik.label(), &b);
}

/// The lease id (hex) from `lease X granted with TTL(Ns)`, or `"<no-lease-id>"`.
fn lease_id(out: &Output) -> String {
    out.out()
        .split_whitespace()
        .nth(1)
        .filter(|id| id.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_string)
        .unwrap_or_else(|| "<no-lease-id>".into())
}

/// Runs `etcdctl watch ARGS` in the background until its stdout holds `until` (or 10 s pass),
/// lets it run 300 ms more (to catch anything unexpected), kills it and records what it printed.
fn watch_until(s: &mut Session, args: &[&str], until: &str) {
    let mut full = vec!["watch"];
    full.extend_from_slice(args);
    let mut bg = etcdctl_bg(s.server, &full);
    let seen = bg.wait_for_stdout(Duration::from_secs(10), |o| o.contains(until));
    thread::sleep(Duration::from_millis(300));
    let exited = bg.wait_exit(Duration::ZERO);
    let out = bg.finish();
    let shown: Vec<String> = full.iter().map(|a| shell_word(a)).collect();
    s.record(&format!(
        "$ etcdctl {} &   (background, killed after {until:?})",
        shown.join(" ")
    ));
    s.record(&format!(
        "[saw {until:?}: {seen}] [exited by itself: {}]",
        exited.is_some()
    ));
    s.record_output(&out, StderrMode::Compare, false);
}

/// A value of `n` bytes.
fn big_value(n: usize) -> String {
    "x".repeat(n)
}

/// FNV-1a of a byte string, to record large outputs compactly.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

// ---------------------------------------------------------------------------------------------
// Key-value basics
// ---------------------------------------------------------------------------------------------

#[test]
fn put_get_del() {
    differential("put_get_del", None, |s| {
        s.ctl(&["put", "/a", "1"]);
        s.ctl(&["put", "/b", "2"]);
        s.ctl(&["put", "/a", "3"]);
        s.ctl(&["get", "/a"]);
        s.ctl(&["get", "/b"]);
        s.ctl(&["get", "/missing"]);
        s.ctl(&["put", "/c", "4", "--prev-kv"]);
        s.ctl(&["put", "/c", "5", "--prev-kv"]);
        s.ctl(&["del", "/c", "--prev-kv"]);
        s.ctl(&["del", "/a"]);
        s.ctl(&["get", "/a"]);
        s.ctl(&["del", "/missing"]);
        s.ctl(&["put", "/d", "x"]);
        s.ctl(&["put", "/e", "y"]);
        s.ctl(&["get", "/b", "/e"]);
        s.ctl(&["get", "--from-key", "/c"]);
        s.ctl(&["get", "/", "--prefix", "--keys-only"]);
        s.ctl(&["get", "/", "--prefix", "--limit", "2"]);
        s.ctl(&[
            "get",
            "/",
            "--prefix",
            "--sort-by=MODIFY",
            "--order=DESCEND",
        ]);
        s.ctl(&["get", "/", "--prefix", "--sort-by=VALUE", "--order=ASCEND"]);
        s.ctl(&[
            "get",
            "/",
            "--prefix",
            "--sort-by=KEY",
            "--order=DESCEND",
            "--limit",
            "2",
        ]);
        s.ctl(&["get", "/b", "--consistency=s"]);
        s.ctl(&["get", "/b", "--hex"]);
        s.ctl(&["put", "/b", "--ignore-value"]);
        s.ctl(&["get", "/b"]);
        s.ctl(&["put", "/nope", "--ignore-value"]);
        s.ctl(&["put", "/spaced key ü", "value with spaces ✓"]);
        s.ctl(&["get", "/spaced key ü"]);
        s.ctl(&["put", "/empty", ""]);
        s.ctl(&["get", "/empty", "-w", "json"]);
        s.ctl(&["del", "/", "--prefix"]);
        s.ctl(&["get", "/", "--prefix"]);
        s.ctl(&["del", "/b", "/z"]);
        s.ctl(&["get", "", "--prefix", "-w", "json"]);
    });
}

#[test]
fn prefix_listing() {
    differential("prefix_listing", None, |s| {
        for (k, v) in [
            ("/a", "1"),
            ("/a/b", "2"),
            ("/b", "3"),
            ("a", "4"),
            ("z", "5"),
            ("/x/y", "6"),
        ] {
            s.ctl(&["put", k, v]);
        }
        s.ctl(&["get", "/", "--prefix", "--keys-only"]);
        s.ctl(&["get", "", "--prefix"]);
        s.ctl(&["get", "", "--prefix", "--keys-only"]);
        s.ctl(&["get", "", "--from-key"]);
        s.ctl(&["get", "/a", "--prefix", "-w", "json"]);
        s.ctl(&["get", "/a", "--prefix", "--print-value-only"]);
        s.ctl(&["get", "/", "--prefix", "--keys-only", "-w", "json"]);
        s.ctl(&["get", "/x/", "--prefix", "--keys-only", "-w", "fields"]);
    });
}

#[test]
fn get_at_revision() {
    differential("get_at_revision", None, |s| {
        s.ctl(&["put", "/k", "v1"]); // rev 2
        s.ctl(&["put", "/k", "v2"]); // rev 3
        s.ctl(&["put", "/j", "w1"]); // rev 4
        s.ctl(&["del", "/k"]); // rev 5
        s.ctl(&["put", "/k", "v3"]); // rev 6
        for rev in 1..=6 {
            let rev = rev.to_string();
            s.ctl(&["get", "/k", "--rev", &rev]);
            s.ctl(&["get", "/", "--prefix", "--rev", &rev]);
        }
        s.ctl(&["get", "/k", "--rev", "3", "-w", "json"]);
        s.ctl(&["get", "/", "--prefix", "--rev", "4", "--keys-only"]);
        s.ctl(&["get", "/k", "--rev", "0"]);
    });
}

#[test]
fn output_formats() {
    differential("output_formats", None, |s| {
        s.ctl(&["put", "/f/one", "1"]);
        s.ctl(&["put", "/f/two", "2"]);
        s.ctl(&["put", "/f/one", "11"]);
        s.ctl(&["get", "/f/one", "--print-value-only"]);
        s.ctl(&["get", "/f", "--prefix", "--print-value-only"]);
        s.ctl(&["get", "/f/one", "-w", "json"]);
        s.ctl(&["get", "/f", "--prefix", "-w", "json"]);
        s.ctl(&["get", "/f/one", "-w", "fields"]);
        s.ctl(&["get", "/f", "--prefix", "-w", "fields"]);
        s.ctl(&["get", "/f", "--prefix", "-w", "simple"]);
        s.ctl(&["get", "/f", "--prefix", "-w", "table"]);
        s.ctl(&["get", "/nothing", "-w", "json"]);
        s.ctl(&["get", "/nothing", "-w", "fields"]);
        s.ctl(&["put", "/f/three", "3", "-w", "json"]);
        s.ctl(&["put", "/f/three", "33", "--prev-kv", "-w", "json"]);
        s.ctl(&["put", "/f/three", "333", "--prev-kv", "-w", "fields"]);
        s.ctl(&["del", "/f/three", "-w", "json"]);
        s.ctl(&["del", "/f", "--prefix", "--prev-kv", "-w", "json"]);
        s.ctl(&["del", "/f", "--prefix", "-w", "fields"]);
    });
}

// ---------------------------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------------------------

#[test]
fn txn_interactive_and_plain() {
    differential("txn_interactive_and_plain", None, |s| {
        s.ctl(&["put", "/t/a", "1"]);
        s.ctl(&["put", "/t/b", "2"]);
        // txn -i, success branch
        s.ctl_in(
            &["txn", "-i"],
            "value(\"/t/a\") = \"1\"\n\nput /t/a 2\nget /t/a\n\nput /t/a 3\n\n",
        );
        // txn -i, failure branch
        s.ctl_in(
            &["txn", "-i"],
            "value(\"/t/a\") = \"1\"\n\nput /t/a 4\n\nput /t/c 5\nget /t/b\n\n",
        );
        // plain txn, several compares, success branch
        s.ctl_in(
            &["txn"],
            "mod(\"/t/a\") > \"0\"\nversion(\"/t/b\") = \"1\"\ncreate(\"/t/b\") < \"100\"\nvalue(\"/t/c\") != \"x\"\n\n\
             put /t/d 6\ndel /t/c\nget /t --prefix\n\nput /t/e 7\n\n",
        );
        // plain txn, failure branch
        s.ctl_in(&["txn"], "version(\"/t/b\") > \"5\"\n\nput /t/f 8\n\nget /t/a\ndel /t/b --prev-kv\nput /t/g 9 --prev-kv\n\n");
        // compare on a missing key
        s.ctl_in(
            &["txn"],
            "create(\"/t/missing\") = \"0\"\n\nput /t/missing now\n\n\n",
        );
        // no compares at all
        s.ctl_in(&["txn"], "\nput /t/h 10\nget /t/h\n\n\n");
        // empty transaction
        s.ctl_in(&["txn"], "\n\n\n");
        // output formats
        s.ctl_in(
            &["txn", "-w", "json"],
            "value(\"/t/a\") = \"2\"\n\nput /t/y 1\ndel /t/h\nget /t/a\n\n\n",
        );
        s.ctl_in(
            &["txn", "-w", "fields"],
            "value(\"/t/a\") = \"nope\"\n\n\nput /t/z 1\nget /t/z\n\n",
        );
        s.ctl(&["get", "/t", "--prefix", "-w", "json"]);
    });
}

#[test]
fn error_txn_duplicate_key() {
    differential("error_txn_duplicate_key", None, |s| {
        s.ctl(&["put", "/dup", "0"]);
        s.ctl_in(&["txn"], "\nput /dup 1\nput /dup 2\n\n\n");
        s.ctl_in(&["txn"], "\nput /dup 1\ndel /dup\n\n\n");
        // The same key in the two different branches is allowed.
        s.ctl_in(
            &["txn"],
            "value(\"/dup\") = \"0\"\n\nput /dup 1\n\nput /dup 2\n\n",
        );
        s.ctl(&["get", "/dup", "-w", "json"]);
    });
}

// ---------------------------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------------------------

#[test]
fn watch_history_prefix_rev_prev_kv() {
    differential("watch_history_prefix_rev_prev_kv", None, |s| {
        s.ctl(&["put", "/w/a", "1"]); // 2
        s.ctl(&["put", "/w/b", "2"]); // 3
        s.ctl(&["put", "/w/a", "3"]); // 4
        s.ctl(&["del", "/w/b"]); // 5
        s.ctl(&["put", "/other", "x"]); // 6
        s.ctl(&["put", "/w/c", "done"]); // 7
        watch_until(s, &["/w", "--prefix", "--rev", "2", "--prev-kv"], "done");
        watch_until(s, &["/w", "--prefix", "--rev", "4"], "done");
        watch_until(s, &["/w/a", "--rev", "1"], "3");
        watch_until(s, &["/w/b", "--rev", "2", "--prev-kv"], "DELETE");
        watch_until(s, &["/w/a", "/w/c", "--rev", "2"], "DELETE");
        watch_until(s, &["", "--prefix", "--rev", "6"], "done");
    });
}

#[test]
fn watch_live_events() {
    differential("watch_live_events", None, |s| {
        s.ctl(&["put", "/live/seed", "0"]); // rev 2
        // Start from a fixed revision so the output does not depend on when the watch registered.
        let mut plain = etcdctl_bg(
            s.server,
            &["watch", "/live", "--prefix", "--prev-kv", "--rev", "3"],
        );
        let mut json = etcdctl_bg(s.server, &["watch", "/live/a", "--rev", "3", "-w", "json"]);
        thread::sleep(Duration::from_millis(300));
        // One event at a time: each watch response then carries exactly one event.
        let steps: [(&[&str], &str); 4] = [
            (&["put", "/live/a", "1"], "1"),
            (&["put", "/live/a", "2"], "2"),
            (&["put", "/live/b", "3"], "3"),
            (&["del", "/live/a"], "DELETE"),
        ];
        for (i, (args, expect)) in steps.iter().enumerate() {
            s.ctl(args);
            let n = i + 1;
            let seen = plain.wait_for_stdout(Duration::from_secs(10), |o| {
                o.lines().filter(|l| *l == "PUT" || *l == "DELETE").count() >= n
                    && o.contains(expect)
            });
            s.note(&format!("plain watch saw event {n}: {seen}"));
            if args[1] == "/live/a" {
                let want = steps[..=i]
                    .iter()
                    .filter(|(a, _)| a[1] == "/live/a")
                    .count();
                let seen = json.wait_for_stdout(Duration::from_secs(10), |o| {
                    o.matches("\"Events\"").count() >= want
                });
                s.note(&format!("json watch saw {want} responses: {seen}"));
            }
        }
        thread::sleep(Duration::from_millis(300));
        for (what, bg) in [
            ("watch /live --prefix --prev-kv --rev 3", plain),
            ("watch /live/a --rev 3 -w json", json),
        ] {
            let out = bg.finish();
            s.note(&format!("output of `{what}`:"));
            s.record_output(&out, StderrMode::Compare, false);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------------------------

#[test]
fn lease_lifecycle() {
    differential("lease_lifecycle", None, |s| {
        let grant = s.ctl(&["lease", "grant", "100"]);
        let id = lease_id(&grant);
        s.ctl(&["put", "/l/one", "1", &format!("--lease={id}")]);
        s.ctl(&["put", "/l/two", "2", &format!("--lease={id}")]);
        let kv = s.ctl(&["get", "/l/one", "-w", "json"]);
        let dec = u64::from_str_radix(&id, 16)
            .map(|d| d.to_string())
            .unwrap_or_default();
        s.note(&format!(
            "kv's lease is the granted lease: {}",
            kv.out().contains(&format!("\"lease\":{dec}"))
        ));
        s.ctl(&["lease", "keep-alive", "--once", &id]);
        s.ctl(&["lease", "keep-alive", "--once", &id, "-w", "json"]);
        s.ctl(&["lease", "timetolive", &id]);
        s.ctl(&["lease", "timetolive", &id, "--keys"]);
        s.ctl(&["lease", "timetolive", &id, "--keys", "-w", "json"]);
        s.ctl(&["lease", "timetolive", &id, "-w", "fields"]);
        s.ctl(&["lease", "list"]);
        s.ctl(&["lease", "list", "-w", "json"]);
        let list = s.ctl(&["lease", "list", "-w", "simple"]);
        s.note(&format!(
            "lease list names the granted lease: {}",
            list.out().contains(&id)
        ));
        let id2 = lease_id(&s.ctl(&["lease", "grant", "50", "-w", "simple"]));
        s.ctl(&["lease", "grant", "60", "-w", "json"]);
        let list = etcdctl(s.server, &["lease", "list"], None);
        let text = list.out();
        let mut lines: Vec<&str> = text.lines().map(str::trim).collect();
        lines.sort();
        s.note(&format!(
            "lease list (sorted): {}",
            normalize(&lines.join(" "))
        ));
        s.ctl(&["lease", "revoke", &id]);
        s.ctl(&["get", "/l", "--prefix"]);
        s.ctl(&["lease", "timetolive", &id]);
        s.ctl(&["lease", "timetolive", &id2, "--keys"]);
        s.ctl(&["lease", "revoke", &id2, "-w", "json"]);
        s.ctl(&["put", "/l/three", "3", "--lease=0"]);
        s.ctl(&["get", "/l/three", "-w", "fields"]);
    });
}

#[test]
fn lease_expiry() {
    differential("lease_expiry", None, |s| {
        let id = lease_id(&s.ctl(&["lease", "grant", "2"]));
        s.ctl(&["put", "/exp", "v", &format!("--lease={id}")]);
        s.ctl(&["get", "/exp", "--print-value-only"]);
        thread::sleep(Duration::from_secs(5));
        s.ctl(&["get", "/exp"]);
        s.ctl(&["lease", "timetolive", &id]);
        s.ctl(&["lease", "list"]);
        s.ctl(&["lease", "keep-alive", "--once", &id]);
    });
}

#[test]
fn error_lease_unknown() {
    differential("error_lease_unknown", None, |s| {
        s.ctl(&["lease", "timetolive", "1234"]);
        s.ctl(&["lease", "timetolive", "1234", "--keys"]);
        s.ctl(&["lease", "timetolive", "1234", "-w", "json"]);
        s.ctl(&["lease", "revoke", "1234"]);
        s.ctl(&["lease", "keep-alive", "--once", "1234"]);
        s.ctl(&["put", "/k", "v", "--lease=1234"]);
    });
}

// ---------------------------------------------------------------------------------------------
// Revisions, compaction, defragmentation
// ---------------------------------------------------------------------------------------------

#[test]
fn error_future_revision() {
    differential("error_future_revision", None, |s| {
        s.ctl(&["put", "/a", "1"]);
        s.ctl(&["put", "/b", "2"]);
        s.ctl(&["get", "/a", "--rev", "4"]);
        s.ctl(&["get", "/a", "--rev", "100"]);
        s.ctl(&["get", "/", "--prefix", "--rev", "100", "-w", "json"]);
        s.ctl(&["compaction", "100"]);
        s.ctl(&["get", "/a", "--rev", "3"]);
    });
}

#[test]
fn compaction_and_compacted_revision() {
    differential("compaction_and_compacted_revision", None, |s| {
        for v in 1..=5 {
            s.ctl(&["put", "/c", &v.to_string()]); // revs 2..=6
        }
        s.ctl(&["compaction", "4"]);
        s.ctl(&["get", "/c", "--rev", "2"]);
        s.ctl(&["get", "/c", "--rev", "3"]);
        s.ctl(&["get", "/c", "--rev", "3", "-w", "json"]);
        s.ctl(&["get", "/c", "--rev", "4"]);
        s.ctl(&["get", "/c", "--rev", "5"]);
        s.ctl(&["get", "/c"]);
        s.ctl(&["compaction", "4"]);
        s.ctl(&["compaction", "3"]);
        s.ctl(&["compaction", "--physical", "5"]);
        s.ctl(&["get", "/c", "--rev", "4"]);
        s.ctl(&["compaction", "6", "-w", "json"]);
        s.ctl(&["get", "/c", "-w", "json"]);
        // A watch from a compacted revision is cancelled by the server.
        let mut bg = etcdctl_bg(s.server, &["watch", "/c", "--rev", "2"]);
        let exited = bg.wait_exit(Duration::from_secs(10));
        let out = bg.finish();
        s.note(&format!(
            "watch --rev 2 after compaction exited by itself: {}",
            exited.is_some()
        ));
        s.record_output(&out, StderrMode::Compare, true);
        s.ctl(&["put", "/c", "6"]);
        s.ctl(&["get", "/c", "-w", "json"]);
    });
}

#[test]
fn defrag() {
    differential("defrag", None, |s| {
        for i in 0..20 {
            s.ctl(&["put", &format!("/d/{i:02}"), &big_value(1000)]);
        }
        s.ctl(&["del", "/d/", "--prefix"]);
        s.ctl(&["compaction", "--physical", "21"]);
        s.ctl(&["defrag"]);
        s.ctl(&["defrag", "-w", "json"]);
        s.ctl(&["put", "/after", "defrag"]);
        s.ctl(&["get", "", "--prefix"]);
        s.ctl(&["endpoint", "status", "-w", "table"]);
    });
}

// ---------------------------------------------------------------------------------------------
// Cluster and maintenance
// ---------------------------------------------------------------------------------------------

#[test]
fn endpoint_status_health_member_list() {
    differential("endpoint_status_health_member_list", None, |s| {
        s.ctl(&["put", "/x", "1"]);
        s.ctl(&["endpoint", "status"]);
        s.ctl(&["endpoint", "status", "-w", "table"]);
        s.ctl(&["endpoint", "status", "-w", "json"]);
        s.ctl(&["endpoint", "status", "-w", "fields"]);
        s.ctl(&["endpoint", "status", "--cluster", "-w", "table"]);
        s.ctl(&["endpoint", "health"]);
        s.ctl(&["endpoint", "health", "-w", "table"]);
        s.ctl(&["endpoint", "health", "-w", "json"]);
        s.ctl(&["endpoint", "health", "-w", "fields"]);
        s.ctl(&["endpoint", "health", "--cluster"]);
        s.ctl(&["member", "list"]);
        s.ctl(&["member", "list", "-w", "table"]);
        s.ctl(&["member", "list", "-w", "json"]);
        s.ctl(&["member", "list", "-w", "fields"]);
    });
}

#[test]
fn snapshot_save() {
    differential("snapshot_save", None, |s| {
        s.ctl(&["put", "/s/a", "1"]);
        s.ctl(&["put", "/s/b", "2"]);
        let path = s.server.scratch_dir().join("snap.db");
        let p = path.to_str().unwrap().to_string();
        let out = Etcdctl::new(s.server).args(["snapshot", "save", &p]).run();
        s.record("$ etcdctl snapshot save <SNAPSHOT>");
        let hide = |t: String| t.replace(&p, "<SNAPSHOT>");
        let out = Output {
            status: out.status,
            stdout: hide(out.out()).into(),
            stderr: hide(out.err()).into(),
        };
        s.record_output(&out, StderrMode::Compare, true);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        s.note(&format!(
            "snapshot file written and non-empty: {}",
            size > 0
        ));
        s.note(&format!(
            "no leftover .part file: {}",
            !path.with_extension("db.part").exists()
        ));
        s.ctl(&["get", "/s", "--prefix"]);
    });
}

#[test]
fn restart_keeps_data() {
    let (mut etcd, mut minik) = start_pair(None);
    let mut transcripts = Vec::new();
    for server in [&mut etcd, &mut minik] {
        let mut s = Session::new(&*server);
        s.ctl(&["put", "/r/a", "1"]);
        s.ctl(&["put", "/r/a", "2"]);
        s.ctl(&["put", "/r/b", "3"]);
        let t1 = s.transcript;
        server.kill9();
        server.restart();
        let mut s = Session::new(&*server);
        s.transcript = t1;
        s.note("--- after kill -9 and restart ---");
        s.ctl(&["get", "/r", "--prefix", "-w", "json"]);
        s.ctl(&["get", "/r/a", "--rev", "2"]);
        s.ctl(&["put", "/r/c", "4"]);
        transcripts.push(s.transcript);
    }
    println!(
        "=== restart_keeps_data: transcript against etcd ===\n{}",
        transcripts[0]
    );
    assert_same_text(
        "restart_keeps_data",
        etcd.label(),
        &transcripts[0],
        minik.label(),
        &transcripts[1],
    );
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

#[test]
fn error_request_too_large() {
    differential("error_request_too_large", None, |s| {
        // Larger than etcd's default --max-request-bytes (1.5 MiB), smaller than its gRPC limit:
        // the value is passed on stdin (too long for one command-line argument).
        let big = big_value(1_600_000);
        let out = Etcdctl::new(s.server)
            .args(["put", "/big"])
            .stdin(big.as_bytes())
            .run();
        s.record("$ etcdctl put /big  < (1,600,000 bytes)");
        s.record_output(&out, StderrMode::Compare, true);
        s.ctl(&["get", "/big", "--keys-only"]);
        // A 1 MiB value is fine.
        let ok = big_value(1 << 20);
        let out = Etcdctl::new(s.server)
            .args(["put", "/ok"])
            .stdin(ok.as_bytes())
            .run();
        s.record("$ etcdctl put /ok  < (1048576 bytes)");
        s.record_output(&out, StderrMode::Compare, true);
        let got = etcdctl(s.server, &["get", "/ok", "--print-value-only"], None);
        s.note(&format!(
            "get /ok --print-value-only: exit {}, {} bytes, fnv {}",
            exit_code(&got.status),
            got.stdout.len(),
            fnv(&got.stdout)
        ));
        s.note(&format!(
            "value round-trips: {}",
            got.stdout.strip_suffix(b"\n") == Some(ok.as_bytes())
        ));
    });
}

// ---------------------------------------------------------------------------------------------
// Mutual TLS
// ---------------------------------------------------------------------------------------------

#[test]
fn mutual_tls_main_commands() {
    let pki = Pki::new();
    differential("mutual_tls_main_commands", Some(&pki), |s| {
        s.ctl(&["put", "/tls/a", "1"]);
        s.ctl(&["put", "/tls/b", "2"]);
        s.ctl(&["get", "/tls", "--prefix"]);
        s.ctl(&["get", "/tls", "--prefix", "--keys-only", "-w", "json"]);
        s.ctl(&["get", "/tls/a", "--rev", "2"]);
        s.ctl(&["del", "/tls/b"]);
        s.ctl_in(
            &["txn"],
            "value(\"/tls/a\") = \"1\"\n\nput /tls/c 3\n\nput /tls/c 4\n\n",
        );
        let id = lease_id(&s.ctl(&["lease", "grant", "100"]));
        s.ctl(&["lease", "keep-alive", "--once", &id]);
        s.ctl(&["lease", "timetolive", &id]);
        s.ctl(&["lease", "revoke", &id]);
        watch_until(
            s,
            &["/tls", "--prefix", "--rev", "2", "--prev-kv"],
            "/tls/c",
        );
        s.ctl(&["compaction", "3"]);
        s.ctl(&["get", "/tls/a", "--rev", "2"]);
        s.ctl(&["defrag"]);
        s.ctl(&["endpoint", "status", "-w", "table"]);
        s.ctl(&["endpoint", "health"]);
        s.ctl(&["endpoint", "health", "--cluster"]);
        s.ctl(&["member", "list"]);
        let path = s.server.scratch_dir().join("tls-snap.db");
        let out = Etcdctl::new(s.server)
            .args(["snapshot", "save", path.to_str().unwrap()])
            .run();
        s.record("$ etcdctl snapshot save <SNAPSHOT>");
        s.record(&format!("[exit {}]", exit_code(&out.status)));
        s.record(&out.out().replace(path.to_str().unwrap(), "<SNAPSHOT>"));
        s.note(&format!(
            "snapshot non-empty: {}",
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 0)
        ));
    });
}

#[test]
fn tls_untrusted_client_refused() {
    let pki = Pki::new();
    differential("tls_untrusted_client_refused", Some(&pki), |s| {
        let quick = ["--dial-timeout=2s", "--command-timeout=3s"];
        for creds in [Creds::Untrusted, Creds::NoClientCert] {
            for cmd in [&["put", "/x", "bad"][..], &["get", "/x"][..]] {
                let args: Vec<&str> = quick.iter().copied().chain(cmd.iter().copied()).collect();
                // The client only reports that it could not connect; the retry log line in between
                // may depend on the TLS stack, so only the final error line is compared.
                s.exec(&args, None, StderrMode::LastLine, creds.clone());
            }
        }
        // A client that does not speak TLS at all.
        let plain = Etcdctl::new(s.server)
            .creds(Creds::Files {
                cacert: None,
                cert: None,
                key: None,
            })
            .endpoint(&s.server.endpoint().replace("https://", "http://"))
            .args(quick)
            .args(["get", "/x"])
            .run();
        s.record("$ etcdctl --endpoints http://… get /x   (plain text against TLS)");
        s.record_output(&plain, StderrMode::LastLine, true);
        // The server still serves a good client.
        s.ctl(&["put", "/x", "good"]);
        s.ctl(&["get", "/x"]);
        s.ctl(&["endpoint", "health"]);
    });
}

// ---------------------------------------------------------------------------------------------
// check perf (minik only)
// ---------------------------------------------------------------------------------------------

/// `etcdctl check perf --load=s` against minik only; it takes about 60 s, so it is named to sort
/// first and start first, and runs alongside the other tests. On this 2-core machine the other tests
/// running at the same time can push one request past check perf's 500 ms limit (seen with the real
/// etcd too), so a failed run is retried once, when the other tests are usually done.
#[test]
fn a_slow_check_perf_load_s_minik_only() {
    let minik = Server::minik(None);
    let mut reports = Vec::new();
    let progress = regex::Regex::new(r"^.*\d+\.\d+%(\s+\d+m\d+s)?\s*").unwrap();
    for attempt in 1..=2 {
        let out = Etcdctl::new(&minik)
            .args(["check", "perf", "--load=s"])
            .timeout(Duration::from_secs(240))
            .run();
        let stdout = out.out();
        // Drop the progress bar (redrawn with \r); keep the verdict lines.
        let keywords = ["PASS", "FAIL", "too long", "too low", "too high"];
        let verdict: Vec<String> = stdout
            .split(['\r', '\n'])
            .filter(|seg| keywords.iter().any(|k| seg.contains(k)))
            .map(|seg| progress.replace(seg, "").into_owned())
            .collect();
        println!(
            "check perf attempt {attempt}: {}\n{}",
            out.status,
            verdict.join("\n")
        );
        let ok = out.status.success()
            && ["PASS: Throughput", "PASS: Slowest request", "PASS: Stddev"]
                .iter()
                .all(|p| stdout.contains(p))
            && verdict.last().is_some_and(|v| v == "PASS");
        if ok {
            return;
        }
        reports.push(format!(
            "attempt {attempt}: {}\n--- verdict:\n{}\n--- stderr:\n{}",
            out.status,
            verdict.join("\n"),
            tail(&out.err(), 20)
        ));
    }
    panic!(
        "check perf --load=s against {} did not pass\n{}\n--- server log tail:\n{}",
        minik.label(),
        reports.join("\n"),
        tail(&minik.log(), 30)
    );
}
