//! What the running kernel offers, probed from the system (never assumed):
//! release, BTF, lockdown, the kprobe and breakpoint PMUs, tracefs,
//! kallsyms addresses. fentry support can only be learned by attaching,
//! which the attach step does and records.
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::kallsyms::Symbols;

#[derive(Clone, Debug, Serialize)]
pub struct KernelCaps {
    pub release: String,
    /// (major, minor) parsed from the release.
    pub version: (u32, u32),
    pub root: bool,
    pub btf: bool,
    /// "none", "integrity", "confidentiality", or None when unknown.
    pub lockdown: Option<String>,
    pub kprobe: bool,
    pub breakpoint: bool,
    pub tracefs: Option<PathBuf>,
    /// /proc/kallsyms shows real addresses (not zeros: kptr_restrict).
    pub kallsyms_addresses: bool,
    /// `ref_tracker_alloc` exists: a debug kernel with the refcount tracker.
    pub ref_tracker: bool,
}

impl KernelCaps {
    pub fn probe(tracefs: Option<PathBuf>, symbols: &Symbols) -> Self {
        let release = read_trim("/proc/sys/kernel/osrelease").unwrap_or_default();
        let version = parse_version(&release);
        Self {
            root: unsafe { libc::geteuid() } == 0,
            btf: Path::new(super::btf::VMLINUX_BTF).exists(),
            lockdown: lockdown(),
            kprobe: Path::new("/sys/bus/event_source/devices/kprobe").exists()
                || tracefs
                    .as_deref()
                    .is_some_and(|t| t.join("kprobe_events").exists()),
            breakpoint: Path::new("/sys/bus/event_source/devices/breakpoint").exists(),
            kallsyms_addresses: !symbols.is_empty() && !symbols.addresses_hidden(),
            ref_tracker: symbols.contains_function("ref_tracker_alloc"),
            tracefs,
            release,
            version,
        }
    }

    /// Since 5.13 a registered device holds one reference on itself, so
    /// `netdev_refcnt_read` of a device nobody else holds is 1 (0 before).
    pub fn free_refcnt(&self) -> i32 {
        if self.version >= (5, 13) {
            1
        } else {
            0
        }
    }

    /// Since 4.16/4.17 the teardown takes `pernet_ops_rwsem` for read, so a
    /// stuck teardown no longer blocks namespace creation.
    pub fn teardown_lock_regime(&self) -> &'static str {
        if self.version >= (4, 16) {
            "pernet_ops_rwsem (read): a stuck teardown does not block new namespaces, but stalls every later teardown"
        } else {
            "net_mutex: a stuck teardown blocks every copy_net_ns"
        }
    }
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The bracketed mode of /sys/kernel/security/lockdown, else the
/// `lockdown=` boot parameter, else unknown.
fn lockdown() -> Option<String> {
    if let Some(text) = read_trim("/sys/kernel/security/lockdown") {
        if let Some(mode) = parse_lockdown(&text) {
            return Some(mode);
        }
    }
    read_trim("/proc/cmdline")?
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("lockdown=").map(str::to_string))
}

pub fn parse_lockdown(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')?;
    Some(text[start + 1..start + end].to_string())
}

pub fn parse_version(release: &str) -> (u32, u32) {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("6.12.111+deb12-cloud-amd64"), (6, 12));
        assert_eq!(parse_version("6.1.0-50-cloud-amd64"), (6, 1));
        assert_eq!(parse_version("5.4.0"), (5, 4));
        assert_eq!(parse_version(""), (0, 0));
    }

    #[test]
    fn lockdown_mode() {
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality").as_deref(),
            Some("integrity")
        );
        assert_eq!(parse_lockdown("none").as_deref(), None);
    }

    #[test]
    fn self_reference_baseline() {
        let mut caps = KernelCaps::probe(None, &Symbols::default());
        caps.version = (5, 12);
        assert_eq!(caps.free_refcnt(), 0);
        caps.version = (6, 1);
        assert_eq!(caps.free_refcnt(), 1);
    }
}
