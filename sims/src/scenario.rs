//! What to simulate: topology, capacities, the title, latencies and timed events, from a TOML
//! file, flags, or both (flags win).

use std::path::Path;

use anyhow::{bail, ensure, Context};
use serde::{Deserialize, Serialize};

use fillmesh_protocol::units::{parse_rate, parse_size};
use fillmesh_protocol::{ChunkSize, Shape};

/// A class of appliances: a share of the fleet with one upload and download capacity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Class {
    /// Fraction of the appliances (the shares are normalised).
    pub share: f64,
    /// Bytes per second.
    pub upload_bps: f64,
    /// Bytes per second; must be positive.
    pub download_bps: f64,
}

/// Appliances going down mid-fill (and maybe coming back).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// Seconds after the start.
    pub at_s: f64,
    /// Appliance indices (0-based); when empty, `count` appliances picked with the seed.
    pub ids: Vec<usize>,
    /// How many distinct appliances to pick with the seed when `ids` is empty (ignored
    /// otherwise); at most the fleet.
    pub count: usize,
    /// Back up this many seconds later (with the chunks they had); never when `None`.
    pub recover_after_s: Option<f64>,
}

/// Players arriving at once, steered to appliances holding the title.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Crowd {
    /// Seconds after the start (not after publishing) when the players arrive.
    pub at_s: f64,
    /// Players arriving, each in a site drawn with the seed.
    pub players: usize,
    /// Bytes per second each player streams at.
    pub bitrate_bps: f64,
    /// Seconds each player streams: a session is `bitrate_bps × duration_s` bytes.
    pub duration_s: f64,
}

/// A fully resolved scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    /// Appliances in the fleet, the origin not counted; at least 1.
    pub appliances: usize,
    /// Regions; at least 1.
    pub regions: usize,
    /// Sites in each region; at least 1. Appliance `i` sits in site `i mod sites()`.
    pub sites_per_region: usize,
    /// The title's size in bytes; at least 1.
    pub title_bytes: u64,
    /// The chunk size in bytes: a power of two that `ChunkSize::new` accepts, with at most
    /// `Manifest::MAX_CHUNKS` chunks in the title.
    pub chunk_bytes: u64,
    /// The title's files: 1 for a one-file title; more, a package of that many files of equal
    /// size (the first `title_bytes mod files` one byte longer) summing to `title_bytes`,
    /// each starting on a chunk boundary, so each file ends in a chunk of its own. At most
    /// `package::MAX_FILES`, and at most `title_bytes` (every file at least one byte).
    pub files: usize,
    /// Bytes per second.
    pub origin_upload_bps: f64,
    /// The appliances' capacity classes, each appliance's drawn with the seed; not empty.
    pub classes: Vec<Class>,
    /// Each site's uplink capacity (each direction), bytes per second; `None` is unlimited.
    pub site_uplink_bps: Option<f64>,
    /// Each region's uplink capacity (each direction), bytes per second; `None` is unlimited.
    pub region_uplink_bps: Option<f64>,
    /// Request-to-first-byte delay per source class (same site, same region, cross-region,
    /// origin), in seconds.
    pub latency_s: [f64; 4],
    /// Chunk fetches an appliance keeps in flight (origin and tiered strategies, and each
    /// fillmesh appliance's swarm; per-chunk uses the tracker's `max_inflight_per_appliance`,
    /// which is set to the same value).
    pub max_inflight: usize,
    /// How long a per-chunk appliance whose plan came up short waits before asking again
    /// (unless a completion elsewhere wakes it first: see `wake_per_completion`).
    pub replan_s: f64,
    /// Per-chunk: appliances whose plan came up short wait in a queue; each completed chunk
    /// wakes this many of them to plan again (a source slot and a new holder just appeared).
    pub wake_per_completion: usize,
    /// Per-chunk: a busy appliance plans again only once this many fetch slots are free.
    pub plan_batch: usize,
    /// Requests the origin serves at once in the origin, tiered and fillmesh strategies (more
    /// wait in a queue). Tiered masters serve the tracker's slot count for their upload.
    pub origin_slots: u32,
    /// When the origin publishes the title (seconds); completion times count from here.
    pub publish_at_s: f64,
    /// Bytes a link carries per chunk byte, beyond the chunk byte itself: the transport's
    /// framing (QUIC, UDP and IP headers) and the acknowledgements flowing the other way. A
    /// link of rate R moves R / (1 + wire_overhead) chunk bytes per second; the rates of the
    /// scenario are link rates. `fillmesh testbed` measures it (bytes its links sent / chunk
    /// bytes delivered). 0 models a link that carries chunk bytes alone.
    pub wire_overhead: f64,
    /// Appliances going down (and maybe back up), in the order given.
    pub failures: Vec<Failure>,
    /// Flash crowds of players, in the order given.
    pub crowds: Vec<Crowd>,
    /// Seed of every random choice: placement in classes, failed appliances, players' sites,
    /// the planner's ties and each appliance's swarm.
    pub seed: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            appliances: 100,
            regions: 4,
            sites_per_region: 4,
            title_bytes: 1 << 30,
            chunk_bytes: 1 << 20,
            files: 1,
            origin_upload_bps: 1.25e9,
            classes: vec![Class { share: 1.0, upload_bps: 125e6, download_bps: 250e6 }],
            site_uplink_bps: None,
            region_uplink_bps: None,
            latency_s: [0.0005, 0.005, 0.04, 0.04],
            max_inflight: 8,
            replan_s: 0.25,
            wake_per_completion: 2,
            plan_batch: 1,
            origin_slots: 64,
            publish_at_s: 0.0,
            wire_overhead: 0.0,
            failures: Vec::new(),
            crowds: Vec::new(),
            seed: 1,
        }
    }
}

