//! A minimal reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): just
//! what resolving struct field offsets and enum values needs. It keeps the
//! raw bytes and one offset per type id, nothing else: a general BTF
//! library builds maps of every type and name (about 45 MB for a distro
//! kernel, the loader's largest allocation), for the few dozen lookups
//! made once at start.
//!
//! Format: linux/btf.h. A header, then the type section (each type a
//! 12-byte `btf_type` followed by kind-specific data), then the strings.
use anyhow::{anyhow, bail, Result};

pub const KIND_INT: u32 = 1;
pub const KIND_PTR: u32 = 2;
pub const KIND_ARRAY: u32 = 3;
pub const KIND_STRUCT: u32 = 4;
pub const KIND_UNION: u32 = 5;
pub const KIND_ENUM: u32 = 6;
pub const KIND_FWD: u32 = 7;
pub const KIND_TYPEDEF: u32 = 8;
pub const KIND_VOLATILE: u32 = 9;
pub const KIND_CONST: u32 = 10;
pub const KIND_RESTRICT: u32 = 11;
pub const KIND_FUNC: u32 = 12;
pub const KIND_FUNC_PROTO: u32 = 13;
pub const KIND_VAR: u32 = 14;
pub const KIND_DATASEC: u32 = 15;
pub const KIND_FLOAT: u32 = 16;
pub const KIND_DECL_TAG: u32 = 17;
pub const KIND_TYPE_TAG: u32 = 18;
pub const KIND_ENUM64: u32 = 19;

const MAGIC: u16 = 0xeb9f;

pub struct Btf {
    data: Vec<u8>,
    types: usize,
    strings: usize,
    strings_len: usize,
    /// Byte offset (from `types`) of each type; index = type id - 1.
    index: Vec<u32>,
    /// Ids of the named structs, unions and enums by (kind, hash of the
    /// name), built by the first lookup: one pass over the ~150k types
    /// instead of one per lookup (start-up makes ~20; scanning each time
    /// was most of the 74 ms the offsets took in the 6.12 guest).
    by_name: std::cell::OnceCell<ByName>,
}

/// Type ids by [`name_key`].
type ByName = std::collections::HashMap<u64, Vec<u32>, std::hash::BuildHasherDefault<KeyIsHash>>;

/// The kinds [`Btf::ids_by_name`] finds through the index.
const INDEXED: [u32; 4] = [KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64];

/// FNV-1a over a kind and a name. The kernel's names are not chosen to
/// collide, and std's SipHash, run twice (the name, then the map's key),
/// was ~10 ms of the 6.12 guest's start-up (perf: `hash_one`, `sip`).
fn name_key(kind: u32, name: &[u8]) -> u64 {
    fnv1a(0xcbf2_9ce4_8422_2325 ^ u64::from(kind), name)
}

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The index's hasher: its keys are hashes already, only mixed so that
/// the table's low and high bits both vary.
#[derive(Default)]
struct KeyIsHash(u64);

impl std::hash::Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        let h = (self.0 ^ (self.0 >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a(self.0, bytes);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }
}

/// One type: its kind, name, the `size`/`type` word, the `vlen` and
/// `kind_flag` bits of `info`, and where its extra data starts.
#[derive(Debug, Clone, Copy)]
pub struct Type {
    pub kind: u32,
    pub name_off: u32,
    pub vlen: u32,
    pub kind_flag: bool,
    pub size_or_type: u32,
    extra: usize,
}

/// A struct or union member.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    pub name_off: u32,
    pub type_id: u32,
    pub bit_offset: u32,
    /// Bitfield width in bits, 0 when not a bitfield.
    pub bitfield_size: u32,
}

/// A wanted (kind, name) with its first 8 bytes (the NUL included when
/// shorter) as a little-endian word, and which of its bytes count.
struct Prefix<'w> {
    kind: u32,
    name: &'w [u8],
    key: u64,
    mask: u64,
}

impl<'w> Prefix<'w> {
    fn new(kind: u32, name: &'w str) -> Self {
        let name = name.as_bytes();
        let mut bytes = [0u8; 8];
        let n = (name.len() + 1).min(8);
        let used = name.len().min(8);
        bytes[..used].copy_from_slice(&name[..used]);
        let mask = if n == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * n)) - 1
        };
        Prefix {
            kind,
            name,
            key: u64::from_le_bytes(bytes) & mask,
            mask,
        }
    }
}

