//! Container ids from `/proc/PID/cgroup`.
//!
//! Docker puts each container's processes in a cgroup named after its
//! 64-hex-digit id: `/docker/<id>` with the cgroupfs driver, and
//! `/system.slice/docker-<id>.scope` with the systemd driver (cgroup v1
//! lists one line per hierarchy, v2 a single `0::` line).

/// A Docker container id: exactly 64 lowercase hex digits.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The container id in one cgroup path, if the path is a Docker
/// container's. The outermost match wins: with Docker inside a container,
/// `/docker/<outer>/docker/<inner>`, the host's dockerd knows `<outer>`.
pub fn container_id_in_path(path: &str) -> Option<&str> {
    let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
    while let Some(part) = parts.next() {
        if let Some(id) = part
            .strip_prefix("docker-")
            .and_then(|r| r.strip_suffix(".scope"))
        {
            if is_container_id(id) {
                return Some(id);
            }
        }
        if part == "docker" {
            if let Some(next) = parts.peek() {
                if is_container_id(next) {
                    return Some(next);
                }
            }
        }
    }
    None
}

/// The container id named by a `/proc/PID/cgroup` file (any hierarchy
/// line; they agree for a process in a container).
pub fn container_id(cgroup_file: &str) -> Option<String> {
    cgroup_file.lines().find_map(|line| {
        // hierarchy-ID:controller-list:cgroup-path; the path may contain ':'.
        let mut f = line.splitn(3, ':');
        let (_, _, path) = (f.next()?, f.next()?, f.next()?);
        container_id_in_path(path).map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1b001ca0020613b7a78776783a4e8c542646ed7c1a1fb6f0c2b8f6a6812e03a3";

    #[test]
    fn cgroupfs_driver_v2() {
        // As read inside the test VM (cgroup2, dockerd --exec-opt default).
        assert_eq!(
            container_id(&format!("0::/docker/{ID}\n")).as_deref(),
            Some(ID)
        );
    }

    #[test]
    fn systemd_driver_v2_and_v1() {
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(container_id(&v2).as_deref(), Some(ID));
        let v1 = format!(
            "12:pids:/system.slice/docker-{ID}.scope\n11:cpuset:/docker/{ID}\n1:name=systemd:/system.slice/docker-{ID}.scope\n0::/\n"
        );
        assert_eq!(container_id(&v1).as_deref(), Some(ID));
    }

    #[test]
    fn nested_docker_takes_outermost() {
        let inner = "2".repeat(64);
        let path = format!("0::/docker/{ID}/docker/{inner}\n");
        assert_eq!(container_id(&path).as_deref(), Some(ID));
    }

    #[test]
    fn not_a_container() {
        for text in [
            "0::/\n",
            "0::/system.slice/docker.service\n",
            "0::/user.slice/user-0.slice/session-3.scope\n",
            // Too short, upper case, not hex: not Docker ids.
            "0::/docker/1b001ca00206\n",
            &format!("0::/docker/{}\n", ID.to_uppercase()),
            &format!("0::/docker/{}\n", "g".repeat(64)),
            &format!("0::/system.slice/docker-{ID}.slice\n"),
            // Kubernetes' containerd pods are not Docker containers.
            &format!("0::/kubepods.slice/kubepods-besteffort.slice/cri-containerd-{ID}.scope\n"),
            "",
            "garbage without colons\n",
        ] {
            assert_eq!(container_id(text), None, "{text:?}");
        }
    }

    #[test]
    fn path_with_colon() {
        let text = format!("0::/weird:name/docker/{ID}\n");
        assert_eq!(container_id(&text).as_deref(), Some(ID));
    }
}
