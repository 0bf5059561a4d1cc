//! Process-wide memory settings every minik process applies before it starts work.
//!
//! minik allocates with mimalloc (see `src/main.rs`). mimalloc 3 asks the kernel for
//! transparent huge pages on its arenas (`madvise(MADV_HUGEPAGE)`), so on a kernel whose THP mode
//! is `madvise` (the common default) every fresh arena region is faulted in as a 2 MiB page that
//! the kernel zeroes whole, even when a few KiB of it get used before mimalloc hands the region
//! back. Under the API server's write load that zeroing (`clear_page_erms` under
//! `do_huge_pmd_anonymous_page`) was 30 % of its CPU; with huge pages off for the process a pod
//! create costs 340 µs of API-server CPU instead of 469 µs (`minik bench apiserver`, see
//! BENCHMARKS.md). Small 4 KiB pages also keep resident memory close to what is really used.

/// Turns transparent huge pages off for this process and the processes it starts
/// (`prctl(PR_SET_THP_DISABLE)`, inherited across fork and exec). Returns whether they are off.
pub fn disable_transparent_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory map; the extra
        // arguments must be zero.
        let set = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if set != 0 {
            return false;
        }
        // SAFETY: PR_GET_THP_DISABLE reads the flag back; no pointers are involved.
        unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn huge_pages_are_off_for_the_process_and_its_children() {
        assert!(disable_transparent_huge_pages());
        // The flag is inherited across exec: a child process reports it in /proc.
        let status = std::process::Command::new("grep")
            .args(["^THP_enabled:", "/proc/self/status"])
            .output()
            .expect("grep runs");
        let line = String::from_utf8_lossy(&status.stdout);
        assert_eq!(line.trim(), "THP_enabled:\t0", "child's /proc/self/status");
    }
}
