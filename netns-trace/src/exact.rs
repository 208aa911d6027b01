//! The exact ledger (`--exact`): every +1/-1 a hardware watchpoint saw on
//! a device's per-CPU reference counters, with the writer's kernel stack.
//!
//! The counters are read once right after the watchpoints are enabled (the
//! seed), so the outstanding count is exact from then on: the seed's sum +
//! every counted write − the device's own reference.
//!
//! Which hold a release gives back is not written anywhere (that is what
//! the kernel's ref_tracker adds on debug builds), so releases are paired
//! with holds by call path: a release cancels a hold of the same task
//! whose stack shares the most outer functions with its own (a function
//! that takes and drops a reference, or a caller that does both), the
//! nearest such hold first; a release with no such hold gives back one of
//! the references held before arming, or, when none is left, the hold
//! sharing the most of its call path. The count never depends on this
//! pairing; only which holds are listed as outstanding does.
//!
//! On debug kernels the same ledger is fed by the kernel's ref_tracker
//! instead (`on_tracker_*`, source `ref_tracker`): every hold and put of a
//! device goes through `ref_tracker_alloc`/`ref_tracker_free`, so a new
//! loopback device is counted from its creation without debug registers.
//! A tracked reference names where its tracker lives (the slot), so its
//! release pairs exactly; untracked ones (`dev_hold`) pair by call path.
use std::{collections::HashMap, rc::Rc};

use netns_trace_common::{tracker_op, Header, TrackerCall, TrackerStart, WatchHit, WatchTarget};

use crate::events::cstr_lossy;

/// Outstanding holds taken at one stack.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Site {
    pub stack_id: i32,
    /// Holds at this stack not paired with a release.
    pub holds: u32,
    /// The task of the most recent of them.
    pub comm: String,
    pub pid: u32,
    /// Its kernel time.
    pub last_ns: u64,
}

impl Site {
    /// One release, as `last_release`.
    fn release(stack_id: i32, hdr: &Header) -> Self {
        Site {
            stack_id,
            holds: 1,
            comm: cstr_lossy(&hdr.comm),
            pid: hdr.pid,
            last_ns: hdr.ts_ns,
        }
    }
}

/// What became of a watch request (the loader's answer).
#[derive(Debug, Clone, PartialEq)]
pub enum Armed {
    /// Watching every CPU's counter; `seed` holds their values read right
    /// after arming (kernel monotonic time `at_ns`).
    Now {
        seed: Vec<i32>,
        at_ns: u64,
        via: Via,
    },
    /// Already watched (now marked stuck if the request said waiting).
    Already,
    /// Not watched, and why.
    Refused(String),
}

/// How a device's watchpoint hits reach the ledger.
#[derive(Debug, Clone, PartialEq)]
pub enum Via {
    /// `watch_hit` on each hit: the counter's value gives the sign.
    Bpf,
    /// The breakpoint samples, read from the perf ring in userspace (the
    /// kernel refused BPF on breakpoint events, or it was asked for): the
    /// writing instruction gives the sign. Why, in one sentence.
    PerfRing(String),
}

/// A device whose watchpoints were closed to make room for a stuck one.
#[derive(Debug, Clone, PartialEq)]
pub struct Evicted {
    pub dev: u64,
    pub inum: u32,
    pub name: [u8; 16],
}

/// What counts a device's references.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Source {
    /// Hardware watchpoints on its per-CPU counters.
    #[default]
    Watchpoints,
    /// The kernel's ref_tracker calls (CONFIG_NET_DEV_REFCNT_TRACKER).
    RefTracker,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Watchpoints => "watchpoints",
            Source::RefTracker => "ref_tracker",
        }
    }
}

/// Function start addresses of a stack, leaf first (see `Stacks`).
pub type CallPath = Rc<[u64]>;

/// One hold not yet paired with a release.
#[derive(Debug, Clone)]
struct Hold {
    /// ref_tracker: where the holder keeps its tracker (0: untracked, and
    /// always 0 for watchpoints).
    slot: u64,
    stack_id: i32,
    path: CallPath,
    pid: u32,
    comm: String,
    ts_ns: u64,
}

