//! Pure part of `cargo xtask bench`: statistics over the guest's raw
//! samples (median, spread), traced/untraced ratios, goal verdicts, and the
//! table (terminal and Markdown). No I/O, unit-tested.
use serde_json::Value;
use std::fmt::Write as _;

/// Median and spread (min, max) of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn stat(xs: &[f64]) -> Option<Stat> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// Per-round ratios a[i]/b[i] (rounds are paired: same boot, adjacent in
/// time), so the spread of the ratio shows the noise of the pairing.
pub fn ratios(num: &[f64], den: &[f64]) -> Vec<f64> {
    num.iter()
        .zip(den)
        .filter(|(_, d)| **d > 0.0)
        .map(|(n, d)| n / d)
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    AtLeast,
    AtMost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// No goal, or no figure.
    None,
}

pub fn verdict(value: Option<f64>, goal: Option<(Goal, f64)>) -> Verdict {
    match (value, goal) {
        (Some(v), Some((Goal::AtLeast, g))) if v >= g => Verdict::Met,
        (Some(v), Some((Goal::AtMost, g))) if v <= g => Verdict::Met,
        (Some(_), Some(_)) => Verdict::Missed,
        _ => Verdict::None,
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub item: String,
    pub what: String,
    /// "median [min–max] unit (n=N)" or a plain note.
    pub figure: String,
    pub goal: String,
    pub verdict: Verdict,
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect()
}

fn fmt_stat(s: &Stat, unit: &str, prec: usize) -> String {
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    format!(
        "{:.p$} [{:.p$}–{:.p$}]{unit} (n={})",
        s.median,
        s.min,
        s.max,
        s.n,
        p = prec
    )
}

fn fmt_goal(goal: Option<(Goal, f64)>, unit: &str) -> String {
    match goal {
        Some((Goal::AtLeast, g)) => format!("≥ {g}{unit}"),
        Some((Goal::AtMost, g)) => format!("≤ {g}{unit}"),
        None => "-".into(),
    }
}

fn row(
    item: &str,
    what: &str,
    s: Option<Stat>,
    unit: &str,
    prec: usize,
    goal: Option<(Goal, f64)>,
) -> Row {
    Row {
        item: item.into(),
        what: what.into(),
        figure: s.map_or("no data".into(), |s| fmt_stat(&s, unit, prec)),
        goal: fmt_goal(goal, unit),
        verdict: verdict(s.map(|s| s.median), goal),
    }
}

/// Every row of the report, from the guest's `bench` section.
pub fn rows(b: &Value) -> Vec<Row> {
    let mut out = Vec::new();
    let ratio_goal = Some((Goal::AtLeast, 0.97));
    // 1. churn
    let (cu, ct) = (nums(&b["churn"]["untraced"]), nums(&b["churn"]["traced"]));
    out.push(row(
        "1",
        "netns create+destroy, untraced",
        stat(&cu),
        "ns/s",
        1,
        None,
    ));
    out.push(row(
        "1",
        "netns create+destroy, traced",
        stat(&ct),
        "ns/s",
        1,
        None,
    ));
    out.push(row(
        "1",
        "churn ratio traced/untraced",
        stat(&ratios(&ct, &cu)),
        "",
        3,
        ratio_goal,
    ));
    // 2. TCP
    let t = &b["tcp"];
    let (tu, tt, te) = (nums(&t["untraced"]), nums(&t["traced"]), nums(&t["exact"]));
    out.push(row(
        "2",
        "loopback TCP connect/close, untraced",
        stat(&tu),
        "conn/s",
        0,
        None,
    ));
    out.push(row(
        "2",
        "loopback TCP connect/close, traced",
        stat(&tt),
        "conn/s",
        0,
        None,
    ));
    out.push(row(
        "2",
        "loopback TCP connect/close, --exact armed",
        stat(&te),
        "conn/s",
        0,
        None,
    ));
    out.push(row(
        "2",
        "TCP ratio traced/untraced",
        stat(&ratios(&tt, &tu)),
        "",
        3,
        ratio_goal,
    ));
    out.push(row(
        "2",
        "TCP ratio --exact/untraced",
        stat(&ratios(&te, &tu)),
        "",
        3,
        None,
    ));
    // 3. attach
    let a = &b["attach"];
    let sec = |k: &str| nums(&a[k]).iter().map(|ms| ms / 1000.0).collect::<Vec<_>>();
    out.push(row(
        "3",
        "netns-trace: start to all hooks attached (ready file)",
        stat(&sec("ready_ms")),
        "s",
        3,
        None,
    ));
    for (phase, what) in [
        ("prepare", "  of which reading symbols and BTF"),
        ("load", "  of which loading programs (verifier)"),
        ("attach", "  of which attaching hooks"),
    ] {
        let xs = sec(&format!("phase_{phase}_ms"));
        if !xs.is_empty() {
            out.push(row("3", what, stat(&xs), "s", 3, None));
        }
    }
    out.push(row(
        "3",
        "netns-trace: start to first event delivered",
        stat(&sec("first_event_ms")),
        "s",
        3,
        Some((Goal::AtMost, 0.5)),
    ));
    let bt_first = stat(&sec("bpftrace_first_event_ms"));
    if bt_first.is_none() && a["bpftrace_error"].is_string() {
        out.push(Row {
            item: "3".into(),
            what: "bpftrace, same hooks".into(),
            figure: format!("failed: {}", a["bpftrace_error"].as_str().unwrap_or("")),
            goal: "-".into(),
            verdict: Verdict::None,
        });
    } else {
        out.push(row(
            "3",
            "bpftrace, same hooks: start to BEGIN (all attached)",
            stat(&sec("bpftrace_ready_ms")),
            "s",
            3,
            None,
        ));
        out.push(row(
            "3",
            "bpftrace, same hooks: start to first event",
            bt_first,
            "s",
            3,
            None,
        ));
    }
    // 4. ring buffer
    for step in b["ramp"].as_array().into_iter().flatten() {
        let target = step["target_per_min"]
            .as_f64()
            .map_or(format!("{} thread(s), unpaced", step["threads"]), |r| {
                format!("paced at {r:.0}/min")
            });
        let drops = step["drops"].as_u64().unwrap_or(0);
        let paced_goal = step["target_per_min"].as_f64().is_some_and(|r| r >= 1000.0);
        out.push(Row {
            item: "4".into(),
            what: format!("ring buffer, churn {target}"),
            figure: format!(
                "{:.0} ns/min, {:.0} events/s, {} drops",
                step["achieved_per_min"].as_f64().unwrap_or(0.0),
                step["events_per_s"].as_f64().unwrap_or(0.0),
                drops
            ),
            goal: if paced_goal {
                "≥ 1000 ns/min, 0 drops".into()
            } else {
                "-".into()
            },
            verdict: if paced_goal {
                if drops == 0 && step["achieved_per_min"].as_f64().unwrap_or(0.0) >= 1000.0 {
                    Verdict::Met
                } else {
                    Verdict::Missed
                }
            } else {
                Verdict::None
            },
        });
    }
    out.push(Row {
        item: "4".into(),
        what: "drops start at".into(),
        figure: drops_start(&b["ramp"]),
        goal: "-".into(),
        verdict: Verdict::None,
    });
    // 5. resources
    let r = &b["resources"];
    let mb = |k: &str| nums(&r[k]).iter().map(|kb| kb / 1024.0).collect::<Vec<_>>();
    out.push(row(
        "5",
        "loader peak RSS (ru_maxrss)",
        stat(&mb("maxrss_kb")),
        "MiB",
        1,
        Some((Goal::AtMost, 30.0)),
    ));
    let per_k: Vec<f64> = nums(&r["cpu_ms"])
        .iter()
        .zip(nums(&r["events"]))
        .filter(|(_, e)| *e > 0.0)
        .map(|(c, e)| c / e * 1000.0)
        .collect();
    out.push(row(
        "5",
        "loader CPU time per 1,000 events",
        stat(&per_k),
        "ms",
        1,
        None,
    ));
    // The driver reads the tracer's output on the same vCPU: its share of a
    // traced round is charged to tracing in the ratios, so it is shown.
    if !nums(&r["reader_cpu_ms"]).is_empty() {
        out.push(row(
            "5",
            "bench driver reading the stream, CPU per traced round",
            stat(&nums(&r["reader_cpu_ms"])),
            "ms",
            1,
            None,
        ));
    }
    let per_wakeup: Vec<f64> = nums(&r["events"])
        .iter()
        .zip(nums(&r["wakeups"]))
        .filter(|(_, w)| *w > 0.0)
        .map(|(e, w)| e / w)
        .collect();
    out.push(row(
        "5",
        "events per loader wakeup",
        stat(&per_wakeup),
        "",
        1,
        None,
    ));
    out.push(row(
        "5",
        "events per traced round",
        stat(&nums(&r["events"])),
        "",
        0,
        None,
    ));
    out
}

/// The first ramp step with drops, or that none had any.
pub fn drops_start(ramp: &Value) -> String {
    let steps = ramp.as_array().map_or(&[][..], |v| v.as_slice());
    match steps.iter().find(|s| s["drops"].as_u64().unwrap_or(0) > 0) {
        Some(s) => format!(
            "{:.0} ns/min ({:.0} events/s)",
            s["achieved_per_min"].as_f64().unwrap_or(0.0),
            s["events_per_s"].as_f64().unwrap_or(0.0)
        ),
        None => {
            let top = steps
                .iter()
                .filter_map(|s| s["achieved_per_min"].as_f64())
                .fold(0.0, f64::max);
            format!("no drops at any step (up to {top:.0} ns/min, the fastest this guest churns)")
        }
    }
}

fn verdict_word(v: &Verdict) -> &'static str {
    match v {
        Verdict::Met => "met",
        Verdict::Missed => "MISSED",
        Verdict::None => "",
    }
}

