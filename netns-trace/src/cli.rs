//! Command line: `netns-trace [OPTIONS]` traces, `netns-trace run -- CMD`
//! traces one command's namespaces to their teardown (patch validation),
//! `netns-trace doctor` reports what the running kernel supports,
//! `netns-trace completions SHELL` prints shell completions.
//!
//! Parsing is clap's; [`Cli::into_action`] then checks what clap cannot
//! (pids exist, `--netns` paths are network namespaces) against
//! `--proc-root`, so a DaemonSet pod can point it at the host's procfs.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::{ArgAction, Args, CommandFactory as _, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  netns-trace                                trace every namespace, human output
  netns-trace --json --duration 60 > t.jsonl JSON Lines for one minute
  netns-trace --netns /run/netns/blue        only this namespace (inode or path)
  netns-trace --pid $(pidof dockerd)         namespaces made by dockerd and its children
  netns-trace --pid-of-dockerd               Docker's namespaces, with container ids and names
  netns-trace --rtnl-threshold-ms 50         report rtnl_unlock calls slower than 50 ms
  netns-trace --dry-run -v                   plan and verify the attach, then exit
  netns-trace --proc-root /host/proc         from inside a container
  netns-trace --metrics-addr 0.0.0.0:9750    also serve Prometheus metrics on /metrics
  netns-trace doctor                         per-hook support table of this kernel
  netns-trace doctor --json
  netns-trace run --fail-on-leak -- ./repro.sh
                                             run a reproducer, wait for its namespaces
                                             to be torn down, exit 5 on a leak
  netns-trace run --max-teardown 2s --json-report a.json -- ip netns add x
  netns-trace completions bash > /etc/bash_completion.d/netns-trace

Exit status: 0 ok, 1 error, 2 bad command line, 3 doctor: degraded only;
run: 4 the command failed, 5 leak (--fail-on-leak), 6 teardown slower than
--max-teardown, 130 interrupted.";

/// `--version`: the crate version and the git commit it was built from.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("NETNS_TRACE_GIT_COMMIT"),
    ")"
);

/// Exit statuses, documented in `--help`, the man page and the README.
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const DOCTOR_DEGRADED: u8 = 3;
    /// `run`: the command exited non-zero or was killed by a signal.
    pub const COMMAND_FAILED: u8 = 4;
    /// `run --fail-on-leak`: a namespace not torn down, or a device still
    /// waiting, when the settle time ran out.
    pub const LEAK: u8 = 5;
    /// `run --max-teardown`: a teardown (or a device's wait) took longer.
    pub const SLOW_TEARDOWN: u8 = 6;
    /// `run` stopped by SIGINT/SIGTERM before the verdict.
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Debug, Parser)]
#[command(
    name = "netns-trace",
    version = LONG_VERSION,
    about = "Trace network namespace teardown and devices stuck waiting to become free",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Output JSON Lines (one object per line, each with a "type" field).
    #[arg(long, global = true)]
    pub json: bool,
    /// procfs to resolve pids and namespace paths in (e.g. /host/proc).
    #[arg(long, value_name = "PATH", default_value = "/proc", global = true)]
    pub proc_root: PathBuf,
    /// More log output (repeat for more).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less log output (repeat for less).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub quiet: u8,
    /// Colour in the human output: auto (only on a terminal, and not when
    /// NO_COLOR is set), always or never.
    #[arg(long, value_name = "WHEN", default_value = "auto", global = true)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to colour, given whether the output is a terminal and
    /// whether NO_COLOR is set (non-empty).
    pub fn enabled(self, is_terminal: bool, no_color_env: bool) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => is_terminal && !no_color_env,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print what this kernel supports: capabilities and the hook table.
    Doctor,
    /// Run a command under the tracer, wait until the namespaces it created
    /// are torn down (at most --settle), print the report and exit with a
    /// status that says whether the command failed, a namespace leaked or a
    /// teardown was too slow.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) generated from this command line.
    #[command(hide = true)]
    Man,
}

const RUN_HELP: &str = "\
Examples:
  netns-trace run --fail-on-leak -- ./repro.sh
  netns-trace run --max-teardown 500ms --settle 1m -- docker run --rm alpine true
  netns-trace run --json --json-report 6.12.json -- unshare -n true

