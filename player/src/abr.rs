//! Choosing the variant to play next from the throughput measured: adaptive bitrate, as
//! players do it (no I/O, no clock: the caller measures).
//!
//! Each segment fetched gives a sample, its bytes over the time it took. The estimate is an
//! exponentially weighted moving average of the samples (the first sample is the estimate).
//! After each segment:
//! - **up**: the highest variant whose bandwidth is at most [`SAFETY`] of the estimate, if it
//!   is above the current one (the margin leaves room for the estimate being high);
//! - **down**: when the estimate falls below the current variant's own bandwidth, to the
//!   highest variant under [`SAFETY`] of it (the lowest if none is);
//! - else the variant stays: between the two thresholds there is no switching back and forth.
//!
//! A pinned variant never changes.

use std::time::Duration;

/// The share of the estimated throughput a variant's bandwidth may take to be climbed to.
/// hls.js uses 0.7 (`abrBandWidthUpFactor`); so does this.
pub const SAFETY: f64 = 0.7;

/// The weight of a new sample in the moving average. Why 0.5: a segment of 4 s is a long
/// sample already; half the weight on it lets a drop show within two segments.
pub const WEIGHT: f64 = 0.5;

/// Why the variant changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The estimate allows a higher variant.
    Up,
    /// The estimate fell below the current variant's bandwidth.
    Down,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Up => "up",
            Reason::Down => "down",
        })
    }
}

/// A change of variant the estimator decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The variant played until now.
    pub from: usize,
    /// The variant to play from the next segment.
    pub to: usize,
    /// Why.
    pub reason: Reason,
    /// The smoothed throughput it decided on, in bits per second.
    pub estimate: f64,
}

/// The adaptive bitrate state of one play.
#[derive(Debug, Clone)]
pub struct Abr {
    /// Each variant's bandwidth in bits per second, lowest first.
    bandwidths: Vec<u64>,
    current: usize,
    pinned: bool,
    /// Bits per second, smoothed; `None` before the first sample.
    estimate: Option<f64>,
}

impl Abr {
    /// Starts on the lowest variant of `bandwidths` (bits per second, in increasing order;
    /// at least one), or on `pin` for good.
    pub fn new(bandwidths: Vec<u64>, pin: Option<usize>) -> Self {
        debug_assert!(bandwidths.windows(2).all(|w| w[0] <= w[1]), "bandwidths are sorted");
        let last = bandwidths.len().saturating_sub(1);
        Self { current: pin.unwrap_or(0).min(last), pinned: pin.is_some(), bandwidths, estimate: None }
    }

    /// The variant to play now.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The smoothed throughput, in bits per second (`None` before the first sample).
    pub fn estimate(&self) -> Option<f64> {
        self.estimate
    }

    /// Takes the sample of a segment of `bytes` fetched in `took`, and says whether to play
    /// another variant from the next segment on (the state has changed to it if so).
    pub fn sample(&mut self, bytes: u64, took: Duration) -> Option<Decision> {
        // A segment fetched in under a microsecond (a cache, a clock's grain) counts as one.
        let secs = took.as_secs_f64().max(1e-6);
        let sample = bytes as f64 * 8.0 / secs;
        let estimate = match self.estimate {
            None => sample,
            Some(e) => WEIGHT * sample + (1.0 - WEIGHT) * e,
        };
        self.estimate = Some(estimate);
        if self.pinned {
            return None;
        }
        let fits = self.fitting(estimate);
        let current_bw = self.bandwidths.get(self.current).copied().unwrap_or(0) as f64;
        let (to, reason) = if fits > self.current {
            (fits, Reason::Up)
        } else if estimate < current_bw && fits < self.current {
            (fits, Reason::Down)
        } else {
            return None;
        };
        let from = std::mem::replace(&mut self.current, to);
        Some(Decision { from, to, reason, estimate })
    }

