//! The tracing run: load, attach, read the ring buffer, print, summarise.
use std::{
    io::Write as _,
    process::ExitCode,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{stack_trace::StackTraceMap, Array, HashMap, MapData, PerCpuArray, RingBuf},
    Ebpf,
};
use netns_trace::events::Event;
use netns_trace::{
    cli::{RunOptions, TraceOptions},
    containers::{procfs, ContainerMap, Info, OutputQueue, API_WAIT_NS},
    kernel::tracefs,
    metrics::Metrics,
    output::{AttachPhases, AttachRec, HumanStyle, LostCounts, Record, Renderer},
    report::{self, CommandOutcome, KernelInfo, Policy, ReportBuilder},
    session::{Session, SessionConfig},
    sources::{exact_sources, tracker_verdict},
};
use netns_trace_common::{exact_mode, mode, stat, Config, Offsets};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{attach, probes, serve, stacks::StackResolver, watch::Watcher, Prepared};

/// Offsets and config for the programs, plus the fields this kernel lacks.
pub fn settings(prepared: &Prepared, opts: &TraceOptions) -> (Offsets, Config, Vec<String>) {
    let (mut offsets, missing) = prepared.btf_offsets.clone();
    if let Some(t) = &prepared.caps.tracefs {
        let tp = |cat: &str, name: &str, field: &str| {
            tracefs::field_offset(t, cat, name, field).unwrap_or(Offsets::MISSING)
        };
        offsets.tp_unshare_flags = tp("syscalls", "sys_enter_unshare", "unshare_flags");
        offsets.tp_unshare_ret = tp("syscalls", "sys_exit_unshare", "ret");
        offsets.tp_wq_work = tp("workqueue", "workqueue_execute_start", "work");
        offsets.tp_wq_function = tp("workqueue", "workqueue_execute_start", "function");
        let sk = |field: &str| tp("sock", "inet_sock_set_state", field);
        offsets.tp_sk_skaddr = sk("skaddr");
        offsets.tp_sk_oldstate = sk("oldstate");
        offsets.tp_sk_newstate = sk("newstate");
        offsets.tp_sk_sport = sk("sport");
        offsets.tp_sk_dport = sk("dport");
        offsets.tp_sk_family = sk("family");
        offsets.tp_sk_protocol = sk("protocol");
        offsets.tp_sk_saddr = sk("saddr");
        offsets.tp_sk_daddr = sk("daddr");
        offsets.tp_sk_saddr_v6 = sk("saddr_v6");
        offsets.tp_sk_daddr_v6 = sk("daddr_v6");
    }
    let mut config = Config::default_const();
    config.filter_enabled = u32::from(opts.filtered());
    config.rtnl_threshold_ns = opts.rtnl_threshold.as_nanos() as u64;
    config.free_refcnt = prepared.caps.free_refcnt();
    config.cleanup_net_addr = prepared.plan.cleanup_net_addr().unwrap_or(0);
    config.init_netns_inum = init_netns_inum(&opts.proc_root);
    config.nr_cpus = possible_cpus();
    // Watchpoints: every new lo with --exact; otherwise only devices found
    // stuck (their release is caught), unless --no-watchpoints.
    config.exact = if opts.exact {
        exact_mode::ALL
    } else if opts.no_watchpoints {
        exact_mode::OFF
    } else {
        exact_mode::STUCK
    };
    config.run_todo_addr = prepared.symbols.address_of("netdev_run_todo").unwrap_or(0);
    config.net_todo_list_addr = prepared
        .symbols
        .any_address_of("net_todo_list")
        .unwrap_or(0);
    config.per_cpu_offset_addr = prepared
        .symbols
        .any_address_of("__per_cpu_offset")
        .unwrap_or(0);
    (offsets, config, missing)
}

/// Inode of the initial network namespace: that of PID 1 (under
/// `--proc-root` when running from a container).
fn init_netns_inum(proc_root: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    match std::fs::metadata(proc_root.join("1/ns/net")) {
        Ok(meta) => meta.ino() as u32,
        Err(err) => {
            // Our own namespace is the initial one on a host; say so.
            let own = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino() as u32);
            log::warn!(
                "cannot read {}/1/ns/net ({err}): taking this process's namespace as the initial one",
                proc_root.display()
            );
            own.unwrap_or(0)
        }
    }
}

/// Number of possible CPUs (`/sys/devices/system/cpu/possible`, "0-N").
fn possible_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            let last = s.trim().rsplit([',', '-']).next()?.to_string();
            last.parse::<u32>().ok()
        })
        .map_or(1, |n| n + 1)
}