impl Scenario {
    /// Sites in all: `regions × sites_per_region`.
    pub fn sites(&self) -> usize {
        self.regions * self.sites_per_region
    }

    /// Chunks in the title, the last one of each file possibly short.
    pub fn chunks(&self) -> u64 {
        let files = self.files.max(1) as u64;
        let (q, r) = (self.title_bytes / files, self.title_bytes % files);
        let per = |len: u64| len.div_ceil(self.chunk_bytes.max(1));
        r * per(q + 1) + (files - r) * per(q)
    }

    /// Each file's length: `files` lengths of `title_bytes / files`, the first
    /// `title_bytes mod files` one byte longer.
    pub fn file_lens(&self) -> Vec<u64> {
        let files = self.files.max(1) as u64;
        let (q, r) = (self.title_bytes / files, self.title_bytes % files);
        (0..files).map(|k| q + u64::from(k < r)).collect()
    }

    /// The title's shape as the tracker gets it: a one-file title, or a package of `files`
    /// files.
    pub fn shape(&self) -> anyhow::Result<Shape> {
        let cs = ChunkSize::new(self.chunk_bytes)
            .map_err(|e| anyhow::anyhow!("chunk size {}: {e}", self.chunk_bytes))?;
        Shape::new(cs, self.files > 1, self.file_lens())
            .map_err(|e| anyhow::anyhow!("the title's shape: {e}"))
    }

