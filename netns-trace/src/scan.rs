//! The holder scan (incident mode): when a device is first found stuck,
//! walk the kernel's neighbour tables (`arp_tbl`, `nd_tbl`) for entries on
//! it, with the never-attached `scan_neigh` program run chunk by chunk
//! (BPF_PROG_TEST_RUN). What it finds arrives as `OBJ_HOLD` events marked
//! `found_by: scan`; what it cannot walk is said, not skipped silently.
use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use anyhow::{bail, Context as _, Result};
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
    // The kernel's TCP iterator keeps to the namespace of the task that
    // opens it (bpf_iter_init_seq_net): a dead namespace cannot be entered,
    // so its sockets are out of reach.
    "TCP sockets of other namespaces than the tracer's",
    "UDP and other non-TCP sockets",
    "route caches (FIB nexthop dst caches)",
    "in_device / inet6_dev",
    "packets in queues",
    "bare dev_hold (the watchpoints name those, from arming on)",
];

/// The holder scan. Its programs load on the first scan, not at start:
/// verifying `scan_neigh` took 4.2 s of the 6.1 guest's 7.5 s start-up
/// under TCG, and most sessions never see a stuck device.
pub struct Scanner {
    /// The neighbour tables to walk (symbol, address), or why not.
    tables: Result<Tables, String>,
    /// Whether the TCP walk can run, or why not (BTF fields).
    tcp_fields: Result<(), String>,
    loaded: Option<Loaded>,
}

/// Neighbour tables to walk: (symbol, address).
type Tables = Vec<(&'static str, u64)>;

struct Loaded {
    /// `scan_neigh`'s fd and the tables, or why the walk is unavailable.
    neigh: Result<(RawFd, Tables), String>,
    /// `scan_tcp` (iter/tcp, 5.9+) loaded, or why not.
    tcp: Result<(), String>,
}

impl Scanner {
    /// What the scan will need, read now while the symbols are at hand.
    pub fn new(symbols: &Symbols, offsets: &Offsets) -> Self {
        Self {
            tables: neigh_tables(symbols, offsets).map_err(|e| format!("{e:#}")),
            tcp_fields: tcp_fields(offsets).map_err(|e| format!("{e:#}")),
            loaded: None,
        }
    }

    /// Walks every neighbour table once (bounded), then the TCP sockets of
    /// the tracer's own namespace (the kernel's TCP iterator walks no
    /// other); the holders on stuck devices are in
    /// the ring buffer when this returns. Loads the programs the first
    /// time; fails with both reasons when neither walk can run.
    pub fn scan(&mut self, ebpf: &mut Ebpf) -> Result<Vec<TableScan>, String> {
        let loaded = self.load(ebpf);
        let (neigh, tcp) = match (&loaded.neigh, &loaded.tcp) {
            (Err(n), Err(t)) => return Err(format!("neighbour tables: {n}; TCP sockets: {t}")),
            (neigh, tcp) => (neigh.as_ref().ok(), tcp.is_ok()),
        };
        let mut out: Vec<TableScan> = match neigh {
            Some((fd, tables)) => tables
                .iter()
                .map(|&(table, addr)| walk_neigh(*fd, table, addr))
                .collect(),
            None => Vec::new(),
        };
        if tcp {
            out.push(walk_tcp(ebpf));
        }
        Ok(out)
    }

    fn load(&mut self, ebpf: &mut Ebpf) -> &Loaded {
        let (tables, tcp_fields) = (&self.tables, &self.tcp_fields);
        self.loaded.get_or_insert_with(|| {
            let t = std::time::Instant::now();
            let neigh = match tables {
                Ok(tables) => load_neigh(ebpf)
                    .map(|fd| (fd, tables.clone()))
                    .map_err(|e| format!("{e:#}")),
                Err(why) => Err(why.clone()),
            };
            let tcp = match tcp_fields {
                Ok(()) => load_tcp(ebpf).map_err(|e| format!("{e:#}")),
                Err(why) => Err(why.clone()),
            };
            if let Err(e) = &neigh {
                log::info!("neighbour-table walk unavailable: {e}");
            }
            if let Err(e) = &tcp {
                log::info!("TCP socket walk unavailable: {e}");
            }
            log::info!("scan programs loaded in {:?}", t.elapsed());
            Loaded { neigh, tcp }
        })
    }
}

/// The neighbour tables, when this kernel's hash layout is the one the
/// walk knows (6.1-6.12) and the tables are in /proc/kallsyms.
fn neigh_tables(symbols: &Symbols, offsets: &Offsets) -> Result<Tables> {
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
    Ok(tables)
}

fn load_neigh(ebpf: &mut Ebpf) -> Result<RawFd> {
    let prog: &mut RawTracePoint = crate::probes::program(ebpf, "scan_neigh")?.try_into()?;
    prog.load()?;
    Ok(prog.fd()?.as_fd().as_raw_fd())
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

fn tcp_fields(offsets: &Offsets) -> Result<()> {
    if offsets.skc_state == Offsets::MISSING || offsets.sock_dst_cache == Offsets::MISSING {
        bail!("BTF has no sock_common.skc_state / sock.sk_dst_cache");
    }
    Ok(())
}

/// The iterator is typed by BTF; the loader dropped its parse after
/// attaching, so this one lives only for the load.
fn load_tcp(ebpf: &mut Ebpf) -> Result<()> {
    let btf = Btf::from_sys_fs().context("parsing kernel BTF for iter/tcp")?;
    tcp_prog(ebpf)?.load("tcp", &btf)?;
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
