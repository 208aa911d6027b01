//! The kernel's own reference tracker (CONFIG_NET_DEV_REFCNT_TRACKER, debug
//! builds): every `netdev_hold`/`dev_hold` calls
//! `ref_tracker_alloc(&dev->refcnt_tracker, trackerp, gfp)` and every put
//! `ref_tracker_free(&dev->refcnt_tracker, trackerp)` (`trackerp` NULL for
//! a bare `dev_hold`), real functions, so unlike the inline helpers they
//! can be probed. A new loopback device in scope is marked at creation
//! (`start`, with its counters read as the seed); from then on each call
//! on its tracker directory is one `TrackerCall` with the kernel stack,
//! for the loader's exact ledger: every device, no debug registers.
use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
    EbpfContext,
};
use netns_trace_common::{
    kind, mode, stat, tracker_op, TrackerCall, TrackerStart, NAME_LEN, WATCH_MAX_CPUS,
};

use crate::{
    kread::{count, emit, header, off, read, setting, Counted},
    maps::{MODE, STACKS, TRACKER_DEVS},
};

/// Counts the new loopback device `lo` of namespace `inum` through the
/// tracker, if the loader attached all three tracker hooks. Returns false
/// when it does not (the caller then falls back to watchpoints).
#[inline(always)]
pub fn start(lo: u64, inum: u32) -> bool {
    if lo == 0 || MODE.get(mode::TRACKER).copied().unwrap_or(0) == 0 {
        return false;
    }
    // Marked before the counters are read: a hold racing with the read is
    // counted twice rather than missed (the window is a few instructions,
    // and nobody else knows the namespace yet).
    if TRACKER_DEVS.insert(lo, 1, 0).is_err() {
        count(stat::MAP_FULL);
        return false;
    }
    match seed(lo, inum) {
        Ok(()) => true,
        Err(_) => {
            let _ = TRACKER_DEVS.remove(lo);
            false
        }
    }
}

/// Is `dev` counted through the tracker (so needs no watchpoints)?
#[inline(always)]
pub fn counts(dev: u64) -> bool {
    unsafe { TRACKER_DEVS.get(dev) }.is_some()
}

/// The `TrackerStart` event: the sum of `dev`'s per-CPU counters now.
#[inline(always)]
fn seed(dev: u64, inum: u32) -> Result<(), Counted> {
    let pcpu = read::<u64>(dev, off!(dev_pcpu_refcnt))?;
    let table = setting!(per_cpu_offset_addr);
    if pcpu == 0 || table == 0 {
        return Err(Counted);
    }
    let ncpu = setting!(nr_cpus).min(WATCH_MAX_CPUS as u32);
    let mut sum = 0i32;
    // As many rounds as CPUs (a constant to the verifier), not 64 unrolled.
    for cpu in 0..ncpu as usize {
        let slot = pcpu.wrapping_add(read::<u64>(table, (cpu * 8) as u32)?);
        sum = sum.wrapping_add(read::<i32>(slot, 0)?);
    }
    emit(&TrackerStart {
        hdr: header(kind::TRACKER_START),
        dev,
        inum,
        refcnt: sum,
        name: read::<[u8; NAME_LEN]>(dev, off!(dev_name))?,
        no_tracker: read::<i32>(
            dev.wrapping_add(off!(dev_refcnt_tracker) as u64),
            off!(tracker_no_tracker),
        )?,
        _pad: 0,
    });
    Ok(())
}

/// One call on the tracker directory `dir`, reported if it belongs to a
/// counted device.
#[inline(always)]
fn on_call<C: EbpfContext>(ctx: &C, dir: u64, slot: u64, op: u32) -> Result<(), Counted> {
    let dev = dir.wrapping_sub(off!(dev_refcnt_tracker) as u64);
    if !counts(dev) {
        return Ok(());
    }
    let no_tracker = read::<i32>(dir, off!(tracker_no_tracker))?;
    if op == tracker_op::EXIT {
        let _ = TRACKER_DEVS.remove(dev);
    }
    let stack_id = STACKS.id_of(ctx, 0);
    emit(&TrackerCall {
        hdr: header(kind::TRACKER_CALL),
        dev,
        slot,
        op,
        no_tracker,
        stack_id,
        _pad: 0,
    });
    Ok(())
}

// ref_tracker_alloc(dir, trackerp, gfp), ref_tracker_free(dir, trackerp),
// ref_tracker_dir_exit(dir).

#[fentry(function = "ref_tracker_alloc")]
pub fn ref_tracker_alloc_fentry(ctx: FEntryContext) -> u32 {
    let _ = on_call(&ctx, ctx.arg(0), ctx.arg(1), tracker_op::ALLOC);
    0
}

/// A kprobe at the entry of alloc or free: (dir, trackerp) in registers.
#[inline(always)]
fn on_kprobe(ctx: &ProbeContext, op: u32) -> u32 {
    let (dir, slot) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    let _ = on_call(ctx, dir.unwrap_or(0), slot.unwrap_or(0), op);
    0
}

#[kprobe]
pub fn ref_tracker_alloc_kprobe(ctx: ProbeContext) -> u32 {
    on_kprobe(&ctx, tracker_op::ALLOC)
}

#[fentry(function = "ref_tracker_free")]
pub fn ref_tracker_free_fentry(ctx: FEntryContext) -> u32 {
    let _ = on_call(&ctx, ctx.arg(0), ctx.arg(1), tracker_op::FREE);
    0
}

#[kprobe]
pub fn ref_tracker_free_kprobe(ctx: ProbeContext) -> u32 {
    on_kprobe(&ctx, tracker_op::FREE)
}

#[fentry(function = "ref_tracker_dir_exit")]
pub fn ref_tracker_dir_exit_fentry(ctx: FEntryContext) -> u32 {
    let _ = on_call(&ctx, ctx.arg(0), 0, tracker_op::EXIT);
    0
}

#[kprobe]
pub fn ref_tracker_dir_exit_kprobe(ctx: ProbeContext) -> u32 {
    let _ = on_call(&ctx, ctx.arg::<u64>(0).unwrap_or(0), 0, tracker_op::EXIT);
    0
}