/// Fixed-column terminal table.
pub fn text_table(rows: &[Row]) -> String {
    let w = rows
        .iter()
        .map(|r| r.what.chars().count())
        .max()
        .unwrap_or(0);
    let f = rows
        .iter()
        .map(|r| r.figure.chars().count())
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "#  {:w$}  {:f$}  {:8}  VERDICT",
        "MEASURE", "MEDIAN [MIN–MAX]", "GOAL"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:2} {:w$}  {:f$}  {:8}  {}",
            r.item,
            r.what,
            r.figure,
            r.goal,
            verdict_word(&r.verdict)
        );
    }
    s
}

/// Markdown table.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| # | measure | median [min–max] | goal | verdict |\n| --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            r.item,
            r.what,
            r.figure.replace('|', "\\|"),
            r.goal,
            verdict_word(&r.verdict)
        );
    }
    s
}

/// Markers around the generated part of docs/performance.md; the prose
/// around them (analysis, before/after) is kept when --write runs again.
pub const BEGIN: &str = "<!-- cargo xtask bench: generated from here -->";
pub const END: &str = "<!-- cargo xtask bench: generated up to here -->";

/// The generated block: the command, and per kernel the guest, the table
/// and the ring-buffer ramp.
pub fn generated(cmd: &str, runs: &[(String, Value, Vec<Row>)]) -> String {
    let mut s = format!("{BEGIN}\n\nCommand: `{cmd}`\n");
    for (abi, v, rows) in runs {
        let _ = write!(
            s,
            "\n### Debian `{abi}`\n\nGuest: QEMU TCG (no KVM), {} vCPU, kernel `{}`; {} rounds, \
             {} namespaces per churn round, {} connections per TCP round.\n\n",
            v["cpus"],
            v["kernel"].as_str().unwrap_or("?"),
            v["rounds"],
            v["churn_count"],
            v["tcp_count"]
        );
        s += &markdown_table(rows);
        let ramp = v["ramp"].as_array().map_or(&[][..], |r| r.as_slice());
        if !ramp.is_empty() {
            s += "\nRing-buffer ramp (one tracer session per step):\n\n\
                  | step | threads | namespaces/min | events read | events/s | drops | JSON lines |\n\
                  | --- | --- | --- | --- | --- | --- | --- |\n";
            for st in ramp {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0} | {} | {:.0} | {} | {} |",
                    st["step"].as_str().unwrap_or("?"),
                    st["threads"],
                    st["achieved_per_min"].as_f64().unwrap_or(0.0),
                    st["events"],
                    st["events_per_s"].as_f64().unwrap_or(0.0),
                    st["drops"],
                    st["lines"]
                );
            }
        }
        s += &profile(&v["profile"]);
        let errors: Vec<&str> = v["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !errors.is_empty() {
            s += "\nErrors reported by the guest:\n\n";
            for e in errors {
                let _ = writeln!(s, "- {}", e.replace('\n', " "));
            }
        }
    }
    s + "\n" + END + "\n"
}