impl Btf {
    pub fn from_file(path: &str) -> Result<Self> {
        Self::parse(std::fs::read(path)?)
    }

    pub fn parse(data: Vec<u8>) -> Result<Self> {
        let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if u16_at(0) != Some(MAGIC) {
            bail!("not little-endian BTF (bad magic)");
        }
        let word = |o: usize| -> Result<usize> {
            let b = data
                .get(o..o + 4)
                .ok_or_else(|| anyhow!("BTF header truncated"))?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let hdr_len = word(4)?;
        let (type_off, type_len) = (word(8)?, word(12)?);
        let (str_off, str_len) = (word(16)?, word(20)?);
        let types = hdr_len + type_off;
        let strings = hdr_len + str_off;
        if types + type_len > data.len() || strings + str_len > data.len() {
            bail!("BTF sections run past the end of the data");
        }
        let mut btf = Btf {
            data,
            types,
            strings,
            strings_len: str_len,
            index: Vec::new(),
            by_name: std::cell::OnceCell::new(),
        };
        let mut pos = 0usize;
        while pos < type_len {
            btf.index.push(pos as u32);
            let t = btf.type_at(pos)?;
            pos = t.extra - btf.types + extra_len(&t)?;
        }
        if pos != type_len {
            bail!("BTF type section has a truncated last type");
        }
        Ok(btf)
    }

    fn u32_at(&self, o: usize) -> Result<u32> {
        let b = self
            .data
            .get(o..o + 4)
            .ok_or_else(|| anyhow!("BTF read past the end"))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn type_at(&self, pos: usize) -> Result<Type> {
        let base = self.types + pos;
        let info = self.u32_at(base + 4)?;
        Ok(Type {
            kind: (info >> 24) & 0x1f,
            name_off: self.u32_at(base)?,
            vlen: info & 0xffff,
            kind_flag: info >> 31 == 1,
            size_or_type: self.u32_at(base + 8)?,
            extra: base + 12,
        })
    }

    /// Number of types (ids 1..=len).
    pub fn len(&self) -> u32 {
        self.index.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn type_by_id(&self, id: u32) -> Result<Type> {
        let pos = *self
            .index
            .get((id as usize).wrapping_sub(1))
            .ok_or_else(|| anyhow!("no BTF type {id}"))?;
        self.type_at(pos as usize)
    }

    pub fn name(&self, off: u32) -> &str {
        std::str::from_utf8(self.name_bytes(off)).unwrap_or("")
    }

    fn name_bytes(&self, off: u32) -> &[u8] {
        let start = self.strings + off as usize;
        let end = self.strings + self.strings_len;
        let Some(bytes) = self.data.get(start..end) else {
            return &[];
        };
        let len = memchr::memchr(0, bytes).unwrap_or(bytes.len());
        &bytes[..len]
    }

    /// Ids of the types of `kind` named `name`, in id order.
    pub fn ids_by_name<'a>(&'a self, name: &'a str, kind: u32) -> impl Iterator<Item = u32> + 'a {
        let matches = move |id: &u32| {
            self.type_by_id(*id)
                .is_ok_and(|t| t.kind == kind && self.name_bytes(t.name_off) == name.as_bytes())
        };
        let candidates: Box<dyn Iterator<Item = u32>> = if INDEXED.contains(&kind) {
            let hits = self
                .by_name
                .get_or_init(|| self.index_names())
                .get(&name_key(kind, name.as_bytes()));
            Box::new(hits.into_iter().flatten().copied())
        } else {
            Box::new(1..=self.len())
        };
        candidates.filter(matches)
    }

    fn index_names(&self) -> ByName {
        let mut by_name = ByName::default();
        for id in 1..=self.len() {
            let Ok(t) = self.type_by_id(id) else { continue };
            if t.name_off == 0 || !INDEXED.contains(&t.kind) {
                continue;
            }
            let key = name_key(t.kind, self.name_bytes(t.name_off));
            by_name.entry(key).or_default().push(id);
        }
        by_name
    }

    /// Follows typedefs and qualifiers to the type they name.
    pub fn strip(&self, mut id: u32) -> Result<u32> {
        for _ in 0..32 {
            let t = self.type_by_id(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Ok(id),
            }
        }
        bail!("BTF type chain too long")
    }

    /// Members of a struct or union.
    pub fn members(&self, t: &Type) -> Result<Vec<Member>> {
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            bail!("not a struct or union");
        }
        (0..t.vlen as usize)
            .map(|i| {
                let o = t.extra + i * 12;
                let raw = self.u32_at(o + 8)?;
                let (bit_offset, bitfield_size) = if t.kind_flag {
                    (raw & 0x00ff_ffff, raw >> 24)
                } else {
                    (raw, 0)
                };
                Ok(Member {
                    name_off: self.u32_at(o)?,
                    type_id: self.u32_at(o + 4)?,
                    bit_offset,
                    bitfield_size,
                })
            })
            .collect()
    }

    /// A BTF blob with this BTF's type ids in which only the types named
    /// in `wanted` (kind, name) are real: every other type up to the last
    /// wanted one is a nameless forward declaration, and none follows.
    /// Only functions and typedefs can be wanted (they carry no data past
    /// their 12 bytes). Every type of a wanted kind and name is kept, so
    /// a lookup's first match is the full BTF's.
    ///
    /// Why: aya finds an attach target (fentry, fexit, tp_btf, iterator)
    /// by a linear scan that turns the name of every type of its kind
    /// into a string, ~15 ms per program in the 6.12 guest, and it needs
    /// a whole parse of the kernel's BTF to scan. Given this blob it
    /// parses placeholders and compares a few names.
    pub fn names_only(&self, wanted: &[(u32, &str)]) -> Result<Vec<u8>> {
        if let Some((k, n)) = wanted
            .iter()
            .find(|(k, _)| *k != KIND_FUNC && *k != KIND_TYPEDEF)
        {
            bail!("{n}: only functions and typedefs can be kept (kind {k})");
        }
        let wanted: Vec<Prefix> = wanted.iter().map(|&(k, n)| Prefix::new(k, n)).collect();
        // Every slot starts as a placeholder; the wanted ones are written
        // over (12 bytes each, the size of a function or typedef).
        const PLACEHOLDER: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, KIND_FWD as u8, 0, 0, 0, 0];
        let mut types: Vec<u8> = PLACEHOLDER.repeat(self.index.len());
        let mut strings: Vec<u8> = vec![0];
        let mut kept = 0usize;
        for (i, &pos) in self.index.iter().enumerate() {
            // The kind from `info` alone: most types are of other kinds,
            // and no name is read for them.
            let base = self.types + pos as usize;
            let kind = (self.u32_at(base + 4)? >> 24) & 0x1f;
            if kind != KIND_FUNC && kind != KIND_TYPEDEF {
                continue;
            }
            let t = self.type_at(pos as usize)?;
            let Some(name) = self.name_is_one_of(kind, t.name_off, &wanted) else {
                continue;
            };
            let slot = &mut types[i * 12..i * 12 + 12];
            slot[0..4].copy_from_slice(&(strings.len() as u32).to_le_bytes());
            slot[4..8].copy_from_slice(&((kind << 24) | t.vlen).to_le_bytes());
            slot[8..12].copy_from_slice(&t.size_or_type.to_le_bytes());
            strings.extend_from_slice(name);
            strings.push(0);
            kept = i * 12 + 12;
        }
        types.truncate(kept);
        let word = |v: &mut Vec<u8>, w: u32| v.extend_from_slice(&w.to_le_bytes());
        let mut blob = Vec::with_capacity(24 + types.len() + strings.len());
        blob.extend_from_slice(&MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]); // version 1, no flags
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            word(&mut blob, w);
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(&strings);
        Ok(blob)
    }

