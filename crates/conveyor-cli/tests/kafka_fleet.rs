//! The fleet test of the Kafka engine: three `conveyor worker` processes in one consumer group
//! on a durable broker (tansu, SQLite storage) of the test's own; one worker is killed with
//! SIGKILL mid-drain, and later the broker itself is restarted. Every acknowledged job must run
//! (0 lost), and re-runs stay bounded by what was in flight.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use conveyor::{Conveyor, NewJob};
use serde_json::json;
use support::{Fleet, FLEET_CONCURRENCY};

const JOBS: usize = 20_000;
const WORKERS: usize = 3;

/// How many times each job id was echoed, over every worker's log.
fn runs(logs: &[PathBuf]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(" echo job=")) {
            if let Some(id) = line
                .split("job=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
            {
                *seen.entry(id.to_string()).or_insert(0) += 1;
            }
        }
    }
    seen
}

fn wait_for_runs(logs: &[PathBuf], at_least: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let n = runs(logs).len();
        if n >= at_least || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn enqueue(url: &str, jobs: usize) {
    let conveyor = Conveyor::connect(url).await.expect("connect");
    for chunk in 0..jobs.div_ceil(1000) {
        let n = (jobs - chunk * 1000).min(1000);
        let batch = (0..n)
            .map(|i| NewJob::new("echo", json!({"n": chunk * 1000 + i})))
            .collect();
        conveyor.dispatch_batch(batch).await.expect("enqueue");
    }
}

/// A backend URL with topics of the test's own and the given group session timeout.
fn url_for(address: &str, session_timeout: &str) -> String {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "kafka://{address}?prefix=fleet{}.&partitions=6&session_timeout={session_timeout}",
        &tag[24..]
    )
}

fn report(counts: &HashMap<String, usize>, what: &str) -> usize {
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!("{what}: {} jobs ran, {duplicates} re-runs", counts.len());
    duplicates
}

/// Three workers share 20k jobs; one is killed with SIGKILL mid-drain, then the broker restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_loses_nothing_when_a_worker_is_killed_and_the_broker_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut fleet = Fleet::in_dir(dir.path());
    // tansu's SQLite storage answers heartbeats late under load: a short session would move
    // partitions around for nothing, each move re-running finished but uncommitted work.
    let url = url_for(&fleet.broker(&["start"]), "15s");
    enqueue(&url, JOBS).await;
    let logs: Vec<PathBuf> = (0..WORKERS)
        .map(|i| dir.path().join(format!("worker-{i}.log")))
        .collect();
    for log in &logs {
        fleet.spawn_worker(&url, log);
    }
    let before_kill = wait_for_runs(&logs, JOBS / 8, Duration::from_secs(120));
    assert!(before_kill < JOBS, "the drain finished before the kill");
    // The busiest worker dies: the first one started may not have been given any partition.
    let busiest = (0..WORKERS)
        .max_by_key(|i| runs(std::slice::from_ref(&logs[*i])).len())
        .unwrap_or(0);
    if let Some(mut victim) = fleet.workers[busiest].take() {
        victim.kill().expect("kill -9 a worker"); // SIGKILL: no commit, no goodbye
        victim.wait().expect("reap");
    }
    // The broker goes down and comes back on the same port with the same SQLite file; the
    // surviving workers reconnect, rejoin the group and go on from the committed offsets.
    let before_restart = wait_for_runs(&logs, JOBS / 2, Duration::from_secs(180));
    assert!(
        before_restart < JOBS,
        "the drain finished before the restart"
    );
    fleet.broker(&["restart"]);
    let done = wait_for_runs(&logs, JOBS, Duration::from_secs(300));
    let duplicates = report(&runs(&logs), "kill -9 and broker restart fleet");
    let per_worker: Vec<usize> = logs
        .iter()
        .map(|l| runs(std::slice::from_ref(l)).len())
        .collect();
    eprintln!("jobs run per worker (worker {busiest} was killed): {per_worker:?}");
    if done != JOBS {
        // Where the group stands tells a stuck partition (lag left) from a commit that passed
        // unfinished jobs (no lag); the worker logs are kept for the rebalances.
        let stats = Conveyor::connect(&url)
            .await
            .expect("connect")
            .stats()
            .await;
        let kept = dir.keep();
        panic!(
            "acknowledged jobs were lost: {done} of {JOBS} ran; group offsets: {stats:#?}; \
             worker and broker logs kept in {}",
            kept.display()
        );
    }
    // Re-runs come from work that finished but was not committed yet when the worker died or
    // a partition moved: what was running (the concurrency), plus what the victim finished
    // since its last commit reached the broker (the 20 ms commit interval plus an OffsetCommit
    // round trip of up to ~100 ms on a loaded tansu, at about 10k jobs/s: ~1200 jobs). While
    // the broker is down the survivors go on with what they had read, and their commits fail:
    // if the group rebalances before a commit gets through, that runs again too: what a lane
    // had read and not committed, about its buffer of 4096 records (docs/kafka-engine.md).
    // That is not a hard limit: the buffer counts unfinished records, so while commits fail
    // and the broker still serves fetches (a rebalance tansu holds open), finished but
    // uncommitted work can grow past it; with a 6 s session, one run of about ten re-ran
    // more than this bound, none with 15 s (2026-11-26: 55-3065 re-runs).
    const LANE_BUFFER: usize = 4096;
    let bound = WORKERS * FLEET_CONCURRENCY + 1200 + (WORKERS - 1) * LANE_BUFFER;
    assert!(
        duplicates <= bound,
        "{duplicates} re-runs exceed the in-flight bound {bound}"
    );
}

