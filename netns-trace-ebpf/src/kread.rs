//! The one small layer every probe reads the kernel through: field offsets
//! come from the loader (resolved from the running kernel's BTF), so no
//! probe hard-codes a struct layout.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    maps::HashMap,
};
use netns_trace_common::{mode, stat, Config, Header, Offsets};

use crate::maps::{CallEntry, EVENTS, MODE, SCOPE_NETNS, SCOPE_TGIDS, STATS};

/// Overridden by the loader (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static OFFSETS: Offsets = Offsets::unresolved();

/// Overridden by the loader.
#[unsafe(no_mangle)]
static CONFIG: Config = Config::default_const();

/// `CLONE_NEWNET` from <linux/sched.h> (a stable UAPI value).
pub const CLONE_NEWNET: u64 = 0x4000_0000;

/// Reads one field of the offsets global (volatile: the loader rewrites it).
macro_rules! off {
    ($field:ident) => {
        crate::kread::volatile(&crate::kread::offsets_ref().$field)
    };
}
pub(crate) use off;

/// Reads one field of the config global.
macro_rules! setting {
    ($field:ident) => {
        crate::kread::volatile(&crate::kread::config_ref().$field)
    };
}
pub(crate) use setting;

#[inline(always)]
pub fn volatile<T: Copy>(field: &T) -> T {
    // The loader rewrites the globals before load; a plain read could be
    // constant-folded to the compiled-in defaults.
    unsafe { core::ptr::read_volatile(field) }
}

#[inline(always)]
pub fn offsets_ref() -> &'static Offsets {
    &OFFSETS
}

#[inline(always)]
pub fn config_ref() -> &'static Config {
    &CONFIG
}

/// Error marker: the failure was already counted in `STATS`.
pub struct Counted;

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = STATS.get_ptr_mut(index) {
        unsafe { *slot += 1 };
    }
}

/// Reads a `T` at `base + off`, counting a failure (or an offset the
/// running kernel does not have) as a read error.
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Result<T, Counted> {
    if off == Offsets::MISSING || base == 0 {
        count(stat::READ_ERRORS);
        return Err(Counted);
    }
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.map_err(|_| {
        count(stat::READ_ERRORS);
        Counted
    })
}

/// `net->ns.inum` of a `struct net *`.
#[inline(always)]
pub fn net_inum(net: u64) -> Result<u32, Counted> {
    read::<u32>(net, off!(net_inum))
}

/// The `struct net *` of the current task (`current->nsproxy->net_ns`).
#[inline(always)]
pub fn current_net() -> Result<u64, Counted> {
    task_net(unsafe { bpf_get_current_task() })
}

#[inline(always)]
pub fn task_net(task: u64) -> Result<u64, Counted> {
    let nsproxy = read::<u64>(task, off!(task_nsproxy))?;
    read::<u64>(nsproxy, off!(nsproxy_net))
}

#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn pid_tgid() -> u64 {
    bpf_get_current_pid_tgid()
}

#[inline(always)]
pub fn header(kind: u32) -> Header {
    let id = pid_tgid();
    Header {
        kind,
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns: now(),
        pid: id as u32,
        tgid: (id >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

/// `bpf_ringbuf_output` flags (uapi `BPF_RB_*`).
const RB_NO_WAKEUP: u64 = 1;
const RB_FORCE_WAKEUP: u64 = 2;
/// `bpf_ringbuf_query`: bytes written and not yet consumed.
const RB_AVAIL_DATA: u64 = 0;
/// A quarter of the ring: past this, a routine event wakes the reader too.
const WAKE_AT_BYTES: u64 = 256 << 10;

/// Flags for a routine event: no wakeup (the reader collects events every
/// poll interval, so a namespace's dozen events cost one wakeup of the
/// loader between them, not a dozen), unless the reader's last poll found
/// nothing (the first event after a quiet spell goes out at once; clearing
/// the flag keeps the rest batched) or the ring is filling up.
#[inline(always)]
pub fn lazy_wakeup() -> u64 {
    if let Some(idle) = MODE.get_ptr_mut(mode::READER_IDLE) {
        // Two CPUs may both see it set: one wakeup too many, harmless.
        if unsafe { *idle } != 0 {
            unsafe { *idle = 0 };
            return RB_FORCE_WAKEUP;
        }
    }
    if EVENTS.query(RB_AVAIL_DATA) >= WAKE_AT_BYTES {
        RB_FORCE_WAKEUP
    } else {
        RB_NO_WAKEUP
    }
}

/// Flags for an event the reader must act on now (a stuck device, a
/// watchpoint to arm): wake it even though older events are unread.
pub const URGENT: u64 = RB_FORCE_WAKEUP;

/// Writes a routine event to the ring buffer; a full buffer is a counted
/// drop.
#[inline(always)]
pub fn emit<T: 'static>(event: &T) {
    emit_with(event, lazy_wakeup());
}

/// Writes an event and wakes the reader at once.
#[inline(always)]
pub fn emit_urgent<T: 'static>(event: &T) {
    emit_with(event, URGENT);
}

#[inline(always)]
fn emit_with<T: 'static>(event: &T, flags: u64) {
    if EVENTS.output::<T>(event, flags).is_err() {
        count(stat::RINGBUF_DROPS);
    }
}

/// Records the entry of a call for the matching return probe.
#[inline(always)]
pub fn enter(calls: &HashMap<u64, CallEntry>, arg: u64) {
    let entry = CallEntry { ts_ns: now(), arg };
    if calls.insert(pid_tgid(), entry, 0).is_err() {
        count(stat::MAP_FULL);
    }
}

/// Takes the entry recorded by `enter` for this task, if any.
#[inline(always)]
pub fn leave(calls: &HashMap<u64, CallEntry>) -> Option<CallEntry> {
    let key = pid_tgid();
    let entry = unsafe { calls.get(key) }.copied();
    if entry.is_some() {
        let _ = calls.remove(key);
    }
    entry
}

#[inline(always)]
pub fn filtering() -> bool {
    setting!(filter_enabled) != 0
}

/// Is the current task in the `--pid` scope (always true without filter)?
#[inline(always)]
pub fn task_in_scope() -> bool {
    !filtering() || unsafe { SCOPE_TGIDS.get((pid_tgid() >> 32) as u32) }.is_some()
}

/// Is this namespace in scope (always true without filter)?
#[inline(always)]
pub fn netns_in_scope(inum: u32) -> bool {
    !filtering() || unsafe { SCOPE_NETNS.get(inum) }.is_some()
}

/// Adds a namespace an in-scope task created to the scope.
#[inline(always)]
pub fn add_netns_to_scope(inum: u32) {
    if filtering() && SCOPE_NETNS.insert(inum, 1, 0).is_err() {
        count(stat::MAP_FULL);
    }
}

/// An `ERR_PTR` value (the top 4095 addresses) as a negative errno.
#[inline(always)]
pub fn err_ptr(value: u64) -> Option<i32> {
    let signed = value as i64;
    if (-4095..0).contains(&signed) {
        Some(signed as i32)
    } else {
        None
    }
}