#[derive(Debug, Default)]
struct Watched {
    source: Source,
    /// ref_tracker: `no_tracker` as the last call left it (an upgrade of an
    /// untracked reference lowers it before its alloc call).
    no_tracker: Option<i64>,
    inum: u32,
    name: [u8; 16],
    /// Sum of the per-CPU counters at the seed (None: not seeded yet).
    seed: Option<i64>,
    delta: i64,
    /// References held at the seed that no release has been paired with.
    pre_arm_left: i64,
    /// Holds since the seed not paired with a release, oldest first.
    holds: Vec<Hold>,
    /// Writes whose sign is unknown (between arming and the seed, or an
    /// instruction that could not be decoded).
    unknown: u32,
    /// Writes the perf ring had no room for (PERF_RECORD_LOST).
    lost: u64,
    /// Releases with nothing to pair with (a hold was missed).
    unpaired_releases: u32,
    /// The most recent release (who let go last).
    last_release: Option<Site>,
    /// The last comparison with the kernel's own count: (kernel, ledger).
    last_check: Option<(i64, i64)>,
    /// The kernel's count when the ledger was last found to disagree with
    /// it for good (see `check_kernel`); None while they agree.
    kernel_disagrees: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExactReport {
    pub source: Source,
    /// References besides the device's own, counted by the watchpoints
    /// (None until the seed has been read).
    pub outstanding: Option<i64>,
    /// References besides the device's own already held when armed.
    pub pre_arm: Option<i64>,
    /// Of those, how many no release has been paired with (no stack).
    pub pre_arm_left: i64,
    /// Outstanding holds grouped by stack, most first, then most recent.
    pub hold_sites: Vec<Site>,
    pub unknown_writes: u32,
    /// Writes lost before they were read (perf ring only).
    pub lost_writes: u64,
    pub unpaired_releases: u32,
    /// The most recent release (`holds` is 1).
    pub last_release: Option<Site>,
    /// The kernel's own count of the references besides the device's, when
    /// it disagrees with `outstanding`: writes were missed (see
    /// `ExactLedger::check_kernel`).
    pub kernel_disagrees: Option<i64>,
}

#[derive(Debug, Default)]
pub struct ExactLedger {
    own: i64,
    by_addr: HashMap<u64, u64>,
    devices: HashMap<u64, Watched>,
}

impl ExactLedger {
    /// `own`: the device's reference on itself (1 since 5.13, 0 before).
    pub fn new(own: i32) -> Self {
        Self {
            own: own.into(),
            ..Self::default()
        }
    }

    /// The loader armed the watchpoints on these counters; counting starts
    /// at the seed. Re-arming a watched device is a no-op.
    pub fn on_armed(&mut self, t: &WatchTarget) {
        if self.devices.contains_key(&t.dev) {
            return;
        }
        let n = (t.ncpu as usize).min(t.addrs.len());
        for &addr in &t.addrs[..n] {
            if addr != 0 {
                self.by_addr.insert(addr, t.dev);
            }
        }
        self.devices.insert(
            t.dev,
            Watched {
                inum: t.inum,
                name: t.name,
                ..Watched::default()
            },
        );
    }

    /// The counters' values after arming. Returns the references (besides
    /// the device's own) held at that moment, or None for a device that is
    /// not watched (any more).
    pub fn on_seed(&mut self, dev: u64, values: &[i32]) -> Option<i64> {
        let w = self.devices.get_mut(&dev)?;
        let sum: i64 = values.iter().map(|&v| i64::from(v)).sum();
        w.seed = Some(sum);
        w.pre_arm_left = sum - self.own;
        Some(sum - self.own)
    }

    /// Does this counter belong to a watched device? (Saves resolving
    /// the call path of writes to anything else.)
    pub fn watches_addr(&self, addr: u64) -> bool {
        self.by_addr.contains_key(&addr)
    }

    /// One write; `path` is its stack's call path (`Stacks::call_path`).
    pub fn on_hit(&mut self, h: &WatchHit, path: CallPath) {
        let Some(dev) = self.by_addr.get(&h.addr) else {
            return;
        };
        let Some(w) = self.devices.get_mut(dev) else {
            return;
        };
        if h.delta == 0 {
            w.unknown += 1;
            return;
        }
        w.delta += i64::from(h.delta);
        for _ in 0..h.delta.unsigned_abs() {
            if h.delta > 0 {
                w.holds.push(Hold {
                    slot: 0,
                    stack_id: h.stack_id,
                    path: path.clone(),
                    pid: h.hdr.pid,
                    comm: cstr_lossy(&h.hdr.comm),
                    ts_ns: h.hdr.ts_ns,
                });
            } else {
                w.release(h.hdr.pid, &path, |_| true);
            }
        }
        if h.delta < 0 {
            w.last_release = Some(Site::release(h.stack_id, &h.hdr));
        }
    }

