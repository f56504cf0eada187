//! The `otlp` feature: spans exported to an OpenTelemetry collector over OTLP/HTTP (protobuf)
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. A job's
//! span becomes a child of the trace its enqueue carried (`traceparent`), so a trace shows the
//! producer's request and the job it caused.

use std::collections::HashMap;

use anyhow::{Context, Result};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Keeps the exporter running; [`Exporter::shutdown`] flushes what is left.
pub struct Exporter(SdkTracerProvider);

impl Exporter {
    /// Sends the spans still queued (waits at most 5 s for the collector).
    pub fn shutdown(self) {
        if let Err(err) = self.0.shutdown() {
            eprintln!("conveyor: OTLP exporter: {err}");
        }
    }
}

/// Whether the environment names a collector.
pub fn configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// The layer exporting spans, and its exporter. The endpoint, headers and timeout come from the
/// standard `OTEL_EXPORTER_OTLP_*` variables (`/v1/traces` is added to
/// `OTEL_EXPORTER_OTLP_ENDPOINT`); the service name is `conveyor` unless `OTEL_SERVICE_NAME`
/// says otherwise.
pub fn layer<S>() -> Result<(impl Layer<S>, Exporter)>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("setting up the OTLP exporter")?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "conveyor".into());
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build())
        .with_batch_exporter(exporter)
        .build();
    conveyor::set_job_span_hook(attach_parent);
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("conveyor"));
    Ok((layer, Exporter(provider)))
}

/// Makes a job's span (not yet entered) a child of the remote span its `traceparent` names.
fn attach_parent(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        if let Err(err) = span.set_parent(parent) {
            tracing::debug!(error = %err, "job span not linked to its trace");
        }
    }
}
