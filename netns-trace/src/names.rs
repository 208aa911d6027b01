//! Compact storage for the kernel's ~150,000 symbol names: one string
//! arena and a hash index of 4-byte slots, instead of an owned `String`
//! (and a hash map key copy) per name. The symbol table was the loader's
//! second largest allocation and its parse the slowest part of start-up.

/// Names packed end to end; a name is an (offset, length) span.
#[derive(Debug, Default, Clone)]
pub struct Arena {
    text: String,
}

/// A name in an [`Arena`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    start: u32,
    len: u32,
}

impl Arena {
    pub fn push(&mut self, name: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(name);
        Span {
            start,
            len: name.len() as u32,
        }
    }

    pub fn get(&self, span: Span) -> &str {
        &self.text[span.start as usize..(span.start + span.len) as usize]
    }

    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
    }
}

/// A hash index from names to entry numbers, for names stored elsewhere:
/// open addressing with linear probing, a slot holds entry + 1 (0: empty).
/// The caller says how to get an entry's name, so nothing is duplicated.
#[derive(Debug, Default, Clone)]
pub struct NameIndex {
    slots: Vec<u32>,
}

impl NameIndex {
    /// Room for `n` entries at most half full (short probe runs).
    pub fn with_capacity(n: usize) -> Self {
        NameIndex {
            slots: vec![0; (n * 2).next_power_of_two().max(8)],
        }
    }

    /// The entry named `name`, if indexed.
    pub fn find<'a>(&self, name: &str, name_of: impl Fn(u32) -> &'a str) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = hash(name) as usize & mask;
        loop {
            match self.slots[i] {
                0 => return None,
                s if name_of(s - 1) == name => return Some(s - 1),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Indexes `entry` under `name` unless an entry of that name is already
    /// there (the first one wins); false if it was. Panics if more entries
    /// are inserted than the capacity given: a caller bug, not input.
    pub fn insert<'a>(&mut self, entry: u32, name: &str, name_of: impl Fn(u32) -> &'a str) -> bool {
        let mask = self.slots.len() - 1;
        let mut i = hash(name) as usize & mask;
        for _ in 0..self.slots.len() {
            match self.slots[i] {
                0 => {
                    self.slots[i] = entry + 1;
                    return true;
                }
                s if name_of(s - 1) == name => return false,
                _ => i = (i + 1) & mask,
            }
        }
        panic!("NameIndex over capacity");
    }
}

/// FNV-1a, 64 bit: fast on short ASCII names, and good enough spread for
/// a table kept half empty.
fn hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_round_trip() {
        let mut a = Arena::default();
        let x = a.push("copy_net_ns");
        let e = a.push("");
        let y = a.push("cleanup_net");
        assert_eq!(a.get(x), "copy_net_ns");
        assert_eq!(a.get(e), "");
        assert_eq!(a.get(y), "cleanup_net");
    }

    #[test]
    fn index_finds_and_keeps_the_first() {
        let names = ["a", "b", "c", "a", "dst_destroy", "neigh_destroy"];
        let mut idx = NameIndex::with_capacity(names.len());
        let inserted: Vec<bool> = (0..names.len())
            .map(|i| idx.insert(i as u32, names[i], |e| names[e as usize]))
            .collect();
        assert_eq!(inserted, [true, true, true, false, true, true]);
        let find = |n: &str| idx.find(n, |e| names[e as usize]);
        assert_eq!(find("a"), Some(0), "first of duplicates");
        assert_eq!(find("c"), Some(2));
        assert_eq!(find("neigh_destroy"), Some(5));
        assert_eq!(find("nope"), None);
        assert_eq!(find(""), None);
    }

    #[test]
    fn index_survives_collisions() {
        // Far more names than a tiny table's slots would spread: every
        // probe run wraps and crosses others.
        let names: Vec<String> = (0..1000).map(|i| format!("sym_{i}")).collect();
        let mut idx = NameIndex::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            assert!(idx.insert(i as u32, n, |e| &names[e as usize]));
        }
        for (i, n) in names.iter().enumerate() {
            assert_eq!(idx.find(n, |e| &names[e as usize]), Some(i as u32));
        }
        assert_eq!(idx.find("sym_1000", |e| &names[e as usize]), None);
        assert_eq!(NameIndex::default().find("x", |_| ""), None);
    }
}
