//! The steering a bench's players ask, standing in for a tracker: `/<name>/steer` answers with
//! the steering answer kept under that name, so each arm of a bench names the appliance (and
//! the token) its players go to.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Path;
use fillmesh_protocol::steering::SteerAnswer;

/// The routes: `GET /{name}/steer` answers `answers[name]` as JSON, or 404.
pub fn router(answers: Arc<HashMap<String, SteerAnswer>>) -> axum::Router {
    axum::Router::new().route(
        "/{node}/steer",
        axum::routing::get(move |Path(node): Path<String>| {
            let answers = answers.clone();
            async move {
                answers.get(&node).map(|a| axum::Json(a.clone())).ok_or(axum::http::StatusCode::NOT_FOUND)
            }
        }),
    )
}
