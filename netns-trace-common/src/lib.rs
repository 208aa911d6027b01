//! Plain data shared by the eBPF programs and the loader.
//!
//! Every event written to the ring buffer starts with a [`Header`]; its
//! `kind` says which struct follows. All structs are `#[repr(C)]`, have no
//! implicit padding (explicit `_pad` fields instead) and are read by the
//! loader with an unaligned copy, so their layout is the wire format.
#![no_std]

/// Length of `task_struct.comm` and `net_device.name` (IFNAMSIZ).
pub const NAME_LEN: usize = 16;

/// Event kinds (`Header::kind`).
pub mod kind {
    /// A namespace was created (`copy_net_ns` return, or syscall level).
    pub const NETNS_CREATE: u32 = 1;
    /// The last reference on a namespace was dropped (`__put_net`): it is
    /// queued for `cleanup_net`.
    pub const NETNS_DESTROY: u32 = 2;
    /// `cleanup_net` started or ended (one batch of dying namespaces).
    pub const CLEANUP_NET: u32 = 3;
    /// `rtnl_unlock` (timed as `netdev_run_todo`, which is all it does)
    /// took longer than the configured threshold. (5 was a separate
    /// `netdev_run_todo` event, the same call timed twice: retired.)
    pub const RTNL_UNLOCK: u32 = 4;
    /// A device is in the unregister wait loop (`netdev_refcnt_read`).
    pub const DEV_WAIT: u32 = 6;
    /// An object took a reference on a device (`ObjHold`).
    pub const OBJ_HOLD: u32 = 7;
    /// An object dropped its device reference (`ObjRelease`).
    pub const OBJ_RELEASE: u32 = 8;
    /// A TCP/IP socket changed state (`SockState`).
    pub const SOCK_STATE: u32 = 9;
    /// A device's per-CPU refcount counters to watch (`WatchTarget`).
    pub const WATCH_TARGET: u32 = 10;
    /// A hardware watchpoint saw a counter written (`WatchHit`).
    pub const WATCH_HIT: u32 = 11;
    /// A watched device's refcount reached "free": disarm (`WatchDone`).
    pub const WATCH_DONE: u32 = 13;
    /// A task in uninterruptible sleep, from the task iterator
    /// (`BlockedTask`).
    pub const BLOCKED_TASK: u32 = 14;
    pub const TRACKER_START: u32 = 15;
    pub const TRACKER_CALL: u32 = 16;
}

/// `Config::exact`: which devices get hardware watchpoints.
pub mod exact_mode {
    pub const OFF: u32 = 0;
    /// Devices found in the unregister wait loop (the default).
    pub const STUCK: u32 = 1;
    /// Also every new loopback device (`--exact`).
    pub const ALL: u32 = 2;
}

/// `ObjHold::found_by`.
pub mod found_by {
    /// Seen being created (it has a creation time, task and stack).
    pub const TRACE: u32 = 0;
    /// Found holding a stuck device by a walk of kernel tables.
    pub const SCAN: u32 = 1;
}

/// `WatchTarget::why`: what made the kernel side ask for a watch.
pub mod watch_why {
    /// A loopback device registered in a new namespace.
    pub const CREATED: u32 = 1;
    /// A device was found in the unregister wait loop.
    pub const WAITING: u32 = 2;
}

/// Most CPUs whose counters one `WatchTarget` carries.
pub const WATCH_MAX_CPUS: usize = 64;

/// `ObjHold::obj_kind` / `ObjRelease::obj_kind`.
pub mod obj_kind {
    /// A `struct dst_entry` (route cache entry), holding `dst->dev`.
    pub const DST: u32 = 1;
    /// A `struct neighbour` (ARP/NDP entry), holding `n->dev`.
    pub const NEIGH: u32 = 2;
}

/// `ObjRelease::reason`.
pub mod release_reason {
    /// The object was freed (`dst_destroy`, `neigh_destroy`).
    pub const DESTROYED: u32 = 1;
    /// `dst_dev_put`: the dst now holds `blackhole_netdev` instead.
    pub const MOVED_OFF_DEVICE: u32 = 2;
}

