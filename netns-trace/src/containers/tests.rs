use super::procfs::tests::FakeProc;
use super::*;
use crate::output::{human, json_line, NetnsCreateRec, NetnsDestroyRec, RtnlUnlockRec};

const INIT: u32 = 4026531840;
const A: &str = "1b001ca0020613b7a78776783a4e8c542646ed7c1a1fb6f0c2b8f6a6812e03a3";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const S: u64 = 1_000_000_000;

fn docker_host(name: &str) -> FakeProc {
    let a = format!("0::/docker/{A}\n");
    let b = format!("0::/system.slice/docker-{B}.scope\n");
    FakeProc::new(
        name,
        &[
            (1, 0, "init", INIT, "0::/init.scope\n"),
            (300, 1, "dockerd", INIT, "0::/system.slice/docker.service\n"),
            (
                310,
                300,
                "containerd",
                INIT,
                "0::/system.slice/docker.service\n",
            ),
            (
                400,
                1,
                "containerd-shim",
                INIT,
                "0::/system.slice/docker.service\n",
            ),
            // Container A's process, and a second one in its namespace.
            (410, 400, "sleep", 4026532119, &a),
            (411, 410, "sh", 4026532119, &a),
            // Container B, systemd cgroup driver.
            (420, 400, "nginx", 4026532200, &b),
            // `ip netns exec` outside Docker: a namespace, no container.
            (
                500,
                1,
                "bash",
                4026532300,
                "0::/user.slice/session-1.scope\n",
            ),
        ],
    )
}

fn create(netns: u32, tgid: u32) -> Record {
    Record::NetnsCreate(NetnsCreateRec {
        time_ns: S,
        wall_ns: 0,
        netns,
        net: 0,
        pid: tgid,
        tgid,
        comm: "runc:[1:CHILD]".into(),
        flags: 0x4000_0000,
        clone_newnet: true,
        duration_ns: None,
        err: 0,
        source: "copy_net_ns",
        container: Container::Off,
    })
}

fn destroy(netns: u32) -> Record {
    Record::NetnsDestroy(NetnsDestroyRec {
        time_ns: 2 * S,
        netns,
        pid: 1,
        comm: "containerd-shim".into(),
        container: Container::Off,
    })
}

fn rtnl_unlock() -> Record {
    Record::RtnlUnlock(RtnlUnlockRec {
        time_ns: 3 * S,
        duration_ns: 1000,
        caller: None,
        caller_addr: 0,
        pid: 9,
        comm: "kworker/u8:1".into(),
    })
}

fn info(id: &str, name: &str) -> Info {
    Info {
        id: id.into(),
        name: Some(name.into()),
        image: Some("nt-busybox:latest".into()),
    }
}

fn known(id: &str, name: Option<&str>, image: Option<&str>) -> Container {
    Container::Known {
        id: id.into(),
        name: name.map(Into::into),
        image: image.map(Into::into),
    }
}

#[test]
fn attach_scan_maps_running_containers() {
    let host = docker_host("scan");
    let mut map = ContainerMap::new(host.0.clone(), INIT, false);
    let roots = [300, 310, 400];
    let scope = procfs::descendants(&procfs::processes(&host.0).unwrap(), &roots);
    assert_eq!(scope, [300, 310, 400, 410, 411, 420]);
    // The containers' namespaces join the scope; the host's and the
    // unrelated `ip netns` one do not.
    assert_eq!(map.scan(&scope), [4026532119, 4026532200]);
    assert_eq!(map.lookup(4026532119), known(A, None, None));
    assert_eq!(map.lookup(4026532200), known(B, None, None));
    assert_eq!(map.lookup(4026532300), Container::None);
    assert_eq!(map.lookup(INIT), Container::None);
    // Not seen in any process at attach, not made since.
    assert_eq!(
        map.lookup(4026532999),
        Container::Unknown("namespace died before attach")
    );
}

#[test]
fn create_maps_by_the_creators_cgroup() {
    let host = docker_host("create");
    let mut map = ContainerMap::new(host.0.clone(), INIT, true);
    map.scan(&[]);
    // runc's child (pid 430) in container A's cgroup makes a new namespace.
    host.add((
        430,
        400,
        "runc:[1:CHILD]",
        4026532500,
        &format!("0::/docker/{A}\n"),
    ));
    map.on_create(4026532500, 430, S);
    assert_eq!(map.lookup(4026532500), known(A, None, None));
    // A task outside any container.
    map.on_create(4026532501, 500, S);
    assert_eq!(map.lookup(4026532501), Container::None);
    // The creator is gone before its cgroup could be read.
    map.on_create(4026532502, 4242, S);
    assert_eq!(
        map.lookup(4026532502),
        Container::Unknown("creating process exited before it was mapped")
    );
    // runc's child made it and exited; the container's init is in it.
    host.add((
        440,
        400,
        "sleep",
        4026532503,
        &format!("0::/system.slice/docker-{B}.scope\n"),
    ));
    map.on_create(4026532503, 4243, S);
    assert_eq!(map.lookup(4026532503), known(B, None, None));
    // A recycled inode takes its new owner.
    map.on_create(4026532119, 500, S);
    assert_eq!(map.lookup(4026532119), Container::None);
}

