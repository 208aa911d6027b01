//! `cargo xtask vm-test`: boot each test kernel under QEMU with an initramfs
//! holding the tracer, the scenario driver and the test module; parse the
//! guest's marker sections and assert on them (vm_assert).
use crate::setup::{self, cache_dir, repo_root, run_cmd, Kernel};
use crate::vm_assert;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct VmTestArgs {
    /// 6.1, 6.12, 6.12-reftrack (built here with CONFIG_NET_DEV_REFCNT_TRACKER)
    /// or all.
    #[arg(long, default_value = "all")]
    pub kernel: String,
    /// churn, hold (alias stuck), neigh, dst, tcpsock, late, docker, or all.
    #[arg(long, default_value = "all")]
    pub scenario: String,
    /// Keep the initramfs staging directories (for inspection).
    #[arg(long)]
    keep: bool,
    /// Use a do-nothing stand-in instead of the real tracer (tests the
    /// harness, the kernels and the module; assertions are expected to fail).
    #[arg(long)]
    stand_in: bool,
    /// Test this netns-trace binary instead of building the workspace's
    /// (e.g. one built from another commit while the tree is mid-edit).
    #[arg(long, value_name = "PATH")]
    pub tracer: Option<PathBuf>,
    /// Seconds nt-scenario waits for the tracer's events.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// demo only: what the test module holds (hold, neigh, dst, tcpsock).
    /// vm-test takes it from the scenario name.
    #[arg(long, default_value = "neigh")]
    mode: String,
    /// How long the module keeps it after lo starts unregistering.
    #[arg(long, default_value_t = 3000)]
    hold_ms: u64,
    /// demo only: run the tracer with --exact (hardware watchpoints).
    #[arg(long)]
    exact: bool,
    /// demo only: start the tracer after lo is already stuck (the
    /// incident view an SRE gets on attaching).
    #[arg(long, conflicts_with = "exact")]
    pub incident: bool,
    /// bench only: the `nt-scenario bench` options (set by `xtask bench`).
    #[arg(skip)]
    pub bench: Option<String>,
    /// More binaries for /bin, with their shared libraries (bench: bpftrace).
    #[arg(skip)]
    pub extra_bins: Vec<PathBuf>,
}

impl VmTestArgs {
    /// Every kernel and scenario with the defaults: what `xtask test` runs.
    pub fn all() -> Self {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: VmTestArgs,
        }
        Wrap::parse_from(["vm-test"]).args
    }
}

/// Every vm-test scenario, in run order: churn, then one boot per module
/// mode (the mode is the scenario name; see testmod/netns_leak.c).
const SCENARIOS: &[&str] = &[
    "churn",
    "hold",
    "neigh",
    "dst",
    "tcpsock",
    "late",
    "kprobes",
    "exact",
    "exact-neigh",
    "exact-churn",
    "exact-fallback",
    "exact-two",
    "docker",
    "run-leak",
];

/// Guest memory: the docker scenario's initramfs holds ~190 MB of Docker
/// binaries (in RAM), plus dockerd and containerd themselves.
fn guest_mb(scenario: &str) -> u32 {
    if scenario == "docker" {
        2048
    } else {
        1024
    }
}

const STALL: Duration = Duration::from_secs(120);
const TOTAL: Duration = Duration::from_secs(300);
const STAND_IN: &str = "#!/bin/sh\n# Stand-in tracer: ready at once, no events.\ntouch /tmp/ready\nexec sleep 100000\n";

