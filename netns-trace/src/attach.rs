//! Executes the attach plan: tries each hook's alternatives in order,
//! undoes half-attached pairs, and records every outcome (with the
//! kernel's own error) in the plan for `doctor`, the banner and JSON.
//!
//! Programs are loaded (verified) here, one hook after the other; each
//! fentry/fexit candidate is attached on a thread of its own
//! ([`Trampolines`]) while the verifier goes on. On 6.1 the first
//! trampoline of a run waits for an RCU-tasks grace period in the kernel
//! (its direct-call table is swapped while empty, and the old one freed
//! only after `synchronize_rcu_tasks`): 120-260 ms of an idle machine,
//! which start-up no longer waits for in line, and the other trampolines
//! go in meanwhile. Elsewhere the kernel's ftrace work of each attach
//! overlaps the verifier when there is a second CPU, and costs the same
//! when there is not. Outcomes are recorded once every thread is back,
//! before the fallbacks are chosen from them.
use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Instant;

use aya::{programs::Program, Btf, Ebpf};
use netns_trace::plan::{Attach, Candidate, Method, Outcome, Plan};

use crate::probes;

/// What attaching does to one program: `&mut aya::programs::Program` in
/// the tracer, a recording fake in the tests.
pub trait Loadable: Send {
    fn load(&mut self, btf: Option<&Btf>, how: Method, target: &str) -> anyhow::Result<()>;
    fn attach(&mut self, how: Method, target: &str) -> anyhow::Result<()>;
    fn unload(&mut self, name: &str);
}

impl Loadable for &mut Program {
    fn load(&mut self, btf: Option<&Btf>, how: Method, target: &str) -> anyhow::Result<()> {
        probes::load_program(self, btf, how, target)
    }
    fn attach(&mut self, how: Method, target: &str) -> anyhow::Result<()> {
        probes::attach_program(self, how, target)
    }
    fn unload(&mut self, name: &str) {
        probes::unload_program(self, name)
    }
}

/// The object's programs by name, each borrowed apart so that one thread
/// can attach some while another loads the others.
type Programs<'p, P> = HashMap<&'p str, P>;

/// Attach (or only load and verify, for `--dry-run`) every core hook and
/// every optional one the kernel has, then the degraded-mode fallbacks the
/// core outcome calls for.
pub fn attach_all(ebpf: &mut Ebpf, btf: Option<&Btf>, plan: &mut Plan, verify_only: bool) {
    let mut programs: Programs<&mut Program> = ebpf.programs_mut().collect();
    attach_programs(&mut programs, btf, plan, verify_only);
}

