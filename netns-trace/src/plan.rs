//! The hook table and the attach planner (pwru-style).
//!
//! One static table says, per hook, which eBPF programs can implement it,
//! in order of preference. [`Plan::new`] keeps the alternatives that the
//! kernel's capabilities and symbols make plausible; the loader tries them
//! in order and reports each result with [`Plan::record`]; the table is then
//! rendered for `doctor`, the start-up banner and the `attach` record.

use std::fmt;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::kallsyms::{is_cold_only, FilterFunctions, Symbols};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Fentry,
    Fexit,
    Kprobe,
    Kretprobe,
    Tracepoint,
    BtfTracepoint,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Fentry => "fentry",
            Method::Fexit => "fexit",
            Method::Kprobe => "kprobe",
            Method::Kretprobe => "kretprobe",
            Method::Tracepoint => "tracepoint",
            Method::BtfTracepoint => "tp_btf",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One eBPF program of an alternative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramSpec {
    /// Program (function) name in the eBPF object.
    pub program: &'static str,
    pub method: Method,
    /// Tracepoint `category/name` or tp_btf `name`; `None` for function
    /// methods, which attach to the hook's resolved symbol.
    pub tracepoint: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Needed for the full tracer.
    Core,
    /// Degraded-mode substitute for the named core hooks; attached only
    /// when one of them could not be.
    Fallback { replaces: &'static [&'static str] },
    /// Expected to be inlined; never attached, only reported.
    Info,
    /// Attached when the kernel has it (debug builds); its absence
    /// degrades nothing.
    Optional,
}

#[derive(Debug)]
pub struct Hook {
    pub name: &'static str,
    /// Kernel functions in order of preference (newer name first), or the
    /// tracepoint display name for tracepoint hooks.
    pub symbols: &'static [&'static str],
    pub purpose: &'static str,
    pub role: Role,
    pub expect_inline: bool,
    /// The programs read arguments or the return value, so a compiler
    /// clone (`.isra`, `.constprop`) with a rewritten ABI cannot stand in.
    pub needs_abi: bool,
    /// Alternatives in order of preference; each is a set of programs
    /// that must all attach.
    pub alternatives: &'static [&'static [ProgramSpec]],
}

const fn f(program: &'static str, method: Method) -> ProgramSpec {
    ProgramSpec {
        program,
        method,
        tracepoint: None,
    }
}

const fn tp(program: &'static str, method: Method, name: &'static str) -> ProgramSpec {
    ProgramSpec {
        program,
        method,
        tracepoint: Some(name),
    }
}

use Method::*;

/// Every hook. Program names follow `<symbol>_<method>` on the eBPF side.
pub static HOOKS: &[Hook] = &[
    Hook {
        name: "copy_net_ns",
        symbols: &["copy_net_ns"],
        purpose: "namespace creation (creator, flags, duration, errors)",
        role: Role::Core,
        expect_inline: false,
        needs_abi: true,
        alternatives: &[
            &[
                f("copy_net_ns_fentry", Fentry),
                f("copy_net_ns_fexit", Fexit),
            ],
            &[
                f("copy_net_ns_kprobe", Kprobe),
                f("copy_net_ns_kretprobe", Kretprobe),
            ],
        ],
    },
    Hook {
        name: "cleanup_net",
        symbols: &["cleanup_net"],
        purpose: "teardown batches of dying namespaces",
        role: Role::Core,
        expect_inline: false,
        needs_abi: false,
        alternatives: &[
            &[
                f("cleanup_net_fentry", Fentry),
                f("cleanup_net_fexit", Fexit),
            ],
            &[
                f("cleanup_net_kprobe", Kprobe),
                f("cleanup_net_kretprobe", Kretprobe),
            ],
        ],
    },
    Hook {
        name: "__put_net",
        symbols: &["__put_net"],
        purpose: "namespace destroy requests (last reference dropped)",
        role: Role::Core,
        expect_inline: false,
        needs_abi: true,
        alternatives: &[
            &[f("__put_net_fentry", Fentry)],
            &[f("__put_net_kprobe", Kprobe)],
        ],
    },
    Hook {
        name: "netdev_run_todo",
        symbols: &["netdev_run_todo"],
        purpose:
            "slow rtnl_unlock calls (it runs this) with their caller; start of the refcount wait",
        role: Role::Core,
        expect_inline: false,
        needs_abi: false,
        alternatives: &[
            // fentry first, as everywhere: a kprobe+kretprobe pair costs
            // more per call (this runs ~3 times per namespace teardown).
            // The fexit program reads the caller from the trampoline's
            // frame, checked against the function's address (rtnl.rs).
            // rtnl_unlock itself is not hooked: it tail-calls this, so a
            // second pair would time the same call twice.
            &[
                f("netdev_run_todo_fentry", Fentry),
                f("netdev_run_todo_fexit", Fexit),
            ],
            &[
                f("netdev_run_todo_kprobe", Kprobe),
                f("netdev_run_todo_kretprobe", Kretprobe),
            ],
        ],
    },
    Hook {
        name: "netdev_refcnt_read",
        symbols: &["netdev_refcnt_read"],
        purpose: "devices waiting to become free, with usage count",
        role: Role::Core,
        expect_inline: false,
        needs_abi: true,
        alternatives: &[
            // fexit alone sees both the device argument and the count.
            &[f("netdev_refcnt_read_fexit", Fexit)],
            &[
                f("netdev_refcnt_read_kprobe", Kprobe),
                f("netdev_refcnt_read_kretprobe", Kretprobe),
            ],
        ],
    },
    // Attribution: the objects that take device references.
    Hook {
        name: "dst_init",
        symbols: &["dst_init"],
        purpose: "dst entries taking a device reference",
        role: Role::Core,
        expect_inline: false,
        needs_abi: true,
        alternatives: &[
            &[f("dst_init_fentry", Fentry)],
            &[f("dst_init_kprobe", Kprobe)],
        ],
    },
    Hook {
        name: "dst_alloc",
        symbols: &["dst_alloc"],
        // Hooked besides dst_init: a build may keep dst_init out of line
        // and still inline it into dst_alloc (Debian 6.12 does).
        purpose: "dst entries allocated (dst_init may be inlined into it)",
        role: Role::Core,
        expect_inline: false,
        needs_abi: true,
        alternatives: &[
            &[f("dst_alloc_fexit", Fexit)],
            &[f("dst_alloc_kretprobe", Kretprobe)],
        ],
    },
    Hook {
        name: "dst_destroy",
        symbols: &["dst_destroy"],
        purpose: "dst entries freed",
        role: Role::Core,
        expect_inline: false,
        needs_abi: true,
        alternatives: &[
            &[f("dst_destroy_fentry", Fentry)],
            &[f("dst_destroy_kprobe", Kprobe)],
        ],
    },
    Hook {
        name: "dst_dev_put",
        symbols: &["dst_dev_put"],
        purpose: "dst entries moved off a dying device (to blackhole_netdev)",
        role: Role::Core,
        expect_inline: false,
        needs_abi: true,
        alternatives: &[
            &[f("dst_dev_put_fentry", Fentry)],
            &[f("dst_dev_put_kprobe", Kprobe)],
        ],
    },
    Hook {
        name: "__neigh_create",
        symbols: &["__neigh_create"],
        purpose: "neighbour entries taking a device reference",
        role: Role::Core,
        expect_inline: false,
        needs_abi: true,
        alternatives: &[
            &[f("neigh_create_fexit", Fexit)],
            &[
                f("neigh_create_kprobe", Kprobe),
                f("neigh_create_kretprobe", Kretprobe),
            ],
        ],
    },
    Hook {
        name: "neigh_destroy",
        symbols: &["neigh_destroy"],
        purpose: "neighbour entries freed",
        role: Role::Core,
        expect_inline: false,
        needs_abi: true,
        alternatives: &[
            &[f("neigh_destroy_fentry", Fentry)],
            &[f("neigh_destroy_kprobe", Kprobe)],
        ],
    },
    Hook {
        name: "sock_state",
        symbols: &["sock:inet_sock_set_state"],
        purpose: "TCP sockets and the device of their cached dst",
        role: Role::Core,
        expect_inline: false,
        needs_abi: false,
        // tp_btf first: the classic tracepoint fills a perf record on every
        // TCP state change before the program runs.
        alternatives: &[
            &[tp("sock_state_btf", BtfTracepoint, "inet_sock_set_state")],
            &[tp("sock_state_tp", Tracepoint, "sock:inet_sock_set_state")],
        ],
    },
    Hook {
        name: "netdev_wait_allrefs",
        symbols: &["netdev_wait_allrefs_any", "netdev_wait_allrefs"],
        purpose: "the wait loop (5.18+: _any); seen through netdev_refcnt_read",
        role: Role::Info,
        expect_inline: true,
        needs_abi: false,
        alternatives: &[],
    },
    Hook {
        name: "dev_hold",
        symbols: &["dev_hold"],
        purpose: "device reference taken (inline helper)",
        role: Role::Info,
        expect_inline: true,
        needs_abi: false,
        alternatives: &[],
    },
    Hook {
        name: "netdev_hold",
        symbols: &["netdev_hold"],
        purpose: "device reference taken with tracker (inline helper, 6.0+)",
        role: Role::Info,
        expect_inline: true,
        needs_abi: false,
        alternatives: &[],
    },
    Hook {
        name: "unshare",
        symbols: &["syscalls:sys_enter_unshare"],
        purpose: "namespace creation at syscall level (no duration)",
        role: Role::Fallback {
            replaces: &["copy_net_ns"],
        },
        expect_inline: false,
        needs_abi: false,
        alternatives: &[&[
            tp("unshare_enter_tp", Tracepoint, "syscalls/sys_enter_unshare"),
            tp("unshare_exit_tp", Tracepoint, "syscalls/sys_exit_unshare"),
        ]],
    },
    Hook {
        name: "fork",
        symbols: &["sched_process_fork"],
        purpose: "namespace creation by clone(CLONE_NEWNET)",
        role: Role::Fallback {
            replaces: &["copy_net_ns"],
        },
        expect_inline: false,
        needs_abi: false,
        alternatives: &[&[tp("fork_btf", BtfTracepoint, "sched_process_fork")]],
    },
    Hook {
        name: "workqueue",
        symbols: &["workqueue:workqueue_execute_start"],
        purpose: "cleanup_net batches timed from the netns workqueue",
        role: Role::Fallback {
            replaces: &["cleanup_net"],
        },
        expect_inline: false,
        needs_abi: false,
        alternatives: &[&[
            tp(
                "wq_start_tp",
                Tracepoint,
                "workqueue/workqueue_execute_start",
            ),
            tp("wq_end_tp", Tracepoint, "workqueue/workqueue_execute_end"),
        ]],
    },
    // The kernel's reference tracker (CONFIG_NET_DEV_REFCNT_TRACKER, debug
    // builds): every device hold and put goes through these, so they count
    // new loopback devices exactly without debug registers. All three or
    // none (see `Plan::tracker_attached`).
    Hook {
        name: "ref_tracker_alloc",
        symbols: &["ref_tracker_alloc"],
        purpose: "device references taken (debug kernels)",
        role: Role::Optional,
        expect_inline: false,
        needs_abi: true,
        alternatives: &[
            &[f("ref_tracker_alloc_fentry", Fentry)],
            &[f("ref_tracker_alloc_kprobe", Kprobe)],
        ],
    },
    Hook {
        name: "ref_tracker_free",
        symbols: &["ref_tracker_free"],
        purpose: "device references given back (debug kernels)",
        role: Role::Optional,
        expect_inline: false,
        needs_abi: true,
        alternatives: &[
            &[f("ref_tracker_free_fentry", Fentry)],
            &[f("ref_tracker_free_kprobe", Kprobe)],
        ],
    },
    Hook {
        name: "ref_tracker_dir_exit",
        symbols: &["ref_tracker_dir_exit"],
        purpose: "tracked devices freed (debug kernels)",
        role: Role::Optional,
        expect_inline: false,
        needs_abi: true,
        alternatives: &[
            &[f("ref_tracker_dir_exit_fentry", Fentry)],
            &[f("ref_tracker_dir_exit_kprobe", Kprobe)],
        ],
    },
];

