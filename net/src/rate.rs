//! Rate caps: one token bucket shared by every peer a node serves (its upload), or by a
//! player's requests (a bitrate).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::LockExt;

/// Token-bucket arithmetic with time passed in, so it can be tested without a clock.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// `rate` bytes per second, with at most `burst` bytes saved up.
    pub(crate) fn new(rate: u64, burst: u64, now: Instant) -> Self {
        let burst = burst.max(1) as f64;
        Self { rate: rate.max(1) as f64, burst, tokens: burst, last: now }
    }

    /// Takes `n` bytes of allowance and says how long the caller must wait before sending
    /// them. Requests larger than the burst go into debt rather than starving, so a chunk
    /// larger than the burst still goes out at the configured rate.
    /// A new rate from `now` on (the burst scaled with it): allowance saved up so far is kept,
    /// up to the new burst, and a debt is paid at the new rate.
    pub(crate) fn set_rate(&mut self, rate: u64, burst: u64, now: Instant) {
        let _ = self.reserve(0, now);
        self.rate = rate.max(1) as f64;
        self.burst = burst.max(1) as f64;
        self.tokens = self.tokens.min(self.burst);
    }

    pub(crate) fn reserve(&mut self, n: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// A bucket shared between tasks.
#[derive(Debug)]
pub struct TokenBucket(Mutex<Bucket>);

impl TokenBucket {
    /// A full bucket of `rate` bytes per second (at least 1), saving up at most a quarter of a
    /// second's worth (at least 1 byte).
    pub fn new(rate: u64) -> Self {
        // A quarter of a second of burst: smooth enough, and a 1 MiB chunk at 4 MB/s or more
        // goes out without waiting.
        Self(Mutex::new(Bucket::new(rate, rate / 4, Instant::now())))
    }

    /// Changes the rate from now on (an operator's reload), keeping what is saved up to the
    /// new burst of a quarter of a second.
    pub fn set_rate(&self, rate: u64) {
        self.0.locked().set_rate(rate, rate / 4, Instant::now());
    }

    /// The rate in bytes per second.
    pub fn rate(&self) -> u64 {
        self.0.locked().rate as u64
    }

    /// Waits until `n` bytes may be sent.
    pub async fn take(&self, n: u64) {
        let wait = self.0.locked().reserve(n, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sustained_rate_is_the_configured_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, 100, t0);
        assert_eq!(b.reserve(100, t0), Duration::ZERO);
        // 1000 more bytes at once: one second of debt.
        assert_eq!(b.reserve(1000, t0), Duration::from_secs(1));
        // After that second the debt is paid; the bucket refills to at most the burst.
        assert_eq!(b.reserve(0, t0 + Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(b.reserve(100, t0 + Duration::from_secs(10)), Duration::ZERO);
        assert_eq!(b.reserve(100, t0 + Duration::from_secs(10)), Duration::from_millis(100));
    }

    #[test]
    fn a_new_rate_paces_from_the_moment_it_is_set() {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let t0 = Instant::now();
        // A burst of 1 byte (the least): 1,001 bytes at once are a second of debt.
        let mut b = Bucket::new(1000, 0, t0);
        assert!((ms(b.reserve(1001, t0)) - 1000.0).abs() < 1e-6);
        // Ten times the rate: the debt left is paid ten times faster, and so is what follows.
        b.set_rate(10_000, 0, t0);
        assert!((ms(b.reserve(0, t0)) - 100.0).abs() < 1e-6);
        assert!((ms(b.reserve(10_000, t0 + Duration::from_millis(100))) - 1000.0).abs() < 1e-6);
        // And back down: a tenth of the pace.
        b.set_rate(1000, 0, t0 + Duration::from_millis(1100));
        assert!((ms(b.reserve(1000, t0 + Duration::from_millis(1100))) - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn total_wait_for_many_requests_matches_bytes_over_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1 << 20, 0, t0);
        let mut now = t0;
        for _ in 0..10 {
            now += b.reserve(1 << 20, now);
        }
        let secs = (now - t0).as_secs_f64();
        assert!((secs - 10.0).abs() < 0.01, "{secs}");
    }
}
