//! Scenario driver, runs inside the test VM (PID 1's child).
//!
//! Starts the tracer, waits for its ready file, drives one scenario, stops the
//! tracer with SIGINT and prints everything the host harness needs between
//! `==NT-BEGIN <section>==` / `==NT-END <section>==` markers on stdout (the
//! serial console). It never asserts: that is `cargo xtask vm-test`'s job, so
//! it exits 0 unless the tracer could not even start.
//!
//! Namespace children are this same binary re-executed (`__churn-child`,
//! `__stuck-child`) rather than fork()ed: the parent has reader threads, and
//! only exec gives the child a clean single-threaded process.
mod bench;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Seconds to wait for the tracer to report what the scenario expects.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// The tracer command line (after `--`).
    #[arg(last = true, required = true)]
    tracer: Vec<String>,
}

#[derive(Subcommand)]
enum Scenario {
    /// Create and destroy `count` namespaces, each with a loopback TCP connection.
    Churn {
        #[arg(long, default_value_t = 50)]
        count: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Pin lo of a dying namespace with the test module for `hold_ms`
    /// (mode hold, neigh or dst), or keep a kernel TCP socket in it that
    /// must not pin lo (mode tcpsock).
    Stuck {
        #[arg(long, default_value = "hold")]
        mode: String,
        #[arg(long, default_value_t = 3000)]
        hold_ms: u64,
        #[arg(long, default_value = "/lib/netns_leak.ko")]
        module: String,
        /// Incident mode: start the tracer only after the kernel has
        /// printed "waiting for lo to become free" (attach mid-wait).
        #[arg(long)]
        attach_late: bool,
        /// `--exact`: take the leak only once the tracer reports the new
        /// lo's watchpoints armed (its `watch` record), so every hold is seen.
        #[arg(long, conflicts_with = "attach_late")]
        await_watch: bool,
        /// Like --await-watch, but the `watch` record is read from this
        /// file (another tracer's --json-file): the demo's watchpoints are
        /// the human tracer's. One watcher only: under QEMU's TCG two
        /// watchpoints on one address do not both fire.
        #[arg(long, value_name = "PATH", conflicts_with_all = ["attach_late", "await_watch"])]
        await_watch_in: Option<std::path::PathBuf>,
        /// --attach-late: leave the release to the module's timer (the demo,
        /// where a second tracer must see it too) instead of releasing as
        /// soon as the tracer has armed its watchpoints.
        #[arg(long, requires = "attach_late")]
        timer_release: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Run a real dockerd, then run and remove containers (`--network
    /// none`: each still gets a namespace of its own) while the tracer
    /// runs: one container started before it, two while it runs.
    Docker {
        /// Root filesystem tarball to `docker import` as nt-busybox:latest.
        #[arg(long, default_value = "/root/nt-busybox.tar")]
        image: String,
        #[command(flatten)]
        common: Common,
    },
    /// The measuring loops of `cargo xtask bench` (namespace churn, loopback
    /// TCP, attach time, ring-buffer ramp, the tracer's CPU and memory),
    /// untraced and traced in interleaved rounds; prints a `bench` section.
    Bench(bench::BenchArgs),
    /// Patch validation: `netns-trace run --fail-on-leak` runs a command
    /// that leaves lo of its namespace pinned by the test module past the
    /// settle time; the tracer must exit with the leak status.
    RunLeak {
        #[arg(long, default_value = "hold")]
        mode: String,
        #[arg(long, default_value = "/lib/netns_leak.ko")]
        module: String,
        /// The tracer binary (its `run` command line is built here).
        #[arg(last = true, required = true)]
        tracer: Vec<String>,
    },
    /// The command `run` executes: the leak, then exit 0.
    #[command(name = "__run-leak-cmd", hide = true)]
    RunLeakCmd {
        #[arg(long)]
        mode: String,
        #[arg(long)]
        module: String,
    },
    #[command(name = "__churn-child", hide = true)]
    ChurnChild,
    #[command(name = "__stuck-child", hide = true)]
    StuckChild,
}

fn main() {
    match Cli::parse().scenario {
        Scenario::ChurnChild => child(true),
        Scenario::StuckChild => child(false),
        Scenario::Bench(args) => bench::run(args),
        Scenario::RunLeak {
            mode,
            module,
            tracer,
        } => run_leak(&mode, &module, &tracer),
        Scenario::RunLeakCmd { mode, module } => {
            let mut facts = json!({});
            // The module keeps lo long after the tracer's --settle; the
            // scenario releases it (release_now) once the tracer is done.
            match make_stuck(&mut facts, &mode, 600_000, &module, |_| true) {
                Some(inode) => eprintln!("{inode}"),
                None => {
                    eprintln!("leak failed: {facts}");
                    std::process::exit(1);
                }
            }
        }
        Scenario::Churn { count, common } => {
            let mut facts = json!({"scenario": "churn", "count": count});
            run(common, &mut facts, |t, facts, timeout| {
                churn(t, facts, count, timeout)
            })
        }
        Scenario::Docker { image, common } => docker_scenario(&image, common),
        Scenario::Stuck {
            mode,
            hold_ms,
            module,
            attach_late,
            await_watch,
            await_watch_in,
            timer_release,
            common,
        } => {
            let mut facts = json!({"scenario": "stuck", "mode": mode, "hold_ms": hold_ms,
                                   "attach_late": attach_late});
            if !attach_late {
                return run(common, &mut facts, |t, facts, timeout| {
                    let is_armed = |inode: u64| {
                        move |l: &[Value]| {
                            l.iter()
                                .any(|v| has(v, "watch", inode) && v["state"] == "armed")
                        }
                    };
                    let armed = |inode: u64| match &await_watch_in {
                        Some(path) => wait_in_file(path, timeout, is_armed(inode)),
                        None => !await_watch || t.lines.wait_for(timeout, is_armed(inode)),
                    };
                    if let Some(inode) = make_stuck(facts, &mode, hold_ms, &module, armed) {
                        await_teardown(t, facts, &mode, inode, false, timeout);
                    }
                });
            }
            // The leak first; the tracer only once the kernel complains.
            let Some(inode) = make_stuck(&mut facts, &mode, hold_ms, &module, |_| true) else {
                return run(common, &mut facts, |_, _, _| {});
            };
            if !await_kernel_waiting(Duration::from_secs(common.timeout)) {
                add_error(
                    &mut facts,
                    "the kernel never printed 'waiting for lo to become free'",
                );
            }
            run(common, &mut facts, |t, facts, timeout| {
                // How long from "attached" to the first report of the stuck lo.
                let attached = Instant::now();
                if t.lines
                    .wait_for(timeout, |l| l.iter().any(|v| has(v, "dev_wait", inode)))
                {
                    facts["first_report_ms"] = json!(attached.elapsed().as_millis() as u64);
                }

                // Let go only once the watchpoints on the stuck lo are
                // armed, so its release is caught (the module's timer is
                // long: this write is what releases it).
                if timer_release {
                    // The module's own timer lets go.
                } else if t.lines.wait_for(timeout, |l| {
                    l.iter()
                        .any(|v| has(v, "watch", inode) && v["state"] == "armed")
                }) {
                    if let Err(e) =
                        std::fs::write("/sys/module/netns_leak/parameters/release_now", "1")
                    {
                        add_error(facts, &format!("release_now: {e}"));
                    }
                } else {
                    add_error(facts, "the tracer never armed watchpoints on the stuck lo");
                }
                await_teardown(t, facts, &mode, inode, true, timeout);
            })
        }
    }
}

/// Polls the kernel log (every 50 ms) for the unregister wait message:
/// waiting on the kernel's own event.
fn await_kernel_waiting(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if read_kmsg().is_ok_and(|log| log.contains("waiting for lo to become free")) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Tracer stdout lines, shared with the reader thread; the condvar is
/// notified on each new line and at EOF.
#[derive(Default)]
struct Lines {
    lines: Mutex<(Vec<String>, bool)>,
    cond: Condvar,
}

impl Lines {
    /// Wait until `pred` holds over the parsed lines so far, or time out.
    fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lines.lock().unwrap();
        loop {
            let parsed = parse_json_lines(guard.0.iter().map(String::as_str));
            if pred(&parsed) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || guard.1 {
                return false;
            }
            guard = self.cond.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }
}

struct Tracer {
    child: Child,
    lines: Arc<Lines>,
    stderr: Arc<Mutex<String>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn ready_file(cmd: &[String]) -> String {
    cmd.iter()
        .position(|a| a == "--ready-file")
        .and_then(|i| cmd.get(i + 1).cloned())
        .unwrap_or_else(|| "/tmp/ready".into())
}

/// Appends everything the tracer writes on stderr to `into`, as it comes
/// (shown when a scenario fails), until the pipe closes.
fn collect_stderr(
    mut err: std::process::ChildStderr,
    into: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
}

fn start_tracer(cmd: &[String], timeout: Duration) -> Result<Tracer, String> {
    let ready = ready_file(cmd);
    let _ = std::fs::remove_file(&ready);
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start tracer {cmd:?}: {e}"))?;
    let lines = Arc::new(Lines::default());
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut threads = Vec::new();
    let (out, l) = (child.stdout.take().unwrap(), lines.clone());
    threads.push(std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            l.lines.lock().unwrap().0.push(line);
            l.cond.notify_all();
        }
        l.lines.lock().unwrap().1 = true;
        l.cond.notify_all();
    }));
    threads.push(collect_stderr(child.stderr.take().unwrap(), stderr.clone()));
    let mut tracer = Tracer {
        child,
        lines,
        stderr,
        threads,
    };
    // Poll for the ready file (an event, not a fixed delay), or the tracer dying.
    let deadline = Instant::now() + timeout;
    loop {
        if std::path::Path::new(&ready).exists() {
            return Ok(tracer);
        }
        if let Ok(Some(status)) = tracer.child.try_wait() {
            for t in tracer.threads.drain(..) {
                let _ = t.join();
            }
            return Err(format!(
                "tracer exited before ready ({status}); stderr:\n{}",
                tracer.stderr.lock().unwrap()
            ));
        }
        if Instant::now() > deadline {
            let _ = tracer.child.kill();
            return Err(format!("tracer not ready after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGINT, then wait up to 30 s for exit (SIGKILL after that).
fn stop_tracer(t: &mut Tracer, facts: &mut Value) {
    unsafe { libc::kill(t.child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match t.child.try_wait() {
            Ok(Some(s)) => break s.to_string(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = t.child.kill();
                let _ = t.child.wait();
                add_error(facts, "tracer did not exit within 30 s of SIGINT; killed");
                break "killed".into();
            }
        }
    };
    facts["tracer_exit"] = json!(status);
    for th in t.threads.drain(..) {
        let _ = th.join();
    }
}

fn add_error(facts: &mut Value, msg: &str) {
    eprintln!("nt-scenario: {msg}");
    if facts.get("errors").is_none() {
        facts["errors"] = json!([]);
    }
    facts["errors"].as_array_mut().unwrap().push(json!(msg));
}

fn run(common: Common, facts: &mut Value, body: impl FnOnce(&Tracer, &mut Value, Duration)) {
    let timeout = Duration::from_secs(common.timeout);
    let (json_lines, stderr) = match start_tracer(&common.tracer, Duration::from_secs(120)) {
        Ok(mut t) => {
            body(&t, facts, timeout);
            stop_tracer(&mut t, facts);
            let lines = t.lines.lines.lock().unwrap().0.clone();
            let stderr = t.stderr.lock().unwrap().clone();
            (lines, stderr)
        }
        Err(e) => {
            add_error(facts, &e);
            facts["tracer_exit"] = json!("did not start");
            (Vec::new(), e)
        }
    };
    print_sections(facts, &json_lines.join("\n"), &stderr);
}

/// The driver's output: facts, the tracer's stdout and stderr, the kernel
/// log, each between `==NT-BEGIN name==` / `==NT-END name==` markers.
fn print_sections(facts: &Value, tracer_json: &str, tracer_stderr: &str) {
    let dmesg = read_kmsg().unwrap_or_else(|e| format!("reading /dev/kmsg failed: {e}"));
    let mut out = std::io::stdout().lock();
    for (name, body) in [
        ("facts", facts.to_string().as_str()),
        ("tracer-json", tracer_json),
        ("tracer-stderr", tracer_stderr),
        ("dmesg", dmesg.as_str()),
    ] {
        let _ = writeln!(out, "==NT-BEGIN {name}==");
        for l in body.lines() {
            let _ = writeln!(out, "{l}");
        }
        let _ = writeln!(out, "==NT-END {name}==");
    }
    let _ = out.flush();
}

/// `run --fail-on-leak` around a command that leaks: its exit status, its
/// JSON stream (the last line is the run report), then the module is let
/// go and unloaded.
fn run_leak(mode: &str, module: &str, tracer: &[String]) {
    let mut facts = json!({"scenario": "run-leak", "mode": mode});
    let mut cmd = Command::new(&tracer[0]);
    cmd.args(&tracer[1..])
        .args(["--json", "run", "--fail-on-leak", "--settle", "6s", "--"])
        .arg(self_exe())
        .args(["__run-leak-cmd", "--mode", mode, "--module", module]);
    let (lines, stderr) = match cmd.output() {
        Ok(out) => {
            facts["exit_code"] = json!(out.status.code());
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            // The command's own stdout goes to stderr under --json: the
            // namespace inode is the line that is a number.
            if let Some(inode) = stderr.lines().find_map(|l| l.trim().parse::<u64>().ok()) {
                facts["inodes"] = json!([inode]);
            }
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            (stdout, stderr)
        }
        Err(e) => {
            add_error(&mut facts, &format!("running the tracer: {e}"));
            (String::new(), String::new())
        }
    };
    if let Err(e) = std::fs::write("/sys/module/netns_leak/parameters/release_now", "1") {
        add_error(&mut facts, &format!("release_now: {e}"));
    }
    // The release is asynchronous (a work item); rmmod waits for it.
    unload_module(&mut facts);
    print_sections(&facts, &lines, &stderr);
}

/// The whole kernel log, read from /dev/kmsg without blocking: one record
/// per read(), "prio,seq,usec,flags;message", rendered as "[sec.usec] message".
fn read_kmsg() -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")?;
    let mut out = String::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                let Some((meta, msg)) = rec.split_once(';') else {
                    continue;
                };
                let usec: u64 = meta
                    .split(',')
                    .nth(2)
                    .and_then(|u| u.parse().ok())
                    .unwrap_or(0);
                // Continuation lines (" KEY=value") are dictionary data: skip.
                let msg = msg.lines().next().unwrap_or("");
                out += &format!("[{:5}.{:06}] {msg}\n", usec / 1_000_000, usec % 1_000_000);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // EPIPE: records were overwritten before we read them; go on.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn self_exe() -> std::path::PathBuf {
    std::env::current_exe().unwrap_or_else(|_| "/bin/nt-scenario".into())
}

/// Namespace inode of a child: the first line of its stdout.
fn read_inode(child: &mut Child) -> Result<u64, String> {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    line.trim()
        .parse()
        .map_err(|_| format!("bad inode line from child: {line:?}"))
}

/// Waits until the JSON lines in `path` (a tracer's --json-file, still
/// being written) satisfy `pred`. The file has no wakeup to block on, so
/// it is re-read every 20 ms until then or `timeout`.
fn wait_in_file(
    path: &std::path::Path,
    timeout: Duration,
    pred: impl Fn(&[Value]) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let parsed = parse_json_lines(text.lines());
        if pred(&parsed) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines that parse as JSON (a line still being written does not).
fn parse_json_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<Value> {
    lines.filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn has(v: &Value, ty: &str, netns: u64) -> bool {
    v["type"] == ty && v["netns"].as_u64() == Some(netns)
}

/// `{"type":"cleanup_net","phase":"end","netns":[...]}` naming `netns`.
fn cleanup_ended(v: &Value, netns: u64) -> bool {
    v["type"] == "cleanup_net"
        && v["phase"] == "end"
        && v["netns"]
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n.as_u64() == Some(netns)))
}

fn churn(t: &Tracer, facts: &mut Value, count: usize, timeout: Duration) {
    let mut inodes = Vec::new();
    for _ in 0..count {
        let spawned = Command::new(self_exe())
            .arg("__churn-child")
            .stdout(Stdio::piped())
            .spawn();
        let mut c = match spawned {
            Ok(c) => c,
            Err(e) => return add_error(facts, &format!("spawn churn child: {e}")),
        };
        match read_inode(&mut c) {
            Ok(i) => inodes.push(i),
            Err(e) => add_error(facts, &e),
        }
        let _ = c.wait();
    }
    facts["inodes"] = json!(inodes);
    // Inode numbers are recycled once a namespace is freed, so count: each
    // inode needs as many netns_destroy lines as times the children saw it.
    let all_destroyed = t.lines.wait_for(timeout, |lines| {
        inodes.iter().all(|&i| {
            let seen = inodes.iter().filter(|&&j| j == i).count();
            lines.iter().filter(|v| has(v, "netns_destroy", i)).count() >= seen
        })
    });
    if !all_destroyed {
        add_error(
            facts,
            &format!("timeout: not every netns_destroy seen after {timeout:?}"),
        );
    }
}

/// A namespace whose lo the module pins (or, tcpsock, does not), already
/// deleted when this returns: its inode, or None after recording why not.
/// `ready(inode)` is awaited between creating the namespace and the leak.
fn make_stuck(
    facts: &mut Value,
    mode: &str,
    hold_ms: u64,
    module: &str,
    ready: impl FnOnce(u64) -> bool,
) -> Option<u64> {
    // Make the kernel print its "waiting for lo" line every second.
    if let Err(e) = std::fs::write("/proc/sys/net/core/netdev_unregister_timeout_secs", "1") {
        add_error(facts, &format!("set netdev_unregister_timeout_secs: {e}"));
    }
    let spawned = Command::new(self_exe())
        .arg("__stuck-child")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let mut c = match spawned {
        Ok(c) => c,
        Err(e) => {
            add_error(facts, &format!("spawn stuck child: {e}"));
            return None;
        }
    };
    let inode = match read_inode(&mut c) {
        Ok(i) => i,
        Err(e) => {
            let _ = c.kill();
            add_error(facts, &e);
            return None;
        }
    };
    facts["inodes"] = json!([inode]);
    if !ready(inode) {
        add_error(facts, "the tracer never reported lo's watchpoints armed");
    }
    let insmod = Command::new("insmod")
        .arg(module)
        .arg(format!("pid={}", c.id()))
        .arg(format!("mode={mode}"))
        .arg(format!("hold_ms={hold_ms}"))
        .status();
    let loaded = matches!(insmod, Ok(s) if s.success());
    if !loaded {
        add_error(facts, &format!("insmod {module} failed: {insmod:?}"));
    }
    drop(c.stdin.take()); // EOF: the child exits and its namespace dies
    let _ = c.wait();
    loaded.then_some(inode)
}

/// Waits until the teardown of `inode` is over, then unloads the module.
fn await_teardown(
    t: &Tracer,
    facts: &mut Value,
    mode: &str,
    inode: u64,
    late: bool,
    timeout: Duration,
) {
    // The teardown is over once cleanup_net ends for our namespace: after
    // a dev_wait for it when the module pins lo, else (tcpsock, the
    // negative test: lo is not pinned) at once. Attached mid-teardown, the
    // cleanup_net call in flight has no exit probe: its lo's release ends it.
    let pinned = mode != "tcpsock";
    let done = t.lines.wait_for(timeout, |lines| {
        if late {
            return lines.iter().any(|v| has(v, "dev_released", inode));
        }
        let from = if pinned {
            match lines.iter().position(|v| has(v, "dev_wait", inode)) {
                Some(i) => i,
                None => return false,
            }
        } else {
            0
        };
        lines[from..].iter().any(|v| cleanup_ended(v, inode))
    });
    if !done {
        let what = if pinned {
            "no dev_wait then cleanup_net end"
        } else {
            "no cleanup_net end"
        };
        add_error(
            facts,
            &format!("timeout: {what} for netns {inode} after {timeout:?}"),
        );
    }
    unload_module(facts);
}

/// rmmod netns_leak (its exit releases whatever it still holds).
fn unload_module(facts: &mut Value) {
    let rmmod = Command::new("rmmod").arg("netns_leak").status();
    if !matches!(rmmod, Ok(s) if s.success()) {
        add_error(facts, &format!("rmmod netns_leak failed: {rmmod:?}"));
    }
}

/// Runs in a fresh process: new network namespace with lo up, print its inode.
/// Churn children also make one loopback TCP connection and exit; stuck
/// children block on stdin so the parent decides when the namespace dies.
fn child(churn: bool) {
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    if let Err(e) = lo_up() {
        eprintln!("lo up: {e}");
        std::process::exit(1);
    }
    if churn {
        if let Err(e) = tcp_roundtrip() {
            eprintln!("loopback tcp: {e}");
        }
    }
    let ino = std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0);
    println!("{ino}");
    let _ = std::io::stdout().flush();
    if !churn {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    }
}

fn lo_up() -> std::io::Result<()> {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if r != 0 {
            return Err(err);
        }
    }
    Ok(())
}

fn tcp_roundtrip() -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (mut server, _) = listener.accept()?;
    client.write_all(b"x")?;
    let mut b = [0u8; 1];
    server.read_exact(&mut b)?;
    Ok(())
}

const IMAGE: &str = "nt-busybox:latest";

/// `docker ARGS`: stdout trimmed, or an error with its stderr.
fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "docker {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Start dockerd and poll its API (through the CLI) until it answers.
fn start_dockerd(timeout: Duration) -> Result<Child, String> {
    let log = std::fs::File::create("/tmp/dockerd.log").map_err(|e| e.to_string())?;
    let mut child = Command::new("dockerd")
        .args([
            "--storage-driver=vfs",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--bridge=none",
            "--userland-proxy=false",
        ])
        // runc cannot pivot_root when / is the initramfs: use MS_MOVE.
        .env("DOCKER_RAMDISK", "true")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start dockerd: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if docker(&["version", "--format", "{{.Server.Version}}"]).is_ok() {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("dockerd exited ({status}):\n{}", dockerd_log()));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!(
                "dockerd not answering after {timeout:?}:\n{}",
                dockerd_log()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn dockerd_log() -> String {
    let text = std::fs::read_to_string("/tmp/dockerd.log").unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `docker run -d --network none --name NAME` and what the scenario
/// knows about it: {name, id, netns, before}.
fn run_container(name: &str, before: bool) -> Result<Value, String> {
    let id = docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        name,
        IMAGE,
        "/bin/sleep",
        "600",
    ])?;
    let pid = docker(&["inspect", "--format", "{{.State.Pid}}", name])?;
    let netns = std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .map_err(|e| format!("{name}: /proc/{pid}/ns/net: {e}"))?
        .ino();
    Ok(json!({"name": name, "id": id, "netns": netns, "before": before}))
}

fn docker_scenario(image: &str, common: Common) {
    let timeout = Duration::from_secs(common.timeout);
    let mut facts = json!({"scenario": "docker", "containers": []});
    let mut dockerd = match start_dockerd(timeout) {
        Ok(d) => Some(d),
        Err(e) => {
            add_error(&mut facts, &e);
            None
        }
    };
    let mut before = None;
    if dockerd.is_some() {
        facts["docker_version"] =
            json!(docker(&["version", "--format", "{{.Server.Version}}"]).unwrap_or_default());
        match docker(&["import", image, IMAGE]).and_then(|_| run_container("nt-before", true)) {
            Ok(c) => before = Some(c),
            Err(e) => add_error(&mut facts, &e),
        }
    }
    run(common, &mut facts, |t, facts, timeout| {
        let Some(first) = before else { return };
        let mut all = vec![first];
        for name in ["nt-web-1", "nt-web-2"] {
            match run_container(name, false) {
                Ok(c) => all.push(c),
                Err(e) => add_error(facts, &e),
            }
        }
        facts["containers"] = json!(all);
        let netns = |c: &Value| c["netns"].as_u64().unwrap_or(0);
        // Remove them once the tracer has reported the new namespaces.
        let created = t.lines.wait_for(timeout, |lines| {
            all.iter()
                .filter(|c| c["before"] == false)
                .all(|c| lines.iter().any(|v| has(v, "netns_create", netns(c))))
        });
        if !created {
            add_error(facts, "timeout: no netns_create for every new container");
        }
        // Newest first: without pivot_root (DOCKER_RAMDISK) a container's
        // mount namespace keeps copies of the netns bind mounts of the
        // containers started before it, which pin their namespaces.
        for c in all.iter().rev() {
            if let Err(e) = docker(&["rm", "-f", c["name"].as_str().unwrap_or("")]) {
                add_error(facts, &e);
            }
        }
        let destroyed = t.lines.wait_for(timeout, |lines| {
            all.iter()
                .all(|c| lines.iter().any(|v| has(v, "netns_destroy", netns(c))))
        });
        if !destroyed {
            add_error(facts, "timeout: no netns_destroy for every container");
        }
    });
    if let Some(d) = dockerd.as_mut() {
        unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
        let _ = d.wait();
    }
}