fn attach_programs<'p, P: Loadable + 'p>(
    programs: &mut Programs<'p, P>,
    btf: Option<&Btf>,
    plan: &mut Plan,
    verify_only: bool,
) {
    let core: Vec<(String, Vec<Candidate>)> = plan
        .core()
        .map(|h| (h.hook.name.to_string(), h.candidates.clone()))
        .collect();
    // Then what the kernel offers beyond them (ref_tracker on debug builds).
    let optional: Vec<(String, Vec<Candidate>)> = plan
        .optional()
        .map(|h| (h.hook.name.to_string(), h.candidates.clone()))
        .collect();
    std::thread::scope(|scope| {
        let mut trampolines = (!verify_only).then(|| Trampolines::new(scope));
        for (hook, candidates) in core.into_iter().chain(optional) {
            attach_hook(
                programs,
                btf,
                plan,
                &hook,
                &candidates,
                verify_only,
                trampolines.as_mut(),
            );
        }
        // Every outcome is in before the fallbacks are chosen from them.
        for done in trampolines.map(Trampolines::finish).unwrap_or_default() {
            let Done { job, result } = done;
            programs.extend(job.programs);
            let failed = result.is_err();
            record(plan, &job.hook, &job.candidate, result, false);
            if failed {
                attach_hook(programs, btf, plan, &job.hook, &job.rest, false, None);
            }
        }
    });
    let fallbacks: Vec<(String, Vec<Candidate>)> = plan
        .needed_fallbacks()
        .iter()
        .map(|h| (h.hook.name.to_string(), h.candidates.clone()))
        .collect();
    for (hook, candidates) in fallbacks {
        attach_hook(programs, btf, plan, &hook, &candidates, verify_only, None);
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
    let mut programs: Programs<&mut Program> = ebpf.programs_mut().collect();
    attach_hook(
        &mut programs,
        btf,
        plan,
        hook,
        &candidates,
        verify_only,
        None,
    );
}

/// Tries `candidates` in order until one is in. With `trampolines`, a
/// candidate made only of fentry/fexit programs is loaded here and
/// attached there: its outcome is recorded when [`Trampolines::finish`]
/// says, and the candidates after it are tried then if it failed.
fn attach_hook<'s, 'p: 's, P: Loadable + 'p>(
    programs: &mut Programs<'p, P>,
    btf: Option<&Btf>,
    plan: &mut Plan,
    hook: &str,
    candidates: &[Candidate],
    verify_only: bool,
    mut trampolines: Option<&mut Trampolines<'s, '_, 'p, P>>,
) {
    for (i, candidate) in candidates.iter().enumerate() {
        let mut result = load_candidate(programs, btf, candidate);
        if result.is_ok() && !verify_only {
            match trampolines.as_deref_mut() {
                Some(t) if on_trampolines(candidate) => {
                    let job = Job {
                        hook: hook.to_string(),
                        candidate: candidate.clone(),
                        rest: candidates[i + 1..].to_vec(),
                        programs: take(programs, candidate),
                    };
                    match t.send(job) {
                        None => return,
                        Some(done) => {
                            programs.extend(done.job.programs);
                            result = done.result;
                        }
                    }
                }
                _ => result = attach_candidate(programs, candidate),
            }
        }
        if record(plan, hook, candidate, result, verify_only) {
            return;
        }
    }
}

/// Records one candidate's outcome; true when the hook is in.
fn record(
    plan: &mut Plan,
    hook: &str,
    candidate: &Candidate,
    result: Result<(), String>,
    verify_only: bool,
) -> bool {
    let alternative = candidate.alternative;
    let outcome = match result {
        Ok(()) if verify_only => Outcome::Verified { alternative },
        Ok(()) => Outcome::Attached { alternative },
        Err(error) => Outcome::Failed { alternative, error },
    };
    let done = !matches!(outcome, Outcome::Failed { .. });
    log::info!("{hook}: {} -> {outcome:?}", candidate.label());
    // The hook name came from the plan itself, so recording cannot fail.
    let _ = plan.record(hook, outcome);
    done
}

/// fentry and fexit attach through ftrace's direct calls (the costly
/// attaches); the other methods attach where they are loaded.
fn on_trampolines(candidate: &Candidate) -> bool {
    candidate
        .programs
        .iter()
        .all(|p| matches!(p.method, Method::Fentry | Method::Fexit))
}

/// Loads every program of a candidate; on an error, unloads those it
/// loaded, so the next candidate starts clean.
fn load_candidate<P: Loadable>(
    programs: &mut Programs<P>,
    btf: Option<&Btf>,
    candidate: &Candidate,
) -> Result<(), String> {
    for (n, program) in candidate.programs.iter().enumerate() {
        let t = Instant::now();
        let result = match programs.get_mut(program.program) {
            Some(prog) => prog
                .load(btf, program.method, &target(program))
                .map_err(|e| format!("{e:#}")),
            None => Err("not in the eBPF object".to_string()),
        };
        // Start-up time is a goal (docs/performance.md).
        log::debug!(
            "start-up: {} ({:?} {}): loaded in {:?}",
            program.program,
            program.method,
            program.target,
            t.elapsed()
        );
        if let Err(err) = result {
            unload(programs, &candidate.programs[..=n]);
            return Err(format!("{} ({}): {err}", program.program, program.method));
        }
    }
    Ok(())
}

/// Attaches every (loaded) program of a candidate; on an error, detaches
/// and unloads all of them.
fn attach_candidate<P: Loadable>(
    programs: &mut Programs<P>,
    candidate: &Candidate,
) -> Result<(), String> {
    for program in &candidate.programs {
        let t = Instant::now();
        let result = match programs.get_mut(program.program) {
            Some(prog) => prog.attach(program.method, &target(program)),
            None => Err(anyhow::anyhow!("not in the eBPF object")),
        };
        log::debug!(
            "start-up: {} ({:?} {}): attached in {:?}",
            program.program,
            program.method,
            program.target,
            t.elapsed()
        );
        if let Err(err) = result {
            unload(programs, &candidate.programs);
            return Err(format!("{} ({}): {err:#}", program.program, program.method));
        }
    }
    Ok(())
}

fn unload<P: Loadable>(programs: &mut Programs<P>, which: &[Attach]) {
    for p in which {
        if let Some(prog) = programs.get_mut(p.program) {
            prog.unload(p.program);
        }
    }
}

/// Tracepoints are `category:name` in the plan, `category/name` here.
fn target(program: &Attach) -> String {
    program.target.replacen(':', "/", 1)
}

/// Moves a candidate's programs out of the map (to the attaching thread).
fn take<'p, P>(programs: &mut Programs<'p, P>, candidate: &Candidate) -> Programs<'p, P> {
    candidate
        .programs
        .iter()
        .filter_map(|p| programs.remove_entry(p.program))
        .collect()
}