    /// The highest variant whose bandwidth is at most [`SAFETY`] of `estimate`; the lowest if
    /// none is.
    fn fitting(&self, estimate: f64) -> usize {
        let budget = SAFETY * estimate;
        self.bandwidths.iter().rposition(|&b| b as f64 <= budget).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const LADDER: [u64; 3] = [290_400, 620_400, 1_170_400];

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Bytes that take one second at `bps` bits per second.
    fn second_at(bps: u64) -> u64 {
        bps / 8
    }

    #[test]
    fn it_starts_lowest_and_climbs_to_what_the_throughput_allows() {
        let mut abr = Abr::new(LADDER.to_vec(), None);
        assert_eq!(abr.current(), 0);
        // 1 Mb/s: 0.7 Mb/s of budget fits the middle variant only.
        let d = abr.sample(second_at(1_000_000), Duration::from_secs(1)).unwrap();
        assert_eq!((d.from, d.to, d.reason), (0, 1, Reason::Up));
        assert_eq!(d.estimate, 1_000_000.0);
        // Loopback: straight to the top.
        let d = abr.sample(500_000, ms(1)).unwrap();
        assert_eq!((d.from, d.to, d.reason), (1, 2, Reason::Up));
        assert_eq!(abr.sample(500_000, ms(1)), None, "nothing higher");
    }

    #[test]
    fn it_drops_when_the_estimate_falls_below_the_current_bandwidth() {
        let mut abr = Abr::new(LADDER.to_vec(), None);
        abr.sample(10_000_000, ms(10)).unwrap();
        assert_eq!(abr.current(), 2);
        // 1.1 Mb/s once: the average (half of 8 Gb/s and half of it) stays high.
        assert_eq!(abr.sample(second_at(1_100_000), Duration::from_secs(1)), None);
        // Slow samples pull the average under 1.17 Mb/s: down to what fits 0.7 of it.
        let mut decision = None;
        for _ in 0..20 {
            decision = abr.sample(second_at(800_000), Duration::from_secs(1));
            if decision.is_some() {
                break;
            }
        }
        let d = decision.unwrap();
        assert_eq!((d.from, d.reason), (2, Reason::Down));
        assert!(d.estimate < 1_170_400.0, "{d:?}");
        let fits_middle = SAFETY * d.estimate >= 620_400.0;
        assert_eq!(d.to, usize::from(fits_middle), "the highest under 0.7 of the estimate: {d:?}");
    }

    #[test]
    fn between_the_thresholds_it_stays() {
        let mut abr = Abr::new(LADDER.to_vec(), None);
        // 0.7 x 1 Mb/s fits variant 1 (620 kb/s); then 700 kb/s: above 620 kb/s, below the
        // 886 kb/s variant 1 needs to be climbed to: it stays there.
        abr.sample(second_at(1_000_000), Duration::from_secs(1)).unwrap();
        for _ in 0..10 {
            assert_eq!(abr.sample(second_at(700_000), Duration::from_secs(1)), None);
        }
        assert_eq!(abr.current(), 1);
    }

    #[test]
    fn a_pinned_variant_never_changes() {
        let mut abr = Abr::new(LADDER.to_vec(), Some(2));
        assert_eq!(abr.current(), 2);
        assert_eq!(abr.sample(1, Duration::from_secs(100)), None);
        assert_eq!(abr.current(), 2);
        assert!(abr.estimate().unwrap() < 1.0);
        let mut low = Abr::new(LADDER.to_vec(), Some(0));
        assert_eq!(low.sample(1 << 30, ms(1)), None);
        assert_eq!(low.current(), 0);
    }

    proptest! {
        #[test]
        fn every_decision_keeps_to_its_rule(
            mut ladder in proptest::collection::vec(1u64..100_000_000, 1..8),
            samples in proptest::collection::vec((1u64..50_000_000, 0u64..5_000), 1..60),
            pin in proptest::option::of(0usize..8),
        ) {
            ladder.sort_unstable();
            let pin = pin.map(|p| p.min(ladder.len() - 1));
            let mut abr = Abr::new(ladder.clone(), pin);
            prop_assert_eq!(abr.current(), pin.unwrap_or(0));
            for (bytes, millis) in samples {
                let before = abr.current();
                let decision = abr.sample(bytes, ms(millis));
                let estimate = abr.estimate().unwrap();
                prop_assert!(estimate.is_finite() && estimate > 0.0);
                prop_assert!(abr.current() < ladder.len());
                match decision {
                    None => prop_assert_eq!(abr.current(), before),
                    Some(d) => {
                        prop_assert!(pin.is_none(), "a pinned play never switches");
                        prop_assert_eq!((d.from, d.to), (before, abr.current()));
                        prop_assert_eq!(d.estimate, estimate);
                        // The variant switched to fits the budget, or is the lowest.
                        prop_assert!(d.to == 0 || ladder[d.to] as f64 <= SAFETY * estimate);
                        // And it is the highest that does.
                        prop_assert!(d.to + 1 == ladder.len() || ladder[d.to + 1] as f64 > SAFETY * estimate);
                        match d.reason {
                            Reason::Up => prop_assert!(d.to > d.from),
                            Reason::Down => {
                                prop_assert!(d.to < d.from);
                                prop_assert!(estimate < ladder[d.from] as f64);
                            }
                        }
                    }
                }
            }
            if let Some(p) = pin {
                prop_assert_eq!(abr.current(), p);
            }
        }
    }
}
