//! The webhook's Prometheus metrics, all prefixed `byoc_webhook_`.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use byoc_registry::LookupMetrics;
use byoc_runtime::connections::ConnectionMetrics;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::health::WatchHealth;
use crate::review::Verdict;
use crate::tls::Reload;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    result: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlaceLabels {
    place: &'static str,
}

/// Every metric the webhook exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    decisions: Family<DecisionLabels, Counter>,
    unreadable: Family<ErrorLabels, Counter>,
    reminded: Counter,
    duration: Histogram,
    /// The number of cached namespaces.
    pub cached_namespaces: Gauge,
    reloads: Family<ErrorLabels, Counter>,
    /// The HTTPS port's connections.
    pub connections: ConnectionMetrics,
    /// Bytes of request bodies being read or parsed ([`crate::budget`]).
    pub body_bytes_in_flight: Gauge,
    lookups: Family<ResultLabels, Counter>,
    lookup_duration: Histogram,
    cache_lookups: Family<ResultLabels, Counter>,
    cache_seen: std::sync::Arc<[AtomicU64; 2]>,
    cache_bytes: Gauge,
    judged: Family<PlaceLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            decisions: Family::default(),
            unreadable: Family::default(),
            reminded: Counter::default(),
            // 25 µs .. ~0.4 s
            duration: Histogram::new(exponential_buckets(0.000_025, 2.0, 15)),
            cached_namespaces: Gauge::default(),
            reloads: Family::default(),
            connections: ConnectionMetrics::default(),
            body_bytes_in_flight: Gauge::default(),
            lookups: Family::default(),
            // 100 µs .. ~3.3 s
            lookup_duration: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            cache_lookups: Family::default(),
            cache_seen: std::sync::Arc::default(),
            cache_bytes: Gauge::default(),
            judged: Family::default(),
        };
        let registry = registry.sub_registry_with_prefix("byoc_webhook");
        let connections = ConnectionMetrics::register(
            registry,
            "",
            "--max-connections",
            "--max-connections-per-source",
        );
        let metrics = Self {
            connections,
            ..metrics
        };
        registry.register(
            "decisions",
            "Admission decisions by result (admitted, denied, warned, audited) and reason",
            metrics.decisions.clone(),
        );
        registry.register(
            "unreadable_requests",
            "Requests refused because they are not a readable AdmissionReview, by error",
            metrics.unreadable.clone(),
        );
        registry.register(
            "expiry_reminders",
            "Admitted requests warned that a grant they depend on ends within expiryWarning",
            metrics.reminded.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's headers to its answer",
            metrics.duration.clone(),
        );
        registry.register(
            "cached_namespaces",
            "Namespaces in the metadata cache",
            metrics.cached_namespaces.clone(),
        );
        registry.register(
            "certificate_reloads",
            "Serving-certificate reloads after the files changed, by error (none when served)",
            metrics.reloads.clone(),
        );
        registry.register(
            "body_bytes_in_flight",
            "Bytes of request bodies being read or parsed, bounded by --body-budget",
            metrics.body_bytes_in_flight.clone(),
        );
        registry.register(
            "registry_lookups",
            "Registry lookups made for image requirements, by result (found, unreadable, or \
             the failure: unreachable, timeout, client_error, server_error, digest_mismatch, \
             too_large, malformed, over_cap)",
            metrics.lookups.clone(),
        );
        registry.register(
            "registry_lookup_duration_seconds",
            "Time one registry lookup took, cache hits included",
            metrics.lookup_duration.clone(),
        );
        registry.register(
            "registry_cache_lookups",
            "Registry lookups by whether a cache answered them (hit, miss)",
            metrics.cache_lookups.clone(),
        );
        registry.register(
            "registry_cache_bytes",
            "Bytes of manifests and configs in the digest-keyed registry cache",
            metrics.cache_bytes.clone(),
        );
        registry.register(
            "registry_judgements",
            "Distinct images of reviews judged from registry answers (once per lookup round \
             and once to settle), by place: inline (on an async worker), pool (on the blocking \
             pool) or late (not done within the review's registry budget)",
            metrics.judged.clone(),
        );
        metrics
    }

    /// Counts one decision.
    pub fn decision(&self, verdict: Verdict, reason: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                result: verdict.as_str(),
                reason,
            })
            .inc();
    }

    /// Counts one unreadable request, by its error label.
    pub fn unreadable(&self, error: &'static str) {
        self.unreadable.get_or_create(&ErrorLabels { error }).inc();
    }

    /// Counts one admitted request that got expiry reminders.
    pub fn reminded(&self) {
        self.reminded.inc();
    }

    /// Records how long a request took.
    pub fn observe(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Counts one certificate reload.
    pub fn reload(&self, reload: &Reload) {
        let error = match reload {
            Reload::Reloaded => "none",
            Reload::Failed(e) => e.metric_label(),
        };
        self.reloads.get_or_create(&ErrorLabels { error }).inc();
    }
}