/// Why `--exact` cannot work here, if it cannot.
pub fn exact_unavailable(
    prepared: &Prepared,
    offsets: &Offsets,
    config: &Config,
) -> Option<String> {
    if !prepared.caps.breakpoint {
        return Some("no perf breakpoint PMU on this kernel".into());
    }
    if offsets.dev_pcpu_refcnt == Offsets::MISSING {
        return Some("devices keep no per-CPU refcount (CONFIG_PCPU_DEV_REFCNT=n)".into());
    }
    if config.per_cpu_offset_addr == 0 {
        return Some("__per_cpu_offset is not in /proc/kallsyms (no data symbols)".into());
    }
    if config.nr_cpus as usize > netns_trace_common::WATCH_MAX_CPUS {
        return Some(format!(
            "{} CPUs; at most {} can be watched",
            config.nr_cpus,
            netns_trace_common::WATCH_MAX_CPUS
        ));
    }
    None
}

/// Loads the eBPF object (`probes::load`, which keeps aya's loader from
/// parsing the kernel BTF), then parses the BTF to attach by
/// (`prepared.attach_btf`: the kernel's type ids, only the planned
/// targets named) into `prepared.aya_btf`.
pub fn load_programs(
    offsets: &Offsets,
    config: &Config,
    prepared: &mut crate::Prepared,
) -> Result<Ebpf> {
    let t = Instant::now();
    let ebpf = probes::load(offsets, config)?;
    log::info!("start-up: object and maps loaded in {:?}", t.elapsed());
    let t = Instant::now();
    let blob = std::mem::take(&mut prepared.attach_btf);
    prepared.aya_btf = aya::Btf::parse(&blob, aya::Endianness::default())
        .context("parsing the attach targets' BTF")?;
    log::info!("start-up: BTF parsed for attaching in {:?}", t.elapsed());
    Ok(ebpf)
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn ktime_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("opening map {name}"))
}

/// The local zone's offset from UTC in seconds, now.
fn utc_offset_s() -> i64 {
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    // SAFETY: `tm` is written by localtime_r; `now` is a valid time_t.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return 0;
    }
    tm.tm_gmtoff
}

/// A running `netns-trace run` command.
struct Running {
    child: tokio::process::Child,
    argv: Vec<String>,
}

