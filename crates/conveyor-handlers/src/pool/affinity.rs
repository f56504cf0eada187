//! `cpu_affinity = "paired"`: each worker process and the thread serving its pipes run on one
//! CPU. A job's round trip is two wake-ups (the thread writes the job and waits; the process
//! answers and waits); on one CPU each is a plain switch, across CPUs an inter-processor
//! interrupt, which on a virtual machine costs more than a trivial handler's own work. Opt-in:
//! a process pinned to one CPU keeps every thread it starts there (a JVM, or Python with a
//! threaded BLAS, would be confined to one core).

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;

/// Where a pool's processes may run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuAffinity {
    /// Wherever the kernel puts them (the default).
    #[default]
    None,
    /// Each process and its serving thread on one CPU, the pools' processes spread over the
    /// CPUs this program may use, one after another.
    Paired,
}

/// The next CPU to hand out, across every pool of this program.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Pins the calling thread and process `pid` to the next allowed CPU. Best effort: a failure
/// (a seccomp profile, a CPU set that changed) is logged and both run unpinned.
pub(super) fn pair(pid: u32) {
    let allowed = allowed_cpus();
    if allowed.is_empty() {
        tracing::warn!(
            pid,
            "cpu_affinity: cannot read this program's CPUs; not pinned"
        );
        return;
    }
    let cpu = allowed[NEXT.fetch_add(1, Ordering::Relaxed) % allowed.len()];
    let thread = set_affinity(0, cpu);
    let process = set_affinity(pid as libc::pid_t, cpu);
    match (thread, process) {
        (Ok(()), Ok(())) => tracing::debug!(pid, cpu, "worker process and its thread pinned"),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(pid, cpu, error = %e, "cpu_affinity: not pinned")
        }
    }
}

/// The CPUs the calling thread may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, filled by sched_getaffinity, and
    // CPU_ISSET reads within it (indexes below CPU_SETSIZE).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|cpu| libc::CPU_ISSET(*cpu, &set))
            .collect()
    }
}

/// Confines `pid` (0: the calling thread) to `cpu`.
fn set_affinity(pid: libc::pid_t, cpu: usize) -> std::io::Result<()> {
    // SAFETY: as in `allowed_cpus`; CPU_SET writes within the set (cpu < CPU_SETSIZE, since it
    // came from a set of that size).
    let done = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
