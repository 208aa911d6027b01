//! Kernel stacks of object creations: ids from the `STACKS` map turned
//! into `function+0xoff [module]` frames. A module loaded after start-up
//! (the usual suspect) is not in the kallsyms read at start, so an
//! unknown address triggers one re-read of /proc/kallsyms (at most once a
//! second).
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use aya::maps::{stack_trace::StackTraceMap, MapData};
use netns_trace::kallsyms::Symbols;

pub struct StackResolver {
    map: StackTraceMap<MapData>,
    symbols: Symbols,
    reloaded: Option<Instant>,
    cache: HashMap<i32, Vec<String>>,
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
        }
    }

    pub fn resolve(&mut self, id: i32) -> Vec<String> {
        if id < 0 {
            return vec![format!("(no stack: bpf_get_stackid error {id})")];
        }
        if let Some(frames) = self.cache.get(&id) {
            return frames.clone();
        }
        let Ok(trace) = self.map.get(&(id as u32), 0) else {
            return vec!["(stack no longer in the map)".into()];
        };
        let ips: Vec<u64> = trace.frames().iter().map(|f| f.ip).collect();
        let unknown = ips.iter().any(|ip| self.symbols.lookup(*ip).is_none());
        let may_reload = self
            .reloaded
            .is_none_or(|at| at.elapsed() > Duration::from_secs(1));
        if unknown && may_reload {
            if let Ok(text) = std::fs::read_to_string("/proc/kallsyms") {
                self.symbols = Symbols::parse(&text);
            }
            self.reloaded = Some(Instant::now());
        }
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