/// The scene of the freeze tests: a memory broker with a 6 s group session, one job enqueued,
/// and the log files of the worker to freeze and of the other one. Returns the URL and logs.
async fn freeze_scene(dir: &Path, fleet: &mut Fleet) -> (String, Vec<PathBuf>) {
    let url = url_for(&fleet.broker(&["start", "--memory"]), "6s");
    let logs = ["frozen", "other"]
        .iter()
        .map(|n| dir.join(format!("{n}.log")))
        .collect();
    enqueue(&url, 1).await;
    (url, logs)
}

/// Sends `signal` (`STOP`, `CONT`) to a worker process.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal}");
}

/// The `default` queue's counts, once `done` holds for them (or after a minute).
async fn queue_counts(
    url: &str,
    done: impl Fn(&conveyor::QueueStats) -> bool,
) -> conveyor::QueueStats {
    let conveyor = Conveyor::connect(url).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let queue = match conveyor.stats().await {
            Ok(stats) => stats.queue("default").cloned().unwrap_or_default(),
            Err(err) => {
                eprintln!("stats: {err}");
                conveyor::QueueStats::default()
            }
        };
        if done(&queue) || Instant::now() > deadline {
            return queue;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A worker frozen (SIGSTOP) mid-job for longer than its session loses its partitions; when
/// it wakes up it learns they were lost and takes the path that commits nothing for them, the
/// group rebalances to the other worker, and every job runs with the group's position ending
/// at the log end. (Its own position is the log end too by then, so this cannot tell a stale
/// commit from none: the no-commit path is what the log line shows. tansu does not hand a
/// silent member's partitions to the others before it answers again, as Kafka would after its
/// session: so the jobs are checked after the wake-up, not during the freeze.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_session_gives_up_its_partitions_and_no_job_is_lost() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut fleet = Fleet::in_dir(dir.path());
    let (url, logs) = freeze_scene(dir.path(), &mut fleet).await;
    fleet.spawn_worker(&url, &logs[0]);
    assert_eq!(wait_for_runs(&logs[..1], 1, Duration::from_secs(60)), 1);
    let conveyor = Conveyor::connect(&url).await.expect("connect");
    let sleeps = (0..6)
        .map(|i| NewJob::new("sleep", json!({"ms": 2000, "i": i})))
        .collect();
    conveyor.dispatch_batch(sleeps).await.expect("enqueue");
    tokio::time::sleep(Duration::from_millis(700)).await; // the frozen worker runs them now
    let frozen = fleet.workers[0].take().expect("frozen worker");
    signal(&frozen, "STOP");
    fleet.spawn_worker(&url, &logs[1]);
    tokio::time::sleep(Duration::from_secs(8)).await; // past its 6 s session
    signal(&frozen, "CONT");
    fleet.workers.push(Some(frozen));
    let lost_seen = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(&logs[0]).unwrap_or_default();
            if log.contains("partitions lost: not committing") || Instant::now() > deadline {
                break log.contains("partitions lost: not committing");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let all_done = |q: &conveyor::QueueStats| q.available == 0 && q.completed == 7;
    let settled = queue_counts(&url, all_done).await;
    if !(lost_seen && all_done(&settled)) {
        let kept = dir.keep();
        panic!(
            "lost partitions seen: {lost_seen}; after the wake-up: {settled:?}; logs kept in {}",
            kept.display()
        );
    }
}

/// The job events a worker logged at debug (`started`, `completed`, ...), in order, as
/// `(event, job id)` for jobs of `kind`.
fn job_events(log: &Path, kind: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let kind_field = format!("kind=\"{kind}\"");
    let plain_kind = format!("kind={kind}");
    text.lines()
        .filter(|l| l.contains(&kind_field) || l.contains(&plain_kind))
        .filter_map(|line| {
            let id = line.split("job=").nth(1)?.split_whitespace().next()?;
            let event = [
                "started",
                "completed",
                "attempt failed",
                "dead-lettered",
                "stopped while running",
            ]
            .into_iter()
            .find(|e| line.contains(e))?;
            Some((event.to_string(), id.to_string()))
        })
        .collect()
}

/// Jobs of one ordering key that ran at the same time in this worker, from its ledger of
/// starts and ends in order: each start while another job is running.
fn overlaps(ledger: &[(String, String)]) -> Vec<String> {
    let mut running: Vec<&str> = Vec::new();
    let mut overlapping = Vec::new();
    for (event, id) in ledger {
        if event == "started" {
            if !running.is_empty() {
                overlapping.push(format!("{id} started while {running:?} ran"));
            }
            running.push(id);
        } else if let Some(at) = running.iter().position(|r| r == id) {
            running.remove(at);
        }
    }
    overlapping
}

/// Polls `check` every 100 ms until it holds or `limit` passed; returns its last answer.
fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A worker frozen (SIGSTOP) past its session while it runs the first job of an ordering key:
/// a worker of another queue joins meanwhile, so the group rebalances and the frozen worker,
/// when it wakes up, finds its partitions lost and gets them back (the other worker does not
/// read this queue). It reads the key's jobs again while the first one still runs. The key's
/// jobs never overlap (its ledger of starts and ends, in order) and each runs once (before: the
/// copy read again ran beside the first, whose late report then let the next job start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_job_running_while_its_partition_moves_never_overlaps_its_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut fleet = Fleet::in_dir(dir.path());
    let (url, logs) = freeze_scene(dir.path(), &mut fleet).await;
    fleet.spawn_worker_with(&url, &logs[0], &[], "info,conveyor=debug");
    assert_eq!(wait_for_runs(&logs[..1], 1, Duration::from_secs(60)), 1);
    let conveyor = Conveyor::connect(&url).await.expect("connect");
    // The first job runs well past the freeze; the others are short.
    let keyed = (0..4)
        .map(|i| {
            let ms = if i == 0 { 40_000 } else { 500 };
            NewJob::new("sleep", json!({"ms": ms, "i": i})).ordering_key("k")
        })
        .collect();
    conveyor.dispatch_batch(keyed).await.expect("enqueue");
    let first_started = wait_until(Duration::from_secs(30), || {
        !job_events(&logs[0], "sleep").is_empty()
    });
    assert!(first_started, "the keyed job never started");
    let frozen = fleet.workers[0].take().expect("frozen worker");
    signal(&frozen, "STOP");
    fleet.spawn_worker_with(&url, &logs[1], &["--queues", "other"], "info");
    tokio::time::sleep(Duration::from_secs(8)).await; // past its 6 s session
    signal(&frozen, "CONT");
    fleet.workers.push(Some(frozen));
    let lost_seen = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&logs[0])
            .unwrap_or_default()
            .contains("partitions lost: not committing")
    });
    let all_ran = wait_until(Duration::from_secs(90), || {
        let ledger = job_events(&logs[0], "sleep");
        let done: std::collections::HashSet<&String> = ledger
            .iter()
            .filter(|(e, _)| e == "completed")
            .map(|(_, id)| id)
            .collect();
        done.len() >= 4
    });
    let ledger = job_events(&logs[0], "sleep");
    let overlapping = overlaps(&ledger);
    let starts = ledger.iter().filter(|(e, _)| e == "started").count();
    if !(lost_seen && all_ran && overlapping.is_empty() && starts == 4) {
        let kept = dir.keep();
        panic!(
            "lost partitions seen: {lost_seen}; all ran: {all_ran}; {starts} starts; overlaps: {overlapping:?}; \
             ledger: {ledger:?}; logs kept in {}",
            kept.display()
        );
    }
}

