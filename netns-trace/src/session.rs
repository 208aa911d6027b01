//! The tracing session as a pure state machine: decoded events in, output
//! records out, and the summary at the end.
//!
//! It remembers who created each namespace (a dying namespace has left
//! /proc, so the create event is the only witness), which namespaces are
//! queued for `cleanup_net`, which batch each belongs to, and which
//! devices are waiting to become free.

use std::collections::HashMap;

use netns_trace_common::{create_source, dev_wait_flags, phase, tracker_op, DevWait, Header};

use crate::events::{cstr_lossy, decode, Event};
use crate::exact::{Armed, CallPath, Evicted, ExactLedger, Source, Via};
use crate::idmap::{IdMap, IdSet};
use crate::ledger::{Ledger, SocketInfo};
use crate::output::{
    BlockedRec, BpfProgStat, CleanupNetRec, Container, DevWaitRec, ExactRec, HolderRec,
    IncidentRec, LostCounts, LostRec, NetnsCreateRec, NetnsDestroyRec, Record, RtnlUnlockRec,
    ScanRec, SiteRec, SocketBrief, SocketRec, StillWaiting, SummaryRec, TableScan, WatchRec,
    WatchState,
};
use netns_trace_common::WatchTarget;

const CLONE_NEWNET: u64 = 0x4000_0000;

#[derive(Debug, Default)]
pub struct SessionConfig {
    /// `bpf_ktime_get_ns()` clock (CLOCK_MONOTONIC) at tracer start.
    pub start_ktime_ns: u64,
    /// Wall clock at the same instant, Unix nanoseconds.
    pub start_unix_ns: u64,
    /// `--netns` inodes.
    pub netns: Vec<u32>,
    /// `--pid` values.
    pub pids: Vec<u32>,
    /// The device's own reference: 1 since 5.13, 0 before.
    pub baseline: i32,
    /// TCP state names from the kernel's BTF (`ESTABLISHED`, ...).
    pub tcp_states: HashMap<u8, String>,
}

/// Turns a kernel stack id into symbolised frames (the loader's map).
/// Kernel stacks by id (the loader's `STACKS` map and kallsyms).
pub trait Stacks {
    /// `function+0xoff [module]` frames, leaf first.
    fn frames(&mut self, id: i32) -> Vec<String>;
    /// Start addresses of the stack's functions, leaf first (empty when
    /// unknown): what `--exact` pairs releases with holds by.
    fn call_path(&mut self, id: i32) -> CallPath;
    /// Raw return addresses (a task's stack), symbolised like `frames`.
    fn symbolize(&mut self, ips: &[u64]) -> Vec<String>;
    /// Names stack `id` as soon as the resolver can (see
    /// `Session::warm_stack`); a resolver still reading its symbol table
    /// may do it once the table is there instead of waiting for it.
    fn warm(&mut self, id: i32) {
        let _ = self.frames(id);
    }
    /// Naming a frame now would wait for the symbol table to be read.
    fn loading(&self) -> bool {
        false
    }
}

pub struct StackResolver(pub Box<dyn Stacks>);

impl std::fmt::Debug for StackResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StackResolver")
    }
}

#[derive(Debug)]
struct Namespace {
    destroy_ns: Option<u64>,
}

#[derive(Debug)]
struct Batch {
    start_ns: u64,
    netns: Vec<u32>,
}

#[derive(Debug)]
struct Device {
    name: String,
    netns: u32,
    refcnt: i32,
    since_ns: u64,
    /// The task in the wait loop; the end of its `rtnl_unlock`
    /// (`netdev_run_todo`) releases the device.
    pid: u32,
    /// Holders last shown in the human block (objects' addresses).
    shown: Vec<u64>,
    /// The last report from the kernel, to report again after a scan.
    last: DevWait,
}

#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    /// None: no filter. Else the namespaces in scope, growing as in-scope
    /// tasks create namespaces.
    scope: Option<IdSet<u32>>,
    namespaces: IdMap<u32, Namespace>,
    /// Destroyed, waiting for the next `cleanup_net` start.
    queued: Vec<u32>,
    /// Running batches by kworker tid.
    batches: IdMap<u32, Batch>,
    devices: IdMap<u64, Device>,
    created: u64,
    destroyed: u64,
    cleanup_batches: u64,
    slowest: Option<(u64, u32)>,
    decode_errors: u64,
    events_read: u64,
    ring_wakeups: u64,
    bpf_programs: Option<Vec<BpfProgStat>>,
    lost_reported: LostCounts,
    ledger: Ledger,
    exact: ExactLedger,
    resolver: Option<StackResolver>,
    /// A device was first found stuck since the last scan.
    scan_wanted: bool,
    /// Blocked tasks last seen, by pid (for the incident view).
    blocked: HashMap<u32, BlockedRec>,
    /// Tasks walked while the symbol table was still being read: named
    /// (and so classified) once it is there (`named_blocked`).
    unnamed_blocked: Vec<netns_trace_common::BlockedTask>,
}

/// Seconds between a task's last run (`se.exec_start`) and "now" on the
/// same scheduler clock: the iterating reader's own `se.exec_start`, set
/// when it last woke or at its last tick. CLOCK_MONOTONIC
/// (`bpf_ktime_get_ns`) is not that clock: on a QEMU guest the two were
/// seen tens of ms apart, fixed per boot, so a task that had just run
/// looked to have run in the future. The reader's "now" may lag by up to
/// a tick; a task that ran within `LAG_NS` after it just ran (0 s).
/// Further ahead, or either clock unread, is unknown.
fn blocked_seconds(last_ran_ns: u64, now_sched_ns: u64) -> Option<f64> {
    const LAG_NS: u64 = 50_000_000;
    if last_ran_ns == 0 || now_sched_ns == 0 || last_ran_ns > now_sched_ns + LAG_NS {
        return None;
    }
    Some(now_sched_ns.saturating_sub(last_ran_ns) as f64 / 1e9)
}

fn comm(h: &Header) -> String {
    cstr_lossy(&h.comm)
}

impl Session {
    pub fn new(cfg: SessionConfig) -> Self {
        let filtered = !cfg.netns.is_empty() || !cfg.pids.is_empty();
        let scope = filtered.then(|| cfg.netns.iter().copied().collect());
        let ledger = Ledger::new(cfg.baseline);
        let exact = ExactLedger::new(cfg.baseline);
        Session {
            ledger,
            exact,
            resolver: None,
            scan_wanted: false,
            blocked: HashMap::new(),
            unnamed_blocked: Vec::new(),
            cfg,
            scope,
            namespaces: IdMap::default(),
            queued: Vec::new(),
            batches: IdMap::default(),
            devices: IdMap::default(),
            created: 0,
            destroyed: 0,
            cleanup_batches: 0,
            slowest: None,
            decode_errors: 0,
            events_read: 0,
            ring_wakeups: 0,
            bpf_programs: None,
            lost_reported: LostCounts::default(),
        }
    }

    /// Symbolises holder stacks in reports.
    pub fn set_stack_resolver(&mut self, resolver: StackResolver) {
        self.resolver = Some(resolver);
    }

