//! Struct field offsets and enum values of the running kernel, from its BTF.
//! Aya's Rust eBPF has no CO-RE relocations, so the programs get these as a
//! global at load time; nothing about one kernel's layout is compiled in.
use anyhow::{anyhow, bail, Context as _, Result};
use netns_trace_common::Offsets;

use super::btf_raw::{Btf, Member, Type, KIND_ENUM, KIND_ENUM64, KIND_STRUCT, KIND_UNION};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

pub fn load_vmlinux() -> Result<Btf> {
    Btf::from_file(VMLINUX_BTF).with_context(|| {
        format!("{VMLINUX_BTF} is missing or unreadable: this kernel was built without BTF (CONFIG_DEBUG_INFO_BTF), which netns-trace needs to read kernel structures")
    })
}

/// Resolves every offset the programs use. Fields missing on this kernel
/// stay `Offsets::MISSING` (the programs then count a read error) and are
/// listed in the returned warnings.
pub fn resolve_offsets(btf: &Btf) -> (Offsets, Vec<String>) {
    let mut offsets = Offsets::unresolved();
    let mut missing = Vec::new();
    let mut field =
        |slot: &mut u32, strukt: &str, path: &[&str]| match byte_offset(btf, strukt, path) {
            Ok(off) => *slot = off,
            Err(err) => missing.push(format!("struct {strukt}.{}: {err:#}", path.join("."))),
        };
    field(&mut offsets.net_inum, "net", &["ns", "inum"]);
    field(&mut offsets.dev_name, "net_device", &["name"]);
    field(&mut offsets.dev_ifindex, "net_device", &["ifindex"]);
    field(&mut offsets.dev_net, "net_device", &["nd_net", "net"]);
    field(&mut offsets.dev_reg_state, "net_device", &["reg_state"]);
    field(&mut offsets.task_nsproxy, "task_struct", &["nsproxy"]);
    field(&mut offsets.nsproxy_net, "nsproxy", &["net_ns"]);
    field(&mut offsets.task_tgid, "task_struct", &["tgid"]);
    field(&mut offsets.dst_dev, "dst_entry", &["dev"]);
    field(&mut offsets.dst_ops, "dst_entry", &["ops"]);
    field(&mut offsets.dst_ops_family, "dst_ops", &["family"]);
    field(&mut offsets.neigh_dev, "neighbour", &["dev"]);
    field(&mut offsets.neigh_tbl, "neighbour", &["tbl"]);
    field(&mut offsets.neigh_key, "neighbour", &["primary_key"]);
    field(&mut offsets.neigh_tbl_family, "neigh_table", &["family"]);
    field(
        &mut offsets.sock_net,
        "sock",
        &["__sk_common", "skc_net", "net"],
    );
    field(&mut offsets.sock_dst_cache, "sock", &["sk_dst_cache"]);
    // What the tp_btf socket program reads from the socket itself (the
    // classic tracepoint hands it over in its record instead), from the
    // fields the tracepoint takes them from: the local end is inet_sock's
    // inet_saddr/inet_sport, which outlive the port's release on close
    // (skc_num is zeroed before the change to CLOSE is traced).
    for (slot, strukt, path) in [
        (
            &mut offsets.sk_family,
            "sock",
            &["__sk_common", "skc_family"][..],
        ),
        (&mut offsets.sk_protocol, "sock", &["sk_protocol"][..]),
        (
            &mut offsets.sk_dport,
            "sock",
            &["__sk_common", "skc_dport"][..],
        ),
        (
            &mut offsets.sk_daddr,
            "sock",
            &["__sk_common", "skc_daddr"][..],
        ),
        // struct sock is inet_sock's first member: same base pointer.
        (&mut offsets.sk_sport, "inet_sock", &["inet_sport"][..]),
        (&mut offsets.sk_saddr, "inet_sock", &["inet_saddr"][..]),
    ] {
        field(slot, strukt, path);
    }
    // IPv6 addresses exist only with CONFIG_IPV6.
    for (slot, name) in [
        (&mut offsets.sk_v6_rcv_saddr, "skc_v6_rcv_saddr"),
        (&mut offsets.sk_v6_daddr, "skc_v6_daddr"),
    ] {
        if let Ok(off) = byte_offset(btf, "sock", &["__sk_common", name]) {
            *slot = off;
        }
    }
    field(&mut offsets.net_loopback_dev, "net", &["loopback_dev"]);
    // Optional: absent when CONFIG_PCPU_DEV_REFCNT=n (then --exact cannot
    // watch per-CPU counters; the programs skip it).
    if let Ok(off) = byte_offset(btf, "net_device", &["pcpu_refcnt"]) {
        offsets.dev_pcpu_refcnt = off;
    }
    // Optional: only debug kernels (CONFIG_NET_DEV_REFCNT_TRACKER) have the
    // tracker; the ref_tracker hooks then find each device by this offset.
    if let Ok(off) = byte_offset(btf, "net_device", &["refcnt_tracker"]) {
        offsets.dev_refcnt_tracker = off;
    }
    if let Ok(off) = byte_offset(btf, "ref_tracker_dir", &["no_tracker"]) {
        offsets.tracker_no_tracker = off;
    }
    // sk_kern_sock is a one-bit bitfield: hand over its byte and bit.
    match bit_offset(btf, "sock", &["sk_kern_sock"]) {
        Ok(bits) => {
            offsets.sock_kern_byte = bits / 8;
            offsets.sock_kern_bit = bits % 8;
        }
        Err(err) => missing.push(format!("struct sock.sk_kern_sock: {err:#}")),
    }
    // The enum is anonymous inside net_device up to 6.x and a named
    // `enum netdev_reg_state` stored in a u8 on newer kernels.
    match member_enum_value(btf, "net_device", "reg_state", "NETREG_UNREGISTERED")
        .or_else(|_| named_enum_value(btf, "netdev_reg_state", "NETREG_UNREGISTERED"))
    {
        Ok(value) => offsets.netreg_unregistered = value,
        Err(err) => missing.push(format!("NETREG_UNREGISTERED: {err:#}")),
    }
    // The blocked-task iterator is optional too.
    for (slot, path) in [
        (&mut offsets.task_state, &["__state"][..]),
        (&mut offsets.task_pid, &["pid"][..]),
        (&mut offsets.task_comm, &["comm"][..]),
        (&mut offsets.task_exec_start, &["se", "exec_start"][..]),
    ] {
        if let Ok(off) = byte_offset(btf, "task_struct", path) {
            *slot = off;
        }
    }
    if let Ok(off) = byte_offset(btf, "sock_common", &["skc_state"]) {
        offsets.skc_state = off;
    }
    // The neighbour scan is optional (6.13 changed the hash to hlists):
    // without these it is reported as not done, nothing degrades.
    for (slot, strukt, name) in [
        (&mut offsets.neigh_next, "neighbour", "next"),
        (&mut offsets.tbl_nht, "neigh_table", "nht"),
        (&mut offsets.nht_buckets, "neigh_hash_table", "hash_buckets"),
        (&mut offsets.nht_shift, "neigh_hash_table", "hash_shift"),
    ] {
        if let Ok(off) = byte_offset(btf, strukt, &[name]) {
            *slot = off;
        }
    }
    (offsets, missing)
}

