//! Kernel stacks of object creations: ids from the `STACKS` map turned
//! into `function+0xoff [module]` frames. A module loaded after start-up
//! (the usual suspect) is not in the kallsyms read at start, so an
//! unknown address triggers one re-read of /proc/kallsyms (at most once a
//! second).
use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    rc::Rc,
    time::{Duration, Instant},
};

use aya::maps::{stack_trace::StackTraceMap, MapData};
use netns_trace::exact::CallPath;
use netns_trace::kallsyms::{is_context_marker, Symbols};
use netns_trace::session::Stacks;

/// Call chains read in userspace (breakpoint samples from the perf ring,
/// the watchpoint fallback), given ids beyond the `STACKS` map's (16384
/// entries) so the ledger and the resolver treat them as stack ids.
#[derive(Default)]
pub struct Callchains {
    ids: HashMap<Vec<u64>, i32>,
    chains: Vec<Vec<u64>>,
}

pub type SharedCallchains = Rc<RefCell<Callchains>>;

const FIRST_CHAIN_ID: i32 = 1 << 24;
/// Distinct chains kept; beyond, a chain is reported as not taken.
const MAX_CHAINS: usize = 1 << 16;
/// What `bpf_get_stackid` returns when its map is full (-ENOSPC).
const NO_SPACE: i32 = -28;

impl Callchains {
    /// The id of this chain (the same chain, the same id).
    pub fn intern(&mut self, ips: &[u64]) -> i32 {
        if let Some(&id) = self.ids.get(ips) {
            return id;
        }
        if self.chains.len() >= MAX_CHAINS {
            return NO_SPACE;
        }
        let id = FIRST_CHAIN_ID + self.chains.len() as i32;
        self.chains.push(ips.to_vec());
        self.ids.insert(ips.to_vec(), id);
        id
    }

    fn get(&self, id: i32) -> Option<&[u64]> {
        let i = usize::try_from(id.checked_sub(FIRST_CHAIN_ID)?).ok()?;
        self.chains.get(i).map(Vec::as_slice)
    }
}

/// The whole symbol table being read in the background: trace::run starts
/// it once the hooks are attached, so start-up does not wait ~0.3 s for it.
/// The thread runs at idle priority (SCHED_IDLE): on a busy host it takes
/// no CPU from the workload being traced; when a frame must be named now,
/// the resolver raises it back to normal and waits.
pub struct LoadingSymbols {
    thread: std::thread::JoinHandle<anyhow::Result<Symbols>>,
    /// The thread's tid, once it has set its own priority (0 before).
    tid: std::sync::Arc<std::sync::atomic::AtomicI32>,
}

impl LoadingSymbols {
    pub fn spawn(read: fn() -> anyhow::Result<Symbols>) -> std::io::Result<Self> {
        let tid = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
        let shared = tid.clone();
        let thread = std::thread::Builder::new()
            .name("kallsyms".into())
            .spawn(move || {
                if set_policy(0, libc::SCHED_IDLE) {
                    shared.store(
                        unsafe { libc::gettid() },
                        std::sync::atomic::Ordering::SeqCst,
                    );
                }
                let t = std::time::Instant::now();
                let symbols = read();
                log::debug!("start-up: whole symbol table read in {:?}", t.elapsed());
                symbols
            })?;
        Ok(LoadingSymbols { thread, tid })
    }

    fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the table, at normal priority from now on.
    fn join(self) -> std::thread::Result<anyhow::Result<Symbols>> {
        let tid = self.tid.load(std::sync::atomic::Ordering::SeqCst);
        if tid != 0 && !self.thread.is_finished() {
            set_policy(tid, libc::SCHED_OTHER);
        }
        self.thread.join()
    }
}

/// sched_setscheduler for a thread of this process (0: the caller); no
/// privilege is needed to lower a thread to SCHED_IDLE or to bring it back.
/// False (logged) if the kernel refused.
fn set_policy(tid: i32, policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    let ok = unsafe { libc::sched_setscheduler(tid, policy, &param) } == 0;
    if !ok {
        log::debug!(
            "sched_setscheduler({tid}, {policy}): {}",
            std::io::Error::last_os_error()
        );
    }
    ok
}