/// A loaded candidate on its way to an attaching thread, and back.
struct Job<'p, P> {
    hook: String,
    candidate: Candidate,
    /// The hook's candidates after this one, for when it fails.
    rest: Vec<Candidate>,
    programs: Programs<'p, P>,
}

/// A job back from its thread, with the attach's outcome.
struct Done<'p, P> {
    job: Job<'p, P>,
    result: Result<(), String>,
}

/// fentry/fexit candidates attaching, each on a thread of its own: the
/// one that waits for the kernel's grace period (see the module comment)
/// holds up neither the verifier nor the other attaches, which the
/// kernel's own locks put in a row.
struct Trampolines<'scope, 'env, 'p, P> {
    scope: &'scope std::thread::Scope<'scope, 'env>,
    threads: Vec<std::thread::ScopedJoinHandle<'scope, Option<Done<'p, P>>>>,
}

impl<'scope, 'env, 'p: 'scope, P: Loadable + 'p> Trampolines<'scope, 'env, 'p, P> {
    fn new(scope: &'scope std::thread::Scope<'scope, 'env>) -> Self {
        Trampolines {
            scope,
            threads: Vec::new(),
        }
    }

    /// Attaches on a new thread; where none can be had, here and now
    /// (then the outcome is returned).
    fn send(&mut self, job: Job<'p, P>) -> Option<Done<'p, P>> {
        let (tx, rx) = mpsc::sync_channel::<Job<'p, P>>(1);
        let spawned = std::thread::Builder::new()
            .name("attach".into())
            .spawn_scoped(self.scope, move || rx.recv().ok().map(attach_job));
        match spawned {
            Ok(thread) => {
                self.threads.push(thread);
                // The thread waits for this very message.
                let _ = tx.send(job);
                None
            }
            Err(e) => {
                log::debug!("start-up: no attach thread ({e}): attaching in line");
                Some(attach_job(job))
            }
        }
    }

    /// Waits for every attach; the outcomes in the order sent.
    fn finish(self) -> Vec<Done<'p, P>> {
        self.threads
            .into_iter()
            .filter_map(|t| {
                t.join()
                    .map_err(|_| log::warn!("an attach thread panicked: its hook is not attached"))
                    .ok()
                    .flatten()
            })
            .collect()
    }
}

