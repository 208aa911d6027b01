//! Objects that hold device references: dst entries and neighbours. Each
//! creation on a device of a non-initial namespace in scope becomes an
//! `ObjHold` (with the creating stack), each release of such an object an
//! `ObjRelease`. The loader's ledger turns them into "who holds lo".
use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    EbpfContext,
};
use netns_trace_common::{
    found_by, kind, obj_kind, release_reason, stat, ObjHold, ObjRelease, NAME_LEN,
};

use crate::{
    kread::{
        count, emit, enter, err_ptr, header, leave, net_inum, netns_in_scope, off, read, setting,
        Counted,
    },
    maps::{NEIGH_CREATE_CALLS, STACKS, TRACKED_OBJS},
};

/// Stack id of the current call, or the (negative) error.
#[inline(always)]
fn stack_id<C: EbpfContext>(ctx: &C) -> i32 {
    STACKS.id_of(ctx, 0)
}

/// Reports that `obj` now holds `dev`, if the device is in scope.
#[inline(always)]
fn hold(
    obj: u64,
    dev: u64,
    kind_: u32,
    family: u32,
    key: [u8; 16],
    stack: i32,
) -> Result<(), Counted> {
    if obj == 0 || dev == 0 {
        return Ok(());
    }
    let inum = net_inum(read::<u64>(dev, off!(dev_net))?)?;
    if inum == setting!(init_netns_inum) || !netns_in_scope(inum) {
        return Ok(());
    }
    if TRACKED_OBJS.insert(obj, kind_, 0).is_err() {
        count(stat::MAP_FULL);
    }
    emit(&ObjHold {
        hdr: header(kind::OBJ_HOLD),
        obj,
        dev,
        inum,
        ifindex: read::<i32>(dev, off!(dev_ifindex))?,
        obj_kind: kind_,
        family,
        stack_id: stack,
        found_by: found_by::TRACE,
        key,
        dev_name: read::<[u8; NAME_LEN]>(dev, off!(dev_name))?,
    });
    Ok(())
}

/// Reports the release of a tracked object.
#[inline(always)]
fn release(obj: u64, reason: u32) {
    let Some(kind_) = (unsafe { TRACKED_OBJS.get(obj) }).copied() else {
        return;
    };
    if reason == release_reason::DESTROYED {
        let _ = TRACKED_OBJS.remove(obj);
    }
    emit(&ObjRelease {
        hdr: header(kind::OBJ_RELEASE),
        obj,
        obj_kind: kind_,
        reason,
    });
}

// --- dst: dst_init(dst, ops, dev, ...) takes the device reference.

fn dst_hold(dst: u64, ops: u64, dev: u64, stack: i32) -> Result<(), Counted> {
    let family = read::<u16>(ops, off!(dst_ops_family)).unwrap_or(0) as u32;
    hold(dst, dev, obj_kind::DST, family, [0; 16], stack)
}

#[kprobe]
pub fn dst_init_kprobe(ctx: ProbeContext) -> u32 {
    let (dst, ops, dev) = (
        ctx.arg::<u64>(0).unwrap_or(0),
        ctx.arg::<u64>(1).unwrap_or(0),
        ctx.arg::<u64>(2).unwrap_or(0),
    );
    let _ = dst_hold(dst, ops, dev, stack_id(&ctx));
    0
}

#[fentry(function = "dst_init")]
pub fn dst_init_fentry(ctx: FEntryContext) -> u32 {
    let _ = dst_hold(ctx.arg(0), ctx.arg(1), ctx.arg(2), stack_id(&ctx));
    0
}

/// dst_alloc returns the new dst. Hooked as well as dst_init: builds that
/// keep dst_init out of line may still inline it into dst_alloc.
fn dst_alloc_exit(dst: u64, stack: i32) -> Result<(), Counted> {
    if dst == 0 || err_ptr(dst).is_some() {
        return Ok(());
    }
    let ops = read::<u64>(dst, off!(dst_ops))?;
    let dev = read::<u64>(dst, off!(dst_dev))?;
    dst_hold(dst, ops, dev, stack)
}