pub fn run(args: VmTestArgs) -> Result<()> {
    let shorts: Vec<&str> = match args.kernel.as_str() {
        "all" => setup::vm_kernels(),
        k => vec![k],
    };
    let scenarios: Vec<&str> = match args.scenario.as_str() {
        "all" => SCENARIOS.to_vec(),
        "stuck" => vec!["hold"],
        s => match SCENARIOS.iter().find(|&&k| k == s) {
            Some(k) => vec![*k],
            None => bail!(
                "unknown scenario {s} ({}, stuck = hold, all)",
                SCENARIOS.join(", ")
            ),
        },
    };
    let kernels = shorts
        .iter()
        .map(|s| setup::ensure_kernel(s))
        .collect::<Result<Vec<_>>>()?;
    build_guest_binaries(!args.stand_in && args.tracer.is_none())?;
    let docker = match scenarios.contains(&"docker") {
        true => Some(setup::ensure_docker()?),
        false => None,
    };
    let (mut passed, mut failed) = (0, 0);
    for k in &kernels {
        // The built kernel runs only the scenarios its config is for,
        // unless one is asked for by name.
        let scenarios: Vec<&str> = scenarios
            .iter()
            .copied()
            .filter(|s| {
                k.short != crate::reftrack::SHORT
                    || args.scenario != "all"
                    || crate::reftrack::SCENARIOS.contains(s)
            })
            .collect();
        let _lock = lock_kernel(k)?;
        let module = build_module(k)?;
        let plain = scenarios.iter().any(|s| *s != "docker");
        let cpio = match plain {
            true => Some(build_initramfs(k, &module, &args, None)?),
            false => None,
        };
        // Its own initramfs, so the other scenarios do not carry Docker.
        let docker_cpio = match &docker {
            Some(root) if scenarios.contains(&"docker") => {
                Some(build_initramfs(k, &module, &args, Some(root))?)
            }
            _ => None,
        };
        // What counts `exact` references on this kernel.
        let source = match k.short == crate::reftrack::SHORT {
            true => "ref_tracker",
            false => "watchpoints",
        };
        for sc in &scenarios {
            let cpio = match *sc {
                "docker" => docker_cpio.as_ref(),
                _ => cpio.as_ref(),
            }
            .expect("built for the scenarios asked");
            let outcome = boot_retrying_early_panic(k, cpio, sc).and_then(|serial| {
                let sections = vm_assert::parse_sections(&serial);
                let run = vm_assert::Run::from_sections(&sections).map_err(anyhow::Error::msg)?;
                Ok(match *sc {
                    "churn" => vm_assert::check_churn(&run),
                    "hold" => vm_assert::check_pinned(&run, vm_assert::Holder::Bare),
                    "neigh" if source == "ref_tracker" => {
                        vm_assert::check_pinned(&run, vm_assert::Holder::Neighbour)
                            .and_then(|a| Ok(format!("{a}; {}", vm_assert::check_tracker(&run)?)))
                    }
                    "neigh" => vm_assert::check_pinned(&run, vm_assert::Holder::Neighbour),
                    "dst" => vm_assert::check_pinned(&run, vm_assert::Holder::Dst),
                    "late" => vm_assert::check_late(&run),
                    "kprobes" => vm_assert::check_kprobes(&run),
                    "exact" => vm_assert::check_exact(&run, "hold", source),
                    "exact-neigh" => vm_assert::check_exact(&run, "neigh", source),
                    // The tracer's watchpoint budget (netns-trace/src/watch.rs).
                    "exact-churn" => vm_assert::check_exact_churn(&run, 2),
                    "exact-fallback" => vm_assert::check_exact_fallback(&run),
                    "exact-two" => vm_assert::check_exact_two(&run),
                    "docker" => vm_assert::check_docker(&run),
                    "run-leak" => vm_assert::check_run_leak(&run),
                    _ => vm_assert::check_tcpsock(&run),
                })
            });
            match outcome {
                Ok(Ok(why)) => {
                    passed += 1;
                    println!("PASS {} {sc}: {why}", k.short);
                }
                Ok(Err(why)) => {
                    failed += 1;
                    println!("FAIL {} {sc}: {why}", k.short);
                }
                Err(e) => {
                    failed += 1;
                    println!("FAIL {} {sc}: {e:#}", k.short);
                }
            }
        }
    }
    println!("vm-test: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Release builds of what goes into the initramfs: the scenario driver,
/// and the tracer unless a prebuilt one (or the stand-in) is used.
pub fn build_guest_binaries(tracer: bool) -> Result<()> {
    let root = repo_root();
    if tracer {
        run_cmd(
            Command::new("cargo")
                .args(["build", "--release", "-p", "netns-trace"])
                .current_dir(&root),
        )?;
    }
    run_cmd(
        Command::new("cargo")
            .args(["build", "--release", "-p", "xtask", "--bin", "nt-scenario"])
            .current_dir(&root),
    )
}

/// `cargo xtask demo`: boot a stock Debian kernel, pin lo of a dying
/// namespace with the test module, and show the tracer's human output.
pub fn demo(args: VmTestArgs) -> Result<()> {
    let k = setup::ensure_kernel(&args.kernel)?;
    build_guest_binaries(true)?;
    let _lock = lock_kernel(&k)?;
    let module = build_module(&k)?;
    let cpio = build_initramfs(&k, &module, &args, None)?;
    println!(
        "demo: Debian {} under QEMU; the test module holds lo of a namespace for {} ms after it is deleted",
        k.abi, args.hold_ms
    );
    let serial = boot_retrying_early_panic(&k, &cpio, &args.scenario)?;
    let serial = serial.replace('\r', "");
    let marker = format!("nt-init: scenario {}", args.scenario);
    let start = serial.find(&marker).unwrap_or(0);
    for line in serial[start..].lines() {
        if line.starts_with("nt-init: demo done") {
            break;
        }
        println!("{line}");
    }
    Ok(())
}

/// Boots; if the kernel panicked before /init ran, boots again (at most
/// twice more: a run has ten boots). Under TCG the 6.12 guest occasionally
/// dies in early boot (an int3 Oops in run_timer_softirq while the kernel
/// patches its own text), before any of our code runs; that is the
/// emulator, not a test result.
fn boot_retrying_early_panic(k: &Kernel, cpio: &Path, scenario: &str) -> Result<String> {
    let mut attempt = 1;
    loop {
        match boot(k, cpio, scenario) {
            Err(e)
                if attempt < 3
                    && e.to_string().contains("kernel panic")
                    && !reached_init(k, scenario) =>
            {
                println!(
                    "vm-test: {} panicked during boot, before /init ran (a TCG flake); booting again",
                    k.abi
                );
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn reached_init(k: &Kernel, scenario: &str) -> bool {
    let log = cache_dir()
        .join("vm-logs")
        .join(format!("{}-{scenario}.log", k.abi));
    std::fs::read_to_string(log).is_ok_and(|text| text.contains("nt-init: scenario"))
}

/// Build testmod/ against this kernel's headers, in a copy under .cache
/// (kbuild writes its objects next to the sources).
pub fn build_module(k: &Kernel) -> Result<PathBuf> {
    let dir = cache_dir().join("build").join(&k.abi).join("testmod");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for f in ["netns_leak.c", "Kbuild"] {
        std::fs::copy(repo_root().join("testmod").join(f), dir.join(f))?;
    }
    println!("vm-test: building netns_leak.ko for {}", k.abi);
    run_cmd(
        Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(&k.headers)
            .arg(format!("M={}", dir.display())),
    )?;
    Ok(dir.join("netns_leak.ko"))
}

fn init_script(a: &VmTestArgs) -> String {
    let (timeout, mode, hold_ms) = (a.timeout, &a.mode, a.hold_ms);
    let bench = a.bench.as_deref().unwrap_or("");
    // NT_GUEST_LOG=info (or debug) on the host: the tracer's log in the
    // guest (its stderr lands in the tracer-stderr section), for digging.
    let guest_log = std::env::var("NT_GUEST_LOG")
        .ok()
        .filter(|v| {
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "=_:,".contains(c))
        })
        .map(|v| format!("export NETNS_TRACE_LOG={v}\n"))
        .unwrap_or_default();
    // demo --exact: only the human tracer watches (under TCG a second
    // watchpoint on the same address would not fire); the leak waits for
    // its `watch` record, read from its --json-file.
    let (exact, await_watch) = if a.exact {
        (
            " --exact --json-file /tmp/human.json",
            " --await-watch-in /tmp/human.json",
        )
    } else {
        ("", "")
    };
    format!(
        r#"#!/bin/busybox sh
# PID 1 of the test VM: mount what the tracer needs, run the scenario named
# by nt.scenario= on the kernel command line, power off.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
scenario=
for w in $(cat /proc/cmdline); do
  case "$w" in nt.scenario=*) scenario="${{w#nt.scenario=}}" ;; esac
done
echo "nt-init: scenario $scenario on $(uname -r)"
{guest_log}tracer="/bin/netns-trace --json --ready-file /tmp/ready"
[ -x /bin/netns-trace ] || tracer=/bin/stand-in-tracer
case "$scenario" in
  churn) /bin/nt-scenario churn --count 50 --timeout {timeout} -- $tracer ;;
  hold|neigh|dst|tcpsock) /bin/nt-scenario stuck --mode "$scenario" --hold-ms {hold_ms} --module /lib/netns_leak.ko --timeout {timeout} -- $tracer ;;
  kprobes) /bin/nt-scenario stuck --mode hold --hold-ms {hold_ms} --module /lib/netns_leak.ko --timeout {timeout} -- $tracer --no-fentry ;;
  exact) /bin/nt-scenario stuck --await-watch --mode hold --hold-ms {hold_ms} --module /lib/netns_leak.ko --timeout {timeout} -- $tracer --exact ;;
  exact-churn) /bin/nt-scenario churn --count 50 --timeout {timeout} -- $tracer --exact ;;
  exact-fallback) /bin/nt-scenario stuck --await-watch --mode hold --hold-ms {hold_ms} --module /lib/netns_leak.ko --timeout {timeout} -- $tracer --exact --watch-via-perf-ring ;;
  exact-two)
    # A second --exact tracer on the same kernel: both watch lo's counters.
    # A count may go wrong (under TCG one of two watchpoints on an address
    # fires), but must then say so.
    /bin/netns-trace --json --exact --ready-file /tmp/ready2 > /tmp/second.json 2>/dev/null &
    second=$!
    while [ ! -e /tmp/ready2 ]; do sleep 0.1; done
    /bin/nt-scenario stuck --await-watch --mode hold --hold-ms {hold_ms} --module /lib/netns_leak.ko --timeout {timeout} -- $tracer --exact
    kill -INT $second; wait $second
    echo "==NT-BEGIN second-json=="; cat /tmp/second.json; echo "==NT-END second-json==" ;;
  exact-neigh) /bin/nt-scenario stuck --await-watch --mode neigh --hold-ms {hold_ms} --module /lib/netns_leak.ko --timeout {timeout} -- $tracer --exact ;;
  bench) /bin/nt-scenario bench {bench} --timeout {timeout} -- $tracer ;;
  late) /bin/nt-scenario stuck --attach-late --mode neigh --hold-ms 60000 --module /lib/netns_leak.ko --timeout {timeout} -- $tracer ;;
  demo-incident)
    # The SRE's case: lo is already stuck when the tracer starts. The
    # driver makes the leak and starts its JSON tracer once the kernel
    # complains; the human tracer starts on the same kernel message.
    /bin/nt-scenario stuck --attach-late --timer-release --mode {mode} --hold-ms 15000 --module /lib/netns_leak.ko --timeout {timeout} -- $tracer --no-watchpoints > /tmp/sections &
    driver=$!
    until dmesg | grep -q 'waiting for .* to become free'; do sleep 0.2; done
    /bin/netns-trace --color never --ready-file /tmp/ready-human 2>&1 &
    human=$!
    wait $driver
    kill -INT $human; wait $human
    echo "nt-init: demo done" ;;
  run-leak) /bin/nt-scenario run-leak --mode hold --module /lib/netns_leak.ko -- /bin/netns-trace ;;
  docker)
    # dockerd's state on tmpfs (runc cannot pivot_root out of the initramfs:
    # nt-scenario runs dockerd with DOCKER_RAMDISK=true).
    mount -t tmpfs tmpfs /run
    mount -t tmpfs tmpfs /var/lib/docker
    /bin/nt-scenario docker --image /root/nt-busybox.tar --timeout {timeout} -- $tracer --pid-of-dockerd ;;
  demo)
    # What an SRE sees: the human stream, live on the console, while the
    # module pins lo of a dying namespace (the JSON run drives the scenario,
    # without watchpoints: the human tracer's are the only ones).
    /bin/netns-trace --color never --ready-file /tmp/ready-human{exact} 2>&1 &
    human=$!
    while [ ! -e /tmp/ready-human ]; do sleep 0.1; done
    /bin/nt-scenario stuck{await_watch} --mode {mode} --hold-ms {hold_ms} --module /lib/netns_leak.ko --timeout {timeout} -- $tracer --no-watchpoints > /tmp/sections
    kill -INT $human; wait $human
    echo "nt-init: demo done" ;;
  doctor)
    /bin/netns-trace doctor
    echo "nt-init: kallsyms of the hooks and holders:"
    grep -wE 'copy_net_ns|cleanup_net|__put_net|rtnl_unlock|netdev_run_todo|net_todo_list|netdev_refcnt_read|netdev_wait_allrefs_any|dst_alloc|dst_init|dst_destroy|dst_destroy_rcu|dst_dev_put|dst_release|__neigh_create|___neigh_create|neigh_destroy|in_dev_finish_destroy|ref_tracker_alloc|ref_tracker_free|rt_flush_dev|rt6_disable_ip|linkwatch_sync_dev|linkwatch_forget_dev|sk_free|__sk_free|init_net' /proc/kallsyms
    echo "nt-init: demo done" ;;
  *) echo "nt-init: unknown scenario '$scenario'" ;;
