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
        let start = self.strings + off as usize;
        let end = self.strings + self.strings_len;
        let Some(bytes) = self.data.get(start..end) else {
            return "";
        };
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..len]).unwrap_or("")
    }

    /// Ids of the types of `kind` named `name` (a linear scan).
    pub fn ids_by_name<'a>(&'a self, name: &'a str, kind: u32) -> impl Iterator<Item = u32> + 'a {
        (1..=self.len()).filter(move |&id| {
            self.type_by_id(id)
                .is_ok_and(|t| t.kind == kind && self.name(t.name_off) == name)
        })
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