    /// Who holds `dev` at usage count `refcnt`, as output records.
    /// Returns (holders, attributed, unattributed, over, complete).
    fn holders(&mut self, dev: u64, refcnt: i32) -> (Vec<HolderRec>, u32, i32, u32, bool) {
        let report = self.ledger.report(dev, refcnt);
        let start = self.cfg.start_ktime_ns;
        let mut out = Vec::with_capacity(report.holders.len());
        for h in report.holders {
            let stack = self.stack(h.stack_id);
            out.push(HolderRec {
                kind: h.kind,
                obj: h.obj,
                address: h.address,
                family: h.family,
                created_ns: (h.created_ns >= start).then(|| h.created_ns - start),
                pid: h.pid,
                comm: h.comm,
                stack,
                found_by: h.found_by,
                socket: h.socket.map(|s| self.socket_brief(&s)),
            });
        }
        (
            out,
            report.attributed,
            report.unattributed,
            report.over,
            report.complete,
        )
    }

    /// The tasks walked while the symbol table was read, named now (waiting
    /// for the table if `wait`, else only once it is there).
    pub fn named_blocked(&mut self, wait: bool) -> Vec<Record> {
        if self.unnamed_blocked.is_empty() || (!wait && self.symbols_loading()) {
            return Vec::new();
        }
        std::mem::take(&mut self.unnamed_blocked)
            .into_iter()
            .filter_map(|t| self.blocked_task(t))
            .collect()
    }

    fn blocked_task(&mut self, t: netns_trace_common::BlockedTask) -> Option<Record> {
        let ips = &t.ips[..(t.nr as usize).min(t.ips.len())];
        let stack = match &mut self.resolver {
            Some(r) => r.0.symbolize(ips),
            None => Vec::new(),
        };
        let reason = crate::blocked::classify(&stack)?;
        let blocked_s = blocked_seconds(t.last_ran_ns, t.seen_sched_ns);
        let rec = BlockedRec {
            time_ns: self.rel(t.hdr.ts_ns),
            pid: t.hdr.pid,
            tgid: t.hdr.tgid,
            comm: comm(&t.hdr),
            reason,
            blocked_s,
            stack,
        };
        self.blocked.insert(rec.pid, rec.clone());
        Some(Record::Blocked(rec))
    }

    /// The resolver is still reading its symbol table: a record that names
    /// a frame would wait for it (the loader then writes out what it has
    /// first).
    pub fn symbols_loading(&self) -> bool {
        self.resolver.as_ref().is_some_and(|r| r.0.loading())
    }

    /// Symbolises a stack as soon as its event arrives; the resolver keeps
    /// the names. Done later (at report time) a module's init code may be
    /// gone from /proc/kallsyms and its address reused, e.g. by a BPF
    /// program loaded since, and the frame would be named wrongly.
    fn warm_stack(&mut self, id: i32) {
        if let (Some(r), true) = (&mut self.resolver, id >= 0) {
            r.0.warm(id);
        }
    }

    /// The call path of stack `id` (empty when unknown).
    fn call_path(&mut self, id: i32) -> CallPath {
        match (&mut self.resolver, id >= 0) {
            (Some(r), true) => r.0.call_path(id),
            _ => CallPath::from([]),
        }
    }

    fn stack(&mut self, id: i32) -> Vec<String> {
        match (&mut self.resolver, id >= 0) {
            (Some(r), true) => r.0.frames(id),
            _ => Vec::new(),
        }
    }

    /// The watchpoint ledger of `dev`, stacks symbolised.
    fn exact_report(&mut self, dev: u64) -> Option<ExactRec> {
        let r = self.exact.report(dev)?;
        let mut site = |s: &crate::exact::Site| SiteRec {
            holds: s.holds,
            last_ns: self.rel(s.last_ns),
            comm: s.comm.clone(),
            pid: s.pid,
            stack: self.stack(s.stack_id),
        };
        let hold_sites = r.hold_sites.iter().map(&mut site).collect();
        let last_release = r.last_release.as_ref().map(&mut site);
        Some(ExactRec {
            source: r.source.as_str(),
            outstanding: r.outstanding,
            pre_arm: r.pre_arm,
            pre_arm_left: r.pre_arm_left,
            hold_sites,
            unknown_writes: r.unknown_writes,
            lost_writes: r.lost_writes,
            unpaired_releases: r.unpaired_releases,
            last_release,
            kernel_disagrees: r.kernel_disagrees,
        })
    }

    fn watch_rec(&self, ts_ns: u64, dev: u64, inum: u32, name: &[u8], state: WatchState) -> Record {
        self.watch_rec_from(Source::Watchpoints, ts_ns, dev, inum, name, state)
    }

    fn watch_rec_from(
        &self,
        source: Source,
        ts_ns: u64,
        dev: u64,
        inum: u32,
        name: &[u8],
        state: WatchState,
    ) -> Record {
        Record::Watch(WatchRec {
            time_ns: self.rel(ts_ns),
            netns: inum,
            device: cstr_lossy(name),
            dev,
            source: source.as_str(),
            state,
        })
    }

    /// The loader armed a device's watchpoints and read its counters (the
    /// seed, where counting starts), or could not: the record says which.
    pub fn on_watch_armed(&mut self, t: &WatchTarget, armed: &Armed) -> Option<Record> {
        match armed {
            Armed::Now { seed, at_ns, via } => {
                self.exact.on_armed(t);
                let pre_arm = self.exact.on_seed(t.dev, seed)?;
                let (via, reason) = match via {
                    Via::Bpf => ("bpf", None),
                    Via::PerfRing(why) => ("perf_ring", Some(why.clone())),
                };
                Some(self.watch_rec(
                    *at_ns,
                    t.dev,
                    t.inum,
                    &t.name,
                    WatchState::Armed {
                        cpus: seed.len() as u32,
                        pre_arm,
                        via,
                        reason,
                    },
                ))
            }
            Armed::Already => None,
            Armed::Refused(why) => Some(self.watch_rec(
                t.hdr.ts_ns,
                t.dev,
                t.inum,
                &t.name,
                WatchState::Unavailable {
                    reason: why.clone(),
                },
            )),
        }
    }

    /// `n` writes to the watched counter at `addr` were lost before the
    /// loader could read them (perf ring fallback).
    pub fn on_watch_lost(&mut self, addr: u64, n: u64) {
        self.exact.on_lost(addr, n);
    }

    /// The loader closed a device's watchpoints to watch a stuck one.
    pub fn on_watch_evicted(&mut self, e: &Evicted, by: &WatchTarget) -> Record {
        self.exact.forget(e.dev);
        let reason = format!(
            "budget: watchpoints moved to stuck {} of netns {}",
            cstr_lossy(&by.name),
            by.inum
        );
        self.watch_rec(
            by.hdr.ts_ns,
            e.dev,
            e.inum,
            &e.name,
            WatchState::Evicted { reason },
        )
    }

    /// Should the loader scan for holders now (a device newly stuck)?
    pub fn take_scan_request(&mut self) -> bool {
        std::mem::take(&mut self.scan_wanted)
    }

