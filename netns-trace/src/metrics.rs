//! Prometheus metrics (`--metrics-addr`): a `prometheus-client` registry
//! updated from the same records the tracer prints, encoded in the
//! OpenMetrics text format that Prometheus scrapes.
//!
//! Label sets stay bounded: the only per-object labels are those of
//! devices currently waiting, at most [`MAX_WAITING_SERIES`] of them; a
//! device beyond that is counted under `netns="other",device="other"`, and
//! a released device's series is removed.

use std::collections::HashMap;

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::output::{LostCounts, Record};

/// Most (netns, device) label pairs exported at once.
pub const MAX_WAITING_SERIES: usize = 32;

type Labels = Vec<(String, String)>;

/// Seconds: 1 ms to about 2 min, doubling (teardowns can take minutes).
fn teardown_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 18)
}

/// Seconds: 10 us to about 1.3 s, doubling (copy_net_ns is fast unless it
/// waits on a lock held by a stuck teardown).
fn copy_net_ns_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.00001, 2.0, 18)
}

pub struct Metrics {
    registry: Registry,
    created: Counter,
    destroyed: Counter,
    torn_down: Counter,
    cleanup_batches: Counter,
    teardown_seconds: Histogram,
    copy_net_ns_seconds: Histogram,
    devices_waiting: Family<Labels, Gauge>,
    device_usage_count: Family<Labels, Gauge>,
    ringbuf_drops: Counter,
    lost: Family<Labels, Counter>,
    hooks_attached: Gauge,
    hook_method: Family<Labels, Gauge>,
    degraded: Gauge,
    /// Waiting devices by kernel pointer: their exported labels.
    waiting: HashMap<u64, Labels>,
    lost_seen: LostCounts,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn other() -> Labels {
    vec![
        ("netns".into(), "other".into()),
        ("device".into(), "other".into()),
    ]
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("netns_trace");
        let m = Metrics {
            created: Counter::default(),
            destroyed: Counter::default(),
            torn_down: Counter::default(),
            cleanup_batches: Counter::default(),
            teardown_seconds: Histogram::new(teardown_buckets()),
            copy_net_ns_seconds: Histogram::new(copy_net_ns_buckets()),
            devices_waiting: Family::default(),
            device_usage_count: Family::default(),
            ringbuf_drops: Counter::default(),
            lost: Family::default(),
            hooks_attached: Gauge::default(),
            hook_method: Family::default(),
            degraded: Gauge::default(),
            waiting: HashMap::new(),
            lost_seen: LostCounts::default(),
            registry: Registry::default(),
        };
        registry.register(
            "netns_created",
            "Network namespaces created (copy_net_ns, or unshare/fork in degraded mode)",
            m.created.clone(),
        );
        registry.register(
            "netns_destroyed",
            "Network namespaces whose last reference was dropped (queued for cleanup_net)",
            m.destroyed.clone(),
        );
        registry.register(
            "netns_torn_down",
            "Network namespaces whose cleanup_net batch finished",
            m.torn_down.clone(),
        );
        registry.register(
            "cleanup_net_batches",
            "cleanup_net runs that finished",
            m.cleanup_batches.clone(),
        );
        registry.register(
            "netns_teardown_duration_seconds",
            "Destroy request to the end of its cleanup_net batch, per namespace",
            m.teardown_seconds.clone(),
        );
        registry.register(
            "copy_net_ns_duration_seconds",
            "Time spent in copy_net_ns creating a namespace",
            m.copy_net_ns_seconds.clone(),
        );
        registry.register(
            "devices_waiting",
            "Devices waiting to become free (unregister_netdevice); the series labelled other counts those beyond the label limit",
            m.devices_waiting.clone(),
        );
        registry.register(
            "device_waiting_usage_count",
            "Usage count of each waiting device, as the kernel prints it",
            m.device_usage_count.clone(),
        );
        registry.register(
            "ringbuf_drops",
            "Events dropped because the ring buffer was full",
            m.ringbuf_drops.clone(),
        );
        registry.register(
            "lost_events",
            "Events lost for other reasons (failed kernel reads, full maps, missed entries, undecodable records)",
            m.lost.clone(),
        );
        registry.register(
            "hooks_attached",
            "Kernel hooks attached",
            m.hooks_attached.clone(),
        );
        registry.register(
            "hook_attached",
            "1 for each attached hook, labelled with the method chosen",
            m.hook_method.clone(),
        );
        registry.register(
            "degraded",
            "1 when the tracer runs degraded (tracepoints only)",
            m.degraded.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The hooks attached, as (hook, method), and whether the tracer runs
    /// degraded.
    pub fn set_hooks(&mut self, attached: &[(String, String)], degraded: bool) {
        self.hooks_attached.set(attached.len() as i64);
        self.hook_method.clear();
        for (hook, method) in attached {
            let labels = vec![
                ("hook".to_string(), hook.clone()),
                ("method".to_string(), method.clone()),
            ];
            self.hook_method.get_or_create(&labels).set(1);
        }
        self.degraded.set(i64::from(degraded));
    }

    /// Update from one record.
    pub fn observe(&mut self, rec: &Record) {
        match rec {
            Record::NetnsCreate(r) if r.err == 0 => {
                self.created.inc();
                if let Some(ns) = r.duration_ns {
                    self.copy_net_ns_seconds.observe(ns as f64 / 1e9);
                }
            }
            Record::NetnsDestroy(_) => {
                self.destroyed.inc();
            }
            Record::CleanupNet(r) if r.phase == "end" => {
                self.cleanup_batches.inc();
                self.torn_down.inc_by(r.netns.len() as u64);
                for t in r.teardown_ns.iter().flatten().flatten() {
                    self.teardown_seconds.observe(*t as f64 / 1e9);
                }
                // Their devices are freed with them.
                let gone: Vec<u64> = self
                    .waiting
                    .iter()
                    .filter(|(_, l)| r.netns.iter().any(|n| l[0].1 == n.to_string()))
                    .map(|(&d, _)| d)
                    .collect();
                for dev in gone {
                    self.device_freed(dev);
                }
            }
            Record::DevWait(r) => {
                let labels = match self.waiting.get(&r.dev) {
                    Some(l) => l.clone(),
                    None => {
                        let labelled = self.waiting.values().filter(|l| **l != other()).count();
                        let labels = if labelled < MAX_WAITING_SERIES {
                            vec![
                                ("netns".to_string(), r.netns.to_string()),
                                ("device".to_string(), r.device.clone()),
                            ]
                        } else {
                            other()
                        };
                        self.waiting.insert(r.dev, labels.clone());
                        self.devices_waiting.get_or_create(&labels).inc();
                        labels
                    }
                };
                if labels != other() {
                    self.device_usage_count
                        .get_or_create(&labels)
                        .set(i64::from(r.usage_count));
                }
            }
            Record::DevReleased(r) => self.device_freed(r.dev),
            Record::Lost(l) => self.lost_totals(l.counts),
            Record::Summary(s) => self.lost_totals(s.lost),
            _ => {}
        }
    }

    fn device_freed(&mut self, dev: u64) {
        let Some(labels) = self.waiting.remove(&dev) else {
            return;
        };
        if labels == other() {
            if self.devices_waiting.get_or_create(&labels).dec() <= 1 {
                self.devices_waiting.remove(&labels);
            }
        } else {
            self.devices_waiting.remove(&labels);
            self.device_usage_count.remove(&labels);
        }
    }

    /// The kernel reports cumulative totals; counters take the increase.
    fn lost_totals(&mut self, now: LostCounts) {
        let prev = self.lost_seen;
        let delta = |a: u64, b: u64| a.saturating_sub(b);
        self.ringbuf_drops
            .inc_by(delta(now.ringbuf_drops, prev.ringbuf_drops));
        for (reason, a, b) in [
            ("read_error", now.read_errors, prev.read_errors),
            ("map_full", now.map_full, prev.map_full),
            ("missed_entry", now.missed_entry, prev.missed_entry),
            ("decode_error", now.decode_errors, prev.decode_errors),
        ] {
            let c = self
                .lost
                .get_or_create(&vec![("reason".to_string(), reason.to_string())]);
            c.inc_by(delta(a, b));
        }
        self.lost_seen = LostCounts {
            ringbuf_drops: now.ringbuf_drops.max(prev.ringbuf_drops),
            read_errors: now.read_errors.max(prev.read_errors),
            map_full: now.map_full.max(prev.map_full),
            missed_entry: now.missed_entry.max(prev.missed_entry),
            decode_errors: now.decode_errors.max(prev.decode_errors),
        };
    }

    /// The exposition text (OpenMetrics, ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Content type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The HTTP answer to one request head (`GET /metrics` or `GET /`), or a
/// 404/405, as (status line, content type, body).
pub fn http_response(
    request_head: &str,
    metrics: &Metrics,
) -> (&'static str, &'static str, String) {
    let mut parts = request_head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", CONTENT_TYPE, metrics.encode()),
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "netns-trace: metrics are on /metrics\n".into(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: metrics are on /metrics\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{CleanupNetRec, DevWaitRec, LostRec, NetnsCreateRec, NetnsDestroyRec};

    const S: u64 = 1_000_000_000;

    fn wait(dev: u64, netns: u32, count: i32, released: bool) -> Record {
        let r = DevWaitRec {
            container: crate::output::Container::Off,
            time_ns: S,
            netns,
            device: "lo".into(),
            ifindex: 1,
            refcnt: count,
            usage_count: count,
            usage_count_at: None,
            waiting_ns: S,
            wait_since: "run_todo",
            dev,
            pid: 9,
            comm: "kworker".into(),
            holders: vec![],
            attributed: 0,
            unattributed: 1,
            over: 0,
            complete: true,
            exact: None,
            block: false,
            baseline: 1,
        };
        if released {
            Record::DevReleased(r)
        } else {
            Record::DevWait(r)
        }
    }

    /// The value of the sample line starting with `prefix` (name and labels).
    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
    }

    #[test]
    fn counters_histograms_and_gauges_follow_records() {
        let mut m = Metrics::new();
        m.set_hooks(
            &[
                ("copy_net_ns".into(), "fentry+fexit".into()),
                ("fork".into(), "tp_btf".into()),
            ],
            false,
        );
        m.observe(&Record::NetnsCreate(NetnsCreateRec {
            container: crate::output::Container::Off,
            time_ns: S,
            wall_ns: 0,
            netns: 7,
            net: 0,
            pid: 1,
            tgid: 1,
            comm: "ip".into(),
            flags: 0,
            clone_newnet: true,
            duration_ns: Some(250_000),
            err: 0,
            source: "copy_net_ns",
        }));
        m.observe(&Record::NetnsDestroy(NetnsDestroyRec {
            container: crate::output::Container::Off,
            time_ns: S,
            netns: 7,
            pid: 1,
            comm: "ip".into(),
        }));
        m.observe(&wait(0xa, 7, 2, false));
        let t = m.encode();
        assert_eq!(sample(&t, "netns_trace_netns_created_total"), Some(1.0));
        assert_eq!(sample(&t, "netns_trace_netns_destroyed_total"), Some(1.0));
        assert_eq!(
            sample(&t, "netns_trace_copy_net_ns_duration_seconds_count"),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, "netns_trace_copy_net_ns_duration_seconds_sum"),
            Some(0.00025)
        );
        assert_eq!(sample(&t, "netns_trace_hooks_attached"), Some(2.0));
        assert_eq!(
            sample(
                &t,
                r#"netns_trace_hook_attached{hook="fork",method="tp_btf"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, r#"netns_trace_devices_waiting{netns="7",device="lo"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &t,
                r#"netns_trace_device_waiting_usage_count{netns="7",device="lo"}"#
            ),
            Some(2.0)
        );
        assert!(t.contains("# TYPE netns_trace_netns_teardown_duration_seconds histogram"));
        assert!(t.ends_with("# EOF\n"), "{t}");
        // The batch ends: the namespace is torn down, its device freed.
        m.observe(&Record::CleanupNet(CleanupNetRec {
            containers: None,
            time_ns: 4 * S,
            phase: "end",
            duration_ns: Some(Some(3 * S)),
            netns: vec![7],
            teardown_ns: Some(vec![Some(3 * S)]),
            pid: 9,
            comm: "kworker".into(),
        }));
        let t = m.encode();
        assert_eq!(sample(&t, "netns_trace_netns_torn_down_total"), Some(1.0));
        assert_eq!(
            sample(&t, "netns_trace_cleanup_net_batches_total"),
            Some(1.0)
        );
        assert_eq!(
            sample(&t, "netns_trace_netns_teardown_duration_seconds_sum"),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &t,
                r#"netns_trace_netns_teardown_duration_seconds_bucket{le="4.096"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &t,
                r#"netns_trace_netns_teardown_duration_seconds_bucket{le="2.048"}"#
            ),
            Some(0.0)
        );
        assert!(!t.contains(r#"netns="7""#), "released series removed: {t}");
    }

    #[test]
    fn waiting_device_labels_are_bounded() {
        let mut m = Metrics::new();
        let n = MAX_WAITING_SERIES as u64 + 5;
        for i in 0..n {
            m.observe(&wait(i + 1, 100 + i as u32, 2, false));
            m.observe(&wait(i + 1, 100 + i as u32, 3, false)); // same device again
        }
        let t = m.encode();
        let labelled = t
            .lines()
            .filter(|l| l.starts_with("netns_trace_devices_waiting{"))
            .count();
        assert_eq!(labelled, MAX_WAITING_SERIES + 1, "{t}");
        assert_eq!(
            sample(
                &t,
                r#"netns_trace_devices_waiting{netns="other",device="other"}"#
            ),
            Some(5.0)
        );
        // Releasing the overflow ones empties "other"; a released labelled
        // one frees its series.
        for i in MAX_WAITING_SERIES as u64..n {
            m.observe(&wait(i + 1, 100 + i as u32, 1, true));
        }
        m.observe(&wait(1, 100, 1, true));
        let t = m.encode();
        assert!(!t.contains(r#"netns="other""#), "{t}");
        assert!(!t.contains(r#"netns="100""#), "{t}");
        assert!(t.contains(r#"netns="101""#), "{t}");
    }

    #[test]
    fn lost_totals_become_counter_increments() {
        let mut m = Metrics::new();
        let lost = |drops, reads| {
            Record::Lost(LostRec {
                time_ns: S,
                counts: LostCounts {
                    ringbuf_drops: drops,
                    read_errors: reads,
                    ..Default::default()
                },
            })
        };
        m.observe(&lost(5, 1));
        m.observe(&lost(7, 1));
        let t = m.encode();
        assert_eq!(sample(&t, "netns_trace_ringbuf_drops_total"), Some(7.0));
        assert_eq!(
            sample(&t, r#"netns_trace_lost_events_total{reason="read_error"}"#),
            Some(1.0)
        );
    }

    #[test]
    fn http_routes() {
        let m = Metrics::new();
        let (status, ctype, body) = http_response("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &m);
        assert_eq!((status, ctype), ("200 OK", CONTENT_TYPE));
        assert!(body.contains("netns_trace_netns_created_total 0"), "{body}");
        assert_eq!(
            http_response("GET /metrics?x=1 HTTP/1.1\r\n\r\n", &m).0,
            "200 OK"
        );
        assert_eq!(
            http_response("GET /nope HTTP/1.1\r\n\r\n", &m).0,
            "404 Not Found"
        );
        assert_eq!(
            http_response("POST /metrics HTTP/1.1\r\n\r\n", &m).0,
            "405 Method Not Allowed"
        );
        assert_eq!(http_response("", &m).0, "405 Method Not Allowed");
    }
}
