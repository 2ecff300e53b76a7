//! netd's Prometheus metrics (`--metrics-addr`, served at `/metrics` in the OpenMetrics
//! text format): what an operator graphs and alerts on without reading the log.
//!
//! One process-wide set, as the log is process-wide: the API middleware, the engine
//! thread, the DNS server and the cluster agent each count where the thing happens.
//! Counters are atomics taken once (never a label lookup per DNS query); the gauges of
//! networks, sandboxes and ports are read from the engine at each scrape.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An API operation's labels: which API, which operation (`network_create`), and how it
/// ended (`ok`, `rejected` for the caller's mistakes, `failed` for netd's).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub api: &'static str,
    pub operation: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationKind {
    pub api: &'static str,
    pub operation: &'static str,
}

/// What a reconcile repaired.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RepairKind {
    /// A network's bridge, its addresses or its sysctls.
    bridge,
    /// A cluster network's vxlan device, routes or neighbours.
    overlay,
    /// netd's iptables rules or chains.
    firewall,
    /// A policy's ipset sets.
    policy_set,
    /// A sandbox's namespace, veth, address, routes or files.
    sandbox,
    /// Something netd made and no longer wants (a leaked veth, a deleted network's bridge).
    leak,
    /// A DNS listener.
    dns,
}

/// What started a reconcile.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Trigger {
    startup,
    on_demand,
    periodic,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepairLabels {
    kind: RepairKind,
    trigger: Trigger,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnswerLabels {
    answer: &'static str,
}

/// The DNS server's counters, one per kind of answer, taken once.
#[derive(Debug, Clone)]
pub struct DnsMetrics {
    /// Answered from netd's names (an address, or no data of the type asked).
    pub local: Counter,
    /// A name under netd's domain that does not exist.
    pub nxdomain: Counter,
    /// Sent on to an upstream resolver.
    pub forwarded: Counter,
    /// Refused (asked at an address netd does not serve), or a server failure (an internal
    /// network's name outside netd).
    pub refused: Counter,
    pub servfail: Counter,
    /// Malformed or unsupported requests.
    pub error: Counter,
    /// Forwarded requests answered by an upstream, and how long the upstream took.
    pub forward_seconds: Histogram,
    /// Forwarded requests no upstream answered in time (the client got SERVFAIL).
    pub forward_failures: Counter,
}

impl DnsMetrics {
    /// Counts an answer netd made itself, by its response code and authority.
    pub fn count_answer(&self, answer: &[u8]) {
        let Some(&flags) = answer.get(3) else {
            return;
        };
        let authoritative = answer.get(2).is_some_and(|f| f & 0x04 != 0);
        match flags & 0x0f {
            0 if authoritative => self.local.inc(),
            3 => self.nxdomain.inc(),
            5 => self.refused.inc(),
            2 => self.servfail.inc(),
            _ => self.error.inc(),
        };
    }
}

/// The cluster agent's view of etcd.
#[derive(Debug, Clone, Default)]
pub struct ClusterMetrics {
    /// 1 while a session with a store member is up (listed and watching).
    pub store_up: Gauge,
    /// Sessions that ended (a member lost, a watch cancelled, a lease expired).
    pub sessions_lost: Counter,
    /// Watch events taken from the store.
    pub watch_events: Counter,
    /// The store revision this node last saw.
    pub revision: Gauge,
}

/// Every metric netd exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    operations: Family<OperationLabels, Counter>,
    operation_seconds: Family<OperationKind, Histogram, fn() -> Histogram>,
    repairs: Family<RepairLabels, Counter>,
    pub networks: Gauge,
    pub sandboxes: Gauge,
    pub published_ports: Gauge,
    pub policies: Gauge,
    pub firewall_checks: Counter,
    pub dns: DnsMetrics,
    pub cluster: ClusterMetrics,
}

/// Latency buckets from 0.25 ms to about 4 s: attach is a few milliseconds, a policy
/// apply on a large host tens, a cluster operation up to the store's timeout.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

