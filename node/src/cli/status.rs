//! `fillmesh status`: the tracker's `/status` JSON, pretty-printed.

use std::time::Duration;

use anyhow::Context;
use fillmesh_net::say;

/// Prints the status of the tracker whose `--http` URL is `url`.
pub async fn run(url: &str) -> anyhow::Result<()> {
    let base = url.trim_end_matches('/');
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let response =
        client.get(format!("{base}/status")).send().await.with_context(|| format!("cannot reach {base}"))?;
    let code = response.status();
    let body = response.text().await?;
    anyhow::ensure!(code.is_success(), "the tracker answered {code}: {}", body.trim());
    let json: serde_json::Value = serde_json::from_str(&body).context("the tracker's status is not JSON")?;
    say!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}
