//! Metrics, one way for every process: each process builds one prometheus-client
//! [`Registry`], every part of it registers its counters there (or a [`Collector`] for values
//! read from state when scraped), and [`page`] renders it for each `/metrics` route.
//!
//! The text is Prometheus' exposition format 0.0.4 ([`CONTENT_TYPE`]), as before the registry:
//! counters are registered without their `_total`, which the encoder appends.
//!
//! [`Collector`]: prometheus_client::collector::Collector

use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
pub use prometheus_client::registry::Registry;

/// The `Content-Type` of [`page`]: Prometheus text, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The answer to `GET /metrics`: its `content-type` header and the registry's text. Axum takes
/// the pair as a response as it is; the player server sends the same header and body.
pub fn page(registry: &Registry) -> ([(&'static str, &'static str); 1], String) {
    let mut body = String::new();
    // Encoding into a String never fails.
    let _ = prometheus_text::encode(&mut body, registry);
    ([("content-type", CONTENT_TYPE)], body)
}

/// Writes one family of values read from state at scrape time (for a [`Collector`]'s
/// `encode`): `name` (a counter's without `_total`, as registered ones) with one sample per
/// label set. `help` is written as given, full stop included.
///
/// [`Collector`]: prometheus_client::collector::Collector
pub fn encode_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let sample = family.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(value).encode(sample)?,
            _ => ConstGauge::new(value).encode(sample)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::metrics::counter::Counter;

    #[derive(Debug)]
    struct Held;

    impl Collector for Held {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_family(
                &mut encoder,
                "x_held",
                "Held, per title.",
                MetricType::Gauge,
                [([("title", "a")], 3)],
            )?;
            let none: [(&str, &str); 0] = [];
            encode_family(&mut encoder, "x_bytes", "Bytes.", MetricType::Counter, [(none, 7)])
        }
    }

    #[test]
    fn registered_and_collected_metrics_render_as_prometheus_text() {
        let mut registry = Registry::default();
        let served: Counter = Counter::default();
        registry.register("x_served_chunks", "Chunks served", served.clone());
        registry.register_collector(Box::new(Held));
        served.inc_by(5);
        let (headers, body) = page(&registry);
        assert_eq!(headers, [("content-type", "text/plain; version=0.0.4; charset=utf-8")]);
        assert_eq!(
            body,
            "# HELP x_served_chunks_total Chunks served.\n# TYPE x_served_chunks_total counter\n\
             x_served_chunks_total 5\n\
             # HELP x_held Held, per title.\n# TYPE x_held gauge\nx_held{title=\"a\"} 3\n\
             # HELP x_bytes_total Bytes.\n# TYPE x_bytes_total counter\nx_bytes_total 7\n"
        );
    }
}