/// The hooks the tracker ledger needs, all attached.
pub const TRACKER_HOOKS: [&str; 3] = [
    "ref_tracker_alloc",
    "ref_tracker_free",
    "ref_tracker_dir_exit",
];

/// What the running kernel can do, as probed by the loader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    pub kprobe: bool,
    pub fentry: bool,
    pub tracepoint: bool,
    pub btf_tracepoint: bool,
    /// /sys/kernel/btf/vmlinux is there (fentry/fexit and tp_btf need it).
    pub btf: bool,
}

impl Capabilities {
    fn allows(&self, m: Method) -> bool {
        match m {
            Fentry | Fexit => self.fentry && self.btf,
            Kprobe | Kretprobe => self.kprobe,
            Tracepoint => self.tracepoint,
            BtfTracepoint => self.btf_tracepoint && self.btf,
        }
    }

    /// `kprobe=yes fentry=no ...` for banners.
    pub fn summary(&self) -> String {
        let yn = |b: bool| if b { "yes" } else { "no" };
        format!(
            "kprobe={} fentry={} tracepoint={} tp_btf={} btf={}",
            yn(self.kprobe),
            yn(self.fentry),
            yn(self.tracepoint),
            yn(self.btf_tracepoint),
            yn(self.btf)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymbolStatus {
    Found,
    /// In kallsyms but not in available_filter_functions: kprobe only.
    FoundNotrace,
    /// Only a compiler clone exists (the name given).
    OnlyClone(String),
    /// Absent and expected to be inlined.
    Inlined,
    Absent,
    /// A tracepoint: existence is known only at attach time.
    Tracepoint,
}

impl SymbolStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            SymbolStatus::Found => "found",
            SymbolStatus::FoundNotrace => "notrace",
            SymbolStatus::OnlyClone(_) => "clone",
            SymbolStatus::Inlined => "inlined",
            SymbolStatus::Absent => "absent",
            SymbolStatus::Tracepoint => "tracepoint",
        }
    }
}

/// A fully resolved program attach: load `program`, attach by `method`
/// to `target` (a function symbol, tracepoint `category/name`, or a tp_btf
/// name), as `probes::attach` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attach {
    pub program: &'static str,
    pub method: Method,
    pub target: String,
}

impl Attach {
    /// `("syscalls", "sys_enter_unshare")` for a tracepoint target.
    pub fn tracepoint_parts(&self) -> Option<(&str, &str)> {
        self.target.split_once(['/', ':'])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Index into the hook's `alternatives`.
    pub alternative: usize,
    pub programs: Vec<Attach>,
}

impl Candidate {
    /// `fentry+fexit`, `kprobe+kretprobe`, `tracepoint`.
    pub fn label(&self) -> String {
        let mut ms: Vec<&str> = Vec::new();
        for p in &self.programs {
            if !ms.contains(&p.method.as_str()) {
                ms.push(p.method.as_str());
            }
        }
        ms.join("+")
    }
}

/// Result of trying one alternative, reported by the loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Attached {
        alternative: usize,
    },
    /// `--dry-run`: loaded and verified, deliberately not attached.
    Verified {
        alternative: usize,
    },
    Failed {
        alternative: usize,
        error: String,
    },
}

