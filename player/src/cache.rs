//! The steering answers `fillmesh play` keeps, so that a player can still start when the
//! tracker cannot be reached: one JSON file per title id in a directory (`--steer-cache`),
//! holding the tracker's whole last answer for that title (the targets with their certificate
//! pins), the tracker it came from and when.
//!
//! A file is written whole beside its final name and renamed over it, so a reader sees the old
//! answer or the new one, never a mix. Reading is bounded: a file larger than
//! [`MAX_FILE_BYTES`] is refused unread, one that does not parse is refused, and so is an
//! answer older than the cache's maximum age, for another title, or from another tracker (the
//! pins are trusted because the tracker named on the command line gave them). A refused file
//! is the caller's to report; nothing here panics on what a file holds.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fillmesh_protocol::steering::SteerAnswer;
use fillmesh_protocol::TitleId;
use serde::{Deserialize, Serialize};

/// The largest cache file read or written. A steering answer names at most
/// [`fillmesh_protocol::messages::MAX_TARGETS`] appliances of a few hundred bytes each, so
/// a real one is well under this.
pub const MAX_FILE_BYTES: u64 = 64 << 10;

/// How far in the future a file's time may be (clocks that disagree a little) before the
/// entry is refused as not believable.
const FUTURE_SLACK: Duration = Duration::from_secs(300);

/// What one cache file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// When the tracker gave the answer, in seconds since the Unix epoch.
    pub cached_at: u64,
    /// The tracker's HTTP URL (without a trailing `/`).
    pub tracker: String,
    /// The tracker's answer, as it gave it.
    pub answer: SteerAnswer,
}

impl CachedAnswer {
    /// When the answer was cached, as `YYYY-MM-DD HH:MM:SS UTC`.
    pub fn cached_at_utc(&self) -> String {
        utc(self.cached_at)
    }

    /// How long ago, at `now`, the answer was cached (zero if the file's time is ahead).
    pub fn age(&self, now: SystemTime) -> Duration {
        Duration::from_secs(unix_secs(now).saturating_sub(self.cached_at))
    }
}

/// Why a cache file was not written or not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Creating the directory, or opening, reading, writing, syncing or renaming the file
    /// failed (a file that does not exist is not an error: [`SteerCache::load`] answers
    /// `None`).
    #[error("{}", path.display())]
    Io {
        /// The title's cache file (also when it was its directory that could not be made).
        path: PathBuf,
        /// What the filesystem said.
        source: std::io::Error,
    },
    /// The file on disk, or the answer about to be written, is larger than
    /// [`MAX_FILE_BYTES`]; a file is refused before it is read.
    #[error("{} is larger than {MAX_FILE_BYTES} bytes, more than any steering answer", path.display())]
    TooLarge {
        /// The title's cache file.
        path: PathBuf,
    },
    /// The file does not parse as a [`CachedAnswer`] (or, on writing, the answer could not
    /// be put as JSON).
    #[error("{} is not a cached steering answer", path.display())]
    Corrupt {
        /// The title's cache file.
        path: PathBuf,
        /// Where and why the JSON did not parse.
        source: serde_json::Error,
    },
    /// The answer names a title other than the one whose file it is: held in the file when
    /// loading, or given to [`SteerCache::store`] for another title.
    #[error("{} holds the answer for title {found}, not for its name", path.display())]
    OtherTitle {
        /// The title's cache file.
        path: PathBuf,
        /// The title the answer names, as written in it.
        found: String,
    },
    /// The file was cached from a tracker other than the one asked of (the first the player
    /// was given; URLs compared without trailing `/`): its pins are not that tracker's word.
    #[error("{} was cached from the tracker at {found}, not from this one", path.display())]
    OtherTracker {
        /// The title's cache file.
        path: PathBuf,
        /// The tracker URL the file was cached from.
        found: String,
    },
    /// The answer is older than the cache's maximum age.
    #[error("{} was cached at {at}, {} ago, longer than the {} allowed (--steer-cache-max-age)",
        path.display(), human(*age), human(*max))]
    Expired {
        /// The title's cache file.
        path: PathBuf,
        /// When the answer was cached, as `YYYY-MM-DD HH:MM:SS UTC`.
        at: String,
        /// How old the answer was when it was loaded.
        age: Duration,
        /// The cache's maximum age, which `age` exceeds.
        max: Duration,
    },
    /// The answer is dated more than five minutes ahead of this machine's clock, more than
    /// clocks that disagree a little explain.
    #[error("{} is dated {at}, ahead of this machine's clock", path.display())]
    FromTheFuture {
        /// The title's cache file.
        path: PathBuf,
        /// When the file says the answer was cached, as `YYYY-MM-DD HH:MM:SS UTC`.
        at: String,
    },
}