esac
echo "nt-init: scenario exit $?"
poweroff -f
"#
    )
}

/// Newc initramfs: busybox, init, the two binaries with their shared
/// libraries (ldd), and the module. With `docker` (the unpacked Debian
/// packages): also dockerd, containerd, its shim, runc and the docker CLI,
/// and a busybox root filesystem tarball for `docker import`.
/// Runs on one kernel share its build directory (the test module, the
/// initramfs, rebuilt by every run): a second xtask run on the same kernel
/// waits for the first instead of replacing them under its VMs (a bench
/// could then boot the other run's tracer). Held until the file is dropped.
pub fn lock_kernel(k: &Kernel) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    let dir = cache_dir().join("build").join(&k.abi);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let fd = file.as_raw_fd();
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!(
            "vm: another xtask run is using {}; waiting for it to finish",
            dir.display()
        );
        // SAFETY: as above.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
            bail!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(file)
}

pub fn build_initramfs(
    k: &Kernel,
    module: &Path,
    args: &VmTestArgs,
    docker: Option<&Path>,
) -> Result<PathBuf> {
    let base = cache_dir().join("build").join(&k.abi);
    let name = if docker.is_some() {
        "initramfs-docker"
    } else {
        "initramfs"
    };
    let stage = base.join(name);
    let _ = std::fs::remove_dir_all(&stage);
    for d in [
        "bin", "sbin", "lib", "proc", "sys", "dev", "tmp", "etc", "root",
    ] {
        std::fs::create_dir_all(stage.join(d))?;
    }
    let target = repo_root().join("target/release");
    copy(Path::new("/bin/busybox"), &stage.join("bin/busybox"))?;
    // (source, name in /bin)
    let mut bins = vec![(target.join("nt-scenario"), "nt-scenario")];
    if let Some(root) = docker {
        for b in setup::DOCKER_BINARIES {
            let name = Path::new(b).file_name().unwrap().to_str().unwrap();
            bins.push((root.join(b), name));
        }
        std::fs::create_dir_all(stage.join("var/lib/docker"))?;
        std::fs::create_dir_all(stage.join("run"))?;
        busybox_rootfs_tar(&base, &stage.join("root/nt-busybox.tar"))?;
    }
    if args.stand_in {
        std::fs::write(stage.join("bin/stand-in-tracer"), STAND_IN)?;
        chmod_x(&stage.join("bin/stand-in-tracer"))?;
    } else {
        let tracer = args.tracer.clone();
        bins.push((
            tracer.unwrap_or_else(|| target.join("netns-trace")),
            "netns-trace",
        ));
    }
    for b in &args.extra_bins {
        let name = b.file_name().and_then(|n| n.to_str()).unwrap_or("extra");
        bins.push((b.clone(), name));
    }
    for (b, name) in &bins {
        copy(b, &stage.join("bin").join(name))?;
        for lib in shared_libs(b)? {
            copy(&lib, &stage.join(lib.strip_prefix("/").unwrap()))?;
        }
    }
    copy(module, &stage.join("lib/netns_leak.ko"))?;
    std::fs::write(stage.join("init"), init_script(args))?;
    chmod_x(&stage.join("init"))?;
    let cpio = base.join(format!("{name}.cpio"));
    run_cmd(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "find . -print0 | cpio --null --quiet -o -H newc -R 0:0 > '{}'",
                cpio.display()
            ))
            .current_dir(&stage),
    )?;
    if !args.keep {
        std::fs::remove_dir_all(&stage)?;
    }
    Ok(cpio)
}

