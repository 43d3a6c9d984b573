//! The pool's load level. Every streaming-Whisper server's failure is lag that grows for
//! ever once streams outnumber what the CPU can decode; here lag is watched and the
//! service degrades in steps instead, then recovers by itself:
//!
//! | lag of the oldest pending decode | level        | effect                               |
//! |----------------------------------|--------------|--------------------------------------|
//! | ≥ max_lag / 4                    | `LongStep`   | partials at twice the step           |
//! | ≥ max_lag / 2                    | `FinalsOnly` | no partials                          |
//! | ≥ max_lag                        | `Shed`       | queued finals older than max_lag are |
//! |                                  |              | dropped unheard, counted and marked  |
//!
//! A level is entered as soon as the lag reaches it and left (one step at a time) only
//! after the lag has stayed under half its threshold for `recover`: no flapping. Pure:
//! lag and a millisecond clock in, a level out.

use crate::asr::stream_policy::Degrade;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverloadSettings {
    pub max_lag_ms: u64,
    pub recover_ms: u64,
}

impl Default for OverloadSettings {
    fn default() -> Self {
        Self { max_lag_ms: 6_000, recover_ms: 3_000 }
    }
}

#[derive(Debug)]
pub struct Overload {
    s: OverloadSettings,
    level: Degrade,
    /// Since when the lag has been low enough to step down.
    calm_since: Option<u64>,
}

impl Overload {
    pub fn new(s: OverloadSettings) -> Self {
        Self { s, level: Degrade::Normal, calm_since: None }
    }

    pub fn level(&self) -> Degrade {
        self.level
    }

    fn threshold(&self, level: Degrade) -> u64 {
        match level {
            Degrade::Normal => 0,
            Degrade::LongStep => self.s.max_lag_ms / 4,
            Degrade::FinalsOnly => self.s.max_lag_ms / 2,
            Degrade::Shed => self.s.max_lag_ms,
        }
    }

    fn level_for(&self, lag_ms: u64) -> Degrade {
        [Degrade::Shed, Degrade::FinalsOnly, Degrade::LongStep]
            .into_iter()
            .find(|&l| lag_ms >= self.threshold(l))
            .unwrap_or(Degrade::Normal)
    }

    /// `lag_ms`: the worst backlog lag over all live streams now.
    pub fn observe(&mut self, now_ms: u64, lag_ms: u64) -> Degrade {
        let target = self.level_for(lag_ms);
        if target > self.level {
            self.level = target;
            self.calm_since = None;
        } else if self.level > Degrade::Normal && lag_ms < self.threshold(self.level) / 2 {
            let since = *self.calm_since.get_or_insert(now_ms);
            if now_ms.saturating_sub(since) >= self.s.recover_ms {
                self.level = match self.level {
                    Degrade::Shed => Degrade::FinalsOnly,
                    Degrade::FinalsOnly => Degrade::LongStep,
                    _ => Degrade::Normal,
                };
                self.calm_since = Some(now_ms);
            }
        } else {
            self.calm_since = None;
        }
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_up_at_once_and_down_slowly() {
        let mut o = Overload::new(OverloadSettings::default());
        assert_eq!(o.observe(0, 500), Degrade::Normal);
        assert_eq!(o.observe(100, 1_600), Degrade::LongStep);
        assert_eq!(o.observe(200, 7_000), Degrade::Shed);
        // Lag falls: one step down per 3 s of calm.
        assert_eq!(o.observe(1_000, 1_000), Degrade::Shed);
        assert_eq!(o.observe(3_999, 1_000), Degrade::Shed);
        assert_eq!(o.observe(4_000, 1_000), Degrade::FinalsOnly);
        assert_eq!(o.observe(5_000, 1_600), Degrade::FinalsOnly, "1.6 s is not under half of 3 s: calm restarts");
        assert_eq!(o.observe(6_000, 100), Degrade::FinalsOnly);
        assert_eq!(o.observe(8_999, 100), Degrade::FinalsOnly);
        assert_eq!(o.observe(9_000, 100), Degrade::LongStep);
        assert_eq!(o.observe(12_000, 100), Degrade::Normal);
    }

    #[test]
    fn a_spike_during_recovery_restarts_the_calm_period() {
        let mut o = Overload::new(OverloadSettings::default());
        o.observe(0, 3_500);
        assert_eq!(o.level(), Degrade::FinalsOnly);
        o.observe(1_000, 100);
        o.observe(3_000, 2_000); // not calm
        assert_eq!(o.observe(4_500, 100), Degrade::FinalsOnly);
        assert_eq!(o.observe(7_500, 100), Degrade::LongStep);
    }
}
