//! Fill windows: the hours of the host's local day in which an appliance takes fill traffic
//! (`--fill-window 02:00-14:00`, repeatable; none: always). Outside them it neither fills
//! nor is asked to fill others, except for titles published urgent, and serves players as
//! always: its trackers plan by the window, which the appliance sends them in UTC (see
//! [`FillWindows::utc_now`]) so that appliances in other time zones compare.
//!
//! Local time comes from `jiff`: it reads the zone from `TZ` or `/etc/localtime` itself and
//! is sound in a multi-threaded program, where libc's `localtime_r` is not (it reads the
//! environment, which another thread may be changing; the `time` crate refuses to give the
//! local offset in a multi-threaded process for that reason).

use std::fmt;
use std::str::FromStr;

use fillmesh_protocol::messages::{window_open, DayRange, MINUTES_PER_DAY};

/// Most ranges one appliance's window may have (a range stays one range in UTC, where it may
/// wrap midnight; the wire allows twice as many).
pub const MAX_RANGES: usize = 8;

/// Why a fill window was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Not `HH:MM-HH:MM`.
    #[error("fill window {0:?}: expected HH:MM-HH:MM, e.g. 02:00-14:00 (22:00-06:00 wraps midnight)")]
    Syntax(String),
    /// A time that is not one: hours past 23, minutes past 59, not digits.
    #[error("fill window {spec:?}: {time:?} is not a time of day (00:00 to 23:59)")]
    BadTime {
        /// The range as given.
        spec: String,
        /// The time refused.
        time: String,
    },
    /// A range that starts where it ends.
    #[error("fill window {0:?} is empty (it starts where it ends); for a whole day give no window at all")]
    Empty(String),
    /// Two ranges that share minutes.
    #[error("fill windows {0} and {1} overlap: give them as one range")]
    Overlap(LocalRange, LocalRange),
    /// More ranges than [`MAX_RANGES`].
    #[error("{0} fill windows, at most {MAX_RANGES}")]
    TooMany(usize),
}

/// One range of the local day, `HH:MM-HH:MM`: from the first time (included) to the second
/// (excluded), across midnight when the second is not after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalRange(DayRange);

impl LocalRange {
    /// The range in minutes of the local day.
    pub fn minutes(&self) -> DayRange {
        self.0
    }

    /// The one or two pieces of the range that do not cross midnight, as `start..end` with
    /// `end` up to [`MINUTES_PER_DAY`].
    fn pieces(&self) -> impl Iterator<Item = std::ops::Range<u16>> {
        let DayRange { start, end } = self.0;
        let (a, b) = if start < end { (start..end, 0..0) } else { (start..MINUTES_PER_DAY, 0..end) };
        [a, b].into_iter().filter(|r| !r.is_empty())
    }
}

impl fmt::Display for LocalRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let DayRange { start, end } = self.0;
        write!(f, "{:02}:{:02}-{:02}:{:02}", start / 60, start % 60, end / 60, end % 60)
    }
}

impl FromStr for LocalRange {
    type Err = WindowError;

    fn from_str(spec: &str) -> Result<Self, WindowError> {
        let syntax = || WindowError::Syntax(spec.to_owned());
        let (from, to) = spec.trim().split_once('-').ok_or_else(syntax)?;
        let time = |t: &str| -> Result<u16, WindowError> {
            let bad = || WindowError::BadTime { spec: spec.to_owned(), time: t.to_owned() };
            let (h, m) = t.trim().split_once(':').ok_or_else(syntax)?;
            let digits = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
            if !digits(h) || m.len() != 2 || !digits(m) {
                return Err(bad());
            }
            let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            Ok(h * 60 + m)
        };
        let range = DayRange { start: time(from)?, end: time(to)? };
        if range.start == range.end {
            return Err(WindowError::Empty(spec.to_owned()));
        }
        Ok(Self(range))
    }
}

/// An appliance's fill window: ranges of the local day, none meaning always.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FillWindows(Vec<LocalRange>);

impl FillWindows {
    /// Open all day (no `--fill-window`).
    pub fn always() -> Self {
        Self(Vec::new())
    }