pub struct StackResolver {
    map: StackTraceMap<MapData>,
    callchains: SharedCallchains,
    symbols: Symbols,
    /// Until its first use, the table still being read; `symbols` is the
    /// start-up's partial one meanwhile.
    loading: Option<LoadingSymbols>,
    /// Stacks to name as soon as the table is read (`warm` while loading).
    deferred: Vec<i32>,
    reloaded: Option<Instant>,
    cache: HashMap<i32, Vec<String>>,
    paths: HashMap<i32, CallPath>,
    unknowable: HashSet<u64>,
}

impl Stacks for StackResolver {
    fn frames(&mut self, id: i32) -> Vec<String> {
        self.settle();
        self.resolve(id)
    }

    fn call_path(&mut self, id: i32) -> CallPath {
        self.settle();
        self.functions(id)
    }

    fn loading(&self) -> bool {
        self.loading.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// The first events after attaching arrive while the table is still
    /// being read: their stacks wait in `deferred` rather than the event
    /// for the table. The read started before they happened, so it holds
    /// what they name (a module loaded since is found by the re-read).
    fn warm(&mut self, id: i32) {
        if self.loading() {
            self.deferred.push(id);
            return;
        }
        self.settle();
        let _ = self.resolve(id);
    }

    fn symbolize(&mut self, ips: &[u64]) -> Vec<String> {
        self.settle();
        let ips: Vec<u64> = ips.iter().copied().filter(|&ip| ip != 0).collect();
        self.reload_if_unknown(&ips);
        drop_trampoline_returns(self.named_frames(&ips))
    }
}

/// A function traced with fentry/fexit appears twice in a sleeping task's
/// stack: its body, then its patched entry (`func+0x9`) where the BPF
/// trampoline called it. The second is the attach machinery: dropped.
fn drop_trampoline_returns(frames: Vec<String>) -> Vec<String> {
    let func = |f: &str| f.split('+').next().unwrap_or(f).to_string();
    let entry_offset = |f: &str| {
        f.split('+')
            .nth(1)
            .and_then(|o| o.split(' ').next())
            .and_then(|o| u64::from_str_radix(o.trim_start_matches("0x"), 16).ok())
            .is_some_and(|o| o < 0x10)
    };
    let mut out: Vec<String> = Vec::with_capacity(frames.len());
    for f in frames {
        if out.last().is_some_and(|prev| func(prev) == func(&f)) && entry_offset(&f) {
            continue;
        }
        out.push(f);
    }
    out
}

/// Frames of the attach machinery itself, not worth showing.
fn is_probe_frame(name: &str) -> bool {
    name.starts_with("bpf_")
        || name.starts_with("kprobe")
        || name.starts_with("__kretprobe")
        || name.starts_with("arch_rethook")
        || name.starts_with("rethook")
        || name.starts_with("ftrace")
}

impl StackResolver {
    pub fn new(
        map: StackTraceMap<MapData>,
        symbols: Symbols,
        loading: Option<LoadingSymbols>,
        callchains: SharedCallchains,
    ) -> Self {
        Self {
            map,
            callchains,
            symbols,
            loading,
            deferred: Vec::new(),
            reloaded: None,
            cache: HashMap::new(),
            paths: HashMap::new(),
            unknowable: HashSet::new(),
        }
    }

    /// Waits for the background read, once. If it failed, frames outside
    /// the partial table stay raw addresses until a re-read succeeds.
    fn settle(&mut self) {
        let Some(thread) = self.loading.take() else {
            return;
        };
        match thread.join() {
            Ok(Ok(symbols)) => self.symbols = symbols,
            Ok(Err(e)) => log::warn!("{e:#}: stack frames are named at the next re-read"),
            Err(_) => log::warn!(
                "reading /proc/kallsyms failed: stack frames are named at the next re-read"
            ),
        }
        for id in std::mem::take(&mut self.deferred) {
            let _ = self.resolve(id);
        }
    }

    /// Function start addresses, leaf first; cached per stack id (a stack
    /// id always names the same stack while it is in the map).
    fn functions(&mut self, id: i32) -> CallPath {
        if let Some(p) = self.paths.get(&id) {
            return p.clone();
        }
        let Some(ips) = self.addresses(id) else {
            return CallPath::from([]);
        };
        self.reload_if_unknown(&ips);
        let path: CallPath = ips
            .iter()
            .map(|&ip| self.symbols.lookup(ip).map_or(ip, |(_, off, _)| ip - off))
            .collect();
        self.paths.insert(id, path.clone());
        path
    }

