//! Moving every job and cron entry from one backend to another (`conveyor migrate`).
//!
//! Jobs move in batches, oldest first: the target stores a batch ([`Import`], idempotent by
//! job id), then the source removes it ([`Export::remove_moved`]). A move interrupted anywhere
//! (even by `kill -9`) and run again loses nothing and stores nothing twice: a batch the source
//! still holds is handed over again, and the target skips what it already has.

use std::collections::BTreeMap;

use conveyor_core::{Error, Export, Import, JobId, Result};

use crate::Conveyor;

/// Default jobs per batch.
pub const DEFAULT_BATCH: usize = 1_000;

/// How far a move got; handed to the progress callback after every batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migration {
    /// Jobs the source listed when the move started (moved and left to move), when the
    /// source counts its jobs; the progress bar's length.
    pub total: Option<u64>,
    /// Jobs handed over so far (stored now or by an earlier, interrupted run).
    pub moved: u64,
    /// Of those, jobs the target already had from an earlier, interrupted run.
    pub already: u64,
    /// Jobs handed over, by the state they had.
    pub by_state: BTreeMap<String, u64>,
    /// Cron entries moved.
    pub cron: u64,
}

impl Conveyor {
    /// Moves every waiting, scheduled, retrying and dead job, and every cron entry, from this
    /// backend to `target`, `batch` jobs at a time; `progress` sees each step. Stop the
    /// source's workers first: a move refuses to start while jobs are running there.
    pub async fn migrate_to(
        &self,
        target: &Conveyor,
        batch: usize,
        mut progress: impl FnMut(&Migration) + Send,
    ) -> Result<Migration> {
        let export = self.exporter()?;
        let import = target.importer()?;
        let running = export.running().await?;
        if running > 0 {
            return Err(Error::invalid(
                "from",
                format!(
                    "{running} jobs are running on the {} backend: stop its workers (and wait for \
                     their jobs to finish) before moving its jobs, or they could run on both",
                    self.name
                ),
            ));
        }
        let mut done = Migration {
            total: self.movable().await,
            ..Migration::default()
        };
        done.cron = self.move_cron(target).await?;
        progress(&done);
        loop {
            let jobs = export.export(batch.max(1)).await?;
            if jobs.is_empty() {
                return Ok(done);
            }
            let ids: Vec<JobId> = jobs.iter().map(|j| j.info.id).collect();
            for job in &jobs {
                *done.by_state.entry(job.info.state.to_string()).or_default() += 1;
            }
            let imported = import.import(jobs).await?;
            let taken = export.remove_moved(&ids).await?;
            if !taken.is_empty() {
                return Err(taken_during_the_move(self.name, &taken));
            }
            done.moved += ids.len() as u64;
            done.already += imported.already;
            progress(&done);
        }
    }

    fn exporter(&self) -> Result<&dyn Export> {
        self.capabilities.export.as_deref().ok_or_else(|| {
            Error::invalid(
                "from",
                format!("jobs cannot be moved out of the {} engine", self.name),
            )
        })
    }

    fn importer(&self) -> Result<&dyn Import> {
        self.capabilities.import.as_deref().ok_or_else(|| {
            Error::invalid(
                "to",
                format!("jobs cannot be moved into the {} engine", self.name),
            )
        })
    }

    /// The jobs a move hands over, by the source's counts; `None` without counts.
    async fn movable(&self) -> Option<u64> {
        let stats = self.capabilities.statistics.as_ref()?.stats().await.ok()?;
        Some(
            stats
                .queues
                .iter()
                .map(|q| q.available + q.scheduled + q.retryable + q.dead)
                .sum(),
        )
    }

    /// Copies every cron entry to `target`, then removes it here (so it never fires on both);
    /// returns how many moved. Nothing to do when either side has no schedules.
    async fn move_cron(&self, target: &Conveyor) -> Result<u64> {
        let (Some(from), Some(to)) = (&self.capabilities.schedules, &target.capabilities.schedules)
        else {
            return Ok(0);
        };
        let mut moved = 0;
        for mut entry in from.list_cron().await? {
            entry.next_run_at = None;
            let name = entry.name.clone();
            to.upsert_cron(entry).await?;
            from.remove_cron(&name).await?;
            moved += 1;
        }
        Ok(moved)
    }
}

/// The error of a move whose source ran jobs it had just handed over: they may run on both
/// engines, and the user must know which.
fn taken_during_the_move(engine: &str, taken: &[JobId]) -> Error {
    let shown: Vec<String> = taken.iter().take(20).map(JobId::to_string).collect();
    let more = match taken.len() > shown.len() {
        true => format!(" and {} more", taken.len() - shown.len()),
        false => String::new(),
    };
    Error::Closed(format!(
        "a worker of the {engine} backend took {} jobs while they were being moved, so they may \
         run on both engines: {}{more}. Stop the source's workers, check these jobs with \
         `conveyor job ID` on both backends, then run the move again",
        taken.len(),
        shown.join(", ")
    ))
}
