//! rtnl: `rtnl_unlock` (slow unlocks, with the caller) and
//! `netdev_run_todo` (where unregistered devices are waited for and freed).
//! Both run on every rtnl user, so only calls over the configured threshold
//! become events.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use netns_trace_common::{kind, RtnlUnlock, RunTodo};

use crate::{
    kread::{emit, enter, header, leave, setting},
    maps::{RTNL_UNLOCK_CALLS, RUN_TODO_CALLS},
};

fn rtnl_unlock_exit() {
    let Some(call) = leave(&RTNL_UNLOCK_CALLS) else {
        return;
    };
    let hdr = header(kind::RTNL_UNLOCK);
    let duration_ns = hdr.ts_ns.saturating_sub(call.ts_ns);
    if duration_ns >= setting!(rtnl_threshold_ns) {
        emit(&RtnlUnlock {
            hdr,
            duration_ns,
            caller: call.arg,
        });
    }
}

#[kprobe]
pub fn rtnl_unlock_kprobe(ctx: ProbeContext) -> u32 {
    // At a kprobe on the first instruction the return address is the word
    // at the stack pointer: that is the caller, which fentry cannot see.
    let sp = unsafe { (*ctx.regs).rsp };
    let caller = unsafe { bpf_probe_read_kernel(sp as *const u64) }.unwrap_or(0);
    enter(&RTNL_UNLOCK_CALLS, caller);
    0
}

#[kretprobe]
pub fn rtnl_unlock_kretprobe(_ctx: RetProbeContext) -> u32 {
    rtnl_unlock_exit();
    0
}

#[fentry(function = "rtnl_unlock")]
pub fn rtnl_unlock_fentry(_ctx: FEntryContext) -> u32 {
    enter(&RTNL_UNLOCK_CALLS, 0);
    0
}

#[fexit(function = "rtnl_unlock")]
pub fn rtnl_unlock_fexit(_ctx: FExitContext) -> u32 {
    rtnl_unlock_exit();
    0
}

fn run_todo_exit() {
    let Some(call) = leave(&RUN_TODO_CALLS) else {
        return;
    };
    let hdr = header(kind::RUN_TODO);
    let duration_ns = hdr.ts_ns.saturating_sub(call.ts_ns);
    if duration_ns >= setting!(rtnl_threshold_ns) {
        emit(&RunTodo { hdr, duration_ns });
    }
}

#[kprobe]
pub fn netdev_run_todo_kprobe(_ctx: ProbeContext) -> u32 {
    enter(&RUN_TODO_CALLS, 0);
    0
}

#[kretprobe]
pub fn netdev_run_todo_kretprobe(_ctx: RetProbeContext) -> u32 {
    run_todo_exit();
    0
}

#[fentry(function = "netdev_run_todo")]
pub fn netdev_run_todo_fentry(_ctx: FEntryContext) -> u32 {
    enter(&RUN_TODO_CALLS, 0);
    0
}

#[fexit(function = "netdev_run_todo")]
pub fn netdev_run_todo_fexit(_ctx: FExitContext) -> u32 {
    run_todo_exit();
    0
}