    /// The record of a holder scan (`tables`), or of why none was possible.
    pub fn scan_record(
        &self,
        now_ktime_ns: u64,
        tables: Vec<TableScan>,
        unavailable: Option<String>,
        not_scanned: &[&'static str],
    ) -> Record {
        let mut devices: Vec<String> = self
            .devices
            .values()
            .map(|d| format!("{} of netns {}", d.name, d.netns))
            .collect();
        devices.sort();
        Record::Scan(ScanRec {
            time_ns: self.rel(now_ktime_ns),
            devices,
            tables,
            not_scanned: not_scanned.to_vec(),
            unavailable,
        })
    }

    /// Reports every waiting device again, now, with what the ledger knows
    /// (after a scan added holders), without waiting for the kernel's next
    /// poll of the wait loop. The usage count is the kernel's last
    /// reading, said as such (`usage_count_at`); the ledgers are current.
    pub fn refresh(&mut self, now_ktime_ns: u64) -> Vec<Record> {
        let mut lasts: Vec<DevWait> = self.devices.values().map(|d| d.last).collect();
        lasts.sort_by_key(|e| e.dev);
        lasts
            .into_iter()
            .filter_map(|mut e| {
                let read = e.hdr.ts_ns;
                e.hdr.ts_ns = now_ktime_ns.max(read);
                self.dev_wait(e, Some(read))
            })
            .collect()
    }

    /// One wait-loop report of `e.dev`. `replayed`: the kernel's reading
    /// is not new but repeated by [`Session::refresh`], at the time given
    /// (ktime ns) of the report it comes from: its count is not compared
    /// with the ledger again (the ledger may have moved since) and the
    /// record says when the kernel read it.
    fn dev_wait(&mut self, e: DevWait, replayed: Option<u64>) -> Option<Record> {
        if !self.in_scope(e.inum) {
            return None;
        }
        let exact = e.flags & dev_wait_flags::RUN_TODO_SEEN != 0 && e.wait_start_ns != 0;
        let since = if exact {
            e.wait_start_ns
        } else {
            e.first_seen_ns
        };
        let name = cstr_lossy(&e.name);
        // On release the count is back at the baseline: whatever
        // the ledger still lists cannot be holding (reported as
        // none; the ledger then drops it as stale).
        let (holders, attributed, unattributed, over, complete) = self.holders(e.dev, e.refcnt);
        let released = e.flags & dev_wait_flags::RELEASED != 0;
        // The kernel's own sum checks the watchpoints' count.
        let kernel = i64::from(e.refcnt) - i64::from(self.cfg.baseline);
        if replayed.is_none() {
            self.exact.check_kernel(e.dev, kernel, released);
        }
        let exact_rec = self.exact_report(e.dev);
        let ids: Vec<u64> = holders.iter().map(|h| h.obj).collect();
        let block = self.devices.get(&e.dev).is_none_or(|d| d.shown != ids);
        // First sighting of a stuck device: its older holders can
        // only be found by walking kernel tables.
        if !self.devices.contains_key(&e.dev) && !released {
            self.scan_wanted = true;
        }
        let rec = DevWaitRec {
            holders,
            attributed,
            unattributed,
            over,
            complete,
            exact: exact_rec,
            container: Container::Off,
            block,
            baseline: self.cfg.baseline,
            time_ns: self.rel(e.hdr.ts_ns),
            netns: e.inum,
            device: name.clone(),
            ifindex: e.ifindex,
            refcnt: e.refcnt,
            usage_count: e.refcnt,
            usage_count_at: replayed.map(|t| self.rel(t)),
            waiting_ns: e.hdr.ts_ns.saturating_sub(since),
            wait_since: if exact { "run_todo" } else { "first_seen" },
            dev: e.dev,
            pid: e.hdr.pid,
            comm: comm(&e.hdr),
        };
        if released {
            // The last reference outside the device itself is gone.
            self.devices.remove(&e.dev);
            self.ledger.on_device_freed(e.dev);
            return Some(Record::DevReleased(rec));
        }
        self.devices.insert(
            e.dev,
            Device {
                name,
                netns: e.inum,
                refcnt: e.refcnt,
                since_ns: since,
                pid: e.hdr.pid,
                shown: ids,
                // A replay keeps the time of the kernel's reading.
                last: DevWait {
                    hdr: Header {
                        ts_ns: replayed.unwrap_or(e.hdr.ts_ns),
                        ..e.hdr
                    },
                    ..e
                },
            },
        );
        Some(Record::DevWait(rec))
    }

    /// The incident view: every stuck device reported afresh (holders
    /// included) and the blocked tasks last seen.
    pub fn incident(&mut self, now_ktime_ns: u64) -> Record {
        let stuck = self
            .refresh(now_ktime_ns)
            .into_iter()
            .filter_map(|r| match r {
                Record::DevWait(mut d) => {
                    d.block = true;
                    Some(d)
                }
                _ => None,
            })
            .collect();
        let mut blocked: Vec<BlockedRec> = self.blocked.values().cloned().collect();
        blocked.sort_by_key(|b| b.pid);
        Record::Incident(IncidentRec {
            time_ns: self.rel(now_ktime_ns),
            stuck,
            blocked,
        })
    }

    /// Is `dev` watched?
    pub fn is_watched(&self, dev: u64) -> bool {
        self.exact.is_watched(dev)
    }

    fn state_name(&self, state: u8) -> String {
        self.cfg
            .tcp_states
            .get(&state)
            .cloned()
            .unwrap_or_else(|| state.to_string())
    }

    fn socket_brief(&self, s: &SocketInfo) -> SocketBrief {
        SocketBrief {
            sk: s.sk,
            saddr: s.saddr.clone(),
            sport: s.sport,
            daddr: s.daddr.clone(),
            dport: s.dport,
            state: self.state_name(s.state),
            kernel: s.kernel,
        }
    }

    /// Devices that stopped waiting because their waiter finished: they
    /// are freed, so the ledger drops what it still lists on them.
    fn forget_devices(&mut self, freed: impl Fn(&Device) -> bool) {
        let gone: Vec<u64> = self
            .devices
            .iter()
            .filter(|(_, d)| freed(d))
            .map(|(&dev, _)| dev)
            .collect();
        for dev in gone {
            self.devices.remove(&dev);
            self.ledger.on_device_freed(dev);
        }
    }

    fn rel(&self, ts: u64) -> u64 {
        ts.saturating_sub(self.cfg.start_ktime_ns)
    }

    pub fn in_scope(&self, netns: u32) -> bool {
        self.scope.as_ref().is_none_or(|s| s.contains(&netns))
    }

    /// Malformed records seen by [`Session::on_bytes`].
    /// One ring-buffer record was read (counted for `summary.events_read`,
    /// including those consumed outside the session, e.g. watch requests).
    pub fn note_read(&mut self) {
        self.events_read += 1;
    }

    /// Ring-buffer records read so far.
    pub fn events_read(&self) -> u64 {
        self.events_read
    }

    /// The reader woke up to drain the ring (`summary.ring_wakeups`).
    pub fn note_wakeup(&mut self) {
        self.ring_wakeups += 1;
    }

    /// `--bpf-stats`: the per-program costs for the summary.
    pub fn set_bpf_stats(&mut self, stats: Vec<BpfProgStat>) {
        self.bpf_programs = Some(stats);
    }

    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Decode and consume one ring-buffer record; a malformed one is
    /// counted (reported through the next `lost` record), not fatal.
    pub fn on_bytes(&mut self, buf: &[u8]) -> Option<Record> {
        match decode(buf) {
            Ok(ev) => self.on_event(ev),
            Err(_) => {
                self.decode_errors += 1;
                None
            }
        }
    }

    /// Consume one event; returns the record to print, if any.
    pub fn on_event(&mut self, ev: Event) -> Option<Record> {
        match ev {
            Event::NetnsCreate(e) => {
                // Out-of-scope creates are dropped. With --pid, the kernel
                // knows the descendants and filtered already; userspace
                // cannot check descent, so it trusts that and widens scope.
                let by_pid = !self.cfg.pids.is_empty();
                if !by_pid && !self.in_scope(e.inum) {
                    return None;
                }
                if e.err == 0 && e.inum != 0 {
                    if let Some(s) = &mut self.scope {
                        s.insert(e.inum);
                    }
                    self.namespaces
                        .insert(e.inum, Namespace { destroy_ns: None });
                    self.created += 1;
                }
                let source = match e.source {
                    create_source::UNSHARE => "unshare",
                    create_source::FORK => "fork",
                    _ => "copy_net_ns",
                };
                Some(Record::NetnsCreate(NetnsCreateRec {
                    time_ns: self.rel(e.hdr.ts_ns),
                    wall_ns: self.cfg.start_unix_ns + self.rel(e.hdr.ts_ns),
                    netns: e.inum,
                    net: e.net,
                    pid: e.hdr.pid,
                    tgid: e.hdr.tgid,
                    comm: comm(&e.hdr),
                    flags: e.flags,
                    clone_newnet: e.flags & CLONE_NEWNET != 0,
                    duration_ns: (e.duration_ns != 0).then_some(e.duration_ns),
                    err: e.err,
                    source,
                    container: Container::Off,
                }))
            }
            Event::NetnsDestroy(e) => {
                if !self.in_scope(e.inum) {
                    return None;
                }
                // Created before we started: unknown creator, still tracked.
                let ns = self
                    .namespaces
                    .entry(e.inum)
                    .or_insert(Namespace { destroy_ns: None });
                ns.destroy_ns = Some(e.hdr.ts_ns);
                self.queued.push(e.inum);
                self.destroyed += 1;
                Some(Record::NetnsDestroy(NetnsDestroyRec {
                    time_ns: self.rel(e.hdr.ts_ns),
                    netns: e.inum,
                    pid: e.hdr.pid,
                    comm: comm(&e.hdr),
                    container: Container::Off,
                }))
            }
            Event::CleanupNet(e) if e.phase == phase::START => {
                // cleanup_net takes the whole cleanup list at its start, so
                // the batch is everything destroyed since the last start.
                let netns = std::mem::take(&mut self.queued);
                let rec = CleanupNetRec {
                    time_ns: self.rel(e.hdr.ts_ns),
                    phase: "start",
                    duration_ns: None,
                    netns: netns.clone(),
                    teardown_ns: None,
                    pid: e.hdr.pid,
                    comm: comm(&e.hdr),
                    containers: None,
                };
                let show = self.scope.is_none() || !netns.is_empty();
                self.batches.insert(
                    e.hdr.pid,
                    Batch {
                        start_ns: e.hdr.ts_ns,
                        netns,
                    },
                );
                show.then_some(Record::CleanupNet(rec))
            }
            Event::CleanupNet(e) => {
                let end = e.hdr.ts_ns;
                let batch = self.batches.remove(&e.hdr.pid);
                let duration = match (e.duration_ns, &batch) {
                    (0, Some(b)) => Some(end.saturating_sub(b.start_ns)),
                    (0, None) => None,
                    (d, _) => Some(d),
                };
                let netns = batch.map(|b| b.netns).unwrap_or_default();
                let mut teardown = Vec::with_capacity(netns.len());
                for n in &netns {
                    let t = self
                        .namespaces
                        .remove(n)
                        .and_then(|ns| ns.destroy_ns)
                        .map(|d| end.saturating_sub(d));
                    if let Some(t) = t {
                        if self.slowest.is_none_or(|(s, _)| t > s) {
                            self.slowest = Some((t, *n));
                        }
                    }
                    teardown.push(t);
                }
                // The batch's devices were freed: cleanup_net returned.
                self.forget_devices(|d| netns.contains(&d.netns));
                self.cleanup_batches += 1;
                let show = self.scope.is_none() || !netns.is_empty();
                show.then(|| {
                    Record::CleanupNet(CleanupNetRec {
                        time_ns: self.rel(end),
                        phase: "end",
                        duration_ns: Some(duration),
                        netns,
                        teardown_ns: Some(teardown),
                        pid: e.hdr.pid,
                        comm: comm(&e.hdr),
                        containers: None,
                    })
                })
            }
            // rtnl_unlock is global (no namespace): never filtered. It is
            // timed on netdev_run_todo: its end also frees the devices the
            // task was waiting for.
            Event::RtnlUnlock(e) => {
                self.forget_devices(|d| d.pid == e.hdr.pid);
                Some(Record::RtnlUnlock(RtnlUnlockRec {
                    time_ns: self.rel(e.hdr.ts_ns),
                    duration_ns: e.duration_ns,
                    // The loader's one symbol table lives in its resolver.
                    // 0: the probe could not see the caller (rtnl.rs).
                    caller: (e.caller != 0).then(|| {
                        self.resolver
                            .as_mut()
                            .and_then(|r| r.0.symbolize(&[e.caller]).pop())
                            .unwrap_or_else(|| format!("{:#x}", e.caller))
                    }),
                    caller_addr: e.caller,
                    pid: e.hdr.pid,
                    comm: comm(&e.hdr),
                }))
            }
            Event::DevWait(e) => self.dev_wait(e, None),
            // Arming is the loader's (on_watch_armed); a target reaching
            // here was not armed.
            Event::WatchTarget(_) => None,
            Event::BlockedTask(t) => {
                // Behind older unnamed ones too: named out of order, an old
                // snapshot of a task would replace its newer one.
                if self.symbols_loading() || !self.unnamed_blocked.is_empty() {
                    self.unnamed_blocked.push(*t);
                    return None;
                }
                self.blocked_task(*t)
            }
            Event::WatchDone(d) => {
                // Freed: the loader closed the watchpoints. Only a device
                // this session watched is reported.
                let (inum, name) = self.exact.forget(d.dev)?;
                Some(self.watch_rec(d.hdr.ts_ns, d.dev, inum, &name, WatchState::Disarmed))
            }
            Event::TrackerStart(t) => {
                // A new lo counted through ref_tracker from its creation:
                // the `watch` record says so (no CPUs, no budget).
                let pre_arm = self.exact.on_tracker_start(&t);
                Some(self.watch_rec_from(
                    Source::RefTracker,
                    t.hdr.ts_ns,
                    t.dev,
                    t.inum,
                    &t.name,
                    WatchState::Armed {
                        cpus: 0,
                        pre_arm,
                        via: "bpf",
                        reason: None,
                    },
                ))
            }
            Event::TrackerCall(c) if c.op == tracker_op::EXIT => {
                // The device is being freed.
                let (inum, name) = self.exact.forget(c.dev)?;
                Some(self.watch_rec_from(
                    Source::RefTracker,
                    c.hdr.ts_ns,
                    c.dev,
                    inum,
                    &name,
                    WatchState::Disarmed,
                ))
            }
            Event::TrackerCall(c) => {
                let path = self.call_path(c.stack_id);
                self.warm_stack(c.stack_id);
                self.exact.on_tracker_call(&c, path);
                None
            }
            Event::WatchHit(h) => {
                log::debug!(
                    "watch hit {:#x} value {} delta {} by {} ({})",
                    h.addr,
                    h.value,
                    h.delta,
                    h.hdr.pid,
                    cstr_lossy(&h.hdr.comm)
                );
                if self.exact.watches_addr(h.addr) {
                    let path = self.call_path(h.stack_id);
                    // Named now, while the code is there (see warm_stack).
                    self.warm_stack(h.stack_id);
                    self.exact.on_hit(&h, path);
                }
                None
            }
            Event::ObjHold(e) => {
                self.warm_stack(e.stack_id);
                self.ledger.on_hold(&e);
                None
            }
            Event::ObjRelease(e) => {
                self.ledger.on_release(&e);
                None
            }
            Event::SockState(e) => {
                if !self.in_scope(e.inum) {
                    return None;
                }
                let info = self.ledger.on_sock(&e);
                let dst_dev = (e.dst_dev != 0).then(|| cstr_lossy(&e.dst_dev_name));
                Some(Record::Socket(SocketRec {
                    time_ns: self.rel(e.hdr.ts_ns),
                    netns: e.inum,
                    sk: e.sk,
                    family: if e.family == 10 { "ipv6" } else { "ipv4" },
                    protocol: if e.protocol == 6 {
                        "tcp".into()
                    } else {
                        e.protocol.to_string()
                    },
                    saddr: info.saddr,
                    sport: e.sport,
                    daddr: info.daddr,
                    dport: e.dport,
                    oldstate: self.state_name(e.oldstate),
                    newstate: self.state_name(e.newstate),
                    kernel: e.kernel != 0,
                    dst_dev,
                    pid: e.hdr.pid,
                    comm: comm(&e.hdr),
                    container: Container::Off,
                }))
            }
        }
    }

    /// Fold in the counters (kernel `STATS` summed over CPUs, plus any
    /// decode errors the caller counted itself); the session adds its own
    /// decode errors. Returns a `lost` record with the totals when any
    /// counter grew since the last one.
    pub fn on_stats(&mut self, now_ns: u64, mut counts: LostCounts) -> Option<Record> {
        counts.decode_errors += self.decode_errors;
        if counts.ringbuf_drops > 0 || counts.map_full > 0 {
            self.ledger.set_incomplete();
        }
        if !counts.increased_since(&self.lost_reported) {
            return None;
        }
        self.lost_reported = counts;
        Some(Record::Lost(LostRec {
            time_ns: self.rel(now_ns),
            counts,
        }))
    }

    /// The end-of-run summary as of `now_ns` (ktime).
    pub fn summary(&mut self, now_ns: u64) -> Record {
        let mut pending: Vec<u32> = self.queued.clone();
        pending.extend(self.batches.values().flat_map(|b| b.netns.iter().copied()));
        pending.sort_unstable();
        pending.dedup();
        let devices: Vec<(u64, u32, String, i32, u64)> = self
            .devices
            .iter()
            .map(|(&dev, d)| (dev, d.netns, d.name.clone(), d.refcnt, d.since_ns))
            .collect();
        let mut waiting: Vec<StillWaiting> = devices
            .into_iter()
            .map(|(dev, netns, device, refcnt, since)| {
                let (holders, _, unattributed, over, _) = self.holders(dev, refcnt);
                StillWaiting {
                    netns,
                    device,
                    refcnt,
                    waiting_ns: now_ns.saturating_sub(since),
                    holders,
                    unattributed,
                    over,
                    container: Container::Off,
                }
            })
            .collect();
        waiting.sort_by(|a, b| (a.netns, &a.device).cmp(&(b.netns, &b.device)));
        let mut lost = self.lost_reported;
        lost.decode_errors = lost.decode_errors.max(self.decode_errors);
        Record::Summary(SummaryRec {
            duration_ns: self.rel(now_ns),
            netns_created: self.created,
            netns_destroyed: self.destroyed,
            cleanup_batches: self.cleanup_batches,
            slowest_teardown_ns: self.slowest.map(|s| s.0),
            slowest_teardown_netns: self.slowest.map(|s| s.1),
            netns_pending: pending,
            devices_still_waiting: waiting,
            events_read: self.events_read,
            ring_wakeups: self.ring_wakeups,
            lost,
            bpf_programs: self.bpf_programs.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::{bytes_of, comm as c};
    use crate::kallsyms::Symbols;
    use crate::output::{human, json_line};
    use netns_trace_common::{
        kind, CleanupNet, DevWait, NetnsCreate, NetnsDestroy, RtnlUnlock, TrackerCall, TrackerStart,
    };

    const T0: u64 = 1_000_000_000_000;
    const S: u64 = 1_000_000_000;

    fn hdr(kind: u32, t: u64, pid: u32, name: &str) -> Header {
        Header {
            kind,
            cpu: 0,
            ts_ns: T0 + t,
            pid,
            tgid: pid,
            comm: c(name),
        }
    }

    fn create(t: u64, inum: u32, pid: u32) -> Event {
        Event::NetnsCreate(NetnsCreate {
            hdr: hdr(kind::NETNS_CREATE, t, pid, "dockerd"),
            flags: CLONE_NEWNET,
            duration_ns: 1_200_000,
            net: 0xffff888000001000,
            inum,
            ..Default::default()
        })
    }

    fn destroy(t: u64, inum: u32) -> Event {
        Event::NetnsDestroy(NetnsDestroy {
            hdr: hdr(kind::NETNS_DESTROY, t, 812, "dockerd"),
            net: 0,
            inum,
            _pad: 0,
        })
    }

    fn cleanup(t: u64, ph: u32, dur: u64) -> Event {
        Event::CleanupNet(CleanupNet {
            hdr: hdr(kind::CLEANUP_NET, t, 93, "kworker/u4:1"),
            phase: ph,
            _pad: 0,
            duration_ns: dur,
        })
    }

    fn dev_wait(t: u64, inum: u32, refcnt: i32, flags: u32, first: u64, start: u64) -> Event {
        Event::DevWait(DevWait {
            hdr: hdr(kind::DEV_WAIT, t, 93, "kworker/u4:1"),
            dev: 0xffff888003f00000,
            net: 0,
            inum,
            ifindex: 1,
            refcnt,
            flags,
            name: c("lo"),
            first_seen_ns: T0 + first,
            wait_start_ns: if start == 0 { 0 } else { T0 + start },
        })
    }

    #[test]
    fn blocked_time_tolerates_the_readers_lag_only() {
        assert_eq!(blocked_seconds(1_000_000_000, 3_500_000_000), Some(2.5));
        // Ran after the reader was last accounted (a tick's lag): just ran.
        assert_eq!(blocked_seconds(3_504_000_000, 3_500_000_000), Some(0.0));
        assert_eq!(blocked_seconds(3_550_000_000, 3_500_000_000), Some(0.0));
        // Far ahead, never ran, or no "now": unknown.
        assert_eq!(blocked_seconds(3_550_000_001, 3_500_000_000), None);
        assert_eq!(blocked_seconds(0, 3_500_000_000), None);
        assert_eq!(blocked_seconds(1_000_000_000, 0), None);
    }

    /// Symbols only (no stack map): what rtnl callers are resolved with.
    struct SymbolsOnly(Symbols);

    impl Stacks for SymbolsOnly {
        fn frames(&mut self, _id: i32) -> Vec<String> {
            Vec::new()
        }
        fn call_path(&mut self, _id: i32) -> CallPath {
            CallPath::from([])
        }
        fn symbolize(&mut self, ips: &[u64]) -> Vec<String> {
            ips.iter().map(|&ip| self.0.symbolize(ip)).collect()
        }
    }

    /// A resolver whose symbol table is still being read: counts what the
    /// session asks of it.
    #[derive(Default)]
    struct StillLoading {
        frames: std::rc::Rc<std::cell::Cell<u32>>,
        warmed: std::rc::Rc<std::cell::Cell<u32>>,
        /// Set: the table is in.
        loaded: std::rc::Rc<std::cell::Cell<bool>>,
    }

    impl Stacks for StillLoading {
        fn frames(&mut self, _id: i32) -> Vec<String> {
            self.frames.set(self.frames.get() + 1);
            Vec::new()
        }
        fn call_path(&mut self, _id: i32) -> CallPath {
            CallPath::from([])
        }
        fn symbolize(&mut self, ips: &[u64]) -> Vec<String> {
            // Naming waits for the table.
            self.loaded.set(true);
            ips.iter()
                .map(|_| "netdev_run_todo+0x2f".to_string())
                .collect()
        }
        fn warm(&mut self, _id: i32) {
            self.warmed.set(self.warmed.get() + 1);
        }
        fn loading(&self) -> bool {
            !self.loaded.get()
        }
    }

    #[test]
    fn tasks_walked_while_the_table_loads_are_named_once_it_is_in() {
        let mut s = session(vec![], vec![]);
        let r = StillLoading::default();
        let loaded = r.loaded.clone();
        s.set_stack_resolver(StackResolver(Box::new(r)));
        let mut t = netns_trace_common::BlockedTask {
            hdr: hdr(kind::BLOCKED_TASK, T0 + S, 31, "kworker/u8:1"),
            state: 2,
            nr: 1,
            last_ran_ns: 5 * S,
            seen_sched_ns: 5 * S + S / 10,
            ips: [0; netns_trace_common::BLOCKED_FRAMES],
        };
        t.ips[0] = 0xffffffff81001a2f;
        assert_eq!(s.on_event(Event::BlockedTask(Box::new(t))), None);
        // Still loading: not named unless asked to wait.
        assert!(s.named_blocked(false).is_empty());
        let recs = s.named_blocked(true);
        assert!(loaded.get());
        assert_eq!(recs.len(), 1);
        let line = json_line(&recs[0]);
        assert!(
            line.contains(r#""pid":31"#) && line.contains("netdev_run_todo"),
            "{line}"
        );
        assert!(s.named_blocked(true).is_empty());
        // Once the table is in, a walked task is named at once...
        assert!(s.on_event(Event::BlockedTask(Box::new(t))).is_some());
        // ...unless older ones still wait: they come first.
        s.unnamed_blocked.push(t);
        assert_eq!(s.on_event(Event::BlockedTask(Box::new(t))), None);
        assert_eq!(s.named_blocked(false).len(), 2);
    }

    #[test]
    fn a_held_object_warms_its_stack_without_waiting_for_the_table() {
        let mut s = session(vec![], vec![]);
        assert!(!s.symbols_loading());
        let r = StillLoading::default();
        let (frames, warmed) = (r.frames.clone(), r.warmed.clone());
        s.set_stack_resolver(StackResolver(Box::new(r)));
        assert!(s.symbols_loading());
        let hold = netns_trace_common::ObjHold {
            hdr: hdr(kind::OBJ_HOLD, T0 + S, 90, "insmod"),
            obj: 0xff1,
            dev: 0xff2,
            inum: 11,
            obj_kind: netns_trace_common::obj_kind::DST,
            stack_id: 7,
            ..Default::default()
        };
        assert_eq!(s.on_event(Event::ObjHold(hold)), None);
        assert_eq!((warmed.get(), frames.get()), (1, 0));
        // No stack (a negative id): nothing to warm.
        let hold = netns_trace_common::ObjHold {
            stack_id: -14,
            obj: 0xff3,
            ..hold
        };
        s.on_event(Event::ObjHold(hold));
        assert_eq!((warmed.get(), frames.get()), (1, 0));
    }

    fn session(netns: Vec<u32>, pids: Vec<u32>) -> Session {
        let mut s = Session::new(SessionConfig {
            start_ktime_ns: T0,
            start_unix_ns: 1_714_566_896_000_000_000,
            netns,
            pids,
            baseline: 1,
            tcp_states: HashMap::new(),
        });
        let symbols = Symbols::parse("ffffffff81001a00 T rtnetlink_rcv_msg\n");
        s.set_stack_resolver(StackResolver(Box::new(SymbolsOnly(symbols))));
        s
    }

    #[test]
    fn lifecycle_with_batches_and_teardown() {
        let mut s = session(vec![], vec![]);
        let r = s.on_event(create(S, 11, 812)).unwrap();
        assert_eq!(
            json_line(&r),
            r#"{"type":"netns_create","time":1.0,"wall":"2024-05-01T12:34:57.000Z","netns":11,"net":"0xffff888000001000","pid":812,"tgid":812,"comm":"dockerd","flags":"0x40000000","clone_newnet":true,"duration_us":1200,"error":null,"source":"copy_net_ns"}"#
        );
        s.on_event(create(S, 12, 812));
        s.on_event(destroy(2 * S, 11));
        s.on_event(destroy(2 * S + S / 2, 12));
        let r = s.on_event(cleanup(3 * S, phase::START, 0)).unwrap();
        assert_eq!(
            json_line(&r),
            r#"{"type":"cleanup_net","time":3.0,"phase":"start","netns":[11,12],"pid":93,"comm":"kworker/u4:1"}"#
        );
        // Destroyed during the batch: belongs to the next one.
        s.on_event(destroy(4 * S, 13));
        let r = s.on_event(cleanup(5 * S, phase::END, 2 * S)).unwrap();
        assert_eq!(
            json_line(&r),
            r#"{"type":"cleanup_net","time":5.0,"phase":"end","duration_us":2000000,"netns":[11,12],"teardown_us":[3000000,2500000],"pid":93,"comm":"kworker/u4:1"}"#
        );
        let r = s.on_event(cleanup(6 * S, phase::START, 0)).unwrap();
        let Record::CleanupNet(st) = r else { panic!() };
        assert_eq!(st.netns, [13]);
        let Record::Summary(sum) = s.summary(10 * S + T0) else {
            panic!()
        };
        assert_eq!(
            (sum.netns_created, sum.netns_destroyed, sum.cleanup_batches),
            (2, 3, 1)
        );
        assert_eq!(sum.slowest_teardown_ns, Some(3 * S));
        assert_eq!(sum.slowest_teardown_netns, Some(11));
        assert_eq!(sum.netns_pending, [13]);
        assert_eq!(sum.duration_ns, 10 * S);
    }

    #[test]
    fn cleanup_end_without_start() {
        let mut s = session(vec![], vec![]);
        let r = s.on_event(cleanup(S, phase::END, 0)).unwrap();
        assert_eq!(
            json_line(&r),
            r#"{"type":"cleanup_net","time":1.0,"phase":"end","duration_us":null,"netns":[],"teardown_us":[],"pid":93,"comm":"kworker/u4:1"}"#
        );
        // Kernel duration 0 but our own start seen: use ours.
        s.on_event(cleanup(2 * S, phase::START, 0));
        let Some(Record::CleanupNet(r)) = s.on_event(cleanup(3 * S, phase::END, 0)) else {
            panic!()
        };
        assert_eq!(r.duration_ns, Some(Some(S)));
    }

    #[test]
    fn devices_waiting_and_released() {
        let mut s = session(vec![], vec![]);
        s.on_event(destroy(0, 11));
        s.on_event(cleanup(S / 2, phase::START, 0));
        let r = s
            .on_event(dev_wait(
                4 * S,
                11,
                2,
                dev_wait_flags::RUN_TODO_SEEN,
                2 * S,
                S,
            ))
            .unwrap();
        assert_eq!(
            human(&r),
            "   4.000 dev_wait              11      93 kworker/u4:1     lo ifindex=1 usage_count=2 waiting=3.0s\n         lo of netns 11: usage count 2 (1 is the device's own), waiting 3.0s\n           unattributed: 1"
        );
        let Record::DevWait(d) = s.on_event(dev_wait(5 * S, 11, 1, 0, 2 * S, 0)).unwrap() else {
            panic!()
        };
        assert_eq!((d.waiting_ns, d.wait_since), (3 * S, "first_seen"));
        let Record::Summary(sum) = s.summary(T0 + 12 * S) else {
            panic!()
        };
        assert_eq!(
            sum.devices_still_waiting,
            [StillWaiting {
                netns: 11,
                device: "lo".into(),
                refcnt: 1,
                waiting_ns: 10 * S,
                holders: vec![],
                unattributed: 0,
                over: 0,
                container: Container::Off,
            }]
        );
        assert_eq!(sum.netns_pending, [11]);
        s.on_event(cleanup(13 * S, phase::END, 0));
        let Record::Summary(sum) = s.summary(T0 + 14 * S) else {
            panic!()
        };
        assert!(sum.devices_still_waiting.is_empty());
        assert!(sum.netns_pending.is_empty());
    }

    fn tracker(t: u64, op: u32, slot: u64, no_tracker: i32) -> Event {
        Event::TrackerCall(TrackerCall {
            hdr: hdr(kind::TRACKER_CALL, t, 157, "insmod"),
            dev: 0xffff888003f00000,
            slot,
            op,
            no_tracker,
            stack_id: -1,
            _pad: 0,
        })
    }

    /// lo of netns 11 created at 1 s, counted through ref_tracker.
    fn lo_counted_by_ref_tracker() -> Event {
        Event::TrackerStart(TrackerStart {
            hdr: hdr(kind::TRACKER_START, S, 812, "dockerd"),
            dev: 0xffff888003f00000,
            inum: 11,
            refcnt: 2,
            name: c("lo"),
            no_tracker: 1,
            _pad: 0,
        })
    }

    #[test]
    fn ref_tracker_counts_a_new_lo_into_dev_wait() {
        let mut s = session(vec![], vec![]);
        let r = s.on_event(lo_counted_by_ref_tracker()).unwrap();
        assert_eq!(
            json_line(&r),
            r#"{"type":"watch","time":1.0,"netns":11,"device":"lo","dev":"0xffff888003f00000","source":"ref_tracker","state":"armed","cpus":0,"pre_arm":1,"via":"bpf"}"#
        );
        // A bare dev_hold, and the registration's tracked reference put.
        assert!(s
            .on_event(tracker(2 * S, tracker_op::ALLOC, 0, 1))
            .is_none());
        s.on_event(tracker(3 * S, tracker_op::FREE, 0xffff888003f00f00, 2));
        let Record::DevWait(d) = s.on_event(dev_wait(4 * S, 11, 2, 0, 4 * S, 0)).unwrap() else {
            panic!()
        };
        let x = d.exact.unwrap();
        assert_eq!(
            (x.source, x.outstanding, x.pre_arm_left),
            ("ref_tracker", Some(1), 0)
        );
        assert_eq!(x.hold_sites.len(), 1);
        assert_eq!(x.hold_sites[0].comm, "insmod");
        s.on_event(tracker(5 * S, tracker_op::FREE, 0, 2));
        let Record::DevReleased(d) = s
            .on_event(dev_wait(6 * S, 11, 1, dev_wait_flags::RELEASED, 4 * S, 0))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(d.exact.unwrap().outstanding, Some(0));
        // Freed: no longer counted.
        let r = s.on_event(tracker(7 * S, tracker_op::EXIT, 0, 1)).unwrap();
        assert!(json_line(&r).contains(r#""source":"ref_tracker","state":"disarmed""#));
        assert!(s.on_event(tracker(8 * S, tracker_op::EXIT, 0, 1)).is_none());
    }

    #[test]
    fn a_refreshed_report_gives_the_time_of_the_kernels_reading() {
        let mut s = session(vec![], vec![]);
        s.on_event(lo_counted_by_ref_tracker());
        s.on_event(tracker(2 * S, tracker_op::ALLOC, 0, 1));
        s.on_event(tracker(3 * S, tracker_op::FREE, 0xffff888003f00f00, 2));
        s.on_event(dev_wait(4 * S, 11, 2, 0, 4 * S, 0));
        // The hold is put between two polls of the wait loop.
        s.on_event(tracker(5 * S, tracker_op::FREE, 0, 2));
        for now in [6 * S, 7 * S] {
            let [Record::DevWait(d)] = &s.refresh(now)[..] else {
                panic!()
            };
            let x = d.exact.as_ref().unwrap();
            assert_eq!(
                (d.usage_count, d.usage_count_at, x.outstanding),
                (2, Some(4 * S), Some(0))
            );
            assert_eq!(x.kernel_disagrees, None);
            assert!(json_line(&Record::DevWait(d.clone())).contains(r#""usage_count_at":4.0,"#));
        }
        // The repeats were no readings: only two real ones that disagree
        // alike flag the ledger.
        for (t, said) in [(8 * S, None), (9 * S, Some(1))] {
            let Record::DevWait(d) = s.on_event(dev_wait(t, 11, 2, 0, 4 * S, 0)).unwrap() else {
                panic!()
            };
            assert_eq!(d.usage_count_at, None);
            assert_eq!(d.exact.unwrap().kernel_disagrees, said);
        }
    }

    #[test]
    fn rtnl_unlock_end_releases_same_task_only() {
        let mut s = session(vec![], vec![]);
        s.on_event(dev_wait(S, 11, 2, 0, S, 0));
        let other = RtnlUnlock {
            hdr: hdr(kind::RTNL_UNLOCK, 2 * S, 5, "ip"),
            duration_ns: S,
            caller: 0,
        };
        s.on_event(Event::RtnlUnlock(other));
        let Record::Summary(sum) = s.summary(T0 + 3 * S) else {
            panic!()
        };
        assert_eq!(sum.devices_still_waiting.len(), 1);
        let mine = RtnlUnlock {
            hdr: hdr(kind::RTNL_UNLOCK, 3 * S, 93, "kworker/u4:1"),
            duration_ns: 2 * S,
            caller: 0,
        };
        let r = s.on_event(Event::RtnlUnlock(mine)).unwrap();
        assert_eq!(
            json_line(&r),
            r#"{"type":"rtnl_unlock","time":3.0,"duration_us":2000000,"caller":null,"caller_addr":"0x0","pid":93,"comm":"kworker/u4:1"}"#
        );
        let Record::Summary(sum) = s.summary(T0 + 4 * S) else {
            panic!()
        };
        assert!(sum.devices_still_waiting.is_empty());
    }

    #[test]
    fn rtnl_caller_symbolised() {
        let mut s = session(vec![], vec![]);
        let e = RtnlUnlock {
            hdr: hdr(kind::RTNL_UNLOCK, S, 5, "ip"),
            duration_ns: 15_000_000,
            caller: 0xffffffff81001a1a,
        };
        let Record::RtnlUnlock(r) = s.on_event(Event::RtnlUnlock(e)).unwrap() else {
            panic!()
        };
        assert_eq!(r.caller.as_deref(), Some("rtnetlink_rcv_msg+0x1a"));
        assert_eq!(
            human(&Record::RtnlUnlock(r)),
            "   1.000 rtnl_unlock            -       5 ip               dur=15.0ms caller=rtnetlink_rcv_msg+0x1a"
        );
        // 0: the fexit could not trust the trampoline frame; no caller,
        // not a symbol at address 0.
        let unseen = RtnlUnlock { caller: 0, ..e };
        let rec = s.on_event(Event::RtnlUnlock(unseen)).unwrap();
        assert!(json_line(&rec).contains(r#""caller":null,"caller_addr":"0x0""#));
        assert!(human(&rec).ends_with("caller=?"));
    }

    #[test]
    fn netns_filter() {
        let mut s = session(vec![11], vec![]);
        assert!(s.on_event(create(0, 12, 1)).is_none());
        assert!(s.on_event(destroy(S, 12)).is_none());
        assert!(s.on_event(dev_wait(S, 12, 2, 0, S, 0)).is_none());
        assert!(s.on_event(destroy(S, 11)).is_some());
        let Some(Record::CleanupNet(b)) = s.on_event(cleanup(2 * S, phase::START, 0)) else {
            panic!()
        };
        assert_eq!(b.netns, [11]);
        // A batch with nothing in scope is not shown.
        s.on_event(cleanup(3 * S, phase::END, 0));
        assert!(s.on_event(cleanup(4 * S, phase::START, 0)).is_none());
        assert!(s.on_event(cleanup(5 * S, phase::END, 0)).is_none());
        let Record::Summary(sum) = s.summary(T0 + 6 * S) else {
            panic!()
        };
        assert_eq!(
            (sum.netns_created, sum.netns_destroyed, sum.cleanup_batches),
            (0, 1, 2)
        );
    }

    #[test]
    fn pid_filter_widens_scope_with_created_namespaces() {
        let mut s = session(vec![], vec![812]);
        assert!(
            s.on_event(destroy(0, 99)).is_none(),
            "not created by the watched tasks"
        );
        assert!(s.on_event(create(S, 21, 812)).is_some());
        assert!(s.in_scope(21));
        assert!(s.on_event(dev_wait(2 * S, 21, 2, 0, S, 0)).is_some());
        assert!(s.on_event(dev_wait(2 * S, 99, 2, 0, S, 0)).is_none());
    }

    #[test]
    fn failed_create_not_tracked() {
        let mut s = session(vec![], vec![]);
        let Event::NetnsCreate(mut e) = create(S, 0, 1) else {
            panic!()
        };
        e.err = -28;
        e.net = 0;
        e.duration_ns = 0;
        e.source = create_source::UNSHARE;
        let r = s.on_event(Event::NetnsCreate(e)).unwrap();
        let j = json_line(&r);
        assert!(
            j.contains(r#""duration_us":null,"error":"ENOSPC","source":"unshare""#),
            "{j}"
        );
        let Record::Summary(sum) = s.summary(T0) else {
            panic!()
        };
        assert_eq!(sum.netns_created, 0);
    }

    #[test]
    fn lost_accounting() {
        let mut s = session(vec![], vec![]);
        assert!(s.on_stats(T0 + S, LostCounts::default()).is_none());
        assert!(s.on_bytes(&[1, 2, 3]).is_none());
        assert!(s.on_bytes(&bytes_of(&hdr(77, 0, 1, "x"))).is_none());
        assert_eq!(s.decode_errors(), 2);
        let k = LostCounts {
            ringbuf_drops: 5,
            ..Default::default()
        };
        let r = s.on_stats(T0 + 2 * S, k).unwrap();
        assert_eq!(
            json_line(&r),
            r#"{"type":"lost","time":2.0,"ringbuf_drops":5,"read_errors":0,"map_full":0,"missed_entry":0,"decode_errors":2}"#
        );
        assert!(s.on_stats(T0 + 3 * S, k).is_none(), "nothing new");
        let r = s
            .on_stats(
                T0 + 4 * S,
                LostCounts {
                    missed_entry: 1,
                    ..k
                },
            )
            .unwrap();
        let Record::Lost(l) = r else { panic!() };
        assert_eq!((l.counts.ringbuf_drops, l.counts.missed_entry), (5, 1));
        let Record::Summary(sum) = s.summary(T0 + 5 * S) else {
            panic!()
        };
        assert_eq!(sum.lost.ringbuf_drops, 5);
        assert_eq!(sum.lost.decode_errors, 2);
        // A good record still decodes and is consumed.
        let ok = NetnsDestroy {
            hdr: hdr(kind::NETNS_DESTROY, S, 1, "ip"),
            net: 0,
            inum: 5,
            _pad: 0,
        };
        assert!(s.on_bytes(&bytes_of(&ok)).is_some());
    }
}
