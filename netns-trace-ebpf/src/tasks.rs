//! Incident mode: who is blocked behind a stuck teardown. A task iterator
//! (`iter/task`, run by the loader reading its link) reports every task in
//! uninterruptible sleep with its kernel stack; the loader keeps those
//! whose stack is in namespace creation, teardown, `rtnl_lock` or the
//! pernet lock.
use core::ffi::c_void;

use aya_ebpf::{
    bindings::task_struct,
    helpers::{bpf_get_current_task, bpf_get_task_stack, bpf_ktime_get_ns},
};
use netns_trace_common::{kind, stat, BlockedTask, Header, BLOCKED_FRAMES};

use crate::{
    kread::{count, lazy_wakeup, off, read},
    maps::EVENTS,
};

const TASK_UNINTERRUPTIBLE: u32 = 2;

/// `struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct
/// *task; }`: the task pointer is typed (BTF) for the verifier, which is
/// what bpf_get_task_stack needs. Written without a macro (aya-ebpf has no
/// `#[iter]`); the section name is what the loader and the kernel key on.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn blocked_tasks(ctx: *mut c_void) -> i32 {
    let task = unsafe { *(ctx as *const *mut task_struct).add(1) };
    if task.is_null() {
        return 0;
    }
    let _ = report(task);
    0
}

#[inline(always)]
fn report(task: *mut task_struct) -> Result<(), crate::kread::Counted> {
    let base = task as u64;
    let state = read::<u32>(base, off!(task_state))?;
    if state & TASK_UNINTERRUPTIBLE == 0 {
        return Ok(());
    }
    let Some(mut entry) = EVENTS.reserve::<BlockedTask>(0) else {
        count(stat::RINGBUF_DROPS);
        return Ok(());
    };
    let e = entry.as_mut_ptr();
    let pid = read::<i32>(base, off!(task_pid)).unwrap_or(0) as u32;
    let tgid = read::<i32>(base, off!(task_tgid)).unwrap_or(0) as u32;
    unsafe {
        (*e).hdr = Header {
            kind: kind::BLOCKED_TASK,
            cpu: 0,
            ts_ns: bpf_ktime_get_ns(),
            pid,
            tgid,
            comm: read::<[u8; 16]>(base, off!(task_comm)).unwrap_or([0; 16]),
        };
        (*e).state = state;
        (*e).last_ran_ns = read::<u64>(base, off!(task_exec_start)).unwrap_or(0);
        // The reader running this iterator was accounted when it last woke
        // or at its last tick: a "now" on the scheduler's clock, which
        // bpf_ktime_get_ns is not.
        (*e).seen_sched_ns =
            read::<u64>(bpf_get_current_task(), off!(task_exec_start)).unwrap_or(0);
        let bytes = bpf_get_task_stack(
            task,
            (*e).ips.as_mut_ptr() as *mut c_void,
            (BLOCKED_FRAMES * 8) as u32,
            0,
        );
        (*e).nr = if bytes > 0 { (bytes / 8) as u32 } else { 0 };
    }
    entry.submit(lazy_wakeup());
    Ok(())
}
