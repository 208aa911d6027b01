//! The loader's user-space cost per event, natively (no kernel, no root):
//! the record stream of a namespace churn (per namespace a create and a
//! destroy, a cleanup batch start and end for every five) replayed
//! through what `drain` does with each ring record under `--json`:
//! decode, `Session::on_event`, render as a JSON line into a buffered
//! sink. The VM bench measures the same path under TCG, with the kernel
//! and the ring around it, much more noisily; this isolates the part the
//! loader's own code decides.
//!
//! `cargo bench -p netns-trace --bench loader` (`cargo xtask bench
//! --loader` runs it). Prints one JSON object.
use std::{collections::HashMap, hint::black_box, io::Write, mem::size_of, time::Instant};

use netns_trace::{
    events::decode,
    output::Renderer,
    session::{Session, SessionConfig},
};
use netns_trace_common::{
    create_source, kind, phase, CleanupNet, Header, NetnsCreate, NetnsDestroy, NAME_LEN,
};

/// Namespaces per replay, and replays measured (the median is reported).
const NAMESPACES: u32 = 20_000;
const REPLAYS: usize = 9;
/// Namespaces per cleanup batch (600 namespaces gave 1,428 records).
const BATCH: u32 = 5;

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: the common crate's records are padding-free `#[repr(C)]`
    // structs: every byte is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn header(kind: u32, ts_ns: u64, pid: u32, name: &str) -> Header {
    let mut comm = [0u8; NAME_LEN];
    comm[..name.len()].copy_from_slice(name.as_bytes());
    Header {
        kind,
        cpu: 0,
        ts_ns,
        pid,
        tgid: pid,
        comm,
    }
}

/// The ring records of a churn of `n` namespaces, in ring order.
fn churn(n: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut ts = 1_000_000_000u64;
    for i in 0..n {
        let inum = 4_026_532_000 + i;
        let net = 0xff11_0000_0300_0000 + u64::from(i) * 0x2000;
        ts += 1_500_000;
        out.push(bytes_of(&NetnsCreate {
            hdr: header(kind::NETNS_CREATE, ts, 180 + i % 7, "nt-scenario"),
            flags: 0x4000_0000,
            duration_ns: 5_400_000,
            net,
            inum,
            err: 0,
            source: create_source::COPY_NET_NS,
            _pad: 0,
        }));
        ts += 700_000;
        out.push(bytes_of(&NetnsDestroy {
            hdr: header(kind::NETNS_DESTROY, ts, 180 + i % 7, "nt-scenario"),
            net,
            inum,
            _pad: 0,
        }));
        if i % BATCH == BATCH - 1 {
            for (p, d) in [(phase::START, 0), (phase::END, 9_000_000)] {
                ts += 300_000;
                out.push(bytes_of(&CleanupNet {
                    hdr: header(kind::CLEANUP_NET, ts, 12, "kworker/u8:0"),
                    phase: p,
                    _pad: 0,
                    duration_ns: d,
                }));
            }
        }
    }
    out
}

fn session() -> Session {
    Session::new(SessionConfig {
        start_ktime_ns: 1_000_000_000,
        start_unix_ns: 1_763_800_000_000_000_000,
        netns: vec![],
        pids: vec![],
        baseline: 1,
        tcp_states: HashMap::new(),
    })
}

/// One replay: nanoseconds per record, and the bytes written.
fn replay(records: &[Vec<u8>]) -> (f64, usize) {
    let mut s = session();
    let mut r = Renderer::new(true);
    let mut sink = std::io::BufWriter::new(Counting(0));
    let t = Instant::now();
    for rec in records {
        s.note_read();
        let out = match decode(black_box(rec)) {
            Ok(ev) => s.on_event(ev),
            Err(_) => s.on_bytes(rec),
        };
        if let Some(out) = out {
            r.render_to(&mut sink, &out).expect("the sink never fails");
        }
    }
    sink.flush().expect("the sink never fails");
    let ns = t.elapsed().as_nanos() as f64 / records.len() as f64;
    let written = sink.get_ref().0;
    (ns, written)
}

/// A writer that only counts (no memory grows with the replay).
struct Counting(usize);

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += black_box(buf).len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let records = churn(NAMESPACES);
    replay(&records); // warm-up: page faults, allocator
    let mut runs: Vec<(f64, usize)> = (0..REPLAYS).map(|_| replay(&records)).collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let ns: Vec<f64> = runs.iter().map(|r| (r.0 * 10.0).round() / 10.0).collect();
    let median = ns[REPLAYS / 2];
    println!(
        "{{\"bench\":\"loader\",\"records\":{},\"replays\":{REPLAYS},\"ns_per_record_median\":{median},\"ns_per_record_min\":{},\"ns_per_record_max\":{},\"bytes_per_record\":{:.1}}}",
        records.len(),
        ns[0],
        ns[REPLAYS - 1],
        runs[0].1 as f64 / records.len() as f64
    );
}