    /// The wanted name of `kind` at string offset `off`, if it is one:
    /// the first 8 bytes there (one load) against each wanted prefix,
    /// the whole name only when those match.
    fn name_is_one_of<'w>(&self, kind: u32, off: u32, wanted: &[Prefix<'w>]) -> Option<&'w [u8]> {
        let start = self.strings + off as usize;
        let strings = self.data.get(start..self.strings + self.strings_len)?;
        let head = match strings.get(..8) {
            Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")),
            None => {
                let mut head = [0u8; 8];
                head[..strings.len()].copy_from_slice(strings);
                u64::from_le_bytes(head)
            }
        };
        wanted.iter().find_map(|p| {
            let n = p.name;
            (p.kind == kind
                && head & p.mask == p.key
                && strings.get(n.len()) == Some(&0)
                && &strings[..n.len()] == n)
                .then_some(n)
        })
    }

    /// Enumerators of an enum or enum64: (name, value).
    pub fn enumerators(&self, t: &Type) -> Result<Vec<(&str, u64)>> {
        let step = match t.kind {
            KIND_ENUM => 8,
            KIND_ENUM64 => 12,
            _ => bail!("not an enum"),
        };
        (0..t.vlen as usize)
            .map(|i| {
                let o = t.extra + i * step;
                let lo = self.u32_at(o + 4)? as u64;
                let hi = if step == 12 {
                    self.u32_at(o + 8)? as u64
                } else {
                    0
                };
                Ok((self.name(self.u32_at(o)?), hi << 32 | lo))
            })
            .collect()
    }
}