#[test]
fn api_names_and_images_arrive_later() {
    let host = docker_host("api");
    let mut map = ContainerMap::new(host.0.clone(), INIT, true);
    map.scan(&[]);
    assert!(map.want_api(S), "ids A and B are unnamed");
    assert!(!map.want_api(S), "one request at a time");
    assert_eq!(map.on_api(S + 1, Ok(vec![info(A, "web1")])), None);
    assert_eq!(
        map.lookup(4026532119),
        known(A, Some("web1"), Some("nt-busybox:latest"))
    );
    // B was not listed: not asked again before API_RETRY_NS.
    assert!(!map.want_api(2 * S));
    assert!(map.want_api(S + 1 + API_RETRY_NS));
    // A failure is reported once, not at every retry.
    let e = "Docker API: connect /run/docker.sock: connection refused".to_string();
    assert_eq!(map.on_api(7 * S, Err(e.clone())), Some(e.clone()));
    assert!(map.want_api(7 * S + API_RETRY_NS));
    assert_eq!(map.on_api(13 * S, Err(e)), None);
    assert_eq!(map.lookup(4026532200), known(B, None, None));
}

#[test]
fn no_socket_no_requests() {
    let host = docker_host("nosock");
    let mut map = ContainerMap::new(host.0.clone(), INIT, false);
    map.scan(&[]);
    assert!(!map.want_api(S));
    let mut q = OutputQueue::default();
    q.push(&mut map, destroy(4026532119), S);
    // Nothing to wait for: out at once, with the id from the cgroup.
    let out = q.ready(&map, S);
    assert_eq!(out.len(), 1);
    let Record::NetnsDestroy(r) = &out[0] else {
        panic!()
    };
    assert_eq!(r.container, known(A, None, None));
}

#[test]
fn queue_holds_records_in_order_until_the_api_answers() {
    let host = docker_host("queue");
    let mut map = ContainerMap::new(host.0.clone(), INIT, true);
    let mut q = OutputQueue::default();
    host.add((
        430,
        400,
        "runc:[1:CHILD]",
        4026532500,
        &format!("0::/docker/{A}\n"),
    ));
    q.push(&mut map, create(4026532500, 430), S);
    q.push(&mut map, rtnl_unlock(), S);
    assert!(map.want_api(S));
    // In flight: the create waits, and the record behind it too (order).
    assert!(q.ready(&map, S + S / 2).is_empty());
    map.on_api(S + S / 2, Ok(vec![info(A, "web1")]));
    let out = q.ready(&map, S + S / 2);
    assert_eq!(out.len(), 2);
    assert_eq!(
        json_line(&out[0]),
        format!(
            r#"{{"type":"netns_create","time":1.0,"wall":"1970-01-01T00:00:00.000Z","netns":4026532500,"net":"0x0","pid":430,"tgid":430,"comm":"runc:[1:CHILD]","flags":"0x40000000","clone_newnet":true,"duration_us":null,"error":null,"source":"copy_net_ns","container":{{"id":"{A}","name":"web1","image":"nt-busybox:latest","unknown":null}}}}"#
        )
    );
    assert!(matches!(out[1], Record::RtnlUnlock(_)));
    assert!(q.is_empty());
}

#[test]
fn queue_gives_up_waiting_after_api_wait() {
    let host = docker_host("slow");
    let mut map = ContainerMap::new(host.0.clone(), INIT, true);
    map.scan(&[]);
    let mut q = OutputQueue::default();
    q.push(&mut map, destroy(4026532119), S);
    assert!(map.want_api(S));
    assert!(q.ready(&map, S + API_WAIT_NS - 1).is_empty());
    let out = q.ready(&map, S + API_WAIT_NS);
    let Record::NetnsDestroy(r) = &out[0] else {
        panic!()
    };
    assert_eq!(r.container, known(A, None, None));
    // Not a container, or unknown: never held.
    q.push(&mut map, destroy(4026532300), 2 * S);
    q.push(&mut map, destroy(4026532999), 2 * S);
    let out = q.ready(&map, 2 * S);
    assert_eq!(out.len(), 2);
}