    /// ref_tracker counts this new device from now; `s.refcnt` is its
    /// counters' sum at that moment. Returns the references (besides its
    /// own) already held. A device address seen before is a new device.
    pub fn on_tracker_start(&mut self, s: &TrackerStart) -> i64 {
        let pre_arm = i64::from(s.refcnt) - self.own;
        self.forget(s.dev);
        self.devices.insert(
            s.dev,
            Watched {
                source: Source::RefTracker,
                no_tracker: Some(s.no_tracker.into()),
                inum: s.inum,
                name: s.name,
                seed: Some(s.refcnt.into()),
                pre_arm_left: pre_arm,
                ..Watched::default()
            },
        );
        pre_arm
    }

    /// One ref_tracker call on a counted device; `path` is its stack's
    /// call path. (`EXIT`: the caller forgets the device.)
    pub fn on_tracker_call(&mut self, c: &TrackerCall, path: CallPath) {
        let Some(w) = self.devices.get_mut(&c.dev) else {
            return;
        };
        if w.source != Source::RefTracker {
            return;
        }
        let nt = i64::from(c.no_tracker);
        let hold = || Hold {
            slot: c.slot,
            stack_id: c.stack_id,
            path: path.clone(),
            pid: c.hdr.pid,
            comm: cstr_lossy(&c.hdr.comm),
            ts_ns: c.hdr.ts_ns,
        };
        match c.op {
            tracker_op::ALLOC if c.slot == 0 => {
                w.no_tracker = Some(nt + 1);
                w.delta += 1;
                w.holds.push(hold());
            }
            tracker_op::ALLOC => {
                // netdev_tracker_alloc() turns an untracked reference
                // (dev_get_by_name) into a tracked one: no_tracker was
                // lowered just before, and the count does not change.
                let upgrade = w.no_tracker.is_some_and(|before| nt < before);
                w.no_tracker = Some(nt);
                if upgrade {
                    w.release(c.hdr.pid, &path, |h| h.slot == 0);
                } else {
                    w.delta += 1;
                }
                w.holds.push(hold());
            }
            tracker_op::FREE => {
                w.delta -= 1;
                if c.slot == 0 {
                    w.no_tracker = Some(nt - 1);
                    w.release(c.hdr.pid, &path, |h| h.slot == 0);
                } else if let Some(i) = w.holds.iter().position(|h| h.slot == c.slot) {
                    // The very hold this tracker was allocated for.
                    w.holds.remove(i);
                } else if w.pre_arm_left > 0 {
                    w.pre_arm_left -= 1;
                } else {
                    w.unpaired_releases += 1;
                }
                w.last_release = Some(Site::release(c.stack_id, &c.hdr));
            }
            _ => {}
        }
    }

    /// What counts `dev`, if anything does.
    pub fn source(&self, dev: u64) -> Option<Source> {
        self.devices.get(&dev).map(|w| w.source)
    }

    /// `n` writes to this counter were lost (the perf ring overflowed):
    /// the outstanding count is no longer exact, and says so.
    pub fn on_lost(&mut self, addr: u64, n: u64) {
        let Some(dev) = self.by_addr.get(&addr) else {
            return;
        };
        if let Some(w) = self.devices.get_mut(dev) {
            w.lost += n;
        }
    }

    pub fn is_watched(&self, dev: u64) -> bool {
        self.devices.contains_key(&dev)
    }

    /// The device is gone or its watchpoints were closed: forget it.
    /// Returns its namespace inode and name if it was watched.
    pub fn forget(&mut self, dev: u64) -> Option<(u32, [u8; 16])> {
        let w = self.devices.remove(&dev)?;
        self.by_addr.retain(|_, d| *d != dev);
        Some((w.inum, w.name))
    }