/// A directory of cached steering answers, and the age past which one is not used.
#[derive(Debug, Clone)]
pub struct SteerCache {
    dir: PathBuf,
    max_age: Duration,
}

impl SteerCache {
    /// A cache in `dir`, which is created when the first answer is kept; answers older than
    /// `max_age` are refused when loaded.
    pub fn new(dir: PathBuf, max_age: Duration) -> Self {
        Self { dir, max_age }
    }

    /// The directory the answers are kept in, one `<title id>.json` each.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The default directory: `$XDG_CACHE_HOME/fillmesh/steer`, else
    /// `$HOME/.cache/fillmesh/steer`; `None` when neither is set (or either is not an
    /// absolute path, which the XDG base directory specification says to ignore).
    pub fn default_dir() -> Option<PathBuf> {
        default_dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
    }

    /// The file of `title`'s answer.
    pub fn path(&self, title: &TitleId) -> PathBuf {
        self.dir.join(format!("{title}.json"))
    }

    /// Keeps `answer`, given by the tracker at `tracker` at `now`, as `title`'s answer,
    /// replacing the one kept before. An answer with no targets is not kept (and the one kept
    /// before stays): it would be no use when the tracker is gone. Returns whether it was
    /// kept.
    pub fn store(
        &self,
        title: &TitleId,
        tracker: &str,
        answer: &SteerAnswer,
        now: SystemTime,
    ) -> Result<bool, CacheError> {
        let path = self.path(title);
        if answer.title != title.to_string() {
            return Err(CacheError::OtherTitle { path, found: answer.title.clone() });
        }
        if answer.targets.is_empty() {
            return Ok(false);
        }
        let entry = CachedAnswer {
            cached_at: unix_secs(now),
            tracker: normalize(tracker).to_owned(),
            answer: answer.clone(),
        };
        let json = serde_json::to_vec_pretty(&entry)
            .map_err(|source| CacheError::Corrupt { path: path.clone(), source })?;
        if json.len() as u64 > MAX_FILE_BYTES {
            return Err(CacheError::TooLarge { path });
        }
        let io = |source| CacheError::Io { path: path.clone(), source };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let mut temp = tempfile::Builder::new()
            .prefix(&format!(".{title}."))
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .map_err(io)?;
        temp.write_all(&json).map_err(io)?;
        temp.as_file().sync_all().map_err(io)?;
        temp.persist(&path).map_err(|e| io(e.error))?;
        Ok(true)
    }