/// The profile round (Markdown): what each BPF program cost in the kernel
/// and where the loader's CPU went; empty when there was none.
pub fn profile(p: &Value) -> String {
    if !p.is_object() {
        return String::new();
    }
    let mut s = format!(
        "\nProfile round (one traced churn of {} namespaces, {:.1}/s, then a TCP loop, {:.0} conn/s, \
         with `--bpf-stats`): {} events in {} loader wakeups, loader CPU {:.1} ms.\n\n\
         | BPF program | runs | mean ns/run | total ms |\n| --- | --- | --- | --- |\n",
        p["namespaces"],
        p["per_s"].as_f64().unwrap_or(0.0),
        p["tcp_per_s"].as_f64().unwrap_or(0.0),
        p["events"],
        p["wakeups"],
        p["loader_cpu_ms"].as_f64().unwrap_or(0.0),
    );
    for prog in p["bpf_programs"].as_array().into_iter().flatten() {
        if prog["runs"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} |",
            prog["program"].as_str().unwrap_or("?"),
            prog["runs"],
            prog["avg_ns"],
            prog["run_time_us"].as_f64().unwrap_or(0.0) / 1000.0
        );
    }
    let perf = &p["perf"];
    if let Some(objects) = perf["by_object"].as_array() {
        let split: Vec<String> = objects
            .iter()
            .filter_map(|l| {
                let mut w = l.as_str()?.split_whitespace();
                Some(format!("{} {}", w.next()?, w.next()?))
            })
            .collect();
        let _ = writeln!(s, "\nLoader samples by object: {}.", split.join(", "));
    }
    if let Some(top) = perf["top"].as_array() {
        s += "\nLoader profile (`perf record -e cpu-clock`, symbols with at least 1% of samples):\n\n```\n";
        for l in top {
            s += l.as_str().unwrap_or("");
            s += "\n";
        }
        s += "```\n";
    } else if let Some(e) = perf["error"].as_str() {
        let _ = writeln!(s, "\nLoader profile: perf failed: {e}");
    }
    s + &tcp_profile(&p["tcp_profile"]) + &startup_profile(&p["startup_profile"])
}

