//! Exact attribution (`--exact`): `dev_hold`/`dev_put` are inline, but each
//! CPU's reference counter of a device is a fixed address. `arm` reports
//! those addresses to the loader, which opens one hardware write-watchpoint
//! per CPU on them with `watch_hit` attached, then runs `watch_seed` once
//! (BPF_PROG_TEST_RUN) to read the counters: every write after that is
//! counted as +1/-1 with the writer's kernel stack.
use core::ffi::c_void;

use aya_ebpf::{
    macros::{map, perf_event},
    maps::Array,
    programs::PerfEventContext,
};
use netns_trace_common::{
    exact_mode, kind, stat, watch_why, WatchDone, WatchHit, WatchTarget, NAME_LEN, WATCH_MAX_CPUS,
};

use crate::{
    kread::{count, emit, header, lazy_wakeup, net_inum, off, read, setting, Counted, URGENT},
    maps::{EVENTS, STACKS, WAITING_DEVS, WATCHED_DEVS, WATCH_PREV, WATCH_SEED},
};

/// Asks the loader to watch `dev`'s counters (`why`: `watch_why`). The
/// loader dedupes repeated requests.
#[inline(always)]
pub fn arm(dev: u64, why: u32) -> Result<(), Counted> {
    let mode = setting!(exact);
    let wanted = match why {
        watch_why::CREATED => exact_mode::ALL,
        _ => exact_mode::STUCK,
    };
    if mode < wanted || dev == 0 {
        return Ok(());
    }
    counters(dev, why)
}

/// The device is free: tell the loader to disarm (watched devices only).
#[inline(always)]
pub fn done(dev: u64) {
    if setting!(exact) == 0 || unsafe { WATCHED_DEVS.get(dev) }.is_none() {
        return;
    }
    emit(&WatchDone {
        hdr: header(kind::WATCH_DONE),
        dev,
    });
}

/// One `WATCH_TARGET` event for `dev`: its counter addresses (CPU n's
/// slot is `pcpu_refcnt + __per_cpu_offset[n]`).
#[inline(always)]
fn counters(dev: u64, why: u32) -> Result<(), Counted> {
    let pcpu = read::<u64>(dev, off!(dev_pcpu_refcnt))?;
    let table = setting!(per_cpu_offset_addr);
    if pcpu == 0 || table == 0 {
        return Ok(());
    }
    let inum = net_inum(read::<u64>(dev, off!(dev_net))?)?;
    let name = read::<[u8; NAME_LEN]>(dev, off!(dev_name))?;
    // 848 bytes: too big for the BPF stack, so it is built in place.
    let Some(mut entry) = EVENTS.reserve::<WatchTarget>(0) else {
        count(stat::RINGBUF_DROPS);
        return Ok(());
    };
    let target = entry.as_mut_ptr();
    let ncpu = setting!(nr_cpus).min(WATCH_MAX_CPUS as u32);
    unsafe {
        (*target).hdr = header(kind::WATCH_TARGET);
        (*target).dev = dev;
        (*target).inum = inum;
        (*target).ncpu = ncpu;
        (*target).name = name;
        (*target).why = why;
        (*target)._pad = 0;
        // The loader reads `ncpu` slots. A loop bounded by the CPUs there
        // are (a constant to the verifier: CONFIG is read-only), not one
        // unrolled 64 times: that made every program that arms watchpoints
        // long to verify, patch and JIT, whatever the machine.
        for cpu in 0..ncpu as usize {
            let addr = match read::<u64>(table, (cpu * 8) as u32) {
                Ok(offset) => pcpu.wrapping_add(offset),
                Err(_) => 0,
            };
            if let Some(slot) = (*target).addrs.get_mut(cpu) {
                *slot = addr;
            }
        }
    }
    // Holds taken before the watchpoints exist are only in the seed sum:
    // arm as soon as possible.
    entry.submit(URGENT);
    Ok(())
}

