//! Loading the eBPF object and attaching programs, one method at a time.
//! The planner (`plan`) decides what to try in which order; this module
//! only does it and reports exactly what the kernel said.
use anyhow::{anyhow, Context as _, Result};
use aya::{
    programs::{BtfTracePoint, FEntry, FExit, KProbe, Program, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use netns_trace::plan::Method;
use netns_trace_common::{Config, Offsets};

/// The compiled eBPF object, built by build.rs (aya-build).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netns-trace"));

/// Loads maps and globals.
///
/// `EbpfLoader::new()` always parses the whole kernel BTF (100 ms of the
/// 6.12 guest's start-up, and the loader's peak memory) for CO-RE
/// relocations, which programs built with aya-ebpf do not have, and aya
/// 0.14 has no other way to make a loader. So the load runs on a thread
/// of its own that sees no kernel BTF ([`hide_kernel_btf`]), where the
/// parse fails at once and the loader goes on without it. Where hiding
/// is not allowed (no CAP_SYS_ADMIN, a seccomp profile), the load runs
/// as it is, only slower.
pub fn load(offsets: &Offsets, config: &Config) -> Result<Ebpf> {
    let (offsets, config) = (*offsets, *config);
    std::thread::Builder::new()
        .name("load".into())
        .spawn(move || {
            if let Err(why) = hide_kernel_btf() {
                log::debug!("start-up: aya's loader will parse the kernel BTF: {why}");
            }
            let t = std::time::Instant::now();
            let mut loader = EbpfLoader::new();
            log::debug!("start-up: aya's loader made in {:?}", t.elapsed());
            if config.filter_enabled == 0 {
                // The programs read and write the scope maps only with a
                // filter: without one, one entry each instead of 65,536
                // and 8,192 allocated and zeroed.
                loader
                    .map_max_entries("SCOPE_TGIDS", 1)
                    .map_max_entries("SCOPE_NETNS", 1);
            }
            loader
                .btf(None)
                .override_global("OFFSETS", &offsets, true)
                .override_global("CONFIG", &config, true)
                .load(EBPF_OBJECT)
                .context("loading the eBPF object (maps and globals) into the kernel")
        })
        .context("starting the load thread")?
        .join()
        .map_err(|_| anyhow!("the load thread panicked"))?
}

/// Makes this thread's view of /sys/kernel/btf an empty directory: a
/// mount namespace of its own (with its own filesystem context, as a
/// thread of a process may), every mount private so nothing propagates
/// back to the host, and an empty tmpfs over the directory. It ends with
/// the thread.
fn hide_kernel_btf() -> std::io::Result<()> {
    let check = |rc: libc::c_int| match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    };
    // SAFETY: plain syscalls on constant, NUL-terminated strings; they
    // change only this thread's filesystem context and mount namespace.
    unsafe {
        check(libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            c"none".as_ptr(),
            c"/sys/kernel/btf".as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ))?;
    }
    match std::fs::metadata(netns_trace::kernel::btf::VMLINUX_BTF) {
        Err(_) => Ok(()),
        Ok(_) => Err(std::io::Error::other("the kernel BTF is still visible")),
    }
}

/// Loads and attaches one program. `target` is a kernel function for
/// kprobes and fentry, `category/name` for tracepoints, the tracepoint name
/// for tp_btf. Errors carry the kernel's answer (errno, verifier log).
pub fn attach(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    program: &str,
    how: Method,
    target: &str,
) -> Result<()> {
    load_and_maybe_attach(ebpf, btf, program, how, target, true)
}

/// Loads a program (the verifier runs, the BTF target is resolved) without
/// attaching it: `--dry-run`.
pub fn verify(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    program: &str,
    how: Method,
    target: &str,
) -> Result<()> {
    load_and_maybe_attach(ebpf, btf, program, how, target, false)
}

/// A program of the loaded object, by its name.
pub fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} is not in the eBPF object"))
}

fn load_and_maybe_attach(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    program: &str,
    how: Method,
    target: &str,
    attach: bool,
) -> Result<()> {
    let prog = self::program(ebpf, program)?;
    // Start-up time is a goal (docs/performance.md): each program's
    // verifier run and attach, apart, in the debug log.
    let t = std::time::Instant::now();
    let loaded;
    let need_btf = || btf.ok_or_else(|| anyhow!("needs kernel BTF"));
    match how {
        Method::Fentry => {
            let p: &mut FEntry = prog.try_into()?;
            p.load(target, need_btf()?).map_err(flatten)?;
            loaded = t.elapsed();
            if attach {
                p.attach().map_err(flatten)?;
            }
        }
        Method::Fexit => {
            let p: &mut FExit = prog.try_into()?;
            p.load(target, need_btf()?).map_err(flatten)?;
            loaded = t.elapsed();
            if attach {
                p.attach().map_err(flatten)?;
            }
        }
        Method::Kprobe | Method::Kretprobe => {
            let p: &mut KProbe = prog.try_into()?;
            p.load().map_err(flatten)?;
            loaded = t.elapsed();
            if attach {
                p.attach(target, 0).map_err(flatten)?;
            }
        }
        Method::Tracepoint => {
            let (category, name) = target
                .split_once('/')
                .ok_or_else(|| anyhow!("tracepoint {target} is not category/name"))?;
            let p: &mut TracePoint = prog.try_into()?;
            p.load().map_err(flatten)?;
            loaded = t.elapsed();
            if attach {
                p.attach(category, name).map_err(flatten)?;
            }
        }
        Method::BtfTracepoint => {
            let p: &mut BtfTracePoint = prog.try_into()?;
            p.load(target, need_btf()?).map_err(flatten)?;
            loaded = t.elapsed();
            if attach {
                p.attach().map_err(flatten)?;
            }
        }
    }
    log::debug!(
        "start-up: {program} ({how:?} {target}): loaded in {loaded:?}, attached in {:?}",
        t.elapsed() - loaded
    );
    Ok(())
}

/// Detaches and unloads a program (used to undo half of a failed pair).
pub fn unload(ebpf: &mut Ebpf, program: &str) {
    let result = match ebpf.program_mut(program) {
        Some(Program::KProbe(p)) => p.unload(),
        Some(Program::FEntry(p)) => p.unload(),
        Some(Program::FExit(p)) => p.unload(),
        Some(Program::TracePoint(p)) => p.unload(),
        Some(Program::BtfTracePoint(p)) => p.unload(),
        _ => Ok(()),
    };
    if let Err(err) = result {
        log::debug!("unloading {program}: {err}");
    }
}

/// One line for the kernel's answer: the error chain, with the verifier
/// log cut to the lines that say why (its statistics lines dropped).
fn flatten(err: aya::programs::ProgramError) -> anyhow::Error {
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    let noise = ["verification time", "stack depth", "processed ", ": "];
    let lines: Vec<&str> = chain
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !noise.iter().any(|n| l.starts_with(n)))
        .collect();
    if lines.len() > 4 {
        anyhow!("{} ... {}", lines[0], lines[lines.len() - 3..].join(" | "))
    } else {
        anyhow!("{}", lines.join(" | "))
    }
}
