//! Host tests: root on the build machine's own kernel. They check what this
//! kernel really offers (probed, not assumed) and that the tracer degrades
//! with a clear message instead of failing or printing nothing.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_netns-trace");

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn kprobe_pmu() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

/// Starts the tracer with `args` plus a ready file, and returns once it
/// has written it (every hook attached): the test's traffic starts on that
/// signal, not after a sleep.
fn start_tracer(name: &str, args: &[&str]) -> std::process::Child {
    let ready = std::env::temp_dir().join(format!("nt-host-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let child = Command::new(BIN)
        .args(args)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "tracer never became ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// Makes a network namespace (`unshare -n`) and returns its inode.
fn new_netns_inode() -> u64 {
    let out = Command::new("unshare")
        .args(["-n", "stat", "-L", "-c", "%i", "/proc/self/ns/net"])
        .output()
        .unwrap();
    assert!(out.status.success(), "unshare -n failed");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

#[test]
fn not_root_is_one_clear_sentence() {
    if !is_root() {
        let out = Command::new(BIN).arg("doctor").output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("root"), "{err}");
        return;
    }
    // As root, drop privileges for the child: run it as nobody.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "--duration",
            "1",
        ])
        .output();
    let Ok(out) = out else {
        eprintln!("skipped: setpriv not available");
        return;
    };
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
}

#[test]
fn doctor_reports_what_this_kernel_offers() {
    if !is_root() {
        eprintln!("skipped: host tests need root");
        return;
    }
    let out = Command::new(BIN)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let lines = json_lines(&out.stdout);
    let doc = lines
        .iter()
        .find(|v| v["type"] == "doctor")
        .expect("doctor record");
    assert_eq!(doc["kernel"]["kprobe"], Value::Bool(kprobe_pmu()));
    assert!(doc["hooks"].as_array().is_some_and(|h| !h.is_empty()));
    if !kprobe_pmu() {
        // Without kprobes (and with fentry refused) the full tracer cannot
        // run: doctor must say why and exit non-zero.
        assert!(!out.status.success(), "doctor exit 0 without kprobes");
        assert_eq!(doc["full_tracer"], Value::Bool(false));
        let reasons = doc["reasons"].as_array().unwrap();
        assert!(!reasons.is_empty());
        let human = Command::new(BIN).arg("doctor").output().unwrap();
        let text = String::from_utf8_lossy(&human.stdout);
        assert!(text.contains("kprobe"), "{text}");
    }
}

#[test]
fn degraded_tracer_runs_and_sees_unshare() {
    if !is_root() {
        eprintln!("skipped: host tests need root");
        return;
    }
    let child = start_tracer("deg", &["--json", "--duration", "3"]);
    // A namespace created now must be reported, at least at syscall level.
    let inode = new_netns_inode();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tracer failed: {stderr}");
    let lines = json_lines(&out.stdout);
    let attach = lines
        .iter()
        .find(|v| v["type"] == "attach")
        .expect("attach record");
    if !kprobe_pmu() {
        assert_eq!(attach["degraded"], Value::Bool(true), "{attach}");
        assert!(stderr.contains("degraded"), "says it is degraded: {stderr}");
    }
    assert!(
        lines
            .iter()
            .any(|v| v["type"] == "netns_create" && v["netns"].as_u64() == Some(inode)),
        "no netns_create for {inode}: {lines:?}"
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert!(summary["netns_created"].as_u64().unwrap() >= 1);
}

/// `--json-file`: the human view on stdout, every record in the file as
/// JSON lines (the SRE's copy of the incident); a path that cannot be
/// created is one clear error before anything is attached.
#[test]
fn json_file_keeps_every_record_beside_the_human_view() {
    if !is_root() {
        eprintln!("skipped: host tests need root");
        return;
    }
    let dir = std::env::temp_dir();
    let file = dir.join(format!("nt-host-jsonfile-{}.json", std::process::id()));
    let bad = dir.join("nt-no-such-dir").join("x.json");
    let out = Command::new(BIN)
        .args(["--duration", "1", "--json-file"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "bad --json-file accepted: {err}");
    assert!(
        err.contains("--json-file") && err.contains("No such file"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing traced: {:?}", out.stdout);

    let arg = file.to_str().unwrap();
    let child = start_tracer("jsonfile", &["--duration", "3", "--json-file", arg]);
    let inode = new_netns_inode();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.contains("netns_create") && !human.starts_with('{'),
        "{human}"
    );
    let lines = json_lines(&std::fs::read(&file).unwrap());
    let _ = std::fs::remove_file(&file);
    assert_eq!(lines[0]["type"], "attach", "{:?}", lines[0]);
    assert!(
        lines
            .iter()
            .any(|v| v["type"] == "netns_create" && v["netns"].as_u64() == Some(inode)),
        "no netns_create for {inode} in the file: {lines:?}"
    );
    assert_eq!(lines.last().unwrap()["type"], "summary");
}

/// `--pid` follows the given process's descendants in the kernel (fork
/// tracepoint): a namespace made by a child of it is reported, one made by
/// an unrelated process is not.
#[test]
fn pid_filter_follows_descendants_only() {
    if !is_root() {
        eprintln!("skipped: host tests need root");
        return;
    }
    use std::io::{BufRead as _, BufReader, Write as _};
    // A shell that waits for a line on stdin before making its namespace,
    // so it exists (and is in scope) before the tracer attaches.
    let mut shell = Command::new("sh")
        .args(["-c", "read go; unshare -n stat -L -c %i /proc/self/ns/net"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = shell.id().to_string();
    let tracer = start_tracer("pid", &["--json", "--duration", "4", "--pid", &pid]);
    // Outside the scope: must not be reported.
    let outside = new_netns_inode();
    // Inside: a grandchild of the --pid process.
    shell.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut line = String::new();
    BufReader::new(shell.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let inside: u64 = line.trim().parse().unwrap();
    shell.wait().unwrap();
    let out = tracer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out.stdout);
    let created: Vec<u64> = lines
        .iter()
        .filter(|v| v["type"] == "netns_create")
        .filter_map(|v| v["netns"].as_u64())
        .collect();
    assert!(
        created.contains(&inside),
        "in-scope {inside} missing: {created:?}"
    );
    assert!(
        !created.contains(&outside),
        "out-of-scope {outside} reported: {created:?}"
    );
}

/// `run`: the namespace the command creates is reported, seen torn down
/// (inferred in degraded mode, observed with the full tracer), and the
/// report document says so; the command succeeded, so the status is 0.
#[test]
fn run_reports_the_namespace_of_the_command() {
    if !is_root() {
        eprintln!("skipped: host tests need root");
        return;
    }
    let report = std::env::temp_dir().join(format!("nt-host-run-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&report);
    let out = Command::new(BIN)
        .args([
            "--json",
            "run",
            "--fail-on-leak",
            "--settle",
            "20s",
            "--json-report",
        ])
        .arg(&report)
        .args([
            "--",
            "unshare",
            "-n",
            "stat",
            "-L",
            "-c",
            "%i",
            "/proc/self/ns/net",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    // Under --json the command's stdout goes to stderr: stdout stays JSON.
    let lines = json_lines(&out.stdout);
    let inode: u64 = stderr
        .lines()
        .find_map(|l| l.trim().parse().ok())
        .expect("the command's output (its namespace inode) on stderr");
    assert!(
        lines
            .iter()
            .any(|v| v["type"] == "netns_create" && v["netns"].as_u64() == Some(inode)),
        "no netns_create for {inode}: {lines:?}"
    );
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "run_report", "{last}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        &doc, last,
        "the file and the stream carry the same document"
    );
    assert_eq!(doc["command"]["exit_code"], 0);
    assert_eq!(doc["settled"], true);
    let ns = doc["namespaces"].as_array().unwrap();
    assert_eq!(ns.len(), 1, "{doc}");
    assert_eq!(ns[0]["netns"].as_u64(), Some(inode));
    let expected = if kprobe_pmu() { "observed" } else { "inferred" };
    assert_eq!(ns[0]["teardown"], expected, "{doc}");
    let events: Vec<&str> = ns[0]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"created"));
    assert_eq!(events.last(), Some(&"cleanup_end"));
    assert_eq!(doc["verdict"]["exit_code"], 0);
    assert!(doc["kernel"]["release"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    std::fs::remove_file(&report).unwrap();
}

/// `run`: a failing command gives status 4 (its own status is in the
/// report), distinct from a tracer error (1) and from success.
#[test]
fn run_passes_a_command_failure_through() {
    if !is_root() {
        eprintln!("skipped: host tests need root");
        return;
    }
    let out = Command::new(BIN)
        .args(["--json", "run", "--", "sh", "-c", "unshare -n true; exit 3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "stderr: {stderr}");
    let lines = json_lines(&out.stdout);
    let doc = lines.last().unwrap();
    assert_eq!(doc["type"], "run_report");
    assert_eq!(doc["command"]["exit_code"], 3);
    assert_eq!(doc["verdict"]["command_failed"], true);
    assert_eq!(doc["verdict"]["exit_code"], 4);
    assert_eq!(doc["namespaces"].as_array().unwrap().len(), 1, "{doc}");
    // A command that cannot be started is the tracer's error: one sentence.
    let out = Command::new(BIN)
        .args(["run", "--", "/nonexistent/cmd"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("netns-trace: cannot run /nonexistent/cmd")),
        "{err}"
    );
}

/// `THP_enabled` of /proc/PID/status (1: transparent huge pages allowed).
fn thp_enabled(status: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_string())
}

/// The loader runs without transparent huge pages (main.rs says why); a
/// command under `run` gets what the tracer was started with.
#[test]
fn huge_pages_are_off_for_the_loader_only() {
    if !is_root() {
        eprintln!("skipped: host tests need root");
        return;
    }
    let ours = thp_enabled(&std::fs::read_to_string("/proc/self/status").unwrap());
    let Some(ours) = ours else {
        eprintln!("skipped: no THP_enabled in /proc/self/status");
        return;
    };
    let mut t = start_tracer("thp", &["--json"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", t.id())).unwrap();
    let _ = t.kill();
    let _ = t.wait();
    assert_eq!(thp_enabled(&status).as_deref(), Some("0"));
    let out = Command::new(BIN)
        .args([
            "--json",
            "run",
            "--",
            "grep",
            "THP_enabled",
            "/proc/self/status",
        ])
        .output()
        .unwrap();
    // Under --json the command's stdout goes to stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(thp_enabled(&err), Some(ours), "{err}");
}

/// One HTTP GET over a real TCP connection; returns (status line, body).
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

/// `--metrics-addr`: scraped over HTTP, the counters follow what the
/// tracer sees (a namespace created after the first scrape).
#[test]
fn metrics_are_scraped_over_http() {
    if !is_root() {
        eprintln!("skipped: host tests need root");
        return;
    }
    let ready = std::env::temp_dir().join(format!("nt-host-metrics-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let mut child = Command::new(BIN)
        .args([
            "--json",
            "--duration",
            "20",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "tracer never became ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The ready file names the bound address (port 0 picked a free one).
    let text = std::fs::read_to_string(&ready).unwrap();
    let addr = text
        .lines()
        .find_map(|l| l.strip_prefix("metrics http://"))
        .and_then(|u| u.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in the ready file: {text:?}"))
        .to_string();
    let (status, body) = http_get(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let before = metric(&body, "netns_trace_netns_created_total").expect(&body);
    assert!(
        metric(&body, "netns_trace_hooks_attached").unwrap() >= 1.0,
        "{body}"
    );
    assert_eq!(
        metric(&body, "netns_trace_degraded"),
        Some(if kprobe_pmu() { 0.0 } else { 1.0 })
    );
    assert!(body.contains("# TYPE netns_trace_netns_teardown_duration_seconds histogram"));
    assert!(body.contains("netns_trace_ringbuf_drops_total"));
    assert!(body.ends_with("# EOF\n"));
    let made = Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .unwrap();
    assert!(made.success());
    // The event arrives asynchronously: scrape until it is counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http_get(&addr, "/metrics");
        let now = metric(&body, "netns_trace_netns_created_total").unwrap();
        if now >= before + 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "creation never counted: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _) = http_get(&addr, "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success());
    // A port that is taken: one sentence, exit 1.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["--duration", "1", "--metrics-addr", &port])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("--metrics-addr {port}: cannot listen")),
        "{err}"
    );
}

/// `--pid-of-dockerd` without exactly one dockerd: one sentence, exit 1
/// (no root needed: it is checked before anything is loaded).
#[test]
fn pid_of_dockerd_needs_exactly_one_dockerd() {
    let root = std::env::temp_dir().join(format!("nt-host-dockerd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let add = |pid: u32, comm: &str| {
        let d = root.join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("stat"),
            format!("{pid} ({comm}) S 1 {pid} {pid} 0\n"),
        )
        .unwrap();
    };
    add(1, "init");
    let run = || {
        Command::new(BIN)
            .args(["--pid-of-dockerd", "--duration", "1", "--proc-root"])
            .arg(&root)
            .output()
            .unwrap()
    };
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!(
            "netns-trace: --pid-of-dockerd: no dockerd process under {} (is Docker running? --pid PID takes any process)",
            root.display()
        )
    );
    add(40, "dockerd");
    add(41, "dockerd");
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.trim()
            .ends_with("(pids 40, 41): choose one with --pid PID"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}