Exit status: 0 the command succeeded and its namespaces were torn down in
time; 1 error (not root, command cannot be started); 2 bad command line;
4 the command failed; 5 leak (with --fail-on-leak: a namespace not torn
down, or a device still waiting, when --settle ran out); 6 a teardown or a
device's wait took longer than --max-teardown; 130 interrupted. When
several apply, the first in the order 5, 6, 4 wins.";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Exit 5 if a namespace the command created is not torn down, or a
    /// device is still waiting to become free, when --settle runs out.
    #[arg(long)]
    pub fail_on_leak: bool,
    /// Exit 6 if a namespace's teardown (destroy request to end of
    /// cleanup_net) or a device's wait takes longer, e.g. 500ms, 2s, 1m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_teardown: Option<Duration>,
    /// How long to wait after the command exits for its namespaces to be
    /// torn down.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub settle: Duration,
    /// Write the report as one JSON document to FILE (for diffing kernels).
    #[arg(long, value_name = "FILE")]
    pub json_report: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Options of both the tracer and `run`.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Report rtnl_unlock calls that take at least N ms.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub rtnl_threshold_ms: u64,
    /// Write this file once every hook is attached (for test harnesses).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Also write every record as one JSON line to FILE (created or
    /// truncated), whatever stdout shows: watch the human view and keep the
    /// incident's full record for later.
    #[arg(long, value_name = "FILE")]
    pub json_file: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// Exact attribution: hardware watchpoints on the reference counters of
    /// new loopback devices and of devices found waiting (every hold and
    /// release, with its kernel stack; at most 2 devices: debug registers
    /// are few)
    #[arg(long, conflicts_with = "no_watchpoints")]
    pub exact: bool,
    /// Never open hardware watchpoints (by default a device found stuck in
    /// the unregister wait loop is watched, so its release is caught).
    #[arg(long)]
    pub no_watchpoints: bool,
    /// Have the kernel count the run time of the tracer's own BPF programs
    /// (BPF_ENABLE_STATS, while the tracer runs) and list them in the
    /// summary: what tracing costs in the kernel, per hook.
    #[arg(long)]
    pub bpf_stats: bool,
    /// Read the watchpoint samples from the perf ring in userspace even
    /// where the kernel runs BPF on breakpoint events (tests the fallback).
    #[arg(long, hide = true)]
    pub watch_via_perf_ring: bool,
    /// Never use fentry/fexit or tp_btf: kprobes, kretprobes and classic
    /// tracepoints only, as on a kernel that refuses fentry (tests those
    /// fallbacks on kernels that would not need them).
    #[arg(long)]
    pub no_fentry: bool,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Stop after SECS seconds (default: until Ctrl-C).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: Option<u64>,
    /// Only namespaces created by PID and its descendants (repeatable).
    #[arg(long = "pid", value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,
    /// Like --pid with the one dockerd process (found under --proc-root),
    /// plus containerd and its shims; events name their containers.
    #[arg(long)]
    pub pid_of_dockerd: bool,
    /// Docker Engine API socket for container names and images.
    #[arg(long, value_name = "PATH", default_value = "/var/run/docker.sock")]
    pub docker_socket: PathBuf,
    /// Only this namespace: an inode number, or a path such as
    /// /proc/PID/ns/net or /run/netns/NAME (repeatable).
    #[arg(long, value_name = "INODE|PATH")]
    pub netns: Vec<String>,
    /// Plan and verify the attach (load programs), then exit.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// What to do, with every argument checked and resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Trace(TraceOptions),
    Run(RunOptions),
    Doctor { json: bool, proc_root: PathBuf },
    Completions(clap_complete::Shell),
    Man,
}

/// `run`: the tracer's options (scoped to the command's descendants) and
/// the verdict policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    pub trace: TraceOptions,
    pub command: Vec<OsString>,
    pub fail_on_leak: bool,
    pub max_teardown: Option<Duration>,
    pub settle: Duration,
    pub json_report: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceOptions {
    pub json: bool,
    pub duration: Option<Duration>,
    pub pids: Vec<u32>,
    /// Namespace inodes (paths already resolved).
    pub netns: Vec<u32>,
    pub rtnl_threshold: Duration,
    pub ready_file: Option<PathBuf>,
    /// `--json-file`: every record also goes there as JSON lines.
    pub json_file: Option<PathBuf>,
    pub proc_root: PathBuf,
    pub dry_run: bool,
    pub exact: bool,
    pub no_watchpoints: bool,
    pub bpf_stats: bool,
    /// Watchpoints read from the perf ring, never by BPF (hidden flag).
    pub watch_via_perf_ring: bool,
    /// `--no-fentry`: kprobes and classic tracepoints only.
    pub no_fentry: bool,
    pub metrics_addr: Option<SocketAddr>,
    pub color: ColorChoice,
    /// `--pid-of-dockerd`: the dockerd found (also in `pids`).
    pub dockerd: Option<u32>,
    pub docker_socket: PathBuf,
}