    /// A window of `ranges`: at most [`MAX_RANGES`], none overlapping another.
    pub fn new(ranges: Vec<LocalRange>) -> Result<Self, WindowError> {
        if ranges.len() > MAX_RANGES {
            return Err(WindowError::TooMany(ranges.len()));
        }
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                let overlap = a.pieces().any(|p| b.pieces().any(|q| p.start < q.end && q.start < p.end));
                if overlap {
                    return Err(WindowError::Overlap(*a, *b));
                }
            }
        }
        Ok(Self(ranges))
    }

    /// Parses `--fill-window` values (or the `fill_window` key's).
    pub fn parse<S: AsRef<str>>(specs: &[S]) -> Result<Self, WindowError> {
        Self::new(specs.iter().map(|s| s.as_ref().parse()).collect::<Result<_, _>>()?)
    }

    /// Whether no range was given: open all day.
    pub fn is_always(&self) -> bool {
        self.0.is_empty()
    }

    /// The ranges, as given.
    pub fn ranges(&self) -> &[LocalRange] {
        &self.0
    }

    /// Whether the window is open at `minute` of the local day.
    pub fn open_at(&self, minute: u16) -> bool {
        window_open(&self.local(), minute)
    }

    /// The ranges in minutes of the local day.
    fn local(&self) -> Vec<DayRange> {
        self.0.iter().map(LocalRange::minutes).collect()
    }

    /// The ranges in UTC for a local time `offset_minutes` ahead of UTC (e.g. 60 for CET).
    pub fn utc(&self, offset_minutes: i32) -> Vec<DayRange> {
        self.0.iter().map(|r| r.minutes().shifted(-offset_minutes)).collect()
    }

    /// The ranges in UTC by the host's offset from UTC now (which moves with daylight
    /// saving: callers send it again when it changes).
    pub fn utc_now(&self) -> Vec<DayRange> {
        self.utc(local_offset_minutes())
    }
}

impl fmt::Display for FillWindows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("always");
        }
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// The host's offset from UTC now, in minutes (its zone from `TZ` or `/etc/localtime`; UTC
/// when neither names one jiff can read).
pub fn local_offset_minutes() -> i32 {
    jiff::ZonedDateTime::now().offset().seconds() / 60
}

/// The minute of the host's local day now.
pub fn local_minute() -> u16 {
    let now = jiff::ZonedDateTime::now();
    (now.hour() as u16) * 60 + now.minute() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(specs: &[&str]) -> Result<FillWindows, WindowError> {
        FillWindows::parse(specs)
    }

    #[test]
    fn a_range_parses_and_wraps_midnight() {
        let w = window(&["22:00-06:00"]).unwrap();
        assert!(w.open_at(23 * 60));
        assert!(w.open_at(0));
        assert!(w.open_at(5 * 60 + 59));
        assert!(!w.open_at(6 * 60));
        assert!(!w.open_at(12 * 60));
        assert!(w.open_at(22 * 60));
        let day = window(&["02:00-14:00"]).unwrap();
        assert!(
            day.open_at(2 * 60) && day.open_at(13 * 60 + 59) && !day.open_at(14 * 60) && !day.open_at(60)
        );
        assert_eq!(day.to_string(), "02:00-14:00");
        assert!(window(&[]).unwrap().is_always());
        assert!(window(&[]).unwrap().open_at(17));
        // One-digit hours are taken; minutes always have two digits.
        assert_eq!(window(&["2:00-9:30"]).unwrap().to_string(), "02:00-09:30");
    }

    #[test]
    fn to_utc_by_the_offset_across_midnight() {
        // 02:00-14:00 in UTC+1 is 01:00-13:00 UTC; 00:30-06:00 in UTC+2 wraps to 22:30-04:00.
        let w = window(&["02:00-14:00", "23:00-01:00"]).unwrap();
        assert_eq!(w.utc(60), vec![DayRange { start: 60, end: 780 }, DayRange { start: 1320, end: 0 }]);
        let w = window(&["00:30-06:00"]).unwrap();
        assert_eq!(w.utc(120), vec![DayRange { start: 1350, end: 240 }]);
        assert_eq!(w.utc(-300), vec![DayRange { start: 330, end: 660 }]);
        for r in w.utc(120).iter().chain(&w.utc(-720)) {
            assert!(r.is_valid());
        }
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let err = |specs: &[&str]| window(specs).unwrap_err().to_string();
        for bad in ["25:00-02:00", "02:60-03:00", "2-3", "aa:bb-01:00", "02:00-14:0", "-1:00-02:00"] {
            let e = window(&[bad]).unwrap_err();
            assert!(matches!(e, WindowError::BadTime { .. } | WindowError::Syntax(_)), "{bad}: {e}");
        }
        assert!(
            err(&["25:00-02:00"]).contains("\"25:00\" is not a time of day"),
            "{}",
            err(&["25:00-02:00"])
        );
        assert!(err(&["0200-1400"]).contains("expected HH:MM-HH:MM"));
        assert!(err(&["06:00-06:00"]).contains("is empty"));
        assert_eq!(
            window(&["02:00-14:00", "13:00-15:00"]).unwrap_err(),
            WindowError::Overlap("02:00-14:00".parse().unwrap(), "13:00-15:00".parse().unwrap())
        );
        assert!(err(&["22:00-06:00", "05:00-07:00"]).contains("overlap"), "wrapping ranges overlap too");
        assert!(err(&["22:00-06:00", "23:00-23:30"]).contains("overlap"));
        // Ranges that only touch are two ranges, not an overlap.
        assert!(window(&["22:00-02:00", "02:00-06:00"]).is_ok());
        let many: Vec<String> = (0..9).map(|h| format!("{:02}:00-{:02}:30", h, h)).collect();
        assert_eq!(FillWindows::parse(&many).unwrap_err(), WindowError::TooMany(9));
        assert!(FillWindows::parse(&many[..8]).is_ok());
    }
}