/// Traces until Ctrl-C / SIGTERM / `--duration`; with `run`, until the
/// command exited and its namespaces were torn down (or `--settle` ran
/// out), then reports and returns the verdict's exit status.
pub async fn run(opts: TraceOptions, run: Option<RunOptions>) -> Result<ExitCode> {
    let started = Instant::now();
    // Before attaching anything: a bad path is an error, not a lost record.
    let json_file = match &opts.json_file {
        Some(path) => Some((
            path.clone(),
            std::fs::File::create(path)
                .with_context(|| format!("--json-file {}", path.display()))?,
        )),
        None => None,
    };
    let start_ktime_ns = ktime_now();
    let start_unix_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut prepared = crate::prepare(opts.no_fentry, opts.dry_run)?;
    let prepared_at = started.elapsed();
    let (offsets, mut config, missing) = settings(&prepared, &opts);
    for m in &missing {
        log::warn!("BTF: {m}");
    }
    let mut exact_reason = None;
    if config.exact != exact_mode::OFF {
        if let Some(why) = exact_unavailable(&prepared, &offsets, &config) {
            if opts.exact {
                eprintln!(
                    "netns-trace: --exact is not available here: {why}; tracing without watchpoints"
                );
                exact_reason = Some(format!("--exact: {why}"));
            } else {
                log::info!("watchpoints on stuck devices are not available here: {why}");
            }
            config.exact = exact_mode::OFF;
        }
    }
    if run.is_some() {
        // run: scope = this process, so the command and its descendants
        // (followed through fork in the kernel) and their namespaces.
        config.filter_enabled = 1;
    }
    let mut ebpf = load_programs(&offsets, &config, &mut prepared)?;
    // Incident mode: the holder scan when a device is first found stuck.
    let mut scanner = crate::scan::Scanner::new(&prepared.symbols, &offsets);
    // Incident mode: who is blocked behind a teardown (task iterator).
    let t = Instant::now();
    let task_iter = crate::tasks::load(&mut ebpf, &prepared.aya_btf).map_err(|e| format!("{e:#}"));
    if let Err(why) = &task_iter {
        log::info!("blocked-task iterator unavailable: {why}");
    }
    log::info!("start-up: task iterator loaded in {:?}", t.elapsed());
    let t = Instant::now();
    let mut watcher = None;
    if config.exact != exact_mode::OFF {
        match Watcher::load(
            &mut ebpf,
            prepared.caps.free_refcnt(),
            opts.watch_via_perf_ring,
        ) {
            Ok(w) => watcher = Some(w),
            Err(err) if opts.exact => {
                eprintln!(
                    "netns-trace: --exact: the kernel refused the watchpoint program: {err:#}"
                );
                exact_reason = Some(format!("--exact: watchpoint program refused: {err:#}"));
            }
            Err(err) => log::info!("watchpoints on stuck devices: program refused: {err:#}"),
        }
    }
    log::info!("start-up: watchpoint programs loaded in {:?}", t.elapsed());

    // With a process scope: the process trees as they are now (the kernel
    // follows forks from here on) and the namespaces they are in, mapped
    // to containers by the attach-time scan.
    let mut scope_tgids = opts.pids.clone();
    let mut scope_netns = opts.netns.clone();
    let mut mapping = None;
    let mut api_answers = None;
    if opts.containers() {
        let procs = procfs::processes(&opts.proc_root).unwrap_or_default();
        let mut roots = opts.pids.clone();
        if opts.dockerd.is_some() {
            roots.extend(procfs::container_runtime(&procs));
        }
        scope_tgids = procfs::descendants(&procs, &roots);
        let api = opts.docker_socket.exists();
        if !api && opts.dockerd.is_some() {
            log::warn!(
                "no Docker API socket at {}: containers are named by id only (--docker-socket)",
                opts.docker_socket.display()
            );
        }
        let mut map = ContainerMap::new(opts.proc_root.clone(), config.init_netns_inum, api);
        for inum in map.scan(&scope_tgids) {
            if !scope_netns.contains(&inum) {
                scope_netns.push(inum);
            }
        }
        log::info!(
            "scope: {} processes, {} namespaces at attach",
            scope_tgids.len(),
            scope_netns.len()
        );
        let (requests, answers) = crate::docker::spawn(opts.docker_socket.clone());
        api_answers = Some(answers);
        mapping = Some(Mapping {
            map,
            queue: OutputQueue::default(),
            requests,
        });
    }

    // Scope maps before attaching, so the first event is already filtered.
    if opts.filtered() || run.is_some() {
        let mut tgids: HashMap<_, u32, u8> = HashMap::try_from(
            ebpf.map_mut("SCOPE_TGIDS")
                .ok_or_else(|| anyhow!("map SCOPE_TGIDS missing"))?,
        )?;
        for &pid in &scope_tgids {
            tgids.insert(pid, 1, 0).context("filling the pid scope")?;
        }
        if run.is_some() {
            tgids
                .insert(std::process::id(), 1, 0)
                .context("filling the pid scope")?;
        }
        let mut netns: HashMap<_, u32, u8> = HashMap::try_from(
            ebpf.map_mut("SCOPE_NETNS")
                .ok_or_else(|| anyhow!("map SCOPE_NETNS missing"))?,
        )?;
        for &inum in &scope_netns {
            netns
                .insert(inum, 1, 0)
                .context("filling the netns scope")?;
        }
    }

    let loaded_at = started.elapsed();
    // Before attaching, so the counts cover every run of every hook.
    let bpf_stats = match opts.bpf_stats && !opts.dry_run {
        false => None,
        true => match crate::bpfstats::enable() {
            Ok(fd) => Some(fd),
            Err(e) => {
                eprintln!(
                    "netns-trace: --bpf-stats: {e:#}; the summary will not list program costs"
                );
                None
            }
        },
    };
    let btf = Some(&prepared.aya_btf);
    let t = Instant::now();
    attach::attach_all(&mut ebpf, btf, &mut prepared.plan, opts.dry_run);
    log::debug!("start-up: hooks attached in {:?}", t.elapsed());
    if !opts.pids.is_empty() || run.is_some() {
        // Descendants join the scope through the fork hook.
        attach::ensure_hook(&mut ebpf, btf, &mut prepared.plan, "fork", opts.dry_run);
    }
    if !opts.dry_run && prepared.plan.fentry_refused() {
        // Planned without ftrace's list (prepare): now it says why.
        let traceable = crate::read_traceable_functions(prepared.caps.tracefs.as_deref());
        if let Some(t) = traceable {
            prepared.plan.learn_notrace(&t);
        }
    }
    // Nothing attaches by BTF from here on (the holder scan parses its
    // own, if an incident ever needs it): ~15 MB less for the session.
    prepared.aya_btf = aya::Btf::new();
    let plan = &prepared.plan;
    if !plan.hooks.iter().any(|h| h.chosen().is_some()) {
        return Err(anyhow!(
            "no hook could be attached on this kernel ({}): run `netns-trace doctor` for the reasons",
            prepared.caps.release
        ));
    }
    let creation_exact = plan
        .hook("copy_net_ns")
        .is_some_and(|h| h.chosen().is_some());
    let destroy_seen = plan.hook("__put_net").is_some_and(|h| h.chosen().is_some());
    let degraded = !plan.full_tracer_possible() || !missing.is_empty();
    let tracker = tracker_verdict(plan, &offsets, &config);
    // Kept for the session: the reader's idle flag lives there too.
    let mut modes: Array<MapData, u32> = take(&mut ebpf, "MODE")?;
    if !creation_exact {
        modes
            .set(mode::DEGRADED, 1, 0)
            .context("setting degraded mode")?;
    }
    // Only with all three tracker hooks in: a device counted from its
    // creation must have every hold, put and its end seen.
    if tracker.is_ok() && !opts.dry_run {
        modes
            .set(mode::TRACKER, 1, 0)
            .context("switching on the ref_tracker ledger")?;
    }
    let mut reasons = plan.degraded_reasons();
    reasons.extend(missing.iter().map(|m| format!("BTF: {m}")));
    reasons.extend(exact_reason);
    let attached_at = started.elapsed();
    let attach_ms = attached_at.as_millis() as u64;
    let phases = AttachPhases {
        prepare: prepared_at.as_millis() as u64,
        load: (loaded_at - prepared_at).as_millis() as u64,
        attach: (attached_at - loaded_at).as_millis() as u64,
    };
    log::info!("start-up: {phases:?} ms");

    let color = {
        use std::io::IsTerminal as _;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        opts.color
            .enabled(std::io::stdout().is_terminal(), no_color)
    };
    let style = HumanStyle {
        color,
        wall: Some((start_unix_ns, utc_offset_s())),
    };
    let mut out = Output::new(opts.json, style, mapping);
    out.json_file = json_file.map(|(path, f)| JsonFile {
        path,
        w: std::io::BufWriter::new(f),
        lines: Renderer::new(true),
    });
    if run.is_some() {
        out.report = Some(ReportBuilder::new(destroy_seen));
    }
    let attached: Vec<(String, String)> = plan
        .hooks
        .iter()
        .filter_map(|h| h.chosen().map(|c| (h.hook.name.to_string(), c.label())))
        .collect();
    if let Some(addr) = opts.metrics_addr {
        let mut m = Metrics::new();
        m.set_hooks(&attached, degraded);
        let shared = std::sync::Arc::new(std::sync::Mutex::new(m));
        let bound = serve::start(addr, shared.clone()).await?;
        log::info!("metrics on http://{bound}/metrics");
        out.metrics_addr = Some(bound);
        out.metrics = Some(shared);
    }
    out.write(&Record::Attach(AttachRec {
        hooks: plan.rows(),
        exact_sources: exact_sources(&tracker, &config, watcher.is_some()),
        degraded,
        reasons: reasons.clone(),
        attach_ms,
        phases_ms: phases,
        symbols_from: prepared.symbols_from,
    }))?;
    if degraded {
        eprintln!(
            "netns-trace: running degraded on {}: {}",
            prepared.caps.release,
            reasons.join("; ")
        );
    }
    if opts.dry_run {
        eprintln!("netns-trace: dry run: every planned program loaded and passed the verifier; nothing attached");
        return Ok(ExitCode::SUCCESS);
    }
    // Only now the whole symbol table, for naming stack frames: start-up
    // planned with the few names it needs, so the table (~8 MB) and the BTF
    // parses are never in memory together. Read in the background: no event
    // needs it to be delivered, only a stack to be named (the resolver waits
    // for it then), and the read is a third of a second under QEMU. Started
    // before any event, so a module loaded later is found by the usual
    // re-read (its init code's symbols only exist while its init runs).
    let loading_symbols = crate::stacks::LoadingSymbols::spawn(crate::read_kallsyms)
        .context("starting the thread that reads /proc/kallsyms")?;
    if let Some(path) = &opts.ready_file {
        let mut text = String::from("ready\n");
        if let Some(a) = out.metrics_addr {
            text += &format!("metrics http://{a}/metrics\n");
        }
        std::fs::write(path, text)
            .with_context(|| format!("writing --ready-file {}", path.display()))?;
    }

    let ring: RingBuf<MapData> = take(&mut ebpf, "EVENTS")?;
    let stats: PerCpuArray<MapData, u64> = take(&mut ebpf, "STATS")?;
    #[allow(deprecated)] // AsyncFd::register is not in the pinned tokio API we use
    let mut ring = AsyncFd::new(ring).context("polling the ring buffer")?;
    let stack_map: StackTraceMap<MapData> = take(&mut ebpf, "STACKS")?;
    // One copy of the symbol table: the resolver's; the session
    // symbolises through it. Until the whole one is read, the plan's.
    let symbols = std::mem::take(&mut prepared.symbols);
    let callchains = watcher
        .as_ref()
        .map(Watcher::callchains)
        .unwrap_or_default();
    let resolver = StackResolver::new(stack_map, symbols, Some(loading_symbols), callchains);
    // The watchpoint fallback's perf rings (idle unless it is used).
    #[allow(deprecated)] // as for the ring buffer above
    let ring_poll = match &watcher {
        Some(w) => Some(AsyncFd::new(w.ring_poll()?).context("polling the perf rings")?),
        None => None,
    };
    let mut session = Session::new(SessionConfig {
        start_ktime_ns,
        start_unix_ns,
        netns: scope_netns,
        pids: opts.pids.clone(),
        baseline: prepared.caps.free_refcnt(),
        tcp_states: prepared.tcp_states.clone(),
    });
    session.set_stack_resolver(netns_trace::session::StackResolver(Box::new(resolver)));

    // Tasks already blocked in namespace work when we attach: walked now
    // (the teardown worker may be released a moment later); the session
    // names and classifies them once the symbol table is read, so the
    // first events do not wait for it, and before the incident view at the
    // latest.
    if task_iter.is_ok() {
        crate::tasks::run(&mut ebpf);
    }
    // The first event after start wakes the reader (see reader_idle). Set
    // after the walk: its records (kept unnamed while the table loads)
    // would take the wakeup and leave the first real event to wait a poll.
    reader_idle(&mut modes);

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut backoff = netns_trace::backoff::PollBackoff::default();
    // The first poll at once: an event written before the idle flag was
    // set (during the task walk, right after ready) woke nobody, and
    // waited for the poll after this one (3-24 ms of the 6.12 guest's
    // start to first event).
    let poll = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(poll);
    let forever = Duration::from_secs(u64::MAX / 4);
    let deadline = tokio::time::sleep(opts.duration.unwrap_or(forever));
    tokio::pin!(deadline);
    let mut running = match &run {
        Some(r) => Some(spawn_command(r, opts.json)?),
        None => None,
    };
    // The incident view comes once: when the first stuck device has been
    // scanned, or after this long if nothing is stuck.
    let incident_at = tokio::time::sleep(Duration::from_millis(1500));
    tokio::pin!(incident_at);
    let mut incident_done = false;
    let settle = tokio::time::sleep(forever);
    tokio::pin!(settle);
    let mut settling = false;
    let mut interrupted = false;
    loop {
        for rec in session.named_blocked(false) {
            out.write(&rec)?;
        }
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                session.note_wakeup();
                let ctx = RingCtx { session: &mut session, watcher: &mut watcher, out: &mut out };
                service(guard.get_inner_mut(), ctx, &mut ebpf, &mut scanner, task_iter.is_ok(), &mut incident_done)?;
                guard.clear_ready();
                // Events are flowing: poll often again.
                poll.as_mut().reset(tokio::time::Instant::now() + backoff.next(true));
            }
            // Most events are written without waking the reader (see
            // kread::emit): they are collected here, in batches.
            _ = &mut poll => {
                session.note_wakeup();
                let before = session.events_read();
                let ctx = RingCtx { session: &mut session, watcher: &mut watcher, out: &mut out };
                service(ring.get_mut(), ctx, &mut ebpf, &mut scanner, task_iter.is_ok(), &mut incident_done)?;
                let found = session.events_read() > before;
                if !found {
                    reader_idle(&mut modes);
                }
                poll.as_mut().reset(tokio::time::Instant::now() + backoff.next(found));
            }
            guard = readable(ring_poll.as_ref()) => {
                let mut guard = guard.context("waiting on the perf rings")?;
                if let Some(w) = watcher.as_mut() {
                    w.on_rings_ready(&mut session);
                }
                guard.clear_ready();
            }
            _ = &mut incident_at, if !incident_done => {
                drain(ring.get_mut(), &mut session, &mut watcher, &mut out)?;
                for rec in session.named_blocked(true) {
                    out.write(&rec)?;
                }
                out.write(&session.incident(ktime_now()))?;
                incident_done = true;
            }
            _ = tick.tick() => {
                if let Some(rec) = session.on_stats(ktime_now(), lost_counts(&stats)) {
                    out.write(&rec)?;
                }
                out.pump()?;
            }
            status = async { running.as_mut().expect("guarded").child.wait().await }, if running.is_some() => {
                let status = status.context("waiting for the command")?;
                let exited_ns = ktime_now().saturating_sub(start_ktime_ns);
                let argv = running.take().expect("guarded").argv;
                // Its namespaces were created before it exited: take them in.
                drain(ring.get_mut(), &mut session, &mut watcher, &mut out)?;
                let outcome = outcome(argv, status, exited_ns);
                let settle_for = run.as_ref().map_or(Duration::ZERO, |r| r.settle);
                eprintln!(
                    "netns-trace: the command {}; waiting up to {:.1}s for its namespaces to be torn down",
                    describe(&outcome),
                    settle_for.as_secs_f64()
                );
                if let Some(b) = out.report.as_mut() {
                    b.command_exited(outcome);
                }
                settle.as_mut().reset(tokio::time::Instant::now() + settle_for);
                settling = true;
            }
            Some(answer) = recv(&mut api_answers) => out.on_api(answer)?,
            _ = &mut settle, if settling => break,
            _ = sigint.recv() => { interrupted = true; break }
            _ = sigterm.recv() => { interrupted = true; break }
            _ = &mut deadline, if opts.duration.is_some() => break,
        }
        if settling && out.report.as_ref().is_some_and(ReportBuilder::settled) {
            break;
        }
    }
    if let Some(mut r) = running.take() {
        // Interrupted while the command ran: stop it, note how it ended.
        let _ = r.child.start_kill();
        let status = r.child.wait().await.context("waiting for the command")?;
        let exited_ns = ktime_now().saturating_sub(start_ktime_ns);
        if let Some(b) = out.report.as_mut() {
            b.command_exited(outcome(r.argv, status, exited_ns));
        }
    }
    drain(ring.get_mut(), &mut session, &mut watcher, &mut out)?;
    // Samples of the last writes, before the summary reports the ledger.
    if let Some(w) = watcher.as_mut() {
        w.on_rings_ready(&mut session);
    }
    if let Some(rec) = session.on_stats(ktime_now(), lost_counts(&stats)) {
        out.write(&rec)?;
    }
    if bpf_stats.is_some() {
        session.set_bpf_stats(crate::bpfstats::collect(&ebpf));
    }
    let detach_start = Instant::now();
    drop(ring);
    drop(ebpf);
    log::info!("detached in {} ms", detach_start.elapsed().as_millis());
    out.write(&session.summary(ktime_now()))?;
    out.finish(&mut api_answers).await?;
    let (Some(run), Some(builder)) = (run, out.report.take()) else {
        return Ok(ExitCode::SUCCESS);
    };
    let doc = builder.finish(
        netns_trace::cli::LONG_VERSION,
        KernelInfo {
            release: prepared.caps.release.clone(),
            degraded,
            reasons,
        },
        run.settle,
        Policy {
            fail_on_leak: run.fail_on_leak,
            max_teardown: run.max_teardown,
        },
        interrupted,
    );
    if let Some(path) = &run.json_report {
        let mut text = serde_json::to_string_pretty(&doc).context("encoding the report")?;
        text.push('\n');
        std::fs::write(path, text)
            .with_context(|| format!("writing --json-report {}", path.display()))?;
    }
    if opts.json {
        let line = serde_json::to_string(&doc).context("encoding the report")?;
        out.write_raw(&(line + "\n"))?;
    } else {
        out.write_raw(&(report::human(&doc) + "\n"))?;
    }
    Ok(ExitCode::from(doc.verdict.exit_code))
}

