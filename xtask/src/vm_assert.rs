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

/// A parsed run: the facts object and the tracer's JSON lines.
pub struct Run {
    pub facts: Value,
    pub events: Vec<Value>,
    pub dmesg: Vec<String>,
}

impl Run {
    pub fn from_sections(s: &BTreeMap<String, Vec<String>>) -> Result<Run, String> {
        let facts_text = s
            .get("facts")
            .ok_or("no facts section in the serial log (guest did not finish?)")?;
        let facts: Value =
            serde_json::from_str(&facts_text.join("\n")).map_err(|e| format!("facts: {e}"))?;
        let mut events = Vec::new();
        for l in s
            .get("tracer-json")
            .into_iter()
            .flatten()
            .filter(|l| !l.trim().is_empty())
        {
            events.push(serde_json::from_str(l).map_err(|e| format!("tracer line {l:?}: {e}"))?);
        }
        let dmesg = s.get("dmesg").cloned().unwrap_or_default();
        Ok(Run {
            facts,
            events,
            dmesg,
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
    const PAT: &str = "waiting for lo to become free. Usage count = ";
    dmesg
        .iter()
        .filter_map(|l| l.split_once(PAT))
        .filter_map(|(_, n)| n.split_whitespace().next()?.parse().ok())
        .collect()
}

/// stuck: the tracer saw lo of our namespace waiting, with the kernel's own
/// usage count and for about as long as the module held it.
pub fn check_stuck(run: &Run) -> Result<String, String> {
    run.driver_errors()?;
    let inode = *run.inodes().keys().next().ok_or("facts has no inode")?;
    let hold_ms = run.facts["hold_ms"]
        .as_u64()
        .ok_or("facts has no hold_ms")?;
    let waits: Vec<&Value> = run
        .of_type("dev_wait")
        .filter(|v| v["device"] == "lo" && v["netns"].as_u64() == Some(inode))
        .collect();
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
    // Every waiting report states the kernel's number.
    let refcnts: Vec<i64> = waits.iter().filter_map(|v| v["refcnt"].as_i64()).collect();
    if refcnts.iter().any(|&r| r != n) {
        return Err(format!(
            "dev_wait refcnt {refcnts:?}, kernel said Usage count = {n}"
        ));
    }
    // The release carries the whole wait: it must match the module's hold
    // (which starts at NETDEV_UNREGISTER, just before the wait loop, and is
    // seen at the loop's next poll, at most 250 ms later).
    let released = run
        .of_type("dev_released")
        .find(|v| v["device"] == "lo" && v["netns"].as_u64() == Some(inode))
        .ok_or_else(|| format!("no dev_released line for lo in netns {inode}"))?;
    let waited = released["waiting_s"]
        .as_f64()
        .ok_or("dev_released has no waiting_s")?;
    let hold_s = hold_ms as f64 / 1000.0;
    if !(waited >= hold_s - 0.5 && waited <= hold_s + 0.5) {
        return Err(format!(
            "lo waited {waited} s, module held it {hold_s} s (±0.5)"
        ));
    }
    Ok(format!(
        "lo of netns {inode}: usage count {n} in {} reports (kernel: {n}), released after {waited:.2} s (hold {hold_s} s)",
        refcnts.len()
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

    fn stuck_json(refcnt: i64, waiting: f64) -> Vec<String> {
        vec![
            r#"{"type":"cleanup_net","phase":"start","duration_us":0}"#.into(),
            format!(
                r#"{{"type":"dev_wait","netns":20,"device":"lo","ifindex":1,"refcnt":{refcnt},"waiting_s":1.01}}"#
            ),
            format!(
                r#"{{"type":"dev_wait","netns":20,"device":"lo","ifindex":1,"refcnt":{refcnt},"waiting_s":2.02}}"#
            ),
            format!(
                r#"{{"type":"dev_released","netns":20,"device":"lo","ifindex":1,"refcnt":1,"waiting_s":{waiting}}}"#
            ),
            r#"{"type":"cleanup_net","phase":"end","duration_us":3100000}"#.into(),
            SUMMARY.into(),
        ]
    }

    fn stuck_run(refcnt: i64, waiting: f64, dmesg: &[&str]) -> Result<String, String> {
        let facts = r#"{"scenario":"stuck","mode":"hold","hold_ms":3000,"inodes":[20]}"#;
        let json = stuck_json(refcnt, waiting);
        let json: Vec<&str> = json.iter().map(String::as_str).collect();
        check_stuck(&run_of(&serial(facts, &json, dmesg)))
    }

    #[test]
    fn stuck_pass_and_failures() {
        assert!(stuck_run(2, 3.02, &[WAITING, WAITING]).is_ok());
        assert!(stuck_run(3, 3.02, &[WAITING])
            .unwrap_err()
            .contains("Usage count = 2"));
        assert!(stuck_run(2, 6.0, &[WAITING])
            .unwrap_err()
            .contains("module held it"));
        assert!(stuck_run(2, 2.4, &[WAITING])
            .unwrap_err()
            .contains("module held it"));
        assert!(stuck_run(2, 3.0, &[])
            .unwrap_err()
            .contains("never printed"));
        let other = WAITING.replace("= 2", "= 3");
        assert!(stuck_run(2, 3.0, &[WAITING, &other])
            .unwrap_err()
            .contains("differ"));
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
}
