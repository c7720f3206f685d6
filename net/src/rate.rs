//! Rate caps: one token bucket shared by every peer a node serves (its upload), or by a
//! player's requests (a bitrate); and [`Arrivals`], the new connections a listener takes a
//! second.

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
    /// Of the debt (tokens below zero), what low-priority reservations ran up
    /// ([`TokenBucket::take_low`]): high-priority ones do not wait for it. Paid last.
    low_debt: f64,
}

impl Bucket {
    /// `rate` bytes per second, with at most `burst` bytes saved up.
    pub(crate) fn new(rate: u64, burst: u64, now: Instant) -> Self {
        let burst = burst.max(1) as f64;
        Self { rate: rate.max(1) as f64, burst, tokens: burst, last: now, low_debt: 0.0 }
    }

    /// A new rate from `now` on (the burst scaled with it): allowance saved up so far is kept,
    /// up to the new burst, and a debt is paid at the new rate.
    pub(crate) fn set_rate(&mut self, rate: u64, burst: u64, now: Instant) {
        let _ = self.reserve(0, now);
        self.rate = rate.max(1) as f64;
        self.burst = burst.max(1) as f64;
        self.tokens = self.tokens.min(self.burst);
    }

    /// Takes `n` bytes of allowance and says how long the caller must wait before sending
    /// them. Requests larger than the burst go into debt rather than starving, so a chunk
    /// larger than the burst still goes out at the configured rate.
    ///
    /// The wait is for the debt of high-priority reservations alone: what low-priority ones
    /// ran up ([`Bucket::reserve_low`]) is paid after it.
    pub(crate) fn reserve(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n as f64;
        let own = self.tokens + self.low_debt;
        if own >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-own / self.rate)
        }
    }

    /// A low-priority reservation of `n` bytes: taken only when the bucket is out of debt
    /// (true), else how long until it is.
    pub(crate) fn reserve_low(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens < 0.0 {
            return Err(Duration::from_secs_f64(-self.tokens / self.rate));
        }
        self.tokens -= n as f64;
        self.low_debt = (-self.tokens).max(0.0);
        Ok(())
    }

    /// Takes `n` if the bucket holds that much now (true), else takes nothing (false): an
    /// admission, never a debt.
    pub(crate) fn try_take(&mut self, n: u64, now: Instant) -> bool {
        self.refill(now);
        let taken = self.tokens >= n as f64;
        if taken {
            self.tokens -= n as f64;
        }
        taken
    }

    /// Adds the allowance earned since the last call, up to the burst; debt is paid
    /// high-priority first.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.low_debt = self.low_debt.min((-self.tokens).max(0.0));
    }
}

/// A bucket shared between tasks, whose rate can be changed while it is in use (a reload),
/// or lifted altogether.
#[derive(Debug)]
pub struct TokenBucket(Mutex<Option<Bucket>>);

/// The burst a bucket of `rate` saves up: a quarter of a second's worth (at least 1 byte).
/// A quarter of a second is smooth enough, and a 1 MiB chunk at 4 MB/s or more goes out
/// without waiting.
fn burst_of(rate: u64) -> u64 {
    rate / 4
}

impl TokenBucket {
    /// A full bucket of `rate` bytes per second (at least 1), saving up at most a quarter of a
    /// second's worth (at least 1 byte).
    pub fn new(rate: u64) -> Self {
        Self(Mutex::new(Some(Bucket::new(rate, burst_of(rate), Instant::now()))))
    }

    /// A bucket that lets everything through at once, until [`TokenBucket::set_rate`] caps it.
    pub fn uncapped() -> Self {
        Self(Mutex::new(None))
    }

    /// A bucket of `rate` bytes per second, or uncapped with `None`.
    pub fn with_rate(rate: Option<u64>) -> Self {
        rate.map_or_else(Self::uncapped, Self::new)
    }

