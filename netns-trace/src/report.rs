//! `netns-trace run`: the report of one command's namespaces, built from
//! the same records the tracer prints, and the exit-status policy.
//!
//! The builder follows every namespace the command created from its
//! creation to the end of its `cleanup_net` batch, and every device that
//! waited in it. The document it produces (`--json-report`) is meant to be
//! diffed between two kernels: namespaces in creation order, each with its
//! timeline, the devices that waited and their holders.
//!
//! Teardown is *observed* when the destroy request (`__put_net`) and the
//! batch's end were both seen: the batch names the namespace. In degraded
//! mode (tracepoints only) destroy requests are invisible and batches name
//! nothing; a namespace is then *inferred* torn down by the first
//! `cleanup_net` batch that started after it was created and ended after
//! the command exited, and the document says so.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::cli::exit;
use crate::output::{HolderRec, LostCounts, Record};
use crate::plan::HookRow;

/// How a namespace's teardown is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TeardownSeen {
    /// Destroy request and the end of the batch holding it were traced.
    Observed,
    /// Degraded mode: a `cleanup_net` batch ran after the command exited.
    Inferred,
    /// Not torn down as far as the tracer could see.
    NotSeen,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandOutcome {
    pub argv: Vec<String>,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
    /// Seconds since the tracer started.
    #[serde(rename = "exited", serialize_with = "secs3")]
    pub exited_ns: u64,
}

