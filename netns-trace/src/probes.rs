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

/// A program of the loaded object, by its name.
pub fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} is not in the eBPF object"))
}

/// Loads one program: the verifier runs and a BTF target (fentry, fexit,
/// tp_btf: a function or `btf_trace_` name) is resolved. `target` is a
/// kernel function for kprobes and fentry, `category/name` for
/// tracepoints, the tracepoint name for tp_btf. Nothing is attached yet
/// (`--dry-run` stops here). Errors carry the kernel's answer (errno,
/// verifier log).
pub fn load_program(
    prog: &mut Program,
    btf: Option<&Btf>,
    how: Method,
    target: &str,
) -> Result<()> {
    let need_btf = || btf.ok_or_else(|| anyhow!("needs kernel BTF"));
    match how {
        Method::Fentry => as_mut::<FEntry>(prog)?.load(target, need_btf()?),
        Method::Fexit => as_mut::<FExit>(prog)?.load(target, need_btf()?),
        Method::Kprobe | Method::Kretprobe => as_mut::<KProbe>(prog)?.load(),
        Method::Tracepoint => as_mut::<TracePoint>(prog)?.load(),
        Method::BtfTracepoint => as_mut::<BtfTracePoint>(prog)?.load(target, need_btf()?),
    }
    .map_err(flatten)?;
    // The verifier's share of start-up goes with the work it did.
    if log::log_enabled!(log::Level::Debug) {
        if let Ok(info) = prog.info() {
            log::debug!(
                "start-up: {target}: the verifier went through {:?} instructions, {:?} bytes translated",
                info.verified_instruction_count(),
                info.size_translated()
            );
        }
    }
    Ok(())
}

/// Attaches a program [`load_program`] loaded, to the same target.
pub fn attach_program(prog: &mut Program, how: Method, target: &str) -> Result<()> {
    match how {
        Method::Fentry => as_mut::<FEntry>(prog)?.attach().map(drop),
        Method::Fexit => as_mut::<FExit>(prog)?.attach().map(drop),
        Method::Kprobe | Method::Kretprobe => as_mut::<KProbe>(prog)?.attach(target, 0).map(drop),
        Method::Tracepoint => {
            let (category, name) = target
                .split_once('/')
                .ok_or_else(|| anyhow!("tracepoint {target} is not category/name"))?;
            as_mut::<TracePoint>(prog)?.attach(category, name).map(drop)
        }
        Method::BtfTracepoint => as_mut::<BtfTracePoint>(prog)?.attach().map(drop),
    }
    .map_err(flatten)
}

fn as_mut<'a, P>(prog: &'a mut Program) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut Program, Error = aya::programs::ProgramError>,
{
    Ok(prog.try_into()?)
}

/// Detaches and unloads a program (to undo half of a failed pair).
pub fn unload_program(prog: &mut Program, name: &str) {
    let result = match prog {
        Program::KProbe(p) => p.unload(),
        Program::FEntry(p) => p.unload(),
        Program::FExit(p) => p.unload(),
        Program::TracePoint(p) => p.unload(),
        Program::BtfTracePoint(p) => p.unload(),
        _ => Ok(()),
    };
    if let Err(err) = result {
        log::debug!("unloading {name}: {err}");
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