/// The tracer's start-up sampled over the whole guest: tasks, and the
/// symbols with the most samples (10 kHz: 10 samples are 1 ms).
pub fn startup_profile(t: &Value) -> String {
    if !t.is_object() {
        return String::new();
    }
    if let Some(e) = t["error"].as_str() {
        return format!("\nStart-up profile: failed: {e}\n");
    }
    let samples = t["samples"].as_u64().unwrap_or(0);
    let mut s = format!(
        "\nStart-up sampled over the whole guest (`perf record -a -e cpu-clock -F 10000`, from \
         spawning the tracer to its ready file, {:.0} ms): {samples} samples (0.1 ms each).\n\n\
         | task | samples |\n| --- | --- |\n",
        t["ready_ms"].as_f64().unwrap_or(0.0)
    );
    let rows = |key: &str| {
        t[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_u64()?)))
            .collect::<Vec<_>>()
    };
    for (name, n) in rows("by_comm").iter().filter(|r| r.1 * 100 >= samples) {
        let _ = writeln!(s, "| `{name}` | {n} |");
    }
    s += "\nSymbols with the most samples:\n\n| symbol | samples |\n| --- | --- |\n";
    for (name, n) in rows("by_sym").iter().take(25) {
        let _ = writeln!(s, "| `{name}` | {n} |");
    }
    s
}

/// Samples per 1,000 connections, untraced and traced, for each name in
/// either side's `key` counts (`by_comm`, `by_sym`); biggest growth first.
pub fn tcp_profile_diff(t: &Value, key: &str) -> Vec<(String, f64, f64)> {
    let conns = t["connections"].as_f64().unwrap_or(0.0).max(1.0);
    let mut per = std::collections::HashMap::<String, [f64; 2]>::new();
    for (i, side) in ["untraced", "traced"].iter().enumerate() {
        for pair in t[side][key].as_array().into_iter().flatten() {
            let (Some(name), Some(n)) = (pair[0].as_str(), pair[1].as_f64()) else {
                continue;
            };
            per.entry(name.to_string()).or_insert([0.0; 2])[i] += n * 1000.0 / conns;
        }
    }
    // The sort below (ties by name) fixes the order.
    let mut rows: Vec<(String, f64, f64)> = per.into_iter().map(|(n, [u, t])| (n, u, t)).collect();
    rows.sort_by(|a, b| (b.2 - b.1).total_cmp(&(a.2 - a.1)).then(a.0.cmp(&b.0)));
    rows
}

