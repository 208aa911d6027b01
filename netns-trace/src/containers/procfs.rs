//! What the container mapping reads from a procfs tree (`--proc-root`):
//! the process table (pid, parent, name), each process's network
//! namespace inode and its cgroup file. Every function takes the procfs
//! root, so the unit tests run on fixture trees and a DaemonSet pod on
//! the host's /proc.

use std::collections::{HashMap, HashSet};
use std::path::Path;

/// One process (thread group) of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// `task_struct.comm` as /proc/PID/stat shows it (up to 15 bytes).
    pub comm: String,
}

/// `(comm, ppid)` from the text of /proc/PID/stat. The name is between the
/// first `(` and the *last* `)`: it may itself contain `)` and spaces.
pub fn parse_stat(text: &str) -> Option<(String, u32)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

/// Every process under `root` (numeric directories whose stat parses;
/// processes that exit while we read are skipped).
pub fn processes(root: &Path) -> std::io::Result<Vec<Proc>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((comm, ppid)) = parse_stat(&stat) {
            out.push(Proc { pid, ppid, comm });
        }
    }
    out.sort_by_key(|p| p.pid);
    Ok(out)
}

/// The one dockerd process of the table, or one sentence saying why not.
pub fn find_dockerd(root: &Path) -> Result<u32, String> {
    let procs = processes(root)
        .map_err(|e| format!("--pid-of-dockerd: cannot list {}: {e}", root.display()))?;
    let found: Vec<u32> = procs
        .iter()
        .filter(|p| p.comm == "dockerd")
        .map(|p| p.pid)
        .collect();
    match found.as_slice() {
        [pid] => Ok(*pid),
        [] => Err(format!(
            "--pid-of-dockerd: no dockerd process under {} (is Docker running? --pid PID takes any process)",
            root.display()
        )),
        many => Err(format!(
            "--pid-of-dockerd: {} dockerd processes under {} (pids {}): choose one with --pid PID",
            many.len(),
            root.display(),
            many.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `roots` and every process descending from them, by parent links.
pub fn descendants(procs: &[Proc], roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut seen: HashSet<u32> = HashSet::new();
    let mut stack: Vec<u32> = roots.to_vec();
    while let Some(pid) = stack.pop() {
        if pid == 0 || !seen.insert(pid) {
            continue;
        }
        stack.extend(children.get(&pid).into_iter().flatten().copied());
    }
    let mut out: Vec<u32> = seen.into_iter().collect();
    out.sort_unstable();
    out
}

/// containerd and its shims. The shim daemon double-forks away from
/// containerd (its parent becomes PID 1 or a subreaper) and on systemd
/// hosts containerd is a service of its own, not a child of dockerd; so
/// `--pid-of-dockerd` adds them by name to follow the `runc` that makes
/// each container's namespaces.
pub fn container_runtime(procs: &[Proc]) -> Vec<u32> {
    procs
        .iter()
        // comm is cut at 15 bytes: "containerd-shim-runc-v2" reads "containerd-shim".
        .filter(|p| p.comm == "containerd" || p.comm.starts_with("containerd-shim"))
        .map(|p| p.pid)
        .collect()
}

/// `net:[4026532281]` -> 4026532281.
pub fn parse_netns_link(target: &str) -> Option<u32> {
    target
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Network namespace inode of `pid` (None: gone, or no permission).
pub fn netns_inode(root: &Path, pid: u32) -> Option<u32> {
    let target = std::fs::read_link(root.join(pid.to_string()).join("ns/net")).ok()?;
    parse_netns_link(target.to_str()?)
}

/// The text of /proc/PID/cgroup.
pub fn cgroup(root: &Path, pid: u32) -> Option<String> {
    std::fs::read_to_string(root.join(pid.to_string()).join("cgroup")).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fixture procfs: `(pid, ppid, comm, netns inode, cgroup text)`.
    pub(crate) struct FakeProc(pub PathBuf);

    impl FakeProc {
        pub fn new(name: &str, procs: &[(u32, u32, &str, u32, &str)]) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "nt-fakeproc-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let fake = FakeProc(dir);
            for p in procs {
                fake.add(*p);
            }
            // Not processes: must be ignored.
            std::fs::create_dir_all(fake.0.join("sys")).unwrap();
            std::fs::write(fake.0.join("uptime"), "1.0 1.0\n").unwrap();
            fake
        }

        pub fn add(&self, (pid, ppid, comm, netns, cgroup): (u32, u32, &str, u32, &str)) {
            let d = self.0.join(pid.to_string());
            std::fs::create_dir_all(d.join("ns")).unwrap();
            std::fs::write(
                d.join("stat"),
                format!("{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0\n"),
            )
            .unwrap();
            std::os::unix::fs::symlink(format!("net:[{netns}]"), d.join("ns/net")).unwrap();
            std::fs::write(d.join("cgroup"), cgroup).unwrap();
        }

        pub fn remove(&self, pid: u32) {
            std::fs::remove_dir_all(self.0.join(pid.to_string())).unwrap();
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn stat_names_with_parens_and_spaces() {
        assert_eq!(
            parse_stat("42 (a) b (c) S 7 42 42 0"),
            Some(("a) b (c".into(), 7))
        );
        assert_eq!(
            parse_stat("1 (systemd) S 0 1 1 0"),
            Some(("systemd".into(), 0))
        );
        assert_eq!(parse_stat("1 systemd S 0"), None);
        assert_eq!(parse_stat("1 (x) S notanumber"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn dockerd_found_missing_or_ambiguous() {
        let one = FakeProc::new(
            "one",
            &[
                (1, 0, "init", 4026531840, "0::/\n"),
                (300, 1, "dockerd", 4026531840, "0::/\n"),
                (310, 300, "containerd", 4026531840, "0::/\n"),
            ],
        );
        assert_eq!(find_dockerd(&one.0), Ok(300));
        one.remove(300);
        let err = find_dockerd(&one.0).unwrap_err();
        assert_eq!(
            err,
            format!(
                "--pid-of-dockerd: no dockerd process under {} (is Docker running? --pid PID takes any process)",
                one.0.display()
            )
        );
        one.add((300, 1, "dockerd", 4026531840, "0::/\n"));
        one.add((912, 1, "dockerd", 4026532300, "0::/\n"));
        let err = find_dockerd(&one.0).unwrap_err();
        assert!(
            err.ends_with("(pids 300, 912): choose one with --pid PID"),
            "{err}"
        );
        assert!(err.starts_with("--pid-of-dockerd: 2 dockerd processes under"));
        let missing = find_dockerd(Path::new("/nonexistent/proc")).unwrap_err();
        assert!(
            missing.starts_with("--pid-of-dockerd: cannot list /nonexistent/proc: "),
            "{missing}"
        );
    }

    #[test]
    fn descendants_and_runtime() {
        let procs = [
            (1, 0, "init"),
            (300, 1, "dockerd"),
            (310, 300, "containerd"),
            (400, 1, "containerd-shim"),
            (410, 400, "sleep"),
            (411, 410, "sh"),
            (500, 1, "sshd"),
            (501, 500, "bash"),
        ]
        .map(|(pid, ppid, comm)| Proc {
            pid,
            ppid,
            comm: comm.into(),
        });
        assert_eq!(descendants(&procs, &[300]), [300, 310]);
        assert_eq!(container_runtime(&procs), [310, 400]);
        assert_eq!(descendants(&procs, &[300, 400]), [300, 310, 400, 410, 411]);
        // A pid not in the table is kept (it was checked to exist).
        assert_eq!(descendants(&procs, &[999]), [999]);
        // A parent loop (pid reuse races) terminates.
        let looped = [(5, 6, "a"), (6, 5, "b")].map(|(pid, ppid, comm)| Proc {
            pid,
            ppid,
            comm: comm.into(),
        });
        assert_eq!(descendants(&looped, &[5]), [5, 6]);
    }

    #[test]
    fn netns_and_cgroup_of_fixture() {
        let f = FakeProc::new("ns", &[(410, 400, "sleep", 4026532119, "0::/docker/abc\n")]);
        assert_eq!(netns_inode(&f.0, 410), Some(4026532119));
        assert_eq!(netns_inode(&f.0, 411), None);
        assert_eq!(cgroup(&f.0, 410).as_deref(), Some("0::/docker/abc\n"));
        let procs = processes(&f.0).unwrap();
        assert_eq!(
            procs,
            [Proc {
                pid: 410,
                ppid: 400,
                comm: "sleep".into()
            }]
        );
        assert_eq!(parse_netns_link("net:[5]"), Some(5));
        assert_eq!(parse_netns_link("mnt:[5]"), None);
        assert_eq!(parse_netns_link("net:[x]"), None);
    }

    #[test]
    fn real_proc_has_us() {
        let me = std::process::id();
        let procs = processes(Path::new("/proc")).unwrap();
        assert!(procs.iter().any(|p| p.pid == me));
        assert!(netns_inode(Path::new("/proc"), me).is_some());
    }
}
