//! The holder scan (incident mode): when a device is first found stuck,
//! walk the kernel's neighbour tables (`arp_tbl`, `nd_tbl`) for entries on
//! it, with the never-attached `scan_neigh` program run chunk by chunk
//! (BPF_PROG_TEST_RUN). What it finds arrives as `OBJ_HOLD` events marked
//! `found_by: scan`; what it cannot walk is said, not skipped silently.
use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use anyhow::{anyhow, bail, Result};
use aya::{programs::RawTracePoint, Ebpf};
use netns_trace::{kallsyms::Symbols, output::TableScan};
use netns_trace_common::Offsets;

/// Mirrors scan.rs in the eBPF crate: the end-of-table bit.
const DONE: u32 = 1 << 30;
/// Runs per table at most (each visits 16 entries or empty buckets).
const MAX_RUNS: u32 = 16384;

/// Holder kinds the scan does not walk (reported with every scan).
pub const NOT_SCANNED: &[&str] = &[
    "TCP/UDP sockets and their cached dst",
    "route caches (FIB nexthop dst caches)",
    "in_device / inet6_dev",
    "packets in queues",
    "bare dev_hold (the watchpoints name those, from arming on)",
];

pub struct Scanner {
    prog_fd: RawFd,
    /// (symbol, address) of each neighbour table to walk.
    tables: Vec<(&'static str, u64)>,
}

impl Scanner {
    /// Loads `scan_neigh`; fails with the reason when this kernel's
    /// neighbour hash is not the 6.1-6.12 layout or the tables are not in
    /// /proc/kallsyms (data symbols hidden).
    pub fn load(ebpf: &mut Ebpf, symbols: &Symbols, offsets: &Offsets) -> Result<Self> {
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
        let prog: &mut RawTracePoint = ebpf
            .program_mut("scan_neigh")
            .ok_or_else(|| anyhow!("scan_neigh is not in the eBPF object"))?
            .try_into()?;
        prog.load()?;
        let prog_fd = prog.fd()?.as_fd().as_raw_fd();
        Ok(Self { prog_fd, tables })
    }

    /// Walks every table once (bounded: `MAX_BUCKETS` buckets, 16 entries
    /// per chain); the entries on stuck devices are in the ring buffer
    /// when this returns.
    pub fn scan(&self) -> Vec<TableScan> {
        self.tables
            .iter()
            .map(|&(table, addr)| self.walk(table, addr))
            .collect()
    }

    fn walk(&self, table: &'static str, addr: u64) -> TableScan {
        let mut scan = TableScan {
            table,
            buckets: 0,
            truncated: false,
            error: None,
        };
        let mut first = 0u32;
        for _ in 0..MAX_RUNS {
            let next = match crate::testrun::run(self.prog_fd, &[addr, u64::from(first)]) {
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
                scan.buckets = next & !DONE;
                return scan;
            }
            if next == first {
                // One chain longer than a run: skip it, say so.
                scan.truncated = true;
                first += 1;
            } else {
                first = next;
            }
            scan.buckets = first;
        }
        scan.truncated = true;
        scan
    }
}