/// Starts the command with the tracer's stdin and stderr; its stdout is
/// the tracer's, or its stderr under --json (stdout is the JSON stream).
fn spawn_command(r: &RunOptions, json: bool) -> Result<Running> {
    use std::os::fd::AsFd as _;
    let argv: Vec<String> = r
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut cmd = tokio::process::Command::new(&r.command[0]);
    cmd.args(&r.command[1..]).kill_on_drop(true);
    // The loader turned transparent huge pages off for itself (main.rs);
    // the command runs as it would without the tracer.
    let thp_off = libc::c_ulong::from(crate::thp_disabled_at_start());
    // SAFETY: the closure only makes one async-signal-safe syscall.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_THP_DISABLE, thp_off, 0, 0, 0);
            Ok(())
        });
    }
    if json {
        let err = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating stderr for the command")?;
        cmd.stdout(std::process::Stdio::from(err));
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    Ok(Running { child, argv })
}

fn outcome(argv: Vec<String>, status: std::process::ExitStatus, exited_ns: u64) -> CommandOutcome {
    use std::os::unix::process::ExitStatusExt as _;
    CommandOutcome {
        argv,
        exit_code: status.code(),
        signal: status.signal(),
        exited_ns,
    }
}

fn describe(o: &CommandOutcome) -> String {
    match (o.exit_code, o.signal) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended".into(),
    }
}

