//! Process set-up shared by the binaries: logging, traces and the shutdown signal.
//!
//! Logs go to stderr, filtered by `RUST_LOG`. Traces are exported only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set: OTLP over HTTP/protobuf, batched on the tokio
//! runtime, W3C trace context for propagation. One trace follows a write from the hub's
//! HTTP request through its append and the relay's publish to each instance's apply: the
//! request's span context is what the event's metadata carries as `traceparent`.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing::{Level, Metadata};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The variable that turns the export on, and names where it goes.
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The longest a graceful exit waits for the last spans to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`init`] set up; [`Telemetry::shutdown`] flushes the spans still batched.
#[must_use = "shut it down on exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Logs to stderr, filtered by `filter` (`RUST_LOG`; `info` when unset or unreadable), so stdout stays free for the
/// CLI's output (exports, reports); and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, exports
/// the spans of this crate family as the service named by `OTEL_SERVICE_NAME`, or else `service`.
/// An exporter that cannot be built is a warning, never a failure: the process runs
/// without traces. Call it from within the tokio runtime (the batches are sent from it).
pub fn init(service: &'static str, filter: Option<&str>) -> Telemetry {
    let filter = filter.and_then(|f| EnvFilter::try_new(f).ok()).unwrap_or_else(|| EnvFilter::new("info"));
    // The database driver logs statement parameters at debug level; they can hold one-time
    // secrets (the links of an invitation email), so it never logs below info.
    let filter = match "tokio_postgres=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
    let wanted = std::env::var(OTLP_ENDPOINT).is_ok_and(|endpoint| !endpoint.trim().is_empty());
    let (provider, refused) = match wanted.then(|| tracer_provider(service)) {
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(error)) => (None, Some(error)),
        None => (None, None),
    };
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service)).with_filter(filter_fn(traced))
    });
    let _ = tracing_subscriber::registry().with(logs).with(traces).try_init();
    if refused.is_some() {
        // Not the exporter's error: it quotes the endpoint, which may carry credentials.
        tracing::warn!(
            "{OTLP_ENDPOINT} is set but no trace exporter could be built from it (is it an absolute http(s) URL?); \
             running without traces"
        );
    }
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing::info!("exporting traces over OTLP");
    }
    Telemetry { provider }
}

fn tracer_provider(service: &'static str) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    // The endpoint, headers and timeout come from the standard `OTEL_EXPORTER_OTLP_*`
    // variables, the batching from `OTEL_BSP_*`.
    let exporter =
        opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary).build()?;
    let resource = match std::env::var("OTEL_SERVICE_NAME") {
        Ok(name) if !name.trim().is_empty() => Resource::builder().build(),
        _ => Resource::builder().with_service_name(service).build(),
    };
    // On the runtime, not on a thread of its own: the hyper client needs the runtime, and
    // a full queue drops spans rather than making a request wait.
    let batches = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    // Every trace is recorded, whatever sampling flag a caller's `traceparent` carries: a
    // client must not be able to keep its requests out of the traces, nor force them in.
    Ok(SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_span_processor(batches)
        .with_resource(resource)
        .build())
}

/// What goes into traces: the spans of the hub, the instances and `shared` (they are at
/// debug level, so the logs at `info` stay as they were) and their events from info up.
/// Never the exporter's own work, which would trace itself.
fn traced(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    let ours = ["hub", "instance", "shared"]
        .iter()
        .any(|krate| target.strip_prefix(krate).is_some_and(|rest| rest.is_empty() || rest.starts_with("::")));
    let most_verbose = if metadata.is_span() { Level::DEBUG } else { Level::INFO };
    ours && *metadata.level() <= most_verbose
}

impl Telemetry {
    /// Sends the spans still batched, then stops the exporter: on a graceful exit. An
    /// unreachable collector delays the exit by at most [`FLUSH_TIMEOUT`].
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The provider's shutdown blocks until the batch task on the runtime answers.
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(FLUSH_TIMEOUT, flushed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "the last spans were not exported"),
            Ok(Err(_)) | Err(_) => tracing::warn!("the last spans were not exported in time"),
        }
    }
}

/// The W3C `traceparent` of the current span, when traces are exported and a span is
/// current: what an event's metadata records of the request that caused it.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent").filter(|traceparent| crate::metadata::is_traceparent(traceparent))
}

/// Makes `traceparent` (from a request header or an event's metadata) the parent of
/// `span`, which must not have been entered yet. Anything but a valid `traceparent` is
/// ignored, and so is everything when traces are not exported: the span then starts a
/// trace of its own.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    // A span no layer records has no parent to set (the instance makes one per event applied).
    if span.is_disabled() {
        return;
    }
    let Some(traceparent) = traceparent.filter(|traceparent| crate::metadata::is_traceparent(traceparent)) else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Links `span` to `to`'s span context: `span` works for `to` without being its child
/// (one batch for many requests).
pub fn add_link(span: &tracing::Span, to: &tracing::Span) {
    let context = to.context();
    span.add_link(context.span().span_context().clone());
}

/// Resolves on SIGTERM or Ctrl-C: the cue for a graceful shutdown.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; draining");
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    /// Runs `f` with spans traced in memory (no exporter), as `init` sets them up.
    fn traced_scope<T>(f: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test")).with_filter(filter_fn(traced));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f)
    }

    #[test]
    fn a_span_continues_a_valid_traceparent_and_passes_on_its_own_context() {
        let inner = traced_scope(|| {
            let span = tracing::debug_span!("request");
            set_parent(&span, Some(CALLER));
            span.in_scope(current_traceparent)
        });
        let inner = inner.expect("a traced span has a traceparent");
        assert!(crate::metadata::is_traceparent(&inner));
        assert!(inner.starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "same trace: {inner}");
        assert!(!inner.contains("b7ad6b7169203331"), "a span of its own: {inner}");
        assert!(inner.ends_with("-01"), "sampled as its parent: {inner}");
    }

    #[test]
    fn an_invalid_traceparent_starts_a_trace_of_its_own() {
        for bad in ["", "00-00000000000000000000000000000000-b7ad6b7169203331-01", &"\"".repeat(1000)] {
            let inner = traced_scope(|| {
                let span = tracing::debug_span!("request");
                set_parent(&span, Some(bad));
                span.in_scope(current_traceparent)
            });
            let inner = inner.expect("a traced span has a traceparent");
            assert!(!inner.contains("0af7651916cd43dd8448eb211c80319c"), "{bad:?} -> {inner}");
        }
    }

    #[test]
    fn without_the_exporter_there_is_no_current_traceparent() {
        let span = tracing::debug_span!("request");
        set_parent(&span, Some(CALLER));
        assert_eq!(span.in_scope(current_traceparent), None);
    }

    #[test]
    fn only_this_crate_familys_spans_and_events_are_traced() {
        traced_scope(|| {
            let ours = tracing::debug_span!(target: "hub::http", "request");
            assert!(ours.context().span().span_context().is_valid());
            let exporter = tracing::info_span!(target: "opentelemetry_sdk", "export");
            assert!(!exporter.context().span().span_context().is_valid());
            let too_verbose = tracing::trace_span!(target: "instance::apply", "detail");
            assert!(!too_verbose.context().span().span_context().is_valid());
            let lookalike = tracing::info_span!(target: "hubris", "other");
            assert!(!lookalike.context().span().span_context().is_valid());
        });
    }
}
