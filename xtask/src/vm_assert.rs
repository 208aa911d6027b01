//! Pure checks on a guest run's output: the marker parser and the
//! per-scenario assertions. No I/O, so they are unit-tested on synthetic input.
use serde_json::Value;
use std::collections::BTreeMap;

/// Sections printed by nt-scenario between `==NT-BEGIN x==` / `==NT-END x==`.
/// Serial lines end in CRLF; kernel console messages may appear in between
/// sections and are ignored.
pub fn parse_sections(serial: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in serial.lines().map(|l| l.trim_end_matches('\r')) {
        if let Some(name) = line
            .strip_prefix("==NT-BEGIN ")
            .and_then(|r| r.strip_suffix("=="))
        {
            current = Some((name.to_string(), Vec::new()));
        } else if let Some(name) = line
            .strip_prefix("==NT-END ")
            .and_then(|r| r.strip_suffix("=="))
        {
            if let Some((n, body)) = current.take() {
                if n == name {
                    out.insert(n, body);
                }
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push(line.to_string());
        }
    }
    out
}

/// The JSON lines of section `name` (none when it is absent); `who` names
/// the writer in the error for a line that does not parse.
fn json_section(
    s: &BTreeMap<String, Vec<String>>,
    name: &str,
    who: &str,
) -> Result<Vec<Value>, String> {
    s.get(name)
        .into_iter()
        .flatten()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{who} line {l:?}: {e}")))
        .collect()
}

/// A parsed run: the facts object and the tracer's JSON lines.
pub struct Run {
    pub facts: Value,
    pub events: Vec<Value>,
    pub dmesg: Vec<String>,
    /// exact-two: the JSON lines of the second tracer (section `second-json`).
    pub second: Vec<Value>,
}

impl Run {
    pub fn from_sections(s: &BTreeMap<String, Vec<String>>) -> Result<Run, String> {
        let facts_text = s
            .get("facts")
            .ok_or("no facts section in the serial log (guest did not finish?)")?;
        let facts: Value =
            serde_json::from_str(&facts_text.join("\n")).map_err(|e| format!("facts: {e}"))?;
        let events = json_section(s, "tracer-json", "tracer")?;
        let dmesg = s.get("dmesg").cloned().unwrap_or_default();
        let second = json_section(s, "second-json", "second tracer")?;
        Ok(Run {
            facts,
            events,
            dmesg,
            second,
        })
    }

    /// Inodes the scenario read, with multiplicity: the kernel recycles
    /// namespace inode numbers, so one churn run sees the same number again.
    fn inodes(&self) -> BTreeMap<u64, usize> {
        counts(self.facts["inodes"].as_array().into_iter().flatten())
    }

    fn of_type<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events.iter().filter(move |v| v["type"] == ty)
    }

    /// Errors the scenario driver itself recorded (tracer failed, timeouts).
    fn driver_errors(&self) -> Result<(), String> {
        match self.facts["errors"].as_array() {
            Some(e) if !e.is_empty() => Err(format!(
                "scenario: {}",
                e.iter()
                    .map(|v| v.as_str().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            _ => Ok(()),
        }
    }
}

/// Multiset of inode numbers (bare numbers or the "netns" field of events).
fn counts<'a>(vals: impl Iterator<Item = &'a Value>) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for n in vals.filter_map(|v| v.as_u64().or_else(|| v["netns"].as_u64())) {
        *m.entry(n).or_insert(0) += 1;
    }
    m
}

/// churn: every namespace created and destroyed is seen, nothing dropped.
pub fn check_churn(run: &Run) -> Result<String, String> {
    run.driver_errors()?;
    let count = run.facts["count"].as_u64().ok_or("facts has no count")? as usize;
    let inodes = run.inodes();
    if inodes.values().sum::<usize>() != count {
        return Err(format!(
            "scenario read {} inodes, expected {count}",
            inodes.values().sum::<usize>()
        ));
    }
    let creates = run.of_type("netns_create").count();
    if creates != count {
        return Err(format!("{creates} netns_create lines, expected {count}"));
    }
    let created = counts(run.of_type("netns_create"));
    if created != inodes {
        return Err(format!(
            "netns_create inodes {created:?} differ from the scenario's {inodes:?}"
        ));
    }
    let destroyed = counts(run.of_type("netns_destroy"));
    let missing: Vec<u64> = inodes
        .iter()
        .filter(|(i, n)| destroyed.get(i).copied().unwrap_or(0) < **n)
        .map(|(i, _)| *i)
        .collect();
    if !missing.is_empty() {
        return Err(format!("no netns_destroy for {missing:?}"));
    }
    check_summary(run)?;
    Ok(format!(
        "{count} namespaces created and destroyed, 0 ringbuf drops"
    ))
}

/// The last line is the summary and no event was dropped.
fn check_summary(run: &Run) -> Result<(), String> {
    let last = run.events.last().ok_or("tracer printed nothing")?;
    if last["type"] != "summary" {
        return Err(format!("last tracer line is not a summary: {last}"));
    }
    match last["lost"]["ringbuf_drops"].as_u64() {
        Some(0) => Ok(()),
        Some(n) => Err(format!("{n} ringbuf drops")),
        None => Err(format!("summary has no lost.ringbuf_drops: {last}")),
    }
}

/// N of every "waiting for lo to become free. Usage count = N" dmesg line.
pub fn usage_counts(dmesg: &[String]) -> Vec<i64> {
    waiting_lines(dmesg).map(|(_, n)| n).collect()
}

const WAITING_PAT: &str = "waiting for lo to become free. Usage count = ";

/// (index in dmesg, N) of each "waiting for lo" line.
fn waiting_lines(dmesg: &[String]) -> impl Iterator<Item = (usize, i64)> + '_ {
    dmesg.iter().enumerate().filter_map(|(i, l)| {
        let (_, n) = l.split_once(WAITING_PAT)?;
        Some((i, n.split_whitespace().next()?.parse().ok()?))
    })
}

/// The innermost frame of each stack the kernel's own ref_tracker printed
/// for lo in the wait loop ("ref_tracker: lo@... has 1/1 users at" and the
/// frames, `\x0a`-escaped in dmesg), without the `/size` suffix:
/// `___neigh_create+0x211`.
pub fn kernel_tracker_frames(dmesg: &[String]) -> Vec<String> {
    dmesg
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once("ref_tracker: lo@")?;
            let (_, frames) = rest.split_once("users at")?;
            let frame = frames
                .split("\\x0a")
                .map(str::trim)
                .find(|f| !f.is_empty())?;
            Some(frame.split('/').next()?.to_string())
        })
        .collect()
}

/// Seconds of a "[  12.345678] message" dmesg line.
fn dmesg_time(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    rest.split_once(']')?.0.trim().parse().ok()
}

/// The guest kernel stayed healthy: no oops, BUG, WARNING or refcount
/// complaint anywhere in its log (a module that frees a dst too early or
/// twice shows up here, not as a test timeout).
fn check_kernel_clean(dmesg: &[String]) -> Result<(), String> {
    const BAD: &[&str] = &[
        "Oops",
        "BUG:",
        "WARNING:",
        "general protection fault",
        "refcount_t:",
        "underflow",
        "Call Trace:",
    ];
    match dmesg.iter().find(|l| BAD.iter().any(|b| l.contains(b))) {
        Some(l) => Err(format!("kernel complained: {l}")),
        None => Ok(()),
    }
}

/// What the test module holds on lo, as the tracer must name it.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Holder {
    /// mode hold: a bare dev_hold, no object to blame (all unattributed).
    Bare,
    /// mode neigh: the neighbour 127.0.0.66.
    Neighbour,
    /// mode dst: the module's own dst.
    Dst,
}

const NEIGH_ADDR: &str = "127.0.0.66";

/// The attribution fields of one dev_wait/dev_released line.
struct Ledger<'a> {
    refcnt: i64,
    attributed: i64,
    unattributed: i64,
    holders: &'a [Value],
}

/// "dev_wait at 2.01 s" (for messages).
fn at(v: &Value) -> String {
    format!("{} at {} s", v["type"].as_str().unwrap_or("?"), v["time"])
}

/// Read and check the ledger of a line: holders is an array, and
/// attributed + unattributed == refcnt - 1 (the device's own reference,
/// 5.13+; both test kernels are 6.x), attributed never above that.
fn ledger(v: &Value) -> Result<Ledger<'_>, String> {
    let refcnt = v["refcnt"]
        .as_i64()
        .ok_or_else(|| format!("{} has no refcnt", at(v)))?;
    let holders = v["holders"]
        .as_array()
        .ok_or_else(|| format!("{} has no holders array (no attribution)", at(v)))?;
    let field = |name: &str| {
        v[name]
            .as_i64()
            .ok_or_else(|| format!("{} has no {name}", at(v)))
    };
    let (attributed, unattributed) = (field("attributed")?, field("unattributed")?);
    let outside = refcnt - 1;
    if attributed < 0 || attributed > outside {
        return Err(format!(
            "{}: attributed {attributed} outside 0..=refcnt-1 ({outside})",
            at(v)
        ));
    }
    if attributed + unattributed != outside {
        return Err(format!(
            "{}: attributed {attributed} + unattributed {unattributed} != refcnt-1 ({outside})",
            at(v)
        ));
    }
    Ok(Ledger {
        refcnt,
        attributed,
        unattributed,
        holders,
    })
}

/// dev_wait or dev_released lines for lo of `netns`.
fn lo_lines<'a>(run: &'a Run, ty: &'a str, netns: u64) -> Vec<&'a Value> {
    run.of_type(ty)
        .filter(|v| v["device"] == "lo" && v["netns"].as_u64() == Some(netns))
        .collect()
}

