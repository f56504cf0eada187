use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Exponential backoff with jitter: attempt `n` (1-based) waits about `base * 2^(n-1)`, capped
/// at `max`, randomised by up to ±`jitter` of itself so that a burst of failures does not
/// retry in lock-step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay before the first retry.
    #[serde(with = "millis")]
    pub base: Duration,
    /// Upper bound of any delay.
    #[serde(with = "millis")]
    pub max: Duration,
    /// Fraction (0.0..=1.0) of the delay that is randomised.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 1 s, 2 s, 4 s, ... capped at one hour, ±20 % jitter.
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// A backoff of `base` doubling up to `max`, with the default jitter.
    pub fn exponential(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            ..Backoff::default()
        }
    }

    /// The delay before retrying after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let raw = self.base.saturating_mul(1u32 << exp.min(31)).min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 || raw.is_zero() {
            return raw;
        }
        let factor = rand::thread_rng().gen_range((1.0 - jitter)..=(1.0 + jitter));
        raw.mul_f64(factor).min(self.max)
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_are_capped() {
        let b = Backoff {
            base: Duration::from_millis(200),
            max: Duration::from_millis(1000),
            jitter: 0.0,
        };
        let delays: Vec<_> = (1..=5).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(delays, vec![200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b = Backoff::exponential(Duration::from_millis(1000), Duration::from_secs(60));
        for _ in 0..200 {
            let d = b.delay(1).as_millis();
            assert!((800..=1200).contains(&d), "delay {d} outside ±20%");
        }
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let b = Backoff::default();
        assert!(b.delay(u32::MAX) <= b.max);
    }
}