/// Readable, or never when there is nothing to poll.
async fn readable<T: std::os::fd::AsRawFd>(
    fd: Option<&AsyncFd<T>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, T>> {
    match fd {
        Some(fd) => fd.readable().await,
        None => std::future::pending().await,
    }
}

/// The next Docker API answer, or never when there is no mapping.
async fn recv(rx: &mut Option<mpsc::Receiver<ApiAnswer>>) -> Option<ApiAnswer> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

type ApiAnswer = Result<Vec<Info>, String>;

/// Container mapping state on the output path: records wait in `queue`
/// while an API request that can name their container is out.
struct Mapping {
    map: ContainerMap,
    queue: OutputQueue,
    requests: mpsc::Sender<()>,
}

impl Mapping {
    fn ask_if_needed(&mut self, now: u64) {
        if self.map.want_api(now) && self.requests.try_send(()).is_err() {
            // The task is gone: nothing is in flight after all.
            if let Some(e) = self
                .map
                .on_api(now, Err("Docker API task not running".into()))
            {
                log::warn!("{e}");
            }
        }
    }
}

/// Tells the programs that a poll found the ring empty: the next routine
/// event wakes the reader at once (and clears the flag, `kread::lazy_wakeup`)
/// instead of waiting for the next poll. While events flow the flag stays
/// clear and they are collected in batches; the first one after a quiet
/// spell (or after start) is not held back. Best effort: without it events
/// still arrive with the next poll.
fn reader_idle(modes: &mut Array<MapData, u32>) {
    if let Err(e) = modes.set(mode::READER_IDLE, 1, 0) {
        log::debug!("setting the reader's idle flag: {e}");
    }
}

/// What draining the ring writes to.
struct RingCtx<'a> {
    session: &'a mut Session,
    watcher: &'a mut Option<Watcher>,
    out: &'a mut Output,
}

