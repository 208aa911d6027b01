//! Maps shared by the hook families. Sizes are bounds, not guesses: a full
//! map is counted (`stat::MAP_FULL`) and reported by the loader.
use core::cell::UnsafeCell;

use aya_ebpf::{
    bindings::{bpf_map_def, bpf_map_type::BPF_MAP_TYPE_STACK_TRACE},
    helpers::bpf_get_stackid,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    EbpfContext,
};
use netns_trace_common::{mode, stat, WATCH_MAX_CPUS};

/// The one ring buffer every event goes through (1 MiB).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Per-CPU counters, indexed by `netns_trace_common::stat`.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Run-time switches, indexed by `netns_trace_common::mode`.
#[map]
pub static MODE: Array<u32> = Array::with_max_entries(mode::COUNT, 0);

/// Scope filter: thread-group ids whose namespaces are in scope (`--pid`
/// and its descendants, grown on fork).
#[map]
pub static SCOPE_TGIDS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(65536, 0);

/// Scope filter: namespace inodes in scope (`--netns`, and every namespace
/// an in-scope task created).
#[map]
pub static SCOPE_NETNS: HashMap<u32, u8> = HashMap::with_max_entries(8192, 0);

/// Entry state of a function call in flight, keyed by pid_tgid.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CallEntry {
    pub ts_ns: u64,
    /// Hook specific: copy_net_ns flags, a device, a work item...
    pub arg: u64,
}

#[map]
pub static COPY_NET_NS_CALLS: HashMap<u64, CallEntry> = HashMap::with_max_entries(4096, 0);
#[map]
pub static CLEANUP_NET_CALLS: HashMap<u64, CallEntry> = HashMap::with_max_entries(64, 0);
#[map]
pub static RUN_TODO_CALLS: HashMap<u64, CallEntry> = HashMap::with_max_entries(4096, 0);
#[map]
pub static REFCNT_READ_CALLS: HashMap<u64, CallEntry> = HashMap::with_max_entries(4096, 0);
#[map]
pub static NEIGH_CREATE_CALLS: HashMap<u64, CallEntry> = HashMap::with_max_entries(4096, 0);
#[map]
pub static UNSHARE_CALLS: HashMap<u64, CallEntry> = HashMap::with_max_entries(4096, 0);

/// Per waiting device (key: `struct net_device` address): rate limiting.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DevState {
    pub first_seen_ns: u64,
    pub last_emit_ns: u64,
}

#[map]
pub static WAITING_DEVS: LruHashMap<u64, DevState> = LruHashMap::with_max_entries(1024, 0);

/// Kernel stacks of object creations (`ObjHold::stack_id`), tracker calls
/// and watchpoint hits.
#[unsafe(link_section = "maps")]
#[unsafe(export_name = "STACKS")]
pub static STACKS: ShortStacks = ShortStacks::new(16384);

/// Frames kept of each stack. aya-ebpf's `StackTrace` keeps 127, the
/// most the kernel allows: with 16,384 entries that was 16.6 MB the kernel
/// allocated and zeroed at every start (~24 ms of the 6.12 guest's
/// start-up). The stacks shown are where a device reference was taken or
/// dropped; the deepest seen in the tests had 19 frames, and the kernel's
/// own ref_tracker keeps 16.
pub const STACK_FRAMES: u32 = 32;

/// A stack trace map of [`STACK_FRAMES`] frames a stack (a legacy map
/// definition, which aya's loader reads from the `maps` section).
#[repr(transparent)]
pub struct ShortStacks(UnsafeCell<bpf_map_def>);

// SAFETY: the definition is only read, by the loader and the kernel.
unsafe impl Sync for ShortStacks {}

impl ShortStacks {
    const fn new(max_entries: u32) -> Self {
        ShortStacks(UnsafeCell::new(bpf_map_def {
            type_: BPF_MAP_TYPE_STACK_TRACE,
            key_size: 4,
            value_size: 8 * STACK_FRAMES,
            max_entries,
            map_flags: 0,
            id: 0,
            pinning: 0,
        }))
    }

    /// The id of the current kernel stack (`bpf_get_stackid`), or the
    /// helper's negative error.
    #[inline(always)]
    pub fn id_of<C: EbpfContext>(&self, ctx: &C, flags: u64) -> i32 {
        // SAFETY: a helper call on this map and the program's context.
        let ret = unsafe { bpf_get_stackid(ctx.as_ptr(), self.0.get().cast(), flags) };
        ret as i32
    }
}

/// Objects whose hold was reported (in scope, not in the initial
/// namespace): only their releases are worth an event.
#[map]
pub static TRACKED_OBJS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65536, 0);

/// Last value of each watched per-CPU counter, to turn a write into +1/-1.
#[map]
pub static WATCH_PREV: LruHashMap<u64, i32> = LruHashMap::with_max_entries(4096, 0);

/// The counters `watch_seed` read (one slot: the loader runs it and reads
/// this back synchronously, one device at a time).
#[map]
pub static WATCH_SEED: Array<[i32; WATCH_MAX_CPUS]> = Array::with_max_entries(1, 0);

/// Devices whose counters the loader watches (set by the loader), so that
/// their release can be reported (`WATCH_DONE`) and the watchpoints closed.
#[map]
pub static WATCHED_DEVS: HashMap<u64, u8> = HashMap::with_max_entries(64, 0);

/// Devices counted through ref_tracker (`reftrack::start`), removed when
/// their tracker directory is torn down (the device is freed).
#[map]
pub static TRACKER_DEVS: HashMap<u64, u8> = HashMap::with_max_entries(8192, 0);
