//! BPF_PROG_TEST_RUN on a raw tracepoint program that is never attached:
//! how the loader runs a kernel-side routine on demand and synchronously
//! (read the watched counters, walk a neighbour table). Linux 5.10+.
use std::os::fd::RawFd;

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (BPF_PROG_TEST_RUN).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The raw `bpf()` call, for what aya does not offer: `attr` is the
/// leading part of `union bpf_attr` that `cmd` reads (and may write).
pub fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised bpf_attr prefix of its
    // own size; the kernel reads and writes only that, and what the
    // pointers in it name.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Runs the program once with `args` as its raw tracepoint arguments
/// (at most 12); returns its return value.
pub fn run(prog_fd: RawFd, args: &[u64]) -> Result<u32, String> {
    let mut ctx = args.to_vec();
    run_with_context(prog_fd, &mut ctx)
}

/// Runs the program once on the context `ctx`; a program type whose test
/// run copies the context back (`BPF_PROG_TYPE_SYSCALL`) leaves its
/// writes there. Returns the program's return value.
pub fn run_with_context<T: Copy>(prog_fd: RawFd, ctx: &mut [T]) -> Result<u32, String> {
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        ctx_size_in: std::mem::size_of_val(ctx) as u32,
        ctx_in: ctx.as_mut_ptr() as u64,
        ..TestRunAttr::default()
    };
    // The kernel writes at most ctx_size_in bytes to ctx, which outlives
    // the call.
    sys_bpf(BPF_PROG_TEST_RUN, &mut attr).map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
    Ok(attr.retval)
}

#[cfg(test)]
mod tests {
    #[test]
    fn attr_matches_the_uapi_layout() {
        // ctx_in at 48, flags at 64, batch_size at 72 (linux/bpf.h).
        let a = super::TestRunAttr::default();
        let base = &a as *const _ as usize;
        assert_eq!(&a.ctx_in as *const _ as usize - base, 48);
        assert_eq!(&a.flags as *const _ as usize - base, 64);
        assert_eq!(&a.batch_size as *const _ as usize - base, 72);
    }
}