/// Where a `NETNS_CREATE` came from.
pub mod create_source {
    /// Hooked `copy_net_ns` (exact: every namespace, with its duration).
    pub const COPY_NET_NS: u32 = 0;
    /// `unshare(2)` syscall tracepoints (degraded mode).
    pub const UNSHARE: u32 = 1;
    /// `sched_process_fork` with a child in a new namespace (degraded mode).
    pub const FORK: u32 = 2;
}

/// `CleanupNet::phase`.
pub mod phase {
    pub const START: u32 = 0;
    pub const END: u32 = 1;
}

/// Bits of `DevWait::flags`.
pub mod dev_wait_flags {
    /// The waiting task's `netdev_run_todo` entry was seen, so
    /// `wait_start_ns` is the kernel's own start of the wait.
    pub const RUN_TODO_SEEN: u32 = 1;
    /// The device stopped waiting (its count fell back to the baseline):
    /// the last event for it, carrying the whole wait.
    pub const RELEASED: u32 = 2;
}

/// Indexes of the per-CPU `STATS` array (counters the programs bump).
pub mod stat {
    /// Ring buffer full: an event was dropped.
    pub const RINGBUF_DROPS: u32 = 0;
    /// A kernel read (bpf_probe_read_kernel) failed; the event was dropped.
    pub const READ_ERRORS: u32 = 1;
    /// A bounded map was full; tracking state was not recorded.
    pub const MAP_FULL: u32 = 2;
    /// A return probe fired with no matching entry (attached mid-call).
    pub const MISSED_ENTRY: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// Indexes of the `MODE` array map, written by the loader after attaching
/// (a global would be frozen at load time, before the attach plan is known).
pub mod mode {
    /// 1: no kprobe/fentry on copy_net_ns; the fork tracepoint reports
    /// namespace creation instead.
    pub const DEGRADED: u32 = 0;
    /// ref_tracker_alloc/free/dir_exit are all hooked: new loopback
    /// devices are counted through the kernel's tracker.
    pub const TRACKER: u32 = 1;
    /// 1: the reader's last poll found the ring empty. The next routine
    /// event wakes it and clears this, so the first event after a quiet
    /// spell is not held back a poll interval; while events flow they are
    /// batched.
    pub const READER_IDLE: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// Common prefix of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Thread id of the task that triggered the event.
    pub pid: u32,
    /// Process id (thread group) of that task.
    pub tgid: u32,
    pub comm: [u8; NAME_LEN],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetnsCreate {
    pub hdr: Header,
    /// `copy_net_ns` flags argument (or the unshare/clone flags).
    pub flags: u64,
    /// Time spent in `copy_net_ns` (0 when unknown, e.g. syscall level).
    pub duration_ns: u64,
    /// Kernel address of the `struct net` (0 on error).
    pub net: u64,
    /// `net->ns.inum`, the inode of /proc/PID/ns/net (0 on error).
    pub inum: u32,
    /// Negative errno when `copy_net_ns` failed, else 0.
    pub err: i32,
    /// One of [`create_source`].
    pub source: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetnsDestroy {
    pub hdr: Header,
    pub net: u64,
    pub inum: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanupNet {
    pub hdr: Header,
    /// One of [`phase`].
    pub phase: u32,
    pub _pad: u32,
    /// On `END`: time since the matching `START` (0 if it was not seen).
    pub duration_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtnlUnlock {
    pub hdr: Header,
    pub duration_ns: u64,
    /// Return address of the `netdev_run_todo` call: the caller of
    /// `rtnl_unlock`, which tail-calls it (symbolised by the loader).
    pub caller: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevWait {
    pub hdr: Header,
    /// Kernel address of the `struct net_device`.
    pub dev: u64,
    /// Kernel address of its `struct net`.
    pub net: u64,
    pub inum: u32,
    pub ifindex: i32,
    /// `netdev_refcnt_read()`: the number the kernel prints as "Usage count".
    pub refcnt: i32,
    /// Bits of [`dev_wait_flags`].
    pub flags: u32,
    pub name: [u8; NAME_LEN],
    /// When the programs first saw this device waiting.
    pub first_seen_ns: u64,
    /// Entry of the waiting task's `netdev_run_todo` (0 if not seen).
    pub wait_start_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjHold {
    pub hdr: Header,
    /// Kernel address of the object (the ledger key).
    pub obj: u64,
    /// The device it holds.
    pub dev: u64,
    /// Namespace inode of that device.
    pub inum: u32,
    pub ifindex: i32,
    /// One of [`obj_kind`].
    pub obj_kind: u32,
    /// Address family: neighbour table family, dst ops family.
    pub family: u32,
    /// Kernel stack id in the `STACKS` map; negative when not taken.
    pub stack_id: i32,
    /// One of [`found_by`]: seen being created, or found by a scan.
    pub found_by: u32,
    /// Neighbour primary key (IPv4: first 4 bytes; IPv6: 16).
    pub key: [u8; 16],
    pub dev_name: [u8; NAME_LEN],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjRelease {
    pub hdr: Header,
    pub obj: u64,
    /// One of [`obj_kind`].
    pub obj_kind: u32,
    /// One of [`release_reason`].
    pub reason: u32,
}

/// From the `sock:inet_sock_set_state` tracepoint, for sockets in
/// namespaces other than the initial one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockState {
    pub hdr: Header,
    /// Kernel address of the `struct sock`.
    pub sk: u64,
    /// `sk->sk_dst_cache` (0: none cached).
    pub dst: u64,
    /// `sk->sk_dst_cache->dev` (0: none).
    pub dst_dev: u64,
    /// Namespace inode of the socket.
    pub inum: u32,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    /// IPPROTO_TCP (6), ...
    pub protocol: u16,
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    /// TCP states (1 = ESTABLISHED ... 7 = CLOSE, 10 = LISTEN).
    pub oldstate: u8,
    pub newstate: u8,
    /// 1: a kernel socket (`sk->sk_kern_sock`).
    pub kernel: u8,
    pub _pad: u8,
    /// IPv4 in the first 4 bytes, or IPv6.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub dst_dev_name: [u8; NAME_LEN],
}

/// The addresses of a device's per-CPU reference counters (one `int` per
/// possible CPU): a request to the loader to arm watchpoints on them, for
/// `--exact`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchTarget {
    pub hdr: Header,
    pub dev: u64,
    pub inum: u32,
    /// Number of valid entries in `addrs`.
    pub ncpu: u32,
    pub name: [u8; NAME_LEN],
    /// `watch_why` (targets only).
    pub why: u32,
    pub _pad: u32,
    pub addrs: [u64; WATCH_MAX_CPUS],
}

/// A write to a watched counter: one `dev_hold` (+1) or `dev_put` (-1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchHit {
    pub hdr: Header,
    /// The counter's address (identifies device and CPU).
    pub addr: u64,
    /// Its value after the write.
    pub value: i32,
    /// `value` minus the previous value (0 when the previous is unknown).
    pub delta: i32,
    /// Kernel stack of the writer in `STACKS`; negative when not taken.
    pub stack_id: i32,
    pub _pad: u32,
}

/// Most frames of a blocked task's kernel stack that are kept.
pub const BLOCKED_FRAMES: usize = 24;

/// A task in uninterruptible sleep (`TASK_UNINTERRUPTIBLE`), seen by the
/// task iterator. The header names the task itself (not the iterating
/// one); `hdr.ts_ns` is when it was seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockedTask {
    pub hdr: Header,
    /// `task_struct.__state`.
    pub state: u32,
    /// Valid entries in `ips` (innermost first).
    pub nr: u32,
    /// `se.exec_start`: when it last ran (scheduler clock, ns).
    pub last_ran_ns: u64,
    /// `se.exec_start` of the task running the iterator: "now" on the
    /// same scheduler clock (`hdr.ts_ns` is CLOCK_MONOTONIC, which sits a
    /// per-boot offset away from it).
    pub seen_sched_ns: u64,
    pub ips: [u64; BLOCKED_FRAMES],
}

/// A watched device is free (its refcount read as the free value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchDone {
    pub hdr: Header,
    pub dev: u64,
}

/// A new loopback device the tracker ledger counts from now on: its
/// per-CPU counters summed right after it was marked (the seed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerStart {
    pub hdr: Header,
    pub dev: u64,
    pub inum: u32,
    pub refcnt: i32,
    pub name: [u8; NAME_LEN],
    /// `refcnt_tracker.no_tracker` then (see `TrackerCall::no_tracker`).
    pub no_tracker: i32,
    pub _pad: u32,
}

pub mod tracker_op {
    /// ref_tracker_alloc: a reference taken (or an untracked one upgraded).
    pub const ALLOC: u32 = 1;
    /// ref_tracker_free: a reference given back.
    pub const FREE: u32 = 2;
    /// ref_tracker_dir_exit: the device is being freed.
    pub const EXIT: u32 = 3;
}

/// One ref_tracker call on a counted device's `refcnt_tracker`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerCall {
    pub hdr: Header,
    pub dev: u64,
    /// `trackerp`: where the caller keeps its tracker (0: an untracked
    /// `dev_hold`/`dev_put`). Alloc and free of one reference pass the same.
    pub slot: u64,
    pub op: u32,
    /// `dir->no_tracker` at entry: an upgrade of an untracked reference
    /// (netdev_tracker_alloc) decrements it just before its alloc call.
    pub no_tracker: i32,
    pub stack_id: i32,
    pub _pad: u32,
}

/// Struct field offsets and enum values of the running kernel, resolved
/// from its BTF by the loader and handed to the programs as a global.
/// `u32::MAX` marks a field that the running kernel does not have.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    /// `offsetof(struct net, ns.inum)`.
    pub net_inum: u32,
    /// `offsetof(struct net_device, name)`.
    pub dev_name: u32,
    /// `offsetof(struct net_device, ifindex)`.
    pub dev_ifindex: u32,
    /// `offsetof(struct net_device, nd_net.net)`.
    pub dev_net: u32,
    /// `offsetof(struct net_device, reg_state)` (a byte).
    pub dev_reg_state: u32,
    /// Value of `NETREG_UNREGISTERED`.
    pub netreg_unregistered: u32,
    /// `offsetof(struct task_struct, nsproxy)`.
    pub task_nsproxy: u32,
    /// `offsetof(struct nsproxy, net_ns)`.
    pub nsproxy_net: u32,
    /// `offsetof(struct task_struct, tgid)`.
    pub task_tgid: u32,
    /// Tracepoint record offsets, read from tracefs `format` files:
    /// `sys_enter_unshare.unshare_flags`, `sys_exit_unshare.ret`,
    /// `workqueue_execute_start.work`, `workqueue_execute_start.function`.
    pub tp_unshare_flags: u32,
    pub tp_unshare_ret: u32,
    pub tp_wq_work: u32,
    pub tp_wq_function: u32,
    /// `offsetof(struct dst_entry, dev)`, `(dst_entry, ops)`,
    /// `(dst_ops, family)`.
    pub dst_dev: u32,
    pub dst_ops: u32,
    pub dst_ops_family: u32,
    /// `offsetof(struct neighbour, dev)`, `(neighbour, tbl)`,
    /// `(neighbour, primary_key)`, `(neigh_table, family)`.
    pub neigh_dev: u32,
    pub neigh_tbl: u32,
    pub neigh_key: u32,
    pub neigh_tbl_family: u32,
    /// The neighbour hash (6.1-6.12 layout): `neighbour.next`,
    /// `neigh_table.nht`, `neigh_hash_table.hash_buckets` / `hash_shift`.
    pub neigh_next: u32,
    pub tbl_nht: u32,
    pub nht_buckets: u32,
    pub nht_shift: u32,
    /// The task iterator: `task_struct.__state`, `.pid`, `.comm`,
    /// `.se.exec_start`.
    pub task_state: u32,
    pub task_pid: u32,
    pub task_comm: u32,
    pub task_exec_start: u32,
    /// The TCP socket walk: `sock_common.skc_state`.
    pub skc_state: u32,
    /// `offsetof(struct sock, __sk_common.skc_net.net)`, `(sock,
    /// sk_dst_cache)`; the byte and bit of the `sk_kern_sock` bitfield.
    pub sock_net: u32,
    pub sock_dst_cache: u32,
    pub sock_kern_byte: u32,
    pub sock_kern_bit: u32,
    /// `sock:inet_sock_set_state` record offsets (tracefs format).
    pub tp_sk_skaddr: u32,
    pub tp_sk_oldstate: u32,
    pub tp_sk_newstate: u32,
    pub tp_sk_sport: u32,
    pub tp_sk_dport: u32,
    pub tp_sk_family: u32,
    pub tp_sk_protocol: u32,
    pub tp_sk_saddr: u32,
    pub tp_sk_daddr: u32,
    pub tp_sk_saddr_v6: u32,
    pub tp_sk_daddr_v6: u32,
    /// The same fields read from the socket itself, for the tp_btf program
    /// (which gets only the socket), where the tracepoint takes them:
    /// `sock.__sk_common.skc_family`, `sock.sk_protocol`,
    /// `inet_sock.inet_sport` and `sock.__sk_common.skc_dport` (both in
    /// network order), `inet_sock.inet_saddr`, `__sk_common.skc_daddr`,
    /// `skc_v6_rcv_saddr`, `skc_v6_daddr` (MISSING without IPv6).
    pub sk_family: u32,
    pub sk_protocol: u32,
    pub sk_sport: u32,
    pub sk_dport: u32,
    pub sk_saddr: u32,
    pub sk_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_v6_daddr: u32,
    /// `offsetof(struct net_device, pcpu_refcnt)` (MISSING without
    /// CONFIG_PCPU_DEV_REFCNT) and `offsetof(struct net, loopback_dev)`.
    pub dev_pcpu_refcnt: u32,
    pub net_loopback_dev: u32,
    /// `net_device.refcnt_tracker` (CONFIG_NET_DEV_REFCNT_TRACKER only).
    pub dev_refcnt_tracker: u32,
    /// `ref_tracker_dir.no_tracker` (CONFIG_REF_TRACKER only).
    pub tracker_no_tracker: u32,
}

