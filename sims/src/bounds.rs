//! Lower bounds on the time for every appliance to hold the title, whatever the strategy.

use serde::Serialize;

use crate::scenario::Scenario;

/// The bounds for one scenario, in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Bounds {
    /// max(F/u_s, F/d_min, N·F/(u_s + Σu_i)).
    pub kumar_ross_s: f64,
    /// The Kumar-Ross bound's first term, F/u_s: the origin uploads the title at least once.
    pub origin_term_s: f64,
    /// Its second term, F/d_min: the slowest appliance downloads the whole title (0 for an
    /// empty fleet).
    pub download_term_s: f64,
    /// Its third term, N·F/(u_s + Σu_i): N copies leave the origin's and the appliances'
    /// uploads together.
    pub upload_term_s: f64,
    /// The largest site or region cut-set bound (0 without uplinks).
    pub cut_set_s: f64,
    /// The cut that gives `cut_set_s`, as `site s3` or `region r1`; `None` without uplinks.
    pub cut_set_at: Option<String>,
    /// max(kumar_ross_s, cut_set_s): what strategies are measured against.
    pub bound_s: f64,
}

/// The appliances' capacities as placed by the simulator (upload, download per appliance,
/// and site index), so the bounds use the very fleet that was simulated.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Per appliance (0-based, the origin not included): its class's upload, bytes per second.
    pub upload_bps: Vec<f64>,
    /// Per appliance: its class's download, bytes per second.
    pub download_bps: Vec<f64>,
    /// Per appliance: its site's index, below `Scenario::sites()`; the region is the site
    /// index divided by `sites_per_region`.
    pub site: Vec<usize>,
}

/// The Kumar-Ross bound and, with uplinks, a cut-set bound per site and region: a cut with
/// inbound capacity c around n appliances uploading U in total needs F/c (one copy must
/// enter) and n·F/(c + U) (every byte its appliances receive comes through the cut or from
/// inside).
pub fn compute(sc: &Scenario, fleet: &Fleet) -> Bounds {
    let f = sc.title_bytes as f64;
    let n = fleet.upload_bps.len() as f64;
    let us = sc.origin_upload_bps;
    let sum_u: f64 = fleet.upload_bps.iter().sum();
    let d_min = fleet.download_bps.iter().copied().fold(f64::INFINITY, f64::min);
    let origin_term_s = f / us;
    let download_term_s = if d_min.is_finite() { f / d_min } else { 0.0 };
    let upload_term_s = n * f / (us + sum_u);
    let kumar_ross_s = origin_term_s.max(download_term_s).max(upload_term_s);
    let mut cut_set_s = 0.0;
    let mut cut_set_at = None;
    let mut consider = |name: String, cap: f64, members: &[usize]| {
        if members.is_empty() {
            return;
        }
        let up: f64 = members.iter().map(|&i| fleet.upload_bps[i]).sum();
        let t = (f / cap).max(members.len() as f64 * f / (cap + up));
        if t > cut_set_s {
            cut_set_s = t;
            cut_set_at = Some(name);
        }
    };
    let sites = sc.sites();
    if let Some(c) = sc.site_uplink_bps {
        for s in 0..sites {
            let members: Vec<usize> = (0..fleet.site.len()).filter(|&i| fleet.site[i] == s).collect();
            consider(format!("site s{s}"), c, &members);
        }
    }
    if let Some(c) = sc.region_uplink_bps {
        for r in 0..sc.regions {
            let members: Vec<usize> =
                (0..fleet.site.len()).filter(|&i| fleet.site[i] / sc.sites_per_region == r).collect();
            consider(format!("region r{r}"), c, &members);
        }
    }
    Bounds {
        kumar_ross_s,
        origin_term_s,
        download_term_s,
        upload_term_s,
        cut_set_s,
        cut_set_at,
        bound_s: kumar_ross_s.max(cut_set_s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kumar_ross_picks_the_binding_term() {
        let sc = Scenario { title_bytes: 1000, origin_upload_bps: 100.0, ..Scenario::default() };
        let fleet = Fleet { upload_bps: vec![10.0; 10], download_bps: vec![50.0; 10], site: vec![0; 10] };
        let b = compute(&sc, &fleet);
        // F/u_s = 10, F/d = 20, N·F/(u_s+Σu) = 10000/200 = 50.
        assert_eq!((b.origin_term_s, b.download_term_s, b.upload_term_s), (10.0, 20.0, 50.0));
        assert_eq!(b.bound_s, 50.0);
        let sc = Scenario { site_uplink_bps: Some(20.0), sites_per_region: 1, regions: 1, ..sc };
        let b = compute(&sc, &fleet);
        // One site: max(1000/20, 10·1000/(20+100)) = max(50, 83.3).
        assert!((b.cut_set_s - 10_000.0 / 120.0).abs() < 1e-9);
        assert_eq!(b.bound_s, b.cut_set_s);
    }
}
