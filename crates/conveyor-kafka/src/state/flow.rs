//! Flow control: which partitions a lane pauses so that one backlog cannot crowd another
//! topic's records out of the client's fetch queue, and how much a lane holds unfinished.

use super::*;

impl State {
    /// The partitions of `lane` to pause and to resume; records them as paused or not.
    ///
    /// A partition with at least `pause_at` records read and unfinished is paused while a
    /// partition of another topic is light (at most half that, not paused, and it gave a record
    /// in the last [`ACTIVE_MS`] before `now_ms`): pausing helps when
    /// one topic's backlog (a retry storm, a burst in one queue) would crowd another topic's
    /// records out of the client's fetch queue. One queue draining its own backlog is never
    /// paused, because each pause costs a refetch. A paused partition resumes at half, or once
    /// no other topic has a light partition.
    ///
    /// Low-priority topics (`is_low`) never count as light, and a low partition with
    /// `pause_at` unfinished is paused while any other partition of the lane is active: its
    /// ready jobs go after those anyway, and its prefetched records must not crowd theirs out.
    pub fn flow(
        &mut self,
        lane: Lane,
        pause_at: usize,
        now_ms: i64,
        is_low: impl Fn(&str) -> bool,
    ) -> (Vec<Tp>, Vec<Tp>) {
        let resume_at = pause_at / 2;
        let in_flight = |tp: &Tp| self.offsets.get(tp).map_or(0, PartitionOffsets::in_flight);
        // Called after every record: nothing to decide (and nothing to allocate) unless a
        // partition is paused or full.
        let deciding = self
            .assigned
            .iter()
            .any(|(tp, l)| *l == lane && (self.paused.contains(tp) || in_flight(tp) >= pause_at));
        if !deciding {
            return (Vec::new(), Vec::new());
        }
        let partitions: Vec<(Tp, usize, bool)> = self
            .assigned
            .iter()
            .filter(|(_, l)| **l == lane)
            .map(|(tp, _)| (tp.clone(), in_flight(tp), self.paused.contains(tp)))
            .collect();
        let active = |tp: &Tp| {
            self.last_read
                .get(tp)
                .is_some_and(|at| *at >= now_ms - ACTIVE_MS)
        };
        let light_topics: HashSet<Arc<str>> = partitions
            .iter()
            .filter(|(tp, n, paused)| !paused && *n <= resume_at && active(tp) && !is_low(&tp.0))
            .map(|(tp, _, _)| tp.0.clone())
            .collect();
        let active_topics: HashSet<Arc<str>> = partitions
            .iter()
            .filter(|(tp, _, _)| active(tp) && !is_low(&tp.0))
            .map(|(tp, _, _)| tp.0.clone())
            .collect();
        let mut pause = Vec::new();
        let mut resume = Vec::new();
        for (tp, n, paused) in partitions {
            let yields_to = if is_low(&tp.0) {
                &active_topics
            } else {
                &light_topics
            };
            let other = yields_to.iter().any(|topic| *topic != tp.0);
            if !paused && n >= pause_at && other {
                pause.push(tp);
            } else if paused && (n <= resume_at || !other) {
                resume.push(tp);
            }
        }
        self.paused.extend(pause.iter().cloned());
        for tp in &resume {
            self.paused.remove(tp);
            self.last_read.remove(tp);
        }
        (pause, resume)
    }

    /// Jobs read from `lane`'s partitions and not finished: its back-pressure measure.
    pub fn buffered(&self, lane: Lane) -> usize {
        self.offsets
            .iter()
            .filter(|(tp, _)| self.lane(tp) == lane)
            .map(|(_, o)| o.in_flight())
            .sum()
    }
}