impl CommandOutcome {
    pub fn failed(&self) -> bool {
        self.exit_code != Some(0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    #[serde(rename = "time", serialize_with = "secs3")]
    pub time_ns: u64,
    /// created, destroy_queued, cleanup_start, dev_wait, dev_released,
    /// cleanup_end.
    pub event: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceReport {
    pub device: String,
    pub ifindex: i32,
    /// First `dev_wait`, seconds since the tracer started.
    #[serde(rename = "first_wait", serialize_with = "secs3")]
    pub first_wait_ns: u64,
    pub max_usage_count: i32,
    /// The whole wait when released, else the wait so far.
    #[serde(rename = "waited_s", serialize_with = "secs3")]
    pub waited_ns: u64,
    pub wait_since: &'static str,
    pub released: bool,
    /// Holders as last reported while it was waiting (the most complete
    /// report: on release the count is back at the baseline).
    pub holders: Vec<HolderRec>,
    pub unattributed: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamespaceReport {
    pub netns: u32,
    #[serde(rename = "created", serialize_with = "secs3")]
    pub created_ns: u64,
    pub created_wall: String,
    pub creator_pid: u32,
    pub creator_comm: String,
    /// copy_net_ns, unshare or fork.
    pub source: &'static str,
    #[serde(rename = "copy_net_ns_us", serialize_with = "opt_us")]
    pub copy_net_ns_ns: Option<u64>,
    pub teardown: TeardownSeen,
    /// Observed: destroy request to the end of its batch. Inferred: the
    /// batch's own duration (the destroy time is unknown).
    #[serde(rename = "teardown_us", serialize_with = "opt_us")]
    pub teardown_ns: Option<u64>,
    pub timeline: Vec<TimelineEntry>,
    pub devices: Vec<DeviceReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelInfo {
    pub release: String,
    pub degraded: bool,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub exit_code: u8,
    pub command_failed: bool,
    pub leak: bool,
    pub slow_teardown: bool,
    pub interrupted: bool,
    /// One sentence per finding.
    pub reasons: Vec<String>,
}

/// The `--json-report` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub version: String,
    pub kernel: KernelInfo,
    pub hooks: Vec<HookRow>,
    pub command: Option<CommandOutcome>,
    #[serde(rename = "settle_s", serialize_with = "secs3")]
    pub settle_ns: u64,
    /// Every namespace torn down and no device waiting before --settle ran
    /// out.
    pub settled: bool,
    pub namespaces: Vec<NamespaceReport>,
    pub lost: LostCounts,
    pub verdict: Verdict,
}

/// What decides the exit status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub fail_on_leak: bool,
    pub max_teardown: Option<Duration>,
}

#[derive(Debug)]
struct Ns {
    report: NamespaceReport,
}

/// Builds the report from the tracer's records.
#[derive(Debug)]
pub struct ReportBuilder {
    /// Destroy requests are traced: teardown can be observed.
    exact: bool,
    order: Vec<u32>,
    namespaces: HashMap<u32, Ns>,
    /// Running batches by kworker pid: start time.
    batches: HashMap<u32, u64>,
    /// Open device waits: (netns, dev pointer) to index in the namespace.
    devices: BTreeMap<(u32, u64), usize>,
    command: Option<CommandOutcome>,
    lost: LostCounts,
    hooks: Vec<HookRow>,
}

impl ReportBuilder {
    /// `exact`: the destroy hook (`__put_net`) is attached.
    pub fn new(exact: bool) -> Self {
        ReportBuilder {
            exact,
            order: Vec::new(),
            namespaces: HashMap::new(),
            batches: HashMap::new(),
            devices: BTreeMap::new(),
            command: None,
            lost: LostCounts::default(),
            hooks: Vec::new(),
        }
    }

    fn ns(&mut self, netns: u32) -> Option<&mut Ns> {
        self.namespaces.get_mut(&netns)
    }

    /// Fold in one record the tracer produced.
    pub fn observe(&mut self, rec: &Record) {
        match rec {
            Record::Attach(a) => self.hooks = a.hooks.clone(),
            Record::NetnsCreate(r) if r.err == 0 && r.netns != 0 => {
                if self.namespaces.contains_key(&r.netns) {
                    return; // the same namespace seen by two creation hooks
                }
                self.order.push(r.netns);
                self.namespaces.insert(
                    r.netns,
                    Ns {
                        report: NamespaceReport {
                            netns: r.netns,
                            created_ns: r.time_ns,
                            created_wall: crate::output::rfc3339(r.wall_ns),
                            creator_pid: r.tgid,
                            creator_comm: r.comm.clone(),
                            source: r.source,
                            copy_net_ns_ns: r.duration_ns,
                            teardown: TeardownSeen::NotSeen,
                            teardown_ns: None,
                            timeline: vec![TimelineEntry {
                                time_ns: r.time_ns,
                                event: "created",
                                detail: format!("by pid {} ({})", r.tgid, r.comm),
                            }],
                            devices: Vec::new(),
                        },
                    },
                );
            }
            Record::NetnsDestroy(r) => {
                if let Some(ns) = self.ns(r.netns) {
                    ns.report.timeline.push(TimelineEntry {
                        time_ns: r.time_ns,
                        event: "destroy_queued",
                        detail: String::new(),
                    });
                }
            }
            Record::CleanupNet(r) if r.phase == "start" => {
                self.batches.insert(r.pid, r.time_ns);
                for n in &r.netns {
                    if let Some(ns) = self.ns(*n) {
                        ns.report.timeline.push(TimelineEntry {
                            time_ns: r.time_ns,
                            event: "cleanup_start",
                            detail: format!("batch of {}", r.netns.len()),
                        });
                    }
                }
            }
            Record::CleanupNet(r) => {
                let start = self.batches.remove(&r.pid);
                let teardown = r.teardown_ns.clone().unwrap_or_default();
                for (i, n) in r.netns.iter().enumerate() {
                    if let Some(ns) = self.ns(*n) {
                        ns.report.teardown = TeardownSeen::Observed;
                        ns.report.teardown_ns = teardown.get(i).copied().flatten();
                        ns.report.timeline.push(TimelineEntry {
                            time_ns: r.time_ns,
                            event: "cleanup_end",
                            detail: String::new(),
                        });
                    }
                }
                if !self.exact {
                    self.infer_teardown(start, r.time_ns, r.duration_ns.flatten());
                }
            }
            Record::DevWait(r) | Record::DevReleased(r) => {
                let released = matches!(rec, Record::DevReleased(_));
                let key = (r.netns, r.dev);
                let Some(ns) = self.namespaces.get_mut(&r.netns) else {
                    return;
                };
                let idx = match self.devices.get(&key) {
                    Some(&i) => i,
                    None => {
                        ns.report.devices.push(DeviceReport {
                            device: r.device.clone(),
                            ifindex: r.ifindex,
                            first_wait_ns: r.time_ns,
                            max_usage_count: r.usage_count,
                            waited_ns: r.waiting_ns,
                            wait_since: r.wait_since,
                            released: false,
                            holders: Vec::new(),
                            unattributed: 0,
                        });
                        ns.report.timeline.push(TimelineEntry {
                            time_ns: r.time_ns,
                            event: "dev_wait",
                            detail: format!("{} usage_count={}", r.device, r.usage_count),
                        });
                        let i = ns.report.devices.len() - 1;
                        self.devices.insert(key, i);
                        i
                    }
                };
                let d = &mut ns.report.devices[idx];
                d.waited_ns = d.waited_ns.max(r.waiting_ns);
                d.wait_since = r.wait_since;
                if released {
                    d.released = true;
                    self.devices.remove(&key);
                    ns.report.timeline.push(TimelineEntry {
                        time_ns: r.time_ns,
                        event: "dev_released",
                        detail: format!("{} after {:.2}s", r.device, r.waiting_ns as f64 / 1e9),
                    });
                } else {
                    d.max_usage_count = d.max_usage_count.max(r.usage_count);
                    d.holders = r.holders.clone();
                    d.unattributed = r.unattributed;
                }
            }
            Record::Lost(l) => self.lost = l.counts,
            Record::Summary(s) => self.lost = s.lost,
            _ => {}
        }
    }

    /// Degraded mode: a batch that started after a namespace's creation
    /// and ended after the command exited is taken as its teardown.
    fn infer_teardown(&mut self, start: Option<u64>, end: u64, duration: Option<u64>) {
        let Some(exited) = self.command.as_ref().map(|c| c.exited_ns) else {
            return;
        };
        if end < exited {
            return;
        }
        let start = start.or_else(|| duration.map(|d| end.saturating_sub(d)));
        for ns in self.namespaces.values_mut() {
            let r = &mut ns.report;
            if r.teardown != TeardownSeen::NotSeen || start.is_none_or(|s| s < r.created_ns) {
                continue;
            }
            r.teardown = TeardownSeen::Inferred;
            r.teardown_ns = start.map(|s| end - s);
            r.timeline.push(TimelineEntry {
                time_ns: end,
                event: "cleanup_end",
                detail: "inferred: a cleanup_net batch ran after the command exited".into(),
            });
        }
    }

    pub fn command_exited(&mut self, outcome: CommandOutcome) {
        self.command = Some(outcome);
    }

    /// Nothing left to wait for: every namespace torn down, no device
    /// waiting. False before the command exited.
    pub fn settled(&self) -> bool {
        self.command.is_some()
            && self.devices.is_empty()
            && self
                .namespaces
                .values()
                .all(|n| n.report.teardown != TeardownSeen::NotSeen)
    }

    /// The document and its verdict.
    pub fn finish(
        mut self,
        version: &str,
        kernel: KernelInfo,
        settle: Duration,
        policy: Policy,
        interrupted: bool,
    ) -> RunReport {
        let settled = self.settled();
        let namespaces: Vec<NamespaceReport> = self
            .order
            .iter()
            .filter_map(|n| self.namespaces.remove(n))
            .map(|mut n| {
                n.report.timeline.sort_by_key(|t| t.time_ns);
                n.report
            })
            .collect();
        let verdict = verdict(self.command.as_ref(), &namespaces, policy, interrupted);
        RunReport {
            kind: "run_report",
            version: version.into(),
            kernel,
            hooks: self.hooks,
            command: self.command,
            settle_ns: settle.as_nanos() as u64,
            settled,
            namespaces,
            lost: self.lost,
            verdict,
        }
    }
}

/// The exit-status policy. A leak (with `--fail-on-leak`) wins over a slow
/// teardown (with `--max-teardown`), which wins over the command's own
/// failure; an interrupted run is 130 whatever was found.
pub fn verdict(
    command: Option<&CommandOutcome>,
    namespaces: &[NamespaceReport],
    policy: Policy,
    interrupted: bool,
) -> Verdict {
    let mut reasons = Vec::new();
    let command_failed = command.is_none_or(CommandOutcome::failed);
    match command {
        None => reasons.push("the command did not finish".to_string()),
        Some(c) => match (c.exit_code, c.signal) {
            (Some(0), _) => {}
            (Some(code), _) => reasons.push(format!("the command exited with status {code}")),
            (None, Some(sig)) => reasons.push(format!("the command was killed by signal {sig}")),
            (None, None) => reasons.push("the command ended abnormally".into()),
        },
    }
    let mut leak = false;
    let mut slow = false;
    for n in namespaces {
        if n.teardown == TeardownSeen::NotSeen {
            leak = true;
            reasons.push(format!("netns {} was not torn down", n.netns));
        }
        for d in &n.devices {
            if !d.released {
                leak = true;
                reasons.push(format!(
                    "{} of netns {} is still waiting to become free (usage count {}, {:.1}s)",
                    d.device,
                    n.netns,
                    d.max_usage_count,
                    d.waited_ns as f64 / 1e9
                ));
            }
        }
        if let Some(max) = policy.max_teardown {
            let max_ns = max.as_nanos() as u64;
            if let Some(t) = n.teardown_ns.filter(|&t| t > max_ns) {
                slow = true;
                reasons.push(format!(
                    "netns {} took {:.3}s to tear down (max {:.3}s)",
                    n.netns,
                    t as f64 / 1e9,
                    max.as_secs_f64()
                ));
            }
            for d in n.devices.iter().filter(|d| d.waited_ns > max_ns) {
                slow = true;
                reasons.push(format!(
                    "{} of netns {} waited {:.3}s to become free (max {:.3}s)",
                    d.device,
                    n.netns,
                    d.waited_ns as f64 / 1e9,
                    max.as_secs_f64()
                ));
            }
        }
    }
    let exit_code = if interrupted {
        exit::INTERRUPTED
    } else if leak && policy.fail_on_leak {
        exit::LEAK
    } else if slow {
        exit::SLOW_TEARDOWN
    } else if command_failed {
        exit::COMMAND_FAILED
    } else {
        exit::OK
    };
    Verdict {
        exit_code,
        command_failed,
        leak,
        slow_teardown: slow,
        interrupted,
        reasons,
    }
}

/// The human report printed at the end of `run` (stderr keeps stdout for
/// the event stream).
pub fn human(r: &RunReport) -> String {
    let mut out = vec!["--- run report ---".to_string()];
    if let Some(c) = &r.command {
        let how = match (c.exit_code, c.signal) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "ended abnormally".into(),
        };
        out.push(format!(
            "command:    {} ({how} at {:.3}s)",
            crate::output::escape(&c.argv.join(" ")),
            c.exited_ns as f64 / 1e9
        ));
    }
    out.push(format!(
        "namespaces: {} created, {} torn down{}",
        r.namespaces.len(),
        r.namespaces
            .iter()
            .filter(|n| n.teardown != TeardownSeen::NotSeen)
            .count(),
        if r.settled {
            String::new()
        } else {
            format!(" (gave up after --settle {:.1}s)", r.settle_ns as f64 / 1e9)
        }
    ));
    for n in &r.namespaces {
        let td = match (n.teardown, n.teardown_ns) {
            (TeardownSeen::NotSeen, _) => "NOT torn down".to_string(),
            (seen, Some(t)) => format!(
                "torn down in {}{}",
                crate::output::fmt_duration(t),
                if seen == TeardownSeen::Inferred {
                    " (inferred: degraded mode)"
                } else {
                    ""
                }
            ),
            (_, None) => "torn down".into(),
        };
        out.push(format!(
            "  netns {} by pid {} ({}): {td}",
            n.netns,
            n.creator_pid,
            crate::output::escape(&n.creator_comm)
        ));
        for d in &n.devices {
            out.push(format!(
                "    {} waited {:.2}s, usage count up to {}, {}; {} holder(s) named, unattributed {}",
                crate::output::escape(&d.device),
                d.waited_ns as f64 / 1e9,
                d.max_usage_count,
                if d.released { "released" } else { "STILL WAITING" },
                d.holders.len(),
                d.unattributed
            ));
        }
    }
    if r.kernel.degraded {
        out.push(
            "note:       degraded mode: teardowns are inferred and device waits are not seen"
                .into(),
        );
    }
    for reason in &r.verdict.reasons {
        out.push(format!("finding:    {reason}"));
    }
    out.push(format!("exit status {}", r.verdict.exit_code));
    out.join("\n")
}

fn secs3<S: serde::Serializer>(ns: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((*ns as f64 / 1e6).round() / 1e3)
}

fn opt_us<S: serde::Serializer>(ns: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match ns {
        Some(ns) => s.serialize_u64(ns / 1000),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{CleanupNetRec, DevWaitRec, NetnsCreateRec, NetnsDestroyRec};

    const S: u64 = 1_000_000_000;

    fn create(t: u64, netns: u32) -> Record {
        Record::NetnsCreate(NetnsCreateRec {
            container: crate::output::Container::Off,
            time_ns: t,
            wall_ns: 1_714_566_896_000_000_000 + t,
            netns,
            net: 0xffff888000001000,
            pid: 50,
            tgid: 50,
            comm: "unshare".into(),
            flags: 0x4000_0000,
            clone_newnet: true,
            duration_ns: Some(300_000),
            err: 0,
            source: "copy_net_ns",
        })
    }

    fn destroy(t: u64, netns: u32) -> Record {
        Record::NetnsDestroy(NetnsDestroyRec {
            container: crate::output::Container::Off,
            time_ns: t,
            netns,
            pid: 50,
            comm: "unshare".into(),
        })
    }

    fn cleanup(t: u64, start: bool, netns: Vec<u32>, teardown: Vec<Option<u64>>) -> Record {
        Record::CleanupNet(CleanupNetRec {
            containers: None,
            time_ns: t,
            phase: if start { "start" } else { "end" },
            duration_ns: (!start).then_some(None),
            netns,
            teardown_ns: (!start).then_some(teardown),
            pid: 9,
            comm: "kworker/u8:1".into(),
        })
    }

    fn wait(t: u64, netns: u32, count: i32, waiting: u64, released: bool) -> Record {
        let r = DevWaitRec {
            container: crate::output::Container::Off,
            time_ns: t,
            netns,
            device: "lo".into(),
            ifindex: 1,
            refcnt: count,
            usage_count: count,
            usage_count_at: None,
            waiting_ns: waiting,
            wait_since: "run_todo",
            dev: 0xffff888003f00000,
            pid: 9,
            comm: "kworker/u8:1".into(),
            holders: vec![],
            attributed: 0,
            unattributed: count - 1,
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

    fn exited(code: i32, at: u64) -> CommandOutcome {
        CommandOutcome {
            argv: vec!["./repro.sh".into()],
            exit_code: Some(code),
            signal: None,
            exited_ns: at,
        }
    }

    fn kernel() -> KernelInfo {
        KernelInfo {
            release: "6.12.111+deb12-cloud-amd64".into(),
            degraded: false,
            reasons: vec![],
        }
    }

    fn finish(b: ReportBuilder, policy: Policy) -> RunReport {
        b.finish(
            "0.1.0 (abc)",
            kernel(),
            Duration::from_secs(30),
            policy,
            false,
        )
    }

    /// Exact mode: a namespace whose lo waits 3 s, then is released and
    /// the batch ends; the whole timeline is in the document.
    #[test]
    fn observed_teardown_with_a_waiting_device() {
        let mut b = ReportBuilder::new(true);
        b.observe(&create(S, 7));
        b.command_exited(exited(0, 2 * S));
        assert!(!b.settled(), "namespace 7 not torn down yet");
        b.observe(&destroy(2 * S, 7));
        b.observe(&cleanup(2 * S + 1000, true, vec![7], vec![]));
        b.observe(&wait(3 * S, 7, 2, S, false));
        b.observe(&wait(4 * S, 7, 3, 2 * S, false));
        assert!(!b.settled(), "lo still waiting");
        b.observe(&wait(5 * S, 7, 1, 3 * S, true));
        b.observe(&cleanup(
            5 * S + 5000,
            false,
            vec![7],
            vec![Some(3 * S + 5000)],
        ));
        assert!(b.settled());
        let r = finish(b, Policy::default());
        assert!(r.settled);
        let n = &r.namespaces[0];
        assert_eq!(n.teardown, TeardownSeen::Observed);
        assert_eq!(n.teardown_ns, Some(3 * S + 5000));
        let events: Vec<&str> = n.timeline.iter().map(|t| t.event).collect();
        assert_eq!(
            events,
            [
                "created",
                "destroy_queued",
                "cleanup_start",
                "dev_wait",
                "dev_released",
                "cleanup_end"
            ]
        );
        let d = &n.devices[0];
        assert_eq!(
            (d.max_usage_count, d.waited_ns, d.released),
            (3, 3 * S, true)
        );
        assert_eq!(d.unattributed, 2, "from the last report while waiting");
        assert_eq!(r.verdict.exit_code, exit::OK);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["type"], "run_report");
        assert_eq!(json["namespaces"][0]["teardown"], "observed");
        assert_eq!(json["namespaces"][0]["teardown_us"], 3_000_005);
        assert_eq!(json["namespaces"][0]["copy_net_ns_us"], 300);
        assert_eq!(json["namespaces"][0]["devices"][0]["waited_s"], 3.0);
        assert_eq!(json["command"]["exit_code"], 0);
        assert_eq!(json["verdict"]["exit_code"], 0);
        // The same policy with a 2 s limit: slow teardown.
        let slow = verdict(
            r.command.as_ref(),
            &r.namespaces,
            Policy {
                fail_on_leak: true,
                max_teardown: Some(Duration::from_secs(2)),
            },
            false,
        );
        assert_eq!(slow.exit_code, exit::SLOW_TEARDOWN);
        assert!(slow.slow_teardown && !slow.leak);
        assert_eq!(slow.reasons.len(), 2, "{:?}", slow.reasons);
    }

    #[test]
    fn leak_when_a_device_is_still_waiting() {
        let mut b = ReportBuilder::new(true);
        b.observe(&create(S, 7));
        b.observe(&destroy(2 * S, 7));
        b.observe(&cleanup(2 * S, true, vec![7], vec![]));
        b.observe(&wait(3 * S, 7, 2, S, false));
        b.command_exited(exited(0, 2 * S));
        assert!(!b.settled());
        let leak = Policy {
            fail_on_leak: true,
            max_teardown: None,
        };
        let r = finish(b, leak);
        assert!(!r.settled);
        assert_eq!(r.namespaces[0].teardown, TeardownSeen::NotSeen);
        assert_eq!(r.verdict.exit_code, exit::LEAK);
        assert!(r.verdict.leak);
        assert_eq!(
            r.verdict.reasons,
            [
                "netns 7 was not torn down",
                "lo of netns 7 is still waiting to become free (usage count 2, 1.0s)"
            ]
        );
        // Without --fail-on-leak the leak is reported, the status is 0.
        let lenient = verdict(r.command.as_ref(), &r.namespaces, Policy::default(), false);
        assert!(lenient.leak);
        assert_eq!(lenient.exit_code, exit::OK);
    }

    #[test]
    fn exit_status_priority() {
        let ns_leaked = |slow: bool| NamespaceReport {
            netns: 1,
            created_ns: 0,
            created_wall: String::new(),
            creator_pid: 1,
            creator_comm: "x".into(),
            source: "copy_net_ns",
            copy_net_ns_ns: None,
            teardown: if slow {
                TeardownSeen::Observed
            } else {
                TeardownSeen::NotSeen
            },
            teardown_ns: slow.then_some(10 * S),
            timeline: vec![],
            devices: vec![],
        };
        let all = Policy {
            fail_on_leak: true,
            max_teardown: Some(Duration::from_secs(1)),
        };
        let failed = exited(3, S);
        let ok = exited(0, S);
        let v = |c: &CommandOutcome, ns: &[NamespaceReport], p: Policy| {
            verdict(Some(c), ns, p, false).exit_code
        };
        assert_eq!(v(&failed, &[ns_leaked(false)], all), exit::LEAK);
        assert_eq!(v(&failed, &[ns_leaked(true)], all), exit::SLOW_TEARDOWN);
        assert_eq!(v(&failed, &[], all), exit::COMMAND_FAILED);
        assert_eq!(v(&ok, &[], all), exit::OK);
        assert_eq!(v(&ok, &[ns_leaked(true)], Policy::default()), exit::OK);
        let killed = CommandOutcome {
            exit_code: None,
            signal: Some(9),
            ..exited(0, S)
        };
        let vk = verdict(Some(&killed), &[], all, false);
        assert_eq!(vk.exit_code, exit::COMMAND_FAILED);
        assert_eq!(vk.reasons, ["the command was killed by signal 9"]);
        assert_eq!(
            verdict(Some(&ok), &[ns_leaked(false)], all, true).exit_code,
            exit::INTERRUPTED
        );
        // All the codes differ from each other and from the tracer's own.
        let mut codes = [
            exit::OK,
            exit::ERROR,
            exit::USAGE,
            exit::DOCTOR_DEGRADED,
            exit::COMMAND_FAILED,
            exit::LEAK,
            exit::SLOW_TEARDOWN,
            exit::INTERRUPTED,
        ];
        codes.sort_unstable();
        assert!(codes.windows(2).all(|w| w[0] != w[1]));
    }

    /// Degraded mode: no destroy events, batches name nothing. A batch
    /// that ran entirely before the command exited proves nothing; one that
    /// started after the creation and ended after the exit is taken.
    #[test]
    fn inferred_teardown_in_degraded_mode() {
        let mut b = ReportBuilder::new(false);
        b.observe(&cleanup(S / 2, true, vec![], vec![]));
        b.observe(&create(S, 7));
        b.observe(&cleanup(S + 10, false, vec![], vec![]));
        b.observe(&cleanup(2 * S, true, vec![], vec![]));
        b.observe(&cleanup(2 * S + 100, false, vec![], vec![]));
        b.command_exited(exited(0, 3 * S));
        assert!(!b.settled(), "batches before the exit do not count");
        // This batch started (just) before the exit was noticed: counts.
        b.observe(&cleanup(3 * S - 1000, true, vec![], vec![]));
        b.observe(&cleanup(3 * S + 20_000_000, false, vec![], vec![]));
        assert!(b.settled());
        let r = finish(b, Policy::default());
        let n = &r.namespaces[0];
        assert_eq!(n.teardown, TeardownSeen::Inferred);
        assert_eq!(n.teardown_ns, Some(20_001_000));
        assert_eq!(n.timeline.last().unwrap().event, "cleanup_end");
        let text = human(&r);
        assert!(text.contains("(inferred: degraded mode)"), "{text}");
    }

    #[test]
    fn failed_and_duplicate_creates_are_not_namespaces() {
        let mut b = ReportBuilder::new(true);
        let Record::NetnsCreate(mut bad) = create(S, 0) else {
            panic!()
        };
        bad.err = -12;
        b.observe(&Record::NetnsCreate(bad));
        b.observe(&create(S, 8));
        b.observe(&create(S, 8));
        b.command_exited(exited(0, 2 * S));
        let r = finish(b, Policy::default());
        assert_eq!(r.namespaces.len(), 1);
        assert_eq!(r.namespaces[0].timeline.len(), 1);
    }
}