/// Drains the ring; when the session asks for a holder scan (a device was
/// first found stuck), runs it and the blocked-task walk, takes in their
/// finds and writes the incident view (or refreshes the stuck devices).
fn service(
    ring: &mut RingBuf<MapData>,
    ctx: RingCtx<'_>,
    ebpf: &mut Ebpf,
    scanner: &mut crate::scan::Scanner,
    task_iter: bool,
    incident_done: &mut bool,
) -> Result<()> {
    let RingCtx {
        session,
        watcher,
        out,
    } = ctx;
    drain(ring, session, watcher, out)?;
    if !session.take_scan_request() {
        return Ok(());
    }
    let (tables, why) = match scanner.scan(ebpf) {
        Ok(tables) => (tables, None),
        Err(why) => (Vec::new(), Some(why)),
    };
    let rec = session.scan_record(ktime_now(), tables, why, crate::scan::NOT_SCANNED);
    out.write(&rec)?;
    // And who is blocked now that something is stuck.
    if task_iter {
        crate::tasks::run(ebpf);
    }
    // The finds are in the ring now: take them in and report the stuck
    // devices with them at once; blocked tasks named now, even if that
    // means waiting for the symbol table.
    drain(ring, session, watcher, out)?;
    for rec in session.named_blocked(true) {
        out.write(&rec)?;
    }
    if *incident_done {
        for rec in session.refresh(ktime_now()) {
            out.write(&rec)?;
        }
    } else {
        out.write(&session.incident(ktime_now()))?;
        *incident_done = true;
    }
    Ok(())
}