/// The TCP loop sampled over the whole guest, untraced then traced: the
/// tasks, and the symbols that grew most, in samples per 1,000
/// connections (10 kHz: 10 samples are 1 ms).
pub fn tcp_profile(t: &Value) -> String {
    if !t.is_object() {
        return String::new();
    }
    let mut s = String::new();
    for side in ["untraced", "traced"] {
        if let Some(e) = t[side]["error"].as_str() {
            let _ = writeln!(s, "\nTCP loop profile ({side}): perf failed: {e}");
        }
    }
    if !s.is_empty() {
        return s;
    }
    let conns = t["connections"].as_f64().unwrap_or(0.0).max(1.0);
    let per_k = |side: &str| t[side]["samples"].as_f64().unwrap_or(0.0) * 1000.0 / conns;
    let (u, tr) = (per_k("untraced"), per_k("traced"));
    let _ = write!(
        s,
        "\nTCP loop sampled over the whole guest (`perf record -a -e cpu-clock -F 10000`, {} connections \
         each side; the tracer without --bpf-stats): {:.0} samples per 1,000 connections untraced ({:.0} conn/s), \
         {:.0} traced ({:.0} conn/s), {:+.0} ({:+.1} %).\n\n\
         | task | untraced | traced | change |\n| --- | --- | --- | --- |\n",
        t["connections"],
        u,
        t["untraced"]["conns_per_s"].as_f64().unwrap_or(0.0),
        tr,
        t["traced"]["conns_per_s"].as_f64().unwrap_or(0.0),
        tr - u,
        if u > 0.0 { (tr - u) * 100.0 / u } else { 0.0 },
    );
    let line = |s: &mut String, (name, u, t): &(String, f64, f64)| {
        let _ = writeln!(s, "| `{name}` | {u:.0} | {t:.0} | {:+.0} |", t - u);
    };
    for r in tcp_profile_diff(t, "by_comm")
        .iter()
        .filter(|r| r.1 + r.2 >= 5.0)
    {
        line(&mut s, r);
    }
    s += "\nSymbols that grew most (samples per 1,000 connections):\n\n\
          | symbol | untraced | traced | change |\n| --- | --- | --- | --- |\n";
    for r in tcp_profile_diff(t, "by_sym").iter().take(15) {
        line(&mut s, r);
    }
    s
}