#[test]
fn answer_older_than_the_mapping_is_asked_again() {
    let host = docker_host("race");
    let mut map = ContainerMap::new(host.0.clone(), INIT, true);
    map.scan(&[]);
    assert!(map.want_api(S));
    // Container A's sibling namespace is made while the request is out.
    host.add((
        431,
        400,
        "runc:[1:CHILD]",
        4026532600,
        "0::/docker/cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\n",
    ));
    map.on_create(4026532600, 431, S + 1);
    map.on_api(S + 2, Ok(vec![info(A, "web1")]));
    assert!(
        map.want_api(S + 3),
        "asked again at once, not after the retry delay"
    );
}

#[test]
fn human_output_escapes_container_names() {
    let host = docker_host("human");
    let mut map = ContainerMap::new(host.0.clone(), INIT, true);
    map.scan(&[]);
    assert!(map.want_api(S));
    map.on_api(S, Ok(vec![info(A, "evil\x1b[2Jname\n")]));
    let mut q = OutputQueue::default();
    q.push(&mut map, destroy(4026532119), S);
    q.push(&mut map, destroy(4026532999), S);
    q.push(&mut map, destroy(4026532300), S);
    let out = q.ready(&map, S);
    assert_eq!(
        human(&out[0]),
        "   2.000 netns_destroy 4026532119       1 containerd-shim  queued for cleanup container=evil\\x1b[2Jname\\x0a (1b001ca00206)"
    );
    assert_eq!(
        human(&out[1]),
        "   2.000 netns_destroy 4026532999       1 containerd-shim  queued for cleanup container unknown (namespace died before attach)"
    );
    assert_eq!(
        human(&out[2]),
        "   2.000 netns_destroy 4026532300       1 containerd-shim  queued for cleanup"
    );
    assert_eq!(
        json_line(&out[1]),
        r#"{"type":"netns_destroy","time":2.0,"netns":4026532999,"pid":1,"comm":"containerd-shim","container":{"id":null,"name":null,"image":null,"unknown":"namespace died before attach"}}"#
    );
    assert_eq!(
        json_line(&out[2]),
        r#"{"type":"netns_destroy","time":2.0,"netns":4026532300,"pid":1,"comm":"containerd-shim","container":null}"#
    );
}

#[test]
fn mapping_off_leaves_the_field_out() {
    let j = json_line(&destroy(5));
    assert_eq!(
        j,
        r#"{"type":"netns_destroy","time":2.0,"netns":5,"pid":1,"comm":"containerd-shim"}"#
    );
}

/// The examples of docs/events.md's `container` section are what the
/// renderer prints for those records.
#[test]
fn docs_container_examples() {
    let doc = include_str!("../../../docs/events.md");
    let section = doc
        .split("## The `container` field")
        .nth(1)
        .and_then(|s| s.split("```json\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("container section with a JSON block");
    let docs: Vec<&str> = section.lines().collect();

    let host = docker_host("docs");
    let mut map = ContainerMap::new(host.0.clone(), INIT, true);
    map.scan(&[]);
    host.add((
        912,
        400,
        "runc:[1:CHILD]",
        4026532281,
        &format!("0::/docker/{A}\n"),
    ));
    let mut q = OutputQueue::default();
    let Record::NetnsCreate(mut c) = create(4026532281, 912) else {
        panic!()
    };
    c.time_ns = 5_197_000_000;
    c.wall_ns = 1_714_566_896_789_000_000;
    c.net = 0xffff888004a1c000;
    c.flags = 0x6c02_0000;
    c.duration_ns = Some(1_234_567);
    q.push(&mut map, Record::NetnsCreate(c), S);
    assert!(map.want_api(S));
    map.on_api(S, Ok(vec![info(A, "web1")]));
    let mut d = |netns, t, pid, comm: &str| {
        let Record::NetnsDestroy(mut r) = destroy(netns) else {
            panic!()
        };
        (r.time_ns, r.pid, r.comm) = (t, pid, comm.into());
        q.push(&mut map, Record::NetnsDestroy(r), S);
    };
    d(4026532281, 9_021_000_000, 0, "swapper/1");
    d(4026532119, 9_500_000_000, 31, "kworker/u8:1");
    d(4026532300, 9_600_000_000, 500, "ip");
    // 4026532119 was container A's at the scan: forget it, as if it had
    // died before attach (no process showed it).
    map.netns.remove(&4026532119);
    let out: Vec<String> = q.ready(&map, S).iter().map(json_line).collect();
    assert_eq!(out, docs);
}
