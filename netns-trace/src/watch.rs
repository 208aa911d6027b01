//! Hardware write-watchpoints on a device's per-CPU reference counters,
//! opened by hand: one PERF_TYPE_BREAKPOINT event per CPU on that CPU's
//! counter, with the `watch_hit` BPF program attached by
//! PERF_EVENT_IOC_SET_BPF. (Aya's breakpoint attach asks for precise_ip 2,
//! which the kernel refuses for breakpoints with EPROTO.)
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

use crate::{probes::program, trace::take};
use aya::{
    maps::{Array as BpfArray, HashMap as BpfHashMap, MapData},
    programs::{PerfEvent, RawTracePoint},
    Ebpf,
};
use netns_trace::exact::{Armed, Evicted};
use netns_trace::output::Record;
use netns_trace::session::Session;
use netns_trace_common::{watch_why, WatchTarget, WATCH_MAX_CPUS};

/// `struct perf_event_attr` up to `sample_max_stack` (PERF_ATTR_SIZE_VER6,
/// 112 bytes, understood by every kernel since 5.x).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    bp_addr: u64,
    bp_len: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
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
    _fds: Vec<OwnedFd>,
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
}

impl Watcher {
    /// `hit_fd`/`seed_fd`: the loaded `watch_hit` and `watch_seed`
    /// programs; the maps are `WATCH_PREV`, `WATCHED_DEVS`, `WATCH_SEED`.
    pub fn new(
        hit_fd: RawFd,
        seed_fd: RawFd,
        prev: BpfHashMap<MapData, u64, i32>,
        watched: BpfHashMap<MapData, u64, u8>,
        seeded: BpfArray<MapData, [i32; WATCH_MAX_CPUS]>,
        own: i32,
    ) -> Self {
        Self {
            hit_fd,
            seed_fd,
            prev,
            watched,
            seeded,
            own: own.into(),
            devices: Vec::new(),
        }
    }

    /// Loads `watch_hit` (perf_event) and `watch_seed` (raw tracepoint,
    /// never attached) and takes the two maps the loader writes.
    /// `own`: the device's reference on itself (1 since 5.13, else 0).
    pub fn load(ebpf: &mut Ebpf, own: i32) -> anyhow::Result<Self> {
        let hit: &mut PerfEvent = program(ebpf, "watch_hit")?.try_into()?;
        hit.load()?;
        let hit_fd = hit.fd()?.as_fd().as_raw_fd();
        let seed: &mut RawTracePoint = program(ebpf, "watch_seed")?.try_into()?;
        seed.load()?;
        let seed_fd = seed.fd()?.as_fd().as_raw_fd();
        let prev = take(ebpf, "WATCH_PREV")?;
        let watched = take(ebpf, "WATCHED_DEVS")?;
        let seeded = take(ebpf, "WATCH_SEED")?;
        Ok(Self::new(hit_fd, seed_fd, prev, watched, seeded, own))
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
        };
        // Marked watched first: a release from now on is reported.
        if let Err(e) = self.watched.insert(t.dev, 1, 0) {
            return Armed::Refused(format!("WATCHED_DEVS: {e}"));
        }
        if let Err(why) = self.open_all(&mut d) {
            self.forget(&d);
            return Armed::Refused(why);
        }
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
        self.devices.push(d);
        Armed::Now {
            seed,
            at_ns: crate::trace::ktime_now(),
        }
    }

    fn open_all(&mut self, d: &mut Device) -> Result<(), String> {
        for (cpu, &addr) in d.addrs.iter().enumerate() {
            if addr == 0 {
                return Err(format!("CPU {cpu}: counter address unknown"));
            }
            // A previous device at this address must not lend its value.
            let _ = self.prev.remove(&addr);
            let fd = self
                .open(cpu as i32, addr)
                .map_err(|e| format!("CPU {cpu}: {e}"))?;
            d._fds.push(fd);
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

    fn open(&self, cpu: i32, addr: u64) -> Result<OwnedFd, String> {
        let attr = PerfEventAttr {
            type_: PERF_TYPE_BREAKPOINT,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            sample_period: 1,
            sample_type: PERF_SAMPLE_CALLCHAIN,
            flags: FLAG_DISABLED,
            wakeup_events: 1,
            bp_type: HW_BREAKPOINT_W,
            bp_addr: addr,
            bp_len: HW_BREAKPOINT_LEN_4,
            ..PerfEventAttr::default()
        };
        // SAFETY: a valid attr; pid -1 + cpu: every task on that CPU.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
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
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        for (what, req, arg) in [
            (
                "PERF_EVENT_IOC_SET_BPF",
                PERF_EVENT_IOC_SET_BPF,
                self.hit_fd as libc::c_ulong,
            ),
            ("PERF_EVENT_IOC_ENABLE", PERF_EVENT_IOC_ENABLE, 0),
        ] {
            // SAFETY: ioctls on our perf fd.
            if unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) } != 0 {
                return Err(format!("{what}: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn attr_is_ver6_sized() {
        assert_eq!(std::mem::size_of::<super::PerfEventAttr>(), 112);
    }
}