#[derive(Debug, Clone)]
pub struct HookPlan {
    pub hook: &'static Hook,
    /// The symbol that was resolved (or the preferred one if none was).
    pub symbol: String,
    pub status: SymbolStatus,
    /// Plausible alternatives, best first; empty when `skip` is set.
    pub candidates: Vec<Candidate>,
    pub skip: Option<String>,
    /// Extra fact for the NOTE column (clone used, notrace, ...).
    pub note: Option<String>,
    pub outcomes: Vec<Outcome>,
}

impl HookPlan {
    /// The candidate that attached (or verified in a dry run).
    pub fn chosen(&self) -> Option<&Candidate> {
        self.outcomes.iter().find_map(|o| match o {
            Outcome::Attached { alternative } | Outcome::Verified { alternative } => self
                .candidates
                .iter()
                .find(|c| c.alternative == *alternative),
            Outcome::Failed { .. } => None,
        })
    }

    /// Has a way to run: chosen, or (before attach) a plausible candidate.
    fn has_method(&self) -> bool {
        if self.outcomes.is_empty() {
            !self.candidates.is_empty()
        } else {
            self.chosen().is_some()
        }
    }

    fn failed(&self) -> bool {
        !self.outcomes.is_empty() && self.chosen().is_none()
    }
}

/// One row of the rendered hook table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookRow {
    pub hook: String,
    pub symbol: String,
    pub status: String,
    pub method: String,
    pub note: String,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub caps: Capabilities,
    pub hooks: Vec<HookPlan>,
    cleanup_net_addr: Option<u64>,
}

/// The hook is a tracepoint: its `symbols` name no kernel function.
fn tracepoint_only(hook: &Hook) -> bool {
    !hook.alternatives.is_empty()
        && hook
            .alternatives
            .iter()
            .all(|alt| alt.iter().all(|p| p.tracepoint.is_some()))
}

/// The kernel functions a hook may attach to, by exact name (none for a
/// tracepoint hook).
pub fn function_names(hook: &Hook) -> &'static [&'static str] {
    if tracepoint_only(hook) {
        &[]
    } else {
        hook.symbols
    }
}

/// Whether a compiler clone (`foo.isra.0`) of the hook's function would
/// be attached when the function itself is absent: a hook that is
/// attached at all and reads no arguments. For the others a clone only
/// changes what the plan says, not what it does.
pub fn clone_would_attach(hook: &Hook) -> bool {
    hook.role != Role::Info && !hook.needs_abi && !tracepoint_only(hook)
}

