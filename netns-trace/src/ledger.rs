//! The attribution ledger: which tracked kernel objects hold which device.
//!
//! Pure: it takes decoded `ObjHold` / `ObjRelease` / `SockState` events and
//! answers "who holds device X" for a usage count read by the kernel. What
//! it cannot see (objects created before the tracer started, holds taken by
//! code it does not hook, lost events) stays in `unattributed`: it is
//! never hidden and attribution never exceeds the count.
use std::collections::{HashMap, VecDeque};

use netns_trace_common::{found_by, obj_kind, release_reason, ObjHold, ObjRelease, SockState};
use serde::Serialize;

use crate::events::cstr_lossy;

/// TCP_CLOSE: a socket in this state is forgotten.
const TCP_CLOSE: u8 = 7;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
/// How many recent releases are remembered to reorder late holds.
const TOMBSTONES: usize = 4096;

#[derive(Debug, Clone)]
struct Object {
    kind: u32,
    dev: u64,
    family: u32,
    key: [u8; 16],
    created_ns: u64,
    pid: u32,
    comm: String,
    stack_id: i32,
    /// Found by a scan of kernel tables: created before the tracer saw it.
    scanned: bool,
}

/// A tracked socket (TCP state changes in non-initial namespaces).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SocketInfo {
    #[serde(serialize_with = "crate::output::hex")]
    pub sk: u64,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    pub state: u8,
    pub kernel: bool,
    #[serde(skip)]
    pub netns: u32,
    #[serde(skip)]
    pub dst: u64,
    #[serde(skip)]
    pub dst_dev: u64,
    #[serde(skip)]
    pub pid: u32,
    #[serde(skip)]
    pub comm: String,
}

/// One object attributed as holding a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    /// "neighbour", "dst" or "socket".
    pub kind: &'static str,
    pub obj: u64,
    /// Neighbour: its address.
    pub address: Option<String>,
    /// "ipv4" / "ipv6" when known.
    pub family: Option<&'static str>,
    pub created_ns: u64,
    pub pid: u32,
    pub comm: String,
    pub stack_id: i32,
    /// Symbolised by the session's resolver.
    pub stack: Vec<String>,
    pub found_by: &'static str,
    /// The socket that caches this dst, or the socket itself.
    pub socket: Option<SocketInfo>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HolderReport {
    pub holders: Vec<Holder>,
    pub attributed: u32,
    /// refcnt − baseline − attributed, never negative.
    pub unattributed: i32,
    /// Live objects beyond what the count allows (they cannot all hold).
    pub over: u32,
    /// False once events were lost or maps were full.
    pub complete: bool,
}

#[derive(Debug)]
pub struct Ledger {
    baseline: i32,
    max_objects: usize,
    objects: HashMap<u64, Object>,
    tombstones: HashMap<u64, u64>,
    tombstone_order: VecDeque<u64>,
    /// By `sk`: when the socket was first seen, and its last state.
    sockets: HashMap<u64, (u64, SocketInfo)>,
    /// Cached dst address -> sockets caching it.
    by_dst: HashMap<u64, Vec<u64>>,
    incomplete: bool,
    pub dropped_full: u64,
    pub stale: u64,
}

fn family_name(family: u32) -> Option<&'static str> {
    match family {
        AF_INET => Some("ipv4"),
        AF_INET6 => Some("ipv6"),
        _ => None,
    }
}

/// An address from the first 4 (IPv4) or 16 (IPv6) bytes of `key`.
pub fn address(family: u32, key: &[u8; 16]) -> Option<String> {
    match family {
        AF_INET => Some(std::net::Ipv4Addr::new(key[0], key[1], key[2], key[3]).to_string()),
        AF_INET6 => Some(std::net::Ipv6Addr::from(*key).to_string()),
        _ => None,
    }
}

impl Ledger {
    pub fn new(baseline: i32) -> Self {
        Self::with_capacity(baseline, 65536)
    }

    pub fn with_capacity(baseline: i32, max_objects: usize) -> Self {
        Self {
            baseline,
            max_objects,
            objects: HashMap::new(),
            tombstones: HashMap::new(),
            tombstone_order: VecDeque::new(),
            sockets: HashMap::new(),
            by_dst: HashMap::new(),
            incomplete: false,
            dropped_full: 0,
            stale: 0,
        }
    }

