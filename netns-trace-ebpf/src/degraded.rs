//! Degraded mode for kernels without kprobes and fentry (such as a locked
//! down host): tracepoints still see namespaces being created (unshare and
//! fork with a new namespace) and cleanup_net batches (the workqueue
//! tracepoints, matched on cleanup_net's address). The fork hook also grows
//! the `--pid` scope to descendants in every mode.
use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use netns_trace_common::{create_source, kind, mode, stat, NetnsCreate};

use crate::{
    kread::{
        count, current_net, emit, enter, filtering, header, leave, off, read, setting,
        task_in_scope, task_net, Counted, CLONE_NEWNET,
    },
    lifecycle::{cleanup_end, cleanup_start, create_event, set_created_net},
    maps::{MODE, SCOPE_TGIDS, UNSHARE_CALLS},
};

#[tracepoint]
pub fn unshare_enter_tp(ctx: TracePointContext) -> u32 {
    let flags = unsafe { ctx.read_at::<u64>(off!(tp_unshare_flags) as usize) }.unwrap_or(0);
    if flags & CLONE_NEWNET != 0 && task_in_scope() {
        enter(&UNSHARE_CALLS, flags);
    }
    0
}

fn unshare_exit(ret: i64) -> Result<(), Counted> {
    let Some(call) = leave(&UNSHARE_CALLS) else {
        return Ok(());
    };
    let mut event = create_event(&call, create_source::UNSHARE);
    if ret < 0 {
        event.err = ret as i32;
    } else {
        set_created_net(&mut event, current_net()?)?;
    }
    emit(&event);
    Ok(())
}

#[tracepoint]
pub fn unshare_exit_tp(ctx: TracePointContext) -> u32 {
    let ret = unsafe { ctx.read_at::<i64>(off!(tp_unshare_ret) as usize) }.unwrap_or(-1);
    let _ = unshare_exit(ret);
    0
}

fn on_fork(parent: u64, child: u64) -> Result<(), Counted> {
    let in_scope = task_in_scope();
    if filtering() && in_scope {
        let child_tgid = read::<u32>(child, off!(task_tgid))?;
        if SCOPE_TGIDS.insert(child_tgid, 1, 0).is_err() {
            count(stat::MAP_FULL);
        }
    }
    // In full mode copy_net_ns reports creations; only degraded mode asks.
    let degraded = MODE.get(mode::DEGRADED).copied().unwrap_or(0);
    if degraded == 0 || !in_scope {
        return Ok(());
    }
    let child_net = task_net(child)?;
    if child_net == task_net(parent)? {
        return Ok(());
    }
    let mut event = NetnsCreate {
        hdr: header(kind::NETNS_CREATE),
        flags: CLONE_NEWNET,
        source: create_source::FORK,
        ..Default::default()
    };
    set_created_net(&mut event, child_net)?;
    emit(&event);
    Ok(())
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn fork_btf(ctx: BtfTracePointContext) -> u32 {
    let _ = on_fork(ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    0
}

fn is_cleanup_net(ctx: &TracePointContext) -> bool {
    let function = unsafe { ctx.read_at::<u64>(off!(tp_wq_function) as usize) }.unwrap_or(0);
    function != 0 && function == setting!(cleanup_net_addr)
}

#[tracepoint]
pub fn wq_start_tp(ctx: TracePointContext) -> u32 {
    if is_cleanup_net(&ctx) {
        cleanup_start();
    }
    0
}

#[tracepoint]
pub fn wq_end_tp(ctx: TracePointContext) -> u32 {
    if is_cleanup_net(&ctx) {
        cleanup_end();
    }
    0
}
