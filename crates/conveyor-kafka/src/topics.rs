//! Topic names, all derived from one configurable prefix (the seeds' `topic_prefix`), so
//! several deployments can share a cluster.

use std::time::Duration;

/// How Conveyor lays out its topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLayout {
    /// Prefix of every topic, e.g. `conveyor.`.
    pub prefix: String,
    /// Fixed delays of the retry tiers; a retry goes to the first tier at least as long as its
    /// backoff (the last tier for longer ones) and waits there until due.
    pub retry_tiers: Vec<Duration>,
}

impl Default for TopicLayout {
    fn default() -> Self {
        TopicLayout {
            prefix: "conveyor.".to_string(),
            retry_tiers: [1, 10, 60, 600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        }
    }
}

/// A priority level. Each level of a queue has a topic of its own, so a backlog of one level
/// never sits in a partition (or a client's fetch queue) ahead of a more urgent job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Priority below 0 (the seeds' `low`, -10).
    Low,
    /// Priority 0, the default.
    Normal,
    /// Priority above 0 (the seeds' `high`, 10).
    High,
}

impl Level {
    /// Every level, most urgent first.
    pub const ALL: [Level; 3] = [Level::High, Level::Normal, Level::Low];

    /// The level of a job's priority: above 0 is high, below 0 low.
    pub fn of(priority: i32) -> Level {
        match priority.signum() {
            1 => Level::High,
            -1 => Level::Low,
            _ => Level::Normal,
        }
    }

    /// The priority a job of this level gets when its record says none: the seeds' `high`
    /// (10), `normal` (0) and `low` (-10).
    pub fn priority(self) -> i32 {
        match self {
            Level::High => 10,
            Level::Normal => 0,
            Level::Low => -10,
        }
    }

    /// The part of a queue topic's name that names the level (`queue` for normal).
    fn infix(self) -> &'static str {
        match self {
            Level::High => "queue-high.",
            Level::Normal => "queue.",
            Level::Low => "queue-low.",
        }
    }
}

impl TopicLayout {
    /// The topic of a queue's normal level: `{prefix}queue.{queue}`.
    pub fn queue(&self, queue: &str) -> String {
        self.queue_at(queue, Level::Normal)
    }

    /// The topic of a queue's priority level: `{prefix}queue.{queue}` (normal),
    /// `{prefix}queue-high.{queue}`, `{prefix}queue-low.{queue}`.
    pub fn queue_at(&self, queue: &str, level: Level) -> String {
        format!("{}{}{queue}", self.prefix, level.infix())
    }

    /// A pattern (librdkafka subscription syntax) matching every queue topic of `level`.
    pub fn queue_pattern(&self, level: Level) -> String {
        format!("^{}.+", regex_escape(&self.queue_at("", level)))
    }

    /// A pattern matching only the topic of `queue` at `level`, whether or not it exists yet.
    pub fn queue_pattern_of(&self, queue: &str, level: Level) -> String {
        format!("^{}$", regex_escape(&self.queue_at(queue, level)))
    }