    /// Events were lost or a kernel map was full: reports say so.
    pub fn set_incomplete(&mut self) {
        self.incomplete = true;
    }

    pub fn objects(&self) -> usize {
        self.objects.len()
    }

    pub fn on_hold(&mut self, ev: &ObjHold) {
        let scanned = ev.found_by == found_by::SCAN;
        // A release of this address after this hold already arrived (the
        // two came from different CPUs): the hold is history.
        if self
            .tombstones
            .get(&ev.obj)
            .is_some_and(|&released| released >= ev.hdr.ts_ns)
        {
            return;
        }
        if self.objects.contains_key(&ev.obj) {
            return; // dst_init and dst_alloc may both report one dst
        }
        if self.objects.len() >= self.max_objects {
            self.dropped_full += 1;
            self.incomplete = true;
            return;
        }
        self.objects.insert(
            ev.obj,
            Object {
                kind: ev.obj_kind,
                dev: ev.dev,
                family: ev.family,
                key: ev.key,
                // A scanned object's creation was not seen: no time, task
                // or stack (the header is the scanning loader's).
                created_ns: if scanned { 0 } else { ev.hdr.ts_ns },
                pid: if scanned { 0 } else { ev.hdr.pid },
                comm: if scanned {
                    String::new()
                } else {
                    cstr_lossy(&ev.hdr.comm)
                },
                stack_id: ev.stack_id,
                scanned,
            },
        );
    }

    pub fn on_release(&mut self, ev: &ObjRelease) {
        // Both a free and a move to blackhole_netdev end the hold on the
        // device; an unknown object predates the tracer (or was lost).
        // A release older than the live object is that of an earlier
        // object at the same address, arriving late: keep the new one.
        if self
            .objects
            .get(&ev.obj)
            .is_some_and(|o| o.created_ns > ev.hdr.ts_ns)
        {
            return;
        }
        self.objects.remove(&ev.obj);
        if ev.obj_kind == obj_kind::DST {
            // Sockets caching it no longer reach the device through it.
            for sk in self.by_dst.remove(&ev.obj).unwrap_or_default() {
                if let Some((_, s)) = self.sockets.get_mut(&sk) {
                    s.dst = 0;
                    s.dst_dev = 0;
                }
            }
        }
        if ev.reason == release_reason::DESTROYED || ev.reason == release_reason::MOVED_OFF_DEVICE {
            if self.tombstones.insert(ev.obj, ev.hdr.ts_ns).is_none() {
                self.tombstone_order.push_back(ev.obj);
            }
            while self.tombstone_order.len() > TOMBSTONES {
                if let Some(old) = self.tombstone_order.pop_front() {
                    self.tombstones.remove(&old);
                }
            }
        }
    }

    /// Records a socket's state; returns its info for output.
    pub fn on_sock(&mut self, ev: &SockState) -> SocketInfo {
        let family = u32::from(ev.family);
        let info = SocketInfo {
            sk: ev.sk,
            saddr: address(family, &ev.saddr).unwrap_or_default(),
            sport: ev.sport,
            daddr: address(family, &ev.daddr).unwrap_or_default(),
            dport: ev.dport,
            state: ev.newstate,
            kernel: ev.kernel != 0,
            netns: ev.inum,
            dst: ev.dst,
            dst_dev: ev.dst_dev,
            pid: ev.hdr.pid,
            comm: cstr_lossy(&ev.hdr.comm),
        };
        let old = if ev.newstate == TCP_CLOSE {
            self.sockets.remove(&ev.sk)
        } else if let Some((first, old)) = self.sockets.get(&ev.sk).cloned() {
            self.sockets.insert(ev.sk, (first, info.clone()));
            Some((first, old))
        } else if self.sockets.len() < self.max_objects {
            self.sockets.insert(ev.sk, (ev.hdr.ts_ns, info.clone()));
            None
        } else {
            self.dropped_full += 1;
            self.incomplete = true;
            return info;
        };
        let old_dst = old.map_or(0, |(_, s)| s.dst);
        let new_dst = if ev.newstate == TCP_CLOSE { 0 } else { ev.dst };
        if old_dst != new_dst {
            self.unindex(old_dst, ev.sk);
            if new_dst != 0 {
                self.by_dst.entry(new_dst).or_default().push(ev.sk);
            }
        }
        info
    }

