//! The holder scan (incident mode): when a device is first found stuck,
//! walk the kernel's neighbour tables (`arp_tbl`, `nd_tbl`) for entries on
//! it, with the never-attached `scan_neigh` program run chunk by chunk
//! (BPF_PROG_TEST_RUN). What it finds arrives as `OBJ_HOLD` events marked
//! `found_by: scan`; what it cannot walk is said, not skipped silently.
use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use anyhow::{bail, Result};
use aya::{
    programs::{Iter, RawTracePoint},
    Btf, Ebpf,
};
use netns_trace::{kallsyms::Symbols, output::TableScan};
use netns_trace_common::Offsets;

/// Mirrors scan.rs in the eBPF crate: the end-of-table bit.
const DONE: u32 = 1 << 30;
/// Runs per table at most (each visits 16 entries or empty buckets).
const MAX_RUNS: u32 = 16384;

/// Holder kinds the scan does not walk (reported with every scan).
pub const NOT_SCANNED: &[&str] = &[
    "UDP and other non-TCP sockets",
    "route caches (FIB nexthop dst caches)",
    "in_device / inet6_dev",
    "packets in queues",
    "bare dev_hold (the watchpoints name those, from arming on)",
];

pub struct Scanner {
    /// `scan_neigh` and the tables it walks: (symbol, address).
    neigh: Option<(RawFd, Vec<(&'static str, u64)>)>,
    /// `scan_tcp` (iter/tcp, 5.9+) loaded.
    tcp: bool,
}

impl Scanner {
    /// Loads what this kernel allows: the neighbour walk (6.1-6.12 hash
    /// layout, tables in /proc/kallsyms) and the TCP walk; fails with both
    /// reasons when neither can run.
    pub fn load(ebpf: &mut Ebpf, btf: &Btf, symbols: &Symbols, offsets: &Offsets) -> Result<Self> {
        let neigh = load_neigh(ebpf, symbols, offsets);
        let tcp = load_tcp(ebpf, btf, offsets);
        match (neigh, tcp) {
            (Err(n), Err(t)) => bail!("neighbour tables: {n:#}; TCP sockets: {t:#}"),
            (neigh, tcp) => {
                if let Err(e) = &neigh {
                    log::info!("neighbour-table walk unavailable: {e:#}");
                }
                if let Err(e) = &tcp {
                    log::info!("TCP socket walk unavailable: {e:#}");
                }
                Ok(Self {
                    neigh: neigh.ok(),
                    tcp: tcp.is_ok(),
                })
            }
        }
    }

    /// Walks every neighbour table once (bounded), then every TCP socket
    /// (the kernel's own TCP iterator, when it loaded); the holders on
    /// stuck devices are in the ring buffer when this returns.
    pub fn scan(&self, ebpf: &mut Ebpf) -> Vec<TableScan> {
        let mut out: Vec<TableScan> = match &self.neigh {
            Some((fd, tables)) => tables
                .iter()
                .map(|&(table, addr)| walk_neigh(*fd, table, addr))
                .collect(),
            None => Vec::new(),
        };
        if self.tcp {
            out.push(walk_tcp(ebpf));
        }
        out
    }
}

fn load_neigh(
    ebpf: &mut Ebpf,
    symbols: &Symbols,
    offsets: &Offsets,
) -> Result<(RawFd, Vec<(&'static str, u64)>)> {
    if [
        offsets.neigh_next,
        offsets.tbl_nht,
        offsets.nht_buckets,
        offsets.nht_shift,
    ]
    .contains(&Offsets::MISSING)
    {
        bail!("this kernel's neighbour hash is not the layout netns-trace walks (BTF has no neighbour.next / neigh_hash_table.hash_buckets)");
    }
    let tables: Vec<(&'static str, u64)> = ["arp_tbl", "nd_tbl"]
        .into_iter()
        .filter_map(|name| symbols.any_address_of(name).map(|a| (name, a)))
        .collect();
    if tables.is_empty() {
        bail!("arp_tbl and nd_tbl are not in /proc/kallsyms (data symbols hidden)");
    }
    let prog: &mut RawTracePoint = crate::probes::program(ebpf, "scan_neigh")?.try_into()?;
    prog.load()?;
    Ok((prog.fd()?.as_fd().as_raw_fd(), tables))
}

/// Walks one neighbour table, chunk by chunk (bounded by `MAX_RUNS`).
fn walk_neigh(prog_fd: RawFd, table: &'static str, addr: u64) -> TableScan {
    let mut scan = TableScan {
        table,
        walked: 0,
        truncated: false,
        error: None,
    };
    let mut first = 0u32;
    for _ in 0..MAX_RUNS {
        let next = match crate::testrun::run(prog_fd, &[addr, u64::from(first)]) {
            Ok(r) if r as i32 >= 0 => r,
            Ok(_) => {
                scan.error = Some("a kernel read failed".into());
                return scan;
            }
            Err(e) => {
                scan.error = Some(e);
                return scan;
            }
        };
        log::debug!("scan_neigh({table}, {first}) returned {next:#x}");
        if next & DONE != 0 {
            scan.walked = next & !DONE;
            return scan;
        }
        if next == first {
            // One chain longer than a run: skip it, say so.
            scan.truncated = true;
            first += 1;
        } else {
            first = next;
        }
        scan.walked = first;
    }
    scan.truncated = true;
    scan
}

fn tcp_prog(ebpf: &mut Ebpf) -> Result<&mut Iter> {
    Ok(crate::probes::program(ebpf, "scan_tcp")?.try_into()?)
}

fn load_tcp(ebpf: &mut Ebpf, btf: &Btf, offsets: &Offsets) -> Result<()> {
    if offsets.skc_state == Offsets::MISSING || offsets.sock_dst_cache == Offsets::MISSING {
        bail!("BTF has no sock_common.skc_state / sock.sk_dst_cache");
    }
    tcp_prog(ebpf)?.load("tcp", btf)?;
    Ok(())
}

/// One pass of the TCP iterator; it writes one byte per socket walked.
fn walk_tcp(ebpf: &mut Ebpf) -> TableScan {
    let mut scan = TableScan {
        table: "tcp",
        walked: 0,
        truncated: false,
        error: None,
    };
    match tcp_prog(ebpf).and_then(crate::tasks::read_iter) {
        Ok(seen) => scan.walked = seen.len() as u32,
        Err(e) => scan.error = Some(format!("{e:#}")),
    }
    scan
}
