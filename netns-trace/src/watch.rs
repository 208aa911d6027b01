//! Hardware write-watchpoints on a device's per-CPU reference counters,
//! opened by hand: one PERF_TYPE_BREAKPOINT event per CPU on that CPU's
//! counter, with the `watch_hit` BPF program attached by
//! PERF_EVENT_IOC_SET_BPF. (Aya's breakpoint attach asks for precise_ip 2,
//! which the kernel refuses for breakpoints with EPROTO.) When the kernel
//! refuses SET_BPF (or `--watch-via-perf-ring`), the breakpoints are
//! sampling events read in userspace instead (`watch_ring`).
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

use crate::{
    probes::program,
    stacks::SharedCallchains,
    trace::take,
    watch_ring::{RingPoll, SampleRing, TextReader},
};
use aya::{
    maps::{Array as BpfArray, HashMap as BpfHashMap, MapData},
    programs::{PerfEvent, RawTracePoint},
    Ebpf,
};
use netns_trace::events::Event;
use netns_trace::exact::{Armed, Evicted, Via};
use netns_trace::output::Record;
use netns_trace::perf_ring::{self, Sample};
use netns_trace::session::Session;
use netns_trace_common::{kind, watch_why, Header, WatchHit, WatchTarget, WATCH_MAX_CPUS};

/// `struct perf_event_attr` up to `sample_max_stack` (PERF_ATTR_SIZE_VER6,
/// 112 bytes, understood by every kernel since 5.x).
#[repr(C)]
#[derive(Default)]
pub(crate) struct PerfEventAttr {
    pub type_: u32,
    pub size: u32,
    pub config: u64,
    pub sample_period: u64,
    pub sample_type: u64,
    pub read_format: u64,
    pub flags: u64,
    pub wakeup_events: u32,
    pub bp_type: u32,
    pub bp_addr: u64,
    pub bp_len: u64,
    pub branch_sample_type: u64,
    pub sample_regs_user: u64,
    pub sample_stack_user: u32,
    pub clockid: i32,
    pub sample_regs_intr: u64,
    pub aux_watermark: u32,
    pub sample_max_stack: u16,
    pub reserved_2: u16,
}

impl PerfEventAttr {
    /// A disabled write breakpoint on the 4-byte counter at `addr`, an
    /// overflow on every hit (each one wakes a reader).
    pub fn write_breakpoint(addr: u64) -> Self {
        Self {
            type_: PERF_TYPE_BREAKPOINT,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            sample_period: 1,
            sample_type: PERF_SAMPLE_CALLCHAIN,
            flags: FLAG_DISABLED,
            wakeup_events: 1,
            bp_type: HW_BREAKPOINT_W,
            bp_addr: addr,
            bp_len: HW_BREAKPOINT_LEN_4,
            ..Self::default()
        }
    }
}

