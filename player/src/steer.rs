//! Asking the trackers where to play from (`GET /steer`), in turn, with the steering cache
//! standing in when none can be reached; telling them of a chunk that failed verification
//! (`POST /report`).

use std::time::{Duration, SystemTime};

use fillmesh_net::Chain;
use fillmesh_protocol::steering::{PlayerReport, SteerAnswer};
use fillmesh_protocol::TitleId;
use tracing::{debug, info, warn};

use crate::cache::human;
use crate::{PlayOptions, Target};

/// The HTTP client for the tracker, from `opts.bind` if given.
fn tracker_client(opts: &PlayOptions) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(3))
        .local_address(opts.bind)
        .build()?)
}

/// Why the tracker gave no steering answer to play from.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// No answer: the connection was refused or broke, or the tracker took too long.
    #[error("cannot reach the tracker at {base}")]
    Unreachable {
        /// The tracker's base URL, without a trailing `/`.
        base: String,
        /// The connection, timeout or read error.
        #[source]
        source: reqwest::Error,
    },
    /// An HTTP error status: a refusal (4xx), or the tracker failing (5xx).
    #[error("steering failed ({status}): {body}")]
    Status {
        /// The status the tracker answered.
        status: reqwest::StatusCode,
        /// The body of the answer, trimmed: the tracker's reason, in its words.
        body: String,
    },
    /// A success status whose body does not parse as a steering answer.
    #[error("the tracker's steering answer is not JSON")]
    Malformed(#[source] serde_json::Error),
}

impl SteerError {
    /// The tracker could not be reached or could not answer: a kept answer may stand in.
    /// A refusal or an answer of any kind is the tracker's word and stands.
    pub fn tracker_unreachable(&self) -> bool {
        match self {
            SteerError::Unreachable { .. } => true,
            SteerError::Status { status, .. } => status.is_server_error(),
            SteerError::Malformed(_) => false,
        }
    }
}

impl PlayOptions {
    /// The trackers' base URLs, in the order given.
    fn trackers(&self) -> impl Iterator<Item = &str> {
        self.tracker_http.iter().map(|b| b.trim_end_matches('/'))
    }

    /// The first tracker's base URL: what the steering cache files answers under.
    fn first_tracker(&self) -> &str {
        self.trackers().next().unwrap_or_default()
    }
}

/// Asks the trackers where to play `title` from, in turn: the next one when one cannot be
/// reached or fails (5xx); a refusal or an answer stands.
async fn ask_tracker(title: &TitleId, opts: &PlayOptions) -> anyhow::Result<Result<SteerAnswer, SteerError>> {
    let mut last = None;
    for base in opts.trackers() {
        match ask_one(base, title, opts).await? {
            Err(e) if e.tracker_unreachable() => {
                debug!("{}: trying the next tracker", Chain(&e));
                last = Some(e);
            }
            answer => return Ok(answer),
        }
    }
    match last {
        Some(e) => Ok(Err(e)),
        None => anyhow::bail!("no --tracker-http given"),
    }
}

/// Asks the tracker at `base` where to play `title` from.
async fn ask_one(
    base: &str,
    title: &TitleId,
    opts: &PlayOptions,
) -> anyhow::Result<Result<SteerAnswer, SteerError>> {
    let mut url = format!("{base}/steer?title={title}");
    if let Some(ip) = opts.client_ip {
        url.push_str(&format!("&client_ip={ip}"));
    }
    let client = tracker_client(opts)?;
    let unreachable = |source| SteerError::Unreachable { base: base.to_owned(), source };
    let response = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) if e.is_builder() => return Err(anyhow::Error::new(e).context(format!("tracker URL {base}"))),
        Err(e) => return Ok(Err(unreachable(e))),
    };
    let status = response.status();
    let text = match response.text().await {
        Ok(t) => t,
        Err(e) => return Ok(Err(unreachable(e))),
    };
    if !status.is_success() {
        return Ok(Err(SteerError::Status { status, body: text.trim().to_owned() }));
    }
    Ok(serde_json::from_str(&text).map_err(SteerError::Malformed))
}

/// Where to play from, and the writing of the answer to the cache, under way.
pub(crate) struct Steered {
    pub(crate) targets: Vec<Target>,
    pub(crate) caching: Option<tokio::task::JoinHandle<()>>,
}

/// The steering list for `title`: the tracker's, kept in the cache as it is being played
/// from; or, when the tracker cannot be reached, the one the cache kept.
pub(crate) async fn steer(title: &TitleId, opts: &PlayOptions) -> anyhow::Result<Steered> {
    let base = opts.first_tracker();
    let failure = match ask_tracker(title, opts).await? {
        Ok(answer) => {
            anyhow::ensure!(!answer.targets.is_empty(), "no appliance can serve {title}: {}", answer.reason);
            // Written beside the play, off the path to the first byte.
            let caching = opts.steer_cache.clone().map(|cache| {
                let (title, base, answer) = (*title, base.to_owned(), answer.clone());
                tokio::task::spawn_blocking(move || {
                    match cache.store(&title, &base, &answer, SystemTime::now()) {
                        Ok(kept) => {
                            debug!(kept, path = %cache.path(&title).display(), "steering answer cached")
                        }
                        Err(e) => warn!("cannot cache the steering answer: {}", Chain(&e)),
                    }
                })
            });
            return Ok(Steered { targets: answer.targets, caching });
        }
        Err(e) if e.tracker_unreachable() => anyhow::Error::new(e),
        Err(e) => return Err(e.into()),
    };
    let Some(cache) = &opts.steer_cache else {
        return Err(failure.context(format!("no steering cache to fall back on for {title}")));
    };
    let now = SystemTime::now();
    match cache.load(title, base, now) {
        Ok(Some(kept)) => {
            eprintln!(
                "tracker unreachable: using the steering answer cached at {} ({} ago) for {title} ({failure:#})",
                kept.cached_at_utc(),
                human(kept.age(now)),
            );
            Ok(Steered { targets: kept.answer.targets, caching: None })
        }
        Ok(None) => Err(failure.context(format!(
            "no steering answer for {title} cached in {} to fall back on",
            cache.dir().display()
        ))),
        Err(e) => {
            warn!("ignoring the cached steering answer: {}", Chain(&e));
            Err(failure.context(format!("no usable steering answer for {title} cached to fall back on")))
        }
    }
}

/// Tells the tracker that `target` sent chunk `index` of `title` and it failed verification.
/// The play goes on whatever the answer: a report that fails is logged, not fatal.
pub(crate) async fn report_unverified(
    opts: &PlayOptions,
    title: &TitleId,
    target: &Target,
    index: u32,
    token: Option<String>,
) {
    let report = PlayerReport::new(title, &target.peer_id, index, token);
    let sent = async {
        // Any tracker of the fleet counts it; the first here.
        let base = opts.first_tracker();
        let response = tracker_client(opts)?
            .post(format!("{base}/report"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&report)?)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        anyhow::ensure!(status.is_success(), "answered {status}: {}", text.trim());
        anyhow::Ok(())
    };
    match sent.await {
        Ok(()) => {
            info!(appliance = %target.peer_id, chunk = index, "reported the chunk that failed verification")
        }
        Err(e) => {
            warn!(appliance = %target.peer_id, chunk = index, "the tracker did not take the report: {e:#}")
        }
    }
}
