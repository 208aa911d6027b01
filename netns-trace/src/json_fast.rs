//! Hand-written JSON lines for the records a namespace churn produces by
//! the thousand: `netns_create`, `netns_destroy` and `cleanup_net`. serde's
//! generic path spent about 280 of the loader's 395 ns a record on them
//! (`cargo bench -p netns-trace --bench loader`), mostly escaping constant
//! keys and formatting float seconds; this writes the same bytes (tested
//! against serde) in a fraction of that. Anything unusual (an error, a
//! container, a name needing escapes, a huge time) is left to serde.
use crate::output::{CleanupNetRec, NetnsCreateRec, NetnsDestroyRec, Record, Rfc3339};

/// Appends `rec`'s JSON (no newline) to `out` and returns true, or returns
/// false with `out` untouched: serde must write this one.
pub fn write(rec: &Record, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    let done = match rec {
        Record::NetnsCreate(r) => create(r, out),
        Record::NetnsDestroy(r) => destroy(r, out),
        Record::CleanupNet(r) => cleanup(r, out),
        _ => None,
    };
    if done.is_none() {
        out.truncate(start);
    }
    done.is_some()
}

fn create(r: &NetnsCreateRec, out: &mut Vec<u8>) -> Option<()> {
    if r.err != 0 || !r.container.is_off() {
        return None;
    }
    out.extend_from_slice(b"{\"type\":\"netns_create\",\"time\":");
    secs3(r.time_ns, out)?;
    out.extend_from_slice(b",\"wall\":\"");
    wall(r.wall_ns, out)?;
    num(out, b"\",\"netns\":", r.netns.into());
    out.extend_from_slice(b",\"net\":");
    hex(r.net, out);
    num(out, b",\"pid\":", r.pid.into());
    num(out, b",\"tgid\":", r.tgid.into());
    text(out, b",\"comm\":", &r.comm)?;
    out.extend_from_slice(b",\"flags\":");
    hex(r.flags, out);
    out.extend_from_slice(if r.clone_newnet {
        b",\"clone_newnet\":true,\"duration_us\":"
    } else {
        b",\"clone_newnet\":false,\"duration_us\":"
    });
    opt_us(r.duration_ns, out);
    text(out, b",\"error\":null,\"source\":", r.source)?;
    out.push(b'}');
    Some(())
}

fn destroy(r: &NetnsDestroyRec, out: &mut Vec<u8>) -> Option<()> {
    if !r.container.is_off() {
        return None;
    }
    out.extend_from_slice(b"{\"type\":\"netns_destroy\",\"time\":");
    secs3(r.time_ns, out)?;
    num(out, b",\"netns\":", r.netns.into());
    num(out, b",\"pid\":", r.pid.into());
    text(out, b",\"comm\":", &r.comm)?;
    out.push(b'}');
    Some(())
}

fn cleanup(r: &CleanupNetRec, out: &mut Vec<u8>) -> Option<()> {
    if r.containers.is_some() {
        return None;
    }
    out.extend_from_slice(b"{\"type\":\"cleanup_net\",\"time\":");
    secs3(r.time_ns, out)?;
    text(out, b",\"phase\":", r.phase)?;
    if let Some(d) = r.duration_ns {
        out.extend_from_slice(b",\"duration_us\":");
        opt_us(d, out);
    }
    list(out, b",\"netns\":", &r.netns, |n, out| uint(n.into(), out));
    if let Some(t) = &r.teardown_ns {
        list(out, b",\"teardown_us\":", t, opt_us);
    }
    num(out, b",\"pid\":", r.pid.into());
    text(out, b",\"comm\":", &r.comm)?;
    out.push(b'}');
    Some(())
}

/// `key` and a JSON array of `items`, each written by `each`.
fn list<T: Copy>(out: &mut Vec<u8>, key: &[u8], items: &[T], each: impl Fn(T, &mut Vec<u8>)) {
    out.extend_from_slice(key);
    out.push(b'[');
    for (i, &item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(item, out);
    }
    out.push(b']');
}

