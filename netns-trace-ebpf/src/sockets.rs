//! Sockets: `sock:inet_sock_set_state` (a stable tracepoint on every
//! kernel, also where kprobes are refused; taken as tp_btf where the kernel
//! has BTF, as a classic tracepoint otherwise) reports TCP state changes of
//! kernel sockets in non-initial namespaces, with the device their cached
//! dst sits on, so the ledger can tell whether a socket pins a device.
//!
//! Only kernel sockets (`sk_kern_sock`): a user socket holds a reference on
//! its namespace, so while it exists the namespace is not torn down and
//! its devices are not waiting; it can never be the holder of a dying
//! namespace's lo. Sending every user connection's ~10 state changes to
//! userspace cut loopback TCP connect/close throughput to 0.28x under
//! `cargo xtask bench` (docs/performance.md); filtered here, a connection
//! costs one tracepoint run and no event.
use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use netns_trace_common::{kind, Offsets, SockState, NAME_LEN};

use crate::kread::{emit, header, net_inum, netns_in_scope, off, read, setting, Counted};

/// What an event says of the connection, read from wherever the hook
/// keeps it (the tracepoint record, or the socket).
struct Tuple {
    family: u16,
    protocol: u16,
    sport: u16,
    dport: u16,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

/// The filter every state change passes first, before anything else is
/// read: a kernel socket of a namespace in scope, not the initial one.
/// Returns the namespace inode and the kernel-socket bit.
#[inline(always)]
fn in_scope(sk: u64) -> Result<Option<(u32, u8)>, Counted> {
    let inum = net_inum(read::<u64>(sk, off!(sock_net))?)?;
    if inum == setting!(init_netns_inum) {
        return Ok(None);
    }
    // A kernel without the sk_kern_sock bit (MISSING offset): no filter.
    let kernel = if off!(sock_kern_byte) == Offsets::MISSING {
        0
    } else {
        let byte = read::<u8>(sk, off!(sock_kern_byte))?;
        let kernel = (byte >> (off!(sock_kern_bit) & 7)) & 1;
        if kernel == 0 {
            return Ok(None);
        }
        kernel
    };
    if !netns_in_scope(inum) {
        return Ok(None);
    }
    Ok(Some((inum, kernel)))
}

#[inline(always)]
fn report(
    sk: u64,
    inum: u32,
    kernel: u8,
    oldstate: i32,
    newstate: i32,
    t: Tuple,
) -> Result<(), Counted> {
    let dst = read::<u64>(sk, off!(sock_dst_cache)).unwrap_or(0);
    let dst_dev = if dst != 0 {
        read::<u64>(dst, off!(dst_dev)).unwrap_or(0)
    } else {
        0
    };
    let dst_dev_name = if dst_dev != 0 {
        read::<[u8; NAME_LEN]>(dst_dev, off!(dev_name)).unwrap_or([0; NAME_LEN])
    } else {
        [0; NAME_LEN]
    };
    emit(&SockState {
        hdr: header(kind::SOCK_STATE),
        sk,
        dst,
        dst_dev,
        inum,
        family: t.family,
        protocol: t.protocol,
        sport: t.sport,
        dport: t.dport,
        oldstate: oldstate as u8,
        newstate: newstate as u8,
        kernel,
        _pad: 0,
        saddr: t.saddr,
        daddr: t.daddr,
        dst_dev_name,
    });
    Ok(())
}

const AF_INET6: u16 = 10;

// ---- classic tracepoint: fields from the record (tracefs offsets) -------

/// Reads a tracepoint field at an offset the loader resolved.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, Counted> {
    unsafe { ctx.read_at::<T>(offset as usize) }.map_err(|_| Counted)
}

fn tuple_from_record(ctx: &TracePointContext) -> Result<Tuple, Counted> {
    let family = field::<u16>(ctx, off!(tp_sk_family))?;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if family == AF_INET6 {
        saddr = field::<[u8; 16]>(ctx, off!(tp_sk_saddr_v6))?;
        daddr = field::<[u8; 16]>(ctx, off!(tp_sk_daddr_v6))?;
    } else {
        saddr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, off!(tp_sk_saddr))?);
        daddr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, off!(tp_sk_daddr))?);
    }
    Ok(Tuple {
        family,
        protocol: field::<u16>(ctx, off!(tp_sk_protocol))?,
        sport: field::<u16>(ctx, off!(tp_sk_sport))?,
        dport: field::<u16>(ctx, off!(tp_sk_dport))?,
        saddr,
        daddr,
    })
}

fn on_record(ctx: &TracePointContext) -> Result<(), Counted> {
    let sk = field::<u64>(ctx, off!(tp_sk_skaddr))?;
    let Some((inum, kernel)) = in_scope(sk)? else {
        return Ok(());
    };
    let old = field::<i32>(ctx, off!(tp_sk_oldstate))?;
    let new = field::<i32>(ctx, off!(tp_sk_newstate))?;
    report(sk, inum, kernel, old, new, tuple_from_record(ctx)?)
}

#[tracepoint]
pub fn sock_state_tp(ctx: TracePointContext) -> u32 {
    let _ = on_record(&ctx);
    0
}

// ---- tp_btf: the arguments, and the fields read from the socket ---------

fn tuple_from_sock(sk: u64) -> Result<Tuple, Counted> {
    let family = read::<u16>(sk, off!(sk_family))?;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if family == AF_INET6 {
        saddr = read::<[u8; 16]>(sk, off!(sk_v6_rcv_saddr))?;
        daddr = read::<[u8; 16]>(sk, off!(sk_v6_daddr))?;
    } else {
        saddr[..4].copy_from_slice(&read::<[u8; 4]>(sk, off!(sk_rcv_saddr))?);
        daddr[..4].copy_from_slice(&read::<[u8; 4]>(sk, off!(sk_daddr))?);
    }
    Ok(Tuple {
        family,
        protocol: read::<u16>(sk, off!(sk_protocol))?,
        // skc_num is host order already; skc_dport is network order, the
        // tracepoint record (and so the event) has it in host order.
        sport: read::<u16>(sk, off!(sk_num))?,
        dport: u16::from_be(read::<u16>(sk, off!(sk_dport))?),
        saddr,
        daddr,
    })
}

fn on_args(sk: u64, old: i32, new: i32) -> Result<(), Counted> {
    let Some((inum, kernel)) = in_scope(sk)? else {
        return Ok(());
    };
    report(sk, inum, kernel, old, new, tuple_from_sock(sk)?)
}

/// The same hook through the tracepoint's BTF entry: the kernel calls the
/// program with the arguments directly, without filling a perf record for
/// every TCP state change first (the classic tracepoint's cost on the
/// connect/close path, docs/performance.md).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn sock_state_btf(ctx: BtfTracePointContext) -> u32 {
    let _ = on_args(ctx.arg::<u64>(0), ctx.arg::<i32>(1), ctx.arg::<i32>(2));
    0
}
