//! Kernel stacks of object creations: ids from the `STACKS` map turned
//! into `function+0xoff [module]` frames. A module loaded after start-up
//! (the usual suspect) is not in the kallsyms read at start, so an
//! unknown address triggers one re-read of /proc/kallsyms (at most once a
//! second).
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use aya::maps::{stack_trace::StackTraceMap, MapData};
use netns_trace::exact::CallPath;
use netns_trace::kallsyms::{is_context_marker, Symbols};
use netns_trace::session::Stacks;

pub struct StackResolver {
    map: StackTraceMap<MapData>,
    symbols: Symbols,
    reloaded: Option<Instant>,
    cache: HashMap<i32, Vec<String>>,
    paths: HashMap<i32, CallPath>,
    unknowable: HashSet<u64>,
}

impl Stacks for StackResolver {
    fn frames(&mut self, id: i32) -> Vec<String> {
        self.resolve(id)
    }

    fn call_path(&mut self, id: i32) -> CallPath {
        self.functions(id)
    }

    fn symbolize(&mut self, ips: &[u64]) -> Vec<String> {
        let ips: Vec<u64> = ips.iter().copied().filter(|&ip| ip != 0).collect();
        self.reload_if_unknown(&ips);
        ips.iter().map(|&ip| self.symbols.symbolize(ip)).collect()
    }
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
    pub fn new(map: StackTraceMap<MapData>, symbols: Symbols) -> Self {
        Self {
            map,
            symbols,
            reloaded: None,
            cache: HashMap::new(),
            paths: HashMap::new(),
            unknowable: HashSet::new(),
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
        let trace = self.map.get(&(id as u32), 0).ok()?;
        let ips: Vec<u64> = trace
            .frames()
            .iter()
            .map(|f| f.ip)
            .filter(|ip| !is_context_marker(*ip))
            .collect();
        self.reload_if_unknown(&ips);
        Some(ips)
    }

    /// Re-reads /proc/kallsyms (at most once a second) when an address is
    /// in no known symbol: a module loaded after start-up.
    /// An address still unknown after a re-read (a trampoline, BPF code)
    /// never triggers another: parsing kallsyms is the loader's most
    /// expensive step.
    fn reload_if_unknown(&mut self, ips: &[u64]) {
        let unknown: Vec<u64> = ips
            .iter()
            .copied()
            .filter(|ip| self.symbols.lookup(*ip).is_none() && !self.unknowable.contains(ip))
            .collect();
        let may_reload = self
            .reloaded
            .is_none_or(|at| at.elapsed() > Duration::from_secs(1));
        if !unknown.is_empty() && may_reload {
            if let Ok(text) = std::fs::read_to_string("/proc/kallsyms") {
                self.symbols = Symbols::parse(&text);
            }
            self.reloaded = Some(Instant::now());
            self.unknowable.extend(
                unknown
                    .into_iter()
                    .filter(|ip| self.symbols.lookup(*ip).is_none()),
            );
        }
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
        let frames: Vec<String> = ips
            .iter()
            .map(|ip| self.symbols.symbolize(*ip))
            .filter(|f| !is_probe_frame(f))
            .collect();
        // Only cache fully resolved stacks: a module may still appear.
        if !ips.iter().any(|ip| self.symbols.lookup(*ip).is_none()) {
            self.cache.insert(id, frames.clone());
        }
        frames
    }
}