    /// Compares the ledger with the kernel's own count of `dev`'s
    /// references besides its own (`kernel`: a `netdev_refcnt_read`
    /// result minus the device's own reference). The kernel sums the
    /// counters while other CPUs may be writing them, and a write's hit can
    /// reach the ledger just after that sum: one disagreement proves
    /// nothing. The ledger is wrong for good when it disagrees twice in a
    /// row with neither count moving in between, or at the release
    /// (`last`), the kernel's final word. Unseen writes are what such a
    /// disagreement means: a breakpoint that did not fire (an emulator
    /// reports one of two watchpoints on the same address) or hits lost.
    pub fn check_kernel(&mut self, dev: u64, kernel: i64, last: bool) {
        let own = self.own;
        let Some(w) = self.devices.get_mut(&dev) else {
            return;
        };
        let Some(seed) = w.seed else {
            return;
        };
        let ledger = seed + w.delta - own;
        let now = (kernel, ledger);
        if kernel == ledger {
            w.kernel_disagrees = None;
        } else if last || w.last_check == Some(now) {
            w.kernel_disagrees = Some(kernel);
        }
        w.last_check = Some(now);
    }

    pub fn report(&self, dev: u64) -> Option<ExactReport> {
        let w = self.devices.get(&dev)?;
        let mut sites: HashMap<i32, Site> = HashMap::new();
        for h in &w.holds {
            let site = sites.entry(h.stack_id).or_insert_with(|| Site {
                stack_id: h.stack_id,
                ..Site::default()
            });
            site.holds += 1;
            if h.ts_ns >= site.last_ns {
                site.last_ns = h.ts_ns;
                site.comm = h.comm.clone();
                site.pid = h.pid;
            }
        }
        let mut hold_sites: Vec<Site> = sites.into_values().collect();
        hold_sites.sort_by_key(|s| (std::cmp::Reverse(s.holds), std::cmp::Reverse(s.last_ns)));
        Some(ExactReport {
            source: w.source,
            outstanding: w.seed.map(|s| s + w.delta - self.own),
            pre_arm: w.seed.map(|s| s - self.own),
            pre_arm_left: w.pre_arm_left,
            hold_sites,
            unknown_writes: w.unknown,
            lost_writes: w.lost,
            unpaired_releases: w.unpaired_releases,
            last_release: w.last_release.clone(),
            kernel_disagrees: w.kernel_disagrees,
        })
    }
}

impl Watched {
    /// Pairs one release (by task `pid`, call path `path`) with a hold
    /// among those `eligible`.
    fn release(&mut self, pid: u32, path: &[u64], eligible: impl Fn(&Hold) -> bool + Copy) {
        let same_task = best_match(&self.holds, path, |h| eligible(h) && h.pid == pid);
        let pick = match same_task {
            Some(i) => Some(i),
            None if self.pre_arm_left > 0 => {
                self.pre_arm_left -= 1;
                return;
            }
            // Nothing shares its path: the oldest hold.
            None => best_match(&self.holds, path, eligible)
                .or_else(|| self.holds.iter().position(eligible)),
        };
        match pick {
            Some(i) => {
                self.holds.remove(i);
            }
            None => self.unpaired_releases += 1,
        }
    }
}

/// Number of outer frames two call paths share (paths are leaf first).
fn shared_outer(a: &[u64], b: &[u64]) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// The hold (among those `eligible`) whose call path shares the most
/// outer functions with `path`, at least one; ties go to the hold with the
/// fewest frames of its own beyond the shared part, then to the oldest.
fn best_match(holds: &[Hold], path: &[u64], eligible: impl Fn(&Hold) -> bool) -> Option<usize> {
    let mut best: Option<(usize, usize, usize)> = None; // (shared, own, index)
    for (i, h) in holds.iter().enumerate() {
        if !eligible(h) {
            continue;
        }
        let shared = shared_outer(&h.path, path);
        if shared == 0 {
            continue;
        }
        let own = h.path.len() - shared;
        let better = match best {
            None => true,
            Some((bs, bo, _)) => shared > bs || (shared == bs && own < bo),
        };
        if better {
            best = Some((shared, own, i));
        }
    }
    best.map(|(_, _, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netns_trace_common::{kind, TrackerCall, TrackerStart, WATCH_MAX_CPUS};

    fn target(dev: u64, values: &[i32]) -> WatchTarget {
        let mut t = WatchTarget {
            hdr: Header::default(),
            dev,
            inum: 1,
            ncpu: values.len() as u32,
            name: [0; 16],
            why: 0,
            _pad: 0,
            addrs: [0; WATCH_MAX_CPUS],
        };
        for i in 0..values.len() {
            t.addrs[i] = dev + 0x1000 * (i as u64 + 1);
        }
        t
    }

    /// A watched device (0x100, counters 0x1100/0x2100) seeded at `values`.
    fn watched(own: i32, values: &[i32]) -> ExactLedger {
        let mut l = ExactLedger::new(own);
        let t = target(0x100, values);
        l.on_armed(&t);
        l.on_seed(0x100, values);
        l
    }

    fn hit(addr: u64, delta: i32, stack: i32, pid: u32, ts_ns: u64) -> WatchHit {
        WatchHit {
            hdr: Header {
                kind: kind::WATCH_HIT,
                pid,
                ts_ns,
                ..Header::default()
            },
            addr,
            value: 0,
            delta,
            stack_id: stack,
            _pad: 0,
        }
    }

    fn path(fns: &[u64]) -> CallPath {
        fns.into()
    }

    fn outstanding_ids(l: &ExactLedger) -> Vec<i32> {
        let r = l.report(0x100).unwrap();
        r.hold_sites.iter().map(|s| s.stack_id).collect()
    }

    #[test]
    fn outstanding_from_seed_and_deltas() {
        // Per-CPU slots can be negative: only the sum means anything.
        let mut l = watched(1, &[3, -2]);
        assert_eq!(l.report(0x100).unwrap().pre_arm, Some(0));
        l.on_hit(&hit(0x1100, 1, 5, 7, 10), path(&[0xa1, 0xa0, 0xf0]));
        l.on_hit(&hit(0x2100, 1, 6, 8, 11), path(&[0xb1, 0xb0, 0xf1]));
        // Task 7 gives back a reference from another function of the same
        // caller (0xa0): it pairs with task 7's hold.
        l.on_hit(&hit(0x1100, -1, 9, 7, 12), path(&[0xa2, 0xa0, 0xf0]));
        let r = l.report(0x100).unwrap();
        assert_eq!(r.outstanding, Some(1));
        assert_eq!(outstanding_ids(&l), [6]);
        assert_eq!((r.hold_sites[0].pid, r.hold_sites[0].last_ns), (8, 11));
    }

    #[test]
    fn release_pairs_with_the_nearest_hold_of_its_caller() {
        // The neighbour leak: init takes dev_get_by_name's reference (A),
        // creates a neighbour (B, deeper) and drops A itself.
        let mut l = watched(1, &[1]);
        let (init, initcall) = (0x10, 0x20);
        l.on_hit(&hit(0x1100, 1, 1, 50, 1), path(&[0x30, init, initcall]));
        l.on_hit(
            &hit(0x1100, 1, 2, 50, 2),
            path(&[0x41, 0x42, 0x43, init, initcall]),
        );
        l.on_hit(&hit(0x1100, -1, 3, 50, 3), path(&[init, initcall]));
        assert_eq!(outstanding_ids(&l), [2]);
        assert_eq!(l.report(0x100).unwrap().outstanding, Some(1));
    }

    #[test]
    fn unrelated_releases_give_back_pre_arm_references_first() {
        let mut l = watched(1, &[2]); // one reference held before arming
        l.on_hit(&hit(0x1100, 1, 1, 50, 1), path(&[0x30, 0x10]));
        // An RCU callback in another task: the pre-arm reference goes.
        l.on_hit(&hit(0x1100, -1, 2, 0, 2), path(&[0x90, 0x91]));
        let r = l.report(0x100).unwrap();
        assert_eq!((r.pre_arm, r.pre_arm_left), (Some(1), 0));
        assert_eq!(outstanding_ids(&l), [1]);
        // None left: the next unrelated release takes the oldest hold.
        l.on_hit(&hit(0x1100, -1, 2, 0, 3), path(&[0x90, 0x91]));
        let r = l.report(0x100).unwrap();
        assert_eq!(r.outstanding, Some(0));
        assert!(r.hold_sites.is_empty());
        let last = r.last_release.unwrap();
        assert_eq!((last.stack_id, last.pid, last.last_ns), (2, 0, 3));
        // More releases than references: counted, not paired.
        l.on_hit(&hit(0x1100, -1, 2, 0, 4), path(&[0x90]));
        assert_eq!(l.report(0x100).unwrap().unpaired_releases, 1);
    }

    #[test]
    fn a_ledger_the_kernel_contradicts_twice_says_so() {
        // 11 besides lo's own at the seed; the kernel then counts 1: nine
        // releases were never seen (the demo's two watchers under TCG).
        let mut l = watched(1, &[12, 0]);
        let disagrees = |l: &ExactLedger| l.report(0x100).unwrap().kernel_disagrees;
        // The first disagreement may be a hit still on its way.
        l.check_kernel(0x100, 1, false);
        assert_eq!(disagrees(&l), None);
        // It was: the hit arrives, and the two agree.
        l.on_hit(&hit(0x1100, -1, 1, 0, 1), path(&[0x90]));
        l.check_kernel(0x100, 10, false);
        assert_eq!(disagrees(&l), None);
        // Nothing moved between two reads that disagree: writes were missed.
        l.check_kernel(0x100, 1, false);
        l.check_kernel(0x100, 1, false);
        assert_eq!(disagrees(&l), Some(1));
        assert_eq!(l.report(0x100).unwrap().outstanding, Some(10));
        // Agreeing again clears it.
        l.check_kernel(0x100, 10, false);
        assert_eq!(disagrees(&l), None);
        // The release is the kernel's final word: one disagreement is enough.
        l.check_kernel(0x100, 0, true);
        assert_eq!(disagrees(&l), Some(0));
        // Not seeded yet, or not watched: nothing to compare.
        let mut fresh = ExactLedger::new(1);
        fresh.on_armed(&target(0x200, &[1]));
        fresh.check_kernel(0x200, 5, true);
        fresh.check_kernel(0x300, 5, true);
        assert_eq!(fresh.report(0x200).unwrap().kernel_disagrees, None);
    }

    #[test]
    fn sites_group_outstanding_holds() {
        let mut l = watched(0, &[0, 0]);
        for ts in 0..3 {
            l.on_hit(&hit(0x1100, 1, 9, 7, ts), path(&[0x30, 0x10]));
        }
        l.on_hit(&hit(0x2100, 1, 8, 7, 9), path(&[0x31, 0x11]));
        let r = l.report(0x100).unwrap();
        assert_eq!(r.outstanding, Some(4));
        assert_eq!(outstanding_ids(&l), [9, 8]);
        assert_eq!(r.hold_sites[0].holds, 3);
    }

    #[test]
    fn nothing_is_counted_before_the_seed_is_known() {
        let mut l = ExactLedger::new(1);
        let t = target(0x100, &[1]);
        l.on_armed(&t);
        assert_eq!(l.report(0x100).unwrap().outstanding, None);
        l.on_hit(&hit(0x1100, 0, 5, 7, 1), path(&[1])); // sign unknown
        l.on_seed(0x100, &[1]);
        let r = l.report(0x100).unwrap();
        assert_eq!((r.outstanding, r.unknown_writes), (Some(0), 1));
        assert!(r.hold_sites.is_empty());
    }

    fn start(l: &mut ExactLedger, refcnt: i32, no_tracker: i32) -> i64 {
        l.on_tracker_start(&TrackerStart {
            dev: 0x100,
            refcnt,
            no_tracker,
            ..TrackerStart::default()
        })
    }

    fn call(op: u32, slot: u64, no_tracker: i32, stack: i32, pid: u32, ts: u64) -> TrackerCall {
        TrackerCall {
            hdr: Header {
                kind: kind::TRACKER_CALL,
                pid,
                ts_ns: ts,
                ..Header::default()
            },
            dev: 0x100,
            slot,
            op,
            no_tracker,
            stack_id: stack,
            _pad: 0,
        }
    }

    #[test]
    fn tracker_pairs_tracked_releases_by_slot() {
        let mut l = ExactLedger::new(1);
        // Own + the registration's tracked reference.
        assert_eq!(start(&mut l, 2, 1), 1);
        let p = path(&[0x10, 0x20]);
        l.on_tracker_call(&call(tracker_op::ALLOC, 0xa0, 1, 5, 7, 1), p.clone());
        l.on_tracker_call(&call(tracker_op::ALLOC, 0xb0, 1, 6, 7, 2), p.clone());
        // Same task, same path: only the slot decides which one goes.
        l.on_tracker_call(&call(tracker_op::FREE, 0xa0, 1, 9, 7, 3), p.clone());
        let r = l.report(0x100).unwrap();
        assert_eq!(r.source, Source::RefTracker);
        assert_eq!((r.outstanding, r.pre_arm_left), (Some(2), 1));
        assert_eq!(outstanding_ids(&l), [6]);
        // A slot never allocated since the start: a reference from before.
        l.on_tracker_call(&call(tracker_op::FREE, 0xc0, 1, 9, 0, 4), p.clone());
        let r = l.report(0x100).unwrap();
        assert_eq!((r.outstanding, r.pre_arm_left), (Some(1), 0));
        l.on_tracker_call(&call(tracker_op::FREE, 0xc0, 1, 9, 0, 5), p);
        assert_eq!(l.report(0x100).unwrap().unpaired_releases, 1);
    }

    #[test]
    fn tracker_untracked_holds_pair_by_path_and_upgrades_do_not_count() {
        let mut l = ExactLedger::new(1);
        start(&mut l, 1, 1);
        let (init, other) = (path(&[0x10, 0x20]), path(&[0x90, 0x91]));
        // A bare dev_hold (no_tracker 1 -> 2), then another task's
        // dev_get_by_name upgraded by netdev_tracker_alloc (2 -> 3 -> 2).
        l.on_tracker_call(&call(tracker_op::ALLOC, 0, 1, 5, 7, 1), init.clone());
        l.on_tracker_call(&call(tracker_op::ALLOC, 0, 2, 6, 8, 2), other.clone());
        l.on_tracker_call(&call(tracker_op::ALLOC, 0xd0, 2, 7, 8, 3), other.clone());
        let r = l.report(0x100).unwrap();
        assert_eq!(r.outstanding, Some(2), "the upgrade is not a new reference");
        let mut ids = outstanding_ids(&l);
        ids.sort();
        assert_eq!(ids, [5, 7]);
        // Task 8 puts its tracked reference; task 7 its bare one.
        l.on_tracker_call(&call(tracker_op::FREE, 0xd0, 2, 8, 8, 4), other.clone());
        l.on_tracker_call(&call(tracker_op::FREE, 0, 2, 9, 7, 5), init);
        let r = l.report(0x100).unwrap();
        assert_eq!(r.outstanding, Some(0));
        assert!(r.hold_sites.is_empty());
        assert_eq!(r.last_release.unwrap().stack_id, 9);
    }

    #[test]
    fn tracker_calls_need_a_tracker_counted_device() {
        let mut l = watched(1, &[1]);
        // Watched by watchpoints: tracker calls for it are ignored.
        l.on_tracker_call(&call(tracker_op::ALLOC, 0, 1, 5, 7, 1), path(&[1]));
        let r = l.report(0x100).unwrap();
        assert_eq!((r.source, r.outstanding), (Source::Watchpoints, Some(0)));
        // A new device at the same address replaces it.
        start(&mut l, 1, 1);
        assert!(!l.watches_addr(0x1100));
        assert_eq!(l.source(0x100), Some(Source::RefTracker));
        l.forget(0x100);
        l.on_tracker_call(&call(tracker_op::ALLOC, 0, 1, 5, 7, 1), path(&[1]));
        assert!(l.report(0x100).is_none());
    }

    #[test]
    fn unwatched_and_forgotten_devices() {
        let mut l = ExactLedger::new(1);
        assert!(l.report(0x100).is_none());
        assert_eq!(l.on_seed(0x100, &[4]), None);
        let t = target(0x100, &[1]);
        l.on_armed(&t);
        l.on_armed(&target(0x100, &[9])); // re-armed: ignored
        l.on_seed(0x100, &[1]);
        assert!(l.watches_addr(0x1100));
        assert_eq!(l.report(0x100).unwrap().outstanding, Some(0));
        assert_eq!(l.forget(0x100), Some((1, [0; 16])));
        l.on_hit(&hit(0x1100, 1, 5, 7, 1), path(&[1]));
        assert!(l.report(0x100).is_none());
        assert!(!l.is_watched(0x100) && !l.watches_addr(0x1100));
    }

    #[test]
    fn lost_writes_are_counted_per_device() {
        let mut l = watched(1, &[1, 0]);
        l.on_lost(0x1100, 3);
        l.on_lost(0x2100, 2);
        l.on_lost(0x9999, 7); // not a watched counter
        assert_eq!(l.report(0x100).unwrap().lost_writes, 5);
    }
}
