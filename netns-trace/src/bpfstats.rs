//! `--bpf-stats`: the kernel's own count of what each of the tracer's BPF
//! programs costs (run count and run time), for the summary. The kernel
//! only counts while some process holds a BPF_ENABLE_STATS descriptor, so
//! the tracer holds one for the session; counting costs two clock reads per
//! program run, which is why it is a flag and not the default.
use anyhow::{Context, Result};
use aya::sys::{enable_stats, Stats};
use aya::Ebpf;
use netns_trace::output::BpfProgStat;
use std::os::fd::OwnedFd;

/// Starts the kernel's per-program accounting; it stops when the returned
/// descriptor is dropped (unless something else also asked for it).
pub fn enable() -> Result<OwnedFd> {
    enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS (needs Linux 5.8 and CAP_SYS_ADMIN)")
}

/// Every loaded program of the session, busiest first; programs whose info
/// the kernel will not give are left out.
pub fn collect(ebpf: &Ebpf) -> Vec<BpfProgStat> {
    let mut stats: Vec<BpfProgStat> = ebpf
        .programs()
        .filter_map(|(name, prog)| {
            let info = prog.info().ok()?;
            let (runs, ns) = (info.run_count(), info.run_time().as_nanos() as u64);
            Some(BpfProgStat {
                program: name.to_string(),
                runs,
                run_time_us: ns / 1000,
                avg_ns: ns.checked_div(runs).unwrap_or(0),
            })
        })
        .collect();
    stats.sort_by(|a, b| {
        (b.run_time_us, b.runs, &a.program).cmp(&(a.run_time_us, a.runs, &b.program))
    });
    stats
}
