//! The pause process: the first process (PID 1) of every pod sandbox.
//!
//! A pod's containers share Linux namespaces (network, IPC, and optionally PID). Something has
//! to hold those namespaces open while the app containers come and go: the sandbox container,
//! whose only process is this one. It does what Kubernetes' `pause` does:
//!
//! - sleeps forever (`pause(2)` in a loop), using no CPU;
//! - reaps zombies: as PID 1 of a shared PID namespace, orphaned processes are re-parented to it,
//!   and it `waitpid`s them on every SIGCHLD so they don't pile up as zombies;
//! - exits 0 on SIGINT or SIGTERM (a PID 1 ignores signals it has no handler for, so without the
//!   handlers the sandbox could only be SIGKILLed);
//! - `-v` prints its version.
//!
//! std only, no dependencies: it is built as a static binary (`-C target-feature=+crt-static`)
//! for a `FROM scratch` image by `minik image build pause`.

use std::ffi::c_int;
use std::io::Write;

const VERSION: &str = "3.10";

const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;
const SIGCHLD: c_int = 17;
const WNOHANG: c_int = 1;
const SIG_ERR: usize = usize::MAX;

unsafe extern "C" {
    fn signal(signum: c_int, handler: usize) -> usize;
    fn pause() -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn write(fd: c_int, buf: *const u8, count: usize) -> isize;
    fn _exit(status: c_int) -> !;
    fn getpid() -> c_int;
}

/// SIGINT/SIGTERM: say so (with async-signal-safe `write`) and exit 0.
extern "C" fn sigdown(signo: c_int) {
    let msg: &[u8] = match signo {
        SIGINT => b"Shutting down, got signal: Interrupt\n",
        _ => b"Shutting down, got signal: Terminated\n",
    };
    // SAFETY: write(2) and _exit(2) are async-signal-safe; msg is a valid static buffer.
    unsafe {
        write(2, msg.as_ptr(), msg.len());
        _exit(0);
    }
}

/// SIGCHLD: reap every child that has exited (signals coalesce, so loop until none is left).
extern "C" fn sigreap(_signo: c_int) {
    // SAFETY: waitpid(2) is async-signal-safe; a null status pointer is allowed.
    unsafe { while waitpid(-1, std::ptr::null_mut(), WNOHANG) > 0 {} }
}

fn main() {
    if std::env::args()
        .skip(1)
        .any(|a| a.eq_ignore_ascii_case("-v"))
    {
        println!("pause {VERSION} (minik)");
        return;
    }
    // SAFETY: getpid(2) has no preconditions.
    if unsafe { getpid() } != 1 {
        // Not an error: pause is also used outside sandboxes.
        let _ = writeln!(
            std::io::stderr(),
            "Warning: pause should be the first process"
        );
    }
    let handlers: [(c_int, extern "C" fn(c_int), i32); 3] = [
        (SIGINT, sigdown, 1),
        (SIGTERM, sigdown, 2),
        (SIGCHLD, sigreap, 3),
    ];
    for (signum, handler, code) in handlers {
        // SAFETY: the handlers only call async-signal-safe functions. glibc's signal() installs
        // them with BSD semantics (kept installed, SA_RESTART).
        if unsafe { signal(signum, handler as usize) } == SIG_ERR {
            std::process::exit(code);
        }
    }
    // Children that exited before the SIGCHLD handler was installed.
    sigreap(SIGCHLD);
    loop {
        // SAFETY: pause(2) only waits for a signal.
        unsafe { pause() };
    }
}
