//! Damping of peer oscillations (RFC 4271 8.1.1, DampPeerOscillations): the IdleHold time
//! before an automatic restart doubles with every consecutive failure and returns to its
//! initial value once a session has stayed Established for the stable period.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DampingConfig {
    pub initial_idle_hold: Duration,
    pub max_idle_hold: Duration,
    /// How long a session must stay Established before the failure count is forgotten.
    pub stable_period: Duration,
}

impl Default for DampingConfig {
    fn default() -> Self {
        DampingConfig {
            initial_idle_hold: Duration::from_secs(1),
            max_idle_hold: Duration::from_secs(120),
            stable_period: Duration::from_secs(120),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Damping {
    config: DampingConfig,
    failures: u32,
}

impl Damping {
    pub(crate) fn new(config: DampingConfig) -> Damping {
        Damping { config, failures: 0 }
    }

    /// Records a failure and returns how long to stay Idle before restarting.
    pub(crate) fn on_failure(&mut self) -> Duration {
        let shift = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        self.config.initial_idle_hold.saturating_mul(1u32 << shift).min(self.config.max_idle_hold)
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    pub(crate) fn stable_period(&self) -> Duration {
        self.config.stable_period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_hold_doubles_up_to_the_cap_and_resets() {
        let mut d = Damping::new(DampingConfig {
            initial_idle_hold: Duration::from_secs(1),
            max_idle_hold: Duration::from_secs(10),
            stable_period: Duration::from_secs(60),
        });
        let seq: Vec<u64> = (0..6).map(|_| d.on_failure().as_secs()).collect();
        assert_eq!(seq, vec![1, 2, 4, 8, 10, 10]);
        d.reset();
        assert_eq!(d.on_failure().as_secs(), 1);
    }
}