impl Offsets {
    pub const MISSING: u32 = u32::MAX;
    pub const fn unresolved() -> Self {
        Self {
            net_inum: Self::MISSING,
            dev_name: Self::MISSING,
            dev_ifindex: Self::MISSING,
            dev_net: Self::MISSING,
            dev_reg_state: Self::MISSING,
            netreg_unregistered: Self::MISSING,
            task_nsproxy: Self::MISSING,
            nsproxy_net: Self::MISSING,
            task_tgid: Self::MISSING,
            tp_unshare_flags: Self::MISSING,
            tp_unshare_ret: Self::MISSING,
            tp_wq_work: Self::MISSING,
            tp_wq_function: Self::MISSING,
            dst_dev: Self::MISSING,
            dst_ops: Self::MISSING,
            dst_ops_family: Self::MISSING,
            neigh_dev: Self::MISSING,
            neigh_tbl: Self::MISSING,
            neigh_key: Self::MISSING,
            neigh_tbl_family: Self::MISSING,
            neigh_next: Self::MISSING,
            tbl_nht: Self::MISSING,
            nht_buckets: Self::MISSING,
            nht_shift: Self::MISSING,
            task_state: Self::MISSING,
            task_pid: Self::MISSING,
            task_comm: Self::MISSING,
            task_exec_start: Self::MISSING,
            skc_state: Self::MISSING,
            sock_net: Self::MISSING,
            sock_dst_cache: Self::MISSING,
            sock_kern_byte: Self::MISSING,
            sock_kern_bit: Self::MISSING,
            tp_sk_skaddr: Self::MISSING,
            tp_sk_oldstate: Self::MISSING,
            tp_sk_newstate: Self::MISSING,
            tp_sk_sport: Self::MISSING,
            tp_sk_dport: Self::MISSING,
            tp_sk_family: Self::MISSING,
            tp_sk_protocol: Self::MISSING,
            tp_sk_saddr: Self::MISSING,
            tp_sk_daddr: Self::MISSING,
            tp_sk_saddr_v6: Self::MISSING,
            tp_sk_daddr_v6: Self::MISSING,
            sk_family: Self::MISSING,
            sk_protocol: Self::MISSING,
            sk_sport: Self::MISSING,
            sk_dport: Self::MISSING,
            sk_saddr: Self::MISSING,
            sk_daddr: Self::MISSING,
            sk_v6_rcv_saddr: Self::MISSING,
            sk_v6_daddr: Self::MISSING,
            dev_pcpu_refcnt: Self::MISSING,
            net_loopback_dev: Self::MISSING,
            dev_refcnt_tracker: Self::MISSING,
            tracker_no_tracker: Self::MISSING,
        }
    }
}

