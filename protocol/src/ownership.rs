//! Several trackers, one fleet: which live tracker owns (coordinates) each title. Both the
//! trackers and the appliances compute it, so it sits here, where both import it.
//!
//! Ownership is rendezvous (highest-random-weight) hashing: every tracker and every
//! appliance computes, from the same set of live tracker ids, the same owner for a title,
//! with nothing to agree on beyond that set (which etcd holds). When a tracker leaves, only
//! its own titles move, each to the tracker with the next highest weight; when it comes back
//! it takes exactly those back.

use crate::hash;
use crate::{NodeId, TitleId};

/// The weight of `tracker` for `title`: a fixed, seedless mix of both, identical in every
/// process and version that keeps this function.
pub fn weight(title: &TitleId, tracker: &NodeId) -> u64 {
    hash::mix(
        hash::bytes(0, title.as_bytes()),
        hash::bytes(0x7472_6163_6b65_7273, tracker.as_str().as_bytes()),
    )
}

/// The live tracker that owns `title`: the one of highest [`weight`] (ties, which need two
/// equal 64-bit weights, go to the smaller id). `None` when `live` is empty.
pub fn owner<'a, I>(title: &TitleId, live: I) -> Option<&'a NodeId>
where
    I: IntoIterator<Item = &'a NodeId>,
{
    live.into_iter().max_by(|a, b| weight(title, a).cmp(&weight(title, b)).then_with(|| b.cmp(a)))
}