/// Run by the loader (BPF_PROG_TEST_RUN) right after the watchpoints are
/// enabled, never attached to a tracepoint: reads every CPU's counter into
/// WATCH_PREV (what `watch_hit` counts from) and into WATCH_SEED, which
/// the loader reads back at once. A write between enabling and this read
/// is reported with an unknown sign, not guessed.
///
/// Arguments: the device, the namespace inode it was reported in, CPU 0's
/// counter address in the request, and `watch_why`. The request may reach
/// the loader long after the device is gone and its memory (or its
/// counters') reused: it is seeded only if the device still has those
/// counters, still belongs to that namespace (a new lo: is still its
/// loopback device) and is registered or being unregistered, or (a
/// waiting device) is still in the wait loop. That guarantees its release
/// (`WATCH_DONE`) is still to come.
/// Returns 0, 1 (a kernel read failed) or 2 (the device is gone).
///
/// Written without `#[raw_tracepoint]`: that macro returns 0 whatever the
/// function returns, and the loader reads this value (BPF_PROG_TEST_RUN).
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp/netns_trace_watch_seed")]
pub fn watch_seed(ctx: *mut c_void) -> i32 {
    let args = ctx as *const u64;
    let (dev, inum, addr0, why) = unsafe {
        (
            *args,
            *args.add(1) as u32,
            *args.add(2),
            *args.add(3) as u32,
        )
    };
    match alive(dev, inum, addr0, why) {
        Ok(true) => {}
        Ok(false) => return 2,
        Err(_) => return 1,
    }
    match seed(dev) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[inline(always)]
fn seed(dev: u64) -> Result<(), Counted> {
    let pcpu = read::<u64>(dev, off!(dev_pcpu_refcnt))?;
    let table = setting!(per_cpu_offset_addr);
    let Some(out) = WATCH_SEED.get_ptr_mut(0) else {
        return Err(Counted);
    };
    // One slot per CPU there is (the loader reads that many; the rest
    // stay zero), in a loop the verifier runs that many times.
    let ncpu = setting!(nr_cpus).min(WATCH_MAX_CPUS as u32);
    for cpu in 0..ncpu as usize {
        let addr = pcpu.wrapping_add(read::<u64>(table, (cpu * 8) as u32)?);
        let value = read::<i32>(addr, 0)?;
        if WATCH_PREV.insert(addr, value, 0).is_err() {
            count(stat::MAP_FULL);
            return Err(Counted);
        }
        if let Some(slot) = unsafe { (*out).get_mut(cpu) } {
            *slot = value;
        }
    }
    Ok(())
}

/// Is `dev` still the device of the request, with its release ahead?
#[inline(always)]
fn alive(dev: u64, inum: u32, addr0: u64, why: u32) -> Result<bool, Counted> {
    // free_netdev() clears pcpu_refcnt; a reused one has moved.
    let pcpu = read::<u64>(dev, off!(dev_pcpu_refcnt))?;
    let offset0 = read::<u64>(setting!(per_cpu_offset_addr), 0)?;
    if pcpu == 0 || pcpu.wrapping_add(offset0) != addr0 {
        return Ok(false);
    }
    if why == watch_why::WAITING {
        return Ok(unsafe { WAITING_DEVS.get(dev) }.is_some());
    }
    let net = read::<u64>(dev, off!(dev_net))?;
    if net_inum(net)? != inum || read::<u64>(net, off!(net_loopback_dev))? != dev {
        return Ok(false);
    }
    // enum netdev_reg_state: ..., REGISTERED, UNREGISTERING, UNREGISTERED.
    let unregistered = off!(netreg_unregistered);
    let state = read::<u8>(dev, off!(dev_reg_state))? as u32;
    Ok(state + 2 == unregistered || state + 1 == unregistered)
}

#[perf_event]
pub fn watch_hit(ctx: PerfEventContext) -> u32 {
    // The breakpoint fires after the write: read the new value.
    let addr = unsafe { (*ctx.ctx).addr };
    let Ok(value) = read::<i32>(addr, 0) else {
        return 0;
    };
    // Only the seed creates the previous value: before it, a write's sign
    // is unknown (delta 0, counted apart).
    let delta = match WATCH_PREV.get_ptr_mut(addr) {
        Some(prev) => unsafe {
            let d = value.wrapping_sub(*prev);
            *prev = value;
            d
        },
        None => 0,
    };
    let stack_id = STACKS.id_of(&ctx, 0);
    let hit = WatchHit {
        hdr: header(kind::WATCH_HIT),
        addr,
        value,
        delta,
        stack_id,
        _pad: 0,
    };
    // A breakpoint runs this in NMI context, where the ring buffer only
    // *tries* its lock: a record being written on the other CPU at that
    // instant would lose the hit. That critical section is short (and this
    // CPU cannot be inside it: no refcount write happens there), so try a
    // few times; a full ring still fails every time and is counted.
    for _ in 0..OUTPUT_TRIES {
        if EVENTS.output::<WatchHit>(&hit, lazy_wakeup()).is_ok() {
            return 0;
        }
    }
    count(stat::RINGBUF_DROPS);
    0
}

/// Attempts at writing one hit to the ring buffer (see `watch_hit`).
const OUTPUT_TRIES: u32 = 16;

/// Kernel text bytes before a breakpoint sample's IP (`watch_text`).
pub const TEXT_LEN: usize = 16;

/// `watch_text`'s answer: the `TEXT_LEN` bytes it read, read back at once
/// by the loader.
#[map]
pub static WATCH_TEXT: Array<[u8; TEXT_LEN]> = Array::with_max_entries(1, 0);

/// Run by the loader (BPF_PROG_TEST_RUN), never attached, when the
/// watchpoints are read from the perf ring instead of by `watch_hit`: a
/// sample carries no counter value, so the loader decodes the writing
/// instruction (`dev_hold` is an increment, `dev_put` a decrement), which
/// ends at the sample's IP. Reads the `TEXT_LEN` bytes before argument 0
/// into WATCH_TEXT. Returns 0, or 1 when the kernel read failed.
///
/// Written without `#[raw_tracepoint]` (see `watch_seed`).
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp/netns_trace_watch_text")]
pub fn watch_text(ctx: *mut c_void) -> i32 {
    let ip = unsafe { *(ctx as *const u64) };
    let Ok(bytes) = read::<[u8; TEXT_LEN]>(ip.wrapping_sub(TEXT_LEN as u64), 0) else {
        return 1;
    };
    let Some(out) = WATCH_TEXT.get_ptr_mut(0) else {
        return 1;
    };
    unsafe { *out = bytes };
    0
}