impl Metrics {
    fn new(clustered: bool) -> Metrics {
        let mut registry = Registry::with_prefix("netd");
        registry.register(
            "build",
            "The netd version and the git commit it was built from",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("NETD_GIT_COMMIT")),
            ]),
        );
        let operations = Family::<OperationLabels, Counter>::default();
        registry.register(
            "operations",
            "API operations by API, operation and result (ok, rejected: the caller's error, failed: netd's)",
            operations.clone(),
        );
        let operation_seconds: Family<OperationKind, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency);
        registry.register_with_unit(
            "operation_duration",
            "How long API operations took, from request to answer",
            Unit::Seconds,
            operation_seconds.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let networks = gauge(&mut registry, "networks", "Networks on this host");
        let sandboxes = gauge(
            &mut registry,
            "sandboxes",
            "Sandboxes (network namespaces netd holds or attached)",
        );
        let published_ports = gauge(
            &mut registry,
            "published_ports",
            "Published ports (one per host port and protocol)",
        );
        let policies = gauge(&mut registry, "policies", "Network policies in force");
        let repairs = Family::<RepairLabels, Counter>::default();
        registry.register(
            "reconcile_repairs",
            "Repairs of kernel state that did not match netd's records, by kind and by what found them",
            repairs.clone(),
        );
        let firewall_checks = Counter::default();
        registry.register(
            "firewall_checks",
            "Periodic checks of netd's firewall rules and sets",
            firewall_checks.clone(),
        );
        let answers = Family::<AnswerLabels, Counter>::default();
        registry.register(
            "dns_queries",
            "DNS queries by answer: local (netd's names), nxdomain, forwarded, refused, servfail, error",
            answers.clone(),
        );
        let answer = |answer| answers.get_or_create_owned(&AnswerLabels { answer });
        let forward_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 15));
        registry.register_with_unit(
            "dns_forward_duration",
            "How long upstream resolvers took to answer forwarded queries",
            Unit::Seconds,
            forward_seconds.clone(),
        );
        let forward_failures = Counter::default();
        registry.register(
            "dns_forward_failures",
            "Forwarded queries no upstream answered in time (answered SERVFAIL)",
            forward_failures.clone(),
        );
        let dns = DnsMetrics {
            local: answer("local"),
            nxdomain: answer("nxdomain"),
            forwarded: answer("forwarded"),
            refused: answer("refused"),
            servfail: answer("servfail"),
            error: answer("error"),
            forward_seconds,
            forward_failures,
        };
        let cluster = ClusterMetrics::default();
        if clustered {
            registry.register(
                "cluster_store_up",
                "1 while this node has a session with a cluster store member",
                cluster.store_up.clone(),
            );
            registry.register(
                "cluster_store_sessions_lost",
                "Sessions with the cluster store that ended (member lost, watch cancelled, lease expired)",
                cluster.sessions_lost.clone(),
            );
            registry.register(
                "cluster_watch_events",
                "Events taken from the cluster store's watch",
                cluster.watch_events.clone(),
            );
            registry.register(
                "cluster_store_revision",
                "The cluster store revision this node last saw",
                cluster.revision.clone(),
            );
        }
        Metrics {
            registry,
            operations,
            operation_seconds,
            repairs,
            networks,
            sandboxes,
            published_ports,
            policies,
            firewall_checks,
            dns,
            cluster,
        }
    }

    /// Counts one API operation and its duration.
    pub fn operation(&self, labels: OperationLabels, took: Duration) {
        self.operation_seconds
            .get_or_create(&OperationKind {
                api: labels.api,
                operation: labels.operation,
            })
            .observe(took.as_secs_f64());
        self.operations.get_or_create(&labels).inc();
    }

    /// Counts `count` repairs of one kind.
    pub fn repaired(&self, kind: RepairKind, trigger: Trigger, count: usize) {
        if count > 0 {
            self.repairs
                .get_or_create(&RepairLabels { kind, trigger })
                .inc_by(count as u64);
        }
    }

    /// The exposition, as `/metrics` serves it.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!("cannot encode the metrics: {e}");
        }
        text
    }
}

static CLUSTERED: OnceLock<bool> = OnceLock::new();
static METRICS: LazyLock<Metrics> =
    LazyLock::new(|| Metrics::new(CLUSTERED.get().copied().unwrap_or(false)));

/// Says whether the cluster's metrics are exported; before the first use of `get`.
pub fn init(clustered: bool) {
    let _ = CLUSTERED.set(clustered);
}

/// netd's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_told_apart_by_code_and_authority() {
        let m = Metrics::new(false);
        let header = |flags2: u8, flags3: u8| vec![0, 1, flags2, flags3, 0, 1, 0, 0, 0, 0, 0, 0];
        m.dns.count_answer(&header(0x84, 0x80)); // AA, NOERROR
        m.dns.count_answer(&header(0x84, 0x83)); // AA, NXDOMAIN
        m.dns.count_answer(&header(0x80, 0x85)); // REFUSED
        m.dns.count_answer(&header(0x80, 0x82)); // SERVFAIL
        m.dns.count_answer(&header(0x80, 0x81)); // FORMERR
        m.dns.count_answer(&header(0x80, 0x80)); // NOERROR, not ours: not a local answer
        let counts = [
            m.dns.local.get(),
            m.dns.nxdomain.get(),
            m.dns.refused.get(),
            m.dns.servfail.get(),
            m.dns.error.get(),
        ];
        assert_eq!(counts, [1, 1, 1, 1, 2]);
    }

    #[test]
    fn the_exposition_names_every_family_once() {
        let m = Metrics::new(true);
        m.operation(
            OperationLabels {
                api: "netd",
                operation: "network_create",
                result: "ok",
            },
            Duration::from_millis(3),
        );
        m.repaired(RepairKind::bridge, Trigger::startup, 2);
        let text = m.encode();
        assert!(text.contains(
            "netd_operations_total{api=\"netd\",operation=\"network_create\",result=\"ok\"} 1"
        ));
        assert!(
            text.contains("netd_reconcile_repairs_total{kind=\"bridge\",trigger=\"startup\"} 2")
        );
        assert!(text.contains("netd_build_info{version=\""));
        assert!(text.contains("# TYPE netd_cluster_store_up gauge"));
        assert!(text.ends_with("# EOF\n"));
        let unclustered = Metrics::new(false).encode();
        assert!(!unclustered.contains("cluster_store"));
    }
}