    fn unindex(&mut self, dst: u64, sk: u64) {
        if let Some(v) = self.by_dst.get_mut(&dst) {
            v.retain(|&x| x != sk);
            if v.is_empty() {
                self.by_dst.remove(&dst);
            }
        }
    }

    /// The newest tracked socket caching `dst` (first seen last; ties by
    /// address, so reports are deterministic).
    fn socket_of(&self, dst: u64) -> Option<&SocketInfo> {
        self.by_dst
            .get(&dst)?
            .iter()
            .filter_map(|sk| self.sockets.get(sk))
            .max_by_key(|(first, s)| (*first, s.sk))
            .map(|(_, s)| s)
    }

    pub fn sockets(&self) -> usize {
        self.sockets.len()
    }

    /// The device is free: anything still listed on it was released
    /// unseen (lost events), so it is dropped and counted as stale.
    pub fn on_device_freed(&mut self, dev: u64) {
        let before = self.objects.len();
        self.objects.retain(|_, o| o.dev != dev);
        self.stale += (before - self.objects.len()) as u64;
        // Sockets whose cached dst held it: that dst holds it no more (a
        // new device at the same address must not inherit them).
        let cached: Vec<(u64, u64)> = self
            .sockets
            .iter()
            .filter(|(_, (_, s))| s.dst_dev == dev)
            .map(|(&sk, (_, s))| (s.dst, sk))
            .collect();
        for (dst, sk) in cached {
            self.unindex(dst, sk);
            if let Some((_, s)) = self.sockets.get_mut(&sk) {
                s.dst = 0;
                s.dst_dev = 0;
            }
        }
    }

