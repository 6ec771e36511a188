//! Reconnect delays: exponential with jitter, so a fleet of agents that lost
//! the server at the same moment (a restart) does not reconnect in lockstep.
//! Public so the fleet benchmark's simulated agents reconnect exactly as
//! real agents do.

use std::time::Duration;

use rand::Rng;

/// First reconnect delay.
pub const BASE: Duration = Duration::from_secs(1);

/// Longest reconnect delay.
pub const CAP: Duration = Duration::from_secs(60);

/// Reconnects after a server said it is going away (it is restarting) are
/// spread uniformly over this long: a whole fleet that heard the same
/// close at the same moment would otherwise come back in one burst.
pub const RESTART_SPREAD: Duration = Duration::from_secs(20);

/// The wait before reconnecting to a server that closed with "going away":
/// uniform in `[1 s, spread]` (or exactly `spread` when that is shorter).
pub fn restart_delay(spread: Duration) -> Duration {
    let max = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
    let min = max.min(1000);
    Duration::from_millis(rand::rng().random_range(min..=max))
}

/// Doubling delays from a base up to a cap; each delay handed out is
/// uniformly jittered within `[d/2, d]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `base` and never exceeding `cap`. A zero base
    /// would make a tight reconnect loop, so it is raised to 1 ms.
    pub fn new(base: Duration, cap: Duration) -> Self {
        let base = base.max(Duration::from_millis(1));
        let cap = cap.max(base);
        Backoff {
            base,
            cap,
            next: base,
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(self.cap);
        jitter(delay, &mut rand::rng())
    }

    /// Back to the base delay, after a connection that proved healthy.
    pub fn reset(&mut self) {
        self.next = self.base;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BASE, CAP)
    }
}

/// Uniform in `[d/2, d]`, never zero.
fn jitter(delay: Duration, rng: &mut impl Rng) -> Duration {
    let full = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).max(1);
    let half = (full / 2).max(1);
    Duration::from_millis(rng.random_range(half..=full))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_are_spread_over_seconds_not_one_instant() {
        let delays: Vec<Duration> = (0..200).map(|_| restart_delay(RESTART_SPREAD)).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_secs(1) && *d <= RESTART_SPREAD));
        let early = delays
            .iter()
            .filter(|d| **d < Duration::from_secs(5))
            .count();
        assert!(early < 120, "{early} of 200 in the first 5 s");
    }

    #[test]
    fn doubles_then_caps_at_sixty_seconds() {
        let mut backoff = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            let ceiling = backoff.next;
            let delay = backoff.next_delay();
            assert!(
                delay <= ceiling && delay >= ceiling / 2,
                "{delay:?} vs {ceiling:?}"
            );
            assert!(delay <= CAP);
            ceilings.push(ceiling.as_secs());
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60, 60]);
    }

    #[test]
    fn never_zero() {
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        for _ in 0..100 {
            assert!(backoff.next_delay() > Duration::ZERO);
        }
        let mut rng = rand::rng();
        for _ in 0..100 {
            assert!(jitter(Duration::ZERO, &mut rng) > Duration::ZERO);
            assert!(jitter(Duration::from_millis(1), &mut rng) > Duration::ZERO);
        }
    }

    #[test]
    fn jitter_spreads_within_half_to_full() {
        let mut rng = rand::rng();
        let samples: Vec<_> = (0..500)
            .map(|_| jitter(Duration::from_secs(8), &mut rng))
            .collect();
        assert!(samples
            .iter()
            .all(|d| *d >= Duration::from_secs(4) && *d <= Duration::from_secs(8)));
        // Not all the same: the point of jitter.
        assert!(samples.iter().any(|d| *d != samples[0]));
    }

    #[test]
    fn reset_returns_to_the_base() {
        let mut backoff = Backoff::default();
        for _ in 0..10 {
            backoff.next_delay();
        }
        assert!(backoff.next_delay() > Duration::from_secs(29));
        backoff.reset();
        assert!(backoff.next_delay() <= BASE);
    }
}