fn drain(
    ring: &mut RingBuf<MapData>,
    session: &mut Session,
    watcher: &mut Option<Watcher>,
    out: &mut Output,
) -> Result<()> {
    while let Some(item) = ring.next() {
        session.note_read();
        let rec = match netns_trace::events::decode(&item) {
            // Watch requests need the kernel (perf_event_open): armed here.
            Ok(Event::WatchTarget(t)) => {
                if let Some(w) = watcher.as_mut() {
                    for rec in w.on_target(&t, session) {
                        out.write_buffered(&rec)?;
                    }
                }
                continue;
            }
            Ok(event) => {
                if let Some(w) = watcher.as_mut() {
                    w.before_event(event.header().ts_ns, session);
                    if let Event::WatchDone(d) = &event {
                        w.disarm(d.dev);
                    }
                }
                session.on_event(event)
            }
            // Malformed: the session counts it.
            Err(_) => session.on_bytes(&item),
        };
        if let Some(rec) = rec {
            out.write_buffered(&rec)?;
            // Right after attaching, the next event may wait for the symbol
            // table (a stack or caller to name): what is ready goes out now.
            if session.symbols_loading() {
                out.flush()?;
            }
        }
    }
    out.flush()
}

/// Kernel counters summed over CPUs.
fn lost_counts(stats: &PerCpuArray<MapData, u64>) -> LostCounts {
    let sum = |index: u32| -> u64 {
        stats
            .get(&index, 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0)
    };
    LostCounts {
        ringbuf_drops: sum(stat::RINGBUF_DROPS),
        read_errors: sum(stat::READ_ERRORS),
        map_full: sum(stat::MAP_FULL),
        missed_entry: sum(stat::MISSED_ENTRY),
        decode_errors: 0,
    }
}

/// stdout, flushed per batch so readers (pipes, scenario drivers) see
/// events as they happen. A closed pipe ends the run quietly. Every record
/// written also updates the metrics and the `run` report.
struct Output {
    renderer: Renderer,
    stdout: std::io::BufWriter<std::io::Stdout>,
    metrics: Option<std::sync::Arc<std::sync::Mutex<Metrics>>>,
    metrics_addr: Option<std::net::SocketAddr>,
    report: Option<ReportBuilder>,
    /// Human output: hold records until the incident view is out.
    gate: Option<netns_trace::output::IncidentGate>,
    /// Container names: records wait for the Docker API (mapping on).
    mapping: Option<Mapping>,
    /// `--json-file`: every record, as JSON lines, whatever stdout shows.
    json_file: Option<JsonFile>,
}

