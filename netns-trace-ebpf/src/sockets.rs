//! Sockets: `sock:inet_sock_set_state` (a stable tracepoint on every
//! kernel, also where kprobes are refused) reports TCP state changes of
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
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use netns_trace_common::{kind, SockState, NAME_LEN};

use crate::kread::{emit, header, net_inum, netns_in_scope, off, read, setting, Counted};

/// Reads a tracepoint field at an offset the loader resolved.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, Counted> {
    unsafe { ctx.read_at::<T>(offset as usize) }.map_err(|_| Counted)
}

fn on_state(ctx: &TracePointContext) -> Result<(), Counted> {
    let sk = field::<u64>(ctx, off!(tp_sk_skaddr))?;
    let inum = net_inum(read::<u64>(sk, off!(sock_net))?)?;
    if inum == setting!(init_netns_inum) {
        return Ok(());
    }
    // A kernel without the sk_kern_sock bit (MISSING offset): no filter.
    let known = off!(sock_kern_byte) != netns_trace_common::Offsets::MISSING;
    let kern_byte = read::<u8>(sk, off!(sock_kern_byte)).unwrap_or(0);
    let kernel = (kern_byte >> (off!(sock_kern_bit) & 7)) & 1;
    if (known && kernel == 0) || !netns_in_scope(inum) {
        return Ok(());
    }
    let family = field::<u16>(ctx, off!(tp_sk_family))?;
    let (saddr, daddr) = if family == 10 {
        (
            field::<[u8; 16]>(ctx, off!(tp_sk_saddr_v6))?,
            field::<[u8; 16]>(ctx, off!(tp_sk_daddr_v6))?,
        )
    } else {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s[..4].copy_from_slice(&field::<[u8; 4]>(ctx, off!(tp_sk_saddr))?);
        d[..4].copy_from_slice(&field::<[u8; 4]>(ctx, off!(tp_sk_daddr))?);
        (s, d)
    };
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
        family,
        protocol: field::<u16>(ctx, off!(tp_sk_protocol))?,
        sport: field::<u16>(ctx, off!(tp_sk_sport))?,
        dport: field::<u16>(ctx, off!(tp_sk_dport))?,
        oldstate: field::<i32>(ctx, off!(tp_sk_oldstate))? as u8,
        newstate: field::<i32>(ctx, off!(tp_sk_newstate))? as u8,
        kernel,
        _pad: 0,
        saddr,
        daddr,
        dst_dev_name,
    });
    Ok(())
}

#[tracepoint]
pub fn sock_state_tp(ctx: TracePointContext) -> u32 {
    let _ = on_state(&ctx);
    0
}
