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
use netns_trace_common::{kind, stat, Offsets, SockState, NAME_LEN};

use crate::kread::{count, emit, header, netns_in_scope, off, read, setting, Counted};

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

/// How the filter reads the socket: through `bpf_probe_read_kernel`, or
/// with plain loads where the verifier knows the pointer's BTF type.
trait Reader {
    fn at<T: Copy>(&self, base: u64, offset: u32) -> Result<T, Counted>;
}

/// Any pointer (the classic tracepoint's record holds an untyped address).
struct ProbeRead;

impl Reader for ProbeRead {
    #[inline(always)]
    fn at<T: Copy>(&self, base: u64, offset: u32) -> Result<T, Counted> {
        read::<T>(base, offset)
    }
}

/// tp_btf hands the program a typed `struct sock *`: a plain load from it
/// (and from the `struct net *` read out of it) is checked by the verifier
/// against the kernel's BTF, at the offset the loader set (a constant of the
/// frozen .rodata), and JITed to one guarded move; `bpf_probe_read_kernel`
/// is a helper call of some hundred instructions. The filter runs on every
/// TCP state change of every socket, ten per loopback connection: with
/// three helper calls it cost a traced TCP loop 3-4 % of its rate
/// (docs/performance.md). A faulting load reads 0, as a failed helper does.
struct BtfLoad;

impl Reader for BtfLoad {
    #[inline(always)]
    fn at<T: Copy>(&self, base: u64, offset: u32) -> Result<T, Counted> {
        if offset == Offsets::MISSING || base == 0 {
            count(stat::READ_ERRORS);
            return Err(Counted);
        }
        Ok(unsafe { core::ptr::read_volatile((base + offset as u64) as *const T) })
    }
}

/// The filter every state change passes first, before anything else is
/// read: a kernel socket of a namespace in scope, not the initial one.
/// Returns the namespace inode and the kernel-socket bit.
#[inline(always)]
fn in_scope<R: Reader>(r: R, sk: u64) -> Result<Option<(u32, u8)>, Counted> {
    let inum = r.at::<u32>(r.at::<u64>(sk, off!(sock_net))?, off!(net_inum))?;
    if inum == setting!(init_netns_inum) {
        return Ok(None);
    }
    // A kernel without the sk_kern_sock bit (MISSING offset): no filter.
    let kernel = if off!(sock_kern_byte) == Offsets::MISSING {
        0
    } else {
        let byte = r.at::<u8>(sk, off!(sock_kern_byte))?;
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

/// Where a hook keeps the connection's fields: the classic tracepoint in
/// its record (tracefs offsets), tp_btf in the socket itself (BTF offsets).
trait Fields {
    fn get<T>(&self, offset: u32) -> Result<T, Counted>;
}

impl Fields for TracePointContext {
    #[inline(always)]
    fn get<T>(&self, offset: u32) -> Result<T, Counted> {
        unsafe { self.read_at::<T>(offset as usize) }.map_err(|_| Counted)
    }
}

/// A `struct sock *`, read with `bpf_probe_read_kernel`.
struct Sock(u64);

impl Fields for Sock {
    #[inline(always)]
    fn get<T>(&self, offset: u32) -> Result<T, Counted> {
        read::<T>(self.0, offset)
    }
}

/// The offsets of the tuple's fields in one of those places.
struct TupleAt {
    family: u32,
    protocol: u32,
    sport: u32,
    dport: u32,
    saddr: u32,
    daddr: u32,
    saddr_v6: u32,
    daddr_v6: u32,
    /// The socket keeps the ports in network order; the tracepoint record
    /// (and so the event) has them in host order.
    ports_network_order: bool,
}

#[inline(always)]
fn tuple<F: Fields>(f: &F, at: TupleAt) -> Result<Tuple, Counted> {
    let family = f.get::<u16>(at.family)?;
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    if family == AF_INET6 {
        saddr = f.get::<[u8; 16]>(at.saddr_v6)?;
        daddr = f.get::<[u8; 16]>(at.daddr_v6)?;
    } else {
        saddr[..4].copy_from_slice(&f.get::<[u8; 4]>(at.saddr)?);
        daddr[..4].copy_from_slice(&f.get::<[u8; 4]>(at.daddr)?);
    }
    let port = |offset: u32| -> Result<u16, Counted> {
        let raw = f.get::<u16>(offset)?;
        Ok(if at.ports_network_order {
            u16::from_be(raw)
        } else {
            raw
        })
    };
    Ok(Tuple {
        family,
        protocol: f.get::<u16>(at.protocol)?,
        sport: port(at.sport)?,
        dport: port(at.dport)?,
        saddr,
        daddr,
    })
}

// ---- classic tracepoint: everything from the record ---------------------

fn on_record(ctx: &TracePointContext) -> Result<(), Counted> {
    let sk = ctx.get::<u64>(off!(tp_sk_skaddr))?;
    let Some((inum, kernel)) = in_scope(ProbeRead, sk)? else {
        return Ok(());
    };
    let old = ctx.get::<i32>(off!(tp_sk_oldstate))?;
    let new = ctx.get::<i32>(off!(tp_sk_newstate))?;
    let at = TupleAt {
        family: off!(tp_sk_family),
        protocol: off!(tp_sk_protocol),
        sport: off!(tp_sk_sport),
        dport: off!(tp_sk_dport),
        saddr: off!(tp_sk_saddr),
        daddr: off!(tp_sk_daddr),
        saddr_v6: off!(tp_sk_saddr_v6),
        daddr_v6: off!(tp_sk_daddr_v6),
        ports_network_order: false,
    };
    report(sk, inum, kernel, old, new, tuple(ctx, at)?)
}

#[tracepoint]
pub fn sock_state_tp(ctx: TracePointContext) -> u32 {
    let _ = on_record(&ctx);
    0
}

// ---- tp_btf: the arguments, and the tuple from the socket ---------------

fn on_args(sk: u64, old: i32, new: i32) -> Result<(), Counted> {
    let Some((inum, kernel)) = in_scope(BtfLoad, sk)? else {
        return Ok(());
    };
    let at = TupleAt {
        family: off!(sk_family),
        protocol: off!(sk_protocol),
        sport: off!(sk_sport),
        dport: off!(sk_dport),
        saddr: off!(sk_saddr),
        daddr: off!(sk_daddr),
        saddr_v6: off!(sk_v6_rcv_saddr),
        daddr_v6: off!(sk_v6_daddr),
        ports_network_order: true,
    };
    report(sk, inum, kernel, old, new, tuple(&Sock(sk), at)?)
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
