//! Network namespaces to containers.
//!
//! A namespace is mapped when it is made (`netns_create`: the creating
//! process's cgroup names the container) or, for namespaces alive when the
//! tracer starts, by the attach-time scan of every process's `ns/net`
//! inode and cgroup. Names and images come from the Docker Engine API,
//! asked lazily by the loader (never on the event path) and cached here.
//! A namespace that is neither was gone before the tracer started: nothing
//! is left to ask, and records say so instead of guessing.
//!
//! Everything here is pure but for reading the procfs tree given
//! (`--proc-root`), so it is tested on fixture trees.

pub mod cgroup;
pub mod docker;
pub mod procfs;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use crate::output::{Container, Record};

pub use docker::Info;

/// Said of namespaces no process showed at attach and not made since.
pub const DIED_BEFORE_ATTACH: &str = "namespace died before attach";
/// Said when the creating process exited before its cgroup was read and
/// no process is left in the namespace.
pub const CREATOR_GONE: &str = "creating process exited before it was mapped";

/// How long records wait for a Docker API answer before they are printed
/// with the container id only.
pub const API_WAIT_NS: u64 = 2_000_000_000;
/// How soon a container the API did not know is asked about again.
pub const API_RETRY_NS: u64 = 5_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Container(String),
    NotContainer,
    Unmapped(&'static str),
}

/// The mapping state: namespace inode -> container id -> name and image.
#[derive(Debug)]
pub struct ContainerMap {
    proc_root: PathBuf,
    init_netns: u32,
    netns: HashMap<u32, Origin>,
    info: HashMap<String, Info>,
    /// Ids the API was asked about and did not list, with the time.
    missing: HashMap<String, u64>,
    /// When each container id was first mapped.
    mapped_at: HashMap<String, u64>,
    api_available: bool,
    in_flight_since: Option<u64>,
    api_error: Option<String>,
}

impl ContainerMap {
    /// `api_available`: the Docker API socket exists (else names and
    /// images stay unknown and nothing waits for them).
    pub fn new(proc_root: PathBuf, init_netns: u32, api_available: bool) -> Self {
        ContainerMap {
            proc_root,
            init_netns,
            netns: HashMap::new(),
            info: HashMap::new(),
            missing: HashMap::new(),
            mapped_at: HashMap::new(),
            api_available,
            in_flight_since: None,
            api_error: None,
        }
    }

    /// The attach-time scan: map the namespace of every process, and
    /// return the (non-initial) namespaces of the processes in `scope`
    /// (the `--pid` tree), which belong in the namespace scope.
    pub fn scan(&mut self, scope: &[u32]) -> Vec<u32> {
        let procs = procfs::processes(&self.proc_root).unwrap_or_default();
        let mut scoped = Vec::new();
        for p in &procs {
            let Some(inum) = procfs::netns_inode(&self.proc_root, p.pid) else {
                continue;
            };
            if inum == self.init_netns {
                continue;
            }
            if scope.contains(&p.pid) && !scoped.contains(&inum) {
                scoped.push(inum);
            }
            let id = procfs::cgroup(&self.proc_root, p.pid)
                .as_deref()
                .and_then(cgroup::container_id);
            match (id, self.netns.get(&inum)) {
                // One process in a container is enough to name it.
                (Some(id), _) => {
                    self.netns.insert(inum, Origin::Container(id));
                }
                (None, None) => {
                    self.netns.insert(inum, Origin::NotContainer);
                }
                (None, Some(_)) => {}
            }
        }
        scoped.sort_unstable();
        scoped
    }

    /// A namespace was made by process `tgid`: map it by that process's
    /// cgroup (read now, while it lives).
    pub fn on_create(&mut self, inum: u32, tgid: u32, now_ns: u64) {
        if inum == 0 {
            return;
        }
        let origin = match procfs::cgroup(&self.proc_root, tgid) {
            Some(text) => match cgroup::container_id(&text) {
                Some(id) => Origin::Container(id),
                None => Origin::NotContainer,
            },
            // runc's namespace-making child exits as soon as it has
            // forked the container's init: ask the processes now in it.
            None => self.origin_from_members(inum),
        };
        if let Origin::Container(id) = &origin {
            self.mapped_at.entry(id.clone()).or_insert(now_ns);
        }
        self.netns.insert(inum, origin);
    }

    /// The origin of `inum` from the processes in it now (a procfs scan).
    fn origin_from_members(&self, inum: u32) -> Origin {
        let procs = procfs::processes(&self.proc_root).unwrap_or_default();
        let mut member = false;
        for p in procs {
            if procfs::netns_inode(&self.proc_root, p.pid) != Some(inum) {
                continue;
            }
            member = true;
            let cg = procfs::cgroup(&self.proc_root, p.pid);
            if let Some(id) = cg.as_deref().and_then(cgroup::container_id) {
                return Origin::Container(id);
            }
        }
        if member {
            Origin::NotContainer
        } else {
            Origin::Unmapped(CREATOR_GONE)
        }
    }

    /// The container of namespace `inum`, as records show it.
    pub fn lookup(&self, inum: u32) -> Container {
        match self.netns.get(&inum) {
            None if inum == self.init_netns => Container::None,
            None => Container::Unknown(DIED_BEFORE_ATTACH),
            Some(Origin::NotContainer) => Container::None,
            Some(Origin::Unmapped(why)) => Container::Unknown(why),
            Some(Origin::Container(id)) => {
                let info = self.info.get(id);
                Container::Known {
                    id: id.clone(),
                    name: info.and_then(|i| i.name.clone()),
                    image: info.and_then(|i| i.image.clone()),
                }
            }
        }
    }

