//! Records of a perf event's mmap'd ring, for the watchpoint fallback
//! (breakpoint samples read in userspace). Pure: the loader copies the
//! bytes between the ring's tail and head out (`spans`), this decodes
//! them. The ring is written by the kernel and read as untrusted input:
//! a malformed record is counted, never a panic.

/// `sample_type` the loader asks for: IP | TID | TIME | CALLCHAIN, laid
/// out in that order in a sample.
pub const SAMPLE_TYPE: u64 = SAMPLE_IP | SAMPLE_TID | SAMPLE_TIME | SAMPLE_CALLCHAIN;
const SAMPLE_IP: u64 = 1 << 0;
const SAMPLE_TID: u64 = 1 << 1;
const SAMPLE_TIME: u64 = 1 << 2;
const SAMPLE_CALLCHAIN: u64 = 1 << 5;

const RECORD_LOST: u32 = 2;
const RECORD_THROTTLE: u32 = 5;
const RECORD_SAMPLE: u32 = 9;
/// `struct perf_event_header`: type u32, misc u16, size u16.
const HEADER_LEN: usize = 8;

/// One breakpoint hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The instruction after the write (data breakpoints trap after it).
    pub ip: u64,
    pub pid: u32,
    pub tid: u32,
    /// CLOCK_MONOTONIC ns (the loader sets `use_clockid`).
    pub time_ns: u64,
    /// Kernel call chain, perf's context markers included.
    pub callchain: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Sample(Sample),
    /// The kernel dropped this many samples: the ring was full.
    Lost(u64),
    /// The event was throttled: writes go unsampled (and uncounted by
    /// `Lost`) until it is unthrottled.
    Throttled,
}

/// What one read of a ring found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub records: Vec<Record>,
    /// Records that could not be decoded (each was probably one write).
    pub malformed: u64,
}

/// The two byte ranges `(offset, len)` of a ring of `ring_len` bytes that
/// hold positions `tail..head` (free-running byte counters), in order;
/// the second is empty unless the range wraps. None when the range is
/// longer than the ring (a corrupt head).
pub fn spans(ring_len: usize, tail: u64, head: u64) -> Option<[(usize, usize); 2]> {
    let len = usize::try_from(head.checked_sub(tail)?).ok()?;
    if ring_len == 0 || len > ring_len {
        return None;
    }
    let start = (tail % ring_len as u64) as usize;
    let first = len.min(ring_len - start);
    Some([(start, first), (0, len - first)])
}