    /// Changes the rate from now on (an operator's reload; `None`: uncapped), keeping what is
    /// saved up to the new burst of a quarter of a second; a debt is paid at the new rate. A
    /// bucket capped anew starts full.
    pub fn set_rate(&self, rate: Option<u64>) {
        let mut bucket = self.0.locked();
        let now = Instant::now();
        *bucket = match (bucket.take(), rate) {
            (_, None) => None,
            (Some(mut b), Some(r)) => {
                b.set_rate(r, burst_of(r), now);
                Some(b)
            }
            (None, Some(r)) => Some(Bucket::new(r, burst_of(r), now)),
        };
    }

    /// The rate in bytes per second, `None` when uncapped.
    pub fn rate(&self) -> Option<u64> {
        self.0.locked().as_ref().map(|b| b.rate as u64)
    }

    /// Waits until `n` bytes may be sent.
    pub async fn take(&self, n: u64) {
        let wait = self.0.locked().as_mut().map_or(Duration::ZERO, |b| b.reserve(n, Instant::now()));
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits until `n` bytes may be sent, behind every [`TokenBucket::take`]: it reserves only
    /// once the bucket is out of debt, and what it runs into debt is not waited for by the
    /// senders using `take` (players), which go first; these (fill to peers) wait for all of
    /// it. Callers keep `n` small (see [`TokenBucket::LOW_PIECE`]) so that the cap holds over
    /// short spans too. Gives up waiting after 10 s and reserves anyway, so a flood of `take`s
    /// slows these down without starving them forever.
    pub async fn take_low(&self, n: u64) {
        let give_up = Instant::now() + Duration::from_secs(10);
        // Bounded: each pass sleeps for the debt it saw, and the loop ends at `give_up`.
        loop {
            let now = Instant::now();
            // The lock is never held across a sleep.
            let wait = {
                let mut guard = self.0.locked();
                let Some(b) = guard.as_mut() else { return };
                match b.reserve_low(n, now) {
                    Ok(()) => return,
                    Err(_) if now >= give_up => {
                        let _ = b.reserve(n, now);
                        return;
                    }
                    Err(wait) => wait,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The most a sender using [`TokenBucket::take_low`] should reserve at once: 64 KiB, so
    /// that the debt it runs up (which players do not wait for) is 2.2 ms of a 30 MB/s cap.
    pub const LOW_PIECE: usize = 64 * 1024;
}

/// How many new connections a listener takes a second (`--connection-rate`): one more is
/// refused at once, as one past the connection limit is, so that its player goes to another
/// appliance. Up to a second's worth are taken at once.
///
/// Why: players that arrive together each want their buffer filled at once (8 s of video at
/// 4 Mbit/s is 4 MB each). On 2 cores, 1,000 players arriving over 10 s were served without
/// a stall, and 1,000 arriving within 2 s (5,000 over 10 s, at `--max-connections 1000`)
/// stalled 1,597 times over HTTP/3 and 25 over TCP (`--bench players`): a limit on how many
/// are held at once does not bound how many start at once. At 100 a second, the same arrivals
/// gave no stall in six of seven runs over both (23 in the other).
#[derive(Debug)]
pub struct Arrivals(Option<Mutex<Bucket>>);

impl Arrivals {
    /// At most `per_second` new connections a second (a second's worth at once); 0: no limit.
    pub fn new(per_second: u32) -> Self {
        Self(
            (per_second > 0)
                .then(|| Mutex::new(Bucket::new(per_second.into(), per_second.into(), Instant::now()))),
        )
    }

    /// Whether a connection arriving now is taken (and counted), or refused.
    pub fn admit(&self) -> bool {
        self.0.as_ref().is_none_or(|bucket| bucket.locked().try_take(1, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Over any arrivals, a listener takes at most a second's worth at once plus the rate
        /// for the time since the first; and it takes every one of arrivals spaced a
        /// rate's interval apart or more.
        #[test]
        fn arrivals_take_at_most_the_burst_plus_the_rate(
            rate in 1u64..500,
            gaps_us in proptest::collection::vec(0u64..20_000, 1..400),
        ) {
            let t0 = Instant::now();
            let mut bucket = Bucket::new(rate, rate, t0);
            let mut now = t0;
            let mut taken = 0u64;
            for gap in &gaps_us {
                now += Duration::from_micros(*gap);
                let before = bucket.tokens;
                if bucket.try_take(1, now) {
                    taken += 1;
                } else {
                    // A refusal takes nothing: only time refills it.
                    prop_assert!(bucket.tokens >= before.min(bucket.burst) - 1e-9);
                }
                let allowed = rate as f64 + rate as f64 * (now - t0).as_secs_f64();
                prop_assert!(taken as f64 <= allowed + 1e-6, "{taken} taken, {allowed} allowed");
            }
            // Spaced by 1/rate: every one taken.
            let mut spaced = Bucket::new(rate, rate, t0);
            let step = Duration::from_secs_f64(1.0 / rate as f64) + Duration::from_nanos(1);
            let mut at = t0;
            for _ in 0..gaps_us.len() {
                prop_assert!(spaced.try_take(1, at));
                at += step;
            }
        }
    }

    #[test]
    fn arrivals_past_the_rate_are_refused_until_the_bucket_refills() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2, 2, t0);
        assert!(b.try_take(1, t0) && b.try_take(1, t0), "a second's worth at once");
        assert!(!b.try_take(1, t0), "the third at once");
        assert!(!b.try_take(1, t0 + Duration::from_millis(400)));
        assert!(b.try_take(1, t0 + Duration::from_millis(500)), "half a second: one more");
        assert!(Arrivals::new(0).admit(), "0: no limit");
        let one = Arrivals::new(1);
        assert!(one.admit());
        assert!(!one.admit(), "at 1 a second, the second at once is refused");
    }

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

    #[test]
    fn the_rate_changes_live_and_can_be_lifted() {
        let bucket = TokenBucket::new(1000);
        assert_eq!(bucket.rate(), Some(1000));
        bucket.set_rate(Some(4000));
        assert_eq!(bucket.rate(), Some(4000));
        bucket.set_rate(None);
        assert_eq!(bucket.rate(), None);
        let lifted = TokenBucket::uncapped();
        lifted.set_rate(Some(10));
        assert_eq!(lifted.rate(), Some(10));
    }

    #[test]
    fn a_high_priority_reservation_does_not_wait_for_low_priority_debt() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, 100, t0);
        assert_eq!(b.reserve_low(300, t0), Ok(()));
        // 200 bytes of debt, the fill's: a player's 100 bytes wait for their own 100 only.
        assert_eq!(b.reserve(100, t0), Duration::from_millis(100));
        // The fill waits for all of it (300 bytes: 0.3 s), the player's paid first.
        assert_eq!(b.reserve_low(1, t0), Err(Duration::from_millis(300)));
        let later = t0 + Duration::from_millis(100);
        assert_eq!(b.reserve(0, later), Duration::ZERO, "the player's debt is paid first");
        assert_eq!(b.reserve_low(1, later), Err(Duration::from_millis(200)));
        assert_eq!(b.reserve_low(1, t0 + Duration::from_millis(300)), Ok(()));
    }

    /// A low-priority reservation waits until the players' debt is paid, including debt a
    /// player ran up while it was waiting. (A lower bound only: sleeps never end early.)
    #[tokio::test]
    async fn low_priority_waits_while_high_priority_keeps_the_bucket_in_debt() {
        let bucket = std::sync::Arc::new(TokenBucket::new(10_000));
        // The burst (2,500 bytes) and 200 ms of debt, taken by a player.
        let start = std::time::Instant::now();
        let first = {
            let bucket = bucket.clone();
            tokio::spawn(async move { bucket.take(4_500).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let low = {
            let bucket = bucket.clone();
            tokio::spawn(async move { bucket.take_low(100).await })
        };
        // Another player's request meanwhile: 100 ms more debt, which the fill waits out too.
        tokio::time::sleep(Duration::from_millis(50)).await;
        bucket.take(1_000).await;
        low.await.unwrap();
        first.await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(290), "{:?}", start.elapsed());
    }
}