/// Jobs that finish while the broker is down: once it is back, the group's position reaches
/// the log end with the worker idle, and nothing runs twice. (A regression guard for the
/// commit path, not the proof of the refused-commit fix: librdkafka holds a commit while the
/// coordinator is unreachable and sends it when it is back, so this passed before that fix
/// too; `session::tests::a_refused_commit_is_sent_again` has a broker answer with a refusal.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_finished_while_the_broker_is_down_are_committed_once_it_is_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut fleet = Fleet::in_dir(dir.path());
    let url = url_for(&fleet.broker(&["start"]), "30s");
    let log = dir.path().join("worker.log");
    let conveyor = Conveyor::connect(&url).await.expect("connect");
    let sleeps = (0..6)
        .map(|i| NewJob::new("sleep", json!({"ms": 3000, "i": i})))
        .collect();
    conveyor.dispatch_batch(sleeps).await.expect("enqueue");
    fleet.spawn_worker_with(&url, &log, &[], "info,conveyor=debug");
    let started = |log: &Path| {
        job_events(log, "sleep")
            .iter()
            .filter(|(e, _)| e == "started")
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(60), || started(&log) == 6),
        "the jobs never started"
    );
    fleet.broker(&["stop"]);
    // The jobs finish meanwhile; their commits fail.
    tokio::time::sleep(Duration::from_secs(5)).await;
    fleet.broker(&["start"]);
    let all_done = |q: &conveyor::QueueStats| q.available == 0 && q.completed == 6;
    let settled = queue_counts(&url, all_done).await;
    let runs = started(&log);
    if !(all_done(&settled) && runs == 6) {
        let kept = dir.keep();
        panic!(
            "after the broker came back: {settled:?}, {runs} runs of 6 jobs; logs kept in {}",
            kept.display()
        );
    }
}