/// `existing` with its generated block replaced (or the block appended).
pub fn splice(existing: &str, block: &str) -> String {
    match (existing.find(BEGIN), existing.find(END)) {
        (Some(b), Some(e)) if b < e => {
            let after = &existing[e + END.len()..];
            format!(
                "{}{}{}",
                &existing[..b],
                block.trim_end_matches('\n'),
                after
            )
        }
        _ => format!("{}\n{block}", existing.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn median_and_spread() {
        assert_eq!(stat(&[]), None);
        let s = stat(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(stat(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(stat(&[f64::NAN, 5.0]).unwrap().n, 1);
    }

    #[test]
    fn paired_ratios_skip_zero_denominators() {
        assert_eq!(ratios(&[9.0, 8.0, 5.0], &[10.0, 0.0, 5.0]), vec![0.9, 1.0]);
    }

    #[test]
    fn verdicts() {
        let g = Some((Goal::AtLeast, 0.97));
        assert_eq!(verdict(Some(0.97), g), Verdict::Met);
        assert_eq!(verdict(Some(0.96), g), Verdict::Missed);
        assert_eq!(
            verdict(Some(0.6), Some((Goal::AtMost, 0.5))),
            Verdict::Missed
        );
        assert_eq!(verdict(Some(0.4), Some((Goal::AtMost, 0.5))), Verdict::Met);
        assert_eq!(verdict(None, g), Verdict::None);
        assert_eq!(verdict(Some(1.0), None), Verdict::None);
    }

    fn sample() -> Value {
        json!({
            "churn": {"untraced": [10.0, 12.0, 11.0], "traced": [9.0, 12.0, 11.0]},
            "tcp": {"untraced": [1000.0, 1000.0], "traced": [990.0, 980.0], "exact": [500.0, 600.0]},
            "attach": {"ready_ms": [2000.0], "first_event_ms": [2100.0], "bpftrace_error": "libLLVM missing"},
            "resources": {"maxrss_kb": [20480.0], "cpu_ms": [100.0], "reader_cpu_ms": [2.5, 10.25, 3.0], "events": [2000.0]},
            "ramp": [
                {"target_per_min": 1200.0, "threads": 1, "achieved_per_min": 1190.0, "events_per_s": 150.0, "drops": 0},
                {"target_per_min": null, "threads": 2, "achieved_per_min": 3000.0, "events_per_s": 400.0, "drops": 7}
            ]
        })
    }

    #[test]
    fn rows_from_samples() {
        let rows = rows(&sample());
        let find = |what: &str| rows.iter().find(|r| r.what == what).unwrap().clone();
        let churn = find("churn ratio traced/untraced");
        // per-round ratios 0.9, 1.0, 1.0: median 1.0
        assert_eq!(churn.figure, "1.000 [0.900–1.000] (n=3)");
        assert_eq!(churn.verdict, Verdict::Met);
        assert_eq!(find("TCP ratio traced/untraced").verdict, Verdict::Met);
        assert_eq!(find("TCP ratio --exact/untraced").verdict, Verdict::None);
        let first = find("netns-trace: start to first event delivered");
        assert_eq!(first.verdict, Verdict::Missed);
        assert_eq!(first.figure, "2.100 [2.100–2.100] s (n=1)");
        assert_eq!(
            find("bpftrace, same hooks").figure,
            "failed: libLLVM missing"
        );
        assert_eq!(find("loader peak RSS (ru_maxrss)").verdict, Verdict::Met);
        assert_eq!(
            find("loader CPU time per 1,000 events").figure,
            "50.0 [50.0–50.0] ms (n=1)"
        );
        assert_eq!(
            find("bench driver reading the stream, CPU per traced round").figure,
            "3.0 [2.5–10.2] ms (n=3)"
        );
        // The paced step reached 1,000/min with zero drops: goal met.
        assert_eq!(
            find("ring buffer, churn paced at 1200/min").verdict,
            Verdict::Met
        );
        assert_eq!(find("drops start at").figure, "3000 ns/min (400 events/s)");
    }

    #[test]
    fn splice_keeps_the_prose() {
        let doc = format!("# Perf\n\nintro\n\n{BEGIN}\nold\n{END}\n\n## Analysis\nkept\n");
        let block = format!("{BEGIN}\nnew\n{END}\n");
        let out = splice(&doc, &block);
        assert_eq!(
            out,
            format!("# Perf\n\nintro\n\n{BEGIN}\nnew\n{END}\n\n## Analysis\nkept\n")
        );
        // No block yet: appended.
        assert_eq!(splice("# Perf\n", &block), format!("# Perf\n{block}"));
    }

    #[test]
    fn generated_block_names_command_and_kernel() {
        let mut v = sample();
        v["kernel"] = json!("6.12.111+deb12-cloud-amd64");
        v["cpus"] = json!(1);
        v["ramp"][0]["step"] = json!("1200");
        v["errors"] = json!(["round 1 exact: boom"]);
        let rows = rows(&v);
        let g = generated(
            "cargo xtask bench --kernel 6.12",
            &[("6.12.111+deb12-cloud-amd64".into(), v, rows)],
        );
        assert!(g.starts_with(BEGIN) && g.trim_end().ends_with(END));
        assert!(g.contains("Command: `cargo xtask bench --kernel 6.12`"));
        assert!(g.contains("QEMU TCG (no KVM), 1 vCPU, kernel `6.12.111+deb12-cloud-amd64`"));
        assert!(g.contains("| 1200 | 1 | 1190 |"));
        assert!(g.contains("- round 1 exact: boom"));
    }

    #[test]
    fn no_drops_anywhere_says_so() {
        let ramp = json!([{"achieved_per_min": 900.0, "drops": 0}, {"achieved_per_min": 2000.0, "drops": 0}]);
        assert_eq!(
            drops_start(&ramp),
            "no drops at any step (up to 2000 ns/min, the fastest this guest churns)"
        );
    }

    #[test]
    fn profile_lists_programs_that_ran_and_perf_lines() {
        let p = json!({
            "namespaces": 100, "per_s": 50.0, "events": 1100, "wakeups": 40,
            "loader_cpu_ms": 300.0,
            "bpf_programs": [
                {"program": "copy_net_ns_exit", "runs": 100, "run_time_us": 2500, "avg_ns": 25000},
                {"program": "watch_hit", "runs": 0, "run_time_us": 0, "avg_ns": 0}
            ],
            "perf": {"top": ["  40.00%  netns-trace  [.] serde_json::ser::format_escaped_str"],
                     "by_object": ["    61.38%  netns-trace      ", "    25.85%  [kernel.kallsyms]"]}
        });
        let s = profile(&p);
        assert!(s.contains("1100 events in 40 loader wakeups"), "{s}");
        assert!(
            s.contains("| copy_net_ns_exit | 100 | 25000 | 2.5 |"),
            "{s}"
        );
        assert!(!s.contains("watch_hit"), "{s}");
        assert!(s.contains("serde_json::ser::format_escaped_str"), "{s}");
        assert!(
            s.contains("Loader samples by object: 61.38% netns-trace, 25.85% [kernel.kallsyms]."),
            "{s}"
        );
        assert_eq!(profile(&Value::Null), "");
        let failed = profile(&json!({"perf": {"error": "no perf"}}));
        assert!(failed.contains("perf failed: no perf"), "{failed}");
    }

    #[test]
    fn startup_profile_lists_tasks_over_a_percent_and_top_symbols() {
        let t = json!({"ready_ms": 870.4, "samples": 1000,
                       "by_comm": [["netns-trace", 900], ["swapper", 95], ["kworker/0:1", 5]],
                       "by_sym": [["do_check_common", 300], ["pv_native_safe_halt", 95]]});
        let s = startup_profile(&t);
        assert!(s.contains("870 ms): 1000 samples"), "{s}");
        assert!(s.contains("| `swapper` | 95 |"), "{s}");
        assert!(!s.contains("kworker"), "{s}");
        assert!(s.contains("| `do_check_common` | 300 |"), "{s}");
        assert_eq!(
            startup_profile(&json!({"error": "no perf"})),
            "\nStart-up profile: failed: no perf\n"
        );
        assert_eq!(startup_profile(&Value::Null), "");
    }

    #[test]
    fn tcp_profile_ranks_what_tracing_added_per_connection() {
        let t = json!({
            "connections": 2000,
            "untraced": {"conns_per_s": 3000.0, "samples": 6000,
                         "by_comm": [["nt-scenario", 5800], ["swapper/0", 200]],
                         "by_sym": [["tcp_v4_connect", 400], ["memcpy", 300]]},
            "traced": {"conns_per_s": 2700.0, "samples": 6700,
                       "by_comm": [["nt-scenario", 6400], ["netns-trace", 100], ["swapper/0", 200]],
                       "by_sym": [["tcp_v4_connect", 400], ["bpf_trace_run3", 300], ["memcpy", 280]]}
        });
        let d = tcp_profile_diff(&t, "by_sym");
        assert_eq!(d[0], ("bpf_trace_run3".to_string(), 0.0, 150.0));
        assert_eq!(d[1], ("tcp_v4_connect".to_string(), 200.0, 200.0));
        assert_eq!(d[2], ("memcpy".to_string(), 150.0, 140.0));
        let s = tcp_profile(&t);
        assert!(s.contains("3000 samples per 1,000 connections untraced (3000 conn/s), 3350 traced (2700 conn/s), +350 (+11.7 %)"), "{s}");
        assert!(s.contains("| `nt-scenario` | 2900 | 3200 | +300 |"), "{s}");
        assert!(s.contains("| `netns-trace` | 0 | 50 | +50 |"), "{s}");
        assert!(s.contains("| `bpf_trace_run3` | 0 | 150 | +150 |"), "{s}");
        let failed = tcp_profile(&json!({"untraced": {"error": "no perf"}}));
        assert!(
            failed.contains("TCP loop profile (untraced): perf failed: no perf"),
            "{failed}"
        );
        assert_eq!(tcp_profile(&Value::Null), "");
    }

    #[test]
    fn tables_have_a_line_per_row() {
        let rows = rows(&sample());
        let md = markdown_table(&rows);
        assert_eq!(md.lines().count(), rows.len() + 2);
        assert!(md.contains(
            "| 1 | churn ratio traced/untraced | 1.000 [0.900–1.000] (n=3) | ≥ 0.97 | met |"
        ));
        let txt = text_table(&rows);
        assert_eq!(txt.lines().count(), rows.len() + 1);
        assert!(txt.contains("MISSED"));
    }
}
