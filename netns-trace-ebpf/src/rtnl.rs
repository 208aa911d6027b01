//! rtnl: `netdev_run_todo`, which is all `rtnl_unlock` does (it releases
//! the lock and then unregisters and frees the queued devices, waiting for
//! their references). One hook times both: a slow call becomes one
//! `RTNL_UNLOCK` event with its caller, and its entry marks the task as in
//! the unregister wait for `unregister.rs`. It runs on every rtnl user, so
//! only calls over the configured threshold become events.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    EbpfContext as _,
};
use netns_trace_common::{kind, RtnlUnlock};

use crate::{
    kread::{emit, enter, header, leave, now, setting},
    maps::RUN_TODO_CALLS,
};

/// At entry, rtnl is held, so the queue of devices to unregister cannot
/// change before `netdev_run_todo` takes it. Most calls (bringing a device
/// up, every netlink request) find it empty and only release the lock:
/// not recorded, which spares them the map insert, and the exit its delete.
/// Without the list's address (no data symbols in kallsyms) every call is.
#[inline(always)]
fn run_todo_enter() {
    let todo = setting!(net_todo_list_addr);
    if todo != 0 {
        // An empty list_head points at itself.
        let next = unsafe { bpf_probe_read_kernel(todo as *const u64) }.unwrap_or(0);
        if next == todo {
            return;
        }
    }
    enter(&RUN_TODO_CALLS, 0);
}

/// `caller`: the return address when the probe can see it (0 otherwise),
/// read only for a call over the threshold. The event header (comm, pid,
/// cpu: three helper calls) too.
#[inline(always)]
fn run_todo_exit(caller: impl FnOnce() -> u64) {
    let Some(call) = leave(&RUN_TODO_CALLS) else {
        return;
    };
    let duration_ns = now().saturating_sub(call.ts_ns);
    if duration_ns >= setting!(rtnl_threshold_ns) {
        emit(&RtnlUnlock {
            hdr: header(kind::RTNL_UNLOCK),
            duration_ns,
            caller: caller(),
        });
    }
}

#[kprobe]
pub fn netdev_run_todo_kprobe(_ctx: ProbeContext) -> u32 {
    run_todo_enter();
    0
}

#[kretprobe]
pub fn netdev_run_todo_kretprobe(ctx: RetProbeContext) -> u32 {
    // The return trampoline has replaced the return address on the stack,
    // but it restores the real one into the saved instruction pointer
    // before return handlers run: that is the caller. (fexit reads it from
    // the trampoline's frame instead.)
    run_todo_exit(|| unsafe { (*ctx.regs).rip });
    0
}

#[fentry(function = "netdev_run_todo")]
pub fn netdev_run_todo_fentry(_ctx: FEntryContext) -> u32 {
    run_todo_enter();
    0
}

#[fexit(function = "netdev_run_todo")]
pub fn netdev_run_todo_fexit(ctx: FExitContext) -> u32 {
    run_todo_exit(|| trampoline_caller(&ctx));
    0
}

/// The caller of `netdev_run_todo`, read from the BPF trampoline's frame.
/// `rtnl_unlock` tail-calls it (a `jmp`), so this is normally the caller
/// of `rtnl_unlock` itself; a build that makes a real call shows
/// `rtnl_unlock+off` instead, which is still true.
///
/// `netdev_run_todo` takes no arguments, so the trampoline's frame pointer
/// is one slot (the return value) above the program's context, followed by
/// its return address into `netdev_run_todo` (the patched `call` at its
/// entry) and then the return address the trampoline returns to. That
/// layout belongs to the kernel's x86 JIT, so it is checked, not trusted:
/// the first return address must point just past the function's entry
/// (`endbr64` + `call`: +9, +5 without IBT), otherwise the caller is
/// unknown (0), as for a plain fexit.
fn trampoline_caller(ctx: &FExitContext) -> u64 {
    let fp = ctx.as_ptr() as *const u64;
    let entry = setting!(run_todo_addr);
    if entry == 0 {
        return 0;
    }
    let into_self = unsafe { bpf_probe_read_kernel(fp.wrapping_add(2)) }.unwrap_or(0);
    if into_self.wrapping_sub(entry) > 16 {
        return 0;
    }
    unsafe { bpf_probe_read_kernel(fp.wrapping_add(3)) }.unwrap_or(0)
}
