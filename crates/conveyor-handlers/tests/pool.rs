//! The pool against real Python worker processes (the example library) on a real worker
//! runtime: every outcome of the protocol, each fault (crash, garbage, hang, memory, kill -9,
//! start-up crash loop), and that no job is lost or run twice except the one a killed process
//! held.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use conveyor_core::{JobState, NewJob, Registry};
use conveyor_handlers::{handlers, CommandSpec, CpuAffinity, Pool, PoolConfig, Runner, Spawn};
use serde_json::json;
use support::{python_lib, worker_script, Harness};

fn python_pool(workers: usize, log_dir: Option<&Path>) -> PoolConfig {
    let script = worker_script("pool_worker.py");
    let command = CommandSpec::Words(vec!["python3".into(), script.display().to_string()])
        .resolve(Path::new("."))
        .expect("python3 on PATH");
    let mut config = PoolConfig::new("test-pool", command, workers);
    let mut env = vec![(
        "CONVEYOR_PY_LIB".to_string(),
        python_lib().display().to_string(),
    )];
    if let Some(dir) = log_dir {
        env.push(("WORKER_LOG_DIR".into(), dir.display().to_string()));
    }
    config.spawn = Spawn { env, dir: None };
    config.allocate_timeout = Duration::from_secs(30);
    config.destroy_timeout = Duration::from_secs(2);
    config
}