/// `rfc3339` without `core::fmt` (5 % of the guest's loader profile);
/// years past 9999 are serde's.
fn wall(unix_ns: u64, out: &mut Vec<u8>) -> Option<()> {
    let [y, m, d, hh, mm, ss, ms] = Rfc3339(unix_ns).fields();
    if y > 9999 {
        return None;
    }
    padded(y, 4, out);
    for (sep, v) in [(b'-', m), (b'-', d), (b'T', hh), (b':', mm), (b':', ss)] {
        out.push(sep);
        padded(v, 2, out);
    }
    out.push(b'.');
    padded(ms, 3, out);
    out.push(b'Z');
    Some(())
}

/// `v` in `width` digits, zero-padded (`v` fits).
fn padded(v: u64, width: usize, out: &mut Vec<u8>) {
    let mut buf = [b'0'; 4];
    let mut v = v;
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

/// `key` (with its comma and colon), then the number.
fn num(out: &mut Vec<u8>, key: &[u8], v: u64) {
    out.extend_from_slice(key);
    uint(v, out);
}

/// `key`, then the string (see `plain_str`).
fn text(out: &mut Vec<u8>, key: &[u8], s: &str) -> Option<()> {
    out.extend_from_slice(key);
    plain_str(s, out)
}

fn uint(mut v: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// `"0x…"`, lower case, as `format!("{v:#x}")`.
fn hex(mut v: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(b"\"0x");
    out.extend_from_slice(&buf[i..]);
    out.push(b'"');
}

/// Microseconds, or null (`opt_us`).
fn opt_us(ns: Option<u64>, out: &mut Vec<u8>) {
    match ns {
        Some(ns) => uint(ns / 1000, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// Seconds with millisecond precision, as serde writes `secs3`'s f64: the
/// shortest decimal of ms/1000, at least one fractional digit. `secs3`
/// rounds ns/1e6 as an f64, half away from zero; below 2^52 ns (52 days)
/// that division is exact to far less than the 1e-6 ms between an integer
/// ns and a tie, so integer rounding gives the same ms, and the decimal of
/// ms/1000 is exact. Beyond, serde decides.
fn secs3(ns: u64, out: &mut Vec<u8>) -> Option<()> {
    if ns >= 1 << 52 {
        return None;
    }
    let ms = (ns + 500_000) / 1_000_000;
    uint(ms / 1000, out);
    out.push(b'.');
    let frac = ms % 1000;
    let digits = [frac / 100, frac / 10 % 10, frac % 10];
    let keep = match (digits[1], digits[2]) {
        (_, d) if d != 0 => 3,
        (d, _) if d != 0 => 2,
        _ => 1,
    };
    for d in &digits[..keep] {
        out.push(b'0' + *d as u8);
    }
    Some(())
}

/// A string needing no escape (printable ASCII but `"` and `\`), quoted;
/// None for any other (serde escapes it).
fn plain_str(s: &str, out: &mut Vec<u8>) -> Option<()> {
    if !s
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return None;
    }
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Container;

    fn fast(rec: &Record) -> Option<String> {
        let mut out = b"x".to_vec();
        let ok = write(rec, &mut out);
        assert!(ok || out == b"x", "a fallback must leave the buffer alone");
        ok.then(|| String::from_utf8(out[1..].to_vec()).unwrap())
    }

    fn same(rec: &Record) {
        let want = serde_json::to_string(rec).unwrap();
        assert_eq!(fast(rec).as_deref(), Some(want.as_str()));
    }

    fn create(time_ns: u64, net: u64, duration: Option<u64>, comm: &str) -> NetnsCreateRec {
        NetnsCreateRec {
            time_ns,
            wall_ns: 1_763_800_000_123_456_789 + time_ns,
            netns: 4_026_532_115,
            net,
            pid: 182,
            tgid: 180,
            comm: comm.into(),
            flags: 0x4000_0000,
            clone_newnet: true,
            duration_ns: duration,
            err: 0,
            source: "copy_net_ns",
            container: Container::Off,
        }
    }

    #[test]
    fn same_bytes_as_serde() {
        let times = [
            0,
            1,
            499_999,
            500_000,
            999_999,
            1_000_000,
            4_790_000_000,
            4_000_000_000,
            4_700_000_000,
            12_345_678_901,
            86_400_123_456_789,
            // Ties round away from zero, as f64::round does.
            2_500_000,
            1_499_999,
            1_500_000,
            999_999_500_000,
            (1 << 52) - 1,
        ];
        for (i, &t) in times.iter().enumerate() {
            let net = [0, 0xf, 0xff11_0000_0300_2000, u64::MAX][i % 4];
            let dur = [None, Some(5_400_000), Some(999), Some(0)][i % 4];
            let mut c = create(t, net, dur, "nt-scenario");
            c.clone_newnet = i % 2 == 0;
            same(&Record::NetnsCreate(c));
            same(&Record::NetnsDestroy(NetnsDestroyRec {
                time_ns: t,
                netns: i as u32,
                pid: u32::MAX,
                comm: "kworker/u8:0".into(),
                container: Container::Off,
            }));
            let start = CleanupNetRec {
                time_ns: t,
                phase: "start",
                duration_ns: None,
                netns: (0..i as u32).collect(),
                teardown_ns: None,
                pid: 12,
                comm: "kworker/u8:0".into(),
                containers: None,
            };
            same(&Record::CleanupNet(start.clone()));
            same(&Record::CleanupNet(CleanupNetRec {
                phase: "end",
                duration_ns: Some(dur),
                teardown_ns: Some((0..i).map(|j| dur.map(|d| d + j as u64)).collect()),
                ..start
            }));
        }
    }

    #[test]
    fn seconds_match_serde_over_many_times() {
        // Pseudo-random times below 2^52 ns, and the ones next to a tie.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let ns = (x >> 12) % ((1 << 52) - 1_000_000);
            let ms = ns / 1_000_000 * 1_000_000;
            for t in [ns, ms + 499_999, ms + 500_000, ms + 500_001] {
                same(&Record::NetnsDestroy(NetnsDestroyRec {
                    time_ns: t,
                    netns: 1,
                    pid: 2,
                    comm: "c".into(),
                    container: Container::Off,
                }));
            }
        }
    }

    #[test]
    fn wall_clock_matches_serde_over_every_representable_date() {
        // u64 nanoseconds reach the year 2554; leap days and month ends
        // come up among 20,000 pseudo-random dates, and the extremes too.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut walls = vec![0, 951_782_400_000_000_000, u64::MAX];
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            walls.push(x);
        }
        for wall_ns in walls {
            let mut c = create(1, 2, None, "c");
            c.wall_ns = wall_ns;
            same(&Record::NetnsCreate(c));
        }
    }

    #[test]
    fn unusual_records_are_left_to_serde() {
        let mut c = create(1, 2, None, "a\"b");
        assert_eq!(fast(&Record::NetnsCreate(c.clone())), None);
        c.comm = "caf\u{e9}".into();
        assert_eq!(fast(&Record::NetnsCreate(c.clone())), None);
        c.comm = "ok".into();
        c.err = -12;
        assert_eq!(fast(&Record::NetnsCreate(c.clone())), None);
        c.err = 0;
        c.container = Container::None;
        assert_eq!(fast(&Record::NetnsCreate(c.clone())), None);
        c.container = Container::Off;
        for t in [1 << 52, u64::MAX] {
            c.time_ns = t;
            assert_eq!(fast(&Record::NetnsCreate(c.clone())), None);
        }
    }
}
