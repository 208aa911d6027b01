//! rtnl: `rtnl_unlock` (slow unlocks, with the caller) and
//! `netdev_run_todo` (where unregistered devices are waited for and freed).
//! Both run on every rtnl user, so only calls over the configured threshold
//! become events.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{fentry, fexit, kprobe, kretprobe},
    maps::HashMap,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    EbpfContext as _,
};
use netns_trace_common::{kind, RtnlUnlock, RunTodo};

use crate::{
    kread::{emit, enter, header, leave, now, setting},
    maps::{CallEntry, RTNL_UNLOCK_CALLS, RUN_TODO_CALLS},
};

/// The duration of the call this task is returning from, if it entered
/// through `enter` and took at least the threshold. Most calls are fast:
/// callers build the event header (comm, pid, cpu: three helper calls)
/// only for the few this returns.
#[inline(always)]
fn slow_call(calls: &HashMap<u64, CallEntry>) -> Option<u64> {
    let call = leave(calls)?;
    let duration_ns = now().saturating_sub(call.ts_ns);
    (duration_ns >= setting!(rtnl_threshold_ns)).then_some(duration_ns)
}

/// `caller`: the return address when the probe can see it (0 otherwise).
fn rtnl_unlock_exit(caller: u64) {
    if let Some(duration_ns) = slow_call(&RTNL_UNLOCK_CALLS) {
        emit(&RtnlUnlock {
            hdr: header(kind::RTNL_UNLOCK),
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
    // before return handlers run: that is the caller. (fexit reads it from
    // the trampoline's frame instead.)
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
pub fn rtnl_unlock_fexit(ctx: FExitContext) -> u32 {
    rtnl_unlock_exit(trampoline_caller(&ctx));
    0
}

/// The caller of `rtnl_unlock`, read from the BPF trampoline's frame.
///
/// `rtnl_unlock` takes no arguments, so the trampoline's frame pointer is
/// one slot (the return value) above the program's context, followed by
/// its return address into `rtnl_unlock` (the patched `call` at its entry)
/// and then the return address into `rtnl_unlock`'s caller, which the
/// trampoline returns to. That layout belongs to the kernel's x86 JIT, so
/// it is checked, not trusted: the first return address must point just
/// past `rtnl_unlock`'s entry (`endbr64` + `call`: +9, +5 without IBT),
/// otherwise the caller is unknown (0), as for a plain fexit.
fn trampoline_caller(ctx: &FExitContext) -> u64 {
    let fp = ctx.as_ptr() as *const u64;
    let entry = setting!(rtnl_unlock_addr);
    if entry == 0 {
        return 0;
    }
    let into_self = unsafe { bpf_probe_read_kernel(fp.wrapping_add(2)) }.unwrap_or(0);
    if into_self.wrapping_sub(entry) > 16 {
        return 0;
    }
    unsafe { bpf_probe_read_kernel(fp.wrapping_add(3)) }.unwrap_or(0)
}

fn run_todo_exit() {
    if let Some(duration_ns) = slow_call(&RUN_TODO_CALLS) {
        emit(&RunTodo {
            hdr: header(kind::RUN_TODO),
            duration_ns,
        });
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