/// The start-up's symbols found one name at a time by `lookup` (the
/// kernel's `kallsyms_lookup_name`): every hook's functions, then
/// `functions` and `data`. None when a hook that would attach to a
/// compiler clone has no function of its own, since clones are found only
/// by reading the whole table.
pub fn symbols_by_name<E>(
    functions: &[&'static str],
    data: &[&'static str],
    mut lookup: impl FnMut(&str) -> Result<Option<u64>, E>,
) -> Result<Option<Symbols>, E> {
    let mut found = Vec::new();
    for hook in HOOKS {
        let before = found.len();
        for &name in function_names(hook) {
            if let Some(addr) = lookup(name)? {
                found.push((name, addr));
            }
        }
        if found.len() == before && clone_would_attach(hook) {
            return Ok(None);
        }
    }
    for &name in functions {
        if let Some(addr) = lookup(name)? {
            found.push((name, addr));
        }
    }
    let mut data_found = Vec::new();
    for &name in data {
        if let Some(addr) = lookup(name)? {
            data_found.push((name, addr));
        }
    }
    Ok(Some(Symbols::from_addresses(found, data_found)))
}

fn resolve_symbol(
    hook: &Hook,
    syms: &Symbols,
    traceable: Option<&FilterFunctions>,
) -> (String, SymbolStatus) {
    if tracepoint_only(hook) {
        return (hook.symbols[0].to_string(), SymbolStatus::Tracepoint);
    }
    for &s in hook.symbols {
        if syms.contains_function(s) {
            let st = match traceable {
                Some(t) if !t.contains(s) => SymbolStatus::FoundNotrace,
                _ => SymbolStatus::Found,
            };
            return (s.to_string(), st);
        }
    }
    for &s in hook.symbols {
        // A `.cold` tail alone is not an entry point: the function itself
        // was inlined.
        if let Some(c) = syms.clones_of(s).iter().find(|c| !is_cold_only(c)) {
            return (s.to_string(), SymbolStatus::OnlyClone(c.clone()));
        }
    }
    let shown = if hook.symbols.len() > 1 {
        hook.symbols.join("|")
    } else {
        hook.symbols[0].to_string()
    };
    let st = if hook.expect_inline {
        SymbolStatus::Inlined
    } else {
        SymbolStatus::Absent
    };
    (shown, st)
}

impl Plan {
    /// Plan every hook. `traceable` is `available_filter_functions` when
    /// tracefs was readable (None: assume every found symbol is traceable).
    pub fn new(caps: Capabilities, syms: &Symbols, traceable: Option<&FilterFunctions>) -> Plan {
        let cleanup_net_addr = syms.address_of("cleanup_net");
        let hooks = HOOKS
            .iter()
            .map(|hook| {
                let (symbol, status) = resolve_symbol(hook, syms, traceable);
                let mut hp = HookPlan {
                    hook,
                    symbol,
                    status,
                    candidates: vec![],
                    skip: None,
                    note: None,
                    outcomes: vec![],
                };
                plan_hook(&mut hp, &caps, cleanup_net_addr, syms.addresses_hidden());
                hp
            })
            .collect();
        Plan {
            caps,
            hooks,
            cleanup_net_addr,
        }
    }

    /// What aya looks up in the kernel's BTF to load each BTF-attached
    /// candidate, as (BTF kind, name): a function for fentry and fexit,
    /// the `btf_trace_<name>` typedef for tp_btf. Every candidate of every
    /// hook, so a fallback finds its target too.
    pub fn btf_targets(&self) -> Vec<(u32, String)> {
        use crate::kernel::btf_raw::{KIND_FUNC, KIND_TYPEDEF};
        let mut out: Vec<(u32, String)> = Vec::new();
        let programs = self
            .hooks
            .iter()
            .flat_map(|h| h.candidates.iter())
            .flat_map(|c| c.programs.iter());
        for p in programs {
            let t = match p.method {
                Fentry | Fexit => (KIND_FUNC, p.target.clone()),
                BtfTracepoint => (KIND_TYPEDEF, format!("btf_trace_{}", p.target)),
                _ => continue,
            };
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    /// Address of `cleanup_net`, for the workqueue fallback to recognise
    /// its work item (None when kallsyms addresses are hidden).
    pub fn cleanup_net_addr(&self) -> Option<u64> {
        self.cleanup_net_addr
    }

    pub fn hook(&self, name: &str) -> Option<&HookPlan> {
        self.hooks.iter().find(|h| h.hook.name == name)
    }

    /// Core hooks with candidates: attach these first.
    pub fn core(&self) -> impl Iterator<Item = &HookPlan> {
        self.hooks
            .iter()
            .filter(|h| h.hook.role == Role::Core && !h.candidates.is_empty())
    }

    /// Optional hooks with candidates: attached after the core ones.
    pub fn optional(&self) -> impl Iterator<Item = &HookPlan> {
        self.hooks
            .iter()
            .filter(|h| h.hook.role == Role::Optional && !h.candidates.is_empty())
    }

    /// Every ref_tracker hook attached (or verified in a dry run): new
    /// loopback devices are counted through the kernel's tracker.
    pub fn tracker_attached(&self) -> bool {
        TRACKER_HOOKS
            .iter()
            .all(|n| self.hook(n).is_some_and(|h| h.chosen().is_some()))
    }

    /// Why the tracker is not used, if it is not (one sentence), after the
    /// attach outcomes are recorded.
    pub fn tracker_unused(&self) -> Option<String> {
        let mut why: Vec<(&str, String)> = Vec::new();
        for name in TRACKER_HOOKS {
            let Some(h) = self.hook(name) else { continue };
            if h.chosen().is_some() {
                continue;
            }
            let reason = match (&h.skip, h.outcomes.is_empty()) {
                // Every stock kernel: say it once, plainly.
                (Some(_), _) if h.status == SymbolStatus::Absent => {
                    "not in this kernel (CONFIG_NET_DEV_REFCNT_TRACKER off)".into()
                }
                (Some(skip), _) => skip.clone(),
                (None, true) => "not attached".into(),
                // lib/ is compiled without ftrace: no fentry site, and kprobe
                // events refuse functions without one (EINVAL).
                (None, false) if h.status == SymbolStatus::FoundNotrace => {
                    "notrace (lib/ is built without ftrace) and the kernel refused a kprobe \
                     on it: kprobes on notrace functions need CONFIG_KPROBE_EVENTS_ON_NOTRACE=y"
                        .into()
                }
                (None, false) => "attach failed".into(),
            };
            why.push((name, reason));
        }
        // One sentence when the hooks share their reason (the usual case).
        if why.len() == TRACKER_HOOKS.len() && why.iter().all(|(_, r)| *r == why[0].1) {
            return Some(format!("{}: {}", TRACKER_HOOKS.join(", "), why[0].1));
        }
        let parts: Vec<String> = why.iter().map(|(n, r)| format!("{n}: {r}")).collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// Fallback hooks whose core hook has no method (call after the core
    /// outcomes are recorded). Each has at least one candidate.
    pub fn needed_fallbacks(&self) -> Vec<&HookPlan> {
        self.hooks
            .iter()
            .filter(|h| match h.hook.role {
                Role::Fallback { replaces } => {
                    !h.candidates.is_empty()
                        && replaces
                            .iter()
                            .any(|r| self.hook(r).is_some_and(|c| !c.has_method()))
                }
                _ => false,
            })
            .collect()
    }

    /// Record the result of trying one alternative of `hook`.
    pub fn record(&mut self, hook: &str, outcome: Outcome) -> Result<()> {
        let Some(h) = self.hooks.iter_mut().find(|h| h.hook.name == hook) else {
            bail!("unknown hook {hook}");
        };
        h.outcomes.push(outcome);
        Ok(())
    }

    /// Some hook's fentry or fexit candidate failed to attach.
    pub fn fentry_refused(&self) -> bool {
        self.hooks.iter().any(|h| {
            h.outcomes.iter().any(|o| match o {
                Outcome::Failed { alternative, .. } => h.candidates.iter().any(|c| {
                    c.alternative == *alternative
                        && c.programs
                            .iter()
                            .any(|p| matches!(p.method, Method::Fentry | Method::Fexit))
                }),
                _ => false,
            })
        })
    }

    /// A plan made without ftrace's list of patchable functions learns it
    /// after attaching: a found function the list leaves out is notrace,
    /// which is why its fentry failed (and why a kprobe may fail too).
    pub fn learn_notrace(&mut self, traceable: &FilterFunctions) {
        for h in &mut self.hooks {
            if h.status == SymbolStatus::Found && !traceable.contains(&h.symbol) {
                h.status = SymbolStatus::FoundNotrace;
                h.note.get_or_insert_with(|| "notrace: no fentry".into());
            }
        }
    }

    /// Every core hook has a method (planned, or attached once recorded).
    pub fn full_tracer_possible(&self) -> bool {
        self.hooks
            .iter()
            .filter(|h| h.hook.role == Role::Core)
            .all(HookPlan::has_method)
    }

    /// Why the tracer is degraded: one sentence per core hook without a
    /// method, naming the substitute in use if there is one.
    pub fn degraded_reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        for h in self
            .hooks
            .iter()
            .filter(|h| h.hook.role == Role::Core && !h.has_method())
        {
            let why = h.skip.clone().unwrap_or_else(|| "attach failed".into());
            let subs: Vec<&str> = self
                .hooks
                .iter()
                .filter(|f| match f.hook.role {
                    Role::Fallback { replaces } => {
                        replaces.contains(&h.hook.name) && f.has_method()
                    }
                    _ => false,
                })
                .map(|f| f.hook.name)
                .collect();
            let lost = if subs.is_empty() {
                format!("not seen: {}", h.hook.purpose)
            } else {
                format!("using {} instead", subs.join(" + "))
            };
            out.push(format!("{}: {why}; {lost}", h.hook.name));
        }
        out
    }

    pub fn rows(&self) -> Vec<HookRow> {
        self.hooks.iter().map(|h| row(h, self)).collect()
    }

    /// Fixed-column table: HOOK, SYMBOL, STATUS, METHOD, NOTE.
    pub fn render_table(&self) -> String {
        render_rows(&self.rows())
    }

    /// The `doctor --json` document.
    pub fn doctor_json(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "doctor",
            "capabilities": self.caps,
            "hooks": self.rows(),
            "full_tracer_possible": self.full_tracer_possible(),
            "degraded_reasons": self.degraded_reasons(),
        })
    }
}

fn plan_hook(hp: &mut HookPlan, caps: &Capabilities, cleanup_addr: Option<u64>, hidden: bool) {
    let hook = hp.hook;
    if hook.role == Role::Info {
        hp.skip = Some(match &hp.status {
            SymbolStatus::Inlined => "inlined (expected); not hookable".into(),
            _ => "informational; the wait is seen via netdev_refcnt_read".into(),
        });
        return;
    }
    let mut target = hp.symbol.clone();
    match &hp.status {
        SymbolStatus::Absent | SymbolStatus::Inlined => {
            hp.skip = Some(match hook.role {
                Role::Optional => "not in kallsyms (optional: nothing degrades)".into(),
                _ => "not in kallsyms".into(),
            });
            return;
        }
        SymbolStatus::OnlyClone(c) if hook.needs_abi => {
            hp.skip = Some(format!("only compiler clone {c} exists (ABI may differ)"));
            return;
        }
        SymbolStatus::OnlyClone(c) => {
            hp.note = Some(format!("probing compiler clone {c}"));
            target = c.clone();
        }
        SymbolStatus::FoundNotrace => hp.note = Some("notrace: no fentry".into()),
        _ => {}
    }
    if hook.name == "workqueue" && cleanup_addr.is_none() {
        hp.skip = Some(if hidden {
            "kallsyms addresses hidden (kptr_restrict): cannot match cleanup_net work".into()
        } else {
            "cleanup_net not in kallsyms".into()
        });
        return;
    }
    let mut refused = Vec::new();
    for (i, alt) in hook.alternatives.iter().enumerate() {
        let ok_caps = alt.iter().all(|p| caps.allows(p.method));
        // fentry/fexit need an ftrace site and BTF for the exact name.
        let ok_sym = !alt.iter().any(|p| matches!(p.method, Fentry | Fexit))
            || hp.status == SymbolStatus::Found;
        if ok_caps && ok_sym {
            let programs = alt
                .iter()
                .map(|p| Attach {
                    program: p.program,
                    method: p.method,
                    target: p.tracepoint.map_or_else(|| target.clone(), str::to_string),
                })
                .collect();
            hp.candidates.push(Candidate {
                alternative: i,
                programs,
            });
        } else if !ok_caps {
            let mut ms: Vec<&str> = alt.iter().map(|p| p.method.as_str()).collect();
            ms.dedup();
            refused.push(ms.join("/"));
        }
    }
    if hp.candidates.is_empty() {
        hp.skip = Some(if refused.is_empty() {
            "no usable method".into()
        } else {
            format!("no {} support", refused.join(" or "))
        });
    }
}

fn row(h: &HookPlan, plan: &Plan) -> HookRow {
    let mut notes: Vec<String> = h.note.iter().cloned().collect();
    let method = if let Some(c) = h.chosen() {
        if h.outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Verified { .. }))
        {
            notes.push("verified (dry run)".into());
        }
        c.label()
    } else if let Some(skip) = &h.skip {
        notes.push(skip.clone());
        "-".into()
    } else if !h.outcomes.is_empty() {
        "-".into()
    } else if let Role::Fallback { replaces } = h.hook.role {
        let needed = plan
            .needed_fallbacks()
            .iter()
            .any(|f| f.hook.name == h.hook.name);
        notes.push(if needed {
            format!("planned: replaces {}", replaces.join(", "))
        } else {
            format!(
                "standby: used only if {} cannot be hooked",
                replaces.join(", ")
            )
        });
        if needed {
            h.candidates[0].label()
        } else {
            "-".into()
        }
    } else {
        let rest: Vec<String> = h.candidates[1..].iter().map(Candidate::label).collect();
        notes.push(if rest.is_empty() {
            "planned".into()
        } else {
            format!("planned; fallback {}", rest.join(", "))
        });
        h.candidates[0].label()
    };
    for o in &h.outcomes {
        if let Outcome::Failed { alternative, error } = o {
            let label = h
                .candidates
                .iter()
                .find(|c| c.alternative == *alternative)
                .map_or_else(|| format!("#{alternative}"), Candidate::label);
            notes.push(format!("{label} failed: {error}"));
        }
    }
    if h.failed() && h.hook.role == Role::Core {
        notes.push("not hooked".into());
    }
    HookRow {
        hook: h.hook.name.to_string(),
        symbol: match &h.status {
            SymbolStatus::OnlyClone(c) => c.clone(),
            _ => h.symbol.clone(),
        },
        status: h.status.as_str().to_string(),
        method,
        note: notes.join("; "),
    }
}

