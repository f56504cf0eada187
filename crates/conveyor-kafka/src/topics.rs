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

impl TopicLayout {
    /// The topic of a queue: `{prefix}queue.{queue}`.
    pub fn queue(&self, queue: &str) -> String {
        format!("{}queue.{queue}", self.prefix)
    }

    /// The queue a queue topic carries: `mail` for `{prefix}queue.mail`; `None` for any other
    /// topic.
    pub fn queue_of<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix("queue."))
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

    /// Job status and progress, compacted, keyed by job id: `{prefix}status`.
    pub fn status(&self) -> String {
        format!("{}status", self.prefix)
    }

    /// The dead-letter topic: `{prefix}dead`.
    pub fn dead(&self) -> String {
        format!("{}dead", self.prefix)
    }
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
}