    /// The queue and level a queue topic carries: `("mail", High)` for
    /// `{prefix}queue-high.mail`; `None` for any other topic.
    pub fn level_of<'a>(&self, topic: &'a str) -> Option<(&'a str, Level)> {
        let rest = topic.strip_prefix(self.prefix.as_str())?;
        Level::ALL.into_iter().find_map(|level| {
            rest.strip_prefix(level.infix())
                .filter(|queue| !queue.is_empty())
                .map(|queue| (queue, level))
        })
    }

    /// The queue a queue topic (of any level) carries: `mail` for `{prefix}queue.mail`;
    /// `None` for any other topic.
    pub fn queue_of<'a>(&self, topic: &'a str) -> Option<&'a str> {
        self.level_of(topic).map(|(queue, _)| queue)
    }

    /// Every retry tier's topic, shortest delay first.
    pub fn retry_topics(&self) -> Vec<String> {
        (0..self.retry_tiers.len())
            .filter_map(|t| self.retry(t))
            .collect()
    }

    /// The topic of retry tier `tier` (0-based): `{prefix}retry.{delay}`, e.g. `conveyor.retry.10s`.
    pub fn retry(&self, tier: usize) -> Option<String> {
        self.retry_tiers
            .get(tier)
            .map(|d| format!("{}retry.{}", self.prefix, humantime::format_duration(*d)))
    }

    /// The tier a retry after `delay` waits in: the shortest tier not shorter than the delay.
    pub fn tier_for(&self, delay: Duration) -> usize {
        self.retry_tiers
            .iter()
            .position(|t| *t >= delay)
            .unwrap_or(self.retry_tiers.len().saturating_sub(1))
    }

    /// Delayed and scheduled jobs: `{prefix}scheduled`.
    pub fn scheduled(&self) -> String {
        format!("{}scheduled", self.prefix)
    }

    /// The status journal, keyed by job id: `{prefix}status` (see `src/status`).
    pub fn status(&self) -> String {
        format!("{}status", self.prefix)
    }

    /// Attempt notes of keyed jobs that retry in place, keyed by their partition:
    /// `{prefix}attempts` (see `src/attempts.rs`).
    pub fn attempts(&self) -> String {
        format!("{}attempts", self.prefix)
    }

    /// Marks of dead letters put back in their queue: `{prefix}dead.retried` (see
    /// `src/dead.rs`).
    pub fn dead_retried(&self) -> String {
        format!("{}dead.retried", self.prefix)
    }

    /// Cron entries, one record per change, keyed by name: `{prefix}cron` (see `src/cron.rs`).
    pub fn cron(&self) -> String {
        format!("{}cron", self.prefix)
    }

    /// Cancel, purge and cleanup marks, one partition: `{prefix}control` (see `src/control`).
    pub fn control(&self) -> String {
        format!("{}control", self.prefix)
    }

    /// The import journal of `conveyor migrate`, one partition: `{prefix}imports` (see
    /// `src/import.rs`).
    pub fn imports(&self) -> String {
        format!("{}imports", self.prefix)
    }

    /// Workers' presence records, one partition: `{prefix}workers` (see `src/presence.rs`).
    pub fn workers(&self) -> String {
        format!("{}workers", self.prefix)
    }

    /// The dead-letter topic: `{prefix}dead`.
    pub fn dead(&self) -> String {
        format!("{}dead", self.prefix)
    }
}

/// Escapes a topic name for a librdkafka subscription pattern.
fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let layout = TopicLayout {
            prefix: "acme.jobs.".into(),
            ..TopicLayout::default()
        };
        assert_eq!(layout.queue("mail"), "acme.jobs.queue.mail");
        assert_eq!(layout.queue_of("acme.jobs.queue.mail"), Some("mail"));
        assert_eq!(layout.queue_of("acme.jobs.retry.1s"), None);
        assert_eq!(layout.queue_of("other.queue.mail"), None);
        assert_eq!(
            layout.queue_at("mail", Level::High),
            "acme.jobs.queue-high.mail"
        );
        assert_eq!(
            layout.queue_at("mail", Level::Low),
            "acme.jobs.queue-low.mail"
        );
        assert_eq!(
            layout.level_of("acme.jobs.queue-low.mail"),
            Some(("mail", Level::Low))
        );
        assert_eq!(layout.queue_of("acme.jobs.queue-high.a.b"), Some("a.b"));
        assert_eq!(layout.queue_of("acme.jobs.queue."), None);
        assert_eq!(
            layout.queue_pattern(Level::High),
            "^acme\\.jobs\\.queue-high\\..+"
        );
        assert_eq!(
            layout.queue_pattern_of("a-b", Level::Low),
            "^acme\\.jobs\\.queue-low\\.a-b$"
        );
        assert_eq!(layout.retry_topics().len(), 4);
        assert_eq!(layout.retry_topics()[0], "acme.jobs.retry.1s");
        assert_eq!(layout.retry(1).as_deref(), Some("acme.jobs.retry.10s"));
        assert_eq!(layout.retry(9), None);
        assert_eq!(layout.scheduled(), "acme.jobs.scheduled");
        assert_eq!(layout.dead(), "acme.jobs.dead");
    }

    #[test]
    fn retries_wait_in_the_first_tier_long_enough() {
        let layout = TopicLayout::default();
        assert_eq!(layout.tier_for(Duration::from_millis(200)), 0);
        assert_eq!(layout.tier_for(Duration::from_secs(1)), 0);
        assert_eq!(layout.tier_for(Duration::from_secs(5)), 1);
        assert_eq!(layout.tier_for(Duration::from_secs(86_400)), 3);
    }

    #[test]
    fn priorities_map_to_three_levels() {
        assert_eq!(Level::of(10), Level::High);
        assert_eq!(Level::of(1), Level::High);
        assert_eq!(Level::of(0), Level::Normal);
        assert_eq!(Level::of(-10), Level::Low);
        assert_eq!(Level::of(i32::MIN), Level::Low);
        assert!(Level::High > Level::Normal && Level::Normal > Level::Low);
    }
}