/// `--json-file`: where it is, and the JSON renderer stdout has under
/// `--json`, so both write the same lines the same way.
struct JsonFile {
    path: std::path::PathBuf,
    w: std::io::BufWriter<std::fs::File>,
    lines: Renderer,
}

impl Output {
    fn new(json: bool, style: HumanStyle, mapping: Option<Mapping>) -> Self {
        Self {
            renderer: Renderer::with_style(json, style),
            stdout: std::io::BufWriter::new(std::io::stdout()),
            metrics: None,
            metrics_addr: None,
            report: None,
            gate: (!json).then(Default::default),
            mapping,
            json_file: None,
        }
    }

    /// A record leaves the tracer: metrics, the run report, the incident
    /// gate (human), then stdout.
    fn emit(&mut self, rec: &Record) -> Result<()> {
        if let Some(m) = &self.metrics {
            m.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .observe(rec);
        }
        if let Some(r) = &mut self.report {
            r.observe(rec);
        }
        if let Some(f) = &mut self.json_file {
            let written = f.lines.render_to(&mut f.w, rec);
            self.file_result(written);
        }
        // JSON (no gate): every record straight out, no copy.
        let Some(gate) = &mut self.gate else {
            return self.render(rec);
        };
        for r in &gate.admit(rec.clone()) {
            self.render(r)?;
        }
        Ok(())
    }

    fn render(&mut self, rec: &Record) -> Result<()> {
        self.renderer
            .render_to(&mut self.stdout, rec)
            .map_err(broken_pipe)
    }

    /// Print `rec`, or queue it for its container's name (mapping on).
    fn write_buffered(&mut self, rec: &Record) -> Result<()> {
        let Some(m) = &mut self.mapping else {
            return self.emit(rec);
        };
        let now = ktime_now();
        m.queue.push(&mut m.map, rec.clone(), now);
        m.ask_if_needed(now);
        self.emit_ready(now)
    }

    fn emit_ready(&mut self, now: u64) -> Result<()> {
        let ready = match &mut self.mapping {
            Some(m) => m.queue.ready(&m.map, now),
            None => return Ok(()),
        };
        for rec in &ready {
            self.emit(rec)?;
        }
        Ok(())
    }

    /// Print what no longer waits (the API answered or took too long).
    fn pump(&mut self) -> Result<()> {
        self.emit_ready(ktime_now())?;
        self.flush()
    }

    fn on_api(&mut self, answer: ApiAnswer) -> Result<()> {
        let now = ktime_now();
        if let Some(m) = &mut self.mapping {
            if let Some(err) = m.map.on_api(now, answer) {
                log::warn!("{err}; containers are named by id only until it answers");
            }
            // Containers mapped while that request was out are asked now.
            m.ask_if_needed(now);
        }
        self.pump()
    }

    /// At exit: give a request in flight its chance, then print the rest.
    async fn finish(&mut self, answers: &mut Option<mpsc::Receiver<ApiAnswer>>) -> Result<()> {
        let wait = Duration::from_nanos(API_WAIT_NS);
        let deadline = tokio::time::Instant::now() + wait;
        while self.mapping.as_ref().is_some_and(|m| !m.queue.is_empty()) {
            self.pump()?;
            if self.mapping.as_ref().is_none_or(|m| m.queue.is_empty()) {
                break;
            }
            match tokio::time::timeout_at(deadline, recv(answers)).await {
                Ok(Some(answer)) => self.on_api(answer)?,
                _ => break,
            }
        }
        if let Some(m) = &mut self.mapping {
            let rest = m.queue.drain(&m.map);
            for rec in &rest {
                self.emit(rec)?;
            }
        }
        self.flush()
    }

    fn write(&mut self, rec: &Record) -> Result<()> {
        self.write_buffered(rec)?;
        self.flush()
    }

    fn write_raw(&mut self, text: &str) -> Result<()> {
        self.stdout
            .write_all(text.as_bytes())
            .map_err(broken_pipe)?;
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(f) = &mut self.json_file {
            let flushed = f.w.flush();
            self.file_result(flushed);
        }
        self.stdout.flush().map_err(broken_pipe)
    }

    /// A full disk must not end the trace mid-incident: the file is given
    /// up, once and loudly, and stdout goes on.
    fn file_result(&mut self, result: std::io::Result<()>) {
        if let (Err(e), Some(f)) = (result, &self.json_file) {
            eprintln!(
                "netns-trace: --json-file {}: {e}; no longer written (stdout goes on)",
                f.path.display()
            );
            self.json_file = None;
        }
    }
}

fn broken_pipe(err: std::io::Error) -> anyhow::Error {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow!("output closed (broken pipe)")
    } else {
        anyhow!("writing output: {err}")
    }
}