impl TraceOptions {
    /// Container mapping is on with a process scope (`--pid`,
    /// `--pid-of-dockerd`): records about namespaces get `container`.
    pub fn containers(&self) -> bool {
        !self.pids.is_empty()
    }

    /// Any scope given: the kernel filter must be enabled.
    pub fn filtered(&self) -> bool {
        !self.pids.is_empty() || !self.netns.is_empty()
    }
}

impl Cli {
    /// `-v`/`-q` as a log level: warn by default.
    pub fn log_level(&self) -> log::LevelFilter {
        use log::LevelFilter::*;
        match 2 + i16::from(self.verbose) - i16::from(self.quiet) {
            i16::MIN..=0 => Off,
            1 => Error,
            2 => Warn,
            3 => Info,
            4 => Debug,
            _ => Trace,
        }
    }

    /// Validate against `--proc-root` and resolve `--netns` paths.
    pub fn into_action(self) -> Result<Action> {
        let t = self.trace;
        let trace_only = t.duration.is_some()
            || !t.pids.is_empty()
            || !t.netns.is_empty()
            || t.dry_run
            || t.pid_of_dockerd
            || t.common.ready_file.is_some()
            || t.common.json_file.is_some()
            || t.common.metrics_addr.is_some()
            || t.common.rtnl_threshold_ms != 10;
        match self.command {
            None => {}
            Some(Command::Doctor) => {
                // Global options (--json, --proc-root, -v) apply; trace ones do not.
                if trace_only {
                    bail!("doctor takes no trace options (--duration, --pid, --pid-of-dockerd, --netns, --ready-file, --json-file, --dry-run, --metrics-addr, --rtnl-threshold-ms)");
                }
                return Ok(Action::Doctor {
                    json: self.json,
                    proc_root: self.proc_root,
                });
            }
            Some(Command::Completions { shell }) => return Ok(Action::Completions(shell)),
            Some(Command::Man) => return Ok(Action::Man),
            Some(Command::Run(r)) => {
                if trace_only {
                    bail!("options of the tracer go after `run` (before `--`); --duration, --pid, --netns and --dry-run do not apply to run");
                }
                return Ok(Action::Run(RunOptions {
                    trace: TraceOptions {
                        json: self.json,
                        duration: None,
                        pids: vec![],
                        netns: vec![],
                        rtnl_threshold: Duration::from_millis(r.common.rtnl_threshold_ms),
                        ready_file: r.common.ready_file,
                        json_file: r.common.json_file,
                        proc_root: self.proc_root,
                        dry_run: false,
                        dockerd: None,
                        docker_socket: "/var/run/docker.sock".into(),
                        exact: r.common.exact,
                        no_watchpoints: r.common.no_watchpoints,
                        bpf_stats: r.common.bpf_stats,
                        watch_via_perf_ring: r.common.watch_via_perf_ring,
                        no_fentry: r.common.no_fentry,
                        metrics_addr: r.common.metrics_addr,
                        color: self.color,
                    },
                    command: r.command,
                    fail_on_leak: r.fail_on_leak,
                    max_teardown: r.max_teardown,
                    settle: r.settle,
                    json_report: r.json_report,
                }));
            }
        }
        for &pid in &t.pids {
            if !self.proc_root.join(pid.to_string()).is_dir() {
                bail!("no such process: {pid}");
            }
        }
        let mut pids = t.pids;
        let dockerd = if t.pid_of_dockerd {
            let pid =
                crate::containers::procfs::find_dockerd(&self.proc_root).map_err(|e| anyhow!(e))?;
            if !pids.contains(&pid) {
                pids.push(pid);
            }
            Some(pid)
        } else {
            None
        };
        let netns = t
            .netns
            .iter()
            .map(|a| resolve_netns(a, &self.proc_root))
            .collect::<Result<Vec<_>>>()?;
        Ok(Action::Trace(TraceOptions {
            json: self.json,
            duration: t.duration.map(Duration::from_secs),
            pids,
            netns,
            rtnl_threshold: Duration::from_millis(t.common.rtnl_threshold_ms),
            ready_file: t.common.ready_file,
            json_file: t.common.json_file,
            proc_root: self.proc_root,
            dry_run: t.dry_run,
            exact: t.common.exact,
            no_watchpoints: t.common.no_watchpoints,
            bpf_stats: t.common.bpf_stats,
            watch_via_perf_ring: t.common.watch_via_perf_ring,
            no_fentry: t.common.no_fentry,
            metrics_addr: t.common.metrics_addr,
            color: self.color,
            dockerd,
            docker_socket: t.docker_socket,
        }))
    }
}

