//! `fillmesh status`: the tracker's `/status` JSON, from its operator listener
//! (`--admin-http`), pretty-printed. Under several trackers (`trackers[]` not empty) each
//! title's figures are its owner's: only the owner hears the appliances' fill summaries (bytes
//! by class, chunks held while filling), so the answering tracker's own view of a title it does
//! not coordinate is partial. For every title owned by another live tracker, its entry and the
//! appliances' chunks held of it are taken from that tracker's `/status` (at the `admin`
//! address of its record); an owner that cannot be reached leaves the answering tracker's
//! view, with `"view": "partial"` on the title and a line on stderr.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use fillmesh_net::say;
use serde_json::Value;

/// Bounds the answers read (a status lists every appliance and title: 64 MiB is far more
/// than the largest fleet's).
const MAX_STATUS: usize = 64 << 20;

async fn fetch(client: &reqwest::Client, base: &str) -> anyhow::Result<Value> {
    let response =
        client.get(format!("{base}/status")).send().await.with_context(|| format!("cannot reach {base}"))?;
    let code = response.status();
    anyhow::ensure!(
        response.content_length().is_none_or(|n| n <= MAX_STATUS as u64),
        "{base}: a status over {MAX_STATUS} bytes"
    );
    let body = response.bytes().await?;
    anyhow::ensure!(body.len() <= MAX_STATUS, "{base}: a status over {MAX_STATUS} bytes");
    anyhow::ensure!(
        code != reqwest::StatusCode::NOT_FOUND,
        "{base} answered 404 to /status: is it the tracker's viewer listener (--http)? /status is on its operator listener, --admin-http (127.0.0.1:8001 by default): give that to --tracker-admin"
    );
    anyhow::ensure!(code.is_success(), "{base} answered {code}: {}", String::from_utf8_lossy(&body).trim());
    serde_json::from_slice(&body).with_context(|| format!("the status of {base} is not JSON"))
}

/// Prints the status of the tracker whose `--admin-http` URL is `url`.
pub async fn run(url: &str) -> anyhow::Result<()> {
    let base = url.trim_end_matches('/');
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let mut status = fetch(&client, base).await?;
    let here = base.split_once("://").map_or(base, |(_, rest)| rest);
    // The other live trackers that own titles, by PeerId: their `admin` address (a tracker
    // whose record names none is not asked: its titles are marked partial).
    let others: BTreeMap<String, Option<String>> = status["trackers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["live"] == true && t["admin"].as_str() != Some(here))
        .filter_map(|t| Some((t["peer_id"].as_str()?.to_owned(), t["admin"].as_str().map(str::to_owned))))
        .collect();
    let owners: Vec<String> = status["titles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["owner"].as_str())
        .filter(|o| others.contains_key(*o))
        .map(str::to_owned)
        .collect();
    let mut views: BTreeMap<String, Option<Value>> = BTreeMap::new();
    for owner in owners {
        if views.contains_key(&owner) {
            continue;
        }
        let Some(admin) = &others[&owner] else {
            eprintln!(
                "fillmesh status: the figures of the titles {owner} owns are this tracker's own: its record names no admin listener"
            );
            views.insert(owner, None);
            continue;
        };
        let view = match fetch(&client, &format!("http://{admin}")).await {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!(
                    "fillmesh status: the figures of the titles {owner} owns are this tracker's own: {e:#}"
                );
                None
            }
        };
        views.insert(owner, view);
    }
    merge(&mut status, &views);
    say!("{}", serde_json::to_string_pretty(&status)?);
    Ok(())
}

/// Takes each title owned by a tracker in `views` from that tracker's status: the title's
/// entry, and each appliance's chunks held of it. A title whose owner gave no view is marked
/// `"view": "partial"`.
fn merge(status: &mut Value, views: &BTreeMap<String, Option<Value>>) {
    let Some(titles) = status["titles"].as_array_mut() else { return };
    let mut taken: Vec<(String, &Value)> = Vec::new();
    for entry in titles.iter_mut() {
        let (Some(id), Some(owner)) = (entry["id"].as_str(), entry["owner"].as_str()) else { continue };
        let id = id.to_owned();
        match views.get(owner) {
            Some(Some(view)) => {
                if let Some(theirs) =
                    view["titles"].as_array().and_then(|t| t.iter().find(|e| e["id"] == id.as_str()))
                {
                    *entry = theirs.clone();
                    taken.push((id, view));
                }
            }
            Some(None) => entry["view"] = Value::from("partial"),
            None => {}
        }
    }
    let Some(appliances) = status["appliances"].as_array_mut() else { return };
    for appliance in appliances.iter_mut() {
        let Some(peer) = appliance["peer_id"].as_str().map(str::to_owned) else { continue };
        for (id, view) in &taken {
            let theirs = view["appliances"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["peer_id"] == peer.as_str()))
                .and_then(|x| x["held_chunks"].get(id.as_str()))
                .cloned();
            if let Some(held) = appliance["held_chunks"].as_object_mut() {
                match theirs {
                    Some(n) => {
                        held.insert(id.clone(), n);
                    }
                    None => {
                        held.remove(id.as_str());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_title_owned_elsewhere_takes_the_owners_figures_and_an_unreachable_owner_is_marked() {
        let mut status = json!({
            "titles": [
                {"id": "a", "owner": "T2", "peer_bytes": 0},
                {"id": "b", "owner": "T3", "peer_bytes": 5},
                {"id": "c", "owner": "T1", "peer_bytes": 7},
            ],
            "appliances": [
                {"peer_id": "N1", "held_chunks": {"a": 3, "c": 1}},
                {"peer_id": "N2", "held_chunks": {"a": 2}},
            ],
            "trackers": [],
        });
        let t2 = json!({
            "titles": [{"id": "a", "owner": "T2", "peer_bytes": 99}],
            "appliances": [{"peer_id": "N1", "held_chunks": {"a": 40}}],
        });
        let views = BTreeMap::from([("T2".to_owned(), Some(t2)), ("T3".to_owned(), None)]);
        merge(&mut status, &views);
        assert_eq!(status["titles"][0]["peer_bytes"], 99, "a: the owner's figures");
        assert_eq!(status["titles"][1]["view"], "partial", "b: its owner could not be asked");
        assert_eq!(status["titles"][1]["peer_bytes"], 5);
        assert_eq!(status["titles"][2]["peer_bytes"], 7, "c: owned by the answering tracker");
        assert_eq!(status["appliances"][0]["held_chunks"], json!({"a": 40, "c": 1}));
        assert_eq!(status["appliances"][1]["held_chunks"], json!({}), "the owner counts none of a there");
    }
}
