//! `intelwall run --metrics ADDRESS`: Prometheus metrics over HTTP.
//!
//! Each scrape requests a fresh rendering from the agent's main loop (the
//! loop owns the maps), so numbers are read at scrape time, never cached.
//! The HTTP side is a minimal handler on tokio: one GET per connection,
//! `/metrics` or `/`, nothing else.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use jiff::Timestamp;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::compile::RuleSpec;
use crate::feed::FeedReport;
use crate::report::CounterReport;

/// Largest request accepted, headers included.
const MAX_REQUEST_BYTES: usize = 8192;

/// The content type of prometheus-client's text encoding (OpenMetrics).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

/// The inputs of one scrape.
pub struct MetricsInput<'a> {
    pub report: &'a CounterReport,
    pub feeds: &'a [FeedReport],
    pub feed_loads: &'a BTreeMap<String, Timestamp>,
    pub rules: &'a [RuleSpec],
    /// Indicators each rule selects, in rule order.
    pub selected: &'a [u64],
    pub reload_failures: u64,
    /// Map name, entries, capacity.
    pub maps: &'a [(&'static str, usize, u32)],
    pub classes: usize,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn counter_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    family
}

fn gauge_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    registry.register(name, help, family.clone());
    family
}

/// Renders every metric in the Prometheus text format.
pub fn render(input: &MetricsInput<'_>) -> String {
    let mut registry = Registry::with_prefix("intelwall");
    rule_metrics(&mut registry, input);
    verdict_metrics(&mut registry, input.report);
    feed_metrics(&mut registry, input);
    agent_metrics(&mut registry, input);
    let mut text = String::new();
    if let Err(error) = encode(&mut text, &registry) {
        tracing::warn!(%error, "cannot encode the metrics");
    }
    text
}

fn rule_metrics(registry: &mut Registry, input: &MetricsInput<'_>) {
    let packets = counter_family(
        registry,
        "rule_packets",
        "Packets that matched the rule, whether or not it decided their fate",
    );
    let bytes = counter_family(
        registry,
        "rule_bytes",
        "Bytes of the packets that matched the rule",
    );
    for rule in &input.report.rules {
        let labels = labels(&[("rule", &rule.name), ("action", &rule.action)]);
        packets.get_or_create(&labels).inc_by(rule.packets);
        bytes.get_or_create(&labels).inc_by(rule.bytes);
    }
    let indicators = gauge_family(
        registry,
        "rule_indicators",
        "Indicators of the loaded intel that the rule selects",
    );
    for (rule, selected) in input.rules.iter().zip(input.selected) {
        indicators
            .get_or_create(&labels(&[("rule", &rule.name)]))
            .set(*selected as i64);
    }
}

fn verdict_metrics(registry: &mut Registry, report: &CounterReport) {
    let verdicts = counter_family(registry, "packets", "Packets judged, by verdict");
    let totals = &report.totals;
    for (verdict, value) in [
        ("passed", totals.passed),
        ("dropped", totals.dropped),
        ("allowed", totals.allowed),
        ("tagged", totals.tagged),
    ] {
        verdicts
            .get_or_create(&labels(&[("verdict", verdict)]))
            .inc_by(value);
    }
    let skipped = counter_family(
        registry,
        "not_inspected_packets",
        "Packets passed without a lookup, by reason",
    );
    for (reason, value) in &totals.not_inspected_by_reason {
        skipped
            .get_or_create(&labels(&[("reason", reason)]))
            .inc_by(*value);
    }
    let per_interface = counter_family(
        registry,
        "interface_packets",
        "Packets judged, by interface and verdict",
    );
    for (interface, totals) in &report.interfaces {
        for (verdict, value) in [
            ("passed", totals.passed),
            ("dropped", totals.dropped),
            ("allowed", totals.allowed),
            ("tagged", totals.tagged),
            ("not_inspected", totals.not_inspected),
        ] {
            per_interface
                .get_or_create(&labels(&[("interface", interface), ("verdict", verdict)]))
                .inc_by(value);
        }
    }
    let events = report.events.unwrap_or_default();
    let sent: Counter = Counter::default();
    sent.inc_by(events.sent);
    registry.register("events", "Sampled events written to the ring buffer", sent);
    let lost: Counter = Counter::default();
    lost.inc_by(events.lost);
    registry.register(
        "events_dropped",
        "Sampled events lost because the ring buffer was full",
        lost,
    );
    let tags = report.tags.unwrap_or_default();
    let unmarked: Counter = Counter::default();
    unmarked.inc_by(tags.no_metadata);
    registry.register(
        "tag_unmarked_packets",
        "Tagged packets that got no mark: the driver gave XDP no metadata room",
        unmarked,
    );
}

fn feed_metrics(registry: &mut Registry, input: &MetricsInput<'_>) {
    let indicators = gauge_family(
        registry,
        "feed_indicators",
        "Indicators loaded from the feed",
    );
    for feed in input.feeds {
        indicators
            .get_or_create(&labels(&[("feed", &feed.name)]))
            .set(feed.indicators as i64);
    }
    let loaded = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "feed_last_success_timestamp_seconds",
        "When the feed last loaded successfully, in seconds since the Unix epoch",
        loaded.clone(),
    );
    for (feed, time) in input.feed_loads {
        loaded
            .get_or_create(&labels(&[("feed", feed)]))
            .set(time.as_millisecond() as f64 / 1000.0);
    }
}

fn agent_metrics(registry: &mut Registry, input: &MetricsInput<'_>) {
    let failures: Counter = Counter::default();
    failures.inc_by(input.reload_failures);
    registry.register(
        "reload_failures",
        "Reloads that failed and left the last good state enforced",
        failures,
    );
    let entries = gauge_family(registry, "map_entries", "Entries in the address map");
    let capacity = gauge_family(registry, "map_capacity", "Capacity of the address map");
    for (map, used, size) in input.maps {
        let labels = labels(&[("map", map)]);
        entries.get_or_create(&labels).set(*used as i64);
        capacity.get_or_create(&labels).set(i64::from(*size));
    }
    let classes: Gauge = Gauge::default();
    classes.set(input.classes as i64);
    registry.register(
        "classes",
        "Classes (distinct predicate bitmasks) in use",
        classes,
    );
}

/// Accepts connections and replies to each with a rendering from the main
/// loop, reached through `scrapes`.
pub async fn serve(listener: TcpListener, scrapes: mpsc::Sender<oneshot::Sender<String>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, scrapes).await {
                tracing::debug!(%error, "metrics request failed");
            }
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    scrapes: mpsc::Sender<oneshot::Sender<String>>,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 || request.len() + read > MAX_REQUEST_BYTES {
            return Ok(());
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let line = String::from_utf8_lossy(&request);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, content_type, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        )
    } else if path != "/metrics" && path != "/" {
        (
            "404 Not Found",
            "text/plain",
            "metrics are at /metrics\n".to_owned(),
        )
    } else {
        let (reply, rendering) = oneshot::channel();
        if scrapes.send(reply).await.is_err() {
            return Ok(());
        }
        match rendering.await {
            Ok(text) => ("200 OK", CONTENT_TYPE, text),
            Err(_) => return Ok(()),
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