    /// Ids mapped but not named by the API yet, and not recently missed.
    fn unnamed(&self, now_ns: u64) -> impl Iterator<Item = &String> + '_ {
        self.netns.values().filter_map(move |o| match o {
            Origin::Container(id)
                if !self.info.contains_key(id)
                    && self
                        .missing
                        .get(id)
                        .is_none_or(|&t| now_ns.saturating_sub(t) >= API_RETRY_NS) =>
            {
                Some(id)
            }
            _ => None,
        })
    }

    /// Should the loader ask the API now? Marks the request in flight.
    pub fn want_api(&mut self, now_ns: u64) -> bool {
        if !self.api_available || self.in_flight_since.is_some() {
            return false;
        }
        if self.unnamed(now_ns).next().is_none() {
            return false;
        }
        self.in_flight_since = Some(now_ns);
        true
    }

    /// The API's answer (or why there was none). Returns an error to log
    /// when it is new (not the same failure again).
    pub fn on_api(&mut self, now_ns: u64, answer: Result<Vec<Info>, String>) -> Option<String> {
        let sent = self.in_flight_since.take().unwrap_or(now_ns);
        // Mapped after the request went out: the answer may predate them,
        // so they are asked again at once rather than marked missing.
        let asked: Vec<String> = self
            .unnamed(now_ns)
            .filter(|id| self.mapped_at.get(*id).is_none_or(|&t| t <= sent))
            .cloned()
            .collect();
        match answer {
            Ok(list) => {
                self.api_error = None;
                for i in list {
                    self.missing.remove(&i.id);
                    self.info.insert(i.id.clone(), i);
                }
                for id in asked {
                    if !self.info.contains_key(&id) {
                        self.missing.insert(id, now_ns);
                    }
                }
                None
            }
            Err(e) => {
                for id in asked {
                    self.missing.insert(id, now_ns);
                }
                let new = self.api_error.as_ref() != Some(&e);
                self.api_error = Some(e.clone());
                new.then_some(e)
            }
        }
    }

    /// Is a record about a container that an API request in flight
    /// (younger than [`API_WAIT_NS`]) may name?
    fn awaits_api(&self, rec: &Record, now_ns: u64) -> bool {
        let Some(since) = self.in_flight_since else {
            return false;
        };
        if now_ns.saturating_sub(since) >= API_WAIT_NS {
            return false;
        }
        let named = |inum: &u32| match self.netns.get(inum) {
            Some(Origin::Container(id)) => self.info.contains_key(id),
            _ => true,
        };
        !record_netns(rec).iter().all(named)
    }

    /// Fill the container fields of a record.
    pub fn annotate(&self, rec: &mut Record) {
        match rec {
            Record::NetnsCreate(r) => r.container = self.lookup(r.netns),
            Record::NetnsDestroy(r) => r.container = self.lookup(r.netns),
            Record::DevWait(r) | Record::DevReleased(r) => r.container = self.lookup(r.netns),
            Record::Socket(r) => r.container = self.lookup(r.netns),
            Record::CleanupNet(r) => {
                r.containers = Some(r.netns.iter().map(|&n| self.lookup(n)).collect())
            }
            Record::Summary(r) => {
                for w in &mut r.devices_still_waiting {
                    w.container = self.lookup(w.netns);
                }
            }
            Record::Incident(r) => {
                for d in &mut r.stuck {
                    d.container = self.lookup(d.netns);
                }
            }
            Record::RtnlUnlock(_)
            | Record::Lost(_)
            | Record::Attach(_)
            | Record::Watch(_)
            | Record::Scan(_)
            | Record::Blocked(_) => {}
        }
    }
}

/// Namespaces a record is about.
fn record_netns(rec: &Record) -> Vec<u32> {
    match rec {
        Record::NetnsCreate(r) => vec![r.netns],
        Record::NetnsDestroy(r) => vec![r.netns],
        Record::DevWait(r) | Record::DevReleased(r) => vec![r.netns],
        Record::Socket(r) => vec![r.netns],
        Record::CleanupNet(r) => r.netns.clone(),
        Record::Summary(r) => r.devices_still_waiting.iter().map(|w| w.netns).collect(),
        Record::Incident(r) => r.stuck.iter().map(|d| d.netns).collect(),
        _ => vec![],
    }
}

/// Records on their way out: in order, each held while the API request
/// that can name its container is in flight (at most [`API_WAIT_NS`]),
/// so the event loop never waits on the API and output order is kept.
#[derive(Debug, Default)]
pub struct OutputQueue {
    queue: VecDeque<Record>,
}

impl OutputQueue {
    /// Queue a record; a creation maps its namespace now (the creator may
    /// not live long).
    pub fn push(&mut self, map: &mut ContainerMap, rec: Record, now_ns: u64) {
        if let Record::NetnsCreate(r) = &rec {
            if r.err == 0 {
                map.on_create(r.netns, r.tgid, now_ns);
            }
        }
        self.queue.push_back(rec);
    }

    /// Records ready to print, annotated, oldest first.
    pub fn ready(&mut self, map: &ContainerMap, now_ns: u64) -> Vec<Record> {
        let mut out = Vec::new();
        while let Some(front) = self.queue.front() {
            if map.awaits_api(front, now_ns) {
                break;
            }
            let mut rec = self.queue.pop_front().expect("front exists");
            map.annotate(&mut rec);
            out.push(rec);
        }
        out
    }

    /// Everything still queued, annotated with what is known (at exit).
    pub fn drain(&mut self, map: &ContainerMap) -> Vec<Record> {
        self.queue
            .drain(..)
            .map(|mut rec| {
                map.annotate(&mut rec);
                rec
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests;
