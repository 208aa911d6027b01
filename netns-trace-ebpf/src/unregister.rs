//! The unregister wait: `netdev_wait_allrefs_any` is inlined everywhere,
//! but it polls `netdev_refcnt_read(dev)` for every device it waits for,
//! and that function is real. Its return value is exactly the number the
//! kernel prints as "Usage count".
use aya_ebpf::{
    macros::{fexit, kprobe, kretprobe},
    programs::{FExitContext, ProbeContext, RetProbeContext},
};
use netns_trace_common::{dev_wait_flags, kind, stat, watch_why, DevWait, NAME_LEN};

use crate::{
    kread::{
        count, emit_urgent, enter, header, leave, net_inum, netns_in_scope, now, off, pid_tgid,
        read, setting, Counted,
    },
    maps::{DevState, REFCNT_READ_CALLS, RUN_TODO_CALLS, WAITING_DEVS},
};

fn on_refcnt_read(dev: u64, refcnt: i32) -> Result<(), Counted> {
    let run_todo = unsafe { RUN_TODO_CALLS.get(pid_tgid()) }.map(|call| call.ts_ns);
    if refcnt <= setting!(free_refcnt) {
        // Nobody else holds it: not (or no longer) waiting. A device we saw
        // waiting gets one last event with the whole wait, then (--exact)
        // the loader is told to close its watchpoints.
        let mut result = Ok(());
        if let Some(state) = (unsafe { WAITING_DEVS.get(dev) }).copied() {
            let _ = WAITING_DEVS.remove(dev);
            result = emit_dev(
                dev,
                refcnt,
                state.first_seen_ns,
                run_todo,
                dev_wait_flags::RELEASED,
            );
        }
        crate::watch::done(dev);
        return result;
    }
    // Called from the wait loop: the task is inside netdev_run_todo, or
    // (when we attached mid-wait) the device is already unregistered.
    if run_todo.is_none() {
        let reg_state = read::<u8>(dev, off!(dev_reg_state))?;
        if reg_state as u32 != off!(netreg_unregistered) {
            return Ok(());
        }
    }
    let now = now();
    let first_seen_ns = match WAITING_DEVS.get_ptr_mut(dev) {
        Some(state) => unsafe {
            if now.saturating_sub((*state).last_emit_ns) < setting!(dev_wait_interval_ns) {
                return Ok(());
            }
            (*state).last_emit_ns = now;
            (*state).first_seen_ns
        },
        None => {
            let state = DevState {
                first_seen_ns: now,
                last_emit_ns: now,
            };
            if WAITING_DEVS.insert(dev, state, 0).is_err() {
                count(stat::MAP_FULL);
            }
            // Found waiting: watch its counters so the release is caught,
            // unless ref_tracker has counted it since its creation.
            if !crate::reftrack::counts(dev) {
                let _ = crate::watch::arm(dev, watch_why::WAITING);
            }
            now
        }
    };
    emit_dev(dev, refcnt, first_seen_ns, run_todo, 0)
}

/// One `DEV_WAIT` event for `dev` (in scope only). Inlined: BPF calls take
/// at most five arguments.
#[inline(always)]
fn emit_dev(
    dev: u64,
    refcnt: i32,
    first_seen_ns: u64,
    run_todo: Option<u64>,
    flags: u32,
) -> Result<(), Counted> {
    let net = read::<u64>(dev, off!(dev_net))?;
    let inum = net_inum(net)?;
    if !netns_in_scope(inum) {
        return Ok(());
    }
    // A device in the wait loop starts the incident view: no batching delay.
    emit_urgent(&DevWait {
        hdr: header(kind::DEV_WAIT),
        dev,
        net,
        inum,
        ifindex: read::<i32>(dev, off!(dev_ifindex))?,
        refcnt,
        flags: flags
            | if run_todo.is_some() {
                dev_wait_flags::RUN_TODO_SEEN
            } else {
                0
            },
        name: read::<[u8; NAME_LEN]>(dev, off!(dev_name))?,
        first_seen_ns,
        wait_start_ns: run_todo.unwrap_or(0),
    });
    Ok(())
}

#[kprobe]
pub fn netdev_refcnt_read_kprobe(ctx: ProbeContext) -> u32 {
    enter(&REFCNT_READ_CALLS, ctx.arg::<u64>(0).unwrap_or(0));
    0
}

#[kretprobe]
pub fn netdev_refcnt_read_kretprobe(ctx: RetProbeContext) -> u32 {
    if let Some(call) = leave(&REFCNT_READ_CALLS) {
        let _ = on_refcnt_read(call.arg, ctx.ret::<u64>() as i32);
    }
    0
}

#[fexit(function = "netdev_refcnt_read")]
pub fn netdev_refcnt_read_fexit(ctx: FExitContext) -> u32 {
    // One argument (dev), then the int return value.
    let _ = on_refcnt_read(ctx.arg::<u64>(0), ctx.arg::<u64>(1) as i32);
    0
}