/// `500ms`, `2s`, `1.5s`, `1m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 2s, 1.5s, 1m)"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => return Err(format!("unknown unit {u:?} in {s:?} (use ms, s, m or h)")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("{s:?} is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The man page (roff), generated from the command line definition. The
/// version is the crate's without the commit, so the committed page only
/// changes when the CLI does.
pub fn man_page() -> String {
    let cmd = Cli::command().version(env!("CARGO_PKG_VERSION"));
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    clap_mangen::Man::new(cmd.clone())
        .render(&mut out)
        .expect("rendering the man page");
    // The page of the main command lists the subcommands; `run` has its
    // own options, so its synopsis and options follow as RUN sections.
    if let Some(run) = cmd.find_subcommand("run") {
        let man = clap_mangen::Man::new(run.clone().name("netns-trace run"));
        let mut sections = Vec::new();
        man.render_synopsis_section(&mut sections)
            .expect("rendering the man page");
        man.render_options_section(&mut sections)
            .expect("rendering the man page");
        man.render_extra_section(&mut sections)
            .expect("rendering the man page");
        let text = String::from_utf8_lossy(&sections)
            .replace(".SH SYNOPSIS", ".SH \"RUN SYNOPSIS\"")
            .replace(".SH OPTIONS", ".SH \"RUN OPTIONS\"")
            .replace(".SH EXTRA", ".SH \"RUN EXAMPLES AND EXIT STATUS\"");
        out.extend_from_slice(text.as_bytes());
    }
    String::from_utf8(out)
        .expect("roff is UTF-8")
        .replace(".SH EXTRA", ".SH \"EXAMPLES AND EXIT STATUS\"")
}

/// Shell completions for `shell`.
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "netns-trace", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `net:[4026531840]` -> Some(("net", 4026531840)): the readlink form of a
/// /proc/PID/ns/* link.
fn parse_ns_link(s: &str) -> Option<(&str, u64)> {
    let (ty, rest) = s.split_once(":[")?;
    let n = rest.strip_suffix(']')?.parse().ok()?;
    Some((ty, n))
}

fn inode_u32(arg: &str, ino: u64) -> Result<u32> {
    match u32::try_from(ino) {
        Ok(0) | Err(_) => bail!("--netns {arg}: {ino} is not a namespace inode"),
        Ok(v) => Ok(v),
    }
}

/// `--netns` argument to a namespace inode: a number, the `net:[N]` form,
/// or a path (a /proc ns link, or a bind-mounted nsfs file such as
/// /run/netns/NAME). A path relative to /proc is taken under `proc_root`.
pub fn resolve_netns(arg: &str, proc_root: &Path) -> Result<u32> {
    if let Ok(n) = arg.parse::<u64>() {
        return inode_u32(arg, n);
    }
    if let Some((ty, n)) = parse_ns_link(arg) {
        if ty != "net" {
            bail!("--netns {arg}: not a network namespace ({ty} namespace)");
        }
        return inode_u32(arg, n);
    }
    let path = match Path::new(arg).strip_prefix("/proc") {
        Ok(rest) if proc_root != Path::new("/proc") => proc_root.join(rest),
        _ => PathBuf::from(arg),
    };
    let meta = std::fs::symlink_metadata(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow!("--netns {arg}: no such file"),
        _ => anyhow!("--netns {arg}: {e}"),
    })?;
    if meta.file_type().is_symlink() {
        // /proc/PID/ns/net reads as `net:[N]`; trust that form: it is how
        // the kernel names the namespace, and it needs no permission.
        if let Ok(target) = std::fs::read_link(&path) {
            if let Some((ty, n)) = target.to_str().and_then(parse_ns_link) {
                if ty != "net" {
                    bail!("--netns {arg}: not a network namespace ({ty} namespace)");
                }
                return inode_u32(arg, n);
            }
        }
    }
    nsfs_net_inode(arg, &path)
}