/// Decodes the records in `bytes` (everything between tail and head, in
/// order). A record whose header is impossible ends the read: what
/// follows cannot be framed, and counts as one malformed record.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    let mut at = 0;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + HEADER_LEN) else {
            out.malformed += 1;
            break;
        };
        let kind = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let size = usize::from(u16::from_le_bytes(
            header[6..8].try_into().expect("2 bytes"),
        ));
        let Some(body) = bytes.get(at + HEADER_LEN..at + size.max(HEADER_LEN)) else {
            out.malformed += 1;
            break;
        };
        if size < HEADER_LEN {
            out.malformed += 1;
            break;
        }
        at += size;
        let record = match kind {
            RECORD_SAMPLE => sample(body).map(Record::Sample),
            // id, lost
            RECORD_LOST => u64_at(body, 8).map(Record::Lost),
            RECORD_THROTTLE => Some(Record::Throttled),
            _ => continue, // unthrottle and others: nothing to count
        };
        match record {
            Some(r) => out.records.push(r),
            None => out.malformed += 1,
        }
    }
    out
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn sample(b: &[u8]) -> Option<Sample> {
    let ip = u64_at(b, 0)?;
    let pid_tid = u64_at(b, 8)?;
    let time_ns = u64_at(b, 16)?;
    let nr = usize::try_from(u64_at(b, 24)?).ok()?;
    // Bounded by the record's size before anything is allocated.
    if nr > (b.len() - 32) / 8 {
        return None;
    }
    let callchain = (0..nr)
        .map(|i| u64_at(b, 32 + 8 * i))
        .collect::<Option<Vec<u64>>>()?;
    Some(Sample {
        ip,
        pid: pid_tid as u32,
        tid: (pid_tid >> 32) as u32,
        time_ns,
        callchain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u32, size: usize) -> Vec<u8> {
        let mut v = kind.to_le_bytes().to_vec();
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&(size as u16).to_le_bytes());
        v
    }

    fn sample_bytes(ip: u64, pid: u32, tid: u32, time: u64, chain: &[u64]) -> Vec<u8> {
        let mut body = Vec::new();
        for x in [ip, u64::from(pid) | u64::from(tid) << 32, time] {
            body.extend_from_slice(&x.to_le_bytes());
        }
        body.extend_from_slice(&(chain.len() as u64).to_le_bytes());
        for ip in chain {
            body.extend_from_slice(&ip.to_le_bytes());
        }
        let mut v = header(RECORD_SAMPLE, HEADER_LEN + body.len());
        v.extend(body);
        v
    }

    fn lost_bytes(n: u64) -> Vec<u8> {
        let mut v = header(RECORD_LOST, 24);
        v.extend_from_slice(&7u64.to_le_bytes());
        v.extend_from_slice(&n.to_le_bytes());
        v
    }

    const MARK: u64 = 0xffff_ffff_ffff_ff80; // PERF_CONTEXT_KERNEL

    #[test]
    fn samples_and_lost_records() {
        let mut bytes = sample_bytes(0xffff_1003, 10, 11, 500, &[MARK, 0xffff_1003, 0xffff_2000]);
        bytes.extend(lost_bytes(4));
        bytes.extend(header(6, 8)); // unthrottle: skipped
        bytes.extend(header(RECORD_THROTTLE, 8));
        let p = parse(&bytes);
        assert_eq!(p.malformed, 0);
        assert_eq!(
            p.records,
            [
                Record::Sample(Sample {
                    ip: 0xffff_1003,
                    pid: 10,
                    tid: 11,
                    time_ns: 500,
                    callchain: vec![MARK, 0xffff_1003, 0xffff_2000],
                }),
                Record::Lost(4),
                Record::Throttled,
            ]
        );
    }

    #[test]
    fn a_record_wrapping_the_end_of_the_ring() {
        // A 64-byte ring: one 48-byte sample at position 40 (tail 40 + one
        // full turn) wraps after 24 bytes.
        let rec = sample_bytes(0xa, 1, 2, 3, &[0xb]);
        assert_eq!(rec.len(), 48);
        let mut ring = [0u8; 64];
        for (i, b) in rec.iter().enumerate() {
            ring[(40 + i) % 64] = *b;
        }
        let (tail, head) = (64 + 40, 64 + 40 + 48);
        let spans = spans(64, tail, head).unwrap();
        assert_eq!(spans, [(40, 24), (0, 24)]);
        let bytes: Vec<u8> = spans
            .iter()
            .flat_map(|&(at, len)| ring[at..at + len].to_vec())
            .collect();
        let p = parse(&bytes);
        assert_eq!(p.malformed, 0);
        assert!(matches!(&p.records[0], Record::Sample(s) if s.callchain == [0xb] && s.tid == 2));
    }

    #[test]
    fn spans_reject_impossible_positions() {
        assert_eq!(spans(64, 10, 10), Some([(10, 0), (0, 0)]));
        assert_eq!(spans(64, 0, 65), None); // longer than the ring
        assert_eq!(spans(64, 10, 5), None); // head behind tail
        assert_eq!(spans(0, 0, 0), None);
    }

    #[test]
    fn malformed_records_are_counted_not_fatal() {
        // A sample claiming more call chain entries than it holds, then a
        // good lost record: the first is counted, the second still read.
        let mut bad = sample_bytes(1, 2, 3, 4, &[5, 6]);
        bad[8 + 24..8 + 32].copy_from_slice(&1000u64.to_le_bytes());
        bad.extend(lost_bytes(1));
        let p = parse(&bad);
        assert_eq!((p.malformed, p.records.clone()), (1, vec![Record::Lost(1)]));
        // A sample too short for its fields.
        let mut short = header(RECORD_SAMPLE, 16);
        short.extend_from_slice(&[0; 8]);
        assert_eq!(parse(&short).malformed, 1);
        // Sizes that cannot frame a record: smaller than a header, past
        // the end, a truncated header.
        assert_eq!(parse(&header(RECORD_SAMPLE, 4)).malformed, 1);
        assert_eq!(parse(&header(RECORD_SAMPLE, 200)).malformed, 1);
        assert_eq!(parse(&[1, 2, 3]).malformed, 1);
        assert_eq!(parse(&[]), Parsed::default());
        // A huge nr cannot overflow the bounds check.
        let mut huge = sample_bytes(1, 2, 3, 4, &[]);
        huge[8 + 24..8 + 32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse(&huge).malformed, 1);
    }
}