/// A root filesystem of busybox alone (`/bin/busybox` and `/bin/sh`,
/// `/bin/sleep` links), as a tarball for `docker import`.
fn busybox_rootfs_tar(base: &Path, out: &Path) -> Result<()> {
    let root = base.join("busybox-rootfs");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("bin"))?;
    copy(Path::new("/bin/busybox"), &root.join("bin/busybox"))?;
    for applet in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    run_cmd(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(out)
            .arg("."),
    )?;
    std::fs::remove_dir_all(&root)?;
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to.parent().unwrap())?;
    std::fs::copy(from, to)
        .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn chmod_x(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Absolute paths `ldd` lists (libraries and the dynamic loader).
fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(parse_ldd(&text))
}

fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=> ").map_or(l, |(_, r)| r);
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Guest size and the harness's patience.
pub struct BootOpts {
    pub mem_mb: u32,
    pub smp: u32,
    /// Kill QEMU after this long in all...
    pub total: Duration,
    /// ...or after this long without output.
    pub stall: Duration,
    /// QEMU's `-icount` value: the guest clock counts executed instructions
    /// instead of following the host's (None: the host's clock).
    pub icount: Option<String>,
}

impl Default for BootOpts {
    fn default() -> Self {
        BootOpts {
            mem_mb: 1024,
            smp: 2,
            total: TOTAL,
            stall: STALL,
            icount: None,
        }
    }
}