/// The holder of `kind` (and neighbour address) the module created, with a
/// creation stack that reaches the module ("take_neigh+0x1f [netns_leak]").
fn find_holder<'a>(l: &Ledger<'a>, kind: &str, wait: &Value) -> Result<&'a Value, String> {
    let h = l
        .holders
        .iter()
        .find(|h| h["kind"] == kind && (kind != "neighbour" || h["address"] == NEIGH_ADDR))
        .ok_or_else(|| {
            let what = if kind == "neighbour" {
                format!("neighbour {NEIGH_ADDR}")
            } else {
                kind.to_string()
            };
            format!(
                "{} blames no {what}: holders {}",
                at(wait),
                Value::from(l.holders.to_vec())
            )
        })?;
    let stack = h["stack"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if !stack
        .iter()
        .any(|f| f.as_str().is_some_and(|f| f.contains("[netns_leak]")))
    {
        return Err(format!(
            "{}: {kind} holder's stack never reaches the module: {}",
            at(wait),
            h["stack"]
        ));
    }
    Ok(h)
}

/// exact-churn (`--exact` under namespace churn): the churn checks hold,
/// new lo devices get `watch` records (armed, or unavailable because the
/// budget is spent or the device died before the request was handled; a
/// request for a device whose address a watched one already has gets
/// none), never more than the budget is armed at once, and every armed lo
/// is disarmed when its namespace is gone.
pub fn check_exact_churn(run: &Run, budget: usize) -> Result<String, String> {
    let churn = check_churn(run)?;
    let count = run.facts["count"].as_u64().unwrap_or(0) as usize;
    // dev -> netns of the devices armed and not yet disarmed.
    let mut live = std::collections::HashMap::new();
    let (mut armed, mut refused, mut peak) = (0, 0, 0);
    for w in run.of_type("watch") {
        let dev = w["dev"].as_str().unwrap_or("").to_string();
        match w["state"].as_str() {
            Some("armed") => {
                armed += 1;
                live.insert(dev, w["netns"].as_u64());
                peak = peak.max(live.len());
            }
            Some("disarmed") | Some("evicted") => {
                if live.remove(&dev).is_none() {
                    return Err(format!("{} for a device never armed: {w}", w["state"]));
                }
            }
            Some("unavailable") => {
                // Budget spent, or the namespace died before the request
                // reached the loader: both are expected under churn.
                let reason = w["reason"].as_str().unwrap_or("");
                if !reason.contains("budget") && !reason.contains("already gone") {
                    return Err(format!("watch refused: {w}"));
                }
                refused += 1;
            }
            _ => return Err(format!("unknown watch record {w}")),
        }
    }
    if armed + refused > count || armed + refused < count / 2 {
        return Err(format!(
            "{armed} armed + {refused} refused watch records for {count} namespaces"
        ));
    }
    if peak > budget || armed == 0 {
        return Err(format!(
            "{armed} armed, at most {peak} at once (budget {budget})"
        ));
    }
    // The tracer may stop before the last teardowns end (the summary
    // lists them as pending): only those may still be armed.
    let pending: Vec<u64> = run
        .of_type("summary")
        .flat_map(|s| s["netns_pending"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_u64())
        .collect();
    live.retain(|_, netns| !netns.is_some_and(|n| pending.contains(&n)));
    if !live.is_empty() {
        return Err(format!("never disarmed: {live:?}"));
    }
    Ok(format!(
        "{churn}; watchpoints armed on {armed} lo (at most {peak} at once), {refused} refused (budget, or already gone), all disarmed"
    ))
}

/// exact-fallback (`--exact --watch-via-perf-ring`): the `exact` checks
/// hold with the breakpoint samples read from the perf ring in userspace,
/// the watch record says so, and every write's sign was decoded from its
/// instruction (none unknown, none lost) while the leak was held.
pub fn check_exact_fallback(run: &Run) -> Result<String, String> {
    let summary = check_exact(run, "hold", "watchpoints")?;
    let inode = *run.inodes().keys().next().ok_or("facts has no inode")?;
    let watch = run
        .of_type("watch")
        .find(|v| v["netns"].as_u64() == Some(inode))
        .ok_or("no watch record for the namespace's lo")?;
    if watch["via"] != "perf_ring" || !watch["reason"].is_string() {
        return Err(format!(
            "watch record does not say perf_ring and why: {watch}"
        ));
    }
    for rec in run
        .of_type("dev_wait")
        .chain(run.of_type("dev_released"))
        .filter(|v| v["netns"].as_u64() == Some(inode))
    {
        let x = &rec["exact"];
        if x["unknown_writes"].as_u64() != Some(0) || x["lost_writes"].as_u64() != Some(0) {
            return Err(format!("writes not counted at {}: {x}", rec["time"]));
        }
    }
    Ok(format!("{summary}; via perf_ring, every sign decoded"))
}

/// exact-two (two `--exact` tracers at once, the second started by the
/// init script): a count may be wrong (under QEMU's TCG only one of two
/// watchpoints on an address fires), but never silently. For each tracer,
/// every report of lo but its first dev_wait (one disagreement may be a hit
/// still on its way) either matches the kernel's usage count or carries
/// `kernel_disagrees` with the kernel's count, and its release says 0
/// outstanding or disagrees likewise. A report repeated between two polls
/// (`usage_count_at`: after a holder scan) holds no new reading to compare.
pub fn check_exact_two(run: &Run) -> Result<String, String> {
    run.driver_errors()?;
    check_kernel_clean(&run.dmesg)?;
    let inode = *run.inodes().keys().next().ok_or("facts has no inode")?;
    let mut verdicts = Vec::new();
    for (who, events) in [("driver", &run.events), ("second", &run.second)] {
        let reports: Vec<&Value> = events
            .iter()
            .filter(|v| v["type"] == "dev_wait" || v["type"] == "dev_released")
            .filter(|v| v["device"] == "lo" && v["netns"].as_u64() == Some(inode))
            .filter(|v| v["exact"]["outstanding"].is_i64())
            .filter(|v| v["usage_count_at"].is_null())
            .collect();
        let released = reports
            .iter()
            .find(|v| v["type"] == "dev_released")
            .ok_or(format!("{who}: no dev_released of lo with an exact count"))?;
        let mut flagged = None;
        for (i, r) in reports.iter().enumerate() {
            let kernel = r["usage_count"].as_i64().ok_or("no usage_count")? - 1;
            let counted = r["exact"]["outstanding"].as_i64();
            let said = r["exact"]["kernel_disagrees"].as_i64();
            let first_wait = i == 0 && r["type"] == "dev_wait";
            if counted == Some(kernel) || first_wait {
                continue;
            }
            if said != Some(kernel) {
                return Err(format!(
                    "{who}: {} at {} counts {counted:?} but the kernel {kernel}, not said: {}",
                    r["type"].as_str().unwrap_or("?"),
                    r["time"],
                    r["exact"]
                ));
            }
            flagged = counted.map(|c| c - kernel);
        }
        verdicts.push(match (flagged, &released["exact"]["kernel_disagrees"]) {
            (None, Value::Null) => format!("{who} exact"),
            (Some(n), _) if n < 0 => format!("{who} said it counts {} fewer than the kernel", -n),
            (n, _) => format!(
                "{who} said it counts {} more than the kernel",
                n.unwrap_or(0)
            ),
        });
    }
    Ok(format!("lo of netns {inode}: {}", verdicts.join(", ")))
}

/// exact (`--exact`): watchpoints armed on the new lo before the leak
/// count every reference: the outstanding count equals the kernel's usage
/// count minus the device's own, and the outstanding hold is attributed to
/// a call site whose stack goes through the module (`hold`, a bare
/// dev_hold nobody else can name) or the neighbour creation path (`neigh`).
/// `source`: what must have counted (`watchpoints`, or `ref_tracker` on
/// the kernel built with CONFIG_NET_DEV_REFCNT_TRACKER).
pub fn check_exact(run: &Run, mode: &str, source: &str) -> Result<String, String> {
    run.driver_errors()?;
    check_kernel_clean(&run.dmesg)?;
    let inode = *run.inodes().keys().next().ok_or("facts has no inode")?;
    let n = *usage_counts(&run.dmesg)
        .first()
        .ok_or("kernel never printed 'waiting for lo to become free'")?;
    let watch = run
        .of_type("watch")
        .find(|v| v["netns"].as_u64() == Some(inode))
        .ok_or("no watch record for the namespace's lo")?;
    if watch["state"] != "armed" || watch["source"] != source {
        return Err(format!("lo not counted by {source}: {watch}"));
    }
    check_sources_announced(run, source)?;
    check_symbols_looked_up(run)?;
    let waits: Vec<&Value> = run
        .of_type("dev_wait")
        .filter(|v| v["device"] == "lo" && v["netns"].as_u64() == Some(inode))
        .collect();
    let first = waits.first().ok_or("no dev_wait for lo")?;
    for w in &waits {
        let out = w["exact"]["outstanding"].as_i64();
        if w["exact"]["source"] != source {
            return Err(format!("exact not from {source}: {}", w["exact"]));
        }
        if out != Some(n - 1) {
            return Err(format!(
                "exact outstanding {:?} != kernel usage count {n} - 1 at {}",
                out, w["time"]
            ));
        }
    }
    let sites = first["exact"]["hold_sites"]
        .as_array()
        .ok_or("dev_wait has no exact.hold_sites")?;
    let frame = if mode == "neigh" {
        "neigh_create"
    } else if source == "ref_tracker" {
        // The tracker sees the dev_hold inside dev_get_by_name, called
        // from the module's init.
        "netns_leak_init+"
    } else {
        "[netns_leak]"
    };
    // ref_tracker's hold site must name the module's own frame.
    let module_frame = if source == "ref_tracker" && mode == "hold" {
        "[netns_leak]"
    } else {
        ""
    };
    // Every outstanding reference is either a listed hold or one held
    // since before arming; the one the module leaked is listed first.
    let listed: i64 = sites.iter().filter_map(|s| s["holds"].as_i64()).sum();
    let left = first["exact"]["pre_arm_left"].as_i64().unwrap_or(-1);
    if listed + left != n - 1 {
        return Err(format!(
            "{listed} listed holds + {left} pre-arm != usage count {n} - 1: {}",
            first["exact"]
        ));
    }
    let site = sites.first().filter(|s| {
        s["stack"].as_array().is_some_and(|st| {
            st.iter().any(|f| {
                f.as_str()
                    .is_some_and(|f| f.contains(frame) && f.contains(module_frame))
            })
        })
    });
    let Some(site) = site else {
        return Err(format!("first hold site is not through {frame}: {sites:?}"));
    };
    if source == "ref_tracker" {
        check_kernel_tracker_agrees(run, site)?;
    }
    // When the module lets go, the released device's ledger is empty.
    let released = run
        .of_type("dev_released")
        .find(|v| v["netns"].as_u64() == Some(inode))
        .ok_or("no dev_released for lo")?;
    if released["exact"]["outstanding"].as_i64() != Some(0) {
        return Err(format!("dev_released: exact {}", released["exact"]));
    }
    // A bare dev_hold is let go by the module's own work item: the last
    // release is named with that stack.
    let last = &released["exact"]["last_release"]["stack"];
    if mode == "hold" && !last.to_string().contains("[netns_leak]") {
        return Err(format!("last release not through the module: {last}"));
    }
    Ok(format!(
        "lo of netns {inode}: {} outstanding by {source} (kernel usage count {n}), hold site {}",
        n - 1,
        site["stack"]
            .as_array()
            .and_then(|st| st
                .iter()
                .find(|f| f.as_str().is_some_and(|f| f.contains(frame))))
            .cloned()
            .unwrap_or_default()
    ))
}

/// late (incident mode): the module pins lo with a neighbour, the kernel
/// prints its "waiting" line, and only then the tracer starts. It must
/// name the stuck lo of that namespace within 2 s of attaching, with the
/// kernel's usage count and a wait timed from its first sighting, and
/// report the release. (The neighbour was created before the tracer: it
/// can only be unattributed until the attach-time scan exists.)
pub fn check_late(run: &Run) -> Result<String, String> {
    run.driver_errors()?;
    check_kernel_clean(&run.dmesg)?;
    let inode = *run.inodes().keys().next().ok_or("facts has no inode")?;
    let counts = usage_counts(&run.dmesg);
    let n = *counts
        .first()
        .ok_or("kernel never printed 'waiting for lo to become free'")?;
    let first_ms = run.facts["first_report_ms"]
        .as_u64()
        .ok_or("the tracer never reported the stuck lo")?;
    if first_ms > 2000 {
        return Err(format!("first dev_wait {first_ms} ms after attach (> 2 s)"));
    }
    let waits: Vec<&Value> = run
        .of_type("dev_wait")
        .filter(|v| v["device"] == "lo" && v["netns"].as_u64() == Some(inode))
        .collect();
    let first = waits.first().ok_or("no dev_wait for lo")?;
    if first["wait_since"] != "first_seen" {
        return Err(format!(
            "attached mid-wait but wait_since = {}",
            first["wait_since"]
        ));
    }
    if let Some(bad) = waits.iter().find(|v| v["usage_count"].as_i64() != Some(n)) {
        return Err(format!(
            "dev_wait usage_count {} != kernel's {n}",
            bad["usage_count"]
        ));
    }
    if let Some(bad) = waits.iter().find(|v| {
        v["attributed"].as_i64().unwrap_or(-1) + v["unattributed"].as_i64().unwrap_or(-1) != n - 1
    }) {
        return Err(format!(
            "attributed + unattributed != usage count - 1 in {bad}"
        ));
    }
    // The holder scan ran when lo was found stuck: it walked both
    // neighbour tables and says what it does not walk. (It cannot find the
    // module's neighbour: the kernel unlinks a dying device's neighbours
    // from the tables, neigh_flush_dev; a holder it does report must be a
    // real neighbour on lo.)
    let scan = run
        .of_type("scan")
        .next()
        .ok_or("no scan record after lo was found stuck")?;
    let tables = scan["tables"].as_array().cloned().unwrap_or_default();
    let walked = |name: &str, min: u64| {
        tables.iter().any(|t| {
            t["table"] == name && t["error"].is_null() && t["walked"].as_u64().unwrap_or(0) >= min
        })
    };
    if !walked("arp_tbl", 1)
        || !walked("nd_tbl", 1)
        || !walked("tcp", 0)
        || scan["not_scanned"].as_array().is_none_or(|a| a.is_empty())
    {
        return Err(format!("scan did not walk arp_tbl, nd_tbl and tcp: {scan}"));
    }
    if let Some(bad) = waits
        .iter()
        .flat_map(|v| v["holders"].as_array().into_iter().flatten())
        .find(|h| h["found_by"] == "scan" && h["kind"] != "neighbour")
    {
        return Err(format!("scan reported a non-neighbour: {bad}"));
    }
    // The watchpoint armed on the stuck lo catches who lets go.
    let released = run
        .of_type("dev_released")
        .find(|v| v["device"] == "lo" && v["netns"].as_u64() == Some(inode))
        .ok_or("no dev_released for lo")?;
    // The task iterator names the teardown worker stuck in the wait loop,
    // with its stack, and how long it has been blocked: it sleeps 250 ms at
    // a time, so anything near 2 s is a clock mix-up, not a long sleep.
    let worker = run
        .of_type("blocked")
        .find(|b| {
            b["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("teardown"))
                && b["stack"].to_string().contains("netdev_run_todo")
        })
        .ok_or("no blocked record for the teardown worker")?;
    if worker["blocked_s"]
        .as_f64()
        .is_none_or(|s| !(0.0..2.0).contains(&s))
    {
        return Err(format!(
            "teardown worker's blocked_s is implausible: {worker}"
        ));
    }
    // The module destroys its neighbour from a work item: the stack of
    // that last release goes through neigh_destroy and the module.
    let last = released["exact"]["last_release"]["stack"].to_string();
    if !last.contains("neigh_destroy") || !last.contains("[netns_leak]") {
        return Err(format!(
            "last release not the module's neighbour: {}",
            released["exact"]
        ));
    }
    Ok(format!(
        "stuck lo of netns {inode} named {first_ms} ms after attach, usage count {n} (kernel: {n}) in {} reports, scan walked arp_tbl, nd_tbl and tcp, teardown worker {} ({}) found blocked {}s, watchpoints armed, released through neigh_destroy <- the module",
        waits.len(),
        worker["pid"],
        worker["comm"],
        worker["blocked_s"],
    ))
}

/// hold / neigh / dst: the tracer saw lo of our namespace waiting, with the
/// kernel's own usage count, for about as long as the module held it, and
/// named the holder (or, for a bare dev_hold, left exactly one reference
/// unattributed).
/// Start-up asked the kernel for its symbols by name (`symbols_from`),
/// not the file: with the counts matching the kernel's, the looked-up
/// per-CPU offsets (and the functions hooked) were the right ones.
fn check_symbols_looked_up(run: &Run) -> Result<(), String> {
    let attach = run.of_type("attach").next().ok_or("no attach record")?;
    match attach["symbols_from"].as_str() {
        Some("kallsyms_lookup_name") => Ok(()),
        other => Err(format!(
            "start-up symbols from {other:?}, not kallsyms_lookup_name"
        )),
    }
}

/// The attach record names `source` as what counts new loopback devices
/// (ref_tracker) or devices in general (watchpoints).
fn check_sources_announced(run: &Run, source: &str) -> Result<(), String> {
    let attach = run.of_type("attach").next().ok_or("no attach record")?;
    let x = &attach["exact_sources"];
    let ok = match source {
        "ref_tracker" => x["created"] == "ref_tracker" && x["ref_tracker_unused"].is_null(),
        _ => x["created"] == source,
    };
    match ok {
        true => Ok(()),
        false => Err(format!("attach record does not name {source}: {x}")),
    }
}

/// A tracked hold: the kernel's own tracker printed where it was taken
/// (wait loop); the tracer's hold `site` (from ref_tracker_alloc) must name
/// the same call.
fn check_kernel_tracker_agrees(run: &Run, site: &Value) -> Result<(), String> {
    for kernel in kernel_tracker_frames(&run.dmesg) {
        if !site["stack"].to_string().contains(&format!("\"{kernel}\"")) {
            return Err(format!(
                "the kernel's ref_tracker names {kernel}, the tracer's hold site does not: {}",
                site["stack"]
            ));
        }
    }
    Ok(())
}

/// Without `--exact`, on the ref_tracker kernel: the tracker counted the
/// namespace's lo anyway (no debug registers needed), exactly.
pub fn check_tracker(run: &Run) -> Result<String, String> {
    check_sources_announced(run, "ref_tracker")?;
    let inode = *run.inodes().keys().next().ok_or("facts has no inode")?;
    let n = *usage_counts(&run.dmesg)
        .first()
        .ok_or("kernel never printed 'waiting for lo to become free'")?;
    let waits = lo_lines(run, "dev_wait", inode);
    let first = waits.first().ok_or("no dev_wait for lo")?;
    let x = &first["exact"];
    if x["source"] != "ref_tracker" || x["outstanding"].as_i64() != Some(n - 1) {
        return Err(format!(
            "ref_tracker count is not kernel usage count {n} - 1: {x}"
        ));
    }
    let site = &x["hold_sites"][0];
    if site.is_null() {
        return Err(format!("ref_tracker lists no hold site: {x}"));
    }
    check_kernel_tracker_agrees(run, site)?;
    let frames = kernel_tracker_frames(&run.dmesg);
    Ok(format!(
        "ref_tracker counted {} outstanding, hold site agrees with the kernel's tracker ({})",
        n - 1,
        frames.first().map_or("none printed", String::as_str)
    ))
}

/// kprobes (`--no-fentry`, hold mode): every hook is attached by kprobe,
/// kretprobe or a classic tracepoint, none by fentry, fexit or tp_btf, the
/// core hooks among them, the tracer is not degraded, and the `hold` checks
/// pass on those programs (usage counts from the netdev_refcnt_read
/// kretprobe, the rtnl_unlock caller read from the kretprobe's registers).
pub fn check_kprobes(run: &Run) -> Result<String, String> {
    let attach = run.of_type("attach").next().ok_or("no attach record")?;
    if attach["degraded"] != Value::Bool(false) {
        return Err(format!("degraded with --no-fentry: {}", attach["reasons"]));
    }
    let hooks = attach["hooks"].as_array().ok_or("attach has no hooks")?;
    let method = |name: &str| {
        hooks
            .iter()
            .find(|h| h["hook"] == name)
            .and_then(|h| h["method"].as_str())
            .unwrap_or("-")
    };
    for h in hooks {
        let m = h["method"].as_str().unwrap_or("-");
        if ["fentry", "fexit", "tp_btf"].iter().any(|t| m.contains(t)) {
            return Err(format!("{} attached by {m} despite --no-fentry", h["hook"]));
        }
    }
    for core in [
        "copy_net_ns",
        "cleanup_net",
        "netdev_run_todo",
        "netdev_refcnt_read",
    ] {
        if !method(core).starts_with("kprobe") {
            return Err(format!(
                "{core}: method {:?}, expected a kprobe",
                method(core)
            ));
        }
    }
    if method("sock_state") != "tracepoint" {
        return Err(format!("sock_state: method {:?}", method("sock_state")));
    }
    let by_kprobe = hooks
        .iter()
        .filter(|h| h["method"].as_str().is_some_and(|m| m.contains("probe")))
        .count();
    let pinned = check_pinned(run, Holder::Bare)?;
    Ok(format!("{by_kprobe} hooks by kprobe/kretprobe; {pinned}"))
}

pub fn check_pinned(run: &Run, expect: Holder) -> Result<String, String> {
    run.driver_errors()?;
    check_kernel_clean(&run.dmesg)?;
    let inode = *run.inodes().keys().next().ok_or("facts has no inode")?;
    let hold_ms = run.facts["hold_ms"]
        .as_u64()
        .ok_or("facts has no hold_ms")?;
    let waits = lo_lines(run, "dev_wait", inode);
    if waits.is_empty() {
        return Err(format!("no dev_wait line for lo in netns {inode}"));
    }
    let counts = usage_counts(&run.dmesg);
    let n = *counts
        .first()
        .ok_or("kernel never printed 'waiting for lo to become free'")?;
    if counts.iter().any(|&c| c != n) {
        return Err(format!("kernel usage counts differ: {counts:?}"));
    }
    let held_s = check_stopped_after_release(&run.dmesg)?;
    // Every waiting report states the kernel's number.
    for w in &waits {
        let (r, u) = (w["refcnt"].as_i64(), w["usage_count"].as_i64());
        if r != Some(n) || u.is_some_and(|u| u != n) {
            return Err(format!(
                "{}: refcnt {} usage_count {}, kernel said Usage count = {n}",
                at(w),
                w["refcnt"],
                w["usage_count"]
            ));
        }
    }
    // The release carries the whole wait: it must match the module's hold
    // (which starts at NETDEV_UNREGISTER, just before the wait loop, and is
    // seen at the loop's next poll, at most 250 ms later). Compared with the
    // hold the module measured and printed, not hold_ms: under TCG its
    // delayed work fires 100-250 ms late.
    let released = lo_lines(run, "dev_released", inode);
    let first = released
        .first()
        .ok_or_else(|| format!("no dev_released line for lo in netns {inode}"))?;
    let waited = first["waiting_s"]
        .as_f64()
        .ok_or("dev_released has no waiting_s")?;
    let hold_s = hold_ms as f64 / 1000.0;
    if held_s < hold_s {
        return Err(format!(
            "module released after {held_s} s, before hold_ms {hold_s} s"
        ));
    }
    if !(waited >= held_s - 0.5 && waited <= held_s + 0.5) {
        return Err(format!(
            "lo waited {waited} s, module held it {held_s} s (±0.5)"
        ));
    }
    // Attribution: consistent on every line, and naming the module's object
    // on every waiting report.
    let mut named = String::new();
    for v in waits.iter().chain(&released) {
        let l = ledger(v)?;
        match expect {
            Holder::Bare if !l.holders.is_empty() || l.unattributed != l.refcnt - 1 => {
                return Err(format!(
                    "{}: bare dev_hold must be all unattributed, got holders {} unattributed {} (refcnt {})",
                    at(v),
                    Value::from(l.holders.to_vec()),
                    l.unattributed,
                    l.refcnt
                ));
            }
            Holder::Neighbour | Holder::Dst if v["type"] == "dev_wait" => {
                let kind = if expect == Holder::Dst {
                    "dst"
                } else {
                    "neighbour"
                };
                let h = find_holder(&l, kind, v)?;
                if l.unattributed != 0 {
                    return Err(format!(
                        "{}: {} unattributed beside the {kind} (refcnt {}, attributed {})",
                        at(v),
                        l.unattributed,
                        l.refcnt,
                        l.attributed
                    ));
                }
                if named.is_empty() {
                    named = format!(
                        "{kind} {} by {} ({})",
                        h["obj"].as_str().unwrap_or("?"),
                        h["comm"].as_str().unwrap_or("?"),
                        h["found_by"].as_str().unwrap_or("?")
                    );
                }
            }
            _ => {}
        }
    }
    if named.is_empty() {
        named = "0 attributed, 1 unattributed (bare dev_hold)".into();
    }
    let unlock = check_slow_rtnl_unlock(run, held_s)?;
    check_summary(run)?;
    Ok(format!(
        "lo of netns {inode}: usage count {n} in {} reports (kernel: {n}), held by {named}, released after {waited:.2} s (module: {held_s:.3} s); {unlock}",
        waits.len()
    ))
}

/// The teardown's rtnl_unlock waited for the device (the wait loop runs
/// inside it): a slow rtnl_unlock line at least as long as the module's hold
/// (less the loop's poll slack), whose caller is the namespace teardown's
/// device exit, named: the fexit program reads the caller from the BPF
/// trampoline's frame, and the kprobe fallback from its registers.
fn check_slow_rtnl_unlock(run: &Run, held_s: f64) -> Result<String, String> {
    let slow: Vec<&Value> = run
        .of_type("rtnl_unlock")
        .filter(|v| v["duration_us"].as_f64().unwrap_or(0.0) >= (held_s - 0.5) * 1e6)
        .collect();
    let Some(v) = slow.first() else {
        return Err(format!(
            "no rtnl_unlock line of at least {:.1} s (the wait runs inside it)",
            held_s - 0.5
        ));
    };
    let caller = v["caller"].as_str().unwrap_or("");
    if !caller.starts_with("default_device_exit_batch+") {
        return Err(format!(
            "{}: caller {:?}, expected default_device_exit_batch+off",
            at(v),
            v["caller"]
        ));
    }
    Ok(format!("rtnl_unlock from {caller}"))
}

/// After the module's "released lo after N ms" line the kernel soon stops
/// printing "waiting for lo": allow 1 s (a dst's reference goes with its
/// RCU free, a grace period after dst_release, and the print comes every
/// second). Returns N in seconds.
fn check_stopped_after_release(dmesg: &[String]) -> Result<f64, String> {
    let (i, rel) = dmesg
        .iter()
        .enumerate()
        .find(|(_, l)| l.contains("netns_leak: released lo after"))
        .ok_or("module never printed 'released lo after'")?;
    let held_ms: f64 = rel
        .split_once("released lo after ")
        .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no hold time in {rel:?}"))?;
    let rel_t = dmesg_time(rel);
    for (j, _) in waiting_lines(dmesg).filter(|&(j, _)| j > i) {
        let late = match (rel_t, dmesg_time(&dmesg[j])) {
            (Some(r), Some(w)) => w > r + 1.0,
            _ => true,
        };
        if late {
            return Err(format!(
                "kernel still waiting for lo after the release: {}",
                dmesg[j]
            ));
        }
    }
    Ok(held_ms / 1000.0)
}

/// (local port, peer port) of each "netns_leak: tcpsock A:P -> B:Q" line.
pub fn tcpsock_tuples(dmesg: &[String]) -> Vec<(u64, u64)> {
    let port = |s: &str| s.rsplit_once(':')?.1.trim().parse().ok();
    dmesg
        .iter()
        .filter_map(|l| {
            let (_, t) = l.split_once("netns_leak: tcpsock ")?;
            let (a, b) = t.split_once(" -> ")?;
            Some((port(a)?, port(b)?))
        })
        .collect()
}

/// (sport, dport) of a socket line or a holder's socket object.
fn ports(v: &Value) -> Option<(u64, u64)> {
    Some((v["sport"].as_u64()?, v["dport"].as_u64()?))
}

fn is_our_tuple(v: &Value, tuples: &[(u64, u64)]) -> bool {
    ports(v).is_some_and(|(s, d)| tuples.iter().any(|&t| t == (s, d) || t == (d, s)))
}

/// tcpsock, the negative test: the module's kernel TCP connection is seen
/// (a socket line with "kernel":true and its ports), the namespace's
/// teardown ends, and no report on lo blames that socket: not as a socket
/// holder, not as the socket of a dst holder.
pub fn check_tcpsock(run: &Run) -> Result<String, String> {
    run.driver_errors()?;
    check_kernel_clean(&run.dmesg)?;
    let inode = *run.inodes().keys().next().ok_or("facts has no inode")?;
    let tuples = tcpsock_tuples(&run.dmesg);
    if tuples.is_empty() {
        return Err("module printed no 'netns_leak: tcpsock' tuple".into());
    }
    let socks: Vec<&Value> = run
        .of_type("socket")
        .filter(|v| {
            v["kernel"] == true && v["netns"].as_u64() == Some(inode) && is_our_tuple(v, &tuples)
        })
        .collect();
    if socks.is_empty() {
        return Err(format!(
            "no socket line with kernel:true in netns {inode} for the module's ports {tuples:?}"
        ));
    }
    // The module connects 127.0.0.1 to 127.0.0.1 over TCP: the addresses and
    // protocol are read from the socket (tp_btf) or the tracepoint record.
    if let Some(v) = socks.iter().find(|v| {
        v["family"] != "ipv4"
            || v["protocol"] != "tcp"
            || v["saddr"] != "127.0.0.1"
            || v["daddr"] != "127.0.0.1"
    }) {
        return Err(format!(
            "{}: expected inet/tcp 127.0.0.1 -> 127.0.0.1",
            at(v)
        ));
    }
    // The module closes both ends: their last change (to CLOSE, after the
    // kernel released the local port) still carries the connection's ports.
    if !socks.iter().any(|v| v["newstate"] == "CLOSE") {
        return Err(format!(
            "no socket line to CLOSE with the module's ports {tuples:?}"
        ));
    }
    if !run.of_type("cleanup_net").any(|v| {
        v["phase"] == "end"
            && v["netns"]
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n.as_u64() == Some(inode)))
    }) {
        return Err(format!("no cleanup_net end for netns {inode}"));
    }
    // lo should not wait at all; if it does, for whatever reason, the
    // reports must still be right and must not blame the closed socket.
    let kernel_n = usage_counts(&run.dmesg);
    let waits = lo_lines(run, "dev_wait", inode);
    let released = lo_lines(run, "dev_released", inode);
    for v in waits.iter().chain(&released) {
        let l = ledger(v)?;
        match kernel_n.first() {
            Some(&n) if v["type"] == "dev_wait" && l.refcnt != n => {
                return Err(format!(
                    "{}: refcnt {}, kernel said Usage count = {n}",
                    at(v),
                    l.refcnt
                ));
            }
            _ => {}
        }
        if let Some(h) = l.holders.iter().find(|h| {
            h["kind"] == "socket" || (h["kind"] == "dst" && is_our_tuple(&h["socket"], &tuples))
        }) {
            return Err(format!("{} blames the closed kernel socket: {h}", at(v)));
        }
    }
    check_summary(run)?;
    let states: Vec<String> = socks
        .iter()
        .map(|v| {
            format!(
                "{}->{}",
                v["oldstate"].as_str().unwrap_or("?"),
                v["newstate"].as_str().unwrap_or("?")
            )
        })
        .collect();
    Ok(format!(
        "kernel TCP {tuples:?} seen in {} socket lines ({}), lo of netns {inode}: {} dev_wait, none blaming it",
        socks.len(),
        states.join(", "),
        waits.len()
    ))
}