fn struct_by_name(btf: &Btf, name: &str) -> Result<Type> {
    btf.ids_by_name(name, KIND_STRUCT)
        .filter_map(|id| btf.type_by_id(id).ok())
        .find(|t| t.vlen > 0)
        .ok_or_else(|| anyhow!("no struct {name} in BTF"))
}

/// The struct or union a member's type names (through typedefs).
fn aggregate_of(btf: &Btf, m: &Member) -> Option<Type> {
    let t = btf.type_by_id(btf.strip(m.type_id).ok()?).ok()?;
    (t.kind == KIND_STRUCT || t.kind == KIND_UNION).then_some(t)
}

/// Finds `name` among the members of `s`, looking through anonymous
/// structs and unions; returns its bit offset and the member.
fn find_member(btf: &Btf, s: &Type, name: &str) -> Option<(u32, Member)> {
    for member in btf.members(s).ok()? {
        let member_name = btf.name(member.name_off);
        if member_name == name {
            return Some((member.bit_offset, member));
        }
        if member_name.is_empty() {
            if let Some(inner) = aggregate_of(btf, &member) {
                if let Some((bits, found)) = find_member(btf, &inner, name) {
                    return Some((member.bit_offset + bits, found));
                }
            }
        }
    }
    None
}

/// Byte offset of `strukt.path[0].path[1]...` (through embedded structs).
pub fn byte_offset(btf: &Btf, strukt: &str, path: &[&str]) -> Result<u32> {
    let (bits, last) = locate(btf, strukt, path)?;
    // A bitfield member cannot be read as a whole number of bytes.
    let size = last.bitfield_size;
    if !size.is_multiple_of(8) {
        bail!(
            "{} is a bitfield of {size} bits",
            path.last().copied().unwrap_or_default()
        );
    }
    if !bits.is_multiple_of(8) {
        bail!("not byte aligned");
    }
    Ok(bits / 8)
}

/// Bit offset of `strukt.path[0].path[1]...` (bitfields allowed).
pub fn bit_offset(btf: &Btf, strukt: &str, path: &[&str]) -> Result<u32> {
    locate(btf, strukt, path).map(|(bits, _)| bits)
}

/// Walks the path: its bit offset and the last member.
fn locate(btf: &Btf, strukt: &str, path: &[&str]) -> Result<(u32, Member)> {
    let mut current = struct_by_name(btf, strukt)?;
    let mut bits = 0u32;
    let mut last = None;
    for (i, name) in path.iter().enumerate() {
        let (member_bits, member) =
            find_member(btf, &current, name).ok_or_else(|| anyhow!("no member {name}"))?;
        bits += member_bits;
        if i + 1 < path.len() {
            current = aggregate_of(btf, &member)
                .ok_or_else(|| anyhow!("{name} is not a struct or union"))?;
        }
        last = Some(member);
    }
    Ok((bits, last.ok_or_else(|| anyhow!("empty field path"))?))
}