    /// `title`'s answer from the tracker at `tracker`, if one is kept and usable at `now`.
    /// `Ok(None)` when there is no file; an error when there is one that cannot be used.
    pub fn load(
        &self,
        title: &TitleId,
        tracker: &str,
        now: SystemTime,
    ) -> Result<Option<CachedAnswer>, CacheError> {
        let path = self.path(title);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path, source }),
        };
        let io = |source| CacheError::Io { path: path.clone(), source };
        if file.metadata().map_err(io)?.len() > MAX_FILE_BYTES {
            return Err(CacheError::TooLarge { path });
        }
        // Bounded again while reading: the file may grow after the size was read.
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(CacheError::TooLarge { path });
        }
        let entry: CachedAnswer = serde_json::from_slice(&bytes)
            .map_err(|source| CacheError::Corrupt { path: path.clone(), source })?;
        if entry.answer.title != title.to_string() {
            return Err(CacheError::OtherTitle { path, found: entry.answer.title });
        }
        if entry.tracker != normalize(tracker) {
            return Err(CacheError::OtherTracker { path, found: entry.tracker });
        }
        let now_secs = unix_secs(now);
        if entry.cached_at > now_secs.saturating_add(FUTURE_SLACK.as_secs()) {
            return Err(CacheError::FromTheFuture { path, at: entry.cached_at_utc() });
        }
        let age = entry.age(now);
        if age > self.max_age {
            return Err(CacheError::Expired { path, at: entry.cached_at_utc(), age, max: self.max_age });
        }
        Ok(Some(entry))
    }
}

fn default_dir_from(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(cache) = absolute(xdg_cache_home) {
        return Some(cache.join("fillmesh").join("steer"));
    }
    absolute(home).map(|h| h.join(".cache").join("fillmesh").join("steer"))
}

/// A tracker URL as compared: without trailing slashes.
fn normalize(tracker: &str) -> &str {
    tracker.trim_end_matches('/')
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian calendar).
pub fn utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_date(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}