/// The registry lookups of reviews, counted.
impl LookupMetrics for Metrics {
    /// Counts one registry lookup by its bounded result label.
    fn lookup(&self, result: &'static str, elapsed: Duration) {
        self.lookups.get_or_create(&ResultLabels { result }).inc();
        self.lookup_duration.observe(elapsed.as_secs_f64());
    }

    /// Brings the cache metrics up to the client's totals. Concurrent callers each add what
    /// the others had not.
    fn registry_cache(&self, hits: u64, misses: u64, bytes: usize) {
        use std::sync::atomic::Ordering;
        for (i, (total, result)) in [(hits, "hit"), (misses, "miss")].into_iter().enumerate() {
            let before = self.cache_seen[i].fetch_max(total, Ordering::Relaxed);
            if total > before {
                self.cache_lookups
                    .get_or_create(&ResultLabels { result })
                    .inc_by(total - before);
            }
        }
        self.cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Counts the images of one judging pass by where it ran.
    fn judged(&self, place: &'static str, images: usize) {
        (self.judged.get_or_create(&PlaceLabels { place }))
            .inc_by(u64::try_from(images).unwrap_or(u64::MAX));
    }
}

/// Registers the namespace watch's metrics in `registry`. They read `health` at every scrape,
/// so `/metrics` and `/readyz` never disagree.
pub fn register_watch(registry: &mut Registry, health: &WatchHealth) {
    let registry = registry.sub_registry_with_prefix("byoc_webhook");
    registry.register(
        "namespace_watch_healthy",
        "1 while the namespace watch works, 0 from its first failure until the API server \
         answers it again",
        WatchGauge {
            health: health.clone(),
            read: |health, _| f64::from(u8::from(health.is_healthy())),
        },
    );
    registry.register(
        "namespace_watch_last_event_age_seconds",
        "Seconds since the namespace watch last got an event or an answer of the API server \
         (a working watch is renewed at least every 45 s)",
        WatchGauge {
            health: health.clone(),
            read: |health, now| health.since_contact(now).as_secs_f64(),
        },
    );
}

/// A gauge computed from the watch's health when scraped.
#[derive(Debug)]
struct WatchGauge {
    health: WatchHealth,
    read: fn(&WatchHealth, Instant) -> f64,
}

impl EncodeMetric for WatchGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&(self.read)(&self.health, Instant::now()))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_names() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.decision(Verdict::Denied, "registry_not_allowed");
        m.unreadable("not_json");
        m.reminded();
        m.observe(Duration::from_micros(80));
        m.cached_namespaces.set(3);
        m.reload(&Reload::Reloaded);
        m.connections.open.set(2);
        m.connections.refused.inc();
        m.connections.refused_source.inc();
        m.connections.aged.inc();
        let start = Instant::now() - Duration::from_millis(2500);
        let health = WatchHealth::new(start);
        health.failed(start, "refused");
        register_watch(&mut registry, &health);
        m.lookup("found", Duration::from_millis(3));
        m.registry_cache(2, 1, 4096);
        m.registry_cache(1, 1, 4096);
        m.registry_cache(5, 1, 8192);
        m.judged("pool", 3);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "byoc_webhook_decisions_total{result=\"denied\",reason=\"registry_not_allowed\"} 1",
            "byoc_webhook_unreadable_requests_total{error=\"not_json\"} 1",
            "byoc_webhook_expiry_reminders_total 1",
            "byoc_webhook_request_duration_seconds_count 1",
            "byoc_webhook_cached_namespaces 3",
            "byoc_webhook_certificate_reloads_total{error=\"none\"} 1",
            "byoc_webhook_open_connections 2",
            "byoc_webhook_refused_connections_total 1",
            "byoc_webhook_refused_source_connections_total 1",
            "byoc_webhook_aged_connections_total 1",
            "byoc_webhook_namespace_watch_healthy 0",
            "byoc_webhook_namespace_watch_last_event_age_seconds 2.5",
            "byoc_webhook_registry_lookups_total{result=\"found\"} 1",
            "byoc_webhook_registry_lookup_duration_seconds_count 1",
            "byoc_webhook_registry_cache_lookups_total{result=\"hit\"} 5",
            "byoc_webhook_registry_cache_lookups_total{result=\"miss\"} 1",
            "byoc_webhook_registry_cache_bytes 8192",
            "byoc_webhook_registry_judgements_total{place=\"pool\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
