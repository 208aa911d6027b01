//! `cargo xtask bench`: boot each test kernel once under QEMU and run the
//! measuring loops (`nt-scenario bench`) in it: every figure comes from one
//! boot, traced versus untraced in interleaved rounds. Prints the table
//! (bench_report) and, with --write, writes docs/performance.md.
use crate::bench_report;
use crate::setup::{self, repo_root};
use crate::vm::{self, VmTestArgs};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// 6.1, 6.12 or all.
    #[arg(long, default_value = "all")]
    kernel: String,
    /// Rounds of each measurement (untraced and traced interleaved).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Namespaces created and destroyed per churn round (the default spans
    /// about two seconds under TCG: several of the loader's 250 ms polls, so
    /// its work is inside the measured window, not deferred past its end).
    #[arg(long, default_value_t = 600)]
    churn_count: usize,
    /// Loopback TCP connections per round.
    #[arg(long, default_value_t = 1000)]
    tcp_count: usize,
    /// Ring-buffer ramp steps: namespaces per minute (paced) or maxN
    /// (N threads, unpaced).
    #[arg(long, default_value = "1200,max1,max2,max4")]
    ramp: String,
    /// Seconds per ramp step.
    #[arg(long, default_value_t = 10)]
    ramp_secs: u64,
    /// Leave bpftrace out (it makes the initramfs about 200 MB larger).
    #[arg(long)]
    no_bpftrace: bool,
    /// Skip the profile round (per-program BPF run time, and `perf record`
    /// of the loader when Debian's perf is installed).
    #[arg(long)]
    no_profile: bool,
    /// Benchmark this netns-trace binary instead of building the workspace's
    /// (e.g. an older commit, for before/after figures).
    #[arg(long, value_name = "PATH")]
    tracer: Option<PathBuf>,
    /// Only the loader's native replay (no VM, no root): what decoding,
    /// the session and the JSON line cost per record, natively
    /// (`cargo bench -p netns-trace --bench loader`).
    #[arg(long, conflicts_with_all = ["write", "tracer"])]
    loader: bool,
    /// The guest's clock: `instructions` (QEMU `-icount shift=0,sleep=off`:
    /// a nanosecond of guest time per executed instruction, idle time
    /// skipped; rates and times count the guest's work, free of the host's
    /// load and of how costly TCG makes some instructions) or `host` (the
    /// emulated guest on the host's clock: wall time of the emulation).
    #[arg(long, value_enum, default_value_t = Clock::Instructions)]
    clock: Clock,
    /// Write the results to this Markdown file (e.g. docs/performance.md):
    /// the command, the kernel and the tables of this run.
    #[arg(long, value_name = "FILE")]
    write: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Clock {
    Instructions,
    Host,
}

impl Clock {
    /// QEMU's `-icount` argument for this clock.
    fn icount(self) -> Option<String> {
        match self {
            Clock::Instructions => Some("shift=0,sleep=off".into()),
            Clock::Host => None,
        }
    }
}

/// Debian's bpftrace on the build machine (installed by `cargo xtask setup`).
const BPFTRACE: &str = "/usr/bin/bpftrace";
/// Debian's perf (linux-perf), for the profile round.
const PERF: &str = "/usr/bin/perf";