    /// Rejects what cannot be simulated.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.appliances >= 1, "need at least one appliance");
        ensure!(self.regions >= 1 && self.sites_per_region >= 1, "need at least one region and site");
        ensure!(self.title_bytes >= 1, "the title must not be empty");
        fillmesh_protocol::ChunkSize::new(self.chunk_bytes)
            .map_err(|e| anyhow::anyhow!("chunk size {}: {e}", self.chunk_bytes))?;
        ensure!(
            (1..=fillmesh_protocol::package::MAX_FILES).contains(&self.files),
            "{} files: a title has 1 to {}",
            self.files,
            fillmesh_protocol::package::MAX_FILES
        );
        ensure!(
            self.title_bytes >= self.files as u64,
            "{} files in {} bytes: every file needs at least one byte",
            self.files,
            self.title_bytes
        );
        ensure!(
            self.chunks() <= fillmesh_protocol::Manifest::MAX_CHUNKS,
            "{} chunks: a manifest holds at most {}",
            self.chunks(),
            fillmesh_protocol::Manifest::MAX_CHUNKS
        );
        self.shape()?;
        ensure!(self.origin_upload_bps > 0.0, "the origin needs upload capacity");
        ensure!(!self.classes.is_empty(), "no appliance class");
        for c in &self.classes {
            ensure!(c.share > 0.0 && c.upload_bps >= 0.0 && c.download_bps > 0.0, "bad class {c:?}");
        }
        ensure!(self.max_inflight >= 1, "max_inflight must be at least 1");
        ensure!(self.replan_s > 0.0, "replan must be positive");
        ensure!(self.plan_batch >= 1, "plan_batch must be at least 1");
        ensure!(self.origin_slots >= 1, "origin_slots must be at least 1");
        ensure!((0.0..1.0).contains(&self.wire_overhead), "wire_overhead must be at least 0 and below 1");
        for f in &self.failures {
            ensure!(f.ids.iter().all(|&i| i < self.appliances), "failure names an appliance past the fleet");
            ensure!(f.count <= self.appliances, "failure count exceeds the fleet");
        }
        Ok(())
    }

    /// Reads a TOML scenario on top of the defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("scenario {}", path.display()))
    }

    /// Reads a TOML scenario from `text` on top of the defaults; unknown keys are refused. Does
    /// not validate: see [`Scenario::validate`].
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let file: File = toml::from_str(text)?;
        file.apply(Self::default())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    appliances: Option<usize>,
    regions: Option<usize>,
    sites_per_region: Option<usize>,
    title_size: Option<String>,
    chunk_size: Option<String>,
    files: Option<usize>,
    origin_upload: Option<String>,
    site_uplink: Option<String>,
    region_uplink: Option<String>,
    max_inflight: Option<usize>,
    replan_s: Option<f64>,
    wake_per_completion: Option<usize>,
    plan_batch: Option<usize>,
    origin_slots: Option<u32>,
    publish_at_s: Option<f64>,
    wire_overhead: Option<f64>,
    seed: Option<u64>,
    appliance: Option<ApplianceFile>,
    latency_ms: Option<LatencyFile>,
    #[serde(default)]
    events: Vec<EventFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplianceFile {
    upload: Option<String>,
    download: Option<String>,
    #[serde(default)]
    classes: Vec<ClassFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassFile {
    share: f64,
    upload: String,
    download: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyFile {
    same_site: Option<f64>,
    same_region: Option<f64>,
    cross_region: Option<f64>,
    origin: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
enum EventFile {
    Publish {
        at_s: f64,
    },
    Fail {
        at_s: f64,
        #[serde(default)]
        ids: Vec<usize>,
        #[serde(default)]
        count: usize,
        recover_after_s: Option<f64>,
    },
    FlashCrowd {
        at_s: f64,
        players: usize,
        bitrate: String,
        duration_s: f64,
    },
}

impl File {
    fn apply(self, mut s: Scenario) -> anyhow::Result<Scenario> {
        if let Some(v) = self.appliances {
            s.appliances = v;
        }
        if let Some(v) = self.regions {
            s.regions = v;
        }
        if let Some(v) = self.sites_per_region {
            s.sites_per_region = v;
        }
        if let Some(v) = &self.title_size {
            s.title_bytes = parse_size(v)?;
        }
        if let Some(v) = &self.chunk_size {
            s.chunk_bytes = parse_size(v)?;
        }
        if let Some(v) = self.files {
            s.files = v;
        }
        if let Some(v) = &self.origin_upload {
            s.origin_upload_bps = parse_rate(v)?;
        }
        if let Some(v) = &self.site_uplink {
            s.site_uplink_bps = Some(parse_rate(v)?);
        }
        if let Some(v) = &self.region_uplink {
            s.region_uplink_bps = Some(parse_rate(v)?);
        }
        if let Some(v) = self.max_inflight {
            s.max_inflight = v;
        }
        if let Some(v) = self.replan_s {
            s.replan_s = v;
        }
        if let Some(v) = self.wake_per_completion {
            s.wake_per_completion = v;
        }
        if let Some(v) = self.plan_batch {
            s.plan_batch = v;
        }
        if let Some(v) = self.origin_slots {
            s.origin_slots = v;
        }
        if let Some(v) = self.publish_at_s {
            s.publish_at_s = v;
        }
        if let Some(v) = self.wire_overhead {
            s.wire_overhead = v;
        }
        if let Some(v) = self.seed {
            s.seed = v;
        }
        if let Some(a) = self.appliance {
            if !a.classes.is_empty() {
                if a.upload.is_some() || a.download.is_some() {
                    bail!("[appliance] has either upload/download or classes, not both");
                }
                s.classes = a
                    .classes
                    .iter()
                    .map(|c| {
                        Ok(Class {
                            share: c.share,
                            upload_bps: parse_rate(&c.upload)?,
                            download_bps: parse_rate(&c.download)?,
                        })
                    })
                    .collect::<anyhow::Result<_>>()?;
            } else {
                let mut c = s.classes[0].clone();
                if let Some(u) = &a.upload {
                    c.upload_bps = parse_rate(u)?;
                }
                if let Some(d) = &a.download {
                    c.download_bps = parse_rate(d)?;
                }
                c.share = 1.0;
                s.classes = vec![c];
            }
        }
        if let Some(l) = self.latency_ms {
            for (slot, v) in
                s.latency_s.iter_mut().zip([l.same_site, l.same_region, l.cross_region, l.origin])
            {
                if let Some(ms) = v {
                    ensure!(ms >= 0.0, "latencies are non-negative");
                    *slot = ms / 1000.0;
                }
            }
        }
        for e in self.events {
            match e {
                EventFile::Publish { at_s } => s.publish_at_s = at_s,
                EventFile::Fail { at_s, ids, count, recover_after_s } => {
                    ensure!(!ids.is_empty() || count > 0, "a fail event names ids or a count");
                    s.failures.push(Failure { at_s, ids, count, recover_after_s });
                }
                EventFile::FlashCrowd { at_s, players, bitrate, duration_s } => {
                    s.crowds.push(Crowd { at_s, players, bitrate_bps: parse_rate(&bitrate)?, duration_s });
                }
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_file_overrides_the_defaults() {
        let s = Scenario::from_toml(
            r#"
            appliances = 60
            regions = 2
            title_size = "512MiB"
            chunk_size = "4MiB"
            origin_upload = "10Gbps"
            site_uplink = "40Gbps"
            wire_overhead = 0.08
            [appliance]
            classes = [
              { share = 3, upload = "1Gbps", download = "2Gbps" },
              { share = 1, upload = "100Mbps", download = "1Gbps" },
            ]
            [latency_ms]
            origin = 80
            [[events]]
            kind = "fail"
            at_s = 3.5
            count = 5
            recover_after_s = 10
            [[events]]
            kind = "flash_crowd"
            at_s = 20
            players = 100
            bitrate = "8Mbps"
            duration_s = 30
            "#,
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!((s.appliances, s.regions, s.title_bytes, s.chunk_bytes), (60, 2, 512 << 20, 4 << 20));
        assert_eq!(s.classes.len(), 2);
        assert_eq!(s.classes[1].upload_bps, 12.5e6);
        assert_eq!(s.site_uplink_bps, Some(5e9));
        assert_eq!(s.latency_s[3], 0.08);
        assert_eq!(s.wire_overhead, 0.08);
        assert!(Scenario { wire_overhead: 1.5, ..s.clone() }.validate().is_err());
        assert_eq!(s.failures[0].count, 5);
        assert_eq!(s.crowds[0].bitrate_bps, 1e6);
        s.validate().unwrap_or_else(|e| panic!("{e:#}"));
        assert!(Scenario::from_toml("appliancez = 3").is_err());
    }

    #[test]
    fn a_package_is_files_of_equal_size_summing_to_the_title() {
        let s = Scenario::from_toml("title_size = \"1GiB\"\nfiles = 5000").unwrap();
        s.validate().unwrap();
        let lens = s.file_lens();
        assert_eq!((lens.len(), lens.iter().sum::<u64>()), (5000, 1 << 30));
        assert_eq!((lens[0], lens[4999]), (214_749, 214_748));
        let shape = s.shape().unwrap();
        assert!(shape.is_package());
        assert_eq!((s.chunks(), u64::from(shape.chunk_count()), shape.len()), (5000, 5000, 1 << 30));
        // Files over a chunk long end in a short chunk each.
        let s = Scenario { title_bytes: 10 * (1 << 20) + 3, files: 4, ..Scenario::default() };
        assert_eq!(s.chunks(), u64::from(s.shape().unwrap().chunk_count()));
        assert_eq!(s.chunks(), 12);
        // One file is a one-file title.
        assert!(!Scenario::default().shape().unwrap().is_package());
        assert_eq!(Scenario::default().chunks(), 1024);
        // Every file needs a byte; a title has at most MAX_FILES files.
        assert!(Scenario { title_bytes: 10, files: 11, ..Scenario::default() }.validate().is_err());
        assert!(Scenario { files: 100_001, ..Scenario::default() }.validate().is_err());
        assert!(Scenario { files: 0, ..Scenario::default() }.validate().is_err());
    }
}
