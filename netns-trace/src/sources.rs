//! Which source counts `exact` references: the kernel's ref_tracker (debug
//! kernels with CONFIG_NET_DEV_REFCNT_TRACKER) or hardware watchpoints.
//!
//! "Instead or as well": when all three ref_tracker hooks are in, every new
//! loopback device in scope is counted through the tracker from its
//! creation (no debug registers, no budget), and watchpoints are spent only
//! on devices found stuck that the tracker has not counted since their
//! creation (they predate the tracer). Without the tracker, new devices get
//! watchpoints under `--exact`, as before.
use netns_trace_common::{exact_mode, Config, Offsets};

use crate::{output::ExactSources, plan::Plan};

/// Why the kernel's ref_tracker cannot count devices here, if it cannot
/// (before attach: what the running kernel lacks).
pub fn tracker_unavailable(offsets: &Offsets, config: &Config) -> Option<String> {
    if offsets.dev_refcnt_tracker == Offsets::MISSING
        || offsets.tracker_no_tracker == Offsets::MISSING
    {
        return Some(
            "no net_device.refcnt_tracker in BTF (CONFIG_NET_DEV_REFCNT_TRACKER off)".into(),
        );
    }
    // The start of the count is the devices' per-CPU counters read at once.
    if offsets.dev_pcpu_refcnt == Offsets::MISSING {
        return Some("devices keep no per-CPU refcount (CONFIG_PCPU_DEV_REFCNT=n)".into());
    }
    if config.per_cpu_offset_addr == 0 {
        return Some("__per_cpu_offset is not in /proc/kallsyms (no data symbols)".into());
    }
    None
}

/// After attach: whether new loopback devices are counted through
/// ref_tracker, or why not (one sentence).
pub fn tracker_verdict(plan: &Plan, offsets: &Offsets, config: &Config) -> Result<(), String> {
    if let Some(why) = plan.tracker_unused() {
        return Err(why);
    }
    match tracker_unavailable(offsets, config) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// What `exact` counts with, for the attach record.
pub fn exact_sources(tracker: &Result<(), String>, config: &Config, watcher: bool) -> ExactSources {
    let watchpoints = |on: bool| if on && watcher { "watchpoints" } else { "off" };
    ExactSources {
        created: match tracker {
            Ok(()) => "ref_tracker",
            Err(_) => watchpoints(config.exact == exact_mode::ALL),
        },
        stuck: watchpoints(config.exact != exact_mode::OFF),
        ref_tracker_unused: tracker.as_ref().err().cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debug_kernel() -> (Offsets, Config) {
        let mut o = Offsets::unresolved();
        o.dev_refcnt_tracker = 0x2c0;
        o.tracker_no_tracker = 0x10;
        o.dev_pcpu_refcnt = 0x300;
        let mut c = Config::default_const();
        c.per_cpu_offset_addr = 0xffffffff82000000;
        c.exact = exact_mode::STUCK;
        (o, c)
    }

    #[test]
    fn what_the_kernel_lacks() {
        let (mut o, mut c) = debug_kernel();
        assert_eq!(tracker_unavailable(&o, &c), None);
        c.per_cpu_offset_addr = 0;
        assert!(tracker_unavailable(&o, &c)
            .unwrap()
            .contains("__per_cpu_offset"));
        o.dev_pcpu_refcnt = Offsets::MISSING;
        assert!(tracker_unavailable(&o, &c)
            .unwrap()
            .contains("PCPU_DEV_REFCNT"));
        o.tracker_no_tracker = Offsets::MISSING;
        assert!(tracker_unavailable(&o, &c)
            .unwrap()
            .contains("CONFIG_NET_DEV_REFCNT_TRACKER off"));
    }

    #[test]
    fn tracker_for_new_devices_watchpoints_for_stuck_ones() {
        let (_, mut c) = debug_kernel();
        let x = exact_sources(&Ok(()), &c, true);
        assert_eq!(
            (x.created, x.stuck, x.ref_tracker_unused),
            ("ref_tracker", "watchpoints", None)
        );
        // Without the tracker: watchpoints for new devices only with --exact.
        let no = Err("ref_tracker_alloc: not in kallsyms".to_string());
        assert_eq!(exact_sources(&no, &c, true).created, "off");
        c.exact = exact_mode::ALL;
        let x = exact_sources(&no, &c, true);
        assert_eq!((x.created, x.stuck), ("watchpoints", "watchpoints"));
        assert_eq!(
            x.ref_tracker_unused.as_deref(),
            Some("ref_tracker_alloc: not in kallsyms")
        );
        // The watchpoint program refused: nothing but the tracker.
        let x = exact_sources(&Ok(()), &c, false);
        assert_eq!((x.created, x.stuck), ("ref_tracker", "off"));
        c.exact = exact_mode::OFF;
        assert_eq!(exact_sources(&no, &c, true).stuck, "off");
    }
}
