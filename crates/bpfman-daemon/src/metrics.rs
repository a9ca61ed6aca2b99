//! The daemon's Prometheus endpoint: the registry (the manager's event counters and its
//! object collector, requests by method and code, the daemon's own facts) and where it is
//! served (`[metrics] listen` / `socket`). Serving is bpfman-metrics'; what is measured is the
//! manager's; this module only assembles them.

use std::sync::Arc;
use std::time::Instant;

use bpfman::config::Config;
use bpfman::manager::Manager;
use bpfman::metrics::{MetadataLabels, ObjectCollector};
use bpfman_metrics::{Bound, Listen};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Every method the daemon serves: the only values the `method` label takes (anything else a
/// client sends is `unknown`, so a client cannot grow the label set).
const METHODS: &[&str] = &[
    "/bpfman.v1.Bpfman/Load",
    "/bpfman.v1.Bpfman/Unload",
    "/bpfman.v1.Bpfman/Attach",
    "/bpfman.v1.Bpfman/Detach",
    "/bpfman.v1.Bpfman/List",
    "/bpfman.v1.Bpfman/PullBytecode",
    "/bpfman.v1.Bpfman/Get",
    "/bpfman.ext.v1.BpfmanExt/ListLinks",
    "/bpfman.ext.v1.BpfmanExt/GetLink",
    "/bpfman.ext.v1.BpfmanExt/ListProgramRecords",
    "/bpfman.ext.v1.BpfmanExt/SystemInfo",
    "/bpfman.ext.v1.BpfmanExt/Reload",
    "/bpfman.ext.v1.BpfmanExt/Reconcile",
    "/bpfman.ext.v1.BpfmanExt/PullImage",
    "/bpfman.ext.v1.BpfmanExt/ListImages",
    "/bpfman.ext.v1.BpfmanExt/InspectImage",
    "/bpfman.ext.v1.BpfmanExt/RemoveImage",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeatureLabels {
    feature: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    kernel: String,
}

/// Requests by method and code, and their latency: what the admission layer records.
#[derive(Clone, Debug)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// Connections open now (every caller, root included).
    pub open_connections: Gauge,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            open_connections: Gauge::default(),
        }
    }
}

/// gRPC code names, as the gRPC spec spells them.
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

impl RequestMetrics {
    /// The label value for a request path.
    pub fn method(path: &str) -> &'static str {
        METHODS
            .iter()
            .find(|m| **m == path)
            .copied()
            .unwrap_or("unknown")
    }

    /// The policy action a method asks for (the `action` label of a denial at the door).
    pub fn action(method: &str) -> &'static str {
        match method.rsplit('/').next().unwrap_or("") {
            "Load" => "load",
            "Unload" => "unload",
            "Attach" => "attach",
            "Detach" => "detach",
            "List" | "ListLinks" | "ListProgramRecords" | "ListImages" => "list",
            "Get" | "GetLink" | "InspectImage" | "SystemInfo" => "get",
            "PullBytecode" | "PullImage" => "pull",
            "RemoveImage" => "remove_image",
            "Reload" => "reload",
            "Reconcile" => "reconcile",
            _ => "unknown",
        }
    }

    /// Records one finished request. `code` is the gRPC status in the response head
    /// (tonic sends errors of unary calls there); none means OK. A stream that fails after
    /// its first message is counted OK, with the latency to its first response.
    pub fn observe(&self, method: &'static str, code: Option<i32>, started: Instant) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                code: code_name(code.unwrap_or(0)).to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The registry the daemon serves.
pub fn registry(
    manager: &Arc<Manager>,
    config: &Config,
    requests: &RequestMetrics,
    run_stats: bool,
) -> Result<Registry, String> {
    let labels = MetadataLabels::new(&config.metrics.metadata_labels)?;
    let mut r = Registry::with_prefix("bpfman");
    manager.events().register(&mut r);
    r.register(
        "requests",
        "API requests, by method and gRPC code",
        requests.requests.clone(),
    );
    r.register_with_unit(
        "request_duration",
        "API request latency, by method (to the response head)",
        Unit::Seconds,
        requests.latency.clone(),
    );
    r.register(
        "open_connections",
        "Connections open on the API socket",
        requests.open_connections.clone(),
    );
    let build: Family<BuildLabels, Gauge> = Family::default();
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_string(),
            kernel: manager.features().kernel_release.clone(),
        })
        .set(1);
    r.register(
        "build_info",
        "The daemon's version and the kernel it runs on",
        build,
    );
    let features: Family<FeatureLabels, Gauge> = Family::default();
    for f in &manager.features().list {
        features
            .get_or_create(&FeatureLabels {
                feature: f.name.to_string(),
            })
            .set(i64::from(f.supported));
    }
    r.register(
        "kernel_feature",
        "Kernel features the daemon probed at start (1 supported, 0 not)",
        features,
    );
    let stats = Gauge::<i64>::default();
    stats.set(i64::from(run_stats));
    r.register(
        "kernel_run_stats_enabled",
        "1 while the daemon holds kernel run statistics on ([metrics] program_stats)",
        stats,
    );
    r.register_collector(Box::new(ObjectCollector::new(manager, labels)));
    Ok(r)
}

/// Binds the configured endpoints (at start, so a bad address stops the daemon with the
/// setting named).
pub fn bind(config: &Config, gid: Option<u32>) -> anyhow::Result<Vec<Bound>> {
    let mut out = Vec::new();
    let addr = config
        .metrics
        .listen_addr()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(a) = addr {
        out.push(bpfman_metrics::bind(
            "[metrics] listen",
            &Listen::Tcp(a),
            0o660,
            None,
        )?);
    }
    if let Some(p) = &config.metrics.socket {
        out.push(bpfman_metrics::bind(
            "[metrics] socket",
            &Listen::Unix(p.clone()),
            0o660,
            gid,
        )?);
    }
    Ok(out)
}