/// Run-time settings handed to the programs as a global.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// 1: only namespaces in `SCOPE_NETNS` and tasks in `SCOPE_TGIDS`.
    pub filter_enabled: u32,
    pub _pad: u32,
    /// `rtnl_unlock` calls faster than this are not reported.
    pub rtnl_threshold_ns: u64,
    /// At most one `DEV_WAIT` per device per this interval.
    pub dev_wait_interval_ns: u64,
    /// `netdev_refcnt_read()` of a device nobody else holds: 1 since 5.13
    /// (a registered device holds itself), 0 before. Reads above it mean
    /// the device is really waiting.
    pub free_refcnt: i32,
    /// Inode of the initial namespace: its devices are not attributed
    /// (the host's own lo never unregisters).
    pub init_netns_inum: u32,
    /// Address of `cleanup_net` (from kallsyms), to recognise its work
    /// item in the workqueue tracepoints (degraded mode).
    pub cleanup_net_addr: u64,
    /// `exact_mode`: whose refcount counters to report for hardware
    /// watchpoints (devices found waiting; with `--exact` new lo too).
    pub exact: u32,
    /// Possible CPUs (at most `WATCH_MAX_CPUS` are watched).
    pub nr_cpus: u32,
    /// Address of `__per_cpu_offset` (kallsyms), to locate per-CPU data.
    pub per_cpu_offset_addr: u64,
    /// Address of `netdev_run_todo` (kallsyms): the fexit program checks
    /// that the trampoline frame it reads the caller from is the one that
    /// `netdev_run_todo` called (0: never trust the frame).
    pub run_todo_addr: u64,
    /// Address of `net_todo_list` (kallsyms, a data symbol): calls of
    /// `netdev_run_todo` that find it empty are not timed (0: all are).
    pub net_todo_list_addr: u64,
}