#[fexit(function = "dst_alloc")]
pub fn dst_alloc_fexit(ctx: FExitContext) -> u32 {
    // dst_alloc lost an argument in 6.7, so the return value's slot moves;
    // bpf_get_func_ret (5.17+) finds it on either.
    let dst = ctx.ret::<u64>().unwrap_or(0);
    let _ = dst_alloc_exit(dst, stack_id(&ctx));
    0
}

#[kretprobe]
pub fn dst_alloc_kretprobe(ctx: RetProbeContext) -> u32 {
    let _ = dst_alloc_exit(ctx.ret::<u64>(), stack_id(&ctx));
    0
}

#[kprobe]
pub fn dst_destroy_kprobe(ctx: ProbeContext) -> u32 {
    release(ctx.arg::<u64>(0).unwrap_or(0), release_reason::DESTROYED);
    0
}

#[fentry(function = "dst_destroy")]
pub fn dst_destroy_fentry(ctx: FEntryContext) -> u32 {
    release(ctx.arg::<u64>(0), release_reason::DESTROYED);
    0
}

#[kprobe]
pub fn dst_dev_put_kprobe(ctx: ProbeContext) -> u32 {
    release(
        ctx.arg::<u64>(0).unwrap_or(0),
        release_reason::MOVED_OFF_DEVICE,
    );
    0
}

#[fentry(function = "dst_dev_put")]
pub fn dst_dev_put_fentry(ctx: FEntryContext) -> u32 {
    release(ctx.arg::<u64>(0), release_reason::MOVED_OFF_DEVICE);
    0
}

// --- neighbours: __neigh_create(tbl, pkey, dev, want_ref) returns the
// entry, which holds n->dev. The address reported is the one asked for
// (`pkey`): on loopback and point-to-point devices arp_constructor
// rewrites the stored key to 0.0.0.0, which would name nothing.

fn neigh_created(n: u64, pkey: u64, stack: i32) -> Result<(), Counted> {
    if n == 0 || err_ptr(n).is_some() {
        return Ok(());
    }
    let dev = read::<u64>(n, off!(neigh_dev))?;
    let tbl = read::<u64>(n, off!(neigh_tbl))?;
    let family = read::<i32>(tbl, off!(neigh_tbl_family)).unwrap_or(0) as u32;
    let mut key = [0u8; 16];
    if family == 10 {
        key = read::<[u8; 16]>(pkey, 0).unwrap_or([0; 16]);
    } else {
        key[..4].copy_from_slice(&read::<[u8; 4]>(pkey, 0).unwrap_or([0; 4]));
    }
    hold(n, dev, obj_kind::NEIGH, family, key, stack)
}

#[kprobe]
pub fn neigh_create_kprobe(ctx: ProbeContext) -> u32 {
    enter(&NEIGH_CREATE_CALLS, ctx.arg::<u64>(1).unwrap_or(0));
    0
}

#[kretprobe]
pub fn neigh_create_kretprobe(ctx: RetProbeContext) -> u32 {
    if let Some(call) = leave(&NEIGH_CREATE_CALLS) {
        let _ = neigh_created(ctx.ret::<u64>(), call.arg, stack_id(&ctx));
    }
    0
}

#[fexit(function = "__neigh_create")]
pub fn neigh_create_fexit(ctx: FExitContext) -> u32 {
    // Four arguments, then the return value; copied out as numbers since
    // the verifier refuses ERR_PTR range checks on typed pointers.
    let slots = ctx.as_ptr() as *const u64;
    let pkey = unsafe { bpf_probe_read_kernel(slots.add(1)) }.unwrap_or(0);
    let n = unsafe { bpf_probe_read_kernel(slots.add(4)) }.unwrap_or(0);
    let _ = neigh_created(n, pkey, stack_id(&ctx));
    0
}

#[kprobe]
pub fn neigh_destroy_kprobe(ctx: ProbeContext) -> u32 {
    release(ctx.arg::<u64>(0).unwrap_or(0), release_reason::DESTROYED);
    0
}

#[fentry(function = "neigh_destroy")]
pub fn neigh_destroy_fentry(ctx: FEntryContext) -> u32 {
    release(ctx.arg::<u64>(0), release_reason::DESTROYED);
    0
}
