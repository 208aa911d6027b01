//! Incident mode: holders created before the tracer started cannot be
//! seen being created, so the loader walks the kernel's neighbour tables
//! for entries on a stuck device (one in `WAITING_DEVS`). `scan_neigh` is
//! never attached: the loader runs it with BPF_PROG_TEST_RUN, one chunk of
//! hash buckets per run, so every run is small and bounded.
use core::ffi::c_void;

use aya_ebpf::{bindings::seq_file, helpers::bpf_seq_write};

use netns_trace_common::{found_by, kind, obj_kind, ObjHold, NAME_LEN};

use crate::{
    kread::{emit, header, net_inum, off, read, Counted},
    maps::WAITING_DEVS,
};

/// Entries and empty buckets visited per run. One flat loop, not a loop
/// per chain inside a loop over buckets: the verifier walks it in linear
/// time (nested loops with a branch each made it explode).
const STEPS: u32 = 16;
/// Return value bit: the walk reached the end of the table.
const DONE: i32 = 1 << 30;

/// Arguments: the `struct neigh_table` (`arp_tbl`, `nd_tbl`) and the bucket
/// to start at. Returns the bucket to resume at (its chain is walked again
/// from the head: the loader's ledger ignores repeats), or `DONE` | the
/// table's bucket count, or -1 if
/// the table could not be read.
///
/// Written without `#[raw_tracepoint]`: that macro returns 0 whatever the
/// function returns, and the loader reads this value (BPF_PROG_TEST_RUN).
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp/netns_trace_scan_neigh")]
pub fn scan_neigh(ctx: *mut c_void) -> i32 {
    let args = ctx as *const u64;
    let (tbl, first) = unsafe { (*args, *args.add(1) as u32) };
    scan_from(tbl, first).unwrap_or(-1)
}

#[inline(always)]
fn scan_from(tbl: u64, first: u32) -> Result<i32, Counted> {
    let family = read::<i32>(tbl, off!(neigh_tbl_family))? as u32;
    let nht = read::<u64>(tbl, off!(tbl_nht))?;
    let buckets = read::<u64>(nht, off!(nht_buckets))?;
    let shift = read::<u32>(nht, off!(nht_shift))?;
    if shift > 24 {
        return Err(Counted);
    }
    let size = 1u32 << shift;
    let mut bucket = first;
    if bucket >= size {
        return Ok(DONE | size as i32);
    }
    let mut n = read::<u64>(buckets, bucket * 8)?;
    for _ in 0..STEPS {
        if n == 0 {
            bucket += 1;
            if bucket >= size {
                return Ok(DONE | size as i32);
            }
            n = read::<u64>(buckets, bucket * 8)?;
            continue;
        }
        let dev = read::<u64>(n, off!(neigh_dev))?;
        if unsafe { WAITING_DEVS.get(dev) }.is_some() {
            let _ = found(n, dev, family);
        }
        n = read::<u64>(n, off!(neigh_next))?;
    }
    Ok(bucket as i32)
}

/// One `OBJ_HOLD` (found by scan) for neighbour `n` on stuck device `dev`.
#[inline(never)]
fn found(n: u64, dev: u64, family: u32) -> Result<(), Counted> {
    let mut key = [0u8; 16];
    if family == 10 {
        key = read::<[u8; 16]>(n, off!(neigh_key))?;
    } else {
        key[..4].copy_from_slice(&read::<[u8; 4]>(n, off!(neigh_key))?);
    }
    emit(&ObjHold {
        hdr: header(kind::OBJ_HOLD),
        obj: n,
        dev,
        inum: net_inum(read::<u64>(dev, off!(dev_net))?)?,
        ifindex: read::<i32>(dev, off!(dev_ifindex))?,
        obj_kind: obj_kind::NEIGH,
        family,
        stack_id: -1,
        found_by: found_by::SCAN,
        key,
        dev_name: read::<[u8; NAME_LEN]>(dev, off!(dev_name))?,
    });
    Ok(())
}

/// The TCP socket walk (`iter/tcp`, run by the loader reading its link):
/// a full socket whose cached route (`sk_dst_cache`) sits on a stuck device
/// is a holder (`OBJ_HOLD`, the dst, found by scan). One byte per socket
/// goes to the iterator's output so the loader can say how many it walked.
/// `struct bpf_iter__tcp { struct bpf_iter_meta *meta; struct sock_common
/// *sk_common; uid_t uid; }`; `meta->seq` is the first field of the meta.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub fn scan_tcp(ctx: *mut c_void) -> i32 {
    let (meta, sk) = unsafe {
        (
            *(ctx as *const *const *mut seq_file),
            *(ctx as *const u64).add(1),
        )
    };
    if meta.is_null() || sk == 0 {
        return 0;
    }
    let seq = unsafe { *meta };
    let one = 1u8;
    unsafe { bpf_seq_write(seq, &one as *const u8 as *const c_void, 1) };
    let _ = tcp_holder(sk);
    0
}

#[inline(always)]
fn tcp_holder(sk: u64) -> Result<(), Counted> {
    // TIME_WAIT and NEW_SYN_RECV entries are not full sockets: no dst cache.
    let state = read::<u8>(sk, off!(skc_state))?;
    if state == 6 || state == 12 {
        return Ok(());
    }
    let dst = read::<u64>(sk, off!(sock_dst_cache))?;
    if dst == 0 {
        return Ok(());
    }
    let dev = read::<u64>(dst, off!(dst_dev))?;
    if unsafe { WAITING_DEVS.get(dev) }.is_none() {
        return Ok(());
    }
    emit(&ObjHold {
        hdr: header(kind::OBJ_HOLD),
        obj: dst,
        dev,
        inum: net_inum(read::<u64>(dev, off!(dev_net))?)?,
        ifindex: read::<i32>(dev, off!(dev_ifindex))?,
        obj_kind: obj_kind::DST,
        family: read::<u16>(read::<u64>(dst, off!(dst_ops))?, off!(dst_ops_family)).unwrap_or(0)
            as u32,
        stack_id: -1,
        found_by: found_by::SCAN,
        key: [0; 16],
        dev_name: read::<[u8; NAME_LEN]>(dev, off!(dev_name))?,
    });
    Ok(())
}