impl Config {
    pub const fn default_const() -> Self {
        Self {
            filter_enabled: 0,
            _pad: 0,
            rtnl_threshold_ns: 10_000_000,
            dev_wait_interval_ns: 1_000_000_000,
            free_refcnt: 1,
            init_netns_inum: 0,
            cleanup_net_addr: 0,
            exact: 0,
            nr_cpus: 1,
            per_cpu_offset_addr: 0,
            run_todo_addr: 0,
            net_todo_list_addr: 0,
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers with no padding.
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::Config {}
}

/// Size in bytes of the event struct for `kind`, or `None` if unknown.
pub const fn event_size(kind: u32) -> Option<usize> {
    use core::mem::size_of;
    match kind {
        kind::NETNS_CREATE => Some(size_of::<NetnsCreate>()),
        kind::NETNS_DESTROY => Some(size_of::<NetnsDestroy>()),
        kind::CLEANUP_NET => Some(size_of::<CleanupNet>()),
        kind::RTNL_UNLOCK => Some(size_of::<RtnlUnlock>()),
        kind::DEV_WAIT => Some(size_of::<DevWait>()),
        kind::OBJ_HOLD => Some(size_of::<ObjHold>()),
        kind::OBJ_RELEASE => Some(size_of::<ObjRelease>()),
        kind::SOCK_STATE => Some(size_of::<SockState>()),
        kind::WATCH_TARGET => Some(size_of::<WatchTarget>()),
        kind::WATCH_HIT => Some(size_of::<WatchHit>()),
        kind::WATCH_DONE => Some(size_of::<WatchDone>()),
        kind::BLOCKED_TASK => Some(size_of::<BlockedTask>()),
        kind::TRACKER_START => Some(size_of::<TrackerStart>()),
        kind::TRACKER_CALL => Some(size_of::<TrackerCall>()),
        _ => None,
    }
}