fn attach_job<P: Loadable>(mut job: Job<'_, P>) -> Done<'_, P> {
    let result = attach_candidate(&mut job.programs, &job.candidate);
    Done { job, result }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use netns_trace::kallsyms::{FilterFunctions, Symbols};
    use netns_trace::plan::Capabilities;

    use super::*;

    /// What the fakes were asked to do, in order: `load NAME`, `attach
    /// NAME on THREAD`, `unload NAME`.
    #[derive(Default)]
    struct Kernel {
        log: Mutex<Vec<String>>,
        refuse_load: Vec<&'static str>,
        refuse_attach: Vec<&'static str>,
    }

    struct Fake {
        name: &'static str,
        kernel: Arc<Kernel>,
    }

    impl Loadable for Fake {
        fn load(&mut self, _: Option<&Btf>, _: Method, _: &str) -> anyhow::Result<()> {
            self.kernel
                .log
                .lock()
                .unwrap()
                .push(format!("load {}", self.name));
            match self.kernel.refuse_load.contains(&self.name) {
                true => Err(anyhow::anyhow!("verifier says no")),
                false => Ok(()),
            }
        }
        fn attach(&mut self, _: Method, _: &str) -> anyhow::Result<()> {
            let thread = std::thread::current().name().unwrap_or("?").to_string();
            let line = format!("attach {} on {thread}", self.name);
            self.kernel.log.lock().unwrap().push(line);
            match self.kernel.refuse_attach.contains(&self.name) {
                true => Err(anyhow::anyhow!("EPERM")),
                false => Ok(()),
            }
        }
        fn unload(&mut self, name: &str) {
            self.kernel
                .log
                .lock()
                .unwrap()
                .push(format!("unload {name}"));
        }
    }

    /// A kernel with every hook's function, all of them traceable.
    fn plan() -> Plan {
        let names: Vec<&str> = netns_trace::plan::HOOKS
            .iter()
            .flat_map(netns_trace::plan::function_names)
            .copied()
            .collect();
        let kallsyms: String = (0u64..)
            .zip(&names)
            .map(|(i, n)| format!("{:016x} T {n}\n", 0xffffffff81000000 + i * 0x100))
            .collect();
        let caps = Capabilities {
            kprobe: true,
            fentry: true,
            tracepoint: true,
            btf_tracepoint: true,
            btf: true,
        };
        let traceable = FilterFunctions::parse(&names.join("\n"));
        Plan::new(caps, &Symbols::parse(&kallsyms), Some(&traceable))
    }

    /// Runs the plan against fakes; the plan and what the kernel saw.
    fn run(kernel: Kernel, verify_only: bool) -> (Plan, Vec<String>) {
        let mut plan = plan();
        let kernel = Arc::new(kernel);
        let mut programs: Programs<Fake> = plan
            .hooks
            .iter()
            .flat_map(|h| &h.candidates)
            .flat_map(|c| &c.programs)
            .map(|p| {
                let fake = Fake {
                    name: p.program,
                    kernel: kernel.clone(),
                };
                (p.program, fake)
            })
            .collect();
        attach_programs(&mut programs, None, &mut plan, verify_only);
        let log = kernel.log.lock().unwrap().clone();
        (plan, log)
    }

    fn chosen(plan: &Plan, hook: &str) -> Option<String> {
        plan.hook(hook).unwrap().chosen().map(Candidate::label)
    }

    #[test]
    fn trampolines_attach_on_threads_the_rest_in_line() {
        let (plan, log) = run(Kernel::default(), false);
        assert_eq!(
            chosen(&plan, "copy_net_ns").as_deref(),
            Some("fentry+fexit")
        );
        assert_eq!(chosen(&plan, "sock_state").as_deref(), Some("tp_btf"));
        let attaches: Vec<&String> = log.iter().filter(|l| l.starts_with("attach")).collect();
        assert!(attaches.contains(&&"attach copy_net_ns_fentry on attach".to_string()));
        assert!(attaches.contains(&&"attach copy_net_ns_fexit on attach".to_string()));
        let main = std::thread::current().name().unwrap_or("?").to_string();
        assert!(
            attaches.contains(&&format!("attach sock_state_btf on {main}")),
            "{attaches:?}"
        );
        // A pair goes in from one thread, in its own order.
        let at = |l: &str| log.iter().position(|x| x.starts_with(l)).unwrap();
        assert!(at("attach copy_net_ns_fentry") < at("attach copy_net_ns_fexit"));
        // Every program that was loaded was attached, none twice.
        let loads = log.iter().filter(|l| l.starts_with("load")).count();
        assert_eq!(loads, attaches.len(), "{log:?}");
        assert!(!log.iter().any(|l| l.starts_with("unload")), "{log:?}");
    }

    #[test]
    fn a_refused_trampoline_falls_back_to_the_next_candidate() {
        let kernel = Kernel {
            refuse_attach: vec!["copy_net_ns_fexit"],
            ..Kernel::default()
        };
        let (plan, log) = run(kernel, false);
        let h = plan.hook("copy_net_ns").unwrap();
        assert_eq!(
            chosen(&plan, "copy_net_ns").as_deref(),
            Some("kprobe+kretprobe")
        );
        match &h.outcomes[0] {
            Outcome::Failed {
                alternative: 0,
                error,
            } => {
                assert!(
                    error.contains("copy_net_ns_fexit (fexit): EPERM"),
                    "{error}"
                )
            }
            other => panic!("first outcome {other:?}"),
        }
        // The half that went in is taken out again.
        assert!(
            log.contains(&"unload copy_net_ns_fentry".to_string()),
            "{log:?}"
        );
        // The fallback chosen from the outcomes does not replace a hook
        // that found its way in.
        assert_eq!(chosen(&plan, "unshare"), None);
    }

    #[test]
    fn a_hook_left_out_brings_its_fallback_in() {
        let kernel = Kernel {
            refuse_attach: vec!["copy_net_ns_fentry"],
            refuse_load: vec!["copy_net_ns_kprobe"],
            ..Kernel::default()
        };
        let (plan, _) = run(kernel, false);
        assert_eq!(chosen(&plan, "copy_net_ns"), None);
        assert_eq!(plan.hook("copy_net_ns").unwrap().outcomes.len(), 2);
        // Decided after the deferred outcome came in.
        assert_eq!(chosen(&plan, "unshare").as_deref(), Some("tracepoint"));
    }

    #[test]
    fn a_dry_run_loads_everything_and_attaches_nothing() {
        let (plan, log) = run(Kernel::default(), true);
        assert!(log.iter().all(|l| l.starts_with("load")), "{log:?}");
        let h = plan.hook("copy_net_ns").unwrap();
        assert!(matches!(
            h.outcomes[..],
            [Outcome::Verified { alternative: 0 }]
        ));
    }
}
