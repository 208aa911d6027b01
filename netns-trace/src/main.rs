//! netns-trace: follow network namespace creation and teardown on a live
//! kernel and show which devices are stuck waiting to become free.
//! This file wires the pure library (`netns_trace::*`) to the kernel-facing
//! parts (`probes`, `attach`, `trace`).
mod attach;
mod bpfstats;
mod docker;
mod ksym_lookup;
mod probes;
mod scan;
mod serve;
mod stacks;
mod tasks;
mod testrun;
mod trace;
mod watch;
mod watch_ring;

use std::{io::IsTerminal as _, process::ExitCode};

use anyhow::{bail, Context as _, Result};
use clap::Parser as _;
use netns_trace::{
    cli::{Action, Cli},
    kallsyms::{FilterFunctions, Symbols, Wanted},
    kernel::{btf, btf_raw, caps::KernelCaps, tracefs},
    plan::{Capabilities, Plan},
};

fn main() -> ExitCode {
    one_malloc_arena();
    no_huge_pages();
    let cli = Cli::parse();
    let style = if cli
        .color
        .enabled(std::io::stderr().is_terminal(), no_color_env())
    {
        env_logger::WriteStyle::Always
    } else {
        env_logger::WriteStyle::Never
    };
    env_logger::Builder::new()
        .filter_level(cli.log_level())
        .parse_env("NETNS_TRACE_LOG")
        .write_style(style)
        .format_timestamp(None)
        .init();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
    };
    let result = cli.into_action().and_then(|action| match action {
        Action::Doctor { json, .. } => doctor::run(json),
        Action::Trace(opts) => runtime()?.block_on(trace::run(opts, None)),
        Action::Run(r) => runtime()?.block_on(trace::run(r.trace.clone(), Some(r))),
        Action::Completions(shell) => {
            print!("{}", netns_trace::cli::completions(shell));
            Ok(ExitCode::SUCCESS)
        }
        Action::Man => {
            print!("{}", netns_trace::cli::man_page());
            Ok(ExitCode::SUCCESS)
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("netns-trace: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// What start-up learns about the kernel before loading anything.
pub struct Prepared {
    pub caps: KernelCaps,
    pub symbols: Symbols,
    /// [`FROM_LOOKUP`] or [`FROM_FILE`].
    pub symbols_from: &'static str,
    /// Struct offsets from BTF, and the fields this kernel lacks.
    pub btf_offsets: (netns_trace_common::Offsets, Vec<String>),
    /// TCP state names from the kernel's enum.
    pub tcp_states: std::collections::HashMap<u8, String>,
    /// The kernel BTF's types aya attaches the planned programs by, the
    /// rest placeholders (`btf_raw::Btf::names_only`).
    pub attach_btf: Vec<u8>,
    /// aya's parse of `attach_btf` for attaching (fentry, tp_btf,
    /// iterators): empty until `trace::load_programs` fills it.
    pub aya_btf: aya::Btf,
    pub plan: Plan,
}

/// Checks privileges, mounts tracefs if needed, reads kallsyms and BTF, and
/// plans the attach. Every refusal is one sentence.
/// /proc/kallsyms, parsed as it is read.
/// glibc gives every thread that allocates its own arena: the symbol table
/// read in the background after attaching (trace::run, ~8 MB) would grow a
/// new one instead of reusing what the freed BTF parses left in the main
/// one, and the loader's peak memory (a goal: docs/performance.md) rose by
/// 16 MB. The loader's threads allocate little and rarely together.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The transparent-huge-page flag this process was started with
/// (`PR_GET_THP_DISABLE`), which commands run by `run` get back.
static THP_DISABLED_AT_START: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// No transparent huge pages for the loader. Debian's kernels make them
/// the default (`CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS`) and 6.7+ aligns
/// anonymous mappings of 2 MB or more to them, so each thread stack and
/// each large allocation touched at all became 2 MB to zero and to count
/// as resident: in the 6.12 guest page clearing was 16% of start-up, and
/// peak RSS had two levels a huge page apart. A loader with a small,
/// sparse heap gains nothing from them.
fn no_huge_pages() {
    // SAFETY: prctl with integer arguments only, before any other thread.
    unsafe {
        let was = libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0);
        THP_DISABLED_AT_START.store(was == 1, std::sync::atomic::Ordering::Relaxed);
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Whether a command the tracer runs should start with huge pages
/// disabled: only if the tracer was started so (the flag is inherited).
pub fn thp_disabled_at_start() -> bool {
    THP_DISABLED_AT_START.load(std::sync::atomic::Ordering::Relaxed)
}

pub fn read_kallsyms() -> Result<Symbols> {
    Symbols::read(kallsyms_file()?).context("reading /proc/kallsyms")
}

fn kallsyms_file() -> Result<std::io::BufReader<std::fs::File>> {
    let file = std::fs::File::open("/proc/kallsyms").context("reading /proc/kallsyms")?;
    Ok(std::io::BufReader::with_capacity(1 << 16, file))
}

/// Functions the start-up looks up by name, besides the hooks': ref_tracker
/// (doctor).
const NAMED_SYMBOLS: &[&str] = &["ref_tracker_alloc", "ref_tracker_free"];

/// Data the start-up looks up by name: the per-CPU offsets (watchpoints),
/// the unregister queue (rtnl.rs) and the neighbour tables (holder scan).
/// They lie past every function in kallsyms: the read ends with them.
const DATA_SYMBOLS: &[&str] = &["__per_cpu_offset", "net_todo_list", "arp_tbl", "nd_tbl"];

/// The part of /proc/kallsyms start-up needs: the hooks' functions (and
/// their compiler clones), [`NAMED_SYMBOLS`] and [`DATA_SYMBOLS`], where
/// the read ends. The full table, for
/// naming stack frames, is read once the hooks are attached and the BTF
/// parses are gone (trace::run): kept out of their peak, it is ~8 MB.
fn read_kallsyms_for_plan() -> Result<Symbols> {
    log::debug!("prepare: reading /proc/kallsyms");
    let wanted = Wanted::new(
        netns_trace::plan::HOOKS
            .iter()
            .flat_map(|h| h.symbols.iter().copied())
            .chain(NAMED_SYMBOLS.iter().copied()),
    )
    .ending_with(DATA_SYMBOLS);
    Symbols::read_only(kallsyms_file()?, &wanted).context("reading /proc/kallsyms")
}

/// Where start-up found its symbols (the `attach` record's `symbols_from`).
pub const FROM_LOOKUP: &str = "kallsyms_lookup_name";
pub const FROM_FILE: &str = "/proc/kallsyms";

/// The symbols start-up needs, asked of the kernel by name
/// ([`ksym_lookup`]: ~2 ms on the 6.1 and 6.12 guests, where reading the
/// file as far as the data symbols took 0.3-0.4 s), when every hook that
/// could attach to a compiler clone has its own function: clones are only
/// found by reading the whole table. Otherwise, or if the kernel will not
/// answer (before 5.16, addresses hidden), the file is read as before.
fn symbols_for_plan() -> Result<(Symbols, &'static str)> {
    match look_up_symbols() {
        Ok(Some(symbols)) => Ok((symbols, FROM_LOOKUP)),
        Ok(None) => {
            log::debug!(
                "prepare: a hook's function is absent; reading /proc/kallsyms for its clones"
            );
            Ok((read_kallsyms_for_plan()?, FROM_FILE))
        }
        Err(err) => {
            log::info!("{err:#}; reading /proc/kallsyms instead");
            Ok((read_kallsyms_for_plan()?, FROM_FILE))
        }
    }
}

/// The lookups of [`symbols_for_plan`]; None when a hook's clone would
/// have to be searched for.
fn look_up_symbols() -> Result<Option<Symbols>> {
    let lookup = ksym_lookup::Lookup::load()?;
    netns_trace::plan::symbols_by_name(NAMED_SYMBOLS, DATA_SYMBOLS, |name| lookup.address_of(name))
}

/// tracefs `available_filter_functions`, if readable.
pub fn read_traceable_functions(tracefs: Option<&std::path::Path>) -> Option<FilterFunctions> {
    let text = std::fs::read_to_string(tracefs?.join("available_filter_functions")).ok()?;
    Some(FilterFunctions::parse(&text))
}

/// Everything the attach needs to know about this kernel. `no_fentry`:
/// plan as if fentry/fexit and tp_btf were refused (`--no-fentry`).
/// `read_traceable`: plan with ftrace's list of patchable functions.
pub fn prepare(no_fentry: bool, read_traceable: bool) -> Result<Prepared> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("netns-trace needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN to load and attach eBPF programs): run it with sudo");
    }
    let t0 = std::time::Instant::now();
    let tracefs = tracefs::ensure_mounted();
    log::debug!("prepare: tracefs at {:?}", t0.elapsed());
    // doctor and --dry-run read the file: only it names compiler clones.
    let (symbols, symbols_from) = if read_traceable {
        (read_kallsyms_for_plan()?, FROM_FILE)
    } else {
        symbols_for_plan()?
    };
    log::debug!("prepare: symbols from {symbols_from} at {:?}", t0.elapsed());
    let caps = KernelCaps::probe(tracefs.clone(), &symbols);
    log::debug!("prepare: kernel probed at {:?}", t0.elapsed());
    if !caps.btf {
        bail!(
            "this kernel ({}) has no BTF ({} is missing): netns-trace needs CONFIG_DEBUG_INFO_BTF to read kernel structures",
            caps.release,
            btf::VMLINUX_BTF
        );
    }
    if caps.lockdown.as_deref() == Some("confidentiality") {
        bail!("kernel lockdown is in confidentiality mode, which forbids eBPF from reading kernel memory: netns-trace cannot run here");
    }
    // Which functions ftrace can patch decides fentry against kprobe
    // before trying. The kernel takes ~0.3 s of TCG time to write the
    // list, so a run that attaches skips it: an fentry on a function
    // without a patch site is refused (by the verifier, or at attach with
    // EBUSY) and the hook falls back to its kprobe, and the list is read
    // then to say why (Plan::learn_notrace). A dry run attaches nothing,
    // so it reads it.
    let traceable = if read_traceable {
        read_traceable_functions(tracefs.as_deref())
    } else {
        None
    };
    let plan_caps = Capabilities {
        kprobe: caps.kprobe,
        // Whether fentry is allowed (lockdown, LSMs, CONFIG_FUNCTION_TRACER)
        // is only known by attaching: the plan keeps it and the attach
        // step records the kernel's answer.
        fentry: !no_fentry,
        tracepoint: caps.tracefs.is_some(),
        btf_tracepoint: !no_fentry,
        btf: true,
    };
    log::debug!("prepare: traceable functions read at {:?}", t0.elapsed());
    let plan = Plan::new(plan_caps, &symbols, traceable.as_ref());
    log::debug!("prepare: planned at {:?}", t0.elapsed());
    // What start-up needs from the kernel's BTF, read once and dropped
    // before aya parses anything: the offsets, and the ids aya loads the
    // planned fentry, fexit, tp_btf and iterator programs by (see
    // btf_raw::Btf::names_only).
    let (btf_offsets, tcp_states, attach_btf) = {
        let btf = btf::load_vmlinux()?;
        let mut targets = plan.btf_targets();
        targets.push((btf_raw::KIND_FUNC, tasks::BTF_NAME.into()));
        let wanted: Vec<(u32, &str)> = targets.iter().map(|(k, n)| (*k, n.as_str())).collect();
        (
            btf::resolve_offsets(&btf),
            btf::tcp_state_names(&btf),
            btf.names_only(&wanted)?,
        )
    };
    log::debug!("prepare: read from BTF at {:?}", t0.elapsed());
    // aya's parse comes later (trace::load_programs), so it never
    // overlaps the loader's.
    let aya_btf = aya::Btf::new();
    Ok(Prepared {
        caps,
        symbols,
        symbols_from,
        btf_offsets,
        attach_btf,
        tcp_states,
        aya_btf,
        plan,
    })
}

mod doctor {
    //! `netns-trace doctor`: what this kernel offers and which method each
    //! hook gets, found by really attaching (then detaching) everything.
    use std::process::ExitCode;

    use anyhow::Result;
    use netns_trace::plan::Outcome;
    use serde_json::json;

    use crate::trace::{load_programs, settings};

    pub fn run(json_out: bool) -> Result<ExitCode> {
        let mut prepared = crate::prepare(false, true)?;
        let no_filter = netns_trace::cli::TraceOptions {
            json: json_out,
            duration: None,
            pids: vec![],
            netns: vec![],
            rtnl_threshold: std::time::Duration::from_millis(10),
            ready_file: None,
            json_file: None,
            proc_root: "/proc".into(),
            dry_run: false,
            exact: false,
            no_watchpoints: false,
            bpf_stats: false,
            watch_via_perf_ring: false,
            no_fentry: false,
            metrics_addr: None,
            color: netns_trace::cli::ColorChoice::Never,
            dockerd: None,
            docker_socket: "/var/run/docker.sock".into(),
        };
        let (offsets, config, missing) = settings(&prepared, &no_filter);
        let mut ebpf = load_programs(&offsets, &config, &mut prepared)?;
        // --exact: the kernel's preconditions, then the verifier's word on
        // the two watchpoint programs.
        let watcher = match crate::trace::exact_unavailable(&prepared, &offsets, &config) {
            Some(why) => Err(why),
            None => crate::watch::Watcher::load(&mut ebpf, prepared.caps.free_refcnt(), false)
                .map_err(|e| format!("the kernel refused the watchpoint programs: {e:#}")),
        };
        crate::attach::attach_all(
            &mut ebpf,
            Some(&prepared.aya_btf),
            &mut prepared.plan,
            false,
        );
        // Only now: the watcher owns maps (WATCHED_DEVS) that programs
        // attached above use; closing them first made those loads fail.
        let exact = watcher.map(drop);
        drop(ebpf); // detach everything
        let plan = &prepared.plan;
        let caps = &prepared.caps;
        let tracker = netns_trace::sources::tracker_verdict(plan, &offsets, &config);
        let fentry = fentry_verdict(plan);
        let full = plan.full_tracer_possible() && missing.is_empty();
        let mut reasons = plan.degraded_reasons();
        reasons.extend(missing.iter().map(|m| format!("BTF: {m}")));
        if !caps.kprobe {
            reasons.push(
                "kprobes: not available on this kernel (no kprobe PMU or kprobe_events)".into(),
            );
        }
        if json_out {
            let mut doc = plan.doctor_json();
            doc["kernel"] = json!({
                "release": caps.release,
                "btf": caps.btf,
                "lockdown": caps.lockdown,
                "kprobe": caps.kprobe,
                "fentry": fentry,
                "tracepoint": caps.tracefs.is_some(),
                "perf_breakpoint": caps.breakpoint,
                "kallsyms_addresses": caps.kallsyms_addresses,
                "ref_tracker": caps.ref_tracker,
                "ref_tracker_used": tracker.is_ok(),
                "ref_tracker_reason": tracker.as_ref().err(),
                "exact": exact.is_ok(),
                "exact_reason": exact.as_ref().err(),
                "self_reference_baseline": caps.free_refcnt(),
                "teardown_lock": caps.teardown_lock_regime(),
            });
            doc["offsets"] = json!(format!("{offsets:?}"));
            doc["full_tracer"] = json!(full);
            doc["reasons"] = json!(reasons);
            println!("{doc}");
        } else {
            let yn = |b: bool| if b { "yes" } else { "NO" };
            println!("kernel          {}", caps.release);
            println!("BTF             {}", yn(caps.btf));
            println!(
                "lockdown        {}",
                caps.lockdown.as_deref().unwrap_or("unknown")
            );
            println!("kprobe          {}", yn(caps.kprobe));
            println!("fentry/fexit    {fentry}");
            println!("tracepoints     {}", yn(caps.tracefs.is_some()));
            println!("perf breakpoint {}", yn(caps.breakpoint));
            println!("kallsyms addrs  {}", yn(caps.kallsyms_addresses));
            println!(
                "ref_tracker     {}",
                tracker_line(caps.ref_tracker, &tracker)
            );
            match &exact {
                Ok(()) => println!(
                    "--exact         yes: hardware watchpoints on per-CPU refcounts, at most {} devices",
                    crate::watch::BUDGET
                ),
                Err(why) => println!("--exact         NO: {why}"),
            }
            println!(
                "usage baseline  {} (a free device reads {})",
                caps.free_refcnt(),
                caps.free_refcnt()
            );
            println!("teardown lock   {}", caps.teardown_lock_regime());
            println!("BTF offsets     {offsets:?}");
            println!();
            println!("{}", plan.render_table());
            println!();
            if full {
                println!("verdict: the full tracer can run on this kernel");
            } else {
                println!("verdict: the full tracer cannot run here; netns-trace runs degraded:");
                for r in &reasons {
                    println!("  - {r}");
                }
            }
        }
        Ok(if full {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        })
    }

    /// Whether exact counting goes through the kernel's ref_tracker.
    fn tracker_line(built_in: bool, verdict: &Result<(), String>) -> String {
        match (built_in, verdict) {
            (_, Ok(())) => "yes, read by netns-trace: every new loopback device is counted \
                 exactly through ref_tracker_alloc/free (no debug registers); watchpoints \
                 only for devices found stuck that predate the tracer"
                .into(),
            (true, Err(why)) => {
                format!("built in but not read ({why}): --exact counts with watchpoints")
            }
            (false, Err(_)) => {
                "no (CONFIG_NET_DEV_REFCNT_TRACKER off): --exact counts with watchpoints".into()
            }
        }
    }

    /// "yes", or the kernel's refusal (first fentry/fexit error seen).
    fn fentry_verdict(plan: &netns_trace::plan::Plan) -> String {
        let mut refusal = None;
        for hook in &plan.hooks {
            if let Some(c) = hook.chosen() {
                if c.label().contains("fentry") || c.label().contains("fexit") {
                    return "yes".into();
                }
            }
            for o in &hook.outcomes {
                if let Outcome::Failed { error, .. } = o {
                    if refusal.is_none()
                        && (error.contains("(fentry)") || error.contains("(fexit)"))
                    {
                        refusal = Some(error.clone());
                    }
                }
            }
        }
        match refusal {
            Some(e) => format!("NO (refused: {e})"),
            None => "not tried".into(),
        }
    }
}