    /// The stack's return addresses (perf's context markers dropped), with
    /// kallsyms re-read if one is unknown; None if the id is not in the map.
    fn addresses(&mut self, id: i32) -> Option<Vec<u64>> {
        let raw: Vec<u64> = match self.callchains.borrow().get(id) {
            Some(chain) => chain.to_vec(),
            None => {
                let trace = self.map.get(&(id as u32), 0).ok()?;
                trace.frames().iter().map(|f| f.ip).collect()
            }
        };
        let ips: Vec<u64> = raw
            .into_iter()
            .filter(|ip| !is_context_marker(*ip))
            .collect();
        Some(ips)
    }

    /// Re-reads /proc/kallsyms (at most once a second) when an address is
    /// in no known symbol: a module loaded after start-up.
    /// An address still unknown after a re-read (a trampoline, BPF code)
    /// never triggers another: parsing kallsyms is the loader's most
    /// expensive step.
    /// True when every address is named or known to be unnameable (the
    /// stack's names are final).
    fn reload_if_unknown(&mut self, ips: &[u64]) -> bool {
        let unknown: Vec<u64> = ips
            .iter()
            .copied()
            .filter(|ip| self.symbols.lookup(*ip).is_none() && !self.unknowable.contains(ip))
            .collect();
        if unknown.is_empty() {
            return true;
        }
        let may_reload = self
            .reloaded
            .is_none_or(|at| at.elapsed() > Duration::from_secs(1));
        if !may_reload {
            return false;
        }
        if let Ok(symbols) = crate::read_kallsyms() {
            self.symbols = symbols;
        }
        self.reloaded = Some(Instant::now());
        self.unknowable.extend(
            unknown
                .into_iter()
                .filter(|ip| self.symbols.lookup(*ip).is_none()),
        );
        true
    }

    /// Each address named with the current table, the attach machinery
    /// left out.
    fn named_frames(&self, ips: &[u64]) -> Vec<String> {
        ips.iter()
            .map(|&ip| (ip, self.symbols.symbolize(ip)))
            .filter(|(ip, f)| {
                let probe = is_probe_frame(f);
                if probe {
                    log::debug!("{ip:#x} ({f}) left out of a stack: attach machinery");
                }
                !probe
            })
            .map(|(_, f)| f)
            .collect()
    }

    pub fn resolve(&mut self, id: i32) -> Vec<String> {
        if id < 0 {
            return vec![format!("(no stack: bpf_get_stackid error {id})")];
        }
        if let Some(frames) = self.cache.get(&id) {
            return frames.clone();
        }
        let Some(ips) = self.addresses(id) else {
            return vec!["(stack no longer in the map)".into()];
        };
        let settled = self.reload_if_unknown(&ips);
        let frames = self.named_frames(&ips);
        // Kept once every frame had its best chance: named, or still
        // unknown in a table read after the stack was taken. Named again
        // later, an address freed since (a module's init code) could be
        // taken for whatever reused it.
        if settled {
            self.cache.insert(id, frames.clone());
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn callchains_get_stable_ids_apart_from_the_map() {
        let mut c = super::Callchains::default();
        let a = c.intern(&[1, 2]);
        assert!(a >= 16384);
        assert_eq!(c.intern(&[3]), a + 1);
        assert_eq!(c.intern(&[1, 2]), a);
        assert_eq!(c.get(a), Some(&[1u64, 2][..]));
        assert_eq!(c.get(5), None);
        assert_eq!(c.get(-28), None);
    }

    #[test]
    fn trampoline_entries_are_dropped() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            super::drop_trampoline_returns(f(&[
                "msleep+0x2b",
                "netdev_run_todo+0x36c",
                "netdev_run_todo+0x9",
                "cleanup_net+0x277",
                "cleanup_net+0x9",
            ])),
            f(&["msleep+0x2b", "netdev_run_todo+0x36c", "cleanup_net+0x277"])
        );
        // Recursion deeper in a function is kept.
        let rec = f(&["walk+0x40", "walk+0x88"]);
        assert_eq!(super::drop_trampoline_returns(rec.clone()), rec);
    }
}