fn registry(pool: &Arc<Pool>, kinds: &[&str]) -> Registry {
    let mut registry = Registry::new();
    let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    for handler in handlers(pool.clone() as Arc<dyn Runner>, &kinds) {
        registry.register(handler);
    }
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_and_fault_of_a_worker_process() {
    let h = Harness::new();
    let mut config = python_pool(2, None);
    config.timeout = Duration::from_secs(2);
    let pool = Pool::start(config).expect("pool");
    let run = h.start(registry(&pool, &["py"]), 4);
    let ok = h.enqueue("py", json!({"op": "ok"}), 3).await;
    let progress = h.enqueue("py", json!({"op": "progress"}), 3).await;
    let discard = h
        .enqueue(
            "py",
            json!({"op": "fail", "error": "nope", "retry": false}),
            3,
        )
        .await;
    let retried = h
        .enqueue("py", json!({"op": "fail", "error": "again"}), 2)
        .await;
    let crash = h.enqueue("py", json!({"op": "crash"}), 3).await;
    let garbage = h.enqueue("py", json!({"op": "garbage"}), 3).await;
    let hang = h.enqueue("py", json!({"op": "hang"}), 3).await;
    let ids = [ok, progress, discard, retried, crash, garbage, hang];
    let infos = h.wait_final(&ids).await;
    let by_id: HashMap<_, _> = infos.iter().map(|i| (i.id, i)).collect();
    run.events.lock().expect("events").len(); // the events are in before the checks below
    let failures = run.failures();
    run.stop().await;

    assert_eq!(
        (by_id[&ok].state, by_id[&ok].attempt),
        (JobState::Completed, 1)
    );
    assert_eq!(by_id[&progress].progress, Some(json!({"step": 1})));
    assert_eq!(
        (
            by_id[&discard].state,
            by_id[&discard].attempt,
            by_id[&discard].last_error.as_deref()
        ),
        (JobState::Dead, 1, Some("nope"))
    );
    assert_eq!(
        (
            by_id[&retried].state,
            by_id[&retried].attempt,
            by_id[&retried].last_error.as_deref()
        ),
        (JobState::Dead, 2, Some("again"))
    );
    for (id, needle) in [
        (crash, "killed by signal 9"),
        (garbage, "not a protocol line"),
        (hang, "timed out after 2s"),
    ] {
        let info = by_id[&id];
        assert_eq!(
            (info.state, info.attempt),
            (JobState::Completed, 2),
            "{info:?}"
        );
        let errors = failures.get(&id).cloned().unwrap_or_default();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains(needle), "{needle}: {errors:?}");
    }
    let crash_error = &failures[&crash][0];
    assert!(
        crash_error.contains("about to crash on job"),
        "stderr tail: {crash_error}"
    );
    assert!(failures[&garbage][0].contains("this is not json"));
    let stats = pool.stats();
    assert_eq!(stats.restarts, 3, "{stats:?}");
    assert_eq!(stats.start_failures, 0, "{stats:?}");
    pool.shutdown().await;
    assert_eq!(pool.stats().processes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_dies_at_start_up_is_backed_off_with_a_clear_error() {
    let h = Harness::new();
    let command = CommandSpec::Line(
        "sh -c 'echo \"PHP Fatal error: cannot load extension\" >&2; exit 3'".into(),
    )
    .resolve(Path::new("."))
    .expect("sh");
    let mut config = PoolConfig::new("broken", command, 2);
    config.allocate_timeout = Duration::from_secs(1);
    let pool = Pool::start(config).expect("pool");
    let run = h.start(registry(&pool, &["broken"]), 2);
    let id = h.enqueue("broken", json!({}), 1).await;
    let info = h.wait_final(&[id]).await.remove(0);
    run.stop().await;
    assert_eq!(info.state, JobState::Dead);
    let error = info.last_error.unwrap_or_default();
    for needle in [
        "no worker process of pool broken became free",
        "exited at start-up (exit status 3)",
        "PHP Fatal error: cannot load extension",
    ] {
        assert!(error.contains(needle), "{needle:?} not in {error:?}");
    }
    let stats = pool.stats();
    // Backed off: 100 ms, 200 ms, 400 ms, ... In a hot loop this would be hundreds.
    assert!((1..=10).contains(&stats.start_failures), "{stats:?}");
    assert_eq!(stats.processes, 0);
    pool.shutdown().await;
}

/// 10k jobs through a pool of 2 Python processes; one is killed with SIGKILL mid-run and a job
/// makes another go over `max_memory_mb`. Every job completes; each ran once, except at most
/// the one the killed process held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_survive_a_kill_and_a_memory_retirement() {
    const JOBS: usize = 10_000;
    let h = Harness::new();
    let logs = tempfile::tempdir().expect("log dir");
    let mut config = python_pool(2, Some(logs.path()));
    config.max_memory_mb = Some(80);
    let pool = Pool::start(config).expect("pool");
    let run = h.start(registry(&pool, &["py"]), 8);
    let jobs = (0..JOBS)
        .map(|n| {
            let payload = if n == JOBS / 3 {
                json!({"op": "grow", "mb": 120})
            } else {
                json!({"n": n})
            };
            NewJob::new("py", payload)
        })
        .collect();
    let ids = h.enqueue_many(jobs).await;
    // Kill one process once the pool is well into the run.
    let victim = loop {
        let seen = logged_ids(logs.path());
        let alive = seen
            .keys()
            .map(|f| pid_of(f))
            .find(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if seen.values().sum::<usize>() >= JOBS / 2 {
            if let Some(pid) = alive {
                break pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // SAFETY: kill(2) on a process this test's pool started.
    assert_eq!(
        unsafe { libc::kill(victim, libc::SIGKILL) },
        0,
        "kill -9 {victim}"
    );
    let infos = h.wait_final(&ids).await;
    let failures = run.failures();
    run.stop().await;
    assert!(infos.iter().all(|i| i.state == JobState::Completed));
    let runs = runs_per_job(logs.path());
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(runs.len(), JOBS, "every job ran");
    assert!(
        twice.len() <= 1,
        "only the killed process's job may run twice: {twice:?}"
    );
    assert!(failures.len() <= 1, "{failures:?}");
    let stats = pool.stats();
    assert!(stats.restarts >= 2, "a kill and a retirement: {stats:?}");
    // One result per job: the killed attempt gave none.
    assert_eq!(stats.jobs as usize, JOBS, "{stats:?}");
    pool.shutdown().await;
}

/// Process ids that logged jobs, with how many each logged.
fn logged_ids(dir: &Path) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    for entry in std::fs::read_dir(dir).expect("log dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let lines = std::fs::read_to_string(entry.path())
            .unwrap_or_default()
            .lines()
            .count();
        map.insert(name, lines);
    }
    map
}

fn pid_of(file: &str) -> i32 {
    file.trim_end_matches(".log")
        .parse()
        .expect("pid file name")
}

fn runs_per_job(dir: &Path) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    for entry in std::fs::read_dir(dir).expect("log dir").flatten() {
        for line in std::fs::read_to_string(entry.path())
            .unwrap_or_default()
            .lines()
        {
            *runs.entry(line.to_string()).or_default() += 1;
        }
    }
    runs
}

/// A process killed while idle costs no attempt: the next job goes to its replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_while_idle_costs_no_attempt() {
    let h = Harness::new();
    let logs = tempfile::tempdir().expect("log dir");
    let pool = Pool::start(python_pool(1, Some(logs.path()))).expect("pool");
    let run = h.start(registry(&pool, &["py"]), 2);
    let first = h.enqueue("py", json!({}), 1).await;
    h.wait_final(&[first]).await;
    let pid = logged_ids(logs.path())
        .keys()
        .map(|f| pid_of(f))
        .next()
        .expect("the process logged its job");
    // SAFETY: kill(2) on a process this test's pool started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    for _ in 0..200 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = h.enqueue("py", json!({}), 1).await;
    let info = h.wait_final(&[second]).await.remove(0);
    let failures = run.failures();
    run.stop().await;
    assert_eq!(
        (info.state, info.attempt),
        (JobState::Completed, 1),
        "{info:?}"
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(pool.stats().restarts, 1);
    pool.shutdown().await;
}

/// `cpu_affinity = "paired"` confines each worker process to one CPU (the thread serving it is
/// pinned there too); without it a process may run on every CPU this program may use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paired_processes_run_on_one_cpu_each() {
    let usable = allowed_cpus();
    for (affinity, expected) in [(CpuAffinity::None, usable), (CpuAffinity::Paired, 1)] {
        let h = Harness::new();
        let mut config = python_pool(2, None);
        config.cpu_affinity = affinity;
        let pool = Pool::start(config).expect("pool");
        let run = h.start(registry(&pool, &["py"]), 4);
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(h.enqueue("py", json!({"op": "affinity"}), 1).await);
        }
        let infos = h.wait_final(&ids).await;
        run.stop().await;
        pool.shutdown().await;
        for info in infos {
            let cpus = info.last_error.clone().unwrap_or_default();
            assert_eq!(
                cpus.split(',').count(),
                expected,
                "{affinity:?}: a process ran on CPUs {cpus:?}"
            );
        }
    }
}

/// How many CPUs this process may run on (its affinity mask, as the workers see theirs; not
/// `available_parallelism`, which also counts cgroup quotas).
fn allowed_cpus() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim();
    list.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().expect("cpu"), b.parse().expect("cpu"));
                b - a + 1
            }
            None => 1,
        })
        .sum()
}
