//! Which blocked tasks matter in an incident: a task in uninterruptible
//! sleep is reported only if its kernel stack shows it is part of, or
//! waiting behind, namespace creation or teardown.

/// Why a blocked task matters, from its symbolised stack (innermost
/// first, `func+0xoff [mod]`), or None when it is unrelated.
pub fn classify(frames: &[String]) -> Option<&'static str> {
    let has = |f: &str| {
        frames.iter().any(|frame| {
            let name = frame.split('+').next().unwrap_or(frame);
            name == f
        })
    };
    // Order matters: a teardown worker also holds the pernet lock, a task
    // creating a namespace may wait for rtnl.
    if has("netdev_run_todo") || has("netdev_wait_allrefs_any") || has("netdev_wait_allrefs") {
        Some("teardown: waiting for a device's references (netdev_run_todo)")
    } else if has("copy_net_ns") {
        Some("creating a network namespace (copy_net_ns)")
    } else if has("rtnl_lock") || has("rtnl_lock_killable") || has("rtnl_net_lock") {
        Some("waiting for rtnl_lock")
    } else if has("register_pernet_subsys")
        || has("register_pernet_device")
        || has("unregister_pernet_subsys")
        || has("unregister_pernet_device")
    {
        Some("waiting for the namespace teardown lock (pernet_ops_rwsem)")
    } else if has("cleanup_net") {
        Some("teardown: cleanup_net")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::classify;

    fn s(frames: &[&str]) -> Vec<String> {
        frames.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn teardown_worker_in_the_wait_loop() {
        let st = s(&[
            "__schedule+0x3b0",
            "schedule_timeout+0x98",
            "msleep+0x2d",
            "netdev_run_todo+0x2a7",
            "default_device_exit_batch+0x31d",
            "cleanup_net+0x1f8",
        ]);
        assert_eq!(
            classify(&st),
            Some("teardown: waiting for a device's references (netdev_run_todo)")
        );
    }

    #[test]
    fn lock_waiters_and_creators() {
        let rtnl = s(&[
            "__mutex_lock+0x1",
            "rtnl_lock+0x15",
            "rtnetlink_rcv_msg+0x1",
        ]);
        assert_eq!(classify(&rtnl), Some("waiting for rtnl_lock"));
        let create = s(&[
            "down_read+0x1",
            "copy_net_ns+0x10e",
            "create_new_namespaces+0x1",
        ]);
        assert_eq!(
            classify(&create),
            Some("creating a network namespace (copy_net_ns)")
        );
        let pernet = s(&["down_write+0x1", "register_pernet_subsys+0x1b [x]"]);
        assert!(classify(&pernet).unwrap().contains("pernet_ops_rwsem"));
    }

    #[test]
    fn unrelated_and_lookalike_names_are_not_reported() {
        assert_eq!(
            classify(&s(&["io_schedule+0x1", "ext4_sync_file+0x2"])),
            None
        );
        // Prefix of a real name is not that name.
        assert_eq!(classify(&s(&["rtnl_lock_something_else+0x1"])), None);
        assert_eq!(classify(&[]), None);
    }
}
