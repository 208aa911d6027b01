//! rtnl: `rtnl_unlock` (slow unlocks, with the caller) and
//! `netdev_run_todo` (where unregistered devices are waited for and freed).
//! Both run on every rtnl user, so only calls over the configured threshold
//! become events.
use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use netns_trace_common::{kind, RtnlUnlock, RunTodo};

use crate::{
    kread::{emit, enter, header, leave, setting},
    maps::{RTNL_UNLOCK_CALLS, RUN_TODO_CALLS},
};

/// `caller`: the return address when the probe can see it (0 otherwise).
fn rtnl_unlock_exit(caller: u64) {
    let Some(call) = leave(&RTNL_UNLOCK_CALLS) else {
        return;
    };
    let hdr = header(kind::RTNL_UNLOCK);
    let duration_ns = hdr.ts_ns.saturating_sub(call.ts_ns);
    if duration_ns >= setting!(rtnl_threshold_ns) {
        emit(&RtnlUnlock {
            hdr,
            duration_ns,
            caller,
        });
    }
}

#[kprobe]
pub fn rtnl_unlock_kprobe(_ctx: ProbeContext) -> u32 {
    enter(&RTNL_UNLOCK_CALLS, 0);
    0
}

#[kretprobe]
pub fn rtnl_unlock_kretprobe(ctx: RetProbeContext) -> u32 {
    // The return trampoline has replaced the return address on the stack,
    // but it restores the real one into the saved instruction pointer
    // before return handlers run: that is the caller. fentry/fexit have no
    // such register, which is why this hook prefers kprobes.
    let caller = unsafe { (*ctx.regs).rip };
    rtnl_unlock_exit(caller);
    0
}

#[fentry(function = "rtnl_unlock")]
pub fn rtnl_unlock_fentry(_ctx: FEntryContext) -> u32 {
    enter(&RTNL_UNLOCK_CALLS, 0);
    0
}

#[fexit(function = "rtnl_unlock")]
pub fn rtnl_unlock_fexit(_ctx: FExitContext) -> u32 {
    rtnl_unlock_exit(0);
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
