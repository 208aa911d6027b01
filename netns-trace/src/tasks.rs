//! The blocked-task iterator (`iter/task`): each run walks every task in
//! the kernel once; the ones in uninterruptible sleep arrive in the ring
//! buffer as `BLOCKED_TASK` events, classified by the session.
use std::io::Read as _;

use anyhow::{Context as _, Result};
use aya::{programs::Iter, Btf, Ebpf};

const PROG: &str = "blocked_tasks";

/// The iterator's target; aya loads it by the kernel's BTF function
/// `bpf_iter_<target>` ([`BTF_NAME`]).
const TARGET: &str = "task";

/// What aya looks up in the kernel's BTF to load the iterator, for the
/// start-up's names-only BTF (main.rs).
pub const BTF_NAME: &str = "bpf_iter_task";

fn prog(ebpf: &mut Ebpf) -> Result<&mut Iter> {
    Ok(crate::probes::program(ebpf, PROG)?.try_into()?)
}

/// Loads `blocked_tasks` (task iterators: Linux 5.8+; bpf_get_task_stack
/// from them: 5.9+); the verifier's refusal is the error.
pub fn load(ebpf: &mut Ebpf, btf: &Btf) -> Result<()> {
    prog(ebpf)?.load(TARGET, btf)?;
    Ok(())
}

/// One walk over all tasks (a warning, not an error, if it fails: the
/// blocked tasks are extra information).
pub fn run(ebpf: &mut Ebpf) {
    if let Err(e) = prog(ebpf).and_then(read_iter) {
        log::warn!("blocked-task iterator: {e:#}");
    }
}

/// Runs a loaded iterator once: a fresh link, read to its end. Returns
/// what the program wrote to its output.
pub fn read_iter(prog: &mut Iter) -> Result<Vec<u8>> {
    let id = prog.attach().context("attaching the iterator")?;
    let link = prog.take_link(id)?;
    let mut file = link.into_file().context("creating the iterator")?;
    let mut out = Vec::new();
    file.read_to_end(&mut out).context("running the iterator")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// aya names an iterator's BTF function `bpf_iter_<target>`; the
    /// names-only BTF must hold that very name.
    #[test]
    fn the_btf_name_is_the_one_aya_looks_up() {
        assert_eq!(super::BTF_NAME, format!("bpf_iter_{}", super::TARGET));
    }
}