/// Boot one scenario; return the serial output (also in .cache/vm-logs/).
fn boot(k: &Kernel, cpio: &Path, scenario: &str) -> Result<String> {
    let opts = BootOpts {
        mem_mb: guest_mb(scenario),
        ..BootOpts::default()
    };
    boot_with(k, cpio, scenario, &opts)
}

pub fn boot_with(k: &Kernel, cpio: &Path, scenario: &str, o: &BootOpts) -> Result<String> {
    let logs = cache_dir().join("vm-logs");
    std::fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{}-{scenario}.log", k.abi));
    let mut log = std::fs::File::create(&log_path)?;
    println!(
        "vm-test: booting {} ({scenario}), serial log {}",
        k.abi,
        log_path.display()
    );
    let mut qemu = Command::new("qemu-system-x86_64");
    if let Some(icount) = &o.icount {
        qemu.args(["-icount", icount]);
    }
    let mut child = qemu
        .args(["-accel", "tcg", "-cpu", "max"])
        .args(["-m", &o.mem_mb.to_string(), "-smp", &o.smp.to_string()])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&k.vmlinuz)
        .arg("-initrd")
        .arg(cpio)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 quiet nt.scenario={scenario}"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start qemu-system-x86_64 (run cargo xtask setup)")?;
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut serial = Vec::new();
    let mut killed = None;
    loop {
        match rx.recv_timeout(o.stall.min(o.total.saturating_sub(start.elapsed()))) {
            Ok(chunk) => {
                log.write_all(&chunk)?;
                serial.extend_from_slice(&chunk);
                let tail = &serial[serial.len().saturating_sub(chunk.len() + 64)..];
                if String::from_utf8_lossy(tail).contains("Kernel panic") {
                    killed = Some("kernel panic");
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                killed = Some(if start.elapsed() >= o.total {
                    "total time over its limit"
                } else {
                    "no output for too long"
                });
            }
        }
        if killed.is_none() && start.elapsed() >= o.total {
            killed = Some("total time over its limit");
        }
        if let Some(why) = killed {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            bail!("QEMU killed: {why} (log {})", log_path.display());
        }
    }
    let status = child.wait()?;
    let _ = reader.join();
    println!(
        "vm-test: {} ({scenario}) finished in {:.1} s, qemu {status}",
        k.abi,
        start.elapsed().as_secs_f64()
    );
    Ok(String::from_utf8_lossy(&serial).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n";
        assert_eq!(
            parse_ldd(text),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }
}