/// The calendar date `days` days after 1970-01-01. Works in 400-year eras (146,097 days
/// each) counted from 0000-03-01, so that the leap day falls at the end of each year.
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A duration as a person reads it, to the second: `42 s`, `17 min 5 s`, `1 h`,
/// `2 d 4 h`, `0 s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let parts: Vec<String> = [(s / 86_400, "d"), (s / 3600 % 24, "h"), (s / 60 % 60, "min"), (s % 60, "s")]
        .into_iter()
        .filter(|&(n, _)| n > 0)
        .map(|(n, unit)| format!("{n} {unit}"))
        .collect();
    if parts.is_empty() {
        "0 s".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fillmesh_protocol::steering::SteerEntry;

    const TRACKER: &str = "http://127.0.0.1:8000";

    fn title() -> TitleId {
        TitleId::from_bytes([7; 32])
    }

    fn answer(title: &TitleId, targets: usize) -> SteerAnswer {
        SteerAnswer {
            title: title.to_string(),
            client_ip: "127.0.11.7".into(),
            targets: (0..targets)
                .map(|i| SteerEntry {
                    peer_id: format!("12D3KooWpeer{i}"),
                    url: format!("https://127.0.0.{}:4433/titles/{title}", 11 + i),
                    site: format!("s{i}"),
                    region: "r0".into(),
                    cert_sha256: Some(format!("{i:02x}").repeat(32)),
                })
                .collect(),
            reason: String::new(),
            token: None,
            token_expires: None,
        }
    }

    fn cache(dir: &Path) -> SteerCache {
        SteerCache::new(dir.join("steer"), Duration::from_secs(24 * 3600))
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const NOW: u64 = 1_750_000_000;

    #[test]
    fn an_answer_round_trips_whole_with_its_pins_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let t = title();
        let a = answer(&t, 3);
        assert_eq!(cache.load(&t, TRACKER, at(NOW)).unwrap(), None, "nothing kept yet");
        assert!(cache.store(&t, TRACKER, &a, at(NOW)).unwrap());
        // The same tracker, however its URL ends.
        let back = cache.load(&t, &format!("{TRACKER}/"), at(NOW + 60)).unwrap().unwrap();
        assert_eq!(back.answer, a);
        assert_eq!(back.answer.targets[2].cert_pin(), Some([2; 32]));
        assert_eq!(back.cached_at, NOW);
        assert_eq!(back.tracker, TRACKER);
        assert_eq!(back.age(at(NOW + 60)), Duration::from_secs(60));
        assert_eq!(back.cached_at_utc(), "2025-06-15 15:06:40 UTC");
        // A newer answer replaces it.
        let newer = answer(&t, 1);
        assert!(cache.store(&t, TRACKER, &newer, at(NOW + 100)).unwrap());
        assert_eq!(cache.load(&t, TRACKER, at(NOW + 100)).unwrap().unwrap().answer, newer);
    }

    #[test]
    fn a_write_leaves_one_whole_file_and_no_temporary_one() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let t = title();
        for n in 1..=5 {
            assert!(cache.store(&t, TRACKER, &answer(&t, n), at(NOW + n as u64)).unwrap());
            let names: Vec<_> =
                std::fs::read_dir(cache.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names, vec![OsString::from(format!("{t}.json"))], "only the final file");
            let on_disk: CachedAnswer =
                serde_json::from_slice(&std::fs::read(cache.path(&t)).unwrap()).unwrap();
            assert_eq!(on_disk.answer.targets.len(), n);
        }
        // A reader holding the old file keeps reading the old answer whole: the new one is a
        // new file renamed over the name, not the old one rewritten in place.
        let mut old = std::fs::File::open(cache.path(&t)).unwrap();
        assert!(cache.store(&t, TRACKER, &answer(&t, 2), at(NOW + 10)).unwrap());
        let mut text = String::new();
        old.read_to_string(&mut text).unwrap();
        let seen: CachedAnswer = serde_json::from_str(&text).unwrap();
        assert_eq!(seen.answer.targets.len(), 5);
    }

    #[test]
    fn an_answer_without_targets_is_not_kept_and_the_last_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let t = title();
        let mut empty = answer(&t, 0);
        empty.reason = "unknown title".into();
        assert!(!cache.store(&t, TRACKER, &empty, at(NOW)).unwrap());
        assert!(!cache.path(&t).exists());
        assert!(cache.store(&t, TRACKER, &answer(&t, 2), at(NOW)).unwrap());
        assert!(!cache.store(&t, TRACKER, &empty, at(NOW + 1)).unwrap());
        assert_eq!(cache.load(&t, TRACKER, at(NOW + 2)).unwrap().unwrap().answer.targets.len(), 2);
    }

    #[test]
    fn a_file_too_large_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let t = title();
        assert!(cache.store(&t, TRACKER, &answer(&t, 1), at(NOW)).unwrap());
        // Valid JSON padded with spaces past the bound: refused for its size alone.
        let mut bytes = std::fs::read(cache.path(&t)).unwrap();
        bytes.resize(MAX_FILE_BYTES as usize + 1, b' ');
        std::fs::write(cache.path(&t), &bytes).unwrap();
        let err = cache.load(&t, TRACKER, at(NOW)).unwrap_err();
        assert!(matches!(err, CacheError::TooLarge { .. }), "{err}");
        // Exactly at the bound it is read.
        bytes.truncate(MAX_FILE_BYTES as usize);
        std::fs::write(cache.path(&t), &bytes).unwrap();
        assert!(cache.load(&t, TRACKER, at(NOW)).unwrap().is_some());
        // Nor is an answer written that could not be read back.
        let mut huge = answer(&t, 1);
        huge.reason = "x".repeat(MAX_FILE_BYTES as usize);
        let err = cache.store(&t, TRACKER, &huge, at(NOW)).unwrap_err();
        assert!(matches!(err, CacheError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn a_corrupt_file_is_an_error_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let t = title();
        std::fs::create_dir_all(cache.dir()).unwrap();
        let valid = serde_json::to_vec(&CachedAnswer {
            cached_at: NOW,
            tracker: TRACKER.into(),
            answer: answer(&t, 2),
        })
        .unwrap();
        let mut bad: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"{".to_vec(),
            b"null".to_vec(),
            b"{\"cached_at\": -1, \"tracker\": \"x\", \"answer\": {}}".to_vec(),
            vec![0xff; 100],
        ];
        // Every cut of a valid file short of the whole, as a torn write would leave it.
        bad.extend((0..valid.len()).step_by(7).map(|n| valid[..n].to_vec()));
        for bytes in bad {
            std::fs::write(cache.path(&t), &bytes).unwrap();
            let err = cache.load(&t, TRACKER, at(NOW)).unwrap_err();
            assert!(matches!(err, CacheError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains(&t.to_string()), "names the file: {err}");
        }
        // A directory where the file should be is an I/O error, not a panic.
        std::fs::remove_file(cache.path(&t)).unwrap();
        std::fs::create_dir(cache.path(&t)).unwrap();
        assert!(cache.load(&t, TRACKER, at(NOW)).is_err());
    }

    #[test]
    fn an_expired_answer_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SteerCache::new(dir.path().join("steer"), Duration::from_secs(3600));
        let t = title();
        assert!(cache.store(&t, TRACKER, &answer(&t, 1), at(NOW)).unwrap());
        assert!(cache.load(&t, TRACKER, at(NOW + 3600)).unwrap().is_some(), "at the bound: still used");
        let err = cache.load(&t, TRACKER, at(NOW + 3601)).unwrap_err();
        assert!(matches!(err, CacheError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("1 h 1 s ago, longer than the 1 h allowed"), "{err}");
        // A time far ahead of the clock is not believed either.
        let err = cache.load(&t, TRACKER, at(NOW - 3600)).unwrap_err();
        assert!(matches!(err, CacheError::FromTheFuture { .. }), "{err}");
        assert!(cache.load(&t, TRACKER, at(NOW - 60)).unwrap().is_some(), "a little skew is");
    }

    #[test]
    fn an_answer_for_another_title_or_from_another_tracker_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let t = title();
        let other = TitleId::from_bytes([9; 32]);
        assert!(cache.store(&t, TRACKER, &answer(&t, 1), at(NOW)).unwrap());
        let err = cache.load(&t, "http://127.0.0.2:8000", at(NOW)).unwrap_err();
        assert!(matches!(err, CacheError::OtherTracker { .. }), "{err}");
        // A file copied under another title's name.
        std::fs::copy(cache.path(&t), cache.path(&other)).unwrap();
        let err = cache.load(&other, TRACKER, at(NOW)).unwrap_err();
        assert!(matches!(err, CacheError::OtherTitle { .. }), "{err}");
        assert!(cache.store(&other, TRACKER, &answer(&t, 1), at(NOW)).is_err());
    }

    #[test]
    fn the_default_directory_follows_xdg_then_home() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(default_dir_from(os("/c"), os("/h")), Some(PathBuf::from("/c/fillmesh/steer")));
        assert_eq!(default_dir_from(None, os("/h")), Some(PathBuf::from("/h/.cache/fillmesh/steer")));
        assert_eq!(
            default_dir_from(os("relative"), os("/h")),
            Some(PathBuf::from("/h/.cache/fillmesh/steer"))
        );
        assert_eq!(default_dir_from(os(""), None), None);
        assert_eq!(default_dir_from(None, None), None);
    }

    #[test]
    fn dates_and_ages_read_as_a_person_expects() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(4_107_542_399), "2100-02-28 23:59:59 UTC");
        assert_eq!(utc(4_107_542_400), "2100-03-01 00:00:00 UTC");
        assert_eq!(human(Duration::from_secs(42)), "42 s");
        assert_eq!(human(Duration::from_secs(17 * 60 + 5)), "17 min 5 s");
        assert_eq!(human(Duration::from_secs(5 * 3600 + 180)), "5 h 3 min");
        assert_eq!(human(Duration::from_secs(52 * 3600)), "2 d 4 h");
        assert_eq!(human(Duration::from_secs(86_430)), "1 d 30 s");
        assert_eq!(human(Duration::ZERO), "0 s");
    }
}