/// The image the docker scenario imports and runs.
pub const DOCKER_IMAGE: &str = "nt-busybox:latest";

/// run-leak: `netns-trace run --fail-on-leak` around a command whose
/// namespace's lo the module pins past `--settle`: exit status 5 (leak),
/// and the run report (the stream's last line) lists that namespace with
/// lo still waiting, the kernel's usage count, and the command's own exit 0.
pub fn check_run_leak(run: &Run) -> Result<String, String> {
    run.driver_errors()?;
    let inode = *run
        .inodes()
        .keys()
        .next()
        .ok_or("the command printed no inode")?;
    let code = run.facts["exit_code"].as_i64();
    if code != Some(5) {
        return Err(format!("tracer exit status {code:?}, expected 5 (leak)"));
    }
    let report = run
        .of_type("run_report")
        .last()
        .ok_or("no run_report in the stream")?;
    if report["verdict"]["exit_code"] != 5 || report["verdict"]["leak"] != true {
        return Err(format!("verdict: {}", report["verdict"]));
    }
    if report["command"]["exit_code"] != 0 {
        return Err(format!("command: {}", report["command"]));
    }
    let ns = report["namespaces"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["netns"].as_u64() == Some(inode)))
        .ok_or_else(|| format!("namespace {inode} not in the report"))?;
    let lo = ns["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["device"] == "lo"))
        .ok_or("lo is not among the devices that waited")?;
    if lo["released"] != false || lo["max_usage_count"] != 2 {
        return Err(format!("lo in the report: {lo}"));
    }
    Ok(format!(
        "run --fail-on-leak exited 5; report: netns {inode}, lo waiting {}s with usage count 2, command exit 0",
        lo["waited_s"]
    ))
}

