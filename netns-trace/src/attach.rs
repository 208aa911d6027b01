//! Executes the attach plan: tries each hook's alternatives in order,
//! undoes half-attached pairs, and records every outcome (with the
//! kernel's own error) in the plan for `doctor`, the banner and JSON.
use aya::{Btf, Ebpf};
use netns_trace::plan::{Candidate, Outcome, Plan};

use crate::probes;

/// Attach (or only load and verify, for `--dry-run`) every core hook and
/// every optional one the kernel has, then the degraded-mode fallbacks the
/// core outcome calls for.
pub fn attach_all(ebpf: &mut Ebpf, btf: Option<&Btf>, plan: &mut Plan, verify_only: bool) {
    let core: Vec<(String, Vec<Candidate>)> = plan
        .core()
        .map(|h| (h.hook.name.to_string(), h.candidates.clone()))
        .collect();
    // Then what the kernel offers beyond them (ref_tracker on debug builds).
    let optional: Vec<(String, Vec<Candidate>)> = plan
        .optional()
        .map(|h| (h.hook.name.to_string(), h.candidates.clone()))
        .collect();
    for (hook, candidates) in core.into_iter().chain(optional) {
        attach_hook(ebpf, btf, plan, &hook, &candidates, verify_only);
    }
    let fallbacks: Vec<(String, Vec<Candidate>)> = plan
        .needed_fallbacks()
        .iter()
        .map(|h| (h.hook.name.to_string(), h.candidates.clone()))
        .collect();
    for (hook, candidates) in fallbacks {
        attach_hook(ebpf, btf, plan, &hook, &candidates, verify_only);
    }
}

/// Attach one hook by name, if it is not attached yet (e.g. the fork hook,
/// which `--pid` needs in every mode to follow descendants).
pub fn ensure_hook(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    plan: &mut Plan,
    hook: &str,
    verify_only: bool,
) {
    let Some(h) = plan.hook(hook) else { return };
    if h.chosen().is_some() {
        return;
    }
    let candidates = h.candidates.clone();
    attach_hook(ebpf, btf, plan, hook, &candidates, verify_only);
}

fn attach_hook(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    plan: &mut Plan,
    hook: &str,
    candidates: &[Candidate],
    verify_only: bool,
) {
    for candidate in candidates {
        let outcome = match try_candidate(ebpf, btf, candidate, verify_only) {
            Ok(()) if verify_only => Outcome::Verified {
                alternative: candidate.alternative,
            },
            Ok(()) => Outcome::Attached {
                alternative: candidate.alternative,
            },
            Err(error) => Outcome::Failed {
                alternative: candidate.alternative,
                error,
            },
        };
        let done = !matches!(outcome, Outcome::Failed { .. });
        log::info!("{hook}: {} -> {outcome:?}", candidate.label());
        // The hook name came from the plan itself, so recording cannot fail.
        let _ = plan.record(hook, outcome);
        if done {
            return;
        }
    }
}

fn try_candidate(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    candidate: &Candidate,
    verify_only: bool,
) -> Result<(), String> {
    let mut done: Vec<&str> = Vec::new();
    for program in &candidate.programs {
        // Tracepoints are `category:name` in the plan, `category/name` here.
        let target = program.target.replacen(':', "/", 1);
        let result = if verify_only {
            probes::verify(ebpf, btf, program.program, program.method, &target)
        } else {
            probes::attach(ebpf, btf, program.program, program.method, &target)
        };
        if let Err(err) = result {
            for name in done {
                probes::unload(ebpf, name);
            }
            probes::unload(ebpf, program.program);
            return Err(format!("{} ({}): {err:#}", program.program, program.method));
        }
        done.push(program.program);
    }
    Ok(())
}