/// When each job first started, from `started job=` lines (logged at debug) of every log.
fn first_starts(logs: &[PathBuf]) -> HashMap<String, chrono::DateTime<chrono::Utc>> {
    let mut starts = HashMap::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(" started job=")) {
            let at = line.split_whitespace().next().and_then(|t| t.parse().ok());
            let id = line
                .split("job=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next());
            if let (Some(at), Some(id)) = (at, id) {
                starts.entry(id.to_string()).or_insert(at);
            }
        }
    }
    starts
}

/// Delayed jobs due 6-20 s ahead on a durable broker: the worker that owns most schedule
/// partitions is killed with SIGKILL while jobs come due, and later the broker restarts. Every
/// job runs, none before its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_survive_a_worker_kill_and_a_broker_restart_and_never_start_early() {
    const DELAYED: usize = 600;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut fleet = Fleet::in_dir(dir.path());
    let url = url_for(&fleet.broker(&["start"]), "15s");
    let conveyor = Conveyor::connect(&url).await.expect("connect");
    let mut due = HashMap::new();
    let jobs: Vec<NewJob> = (0..DELAYED)
        .map(|i| {
            let delay = Duration::from_millis(6000 + (i as u64 * 14_000) / DELAYED as u64);
            NewJob::new("echo", json!({"n": i})).run_in(delay)
        })
        .collect();
    for (job, enqueued) in jobs.iter().zip(
        conveyor
            .dispatch_batch(jobs.clone())
            .await
            .expect("enqueue"),
    ) {
        due.insert(enqueued.id.to_string(), job.run_at.expect("run_at"));
    }
    let logs: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("worker-{i}.log")))
        .collect();
    let ledger = "info,conveyor::commands=debug";
    fleet.spawn_worker_with(&url, &logs[0], &[], ledger);
    fleet.spawn_worker_with(&url, &logs[1], &[], ledger);
    // Killed while the first jobs come due: it may have moved some, and read others.
    wait_for_runs(&logs, 20, Duration::from_secs(60));
    if let Some(mut victim) = fleet.workers[0].take() {
        victim.kill().expect("kill -9 a worker");
        victim.wait().expect("reap");
    }
    fleet.spawn_worker_with(&url, &logs[2], &[], ledger);
    wait_for_runs(&logs, DELAYED / 2, Duration::from_secs(120));
    fleet.broker(&["restart"]);
    let done = wait_for_runs(&logs, DELAYED, Duration::from_secs(180));
    let starts = first_starts(&logs);
    if done != DELAYED {
        let kept = dir.keep();
        panic!(
            "{done} of {DELAYED} delayed jobs ran; worker and broker logs kept in {}",
            kept.display()
        );
    }
    let early: Vec<String> = due
        .iter()
        .filter_map(|(id, at)| {
            let started = starts.get(id)?;
            (started.timestamp_millis() < at.timestamp_millis())
                .then(|| format!("{id} started {started}, due {at}"))
        })
        .collect();
    assert!(early.is_empty(), "jobs started early: {early:?}");
    report(
        &runs(&logs),
        "delayed jobs across kill -9 and a broker restart",
    );
}