/// Render hook rows as the fixed-column table (no trailing newline).
pub fn render_rows(rows: &[HookRow]) -> String {
    let w = |get: fn(&HookRow) -> &str, title: &str| {
        rows.iter()
            .map(|r| get(r).chars().count())
            .max()
            .unwrap_or(0)
            .max(title.len())
    };
    let (wh, ws, wt, wm) = (
        w(|r| &r.hook, "HOOK"),
        w(|r| &r.symbol, "SYMBOL"),
        w(|r| &r.status, "STATUS"),
        w(|r| &r.method, "METHOD"),
    );
    let line = |h: &str, s: &str, t: &str, m: &str, n: &str| {
        format!("{h:<wh$}  {s:<ws$}  {t:<wt$}  {m:<wm$}  {n}")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line("HOOK", "SYMBOL", "STATUS", "METHOD", "NOTE")];
    out.extend(
        rows.iter()
            .map(|r| line(&r.hook, &r.symbol, &r.status, &r.method, &r.note)),
    );
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Capabilities = Capabilities {
        kprobe: true,
        fentry: true,
        tracepoint: true,
        btf_tracepoint: true,
        btf: true,
    };
    /// This machine's kernel: no kprobes, fentry refused.
    const HOST: Capabilities = Capabilities {
        kprobe: false,
        fentry: false,
        tracepoint: true,
        btf_tracepoint: true,
        btf: true,
    };

    /// Debian 6.1 / 6.12 cloud kernels: the wait loop and the hold helpers
    /// are inlined; the rest are real, traceable functions.
    fn debian() -> (Symbols, FilterFunctions) {
        let (k, names) = debian_text();
        (
            Symbols::parse(&k),
            FilterFunctions::parse(&names.join("\n")),
        )
    }

    fn debian_text() -> (String, [&'static str; 13]) {
        let names = [
            "copy_net_ns",
            "cleanup_net",
            "__put_net",
            "rtnl_unlock",
            "netdev_run_todo",
            "netdev_refcnt_read",
            "dst_release",
            "dst_init",
            "dst_alloc",
            "dst_destroy",
            "dst_dev_put",
            "__neigh_create",
            "neigh_destroy",
        ];
        let mut k = String::new();
        for (i, n) in names.iter().enumerate() {
            // dst_destroy is static on 6.12: a local text symbol.
            let ty = if *n == "dst_destroy" { 't' } else { 'T' };
            k += &format!(
                "{:016x} {ty} {n}\n",
                0xffffffff81000000u64 + i as u64 * 0x100
            );
        }
        (k, names)
    }

    fn methods(plan: &Plan, hook: &str) -> Vec<String> {
        plan.hook(hook)
            .unwrap()
            .candidates
            .iter()
            .map(Candidate::label)
            .collect()
    }

    #[test]
    fn debian_kernel_full_tracer() {
        let (s, t) = debian();
        let plan = Plan::new(ALL, &s, Some(&t));
        for h in ["copy_net_ns", "cleanup_net", "netdev_run_todo"] {
            assert_eq!(plan.hook(h).unwrap().status, SymbolStatus::Found);
            assert_eq!(
                methods(&plan, h),
                ["fentry+fexit", "kprobe+kretprobe"],
                "{h}"
            );
        }
        assert_eq!(methods(&plan, "__put_net"), ["fentry", "kprobe"]);
        assert_eq!(
            methods(&plan, "netdev_refcnt_read"),
            ["fexit", "kprobe+kretprobe"]
        );
        let w = plan.hook("netdev_wait_allrefs").unwrap();
        assert_eq!(w.status, SymbolStatus::Inlined);
        assert_eq!(w.symbol, "netdev_wait_allrefs_any|netdev_wait_allrefs");
        assert!(w.candidates.is_empty());
        assert_eq!(plan.hook("dev_hold").unwrap().status, SymbolStatus::Inlined);
        assert_eq!(
            plan.hook("netdev_hold").unwrap().status,
            SymbolStatus::Inlined
        );
        assert!(plan.full_tracer_possible());
        assert!(plan.degraded_reasons().is_empty());
        assert!(plan.needed_fallbacks().is_empty());
        assert_eq!(plan.core().count(), 12);
        assert_eq!(plan.cleanup_net_addr(), Some(0xffffffff81000100));
        let cand = &plan.hook("copy_net_ns").unwrap().candidates[1];
        assert_eq!(
            cand.programs,
            [
                Attach {
                    program: "copy_net_ns_kprobe",
                    method: Kprobe,
                    target: "copy_net_ns".into()
                },
                Attach {
                    program: "copy_net_ns_kretprobe",
                    method: Kretprobe,
                    target: "copy_net_ns".into()
                },
            ]
        );
    }

    #[test]
    fn table_before_and_after_attach() {
        let (s, t) = debian();
        let mut plan = Plan::new(ALL, &s, Some(&t));
        let before = plan.render_table();
        let expected = "\
HOOK                  SYMBOL                                       STATUS      METHOD        NOTE
copy_net_ns           copy_net_ns                                  found       fentry+fexit  planned; fallback kprobe+kretprobe
cleanup_net           cleanup_net                                  found       fentry+fexit  planned; fallback kprobe+kretprobe
__put_net             __put_net                                    found       fentry        planned; fallback kprobe
netdev_run_todo       netdev_run_todo                              found       fentry+fexit  planned; fallback kprobe+kretprobe
netdev_refcnt_read    netdev_refcnt_read                           found       fexit         planned; fallback kprobe+kretprobe
dst_init              dst_init                                     found       fentry        planned; fallback kprobe
dst_alloc             dst_alloc                                    found       fexit         planned; fallback kretprobe
dst_destroy           dst_destroy                                  found       fentry        planned; fallback kprobe
dst_dev_put           dst_dev_put                                  found       fentry        planned; fallback kprobe
__neigh_create        __neigh_create                               found       fexit         planned; fallback kprobe+kretprobe
neigh_destroy         neigh_destroy                                found       fentry        planned; fallback kprobe
sock_state            sock:inet_sock_set_state                     tracepoint  tp_btf        planned; fallback tracepoint
netdev_wait_allrefs   netdev_wait_allrefs_any|netdev_wait_allrefs  inlined     -             inlined (expected); not hookable
dev_hold              dev_hold                                     inlined     -             inlined (expected); not hookable
netdev_hold           netdev_hold                                  inlined     -             inlined (expected); not hookable
unshare               syscalls:sys_enter_unshare                   tracepoint  -             standby: used only if copy_net_ns cannot be hooked
fork                  sched_process_fork                           tracepoint  -             standby: used only if copy_net_ns cannot be hooked
workqueue             workqueue:workqueue_execute_start            tracepoint  -             standby: used only if cleanup_net cannot be hooked
ref_tracker_alloc     ref_tracker_alloc                            absent      -             not in kallsyms (optional: nothing degrades)
ref_tracker_free      ref_tracker_free                             absent      -             not in kallsyms (optional: nothing degrades)
ref_tracker_dir_exit  ref_tracker_dir_exit                         absent      -             not in kallsyms (optional: nothing degrades)";
        assert_eq!(before, expected);
        plan.record(
            "copy_net_ns",
            Outcome::Failed {
                alternative: 0,
                error: "EINVAL".into(),
            },
        )
        .unwrap();
        plan.record("copy_net_ns", Outcome::Attached { alternative: 1 })
            .unwrap();
        plan.record("__put_net", Outcome::Verified { alternative: 0 })
            .unwrap();
        assert!(plan
            .record("nope", Outcome::Attached { alternative: 0 })
            .is_err());
        let rows = plan.rows();
        assert_eq!(
            rows[0],
            HookRow {
                hook: "copy_net_ns".into(),
                symbol: "copy_net_ns".into(),
                status: "found".into(),
                method: "kprobe+kretprobe".into(),
                note: "fentry+fexit failed: EINVAL".into(),
            }
        );
        assert_eq!(rows[2].method, "fentry");
        assert_eq!(rows[2].note, "verified (dry run)");
        assert_eq!(rows[12].note, "inlined (expected); not hookable");
        assert_eq!(
            rows[15].note,
            "standby: used only if copy_net_ns cannot be hooked"
        );
        let j = serde_json::to_string(&rows[12]).unwrap();
        assert_eq!(
            j,
            r#"{"hook":"netdev_wait_allrefs","symbol":"netdev_wait_allrefs_any|netdev_wait_allrefs","status":"inlined","method":"-","note":"inlined (expected); not hookable"}"#
        );
    }

    /// Debian's symbols plus the tracker's (a CONFIG_NET_DEV_REFCNT_TRACKER
    /// build).
    fn debug_kernel() -> (Symbols, FilterFunctions) {
        let (s, _) = debian();
        let mut k = String::new();
        let mut names: Vec<String> = Vec::new();
        for h in HOOKS.iter().filter(|h| h.role != Role::Info) {
            let sym = h.symbols[0];
            if s.contains_function(sym) || TRACKER_HOOKS.contains(&h.name) {
                k += &format!("ffffffff81{:06x} T {sym}\n", names.len() * 0x100);
                names.push(sym.to_string());
            }
        }
        (
            Symbols::parse(&k),
            FilterFunctions::parse(&names.join("\n")),
        )
    }

    #[test]
    fn ref_tracker_is_optional_and_needs_all_three_hooks() {
        let (s, t) = debug_kernel();
        let mut plan = Plan::new(ALL, &s, Some(&t));
        for h in TRACKER_HOOKS {
            assert_eq!(methods(&plan, h), ["fentry", "kprobe"], "{h}");
        }
        assert_eq!(plan.optional().count(), 3);
        assert!(plan.full_tracer_possible());
        assert!(!plan.tracker_attached());
        plan.record("ref_tracker_alloc", Outcome::Attached { alternative: 0 })
            .unwrap();
        plan.record("ref_tracker_free", Outcome::Attached { alternative: 1 })
            .unwrap();
        plan.record(
            "ref_tracker_dir_exit",
            Outcome::Failed {
                alternative: 0,
                error: "EBUSY".into(),
            },
        )
        .unwrap();
        assert!(!plan.tracker_attached());
        assert_eq!(
            plan.tracker_unused().as_deref(),
            Some("ref_tracker_dir_exit: attach failed")
        );
        // A failed optional hook is a note, never a degradation.
        assert!(plan.degraded_reasons().is_empty());
        let row = plan
            .rows()
            .into_iter()
            .find(|r| r.hook == "ref_tracker_dir_exit")
            .unwrap();
        assert_eq!(row.note, "fentry failed: EBUSY");
        plan.record("ref_tracker_dir_exit", Outcome::Attached { alternative: 1 })
            .unwrap();
        assert!(plan.tracker_attached());
        assert_eq!(plan.tracker_unused(), None);
    }

    #[test]
    fn ref_tracker_notrace_refusal_names_the_config_option() {
        // What distribution debug kernels do: lib/ has no ftrace sites, and
        // kprobe events refuse notrace functions.
        let (s, _) = debug_kernel();
        let t = FilterFunctions::parse("copy_net_ns\n");
        let mut plan = Plan::new(ALL, &s, Some(&t));
        assert_eq!(methods(&plan, "ref_tracker_alloc"), ["kprobe"]);
        for h in TRACKER_HOOKS {
            plan.record(
                h,
                Outcome::Failed {
                    alternative: 1,
                    error: "perf_event_open failed: Invalid argument".into(),
                },
            )
            .unwrap();
        }
        let why = plan.tracker_unused().unwrap();
        assert!(
            why.starts_with(
                "ref_tracker_alloc, ref_tracker_free, ref_tracker_dir_exit: notrace \
                 (lib/ is built without ftrace)"
            ),
            "{why}"
        );
        assert!(why.contains("CONFIG_KPROBE_EVENTS_ON_NOTRACE=y"), "{why}");
    }

    #[test]
    fn ref_tracker_on_this_host_degrades_with_a_sentence() {
        // The tracker's symbols are there, but neither kprobes nor fentry.
        let (s, t) = debug_kernel();
        let plan = Plan::new(HOST, &s, Some(&t));
        assert_eq!(plan.optional().count(), 0);
        assert_eq!(
            plan.tracker_unused().unwrap(),
            "ref_tracker_alloc, ref_tracker_free, ref_tracker_dir_exit: \
             no fentry or kprobe support"
        );
        // Debian kernels: absent, and nothing degrades for it.
        let (s, t) = debian();
        let plan = Plan::new(ALL, &s, Some(&t));
        assert_eq!(
            plan.tracker_unused().unwrap(),
            "ref_tracker_alloc, ref_tracker_free, ref_tracker_dir_exit: \
             not in this kernel (CONFIG_NET_DEV_REFCNT_TRACKER off)"
        );
        assert!(plan.full_tracer_possible());
    }

    #[test]
    fn all_core_attach_fail_is_degraded() {
        let (s, t) = debian();
        let mut plan = Plan::new(ALL, &s, Some(&t));
        for a in 0..2 {
            plan.record(
                "cleanup_net",
                Outcome::Failed {
                    alternative: a,
                    error: "E".into(),
                },
            )
            .unwrap();
        }
        assert!(!plan.full_tracer_possible());
        let fb: Vec<_> = plan
            .needed_fallbacks()
            .iter()
            .map(|h| h.hook.name)
            .collect();
        assert_eq!(fb, ["workqueue"]);
        plan.record("workqueue", Outcome::Attached { alternative: 0 })
            .unwrap();
        assert_eq!(
            plan.degraded_reasons(),
            ["cleanup_net: attach failed; using workqueue instead"]
        );
        let row = &plan.rows()[1];
        assert_eq!(row.method, "-");
        assert_eq!(
            row.note,
            "fentry+fexit failed: E; kprobe+kretprobe failed: E; not hooked"
        );
    }

    #[test]
    fn host_kernel_uses_tracepoints() {
        let (s, t) = debian();
        let plan = Plan::new(HOST, &s, Some(&t));
        assert!(!plan.full_tracer_possible());
        // Only the socket tracepoint is a core hook that still works.
        let core: Vec<_> = plan.core().map(|h| h.hook.name).collect();
        assert_eq!(core, ["sock_state"]);
        let sock = plan.hook("sock_state").unwrap();
        assert_eq!(sock.status, SymbolStatus::Tracepoint);
        assert_eq!(sock.symbol, "sock:inet_sock_set_state");
        // tp_btf first (no perf record per state change), the classic
        // tracepoint if the kernel refuses it.
        assert_eq!(
            sock.candidates,
            [
                Candidate {
                    alternative: 0,
                    programs: vec![Attach {
                        program: "sock_state_btf",
                        method: BtfTracepoint,
                        target: "inet_sock_set_state".into()
                    }]
                },
                Candidate {
                    alternative: 1,
                    programs: vec![Attach {
                        program: "sock_state_tp",
                        method: Tracepoint,
                        target: "sock:inet_sock_set_state".into()
                    }]
                }
            ]
        );
        assert_eq!(
            sock.candidates[1].programs[0].tracepoint_parts(),
            Some(("sock", "inet_sock_set_state"))
        );
        let fb: Vec<_> = plan
            .needed_fallbacks()
            .iter()
            .map(|h| h.hook.name)
            .collect();
        assert_eq!(fb, ["unshare", "fork", "workqueue"]);
        let u = &plan.hook("unshare").unwrap().candidates[0].programs;
        assert_eq!(
            u[0].tracepoint_parts(),
            Some(("syscalls", "sys_enter_unshare"))
        );
        assert_eq!(u[1].program, "unshare_exit_tp");
        assert_eq!(
            plan.hook("fork").unwrap().candidates[0].programs[0].target,
            "sched_process_fork"
        );
        assert_eq!(
            plan.degraded_reasons(),
            [
                "copy_net_ns: no fentry/fexit or kprobe/kretprobe support; using unshare + fork instead",
                "cleanup_net: no fentry/fexit or kprobe/kretprobe support; using workqueue instead",
                "__put_net: no fentry or kprobe support; not seen: namespace destroy requests (last reference dropped)",
                "netdev_run_todo: no fentry/fexit or kprobe/kretprobe support; not seen: slow rtnl_unlock calls (it runs this) with their caller; start of the refcount wait",
                "netdev_refcnt_read: no fexit or kprobe/kretprobe support; not seen: devices waiting to become free, with usage count",
                "dst_init: no fentry or kprobe support; not seen: dst entries taking a device reference",
                "dst_alloc: no fexit or kretprobe support; not seen: dst entries allocated (dst_init may be inlined into it)",
                "dst_destroy: no fentry or kprobe support; not seen: dst entries freed",
                "dst_dev_put: no fentry or kprobe support; not seen: dst entries moved off a dying device (to blackhole_netdev)",
                "__neigh_create: no fexit or kprobe/kretprobe support; not seen: neighbour entries taking a device reference",
                "neigh_destroy: no fentry or kprobe support; not seen: neighbour entries freed",
            ]
        );
        let rows = plan.rows();
        assert_eq!(rows[15].method, "tracepoint");
        assert_eq!(rows[15].note, "planned: replaces copy_net_ns");
        assert_eq!(rows[16].method, "tp_btf");
        assert_eq!(
            rows[11],
            HookRow {
                hook: "sock_state".into(),
                symbol: "sock:inet_sock_set_state".into(),
                status: "tracepoint".into(),
                method: "tp_btf".into(),
                note: "planned; fallback tracepoint".into(),
            }
        );
        let doc = plan.doctor_json();
        assert_eq!(doc["capabilities"]["kprobe"], false);
        assert_eq!(doc["full_tracer_possible"], false);
        assert_eq!(doc["hooks"].as_array().unwrap().len(), HOOKS.len());
    }

    #[test]
    fn host_with_hidden_addresses_cannot_use_workqueue() {
        let s = Symbols::parse("0000000000000000 T copy_net_ns\n0000000000000000 t cleanup_net\n");
        let plan = Plan::new(HOST, &s, None);
        let w = plan.hook("workqueue").unwrap();
        assert!(w.candidates.is_empty());
        assert_eq!(
            w.skip.as_deref(),
            Some("kallsyms addresses hidden (kptr_restrict): cannot match cleanup_net work")
        );
        assert_eq!(
            plan.degraded_reasons()[1],
            "cleanup_net: no fentry/fexit or kprobe/kretprobe support; not seen: teardown batches of dying namespaces"
        );
    }

    #[test]
    fn isra_clone_only() {
        let (_, t) = debian();
        let s = Symbols::parse(
            "ffffffff81000000 T copy_net_ns\n\
             ffffffff81000100 t cleanup_net.isra.0\n\
             ffffffff81000200 t netdev_refcnt_read.constprop.0\n\
             ffffffff81000300 t netdev_run_todo.cold\n",
        );
        let plan = Plan::new(ALL, &s, Some(&t));
        let c = plan.hook("cleanup_net").unwrap();
        assert_eq!(
            c.status,
            SymbolStatus::OnlyClone("cleanup_net.isra.0".into())
        );
        // No BTF function for a clone: kprobe only, on the clone's name.
        assert_eq!(methods(&plan, "cleanup_net"), ["kprobe+kretprobe"]);
        assert_eq!(c.candidates[0].programs[0].target, "cleanup_net.isra.0");
        let r = plan.rows();
        assert_eq!(r[1].symbol, "cleanup_net.isra.0");
        assert_eq!(r[1].status, "clone");
        assert_eq!(
            r[1].note,
            "probing compiler clone cleanup_net.isra.0; planned"
        );
        // Reads its argument: a rewritten ABI would give garbage.
        let n = plan.hook("netdev_refcnt_read").unwrap();
        assert!(n.candidates.is_empty());
        assert_eq!(
            n.skip.as_deref(),
            Some("only compiler clone netdev_refcnt_read.constprop.0 exists (ABI may differ)")
        );
        // A cold tail alone means the function was inlined away.
        assert_eq!(
            plan.hook("netdev_run_todo").unwrap().status,
            SymbolStatus::Absent
        );
        // cleanup_net's address is unknown (only the clone): no workqueue.
        assert_eq!(plan.cleanup_net_addr(), None);
    }

    /// A lookup like the kernel's: any symbol, by exact name.
    fn lookup_in(table: &Symbols) -> impl FnMut(&str) -> Result<Option<u64>, ()> + '_ {
        |name| Ok(table.any_address_of(name))
    }

    #[test]
    fn btf_targets_name_every_btf_attached_candidate_once() {
        use crate::kernel::btf_raw::{KIND_FUNC, KIND_TYPEDEF};
        let (syms, traceable) = debian();
        let plan = Plan::new(ALL, &syms, Some(&traceable));
        let t = plan.btf_targets();
        assert!(t.contains(&(KIND_FUNC, "copy_net_ns".into())));
        assert!(t.contains(&(KIND_FUNC, "dst_alloc".into())));
        assert!(t.contains(&(KIND_TYPEDEF, "btf_trace_inet_sock_set_state".into())));
        let copy = t.iter().filter(|x| x.1 == "copy_net_ns").count();
        assert_eq!(copy, 1, "fentry and fexit share one name: {t:?}");
        // A kprobe-only plan needs none.
        assert!(Plan::new(HOST, &syms, Some(&traceable))
            .btf_targets()
            .iter()
            .all(|(k, _)| *k == KIND_TYPEDEF));
    }

    #[test]
    fn a_plan_from_lookups_is_the_plan_from_the_file() {
        let (mut text, _) = debian_text();
        text += "ffffffff82000000 D __per_cpu_offset\nffffffff82000100 b net_todo_list\n";
        let file = Symbols::parse(&text);
        let looked_up = symbols_by_name(
            &["ref_tracker_alloc"],
            &["__per_cpu_offset", "net_todo_list", "nd_tbl"],
            lookup_in(&file),
        )
        .unwrap()
        .expect("every attachable hook has its function");
        let rows = |s: &Symbols| Plan::new(ALL, s, None).rows();
        assert_eq!(rows(&looked_up), rows(&file));
        assert_eq!(
            looked_up.address_of("cleanup_net"),
            file.address_of("cleanup_net")
        );
        assert_eq!(
            looked_up.any_address_of("net_todo_list"),
            Some(0xffffffff82000100)
        );
        assert_eq!(looked_up.any_address_of("nd_tbl"), None);
        assert!(!looked_up.contains_function("__per_cpu_offset"));
        // Like a partial read: no address is named.
        assert_eq!(looked_up.lookup(0xffffffff81000100), None);
    }

    #[test]
    fn a_hook_that_would_take_a_clone_sends_lookups_to_the_file() {
        let (text, _) = debian_text();
        let clone = text.replace("T cleanup_net\n", "t cleanup_net.isra.0\n");
        let file = Symbols::parse(&clone);
        assert!(symbols_by_name(&[], &[], lookup_in(&file))
            .unwrap()
            .is_none());
        // An inlined hold helper, or a clone of a hook reading arguments,
        // changes nothing that is attached: no need for the file.
        let abi = text.replace("T copy_net_ns\n", "t copy_net_ns.isra.0\n");
        let file = Symbols::parse(&abi);
        let looked_up = symbols_by_name(&[], &[], lookup_in(&file))
            .unwrap()
            .unwrap();
        let status = |s: &Symbols| {
            Plan::new(ALL, s, None)
                .hook("copy_net_ns")
                .unwrap()
                .skip
                .clone()
        };
        assert_eq!(status(&looked_up), Some("not in kallsyms".into()));
        assert!(status(&file).unwrap().contains("clone"));
    }

    #[test]
    fn a_refusing_lookup_is_an_error_not_an_empty_table() {
        let r: Result<Option<Symbols>, &str> = symbols_by_name(&[], &[], |_| Err("EPERM"));
        assert_eq!(r.err(), Some("EPERM"));
    }

    #[test]
    fn a_refused_fentry_learns_notrace_after_attaching() {
        // A run plans without ftrace's list: fentry first, as if traceable.
        let (s, _) = debug_kernel();
        let mut plan = Plan::new(ALL, &s, None);
        assert_eq!(methods(&plan, "ref_tracker_alloc"), ["fentry", "kprobe"]);
        plan.record("copy_net_ns", Outcome::Attached { alternative: 0 })
            .unwrap();
        assert!(!plan.fentry_refused());
        for h in TRACKER_HOOKS {
            for (alternative, error) in [(0, "EBUSY"), (1, "EINVAL")] {
                let error = error.to_string();
                plan.record(h, Outcome::Failed { alternative, error })
                    .unwrap();
            }
        }
        assert!(plan.fentry_refused());
        assert!(plan.tracker_unused().unwrap().ends_with("attach failed"));
        plan.learn_notrace(&FilterFunctions::parse("copy_net_ns\n"));
        let why = plan.tracker_unused().unwrap();
        assert!(
            why.contains("notrace (lib/ is built without ftrace)"),
            "{why}"
        );
        let copy = plan.hook("copy_net_ns").unwrap();
        assert_eq!(
            (copy.status.clone(), copy.note.clone()),
            (SymbolStatus::Found, None)
        );
    }

    #[test]
    fn notrace_means_kprobe_only() {
        let (s, _) = debian();
        let t = FilterFunctions::parse("copy_net_ns\ncleanup_net\n");
        let plan = Plan::new(ALL, &s, Some(&t));
        assert_eq!(
            plan.hook("__put_net").unwrap().status,
            SymbolStatus::FoundNotrace
        );
        assert_eq!(methods(&plan, "__put_net"), ["kprobe"]);
        assert_eq!(plan.rows()[2].note, "notrace: no fentry; planned");
        // Without the tracefs list every found symbol counts as traceable.
        let plan = Plan::new(ALL, &s, None);
        assert_eq!(methods(&plan, "__put_net"), ["fentry", "kprobe"]);
    }

    #[test]
    fn inlined_dst_init_still_sees_dst_alloc() {
        let names = ["copy_net_ns", "dst_alloc", "dst_destroy"];
        let k: String = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{:016x} T {n}\n", 0xffffffff81000000u64 + i as u64 * 0x100))
            .collect();
        let (s, t) = (
            Symbols::parse(&k),
            FilterFunctions::parse(&names.join("\n")),
        );
        let plan = Plan::new(ALL, &s, Some(&t));
        let init = plan.hook("dst_init").unwrap();
        assert_eq!(init.status, SymbolStatus::Absent);
        assert_eq!(init.skip.as_deref(), Some("not in kallsyms"));
        assert_eq!(methods(&plan, "dst_alloc"), ["fexit", "kretprobe"]);
        assert_eq!(
            plan.hook("dst_alloc").unwrap().candidates[1].programs,
            [Attach {
                program: "dst_alloc_kretprobe",
                method: Kretprobe,
                target: "dst_alloc".into()
            }]
        );
        assert!(plan.core().any(|h| h.hook.name == "dst_alloc"));
        assert!(!plan.core().any(|h| h.hook.name == "dst_init"));
        // dst_alloc is a core hook of its own, not a fallback.
        assert!(plan
            .needed_fallbacks()
            .iter()
            .all(|h| h.hook.name != "dst_alloc"));
        assert!(plan.degraded_reasons().contains(
            &"dst_init: not in kallsyms; not seen: dst entries taking a device reference"
                .to_string()
        ));
    }

    #[test]
    fn fentry_needs_btf() {
        let (s, t) = debian();
        let caps = Capabilities { btf: false, ..ALL };
        let plan = Plan::new(caps, &s, Some(&t));
        assert_eq!(methods(&plan, "copy_net_ns"), ["kprobe+kretprobe"]);
        assert!(plan.hook("fork").unwrap().candidates.is_empty());
    }

    #[test]
    fn older_kernel_wait_symbol() {
        let s = Symbols::parse("ffffffff81000000 t netdev_wait_allrefs\n");
        let plan = Plan::new(ALL, &s, None);
        let w = plan.hook("netdev_wait_allrefs").unwrap();
        assert_eq!(
            (w.symbol.as_str(), &w.status),
            ("netdev_wait_allrefs", &SymbolStatus::Found)
        );
        assert_eq!(
            plan.hook("copy_net_ns").unwrap().status,
            SymbolStatus::Absent
        );
        assert_eq!(
            plan.hook("copy_net_ns").unwrap().skip.as_deref(),
            Some("not in kallsyms")
        );
    }
}
