//! Namespace lifecycle: `copy_net_ns` (creation), `__put_net` (last
//! reference dropped, queued for cleanup) and `cleanup_net` (the batch
//! teardown worker). Each hook has a kprobe and an fentry flavour sharing
//! one body; the loader attaches whichever the kernel allows.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    EbpfContext as _,
};
use netns_trace_common::{create_source, kind, phase, CleanupNet, NetnsCreate, NetnsDestroy};

use crate::{
    kread::{
        add_netns_to_scope, emit, enter, err_ptr, header, leave, net_inum, netns_in_scope, now,
        off, task_in_scope, Counted, CLONE_NEWNET,
    },
    maps::{CallEntry, CLEANUP_NET_CALLS, COPY_NET_NS_CALLS},
};

/// A NETNS_CREATE for the call recorded at entry (flags, duration).
pub fn create_event(call: &CallEntry, source: u32) -> NetnsCreate {
    let hdr = header(kind::NETNS_CREATE);
    NetnsCreate {
        flags: call.arg,
        duration_ns: hdr.ts_ns.saturating_sub(call.ts_ns),
        source,
        hdr,
        ..Default::default()
    }
}

/// Names the new namespace in `event` and adds it to the scope.
pub fn set_created_net(event: &mut NetnsCreate, net: u64) -> Result<(), Counted> {
    event.net = net;
    event.inum = net_inum(net)?;
    add_netns_to_scope(event.inum);
    Ok(())
}

// --- copy_net_ns(unsigned long flags, struct user_namespace *, struct net *old)

fn copy_net_ns_enter(flags: u64) {
    // copy_namespaces() calls copy_net_ns for any CLONE_NEW* flag; only a
    // CLONE_NEWNET call creates a namespace.
    if flags & CLONE_NEWNET != 0 && task_in_scope() {
        enter(&COPY_NET_NS_CALLS, flags);
    }
}

fn copy_net_ns_exit(ret: u64) -> Result<(), Counted> {
    let Some(call) = leave(&COPY_NET_NS_CALLS) else {
        return Ok(());
    };
    let mut event = create_event(&call, create_source::COPY_NET_NS);
    match err_ptr(ret) {
        Some(errno) => event.err = errno,
        None => set_created_net(&mut event, ret)?,
    }
    emit(&event);
    if event.net != 0 {
        // The new namespace's lo is registered by now: count it from the
        // start so every later hold is seen, through the kernel's
        // ref_tracker when hooked (every device, no debug registers), else
        // with watchpoints (--exact).
        if let Ok(lo) = crate::kread::read::<u64>(event.net, off!(net_loopback_dev)) {
            if !crate::reftrack::start(lo, event.inum) {
                let _ = crate::watch::arm(lo, netns_trace_common::watch_why::CREATED);
            }
        }
    }
    Ok(())
}

#[kprobe]
pub fn copy_net_ns_kprobe(ctx: ProbeContext) -> u32 {
    copy_net_ns_enter(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

#[kretprobe]
pub fn copy_net_ns_kretprobe(ctx: RetProbeContext) -> u32 {
    let _ = copy_net_ns_exit(ctx.ret::<u64>());
    0
}

#[fentry(function = "copy_net_ns")]
pub fn copy_net_ns_fentry(ctx: FEntryContext) -> u32 {
    copy_net_ns_enter(ctx.arg::<u64>(0));
    0
}

#[fexit(function = "copy_net_ns")]
pub fn copy_net_ns_fexit(ctx: FExitContext) -> u32 {
    // fexit sees the arguments, then the return value (three arguments).
    // The verifier types it as a trusted `struct net *` and refuses the
    // ERR_PTR range check on it, so copy it out as a plain number.
    let slot = unsafe { (ctx.as_ptr() as *const u64).add(3) };
    let ret = unsafe { bpf_probe_read_kernel(slot) }.unwrap_or(0);
    let _ = copy_net_ns_exit(ret);
    0
}

// --- __put_net(struct net *net): the namespace is queued for cleanup_net.

fn put_net(net: u64) -> Result<(), Counted> {
    let inum = net_inum(net)?;
    if netns_in_scope(inum) {
        emit(&NetnsDestroy {
            hdr: header(kind::NETNS_DESTROY),
            net,
            inum,
            _pad: 0,
        });
    }
    Ok(())
}

#[kprobe]
pub fn __put_net_kprobe(ctx: ProbeContext) -> u32 {
    let _ = put_net(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

#[fentry(function = "__put_net")]
pub fn __put_net_fentry(ctx: FEntryContext) -> u32 {
    let _ = put_net(ctx.arg::<u64>(0));
    0
}

// --- cleanup_net(struct work_struct *): one batch of dying namespaces.

pub fn cleanup_start() {
    enter(&CLEANUP_NET_CALLS, 0);
    emit(&CleanupNet {
        hdr: header(kind::CLEANUP_NET),
        phase: phase::START,
        _pad: 0,
        duration_ns: 0,
    });
}

pub fn cleanup_end() {
    let started = leave(&CLEANUP_NET_CALLS).map(|call| call.ts_ns);
    let end = now();
    emit(&CleanupNet {
        hdr: header(kind::CLEANUP_NET),
        phase: phase::END,
        _pad: 0,
        duration_ns: started.map_or(0, |start| end.saturating_sub(start)),
    });
}

#[kprobe]
pub fn cleanup_net_kprobe(_ctx: ProbeContext) -> u32 {
    cleanup_start();
    0
}

#[kretprobe]
pub fn cleanup_net_kretprobe(_ctx: RetProbeContext) -> u32 {
    cleanup_end();
    0
}

#[fentry(function = "cleanup_net")]
pub fn cleanup_net_fentry(_ctx: FEntryContext) -> u32 {
    cleanup_start();
    0
}

#[fexit(function = "cleanup_net")]
pub fn cleanup_net_fexit(_ctx: FExitContext) -> u32 {
    cleanup_end();
    0
}