/// A bind-mounted namespace file: it must live on nsfs, and if we may open
/// it, the kernel must say it is a network namespace.
fn nsfs_net_inode(arg: &str, path: &Path) -> Result<u32> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    // _IO(0xb7, 0x3), Linux 4.11+.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

    let meta = std::fs::metadata(path).map_err(|e| anyhow!("--netns {arg}: {e}"))?;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path; `st` is written by statfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        bail!("--netns {arg}: {}", std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs by libc/arch
    if st.f_type as i64 != NSFS_MAGIC {
        bail!("--netns {arg}: not a network namespace (not an nsfs file)");
    }
    if let Ok(f) = std::fs::File::open(path) {
        use std::os::fd::AsRawFd;
        // SAFETY: ioctl on an fd we own; NS_GET_NSTYPE takes no argument.
        let ty = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE as _) };
        // On kernels without the ioctl (< 4.11) nsfs is all we can check.
        if ty >= 0 && ty != libc::CLONE_NEWNET {
            bail!("--netns {arg}: not a network namespace");
        }
    }
    inode_u32(arg, meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("netns-trace").chain(args.iter().copied()))
    }

    fn action(args: &[&str]) -> Result<Action> {
        parse(args)?.into_action()
    }

    fn self_netns() -> u32 {
        let t = std::fs::read_link("/proc/self/ns/net").unwrap();
        parse_ns_link(t.to_str().unwrap()).unwrap().1 as u32
    }

    #[test]
    fn defaults() {
        let Action::Trace(t) = action(&[]).unwrap() else {
            panic!()
        };
        assert_eq!(
            t,
            TraceOptions {
                json: false,
                duration: None,
                pids: vec![],
                netns: vec![],
                rtnl_threshold: Duration::from_millis(10),
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
                color: ColorChoice::Auto,
                dockerd: None,
                docker_socket: "/var/run/docker.sock".into(),
            }
        );
        assert!(!t.containers());
        assert!(!t.filtered());
        assert_eq!(parse(&[]).unwrap().log_level(), log::LevelFilter::Warn);
    }

    #[test]
    fn all_trace_options() {
        let me = std::process::id().to_string();
        let Action::Trace(t) = action(&[
            "--json",
            "--duration",
            "5",
            "--pid",
            &me,
            "--pid",
            "1",
            "--netns",
            "4026531840",
            "--netns",
            "net:[4026532281]",
            "--rtnl-threshold-ms",
            "50",
            "--ready-file",
            "/tmp/r",
            "--json-file",
            "/tmp/j",
            "--dry-run",
        ])
        .unwrap() else {
            panic!()
        };
        assert!(t.json && t.dry_run && t.filtered());
        assert_eq!(t.duration, Some(Duration::from_secs(5)));
        assert_eq!(t.pids, vec![std::process::id(), 1]);
        assert_eq!(t.netns, vec![4026531840, 4026532281]);
        assert_eq!(t.rtnl_threshold, Duration::from_millis(50));
        assert_eq!(t.ready_file, Some(PathBuf::from("/tmp/r")));
        assert_eq!(t.json_file, Some(PathBuf::from("/tmp/j")));
    }

    #[test]
    fn verbosity() {
        assert_eq!(
            parse(&["-vv"]).unwrap().log_level(),
            log::LevelFilter::Debug
        );
        assert_eq!(
            parse(&["-v", "-v", "-v"]).unwrap().log_level(),
            log::LevelFilter::Trace
        );
        assert_eq!(parse(&["-q"]).unwrap().log_level(), log::LevelFilter::Error);
        assert_eq!(parse(&["-qq"]).unwrap().log_level(), log::LevelFilter::Off);
        assert_eq!(parse(&["-qqq"]).unwrap().log_level(), log::LevelFilter::Off);
    }

    #[test]
    fn doctor() {
        assert_eq!(
            action(&["doctor", "--json"]).unwrap(),
            Action::Doctor {
                json: true,
                proc_root: "/proc".into()
            }
        );
        assert_eq!(
            action(&["--proc-root", "/host/proc", "doctor"]).unwrap(),
            Action::Doctor {
                json: false,
                proc_root: "/host/proc".into()
            }
        );
        // Trace options make no sense for doctor.
        assert_eq!(
            action(&["--duration", "3", "doctor"])
                .unwrap_err()
                .to_string(),
            "doctor takes no trace options (--duration, --pid, --pid-of-dockerd, --netns, --ready-file, --json-file, --dry-run, --metrics-addr, --rtnl-threshold-ms)"
        );
    }

    #[test]
    fn run_options() {
        let Action::Run(r) = action(&[
            "--json",
            "run",
            "--fail-on-leak",
            "--max-teardown",
            "500ms",
            "--settle",
            "1m",
            "--json-report",
            "/tmp/r.json",
            "--metrics-addr",
            "127.0.0.1:9750",
            "--ready-file",
            "/tmp/ready",
            "--",
            "unshare",
            "-n",
            "--",
            "true",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            r.command,
            ["unshare", "-n", "--", "true"].map(OsString::from)
        );
        assert!(r.fail_on_leak && r.trace.json && !r.trace.filtered());
        assert_eq!(r.max_teardown, Some(Duration::from_millis(500)));
        assert_eq!(r.settle, Duration::from_secs(60));
        assert_eq!(r.json_report, Some(PathBuf::from("/tmp/r.json")));
        assert_eq!(
            r.trace.metrics_addr,
            Some("127.0.0.1:9750".parse().unwrap())
        );
        assert_eq!(r.trace.ready_file, Some(PathBuf::from("/tmp/ready")));
        // Defaults: no policy beyond the command's own status, 30 s settle.
        let Action::Run(r) = action(&["run", "--", "true"]).unwrap() else {
            panic!()
        };
        assert_eq!((r.fail_on_leak, r.max_teardown), (false, None));
        assert_eq!(r.settle, Duration::from_secs(30));
    }

    #[test]
    fn run_bad_input() {
        use clap::error::ErrorKind;
        // No command.
        assert_eq!(
            parse(&["run"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["run", "--max-teardown", "fast", "--", "true"])
                .unwrap_err()
                .kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse(&["run", "--metrics-addr", "localhost", "--", "true"])
                .unwrap_err()
                .kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            action(&["--duration", "3", "run", "--", "true"])
                .unwrap_err()
                .to_string(),
            "options of the tracer go after `run` (before `--`); --duration, --pid, --netns and --dry-run do not apply to run"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("2 days")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1e99h").is_err());
    }

    #[test]
    fn color_choice() {
        assert!(ColorChoice::Auto.enabled(true, false));
        assert!(!ColorChoice::Auto.enabled(false, false));
        assert!(
            !ColorChoice::Auto.enabled(true, true),
            "NO_COLOR wins in auto"
        );
        assert!(ColorChoice::Always.enabled(false, true));
        assert!(!ColorChoice::Never.enabled(true, false));
        assert_eq!(
            parse(&["--color", "always"]).unwrap().color,
            ColorChoice::Always
        );
        assert!(parse(&["--color", "sometimes"]).is_err());
    }

    #[test]
    fn version_names_the_commit() {
        let e = parse(&["--version"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        let v = e.to_string();
        let commit = env!("NETNS_TRACE_GIT_COMMIT");
        assert!(v.contains(&format!("({commit})")), "{v}");
        assert!(!commit.is_empty());
    }

    #[test]
    fn completions_cover_subcommands() {
        let bash = completions(clap_complete::Shell::Bash);
        assert!(bash.contains("netns-trace"), "{bash}");
        for word in ["run", "doctor", "--fail-on-leak", "--metrics-addr"] {
            assert!(bash.contains(word), "bash completion lacks {word}");
        }
        let zsh = completions(clap_complete::Shell::Zsh);
        assert!(zsh.contains("#compdef netns-trace"), "{zsh}");
    }

    /// docs/netns-trace.1 is generated by `cargo xtask man`; it must match
    /// the command line it documents.
    #[test]
    fn committed_man_page_is_current() {
        let committed = include_str!("../../docs/netns-trace.1");
        assert!(
            committed == man_page(),
            "docs/netns-trace.1 is stale: run `cargo xtask man` and commit it"
        );
        assert!(committed.contains("fail\\-on\\-leak"));
    }

    #[test]
    fn bad_values() {
        use clap::error::ErrorKind;
        assert_eq!(
            parse(&["--duration", "0"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse(&["--duration", "x"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse(&["--pid", "0"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse(&["--pid", "-3"]).unwrap_err().kind(),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            parse(&["--frob"]).unwrap_err().kind(),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            action(&["--pid", "4000000000"]).unwrap_err().to_string(),
            "no such process: 4000000000"
        );
    }

    #[test]
    fn missing_pid_under_proc_root() {
        let dir = std::env::temp_dir().join(format!("nt-proc-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("812")).unwrap();
        let root = dir.to_str().unwrap();
        assert!(action(&["--proc-root", root, "--pid", "812"]).is_ok());
        assert_eq!(
            action(&["--proc-root", root, "--pid", "813"])
                .unwrap_err()
                .to_string(),
            "no such process: 813"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn pid_of_dockerd_under_proc_root() {
        use crate::containers::procfs::tests::FakeProc;
        let f = FakeProc::new(
            "cli",
            &[
                (1, 0, "init", 4026531840, "0::/\n"),
                (300, 1, "dockerd", 4026531840, "0::/\n"),
            ],
        );
        let root = f.0.to_str().unwrap();
        let Action::Trace(t) = action(&[
            "--proc-root",
            root,
            "--pid-of-dockerd",
            "--pid",
            "1",
            "--docker-socket",
            "/host/run/docker.sock",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!((t.dockerd, t.pids.as_slice()), (Some(300), &[1, 300][..]));
        assert!(t.containers() && t.filtered());
        assert_eq!(t.docker_socket, PathBuf::from("/host/run/docker.sock"));
        f.add((301, 1, "dockerd", 4026532999, "0::/\n"));
        assert_eq!(
            action(&["--proc-root", root, "--pid-of-dockerd"])
                .unwrap_err()
                .to_string(),
            format!("--pid-of-dockerd: 2 dockerd processes under {root} (pids 300, 301): choose one with --pid PID")
        );
        f.remove(300);
        f.remove(301);
        assert_eq!(
            action(&["--proc-root", root, "--pid-of-dockerd"])
                .unwrap_err()
                .to_string(),
            format!("--pid-of-dockerd: no dockerd process under {root} (is Docker running? --pid PID takes any process)")
        );
    }

    #[test]
    fn help_has_examples() {
        let e = parse(&["--help"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = e.to_string();
        assert!(help.contains("Examples:"), "{help}");
        assert!(help.contains("--rtnl-threshold-ms <N>"), "{help}");
        assert!(help.contains("doctor"), "{help}");
    }

    #[test]
    fn netns_numbers_and_links() {
        let p = Path::new("/proc");
        assert_eq!(resolve_netns("4026531840", p).unwrap(), 4026531840);
        assert_eq!(resolve_netns("net:[4026532281]", p).unwrap(), 4026532281);
        assert_eq!(
            resolve_netns("mnt:[4026531841]", p)
                .unwrap_err()
                .to_string(),
            "--netns mnt:[4026531841]: not a network namespace (mnt namespace)"
        );
        assert_eq!(
            resolve_netns("0", p).unwrap_err().to_string(),
            "--netns 0: 0 is not a namespace inode"
        );
        assert!(resolve_netns("99999999999", p).is_err());
    }

    #[test]
    fn netns_paths() {
        let p = Path::new("/proc");
        assert_eq!(resolve_netns("/proc/self/ns/net", p).unwrap(), self_netns());
        assert_eq!(
            resolve_netns("/proc/self/ns/mnt", p)
                .unwrap_err()
                .to_string(),
            "--netns /proc/self/ns/mnt: not a network namespace (mnt namespace)"
        );
        assert_eq!(
            resolve_netns("/x/does/not/exist", p)
                .unwrap_err()
                .to_string(),
            "--netns /x/does/not/exist: no such file"
        );
        assert_eq!(
            resolve_netns("/proc/self/status", p)
                .unwrap_err()
                .to_string(),
            "--netns /proc/self/status: not a network namespace (not an nsfs file)"
        );
    }

    #[test]
    fn netns_path_under_proc_root() {
        // A /proc path is looked up under --proc-root (the host's procfs).
        let dir = std::env::temp_dir().join(format!("nt-root-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("1/ns")).unwrap();
        std::os::unix::fs::symlink("net:[4026532999]", dir.join("1/ns/net")).unwrap();
        assert_eq!(resolve_netns("/proc/1/ns/net", &dir).unwrap(), 4026532999);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