/// perf_event_open for every task on `cpu`.
pub(crate) fn perf_open(attr: &PerfEventAttr, cpu: i32) -> Result<OwnedFd, String> {
    // SAFETY: a valid attr; pid -1 + cpu: every task on that CPU.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            cpu,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(format!(
            "perf_event_open(breakpoint): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn ioctl(fd: &OwnedFd, what: &str, req: libc::c_ulong, arg: libc::c_ulong) -> Result<(), String> {
    // SAFETY: an ioctl on our perf fd.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) } != 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

pub(crate) fn enable(fd: &OwnedFd) -> Result<(), String> {
    ioctl(fd, "PERF_EVENT_IOC_ENABLE", PERF_EVENT_IOC_ENABLE, 0)
}

const PERF_TYPE_BREAKPOINT: u32 = 5;
const HW_BREAKPOINT_W: u32 = 2;
const HW_BREAKPOINT_LEN_4: u64 = 4;
const PERF_SAMPLE_CALLCHAIN: u64 = 1 << 5;
const FLAG_DISABLED: u64 = 1;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

/// Debug registers are 4 per CPU and shared with debuggers: watch at most
/// this many devices at once.
pub const BUDGET: usize = 2;

const GONE: &str = "the device was already gone when the request was handled";

struct Device {
    dev: u64,
    inum: u32,
    name: [u8; 16],
    addrs: Vec<u64>,
    /// Found in the unregister wait loop: never evicted.
    stuck: bool,
    /// With `watch_hit` attached (closing them disarms).
    _fds: Vec<OwnedFd>,
    /// Or read from the perf ring, one per CPU (`addrs`' order).
    rings: Vec<SampleRing>,
    /// Kernel time just before and just after the seed was read: a
    /// sample before is in the seed, one between has an unknown sign.
    seed_window: (u64, u64),
}

pub struct Watcher {
    hit_fd: RawFd,
    seed_fd: RawFd,
    prev: BpfHashMap<MapData, u64, i32>,
    watched: BpfHashMap<MapData, u64, u8>,
    seeded: BpfArray<MapData, [i32; WATCH_MAX_CPUS]>,
    /// The device's reference on itself (what a free device reads).
    own: i64,
    /// Oldest first.
    devices: Vec<Device>,
    /// Set once the breakpoints are read from the perf ring: why.
    fallback: Option<String>,
    poll: RingPoll,
    /// Reads the writing instructions (the sign of a perf ring sample).
    text: Result<TextReader, String>,
    callchains: SharedCallchains,
    /// Samples read, not yet given to the session (oldest first).
    pending: Vec<WatchHit>,
}

/// Why the breakpoints are read from the perf ring when asked to.
const FORCED: &str =
    "--watch-via-perf-ring asked for the breakpoint samples to be read in userspace";

/// How opening a device's BPF watchpoints failed.
enum Refusal {
    /// The kernel will not run BPF on a breakpoint event: fall back.
    SetBpf(String),
    Other(String),
}

impl Watcher {
    /// Loads `watch_hit` (perf_event), `watch_seed` (raw tracepoint,
    /// never attached) and `watch_text` (likewise, for the fallback), and
    /// takes the maps the loader reads and writes.
    /// `own`: the device's reference on itself (1 since 5.13, else 0).
    /// `via_perf_ring`: read the perf ring even where `watch_hit` would
    /// run.
    pub fn load(ebpf: &mut Ebpf, own: i32, via_perf_ring: bool) -> anyhow::Result<Self> {
        let hit: &mut PerfEvent = program(ebpf, "watch_hit")?.try_into()?;
        hit.load()?;
        let hit_fd = hit.fd()?.as_fd().as_raw_fd();
        let seed: &mut RawTracePoint = program(ebpf, "watch_seed")?.try_into()?;
        seed.load()?;
        let seed_fd = seed.fd()?.as_fd().as_raw_fd();
        let text = TextReader::load(ebpf).map_err(|e| format!("{e:#}"));
        if let Err(e) = &text {
            log::info!("watch_text refused: perf ring samples would have no sign: {e}");
        }
        Ok(Self {
            hit_fd,
            seed_fd,
            prev: take(ebpf, "WATCH_PREV")?,
            watched: take(ebpf, "WATCHED_DEVS")?,
            seeded: take(ebpf, "WATCH_SEED")?,
            own: own.into(),
            devices: Vec::new(),
            fallback: via_perf_ring.then(|| FORCED.to_string()),
            poll: RingPoll::new()?,
            text,
            callchains: SharedCallchains::default(),
            pending: Vec::new(),
        })
    }

    /// The call chains of perf ring samples, for the stack resolver.
    pub fn callchains(&self) -> SharedCallchains {
        self.callchains.clone()
    }

    /// An fd that polls readable when a perf ring has samples.
    pub fn ring_poll(&self) -> std::io::Result<OwnedFd> {
        self.poll.handle()
    }

    /// A watch request from the kernel: arm, and the records that say what
    /// happened.
    pub fn on_target(&mut self, t: &WatchTarget, session: &mut Session) -> Vec<Record> {
        let (armed, evicted) = self.arm(t);
        log::debug!(
            "watch request {:#x} (why {}) addrs {:x?}: {armed:?}",
            t.dev,
            t.why,
            &t.addrs[..(t.ncpu as usize).min(t.addrs.len())]
        );
        let mut out = Vec::new();
        if let Some(e) = &evicted {
            out.push(session.on_watch_evicted(e, t));
        }
        out.extend(session.on_watch_armed(t, &armed));
        out
    }

    /// Arms one watchpoint per CPU on the target's counters (all or none),
    /// then has the kernel read the counters (the seed). Stuck devices are
    /// preferred: when the budget is spent, a waiting device evicts the
    /// oldest device that is not stuck.
    pub fn arm(&mut self, t: &WatchTarget) -> (Armed, Option<Evicted>) {
        let waiting = t.why == watch_why::WAITING;
        if let Some(d) = self.devices.iter_mut().find(|d| d.dev == t.dev) {
            d.stuck |= waiting;
            return (Armed::Already, None);
        }
        let mut evicted = None;
        if self.devices.len() >= BUDGET {
            let victim = self.devices.iter().position(|d| !d.stuck);
            match (waiting, victim) {
                (true, Some(i)) => {
                    let d = self.devices.remove(i);
                    self.forget(&d);
                    evicted = Some(Evicted {
                        dev: d.dev,
                        inum: d.inum,
                        name: d.name,
                    });
                }
                _ => {
                    let why = format!(
                        "watchpoint budget spent ({BUDGET} devices already watched{})",
                        if waiting { ", all stuck" } else { "" }
                    );
                    return (Armed::Refused(why), None);
                }
            }
        }
        (self.arm_new(t, waiting), evicted)
    }

    fn arm_new(&mut self, t: &WatchTarget, stuck: bool) -> Armed {
        let n = (t.ncpu as usize).min(t.addrs.len());
        let addrs = t.addrs[..n].to_vec();
        let mut d = Device {
            dev: t.dev,
            inum: t.inum,
            name: t.name,
            addrs,
            stuck,
            _fds: Vec::with_capacity(n),
            rings: Vec::new(),
            seed_window: (0, 0),
        };
        // Marked watched first: a release from now on is reported.
        if let Err(e) = self.watched.insert(t.dev, 1, 0) {
            return Armed::Refused(format!("WATCHED_DEVS: {e}"));
        }
        if let Err(why) = self.open_all(&mut d) {
            self.forget(&d);
            return Armed::Refused(why);
        }
        let before = crate::trace::ktime_now();
        let seed = match self.seed(t, n) {
            // A live device holds at least its own reference: less means
            // it was being freed when the request was handled.
            Ok(values) if values.iter().map(|&v| i64::from(v)).sum::<i64>() < self.own => {
                self.forget(&d);
                return Armed::Refused(GONE.into());
            }
            Ok(values) => values,
            Err(e) => {
                self.forget(&d);
                return Armed::Refused(e);
            }
        };
        let at_ns = crate::trace::ktime_now();
        d.seed_window = (before, at_ns);
        let via = match (d.rings.is_empty(), &self.text) {
            (true, _) => Via::Bpf,
            (false, Ok(_)) => Via::PerfRing(self.fallback.clone().unwrap_or_default()),
            (false, Err(e)) => Via::PerfRing(format!(
                "{}, but the kernel refused watch_text ({e}), so no write's sign is known",
                self.fallback.as_deref().unwrap_or_default()
            )),
        };
        self.devices.push(d);
        Armed::Now { seed, at_ns, via }
    }

    fn open_all(&mut self, d: &mut Device) -> Result<(), String> {
        if let Some(cpu) = d.addrs.iter().position(|&a| a == 0) {
            return Err(format!("CPU {cpu}: counter address unknown"));
        }
        for addr in &d.addrs {
            // A previous device at this address must not lend its value.
            let _ = self.prev.remove(addr);
        }
        if self.fallback.is_none() {
            match self.open_bpf(d) {
                Ok(()) => return Ok(()),
                Err(Refusal::Other(why)) => return Err(why),
                Err(Refusal::SetBpf(why)) => {
                    d._fds.clear();
                    let reason = format!(
                        "the kernel refused BPF on breakpoint events ({why}), so the samples are read from the perf ring in userspace"
                    );
                    eprintln!("netns-trace: --exact: {reason}");
                    self.fallback = Some(reason);
                }
            }
        }
        self.open_rings(d)
    }

    /// One breakpoint per CPU with `watch_hit` attached.
    fn open_bpf(&self, d: &mut Device) -> Result<(), Refusal> {
        for (cpu, &addr) in d.addrs.iter().enumerate() {
            let at = |e: String| format!("CPU {cpu}: {e}");
            let attr = PerfEventAttr::write_breakpoint(addr);
            let fd = perf_open(&attr, cpu as i32).map_err(|e| Refusal::Other(at(e)))?;
            let set = PERF_EVENT_IOC_SET_BPF;
            ioctl(
                &fd,
                "PERF_EVENT_IOC_SET_BPF",
                set,
                self.hit_fd as libc::c_ulong,
            )
            .map_err(|e| Refusal::SetBpf(at(e)))?;
            enable(&fd).map_err(|e| Refusal::Other(at(e)))?;
            d._fds.push(fd);
        }
        Ok(())
    }

    /// One sampling breakpoint per CPU, its ring polled by the loop.
    fn open_rings(&self, d: &mut Device) -> Result<(), String> {
        for (cpu, &addr) in d.addrs.iter().enumerate() {
            let at = |e: String| format!("CPU {cpu}: {e}");
            let ring = SampleRing::open(cpu as i32, addr).map_err(at)?;
            self.poll.add(&ring).map_err(at)?;
            ring.enable().map_err(at)?;
            d.rings.push(ring);
        }
        Ok(())
    }

    /// Closes the device's watchpoints (it was freed), freeing budget.
    /// Returns whether it was watched.
    pub fn disarm(&mut self, dev: u64) -> bool {
        let Some(i) = self.devices.iter().position(|d| d.dev == dev) else {
            return false;
        };
        let d = self.devices.remove(i);
        self.forget(&d);
        true
    }

    /// Kernel-side state of a device whose fds are being dropped.
    fn forget(&mut self, d: &Device) {
        let _ = self.watched.remove(&d.dev);
        for addr in &d.addrs {
            let _ = self.prev.remove(addr);
        }
    }

    /// The perf rings woke the loop: read them, hand every sample over.
    pub fn on_rings_ready(&mut self, session: &mut Session) {
        self.poll.consume();
        self.collect(session);
        self.feed_until(u64::MAX, session);
    }

    /// Before a BPF event at `ts_ns` is handled: the samples of writes
    /// before it, so the ledger is up to date when the event reports it
    /// (a device's last release comes before its `dev_released`).
    pub fn before_event(&mut self, ts_ns: u64, session: &mut Session) {
        if self.devices.iter().any(|d| !d.rings.is_empty()) {
            self.collect(session);
            self.feed_until(ts_ns, session);
        }
    }

    /// Reads every ring into `pending`; lost writes go to the ledger.
    fn collect(&mut self, session: &mut Session) {
        let mut throttled = false;
        for d in &mut self.devices {
            for (cpu, ring) in d.rings.iter_mut().enumerate() {
                let addr = d.addrs[cpu];
                let Some(bytes) = ring.take() else {
                    log::warn!("CPU {cpu}'s perf ring had an impossible head: its unread samples were skipped");
                    session.on_watch_lost(addr, 1);
                    continue;
                };
                let parsed = perf_ring::parse(&bytes);
                if parsed.malformed > 0 {
                    session.on_watch_lost(addr, parsed.malformed);
                }
                for rec in parsed.records {
                    match rec {
                        perf_ring::Record::Sample(s) if s.time_ns >= d.seed_window.0 => {
                            let delta = match s.time_ns > d.seed_window.1 {
                                true => self.text.as_mut().ok().and_then(|t| t.delta(s.ip)),
                                false => None, // the seed may or may not include it
                            };
                            let stack_id = self.callchains.borrow_mut().intern(&s.callchain);
                            self.pending.push(hit(
                                &s,
                                cpu as u32,
                                addr,
                                delta.unwrap_or(0),
                                stack_id,
                            ));
                        }
                        // Before the seed read the counters: in the seed.
                        perf_ring::Record::Sample(_) => {}
                        perf_ring::Record::Lost(n) => session.on_watch_lost(addr, n),
                        perf_ring::Record::Throttled => throttled = true,
                    }
                }
            }
        }
        if throttled {
            log::warn!("the kernel throttled the breakpoint samples (kernel.perf_event_max_sample_rate): writes in the meantime were not seen");
        }
        self.pending.sort_by_key(|h| h.hdr.ts_ns);
    }

    fn feed_until(&mut self, ts_ns: u64, session: &mut Session) {
        let n = self.pending.partition_point(|h| h.hdr.ts_ns <= ts_ns);
        for h in self.pending.drain(..n) {
            session.on_event(Event::WatchHit(h));
        }
    }

    /// Runs `watch_seed(dev)` once, synchronously (BPF_PROG_TEST_RUN on a
    /// raw tracepoint program, 5.10+): it reads every CPU's counter into
    /// WATCH_PREV and reports them as a WATCH_SEED event.
    fn seed(&self, t: &WatchTarget, ncpu: usize) -> Result<Vec<i32>, String> {
        let (dev, inum) = (t.dev, t.inum);
        let ctx = [dev, u64::from(inum), t.addrs[0], u64::from(t.why)];
        let retval = crate::testrun::run(self.seed_fd, &ctx)
            .map_err(|e| format!("reading the counters (watch_seed): {e}"))?;
        log::debug!("watch_seed({dev:#x}, {inum}) returned {retval}");
        match retval {
            0 => {
                let values = self
                    .seeded
                    .get(&0, 0)
                    .map_err(|e| format!("reading WATCH_SEED: {e}"))?;
                Ok(values[..ncpu.min(values.len())].to_vec())
            }
            2 => Err(GONE.into()),
            _ => Err("reading the counters: a kernel read failed".into()),
        }
    }
}

/// A perf ring sample as the hit `watch_hit` would have sent (no value).
fn hit(s: &Sample, cpu: u32, addr: u64, delta: i32, stack_id: i32) -> WatchHit {
    WatchHit {
        hdr: Header {
            kind: kind::WATCH_HIT,
            cpu,
            ts_ns: s.time_ns,
            pid: s.tid,
            tgid: s.pid,
            comm: comm(s.tid, cpu),
        },
        addr,
        value: 0,
        delta,
        stack_id,
        _pad: 0,
    }
}

/// The writer's name: a sample carries only its ids, so it is read from
/// /proc while the task (most likely) still runs.
fn comm(tid: u32, cpu: u32) -> [u8; 16] {
    let name = match tid {
        0 => format!("swapper/{cpu}"),
        _ => std::fs::read_to_string(format!("/proc/{tid}/comm"))
            .map(|s| task_name(s.trim_end()).to_string())
            .unwrap_or_else(|_| "?".into()),
    };
    let mut out = [0u8; 16];
    let n = name.len().min(15);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// The task's own name, as `watch_hit` sees it: /proc shows a workqueue
/// worker with its current work appended (`kworker/1:0-events`).
fn task_name(proc_comm: &str) -> &str {
    match proc_comm.strip_prefix("kworker/") {
        Some(rest) => match rest.find(['-', '+']) {
            Some(i) => &proc_comm[.."kworker/".len() + i],
            None => proc_comm,
        },
        None => proc_comm,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kworker_names_lose_their_work() {
        assert_eq!(super::task_name("kworker/1:0-events"), "kworker/1:0");
        assert_eq!(super::task_name("kworker/u4:1+netns"), "kworker/u4:1");
        assert_eq!(super::task_name("kworker/u4:1"), "kworker/u4:1");
        assert_eq!(super::task_name("my-daemon"), "my-daemon");
    }

    #[test]
    fn attr_is_ver6_sized() {
        assert_eq!(std::mem::size_of::<super::PerfEventAttr>(), 112);
    }
}