/// The value of enumerator `value_name` in enum type `t`.
fn enumerator(btf: &Btf, t: &Type, value_name: &str) -> Option<u32> {
    btf.enumerators(t)
        .ok()?
        .into_iter()
        .find(|(n, _)| *n == value_name)
        .map(|(_, v)| v as u32)
}

/// Value of enumerator `value_name` of the enum type of `strukt.member`.
pub fn member_enum_value(btf: &Btf, strukt: &str, member: &str, value_name: &str) -> Result<u32> {
    let s = struct_by_name(btf, strukt)?;
    let (_, m) = find_member(btf, &s, member).ok_or_else(|| anyhow!("no member {member}"))?;
    let t = btf.type_by_id(btf.strip(m.type_id)?)?;
    if t.kind != KIND_ENUM && t.kind != KIND_ENUM64 {
        bail!("{strukt}.{member} is not an enum");
    }
    enumerator(btf, &t, value_name).ok_or_else(|| anyhow!("no enumerator {value_name}"))
}

/// Value of enumerator `value_name` of the named enum `enum_name`.
pub fn named_enum_value(btf: &Btf, enum_name: &str, value_name: &str) -> Result<u32> {
    [KIND_ENUM, KIND_ENUM64]
        .into_iter()
        .flat_map(|k| btf.ids_by_name(enum_name, k).collect::<Vec<_>>())
        .filter_map(|id| btf.type_by_id(id).ok())
        .find_map(|t| enumerator(btf, &t, value_name))
        .ok_or_else(|| anyhow!("no enum {enum_name} with {value_name}"))
}

/// Does this kernel keep device refcounts per CPU (`pcpu_refcnt`)?
pub fn has_pcpu_refcnt(btf: &Btf) -> bool {
    byte_offset(btf, "net_device", &["pcpu_refcnt"]).is_ok()
}

/// Names of the kernel's TCP states (TCP_ESTABLISHED = 1 ...), from the
/// anonymous enum in BTF, without the `TCP_` prefix.
pub fn tcp_state_names(btf: &Btf) -> std::collections::HashMap<u8, String> {
    // Enumerators are not types and this enum has no name: scan the types
    // in order for the enum that has TCP_ESTABLISHED among its members.
    for id in 1..=btf.len() {
        let Ok(t) = btf.type_by_id(id) else {
            break;
        };
        if t.kind != KIND_ENUM {
            continue;
        }
        let Ok(values) = btf.enumerators(&t) else {
            continue;
        };
        if values.iter().any(|(n, _)| *n == "TCP_ESTABLISHED") {
            return values
                .into_iter()
                .map(|(n, v)| (v as u8, n.trim_start_matches("TCP_").to_string()))
                .collect();
        }
    }
    std::collections::HashMap::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against the build machine's own kernel BTF when it has one;
    /// these structures exist on every kernel netns-trace supports.
    #[test]
    fn resolves_offsets_from_running_kernel_btf() {
        let Ok(btf) = load_vmlinux() else {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        };
        let (offsets, missing) = resolve_offsets(&btf);
        assert!(missing.is_empty(), "{missing:?}");
        assert_ne!(offsets.dev_name, Offsets::MISSING);
        // ifindex and name are distinct fields of net_device.
        assert_ne!(offsets.dev_name, offsets.dev_ifindex);
        assert!(offsets.netreg_unregistered >= 1);
        assert!(byte_offset(&btf, "net_device", &["no_such_field"]).is_err());
        // sk_kern_sock is a bitfield: byte_offset refuses it, bit_offset
        // finds it inside struct sock.
        assert!(byte_offset(&btf, "sock", &["sk_kern_sock"]).is_err());
        let bits = bit_offset(&btf, "sock", &["sk_kern_sock"]).unwrap();
        assert_eq!(offsets.sock_kern_byte * 8 + offsets.sock_kern_bit, bits);
        // The peer's port and address are in anonymous structs inside
        // unions of sock_common: found through them, in their fixed order.
        assert_eq!(
            byte_offset(&btf, "sock", &["__sk_common", "skc_num"]).unwrap(),
            offsets.sk_dport + 2
        );
        assert_eq!(
            byte_offset(&btf, "sock", &["__sk_common", "skc_rcv_saddr"]).unwrap(),
            offsets.sk_daddr + 4
        );
        assert!(offsets.sk_family < offsets.sk_protocol);
        // The local end is inet_sock's, past the whole struct sock.
        assert!(offsets.sk_saddr > offsets.sock_dst_cache);
        assert!(offsets.sk_saddr < offsets.sk_sport);
        let states = tcp_state_names(&btf);
        assert_eq!(states.get(&1).map(String::as_str), Some("ESTABLISHED"));
        assert_eq!(states.get(&10).map(String::as_str), Some("LISTEN"));
    }
}
