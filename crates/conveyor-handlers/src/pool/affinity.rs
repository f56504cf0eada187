//! `cpu_affinity = "paired"`: each worker process and the thread serving its pipes run on one
//! CPU, the one with the fewest paired processes when the process starts. A job's round trip is two wake-ups (the thread writes the job and waits; the process
//! answers and waits); on one CPU each is a plain switch, across CPUs an inter-processor
//! interrupt, which on a virtual machine costs more than a trivial handler's own work. Opt-in:
//! a process pinned to one CPU keeps every thread it starts there (a JVM, or Python with a
//! threaded BLAS, would be confined to one core).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Deserialize;

/// Where a pool's processes may run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuAffinity {
    /// Wherever the kernel puts them (the default).
    #[default]
    None,
    /// Each process and its serving thread on one CPU, each new process on the allowed CPU
    /// with the fewest paired processes.
    Paired,
}

/// Paired processes per CPU now, across every pool of this program.
static LOAD: Mutex<BTreeMap<usize, usize>> = Mutex::new(BTreeMap::new());

/// A process's place on a CPU: given back when dropped (the process ended), so a replacement
/// goes where there is room, not after it in a rotation.
pub(super) struct Pinned {
    cpu: usize,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let mut load = LOAD.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = load.get_mut(&self.cpu) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Pins process `pid`, then the calling thread, to the allowed CPU with the fewest paired
/// processes; `None` (both left unpinned, and logged) when the system refuses. Hold the result
/// for as long as the process runs.
pub(super) fn pair(pid: u32) -> Option<Pinned> {
    let allowed = allowed_cpus();
    let Some(cpu) = least_loaded(&allowed) else {
        tracing::warn!(
            pid,
            "cpu_affinity: cannot read this program's CPUs; not pinned"
        );
        return None;
    };
    let pinned = Pinned { cpu };
    if let Err(e) = set_affinity(pid as libc::pid_t, &[cpu]) {
        tracing::warn!(pid, cpu, error = %e, "cpu_affinity: worker process not pinned");
        return None;
    }
    if let Err(e) = set_affinity(0, &[cpu]) {
        // A pinned process whose thread runs elsewhere gains nothing: let it run anywhere.
        let _ = set_affinity(pid as libc::pid_t, &allowed);
        tracing::warn!(pid, cpu, error = %e, "cpu_affinity: serving thread not pinned; neither is");
        return None;
    }
    tracing::debug!(pid, cpu, "worker process and its thread pinned");
    Some(pinned)
}

/// Takes a place on the allowed CPU with the fewest paired processes (the lowest on a tie).
fn least_loaded(allowed: &[usize]) -> Option<usize> {
    let mut load = LOAD.lock().unwrap_or_else(|e| e.into_inner());
    let cpu = *allowed
        .iter()
        .min_by_key(|cpu| (load.get(cpu).copied().unwrap_or(0), **cpu))?;
    *load.entry(cpu).or_default() += 1;
    Some(cpu)
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

/// Confines `pid` (0: the calling thread) to `cpus`.
fn set_affinity(pid: libc::pid_t, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: as in `allowed_cpus`; CPU_SET writes within the set (each cpu came from a set of
    // CPU_SETSIZE, and the libc macro checks its index).
    let done = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in cpus {
            libc::CPU_SET(*cpu, &mut set);
        }
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_place_is_taken_before_a_busier_cpu() {
        // CPUs no real pool uses (far above any allowed set), so the global table is ours.
        let cpus = [900, 901];
        let a = least_loaded(&cpus).map(|cpu| Pinned { cpu });
        let b = least_loaded(&cpus).map(|cpu| Pinned { cpu });
        assert_eq!(
            (a.as_ref().map(|p| p.cpu), b.as_ref().map(|p| p.cpu)),
            (Some(900), Some(901))
        );
        drop(b);
        let c = least_loaded(&cpus).map(|cpu| Pinned { cpu });
        assert_eq!(
            c.as_ref().map(|p| p.cpu),
            Some(901),
            "the freed CPU, not 900 again"
        );
    }
}