/// docker: every container's namespace is named on the tracer's records:
/// `netns_create` of those run while it traced, `netns_destroy` of all
/// (the one started before attach is known from the attach-time scan),
/// each with the container's id (as `docker run` printed it), name and
/// image; and no record about their namespaces names another container.
pub fn check_docker(run: &Run) -> Result<String, String> {
    run.driver_errors()?;
    let containers = run.facts["containers"]
        .as_array()
        .ok_or("facts has no containers")?;
    if containers.len() != 3 || !containers.iter().any(|c| c["before"] == true) {
        return Err(format!(
            "expected 3 containers, one started before the tracer: {containers:?}"
        ));
    }
    let mut creates = 0;
    for c in containers {
        let (name, id) = (c["name"].as_str().unwrap_or("?"), &c["id"]);
        let netns = c["netns"].as_u64().ok_or("container without netns")?;
        let expect = |v: &Value| -> Result<(), String> {
            let k = &v["container"];
            if k["id"] != *id || k["name"] != name || k["image"] != DOCKER_IMAGE {
                return Err(format!(
                    "{name} (netns {netns}), {}: container {k}, expected id {id}, name {name}, image {DOCKER_IMAGE}",
                    at(v)
                ));
            }
            Ok(())
        };
        let about: Vec<&Value> = run
            .events
            .iter()
            .filter(|v| v["netns"].as_u64() == Some(netns))
            .collect();
        let created: Vec<&&Value> = about
            .iter()
            .filter(|v| v["type"] == "netns_create")
            .collect();
        let destroyed: Vec<&&Value> = about
            .iter()
            .filter(|v| v["type"] == "netns_destroy")
            .collect();
        if c["before"] == true {
            if !created.is_empty() {
                return Err(format!("{name} was started before the tracer, yet a netns_create names its namespace {netns}"));
            }
        } else if created.is_empty() {
            return Err(format!("no netns_create for {name} (netns {netns})"));
        }
        if destroyed.is_empty() {
            return Err(format!("no netns_destroy for {name} (netns {netns})"));
        }
        for v in &about {
            if v.get("container").is_none() {
                return Err(format!("{} at {} has no container field", v["type"], at(v)));
            }
            expect(v)?;
        }
        creates += created.len();
    }
    check_summary(run)?;
    Ok(format!(
        "3 containers: id, name and image on {creates} netns_create and every netns_destroy (incl. one started before attach)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(facts: &str, json: &[&str], dmesg: &[&str]) -> String {
        let mut s = String::from("[    1.0] boot noise\r\n==NT-BEGIN facts==\r\n");
        s += &format!("{facts}\r\n==NT-END facts==\r\n==NT-BEGIN tracer-json==\r\n");
        for l in json {
            s += &format!("{l}\r\n");
        }
        s += "==NT-END tracer-json==\r\n==NT-BEGIN tracer-stderr==\r\n==NT-END tracer-stderr==\r\n";
        s += "==NT-BEGIN dmesg==\r\n";
        for l in dmesg {
            s += &format!("{l}\r\n");
        }
        s + "==NT-END dmesg==\r\nreboot: Power down\r\n"
    }

    fn run_of(s: &str) -> Run {
        Run::from_sections(&parse_sections(s)).unwrap()
    }

    const SUMMARY: &str = r#"{"type":"summary","lost":{"ringbuf_drops":0,"read_errors":0,"map_full":0,"missed_entry":0}}"#;

    #[test]
    fn parser_splits_sections_and_strips_cr() {
        let s = parse_sections(&serial(r#"{"a":1}"#, &["x", "y"], &["d"]));
        assert_eq!(s["facts"], [r#"{"a":1}"#]);
        assert_eq!(s["tracer-json"], ["x", "y"]);
        assert!(s["tracer-stderr"].is_empty());
        assert_eq!(s["dmesg"], ["d"]);
    }

    #[test]
    fn parser_drops_unterminated_section() {
        let s = parse_sections("==NT-BEGIN facts==\n{}\n[ panic ]\n");
        assert!(s.is_empty());
    }

    #[test]
    fn churn_pass_and_failures() {
        let facts = r#"{"scenario":"churn","count":2,"inodes":[10,11]}"#;
        let ok = [
            r#"{"type":"netns_create","netns":10}"#,
            r#"{"type":"netns_create","netns":11}"#,
            r#"{"type":"netns_destroy","netns":10}"#,
            r#"{"type":"netns_destroy","netns":11}"#,
            SUMMARY,
        ];
        assert!(check_churn(&run_of(&serial(facts, &ok, &[]))).is_ok());

        let missing_destroy = [ok[0], ok[1], ok[2], SUMMARY];
        let e = check_churn(&run_of(&serial(facts, &missing_destroy, &[]))).unwrap_err();
        assert!(e.contains("no netns_destroy for [11]"), "{e}");

        let wrong_create = [
            ok[0],
            r#"{"type":"netns_create","netns":12}"#,
            ok[2],
            ok[3],
            SUMMARY,
        ];
        assert!(check_churn(&run_of(&serial(facts, &wrong_create, &[]))).is_err());

        let dropped = SUMMARY.replace("\"ringbuf_drops\":0", "\"ringbuf_drops\":3");
        let e = check_churn(&run_of(&serial(
            facts,
            &[ok[0], ok[1], ok[2], ok[3], &dropped],
            &[],
        )))
        .unwrap_err();
        assert!(e.contains("3 ringbuf drops"), "{e}");

        // Recycled inode: seen twice, so two creates and two destroys needed.
        let facts2 = r#"{"scenario":"churn","count":2,"inodes":[10,10]}"#;
        let twice = [ok[0], ok[0], ok[2], SUMMARY];
        let e = check_churn(&run_of(&serial(facts2, &twice, &[]))).unwrap_err();
        assert!(e.contains("no netns_destroy for [10]"), "{e}");
        let twice = [ok[0], ok[0], ok[2], ok[2], SUMMARY];
        assert!(check_churn(&run_of(&serial(facts2, &twice, &[]))).is_ok());

        let no_summary = &ok[..4];
        assert!(check_churn(&run_of(&serial(facts, no_summary, &[]))).is_err());
    }

    #[test]
    fn driver_errors_fail_the_run() {
        let facts =
            r#"{"scenario":"churn","count":0,"inodes":[],"errors":["tracer exited before ready"]}"#;
        let e = check_churn(&run_of(&serial(facts, &[SUMMARY], &[]))).unwrap_err();
        assert!(e.contains("tracer exited before ready"), "{e}");
    }

    const WAITING: &str =
        "[    5.1] unregister_netdevice: waiting for lo to become free. Usage count = 2";
    const RELEASED: &str = "[    7.9] netns_leak: released lo after 3000 ms";

    const NEIGH: &str = r#"{"kind":"neighbour","obj":"0xff1","address":"127.0.0.66","created":1.2,"pid":90,"comm":"insmod","stack":["___neigh_create+0x1f","take_neigh+0x2a [netns_leak]","do_one_initcall+0x40"],"found_by":"trace","socket":null}"#;
    const DST: &str = r#"{"kind":"dst","obj":"0xff2","address":null,"created":1.2,"pid":90,"comm":"insmod","stack":["dst_alloc+0x5","take_dst+0x40 [netns_leak]"],"found_by":"trace","socket":null}"#;

    /// A wait on lo of netns 20: two dev_wait lines with `holders`, then
    /// the release (refcnt 1, nothing left) after `waiting` s.
    fn pinned_json(refcnt: i64, waiting: f64, holders: &str, att: i64, unatt: i64) -> Vec<String> {
        let wait = |t: f64| {
            format!(
                r#"{{"type":"dev_wait","time":{t},"netns":20,"device":"lo","ifindex":1,"refcnt":{refcnt},"usage_count":{refcnt},"waiting_s":{t},"holders":[{holders}],"attributed":{att},"unattributed":{unatt}}}"#
            )
        };
        vec![
            r#"{"type":"cleanup_net","phase":"start","netns":[20]}"#.into(),
            wait(1.01),
            wait(2.02),
            format!(
                r#"{{"type":"dev_released","time":3.1,"netns":20,"device":"lo","ifindex":1,"refcnt":1,"usage_count":1,"waiting_s":{waiting},"holders":[],"attributed":0,"unattributed":0}}"#
            ),
            RTNL_UNLOCK.into(),
            r#"{"type":"cleanup_net","phase":"end","netns":[20]}"#.into(),
            SUMMARY.into(),
        ]
    }

    const RTNL_UNLOCK: &str = r#"{"type":"rtnl_unlock","time":3.1,"duration_us":3102000,"caller":"default_device_exit_batch+0x29b","caller_addr":"0xffffffffad5af0fb","pid":25,"comm":"kworker/u4:1"}"#;

    fn pinned(expect: Holder, json: &[String], dmesg: &[&str]) -> Result<String, String> {
        let facts = r#"{"scenario":"stuck","mode":"x","hold_ms":3000,"inodes":[20]}"#;
        let json: Vec<&str> = json.iter().map(String::as_str).collect();
        check_pinned(&run_of(&serial(facts, &json, dmesg)), expect)
    }

    fn hold_run(refcnt: i64, waiting: f64, dmesg: &[&str]) -> Result<String, String> {
        pinned(
            Holder::Bare,
            &pinned_json(refcnt, waiting, "", 0, refcnt - 1),
            dmesg,
        )
    }

    fn err(r: Result<String, String>, want: &str) {
        let e = r.expect_err(want);
        assert!(e.contains(want), "{e:?} does not contain {want:?}");
    }

    /// A `kprobes` run: the hold run with this attach record first.
    fn kprobes_run(methods: &[(&str, &str)], degraded: bool) -> Result<String, String> {
        let hooks: Vec<String> = methods
            .iter()
            .map(|(h, m)| format!(r#"{{"hook":"{h}","method":"{m}"}}"#))
            .collect();
        let mut json = vec![format!(
            r#"{{"type":"attach","hooks":[{}],"degraded":{degraded},"reasons":[]}}"#,
            hooks.join(",")
        )];
        json.extend(pinned_json(2, 3.02, "", 0, 1));
        let facts = r#"{"scenario":"stuck","mode":"hold","hold_ms":3000,"inodes":[20]}"#;
        let json: Vec<&str> = json.iter().map(String::as_str).collect();
        check_kprobes(&run_of(&serial(facts, &json, &[WAITING, RELEASED])))
    }

    #[test]
    fn kprobes_pass_and_failures() {
        let good = [
            ("copy_net_ns", "kprobe+kretprobe"),
            ("cleanup_net", "kprobe+kretprobe"),
            ("__put_net", "kprobe"),
            ("netdev_run_todo", "kprobe+kretprobe"),
            ("netdev_refcnt_read", "kprobe+kretprobe"),
            ("dst_alloc", "kretprobe"),
            ("sock_state", "tracepoint"),
            ("dev_hold", "-"),
        ];
        let ok = kprobes_run(&good, false).unwrap();
        assert!(ok.starts_with("6 hooks by kprobe/kretprobe; "), "{ok}");
        err(kprobes_run(&good, true), "degraded");
        let mut fentry = good;
        fentry[5] = ("dst_alloc", "fexit");
        err(kprobes_run(&fentry, false), "despite --no-fentry");
        let mut btf = good;
        btf[6] = ("sock_state", "tp_btf");
        err(kprobes_run(&btf, false), "despite --no-fentry");
        let mut missing = good;
        missing[3] = ("netdev_run_todo", "-");
        err(kprobes_run(&missing, false), "netdev_run_todo");
    }

    #[test]
    fn hold_pass_and_failures() {
        let ok = hold_run(2, 3.02, &[WAITING, WAITING, RELEASED]);
        assert!(ok.as_ref().unwrap().contains("1 unattributed"), "{ok:?}");
        err(hold_run(3, 3.02, &[WAITING, RELEASED]), "Usage count = 2");
        err(hold_run(2, 6.0, &[WAITING, RELEASED]), "module held it");
        err(hold_run(2, 2.4, &[WAITING, RELEASED]), "module held it");
        err(hold_run(2, 3.0, &[RELEASED]), "never printed");
        let other = WAITING.replace("= 2", "= 3");
        err(hold_run(2, 3.0, &[WAITING, &other, RELEASED]), "differ");
        err(hold_run(2, 3.0, &[WAITING]), "released lo after");
        // Judged against the module's own measurement (TCG timers run late).
        let late_work = RELEASED.replace("3000 ms", "3400 ms");
        assert!(hold_run(2, 3.75, &[WAITING, &late_work]).is_ok());
        let early = RELEASED.replace("3000 ms", "2000 ms");
        err(hold_run(2, 2.0, &[WAITING, &early]), "before hold_ms");
        // The kernel went on waiting long after the module let go.
        let late = WAITING.replace("5.1]", "9.5]");
        err(
            hold_run(2, 3.0, &[WAITING, RELEASED, &late]),
            "still waiting",
        );
        let soon = WAITING.replace("5.1]", "8.2]");
        assert!(hold_run(2, 3.0, &[WAITING, RELEASED, &soon]).is_ok());
        err(
            hold_run(2, 3.0, &[WAITING, RELEASED, "[ 8.0] Oops: 0000 [#1] SMP"]),
            "kernel complained",
        );
        // A bare dev_hold has nobody to blame.
        err(
            pinned(
                Holder::Bare,
                &pinned_json(2, 3.0, NEIGH, 1, 0),
                &[WAITING, RELEASED],
            ),
            "bare dev_hold",
        );
        // The bare-hold run with one text replaced on every line.
        let edit = |from: &str, to: &str| -> Vec<String> {
            pinned_json(2, 3.0, "", 0, 1)
                .iter()
                .map(|l| l.replace(from, to))
                .collect()
        };
        let d = [WAITING, RELEASED];
        // The tracer without attribution: the holders field is missing.
        err(
            pinned(Holder::Bare, &edit(r#","holders":[]"#, ""), &d),
            "no holders array",
        );
        // usage_count disagreeing with the kernel.
        err(
            pinned(
                Holder::Bare,
                &edit(r#""usage_count":2"#, r#""usage_count":3"#),
                &d,
            ),
            "Usage count = 2",
        );
        // The slow rtnl_unlock: missing, too short, or its caller unnamed.
        err(
            pinned(Holder::Bare, &edit(RTNL_UNLOCK, "{}"), &d),
            "no rtnl_unlock line",
        );
        err(
            pinned(Holder::Bare, &edit("3102000", "12000"), &d),
            "no rtnl_unlock line",
        );
        err(
            pinned(
                Holder::Bare,
                &edit(r#""default_device_exit_batch+0x29b""#, "null"),
                &d,
            ),
            "expected default_device_exit_batch",
        );
    }

    #[test]
    fn ledger_invariants() {
        let d = [WAITING, RELEASED];
        // More attributed than references outside the device's own.
        err(
            pinned(
                Holder::Neighbour,
                &pinned_json(2, 3.0, &format!("{NEIGH},{DST}"), 2, -1),
                &d,
            ),
            "outside 0..=refcnt-1",
        );
        // attributed + unattributed must add up to refcnt - 1.
        err(
            pinned(Holder::Bare, &pinned_json(2, 3.0, "", 0, 0), &d),
            "!= refcnt-1 (1)",
        );
    }

    #[test]
    fn neigh_and_dst_pass_and_failures() {
        let d = [WAITING, WAITING, RELEASED];
        let ok = pinned(Holder::Neighbour, &pinned_json(2, 3.0, NEIGH, 1, 0), &d);
        assert!(
            ok.as_ref().unwrap().contains("neighbour 0xff1 by insmod"),
            "{ok:?}"
        );
        assert!(pinned(Holder::Dst, &pinned_json(2, 3.0, DST, 1, 0), &d).is_ok());
        // The wrong kind, the wrong address.
        err(
            pinned(Holder::Dst, &pinned_json(2, 3.0, NEIGH, 1, 0), &d),
            "blames no dst",
        );
        let elsewhere = NEIGH.replace("127.0.0.66", "127.0.0.1");
        err(
            pinned(
                Holder::Neighbour,
                &pinned_json(2, 3.0, &elsewhere, 1, 0),
                &d,
            ),
            "blames no neighbour 127.0.0.66",
        );
        // Found, but the stack does not say who made it.
        let anon = NEIGH.replace(" [netns_leak]", "");
        err(
            pinned(Holder::Neighbour, &pinned_json(2, 3.0, &anon, 1, 0), &d),
            "never reaches the module",
        );
        // Found, but a reference left unexplained beside it.
        let two = [WAITING.replace("= 2", "= 3"), RELEASED.into()];
        let two: Vec<&str> = two.iter().map(String::as_str).collect();
        err(
            pinned(Holder::Dst, &pinned_json(3, 3.0, DST, 1, 1), &two),
            "1 unattributed beside the dst",
        );
        // Nothing named at all (the tracer before attribution).
        err(
            pinned(Holder::Dst, &pinned_json(2, 3.0, "", 0, 1), &d),
            "blames no dst",
        );
    }

    const TUPLES: [&str; 2] = [
        "[    3.2] netns_leak: tcpsock 127.0.0.1:40000 -> 127.0.0.1:35000",
        "[    3.2] netns_leak: tcpsock 127.0.0.1:35000 -> 127.0.0.1:40000",
    ];

    fn tcpsock_run(json: &[&str], dmesg: &[&str]) -> Result<String, String> {
        let facts = r#"{"scenario":"stuck","mode":"tcpsock","hold_ms":3000,"inodes":[20]}"#;
        check_tcpsock(&run_of(&serial(facts, json, dmesg)))
    }

    const SOCK: &str = r#"{"type":"socket","netns":20,"sk":"0xff3","family":"ipv4","protocol":"tcp","saddr":"127.0.0.1","sport":40000,"daddr":"127.0.0.1","dport":35000,"oldstate":"SYN_SENT","newstate":"ESTABLISHED","kernel":true,"dst_dev":"lo"}"#;
    const CLOSED: &str = r#"{"type":"socket","netns":20,"sk":"0xff3","family":"ipv4","protocol":"tcp","saddr":"127.0.0.1","sport":40000,"daddr":"127.0.0.1","dport":35000,"oldstate":"FIN_WAIT1","newstate":"CLOSE","kernel":true,"dst_dev":null}"#;
    const END: &str = r#"{"type":"cleanup_net","phase":"end","netns":[19,20]}"#;

    fn wait_with(holder: &str) -> String {
        format!(
            r#"{{"type":"dev_wait","time":2,"netns":20,"device":"lo","refcnt":2,"usage_count":2,"holders":[{holder}],"attributed":1,"unattributed":0}}"#
        )
    }

    #[test]
    fn tcpsock_pass_and_failures() {
        let ok = tcpsock_run(&[SOCK, CLOSED, END, SUMMARY], &TUPLES);
        assert!(
            ok.as_ref().unwrap().contains("SYN_SENT->ESTABLISHED"),
            "{ok:?}"
        );
        // The accepted side's line matches with the ports swapped.
        let accepted = SOCK
            .replace("40000", "X")
            .replace("35000", "40000")
            .replace("X", "35000");
        assert!(tcpsock_run(&[&accepted, CLOSED, END, SUMMARY], &TUPLES[..1]).is_ok());
        err(
            tcpsock_run(&[SOCK, CLOSED, END, SUMMARY], &[]),
            "no 'netns_leak: tcpsock'",
        );
        let user = SOCK.replace(r#""kernel":true"#, r#""kernel":false"#);
        err(
            tcpsock_run(&[&user, END, SUMMARY], &TUPLES),
            "no socket line",
        );
        let other_ns = SOCK.replace(r#""netns":20"#, r#""netns":21"#);
        err(
            tcpsock_run(&[&other_ns, END, SUMMARY], &TUPLES),
            "no socket line",
        );
        let other_port = SOCK.replace("40000", "40001");
        err(
            tcpsock_run(&[&other_port, END, SUMMARY], &TUPLES),
            "no socket line",
        );
        err(
            tcpsock_run(&[SOCK, CLOSED, SUMMARY], &TUPLES),
            "no cleanup_net end",
        );
        // The close must be seen with the connection's ports (tp_btf once
        // read the local port after the kernel had released it: 0).
        err(
            tcpsock_run(&[SOCK, END, SUMMARY], &TUPLES),
            "no socket line to CLOSE",
        );
        let port_gone = CLOSED.replace("40000", "0");
        err(
            tcpsock_run(&[SOCK, &port_gone, END, SUMMARY], &TUPLES),
            "no socket line to CLOSE",
        );
        // Blamed as a socket, or through a dst cached in it.
        let sock_holder = r#"{"kind":"socket","obj":"0xff3","address":null,"socket":{"sport":40000,"dport":35000}}"#;
        let w = wait_with(sock_holder);
        err(
            tcpsock_run(&[SOCK, CLOSED, &w, END, SUMMARY], &TUPLES),
            "blames the closed",
        );
        let dst_of_sock = DST.replace(
            r#""socket":null"#,
            r#""socket":{"sk":"0xff3","sport":35000,"dport":40000}"#,
        );
        let w = wait_with(&dst_of_sock);
        err(
            tcpsock_run(&[SOCK, CLOSED, &w, END, SUMMARY], &TUPLES),
            "blames the closed",
        );
        // Some other dst on lo is not a blame of the socket.
        let w = wait_with(DST);
        assert!(tcpsock_run(&[SOCK, CLOSED, &w, END, SUMMARY], &TUPLES).is_ok());
    }

    #[test]
    fn dmesg_helpers() {
        let t: Vec<String> = TUPLES.iter().map(|s| s.to_string()).collect();
        assert_eq!(tcpsock_tuples(&t), [(40000, 35000), (35000, 40000)]);
        assert_eq!(dmesg_time("[   12.500000] x"), Some(12.5));
        assert_eq!(dmesg_time("no time"), None);
    }

    /// An `exact-fallback` run on lo of netns 20 (usage count 2): `watch`
    /// is the watch record, `unknown` the unknown writes at the wait.
    fn fallback_run(watch: &str, unknown: u32) -> Result<String, String> {
        fallback_run_with(watch, unknown, "kallsyms_lookup_name")
    }

    fn fallback_run_with(watch: &str, unknown: u32, symbols_from: &str) -> Result<String, String> {
        let facts = r#"{"scenario":"stuck","mode":"hold","hold_ms":3000,"inodes":[20]}"#;
        let hold = r#"{"holds":1,"last":1.0,"comm":"insmod","pid":9,"stack":["netns_leak_init+0x49 [netns_leak]"]}"#;
        let release = r#"{"holds":1,"last":3.0,"comm":"kworker/0:1","pid":3,"stack":["leak_release+0x28 [netns_leak]"]}"#;
        let exact = |out: i64, sites: &str, unknown: u32, last: &str| {
            format!(
                r#"{{"source":"watchpoints","outstanding":{out},"pre_arm":0,"pre_arm_left":0,"hold_sites":[{sites}],"unknown_writes":{unknown},"lost_writes":0,"unpaired_releases":0,"last_release":{last}}}"#
            )
        };
        let json = [
            r#"{"type":"attach","hooks":[],"exact_sources":{"created":"watchpoints","stuck":"watchpoints","ref_tracker_unused":"absent"},"degraded":false,"reasons":[],"attach_ms":1,"symbols_from":"kallsyms_lookup_name"}"#.replace("kallsyms_lookup_name", symbols_from),
            format!(
                r#"{{"type":"watch","time":0.5,"netns":20,"device":"lo","dev":"0x1","source":"watchpoints","state":"armed","cpus":2,"pre_arm":0,{watch}}}"#
            ),
            format!(
                r#"{{"type":"dev_wait","time":2.0,"netns":20,"device":"lo","ifindex":1,"refcnt":2,"usage_count":2,"waiting_s":1.0,"holders":[],"attributed":0,"unattributed":1,"exact":{}}}"#,
                exact(1, hold, unknown, "null")
            ),
            format!(
                r#"{{"type":"dev_released","time":3.1,"netns":20,"device":"lo","ifindex":1,"refcnt":1,"usage_count":1,"waiting_s":2.0,"holders":[],"attributed":0,"unattributed":0,"exact":{}}}"#,
                exact(0, "", 0, release)
            ),
            SUMMARY.into(),
        ];
        let json: Vec<&str> = json.iter().map(String::as_str).collect();
        let dmesg = ["unregister_netdevice: waiting for lo to become free. Usage count = 2"];
        check_exact_fallback(&run_of(&serial(facts, &json, &dmesg)))
    }

    /// An `exact-two` run on lo of netns 20: lines of one tracer, from
    /// (type, usage count, outstanding, kernel_disagrees).
    fn two_lines(reports: &[(&str, i64, i64, Option<i64>)]) -> Vec<String> {
        reports
            .iter()
            .enumerate()
            .map(|(i, (ty, usage, out, said))| {
                let said = said.map(|k| format!(r#","kernel_disagrees":{k}"#));
                format!(
                    r#"{{"type":"{ty}","time":{i}.0,"netns":20,"device":"lo","usage_count":{usage},"exact":{{"outstanding":{out}{}}}}}"#,
                    said.unwrap_or_default()
                )
            })
            .collect()
    }

    fn two_run(driver: &[String], second: &[String]) -> Result<String, String> {
        let facts = r#"{"scenario":"stuck","mode":"hold","hold_ms":3000,"inodes":[20]}"#;
        let json: Vec<&str> = driver.iter().map(String::as_str).collect();
        let mut s = serial(facts, &json, &[]);
        s += "==NT-BEGIN second-json==\r\n";
        for l in second {
            s += &format!("{l}\r\n");
        }
        s += "==NT-END second-json==\r\n";
        check_exact_two(&run_of(&s))
    }

    #[test]
    fn exact_two_allows_a_wrong_count_only_when_said() {
        let good = two_lines(&[("dev_wait", 2, 1, None), ("dev_released", 1, 0, None)]);
        // The second tracer missed nine releases and says so from its
        // second report on (the first may be a hit still on its way).
        let said = two_lines(&[
            ("dev_wait", 2, 10, None),
            ("dev_wait", 2, 10, Some(1)),
            ("dev_released", 1, 9, Some(0)),
        ]);
        let ok = two_run(&good, &said).unwrap();
        assert_eq!(
            ok,
            "lo of netns 20: driver exact, second said it counts 9 more than the kernel"
        );
        // Missing a hold instead: one fewer.
        let fewer = two_lines(&[("dev_wait", 2, 1, None), ("dev_released", 1, -1, Some(0))]);
        let ok = two_run(&fewer, &good).unwrap();
        assert!(
            ok.contains("driver said it counts 1 fewer than the kernel"),
            "{ok}"
        );
        // Wrong without saying so, at a later wait or at the release.
        let silent = two_lines(&[
            ("dev_wait", 2, 10, None),
            ("dev_wait", 2, 10, None),
            ("dev_released", 1, 9, Some(0)),
        ]);
        err(two_run(&good, &silent), "not said");
        let silent = two_lines(&[("dev_wait", 2, 1, None), ("dev_released", 1, 9, None)]);
        err(two_run(&silent, &good), "driver: dev_released at 1.0");
        // A tracer that never reported the release.
        err(two_run(&good, &[]), "second: no dev_released");
        // The hold put between the kernel's reading and a repeat of it.
        let mut repeated = two_lines(&[("dev_wait", 2, 1, None), ("dev_wait", 2, 0, None)]);
        repeated[1] = repeated[1].replace(
            r#""usage_count":2"#,
            r#""usage_count":2,"usage_count_at":0.0"#,
        );
        repeated.extend(two_lines(&[("dev_released", 1, 0, None)]));
        assert_eq!(
            two_run(&good, &repeated).unwrap(),
            "lo of netns 20: driver exact, second exact"
        );
        err(
            two_run(
                &good,
                &two_lines(&[
                    ("dev_wait", 2, 1, None),
                    ("dev_wait", 2, 0, None),
                    ("dev_released", 1, 0, None),
                ]),
            ),
            "second: dev_wait at 1.0 counts Some(0) but the kernel 1",
        );
    }

    #[test]
    fn exact_fallback_pass_and_failures() {
        let ring = r#""via":"perf_ring","reason":"asked for""#;
        let ok = fallback_run(ring, 0).unwrap();
        assert!(ok.contains("via perf_ring"), "{ok}");
        err(fallback_run(r#""via":"bpf""#, 0), "does not say perf_ring");
        err(fallback_run(r#""via":"perf_ring""#, 0), "and why");
        err(fallback_run(ring, 1), "writes not counted");
        err(
            fallback_run_with(ring, 0, "/proc/kallsyms"),
            "symbols from Some(\"/proc/kallsyms\")",
        );
    }

    #[test]
    fn kernel_tracker_stacks_from_dmesg() {
        let lines = [
            "[    3.460816] ref_tracker: lo@000000000f617215 has 1/1 users at\\x0a     ___neigh_create+0x211/0x980\\x0a     __neigh_create+0x9/0x30\\x0a".to_string(),
            "[    4.487202] unregister_netdevice: waiting for lo to become free. Usage count = 2".to_string(),
            "[    4.5] ref_tracker: eth0@00000000aa has 1/1 users at\\x0a     foo+0x1/0x2\\x0a".to_string(),
        ];
        assert_eq!(kernel_tracker_frames(&lines), ["___neigh_create+0x211"]);
        assert!(kernel_tracker_frames(&lines[1..]).is_empty());
    }

    #[test]
    fn usage_counts_from_dmesg_and_kmsg_formats() {
        let lines = [
            "[ 12.3] unregister_netdevice: waiting for lo to become free. Usage count = 2"
                .to_string(),
            "0,1,2,-;unregister_netdevice: waiting for lo to become free. Usage count = 5"
                .to_string(),
            "unrelated".to_string(),
        ];
        assert_eq!(usage_counts(&lines), [2, 5]);
    }

    const LATE_SCAN: &str = r#"{"type":"scan","time":0.3,"devices":["lo of netns 20"],"tables":[{"table":"arp_tbl","walked":8,"truncated":false,"error":null},{"table":"nd_tbl","walked":8,"truncated":false,"error":null},{"table":"tcp","walked":0,"truncated":false,"error":null}],"not_scanned":["UDP and other non-TCP sockets"],"unavailable":null}"#;
    const LATE_BLOCKED: &str = r#"{"type":"blocked","time":0.3,"pid":12,"tgid":12,"comm":"kworker/u8:0","reason":"teardown: waiting for a device's references (netdev_run_todo)","blocked_s":0.1,"stack":["msleep+0x2b","netdev_run_todo+0x36c"]}"#;

    fn late_lines(
        first_ms: u64,
        since: &str,
        usage: i64,
        last_release: &str,
        extra: &[&str],
    ) -> Result<String, String> {
        let facts = format!(
            r#"{{"scenario":"stuck","mode":"neigh","hold_ms":9000,"attach_late":true,"inodes":[20],"first_report_ms":{first_ms}}}"#
        );
        let wait = format!(
            r#"{{"type":"dev_wait","time":0.2,"netns":20,"device":"lo","ifindex":1,"refcnt":{usage},"usage_count":{usage},"waiting_s":0.0,"wait_since":"{since}","holders":[],"attributed":0,"unattributed":{}}}"#,
            usage - 1
        );
        let released = format!(
            r#"{{"type":"dev_released","time":5.0,"netns":20,"device":"lo","ifindex":1,"refcnt":1,"usage_count":1,"waiting_s":4.8,"wait_since":"first_seen","holders":[],"attributed":0,"unattributed":0,"exact":{{"outstanding":0,"last_release":{{"stack":{last_release}}}}}}}"#
        );
        let mut lines = vec![wait.as_str()];
        lines.extend_from_slice(extra);
        lines.push(&released);
        lines.push(SUMMARY);
        check_late(&run_of(&serial(&facts, &lines, &[WAITING])))
    }

    const MODULE_RELEASE: &str = r#"["neigh_destroy+0xd9","leak_release+0xc2 [netns_leak]"]"#;

    fn late_run(first_ms: u64, since: &str, usage: i64) -> Result<String, String> {
        late_lines(
            first_ms,
            since,
            usage,
            MODULE_RELEASE,
            &[LATE_SCAN, LATE_BLOCKED],
        )
    }

    #[test]
    fn late_attach_pass_and_failures() {
        assert!(late_run(150, "first_seen", 2).is_ok());
        assert!(late_run(2500, "first_seen", 2)
            .unwrap_err()
            .contains("> 2 s"));
        assert!(late_run(150, "run_todo", 2)
            .unwrap_err()
            .contains("mid-wait"));
        assert!(late_run(150, "first_seen", 3)
            .unwrap_err()
            .contains("kernel's 2"));
        let no_scan = late_lines(150, "first_seen", 2, MODULE_RELEASE, &[LATE_BLOCKED]);
        assert!(no_scan.unwrap_err().contains("no scan record"));
        let no_worker = late_lines(150, "first_seen", 2, MODULE_RELEASE, &[LATE_SCAN]);
        assert!(no_worker.unwrap_err().contains("teardown worker"));
        let other = late_lines(
            150,
            "first_seen",
            2,
            r#"["dst_destroy+0x1"]"#,
            &[LATE_SCAN, LATE_BLOCKED],
        );
        assert!(other.unwrap_err().contains("last release"));
    }

    fn run_leak_run(exit: i64, released: bool) -> Result<String, String> {
        let facts =
            format!(r#"{{"scenario":"run-leak","mode":"hold","exit_code":{exit},"inodes":[30]}}"#);
        let report = format!(
            r#"{{"type":"run_report","command":{{"exit_code":0}},"namespaces":[{{"netns":30,"devices":[{{"device":"lo","max_usage_count":2,"waited_s":5.5,"released":{released}}}]}}],"verdict":{{"exit_code":{exit},"leak":true}}}}"#
        );
        check_run_leak(&run_of(&serial(&facts, &[&report], &[])))
    }

    #[test]
    fn run_leak_checked() {
        assert!(run_leak_run(5, false).is_ok());
        assert!(run_leak_run(0, false).unwrap_err().contains("expected 5"));
        assert!(run_leak_run(5, true)
            .unwrap_err()
            .contains("lo in the report"));
    }

    fn docker_run(web2_name: &str) -> Run {
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let facts = format!(
            r#"{{"scenario":"docker","containers":[{{"name":"nt-before","id":"{a}","netns":11,"before":true}},{{"name":"nt-web-1","id":"{b}","netns":12,"before":false}},{{"name":"nt-web-2","id":"{c}","netns":13,"before":false}}]}}"#
        );
        let k = |id: &str, name: &str| {
            format!(r#"{{"id":"{id}","name":"{name}","image":"nt-busybox:latest","unknown":null}}"#)
        };
        let lines = [
            format!(
                r#"{{"type":"netns_create","time":1.0,"netns":12,"container":{}}}"#,
                k(&b, "nt-web-1")
            ),
            format!(
                r#"{{"type":"netns_create","time":1.5,"netns":13,"container":{}}}"#,
                k(&c, web2_name)
            ),
            format!(
                r#"{{"type":"netns_destroy","time":2.0,"netns":11,"container":{}}}"#,
                k(&a, "nt-before")
            ),
            format!(
                r#"{{"type":"netns_destroy","time":2.1,"netns":12,"container":{}}}"#,
                k(&b, "nt-web-1")
            ),
            format!(
                r#"{{"type":"netns_destroy","time":2.2,"netns":13,"container":{}}}"#,
                k(&c, "nt-web-2")
            ),
            SUMMARY.to_string(),
        ];
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        run_of(&serial(&facts, &refs, &[]))
    }

    #[test]
    fn docker_names_checked() {
        assert!(check_docker(&docker_run("nt-web-2")).is_ok());
        let err = check_docker(&docker_run("nt-web-1")).unwrap_err();
        assert!(
            err.starts_with("nt-web-2 (netns 13), netns_create at 1.5 s: container "),
            "{err}"
        );
        let mut r = docker_run("nt-web-2");
        r.events
            .retain(|v| !(v["type"] == "netns_destroy" && v["netns"] == 11));
        assert_eq!(
            check_docker(&r).unwrap_err(),
            "no netns_destroy for nt-before (netns 11)"
        );
        let mut r = docker_run("nt-web-2");
        r.events[2]["container"] = Value::Null;
        assert!(check_docker(&r).unwrap_err().contains("container null"));
    }
}