    /// Who holds `dev`, whose usage count is `refcnt`.
    pub fn report(&self, dev: u64, refcnt: i32) -> HolderReport {
        let mut holders: Vec<Holder> = self
            .objects
            .iter()
            .filter(|(_, o)| o.dev == dev)
            .map(|(&addr, o)| Holder {
                kind: if o.kind == obj_kind::NEIGH {
                    "neighbour"
                } else {
                    "dst"
                },
                obj: addr,
                address: if o.kind == obj_kind::NEIGH {
                    address(o.family, &o.key)
                } else {
                    None
                },
                family: family_name(o.family),
                created_ns: o.created_ns,
                pid: o.pid,
                comm: o.comm.clone(),
                stack_id: o.stack_id,
                stack: Vec::new(),
                found_by: if o.scanned { "scan" } else { "trace" },
                socket: if o.kind == obj_kind::DST {
                    self.socket_of(addr).cloned()
                } else {
                    None
                },
            })
            .collect();
        // Sockets whose cached dst sits on the device but was created
        // before the tracer saw it: the socket is the holder we can name.
        // Sockets often share one cached dst (one reference): one holder
        // per dst, named by its newest socket.
        let mut untracked: Vec<u64> = self
            .sockets
            .values()
            .filter(|(_, s)| s.dst_dev == dev && s.dst != 0 && !self.objects.contains_key(&s.dst))
            .map(|(_, s)| s.dst)
            .collect();
        untracked.sort_unstable();
        untracked.dedup();
        for dst in untracked {
            let Some(s) = self.socket_of(dst) else {
                continue;
            };
            holders.push(Holder {
                kind: "socket",
                obj: dst,
                address: None,
                family: None,
                created_ns: 0,
                pid: s.pid,
                comm: s.comm.clone(),
                stack_id: -1,
                stack: Vec::new(),
                found_by: "trace",
                socket: Some(s.clone()),
            });
        }
        holders.sort_by_key(|h| (h.created_ns, h.obj));
        let room = (refcnt - self.baseline).max(0) as usize;
        let over = holders.len().saturating_sub(room);
        if over > 0 {
            // Keep the newest: older ones are likelier to be stale.
            holders.drain(..over);
        }
        let attributed = holders.len() as u32;
        HolderReport {
            unattributed: (refcnt - self.baseline - attributed as i32).max(0),
            attributed,
            holders,
            over: over as u32,
            complete: !self.incomplete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netns_trace_common::{kind, Header};

    const LO: u64 = 0xffff_8880_0100_0000;

    fn hdr(kind: u32, ts: u64) -> Header {
        Header {
            kind,
            ts_ns: ts,
            pid: 42,
            tgid: 42,
            comm: crate::events::tests::comm("insmod"),
            ..Default::default()
        }
    }

    fn neigh(obj: u64, ts: u64) -> ObjHold {
        let mut key = [0u8; 16];
        key[..4].copy_from_slice(&[127, 0, 0, 66]);
        ObjHold {
            hdr: hdr(kind::OBJ_HOLD, ts),
            obj,
            dev: LO,
            inum: 7,
            ifindex: 1,
            obj_kind: obj_kind::NEIGH,
            family: AF_INET,
            stack_id: 3,
            key,
            ..Default::default()
        }
    }

    fn dst(obj: u64, ts: u64) -> ObjHold {
        ObjHold {
            obj_kind: obj_kind::DST,
            key: [0; 16],
            ..neigh(obj, ts)
        }
    }

    fn release(obj: u64, ts: u64, reason: u32) -> ObjRelease {
        ObjRelease {
            hdr: hdr(kind::OBJ_RELEASE, ts),
            obj,
            obj_kind: obj_kind::DST,
            reason,
        }
    }

    #[test]
    fn held_neighbour_is_named() {
        let mut l = Ledger::new(1);
        l.on_hold(&neigh(0x10, 5));
        let r = l.report(LO, 2);
        assert_eq!(r.attributed, 1);
        assert_eq!(r.unattributed, 0);
        assert_eq!(r.holders[0].kind, "neighbour");
        assert_eq!(r.holders[0].address.as_deref(), Some("127.0.0.66"));
        assert_eq!(r.holders[0].comm, "insmod");
        assert!(r.complete);
    }

    #[test]
    fn bare_hold_is_unattributed() {
        let l = Ledger::new(1);
        let r = l.report(LO, 2);
        assert!(r.holders.is_empty());
        assert_eq!((r.attributed, r.unattributed), (0, 1));
    }

    #[test]
    fn baseline_zero_before_5_13() {
        let l = Ledger::new(0);
        assert_eq!(l.report(LO, 1).unattributed, 1);
    }

    #[test]
    fn dst_moved_to_blackhole_no_longer_holds() {
        let mut l = Ledger::new(1);
        l.on_hold(&dst(0x20, 5));
        l.on_release(&release(0x20, 6, release_reason::MOVED_OFF_DEVICE));
        let r = l.report(LO, 2);
        assert!(r.holders.is_empty());
        assert_eq!(r.unattributed, 1);
    }

    #[test]
    fn release_seen_before_hold_from_another_cpu() {
        let mut l = Ledger::new(1);
        l.on_release(&release(0x30, 9, release_reason::DESTROYED));
        l.on_hold(&dst(0x30, 8));
        assert_eq!(l.objects(), 0);
        // The address is reused later: a newer hold counts.
        l.on_hold(&dst(0x30, 10));
        assert_eq!(l.objects(), 1);
    }

    #[test]
    fn object_from_before_the_tracer() {
        let mut l = Ledger::new(1);
        l.on_release(&release(0x40, 3, release_reason::DESTROYED));
        let r = l.report(LO, 3);
        assert_eq!((r.attributed, r.unattributed), (0, 2));
    }

    #[test]
    fn duplicate_hold_counts_once() {
        let mut l = Ledger::new(1);
        l.on_hold(&dst(0x50, 5));
        l.on_hold(&dst(0x50, 6));
        assert_eq!(l.report(LO, 3).attributed, 1);
    }

    #[test]
    fn freed_device_drops_stale_objects() {
        let mut l = Ledger::new(1);
        l.on_hold(&dst(0x60, 5));
        l.on_device_freed(LO);
        assert_eq!(l.stale, 1);
        assert_eq!(l.objects(), 0);
    }

    #[test]
    fn lost_events_make_the_report_incomplete() {
        let mut l = Ledger::new(1);
        l.set_incomplete();
        assert!(!l.report(LO, 2).complete);
    }

    #[test]
    fn never_attributes_more_than_the_count() {
        let mut l = Ledger::new(1);
        for i in 0..4 {
            l.on_hold(&dst(0x100 + i, 5 + i));
        }
        let r = l.report(LO, 3);
        assert_eq!(r.attributed, 2);
        assert_eq!(r.over, 2);
        assert_eq!(r.unattributed, 0);
        // The newest two are kept.
        assert_eq!(r.holders[0].obj, 0x102);
    }

    #[test]
    fn full_ledger_counts_drops() {
        let mut l = Ledger::with_capacity(1, 1);
        l.on_hold(&dst(1, 1));
        l.on_hold(&dst(2, 2));
        assert_eq!(l.dropped_full, 1);
        assert!(!l.report(LO, 2).complete);
    }

    fn sock(sk: u64, dst: u64, state: u8) -> SockState {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[127, 0, 0, 1]);
        SockState {
            hdr: hdr(kind::SOCK_STATE, 7),
            sk,
            dst,
            dst_dev: LO,
            inum: 7,
            family: 2,
            protocol: 6,
            sport: 4000,
            dport: 80,
            newstate: state,
            kernel: 1,
            saddr: a,
            daddr: a,
            ..Default::default()
        }
    }

    #[test]
    fn socket_cached_dst_is_named() {
        let mut l = Ledger::new(1);
        l.on_hold(&dst(0x70, 5));
        let info = l.on_sock(&sock(0x900, 0x70, 1));
        assert_eq!(info.saddr, "127.0.0.1");
        let r = l.report(LO, 2);
        assert_eq!(r.holders[0].kind, "dst");
        assert_eq!(r.holders[0].socket.as_ref().unwrap().sport, 4000);
    }

    #[test]
    fn sockets_sharing_a_dst_are_one_holder() {
        let mut l = Ledger::new(1);
        l.on_sock(&sock(0x900, 0x80, 1));
        let mut later = sock(0x800, 0x80, 1);
        later.hdr.ts_ns = 9;
        l.on_sock(&later);
        let r = l.report(LO, 3);
        assert_eq!((r.attributed, r.unattributed), (1, 1), "one dst, one ref");
        assert_eq!(r.holders[0].obj, 0x80);
        assert_eq!(r.holders[0].socket.as_ref().unwrap().sk, 0x800, "newest");
        // The newest of several sockets names a tracked dst too.
        l.on_hold(&dst(0x80, 5));
        let r = l.report(LO, 3);
        assert_eq!((r.holders.len(), r.holders[0].kind), (1, "dst"));
        assert_eq!(r.holders[0].socket.as_ref().unwrap().sk, 0x800);
        // A socket whose dst changes leaves the old one.
        l.on_sock(&sock(0x800, 0x81, 1));
        let r = l.report(LO, 3);
        let got: Vec<(&str, u64, u64)> = r
            .holders
            .iter()
            .map(|h| (h.kind, h.obj, h.socket.as_ref().unwrap().sk))
            .collect();
        // The untracked dst (created before attach) sorts oldest.
        assert_eq!(got, [("socket", 0x81, 0x800), ("dst", 0x80, 0x900)]);
        assert_eq!(l.sockets(), 2);
    }

    #[test]
    fn moved_dst_does_not_come_back_as_a_socket() {
        let mut l = Ledger::new(1);
        l.on_hold(&dst(0x70, 5));
        l.on_sock(&sock(0x900, 0x70, 1));
        l.on_release(&release(0x70, 8, release_reason::MOVED_OFF_DEVICE));
        let r = l.report(LO, 2);
        assert!(r.holders.is_empty(), "{r:?}");
        assert_eq!(r.unattributed, 1);
    }

    #[test]
    fn late_release_of_an_earlier_object_keeps_the_new_one() {
        let mut l = Ledger::new(1);
        l.on_hold(&dst(0x30, 10));
        l.on_release(&release(0x30, 9, release_reason::DESTROYED));
        assert_eq!(l.objects(), 1);
        l.on_release(&release(0x30, 11, release_reason::DESTROYED));
        assert_eq!(l.objects(), 0);
    }

    #[test]
    fn freed_device_forgets_socket_caches() {
        let mut l = Ledger::new(1);
        l.on_sock(&sock(0x900, 0x80, 1));
        l.on_device_freed(LO);
        // A new device at the same address does not inherit the socket.
        assert!(l.report(LO, 2).holders.is_empty());
        assert_eq!(l.stale, 0);
    }

    #[test]
    fn socket_with_untracked_dst_is_the_holder() {
        let mut l = Ledger::new(1);
        l.on_sock(&sock(0x900, 0x80, 1));
        let r = l.report(LO, 2);
        assert_eq!(r.holders[0].kind, "socket");
        l.on_sock(&sock(0x900, 0x80, TCP_CLOSE));
        assert!(l.report(LO, 2).holders.is_empty());
    }
}