pub fn run(a: BenchArgs) -> Result<()> {
    if a.loader {
        return loader();
    }
    let shorts: Vec<String> = match a.kernel.as_str() {
        "all" => setup::KERNELS.iter().map(|(s, _)| s.to_string()).collect(),
        k => vec![k.to_string()],
    };
    let bpftrace = !a.no_bpftrace && std::path::Path::new(BPFTRACE).exists();
    if !a.no_bpftrace && !bpftrace {
        println!("bench: {BPFTRACE} missing (run cargo xtask setup): bpftrace left out");
    }
    let mut guest_cmd = format!(
        "--rounds {} --churn-count {} --tcp-count {} --ramp {} --ramp-secs {}",
        a.rounds, a.churn_count, a.tcp_count, a.ramp, a.ramp_secs
    );
    if bpftrace {
        guest_cmd += " --bpftrace /bin/bpftrace";
    }
    let perf = !a.no_profile && std::path::Path::new(PERF).exists();
    if !a.no_profile {
        guest_cmd += " --profile";
        if perf {
            guest_cmd += " --perf /bin/perf";
        } else {
            println!(
                "bench: {PERF} missing (run cargo xtask setup): the profile has no perf samples"
            );
        }
    }
    let mut sections = Vec::new();
    for short in &shorts {
        let k = setup::ensure_kernel(short)?;
        let mut args = VmTestArgs::all();
        args.kernel = short.clone();
        args.scenario = "bench".into();
        args.tracer = a.tracer.clone();
        args.bench = Some(guest_cmd.clone());
        if bpftrace {
            args.extra_bins.push(PathBuf::from(BPFTRACE));
        }
        if perf {
            args.extra_bins.push(PathBuf::from(PERF));
        }
        vm::build_guest_binaries(a.tracer.is_none())?;
        let _lock = vm::lock_kernel(&k)?;
        let module = vm::build_module(&k)?;
        let cpio = vm::build_initramfs(&k, &module, &args, None)?;
        let boot = vm::BootOpts {
            // bpftrace and its LLVM live in the initramfs, i.e. in RAM.
            mem_mb: if bpftrace { 3072 } else { 1024 },
            // One vCPU: the churn loop, the kernel's cleanup worker and the
            // tracer all compete for it, so every cost of tracing shows in
            // the loop's rate (with two, the tracer could hide on the other).
            smp: 1,
            total: Duration::from_secs(3600),
            stall: Duration::from_secs(600),
            icount: a.clock.icount(),
        };
        let serial = vm::boot_with(&k, &cpio, "bench", &boot)?;
        let parsed = crate::vm_assert::parse_sections(&serial);
        let body = parsed
            .get("bench")
            .context("no bench section in the serial log (see .cache/vm-logs)")?;
        let v: Value = serde_json::from_str(&body.join("\n")).context("bench section")?;
        let rows = bench_report::rows(&v);
        println!(
            "\nbench: {} ({})",
            k.abi,
            v["kernel"].as_str().unwrap_or("?")
        );
        print!("{}", bench_report::text_table(&rows));
        print!("{}", bench_report::profile(&v["profile"]));
        for e in v["errors"].as_array().into_iter().flatten() {
            println!("bench: error in the guest: {}", e.as_str().unwrap_or("?"));
        }
        sections.push((k.abi.clone(), v, rows));
    }
    if let Some(path) = &a.write {
        let cmd = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
        let block = bench_report::generated(&format!("cargo xtask {cmd}"), &sections);
        let path = if path.is_absolute() {
            path.clone()
        } else {
            repo_root().join(path)
        };
        let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Performance\n".into());
        let text = bench_report::splice(&existing, &block);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("bench: wrote {}", path.display());
    }
    if sections.is_empty() {
        bail!("no kernel benchmarked");
    }
    Ok(())
}

/// The native loader replay (netns-trace/benches/loader.rs): prints its
/// figures.
fn loader() -> Result<()> {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["bench", "-q", "-p", "netns-trace", "--bench", "loader"])
        .current_dir(repo_root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo bench")?;
    if !out.status.success() {
        bail!("cargo bench --bench loader failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("\"bench\":\"loader\""))
        .context("no result line from the loader bench")?;
    let v: Value = serde_json::from_str(line).context("loader bench result")?;
    println!(
        "bench: loader replay (native, {} records of a namespace churn, {} replays): {} ns a record [{}–{}], {} bytes of JSON a record",
        v["records"], v["replays"], v["ns_per_record_median"], v["ns_per_record_min"],
        v["ns_per_record_max"], v["bytes_per_record"]
    );
    Ok(())
}
