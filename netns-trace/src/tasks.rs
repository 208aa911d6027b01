//! The blocked-task iterator (`iter/task`): each run walks every task in
//! the kernel once; the ones in uninterruptible sleep arrive in the ring
//! buffer as `BLOCKED_TASK` events, classified by the session.
use std::io::Read as _;

use anyhow::{anyhow, Context as _, Result};
use aya::{programs::Iter, Btf, Ebpf};

const PROG: &str = "blocked_tasks";

fn prog(ebpf: &mut Ebpf) -> Result<&mut Iter> {
    Ok(ebpf
        .program_mut(PROG)
        .ok_or_else(|| anyhow!("{PROG} is not in the eBPF object"))?
        .try_into()?)
}

/// Loads `blocked_tasks` (task iterators: Linux 5.8+; bpf_get_task_stack
/// from them: 5.9+); the verifier's refusal is the error.
pub fn load(ebpf: &mut Ebpf, btf: &Btf) -> Result<()> {
    prog(ebpf)?.load("task", btf)?;
    Ok(())
}

/// One walk over all tasks: reading the iterator to its end runs it.
pub fn run(ebpf: &mut Ebpf) -> Result<()> {
    let prog = prog(ebpf)?;
    let id = prog.attach().context("attaching the task iterator")?;
    let link = prog.take_link(id)?;
    let mut file = link.into_file().context("creating the task iterator")?;
    let mut sink = Vec::new();
    file.read_to_end(&mut sink)
        .context("running the task iterator")?;
    Ok(())
}