/// Bytes of kind-specific data after a type's 12-byte header.
fn extra_len(t: &Type) -> Result<usize> {
    let v = t.vlen as usize;
    Ok(match t.kind {
        KIND_INT => 4,
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION => 12 * v,
        KIND_ENUM => 8 * v,
        KIND_FUNC_PROTO => 8 * v,
        KIND_VAR => 4,
        KIND_DATASEC => 12 * v,
        KIND_DECL_TAG => 4,
        KIND_ENUM64 => 12 * v,
        k => bail!("unknown BTF kind {k}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF blob: int, struct s { int a; int b:3 (bitfield) }, enum e.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0e\0X\0Y\0".to_vec();
        let off = |s: &str| {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int (size 4, 32 bits)
        push(&[off("int"), KIND_INT << 24, 4, 32]);
        // 2: struct s, kind_flag, 2 members: a at 0, b bitfield 3 bits at 32
        push(&[off("s"), 1 << 31 | KIND_STRUCT << 24 | 2, 8]);
        push(&[off("a"), 1, 0]);
        push(&[off("b"), 1, 3 << 24 | 32]);
        // 3: enum e { X = 1, Y = 7 }
        push(&[off("e"), KIND_ENUM << 24 | 2, 4]);
        push(&[off("X"), 1, off("Y"), 7]);
        let mut data = Vec::new();
        data.extend_from_slice(&MAGIC.to_le_bytes());
        data.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend_from_slice(&w.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        data
    }

    #[test]
    fn parses_structs_bitfields_and_enums() {
        let btf = Btf::parse(blob()).unwrap();
        assert_eq!(btf.len(), 3);
        let s = btf.ids_by_name("s", KIND_STRUCT).next().unwrap();
        let members = btf.members(&btf.type_by_id(s).unwrap()).unwrap();
        assert_eq!(btf.name(members[1].name_off), "b");
        assert_eq!((members[1].bit_offset, members[1].bitfield_size), (32, 3));
        let e = btf.ids_by_name("e", KIND_ENUM).next().unwrap();
        let values = btf.enumerators(&btf.type_by_id(e).unwrap()).unwrap();
        assert_eq!(values, [("X", 1), ("Y", 7)]);
        assert!(btf.type_by_id(0).is_err() && btf.type_by_id(4).is_err());
    }

    #[test]
    fn names_are_found_by_kind_through_the_index_or_a_scan() {
        let btf = Btf::parse(blob()).unwrap();
        let ids = |name, kind| btf.ids_by_name(name, kind).collect::<Vec<_>>();
        assert_eq!(ids("s", KIND_STRUCT), [2]);
        assert_eq!(ids("s", KIND_UNION), [] as [u32; 0]);
        assert_eq!(ids("e", KIND_ENUM), [3]);
        assert_eq!(ids("e", KIND_STRUCT), [] as [u32; 0]);
        assert_eq!(ids("nope", KIND_STRUCT), [] as [u32; 0]);
        // Not an indexed kind: scanned.
        assert_eq!(ids("int", KIND_INT), [1]);
        // A prefix is not the name.
        assert_eq!(ids("", KIND_STRUCT), [] as [u32; 0]);
    }

    #[test]
    fn a_names_only_blob_keeps_the_ids_of_wanted_types() {
        let mut b = blob();
        // Type 3 becomes `typedef int e` (a typedef has no extra data):
        // patch its kind and drop its two enumerators.
        let t3 = 24 + 16 + 12 * 3;
        b[t3 + 4..t3 + 8].copy_from_slice(&(KIND_TYPEDEF << 24).to_le_bytes());
        b[t3 + 8..t3 + 12].copy_from_slice(&1u32.to_le_bytes());
        b.drain(t3 + 12..t3 + 28);
        let len = (t3 + 12 - 24) as u32;
        b[16..20].copy_from_slice(&len.to_le_bytes()); // str_off
        b[12..16].copy_from_slice(&len.to_le_bytes()); // type_len
        let btf = Btf::parse(b).unwrap();
        assert_eq!(btf.ids_by_name("e", KIND_TYPEDEF).collect::<Vec<_>>(), [3]);
        let small = Btf::parse(btf.names_only(&[(KIND_TYPEDEF, "e")]).unwrap()).unwrap();
        assert_eq!(small.len(), 3);
        assert_eq!(
            small.ids_by_name("e", KIND_TYPEDEF).collect::<Vec<_>>(),
            [3]
        );
        assert_eq!(small.type_by_id(3).unwrap().size_or_type, 1);
        // The rest are nameless placeholders.
        assert_eq!(small.ids_by_name("s", KIND_STRUCT).count(), 0);
        assert_eq!(small.type_by_id(1).unwrap().kind, KIND_FWD);
        // Nothing wanted that exists: an empty type section.
        let none = Btf::parse(btf.names_only(&[(KIND_FUNC, "nope")]).unwrap()).unwrap();
        assert!(none.is_empty());
        assert!(btf.names_only(&[(KIND_STRUCT, "s")]).is_err());
    }

    /// The running kernel's BTF (where there is one): aya finds the same
    /// ids in the blob as in its own parse of the whole BTF.
    #[test]
    fn aya_finds_the_same_ids_in_a_names_only_blob() {
        let Ok(full) = Btf::from_file("/sys/kernel/btf/vmlinux") else {
            eprintln!("skipped: no kernel BTF");
            return;
        };
        use aya::{Btf as AyaBtf, Endianness};
        use aya_obj::btf::BtfKind;
        let wanted = [
            (KIND_FUNC, "copy_net_ns"),
            (KIND_FUNC, "cleanup_net"),
            (KIND_FUNC, "bpf_iter_task"),
            (KIND_TYPEDEF, "btf_trace_sched_process_fork"),
            (KIND_FUNC, "no_such_function_netns_trace"),
            // Names of 8 bytes, under 8, and a prefix of a wanted one.
            (KIND_FUNC, "dst_init"),
            (KIND_FUNC, "fput"),
            (KIND_FUNC, "copy_net"),
        ];
        let blob = full.names_only(&wanted).unwrap();
        let aya_full = AyaBtf::from_sys_fs().unwrap();
        let aya_small = AyaBtf::parse(&blob, Endianness::default()).unwrap();
        for (kind, name) in wanted {
            let kind = if kind == KIND_FUNC {
                BtfKind::Func
            } else {
                BtfKind::Typedef
            };
            assert_eq!(
                aya_small.id_by_type_name_kind(name, kind).ok(),
                aya_full.id_by_type_name_kind(name, kind).ok(),
                "{name}"
            );
        }
        assert!(aya_full
            .id_by_type_name_kind("copy_net_ns", BtfKind::Func)
            .is_ok());
    }

    #[test]
    fn malformed_blobs_are_errors_not_panics() {
        assert!(Btf::parse(vec![]).is_err());
        assert!(Btf::parse(vec![0x9f, 0xeb, 1, 0]).is_err());
        let mut b = blob();
        b.truncate(40); // inside the type section
        assert!(Btf::parse(b).is_err());
        let mut b = blob();
        b[24 + 7] = 30; // kind byte of type 1 -> unknown kind 30
        assert!(Btf::parse(b).is_err());
    }
}
