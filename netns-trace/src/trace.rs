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
use netns_trace::{
    cli::TraceOptions,
    containers::{procfs, ContainerMap, Info, OutputQueue, API_WAIT_NS},
    kernel::{
        btf::{resolve_offsets, tcp_state_names},
        tracefs,
    },
    output::{AttachRec, LostCounts, Record, Renderer},
    session::{Session, SessionConfig},
};
use netns_trace_common::{mode, stat, Config, Offsets};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{attach, probes, stacks::StackResolver, Prepared};

/// Offsets and config for the programs, plus the fields this kernel lacks.
pub fn settings(prepared: &Prepared, opts: &TraceOptions) -> (Offsets, Config, Vec<String>) {
    let (mut offsets, missing) = resolve_offsets(&prepared.btf);
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

pub fn load_programs(offsets: &Offsets, config: &Config) -> Result<Ebpf> {
    probes::load(offsets, config)
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
fn ktime_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("opening map {name}"))
}

pub async fn run(opts: TraceOptions) -> Result<ExitCode> {
    let started = Instant::now();
    let start_ktime_ns = ktime_now();
    let start_unix_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut prepared = crate::prepare()?;
    let (offsets, config, missing) = settings(&prepared, &opts);
    for m in &missing {
        log::warn!("BTF: {m}");
    }
    let mut ebpf = load_programs(&offsets, &config)?;

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
    if opts.filtered() {
        let mut tgids: HashMap<_, u32, u8> = HashMap::try_from(
            ebpf.map_mut("SCOPE_TGIDS")
                .ok_or_else(|| anyhow!("map SCOPE_TGIDS missing"))?,
        )?;
        for &pid in &scope_tgids {
            tgids.insert(pid, 1, 0).context("filling the pid scope")?;
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

    let btf = Some(&prepared.aya_btf);
    attach::attach_all(&mut ebpf, btf, &mut prepared.plan, opts.dry_run);
    if !opts.pids.is_empty() {
        // Descendants of --pid join the scope through the fork hook.
        attach::ensure_hook(&mut ebpf, btf, &mut prepared.plan, "fork", opts.dry_run);
    }
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
    let degraded = !plan.full_tracer_possible() || !missing.is_empty();
    if !creation_exact {
        let mut modes: Array<_, u32> = Array::try_from(
            ebpf.map_mut("MODE")
                .ok_or_else(|| anyhow!("map MODE missing"))?,
        )?;
        modes
            .set(mode::DEGRADED, 1, 0)
            .context("setting degraded mode")?;
    }
    let mut reasons = plan.degraded_reasons();
    reasons.extend(missing.iter().map(|m| format!("BTF: {m}")));
    let attach_ms = started.elapsed().as_millis() as u64;

    let mut out = Output::new(opts.json, mapping);
    out.write(&Record::Attach(AttachRec {
        hooks: plan.rows(),
        degraded,
        reasons: reasons.clone(),
        attach_ms,
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
    if let Some(path) = &opts.ready_file {
        std::fs::write(path, b"ready\n")
            .with_context(|| format!("writing --ready-file {}", path.display()))?;
    }

    let ring: RingBuf<MapData> = take(&mut ebpf, "EVENTS")?;
    let stats: PerCpuArray<MapData, u64> = take(&mut ebpf, "STATS")?;
    #[allow(deprecated)] // AsyncFd::register is not in the pinned tokio API we use
    let mut ring = AsyncFd::new(ring).context("polling the ring buffer")?;
    let stack_map: StackTraceMap<MapData> = take(&mut ebpf, "STACKS")?;
    let mut resolver = StackResolver::new(stack_map, prepared.symbols.clone());
    let mut session = Session::new(SessionConfig {
        start_ktime_ns,
        start_unix_ns,
        netns: scope_netns,
        pids: opts.pids.clone(),
        symbols: Some(prepared.symbols),
        baseline: prepared.caps.free_refcnt(),
        tcp_states: tcp_state_names(&prepared.btf),
    });
    session.set_stack_resolver(netns_trace::session::StackResolver(Box::new(move |id| {
        resolver.resolve(id)
    })));

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let deadline = tokio::time::sleep(opts.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                drain(guard.get_inner_mut(), &mut session, &mut out)?;
                guard.clear_ready();
            }
            _ = tick.tick() => {
                if let Some(rec) = session.on_stats(ktime_now(), lost_counts(&stats)) {
                    out.write(&rec)?;
                }
                out.pump()?;
            }
            Some(answer) = recv(&mut api_answers) => out.on_api(answer)?,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline, if opts.duration.is_some() => break,
        }
    }
    drain(ring.get_mut(), &mut session, &mut out)?;
    if let Some(rec) = session.on_stats(ktime_now(), lost_counts(&stats)) {
        out.write(&rec)?;
    }
    let detach_start = Instant::now();
    drop(ring);
    drop(ebpf);
    log::info!("detached in {} ms", detach_start.elapsed().as_millis());
    out.write(&session.summary(ktime_now()))?;
    out.finish(&mut api_answers).await?;
    Ok(ExitCode::SUCCESS)
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

fn drain(ring: &mut RingBuf<MapData>, session: &mut Session, out: &mut Output) -> Result<()> {
    while let Some(item) = ring.next() {
        if let Some(rec) = session.on_bytes(&item) {
            out.write_buffered(&rec)?;
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
/// events as they happen. A closed pipe ends the run quietly.
struct Output {
    renderer: Renderer,
    stdout: std::io::BufWriter<std::io::Stdout>,
    mapping: Option<Mapping>,
}

impl Output {
    fn new(json: bool, mapping: Option<Mapping>) -> Self {
        Self {
            renderer: Renderer::new(json),
            stdout: std::io::BufWriter::new(std::io::stdout()),
            mapping,
        }
    }

    fn emit(&mut self, rec: &Record) -> Result<()> {
        let text = self.renderer.render(rec);
        self.stdout.write_all(text.as_bytes()).map_err(broken_pipe)
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

    fn flush(&mut self) -> Result<()> {
        self.stdout.flush().map_err(broken_pipe)
    }
}

fn broken_pipe(err: std::io::Error) -> anyhow::Error {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow!("output closed (broken pipe)")
    } else {
        anyhow!("writing output: {err}")
    }
}
