//! `GET /metrics`: the node's figures in the Prometheus text format.
//!
//! The engine counts in plain atomics on its hot path; a scrape copies them into a
//! fresh recorder of the `metrics` crate (its Prometheus exporter renders the text), so
//! scraping costs the engine nothing between scrapes, a removed query's series go with
//! it, and a query added again under an old name starts its counters from zero (a
//! counter reset, as Prometheus expects after a restart). Only the close-to-durable
//! histogram, which accumulates samples, lives in a recorder kept across scrapes.
//! Labels are per query and per table, never per device: a fleet of 10,000 devices
//! must not make 10,000 series.

use std::sync::Arc;

use metrics::{counter, gauge, histogram, with_local_recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use super::ingest::Ingests;
use super::queries::{Queries, QueryState};
use crate::sync::Syncer;

/// Buckets of the window-close-to-durable histogram, seconds.
const DURABLE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The node's Prometheus recorder of histograms.
#[derive(Clone)]
pub struct Exporter {
    histograms: Arc<PrometheusRecorder>,
}

impl Default for Exporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Exporter {
    /// A recorder of this node's own (not the process-wide one: tests run several).
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets_for_metric(
                Matcher::Full("edgeflow_window_close_to_durable_seconds".into()),
                &DURABLE_BUCKETS,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        Exporter {
            histograms: Arc::new(builder.build_recorder()),
        }
    }

    /// The text of a scrape now.
    pub fn render(&self, queries: &Queries, ingests: &Ingests, syncer: Option<&Syncer>) -> String {
        let now = PrometheusBuilder::new().build_recorder();
        with_local_recorder(&now, || {
            record_queries(queries);
            record_sources(ingests);
            if let Some(syncer) = syncer {
                record_sync(syncer);
            }
        });
        with_local_recorder(self.histograms.as_ref(), || record_durable(queries));
        let mut text = now.handle().render();
        text.push_str(&self.histograms.handle().render());
        text
    }
}

fn record_queries(queries: &Queries) {
    for detail in queries.details() {
        let (name, state, figures) = (&detail.info.name, detail.info.state, &detail.figures);
        let q = [("query", name.clone())];
        counter!("edgeflow_query_readings_total", &q).absolute(figures.readings);
        counter!("edgeflow_query_bad_total", &q).absolute(figures.bad);
        counter!("edgeflow_query_late_total", &q).absolute(figures.late);
        counter!("edgeflow_query_corrections_total", &q).absolute(figures.corrections);
        counter!("edgeflow_query_registry_unmatched_total", &q)
            .absolute(figures.registry_unmatched);
        counter!("edgeflow_query_registry_reloads_total", &q).absolute(figures.registry_reloads);
        counter!("edgeflow_query_registry_errors_total", &q).absolute(figures.registry_errors);
        gauge!("edgeflow_query_registry_rows", &q).set(figures.registry_rows as f64);
        counter!("edgeflow_query_rows_total", &q).absolute(figures.rows);
        counter!("edgeflow_query_files_total", &q).absolute(figures.files);
        counter!("edgeflow_query_bytes_written_total", &q).absolute(figures.bytes);
        for s in [
            QueryState::Running,
            QueryState::Stopping,
            QueryState::Stopped,
            QueryState::Failed,
        ] {
            let label = serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            gauge!("edgeflow_query_state", "query" => name.clone(), "state" => label)
                .set(if s == state { 1.0 } else { 0.0 });
        }
        if let Some(lag) = detail.watermark_lag_s {
            gauge!("edgeflow_query_watermark_lag_seconds", &q).set(lag);
        }
        gauge!("edgeflow_query_open_windows", &q).set(detail.open.windows as f64);
        gauge!("edgeflow_query_open_keys", &q).set(detail.open.keys as f64);
        gauge!("edgeflow_query_state_bytes", &q).set(detail.open.bytes as f64);
    }
}

fn record_durable(queries: &Queries) {
    for (name, samples) in queries.take_close_to_durable() {
        let h = histogram!("edgeflow_window_close_to_durable_seconds", "query" => name);
        for s in samples {
            h.record(s);
        }
    }
}

fn record_sources(ingests: &Ingests) {
    // Received counts also tables no query reads any more, so counters never vanish.
    for (table, received) in ingests.received() {
        counter!("edgeflow_source_readings_total", "table" => table).absolute(received);
    }
    for (table, status) in ingests.status() {
        let t = [("table", table)];
        gauge!("edgeflow_source_connected", &t).set(if status.connected { 1.0 } else { 0.0 });
        gauge!("edgeflow_source_queries", &t).set(status.readers as f64);
    }
    let reports = ingests.reports();
    for (table, poll) in reports.polls {
        for (outcome, n) in [
            ("ok", poll.polls_ok),
            ("failed", poll.polls_failed),
            ("skipped", poll.polls_skipped),
            ("held", poll.polls_held),
        ] {
            counter!("edgeflow_source_polls_total", "table" => table.clone(), "outcome" => outcome)
                .absolute(n);
        }
        counter!("edgeflow_source_counter_resets_total", "table" => table.clone())
            .absolute(poll.counter_resets);
        gauge!("edgeflow_source_silent_devices", "table" => table.clone())
            .set(poll.silent_devices.len() as f64);
    }
    for (table, mqtt) in reports.mqtt {
        counter!("edgeflow_source_mqtt_messages_total", "table" => table.clone())
            .absolute(mqtt.messages);
        counter!("edgeflow_source_mqtt_disconnects_total", "table" => table.clone())
            .absolute(mqtt.disconnects);
        counter!("edgeflow_source_mqtt_redelivered_total", "table" => table.clone())
            .absolute(mqtt.redelivered);
    }
}

fn record_sync(syncer: &Syncer) {
    let report = syncer.report();
    gauge!("edgeflow_sync_pending_files").set(report.pending_files as f64);
    gauge!("edgeflow_sync_pending_bytes").set(report.pending_bytes as f64);
    gauge!("edgeflow_sync_oldest_pending_seconds").set(report.oldest_pending_s.unwrap_or(0.0));
    let (files, bytes) = syncer.uploads();
    counter!("edgeflow_sync_uploaded_files_total").absolute(files);
    counter!("edgeflow_sync_uploaded_bytes_total").absolute(bytes);
    counter!("edgeflow_sync_failures_total").absolute(syncer.failures());
    gauge!("edgeflow_sync_conflicts").set(report.conflicts.len() as f64);
    counter!("edgeflow_sync_dropped_files_total").absolute(report.dropped_files as u64);
    gauge!("edgeflow_sync_halted").set(if syncer.halted().is_some() { 1.0 } else { 0.0 });
}
