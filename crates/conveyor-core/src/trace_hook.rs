//! A hook for trace exporters: the binary's OpenTelemetry layer (its `otlp` feature) makes
//! each job's span a child of the trace its enqueue carried (`traceparent`). Core depends on
//! no exporter: without a hook, the span only records the `traceparent` field.

use std::sync::OnceLock;

/// Called with a job's span, before it is entered, and the job's W3C `traceparent`.
pub type JobSpanHook = fn(&tracing::Span, &str);

static JOB_SPAN_HOOK: OnceLock<JobSpanHook> = OnceLock::new();

/// Installs the hook for the whole process; false when one was installed already.
pub fn set_job_span_hook(hook: JobSpanHook) -> bool {
    JOB_SPAN_HOOK.set(hook).is_ok()
}

/// Runs the hook on a new job span, when there is a hook and a trace context.
pub(crate) fn on_job_span(span: &tracing::Span, traceparent: Option<&str>) {
    if let (Some(hook), Some(traceparent)) = (JOB_SPAN_HOOK.get(), traceparent) {
        hook(span, traceparent);
    }
}
