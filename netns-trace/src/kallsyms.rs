//! `/proc/kallsyms` and tracefs `available_filter_functions`, parsed.
//!
//! Pure text parsing: the loader reads the files, this module answers
//! "does this function exist, is it traceable, what is at this address".

use std::collections::HashMap;
use std::io::BufRead;

use crate::names::{Arena, NameIndex, Span};

/// Suffixes GCC/Clang give to specialised copies of a function. A symbol
/// that exists only as such a copy was inlined or rewritten: its arguments
/// (and return value) may not follow the source signature.
const CLONE_TAGS: &[&str] = &["isra", "constprop", "part", "cold", "llvm", "lto_priv"];

/// `Sym::module` of a symbol of the kernel image.
const NO_MODULE: u16 = u16::MAX;

/// 24 bytes per symbol; the name lives in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sym {
    addr: u64,
    name: Span,
    module: u16,
    text: bool,
}

/// A parsed `/proc/kallsyms`.
#[derive(Debug, Default, Clone)]
pub struct Symbols {
    /// Every symbol, sorted by address (stable: file order among equals).
    sorted: Vec<Sym>,
    names: Arena,
    modules: Vec<String>,
    /// Text symbol name -> index of its first occurrence in `sorted`.
    functions: NameIndex,
    /// Base name -> names of its compiler clones (`foo` -> `foo.isra.0`).
    clones: HashMap<String, Vec<String>>,
    hidden: bool,
    /// Only some names were kept ([`Symbols::read_only`]): no address can
    /// be resolved, since its function may be one left out.
    partial: bool,
}

/// `foo` for `foo.isra.0`, `foo.constprop.0.cold`, `foo.part.3`; `None`
/// for a plain name or a dot suffix that is not a known clone tag.
pub fn clone_base(name: &str) -> Option<&str> {
    let (base, rest) = name.split_once('.')?;
    let known = rest
        .split('.')
        .all(|t| CLONE_TAGS.contains(&t) || t.chars().all(|c| c.is_ascii_digit()));
    (known && !base.is_empty() && rest.split('.').any(|t| CLONE_TAGS.contains(&t))).then_some(base)
}

/// True when the clone is only the cold (unlikely) tail of a function:
/// it is not an entry point, so probing it says nothing about calls.
pub fn is_cold_only(name: &str) -> bool {
    name.ends_with(".cold") || name.contains(".cold.")
}

/// The names a partial read keeps ([`Symbols::read_only`]), with their
/// compiler clones (`foo.isra.0` for `foo`). Nearly every line of
/// kallsyms is rejected by a table look-up of its first byte and length
/// before any string is compared.
#[derive(Debug, Default)]
pub struct Wanted {
    names: std::collections::HashSet<Vec<u8>>,
    /// By first byte: the lengths (bit `len.min(127)`) of wanted names.
    lengths: Vec<u128>,
    /// Once all of these are read, the read ends ([`Wanted::ending_with`]).
    last: Vec<Vec<u8>>,
}

impl Wanted {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut w = Wanted {
            names: Default::default(),
            lengths: vec![0; 256],
            last: vec![],
        };
        names.into_iter().for_each(|n| w.add(n));
        w
    }

    fn add(&mut self, name: &str) {
        if let Some(&first) = name.as_bytes().first() {
            self.lengths[usize::from(first)] |= Self::bit(name.len());
            self.names.insert(name.as_bytes().to_vec());
        }
    }

    /// Also wants `last`, and ends the read once every one of them is in.
    /// The kernel lists its own symbols by address (text, read-only data,
    /// data, init code, bss; then modules): data symbols lie past every
    /// function of the kernel image, so what follows them (about a third
    /// of the lines) need not be written out by the kernel nor parsed.
    /// One of them absent or in a module: the file is read to its end.
    pub fn ending_with(mut self, last: &[&str]) -> Self {
        for n in last.iter().filter(|n| !n.is_empty()) {
            self.add(n);
            self.last.push(n.as_bytes().to_vec());
        }
        self
    }

    fn bit(len: usize) -> u128 {
        1 << len.min(127)
    }

    /// `name` is wanted, or a clone of a wanted name.
    pub fn keeps(&self, name: &[u8]) -> bool {
        let Some(&first) = name.first() else {
            return false;
        };
        let base_len = name.iter().position(|&b| b == b'.').unwrap_or(name.len());
        let lens = self.lengths[usize::from(first)];
        if lens & (Self::bit(name.len()) | Self::bit(base_len)) == 0 {
            return false;
        }
        if self.names.contains(name) {
            return true;
        }
        let Ok(name) = std::str::from_utf8(name) else {
            return false;
        };
        clone_base(name).is_some_and(|b| self.names.contains(b.as_bytes()))
    }
}

/// Symbols as they are read, before sorting and indexing.
#[derive(Default)]
struct Builder<'f> {
    /// Keep only these symbols; every line still counts for `any_nonzero`.
    keep: Option<&'f Wanted>,
    /// Which of `keep`'s last names were read (one flag each).
    last_read: Vec<bool>,
    syms: Vec<Sym>,
    names: Arena,
    modules: Vec<String>,
    module_ids: HashMap<String, u16>,
    any_nonzero: bool,
}

/// The fields of one kallsyms line, `ffffffff81000000 T _stext` or
/// `ffffffffc0a01000 t foo\t[mod]`, split on ASCII whitespace without
/// decoding any text: the kernel writes ~150,000 of them and the loader
/// waits for them at start-up.
struct Fields<'a> {
    addr: &'a [u8],
    ty: &'a [u8],
    name: &'a [u8],
    module: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    fn split(line: &'a [u8]) -> Option<Self> {
        let mut it = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|t| !t.is_empty());
        Some(Fields {
            addr: it.next()?,
            ty: it.next()?,
            name: it.next()?,
            module: it.next(),
        })
    }
}

/// An address in hex digits, as kallsyms writes it (no prefix).
fn hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some(acc << 4 | u64::from(v))
    })
}

impl Builder<'_> {
    /// One line; malformed ones are skipped.
    fn line(&mut self, line: &[u8]) {
        let Some(Fields {
            addr,
            ty,
            name,
            module,
        }) = Fields::split(line)
        else {
            return;
        };
        // A line left out still says whether addresses are hidden; after
        // the first non-zero one nothing else needs it.
        if self.keep.is_some_and(|w| !w.keeps(name)) {
            if !self.any_nonzero && hex(addr).is_some_and(|a| a != 0) {
                self.any_nonzero = true;
            }
            return;
        }
        let (Some(addr), Ok(name)) = (hex(addr), std::str::from_utf8(name)) else {
            return;
        };
        self.any_nonzero |= addr != 0;
        let module = match module.and_then(|m| std::str::from_utf8(m).ok()) {
            None => NO_MODULE,
            Some(m) => self.module_id(m.trim_start_matches('[').trim_end_matches(']')),
        };
        if let Some(i) = self
            .keep
            .and_then(|w| w.last.iter().position(|l| l == name.as_bytes()))
        {
            self.last_read[i] = true;
        }
        let name = self.names.push(name);
        self.syms.push(Sym {
            addr,
            name,
            module,
            text: matches!(ty, b"t" | b"T" | b"w" | b"W"),
        });
    }

    fn module_id(&mut self, m: &str) -> u16 {
        if let Some(&id) = self.module_ids.get(m) {
            return id;
        }
        // More modules than ids: the rest read as the kernel's own.
        let Ok(id) = u16::try_from(self.modules.len()) else {
            return NO_MODULE;
        };
        if id == NO_MODULE {
            return NO_MODULE;
        }
        self.modules.push(m.to_string());
        self.module_ids.insert(m.to_string(), id);
        id
    }

    /// Every name the read ends with was read.
    fn complete(&self) -> bool {
        !self.last_read.is_empty() && self.last_read.iter().all(|&r| r)
    }

    fn finish(self) -> Symbols {
        let Builder {
            keep,
            mut syms,
            mut names,
            modules,
            any_nonzero,
            ..
        } = self;
        syms.sort_by_key(|s| s.addr);
        syms.shrink_to_fit();
        names.shrink_to_fit();
        let mut functions = NameIndex::with_capacity(syms.iter().filter(|s| s.text).count());
        let mut clones: HashMap<String, Vec<String>> = HashMap::new();
        for (i, s) in syms.iter().enumerate().filter(|(_, s)| s.text) {
            let name = names.get(s.name);
            functions.insert(i as u32, name, |e| names.get(syms[e as usize].name));
            if let Some(base) = clone_base(name) {
                let v = clones.entry(base.to_string()).or_default();
                if !v.iter().any(|c| c == name) {
                    v.push(name.to_string());
                }
            }
        }
        // kptr_restrict (or no CAP_SYSLOG) shows every address as zero.
        let hidden = !syms.is_empty() && !any_nonzero;
        Symbols {
            sorted: syms,
            names,
            modules,
            functions,
            clones,
            hidden,
            partial: keep.is_some(),
        }
    }
}

impl Symbols {
    /// Parse kallsyms text: `ffffffff81000000 T _stext` or
    /// `ffffffffc0a01000 t foo\t[mod]`. Malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        let mut b = Builder::default();
        text.lines().for_each(|l| b.line(l.as_bytes()));
        b.finish()
    }

    /// Parse kallsyms line by line from `r` (e.g. /proc/kallsyms): the
    /// file (several MB) is never held whole.
    pub fn read(r: impl BufRead) -> std::io::Result<Self> {
        Self::read_with(r, Builder::default())
    }

    /// Like [`Symbols::read`], keeping only the `wanted` symbols: a few
    /// kilobytes to plan the attach with, where the whole table is ~8 MB.
    /// Addresses do not resolve in it ([`Symbols::lookup`] is None).
    pub fn read_only(r: impl BufRead, wanted: &Wanted) -> std::io::Result<Self> {
        Self::read_with(
            r,
            Builder {
                keep: Some(wanted),
                last_read: vec![false; wanted.last.len()],
                ..Default::default()
            },
        )
    }

    /// A table of named addresses found one by one (`ksym_lookup`):
    /// `functions` as text symbols, `data` as data symbols. Like
    /// [`Symbols::read_only`], it resolves no address to a name and knows
    /// no clones.
    pub fn from_addresses<'a>(
        functions: impl IntoIterator<Item = (&'a str, u64)>,
        data: impl IntoIterator<Item = (&'a str, u64)>,
    ) -> Self {
        let mut b = Builder::default();
        let lines = functions
            .into_iter()
            .map(|(n, a)| (n, a, 'T'))
            .chain(data.into_iter().map(|(n, a)| (n, a, 'D')));
        for (name, addr, kind) in lines {
            b.line(format!("{addr:016x} {kind} {name}").as_bytes());
        }
        let mut s = b.finish();
        s.partial = true;
        s
    }

    fn read_with(mut r: impl BufRead, mut b: Builder<'_>) -> std::io::Result<Self> {
        // Lines are parsed where the reader's buffer holds them; only one
        // cut by the buffer's end is copied.
        let mut cut: Vec<u8> = Vec::with_capacity(256);
        loop {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let mut at = 0;
            if !cut.is_empty() {
                let Some(end) = memchr::memchr(b'\n', buf) else {
                    cut.extend_from_slice(buf);
                    let n = buf.len();
                    r.consume(n);
                    continue;
                };
                cut.extend_from_slice(&buf[..end]);
                b.line(&cut);
                cut.clear();
                at = end + 1;
            }
            let start = at;
            for end in memchr::memchr_iter(b'\n', &buf[start..]).map(|i| start + i) {
                b.line(&buf[at..end]);
                at = end + 1;
            }
            cut.extend_from_slice(&buf[at..]);
            let n = buf.len();
            r.consume(n);
            if b.complete() {
                // The rest of the line cut is past the last one wanted.
                cut.clear();
                break;
            }
        }
        if !cut.is_empty() {
            b.line(&cut);
        }
        Ok(b.finish())
    }

    fn name(&self, s: &Sym) -> &str {
        self.names.get(s.name)
    }

    fn function(&self, name: &str) -> Option<&Sym> {
        let i = self
            .functions
            .find(name, |e| self.names.get(self.sorted[e as usize].name))?;
        Some(&self.sorted[i as usize])
    }

    /// Number of symbols parsed (all types).
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// All addresses read as zero: names are usable, addresses are not.
    pub fn addresses_hidden(&self) -> bool {
        self.hidden
    }

    /// A text (function) symbol with exactly this name exists.
    pub fn contains_function(&self, name: &str) -> bool {
        self.function(name).is_some()
    }

    /// Any symbol (text or data) with exactly this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.contains_function(name) || self.sorted.iter().any(|s| self.name(s) == name)
    }

    /// Address of the function `name` (first if duplicated); `None` if
    /// absent or if addresses are hidden.
    pub fn address_of(&self, name: &str) -> Option<u64> {
        if self.hidden {
            return None;
        }
        self.function(name).map(|s| s.addr)
    }

    /// Address of any symbol (data included), e.g. `__per_cpu_offset`.
    pub fn any_address_of(&self, name: &str) -> Option<u64> {
        if self.hidden {
            return None;
        }
        self.sorted
            .iter()
            .find(|s| self.name(s) == name)
            .map(|s| s.addr)
    }

    /// Compiler clones of `base` (`foo.isra.0`, ...), in address order.
    pub fn clones_of(&self, base: &str) -> &[String] {
        self.clones.get(base).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The function containing `addr`: (name, offset, module). `None` when
    /// addresses are hidden, below the first symbol, or the nearest symbol
    /// below is data (the address is not in code we know).
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64, Option<&str>)> {
        if self.hidden || self.partial || addr == 0 {
            return None;
        }
        let idx = self
            .sorted
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        // Aliases share an address: prefer a text symbol among them.
        let at = self.sorted[idx].addr;
        let first = self.sorted[..=idx].partition_point(|s| s.addr < at);
        let s = self.sorted[first..=idx].iter().find(|s| s.text)?;
        let module = self.modules.get(s.module as usize).map(String::as_str);
        // No kernel function is this long: past the last symbol of a region
        // (e.g. beyond a module's text), not inside that function.
        if addr - s.addr >= max_len(self.name(s), module) {
            return None;
        }
        Some((self.name(s), addr - s.addr, module))
    }

    /// `func+0x1a`, `func+0x1a [mod]`, or `0xffffffff81234567` if unknown.
    pub fn symbolize(&self, addr: u64) -> String {
        match self.lookup(addr) {
            Some((name, off, None)) => format!("{name}+{off:#x}"),
            Some((name, off, Some(m))) => format!("{name}+{off:#x} [{m}]"),
            None => format!("{addr:#x}"),
        }
    }
}

/// An offset past this is not inside the symbol below it.
const MAX_FUNCTION_LEN: u64 = 1 << 20;

/// How far past its start an address can still be inside `name`. Code the
/// kernel generates at run time (`[bpf]` trampolines and JIT images,
/// `[__builtin__ftrace]` and `[__builtin__kprobes]` trampolines: a page
/// each, or small) shares the module area with modules: a module loaded
/// after the table was read lies just above some such symbol and must read
/// as unknown (so the table is re-read), not as that code (which stacks
/// leave out as attach machinery).
fn max_len(name: &str, module: Option<&str>) -> u64 {
    match module {
        Some("bpf") if name.starts_with("bpf_prog_") => 64 << 10,
        Some("bpf") => 4096,
        Some(m) if m.starts_with("__builtin__") => 4096,
        _ => MAX_FUNCTION_LEN,
    }
}

/// perf call chains carry context markers (`PERF_CONTEXT_KERNEL` = -128,
/// ..., `PERF_CONTEXT_MAX` = -4095) among the addresses: not frames.
pub fn is_context_marker(ip: u64) -> bool {
    ip >= (-4095i64) as u64
}

/// tracefs `available_filter_functions`: the functions ftrace (and so
/// fentry/fexit) can attach to. A function in kallsyms but not here is
/// `notrace` (kprobes may still work).
#[derive(Debug, Default, Clone)]
pub struct FilterFunctions {
    names: Arena,
    spans: Vec<Span>,
    index: NameIndex,
}

impl FilterFunctions {
    /// One name per line, optionally followed by ` [module]`.
    pub fn parse(text: &str) -> Self {
        let mut names = Arena::default();
        let mut spans: Vec<Span> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(|n| names.push(n))
            .collect();
        let mut index = NameIndex::with_capacity(spans.len());
        let mut kept = Vec::with_capacity(spans.len());
        for span in spans.drain(..) {
            let id = kept.len() as u32;
            if index.insert(id, names.get(span), |e| names.get(kept[e as usize])) {
                kept.push(span);
            }
        }
        FilterFunctions {
            names,
            spans: kept,
            index,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index
            .find(name, |e| self.names.get(self.spans[e as usize]))
            .is_some()
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81001000 T copy_net_ns
ffffffff81001400 t cleanup_net
ffffffff81001800 t netdev_run_todo.cold
ffffffff81002000 T netdev_run_todo
ffffffff81003000 t dst_destroy.isra.0
ffffffff81004000 D init_net
ffffffff81004000 d some_alias
ffffffffc0a01000 t foo_init\t[foo]
";

    #[test]
    fn parses_functions_and_modules() {
        let s = Symbols::parse(SAMPLE);
        assert_eq!(s.len(), 9);
        assert!(s.contains_function("copy_net_ns"));
        assert!(s.contains_function("cleanup_net"));
        assert!(!s.contains_function("init_net"), "data is not a function");
        assert!(s.contains("init_net"));
        assert!(!s.addresses_hidden());
        assert_eq!(s.address_of("copy_net_ns"), Some(0xffffffff81001000));
        assert_eq!(s.address_of("nope"), None);
        assert_eq!(
            s.lookup(0xffffffffc0a01010),
            Some(("foo_init", 0x10, Some("foo")))
        );
    }

    #[test]
    fn lookup_binary_search() {
        let s = Symbols::parse(SAMPLE);
        assert_eq!(s.lookup(0xffffffff81001000), Some(("copy_net_ns", 0, None)));
        assert_eq!(
            s.lookup(0xffffffff8100101a),
            Some(("copy_net_ns", 0x1a, None))
        );
        assert_eq!(
            s.lookup(0xffffffff810013ff),
            Some(("copy_net_ns", 0x3ff, None))
        );
        assert_eq!(s.lookup(0xffffffff81001400), Some(("cleanup_net", 0, None)));
        assert_eq!(s.lookup(0xffffffff80000000), None, "below first symbol");
        assert_eq!(s.lookup(0xffffffff81004010), None, "data");
        assert_eq!(s.symbolize(0xffffffff8100101a), "copy_net_ns+0x1a");
        assert_eq!(s.symbolize(0xffffffffc0a01001), "foo_init+0x1 [foo]");
        assert_eq!(s.symbolize(0x1234), "0x1234");
    }

    #[test]
    fn far_offsets_and_perf_markers_are_not_frames() {
        let s = Symbols::parse("ffffffff81000000 T _stext\nffffffffc0000000 t take_hold\t[leak]\n");
        assert_eq!(s.symbolize(0xffffffffc0000010), "take_hold+0x10 [leak]");
        // PERF_CONTEXT_KERNEL read as an address: far past the module.
        assert_eq!(s.lookup(0xffffffffffffff80), None);
        assert!(is_context_marker(0xffffffffffffff80));
        assert!(!is_context_marker(0xffffffffc0000010));
    }

    #[test]
    fn bpf_code_does_not_swallow_a_later_module() {
        let s = Symbols::parse(
            "ffffffff81000000 T _stext\n\
             ffffffffc0000000 t bpf_trampoline_6442\t[bpf]\n\
             ffffffffc0010000 t bpf_prog_3b185187f1855c4c_scan_neigh\t[bpf]\n\
             ffffffffc0100000 t ftrace_trampoline\t[__builtin__ftrace]\n",
        );
        assert_eq!(
            s.lookup(0xffffffffc0109059),
            None,
            "36 KiB past an ftrace trampoline"
        );
        assert_eq!(
            s.lookup(0xffffffffc0000010),
            Some(("bpf_trampoline_6442", 0x10, Some("bpf")))
        );
        assert_eq!(
            s.lookup(0xffffffffc0001010),
            None,
            "a page past a trampoline"
        );
        assert!(s.lookup(0xffffffffc0010400).is_some());
        assert_eq!(s.lookup(0xffffffffc0030000), None, "128 KiB past a program");
    }

    #[test]
    fn hidden_addresses() {
        let s = Symbols::parse("0000000000000000 T copy_net_ns\n0000000000000000 t cleanup_net\n");
        assert!(s.addresses_hidden());
        assert!(s.contains_function("cleanup_net"));
        assert_eq!(s.address_of("cleanup_net"), None);
        assert_eq!(s.lookup(0xffffffff81001000), None);
        assert!(!Symbols::parse("").addresses_hidden());
    }

    #[test]
    fn clones() {
        assert_eq!(clone_base("dst_destroy.isra.0"), Some("dst_destroy"));
        assert_eq!(clone_base("foo.constprop.0.isra.0"), Some("foo"));
        assert_eq!(clone_base("foo.part.3"), Some("foo"));
        assert_eq!(clone_base("foo.cold"), Some("foo"));
        assert_eq!(clone_base("foo.llvm.123456"), Some("foo"));
        assert_eq!(clone_base("foo"), None);
        assert_eq!(clone_base("foo.bar"), None);
        assert_eq!(clone_base(".isra.0"), None);
        assert!(is_cold_only("foo.cold"));
        assert!(is_cold_only("foo.isra.0.cold"));
        assert!(!is_cold_only("foo.isra.0"));
        let s = Symbols::parse(SAMPLE);
        assert_eq!(
            s.clones_of("dst_destroy"),
            ["dst_destroy.isra.0".to_string()]
        );
        assert_eq!(
            s.clones_of("netdev_run_todo"),
            ["netdev_run_todo.cold".to_string()]
        );
        assert!(s.clones_of("copy_net_ns").is_empty());
        assert!(!s.contains_function("dst_destroy"));
    }

    #[test]
    fn filter_functions() {
        let f = FilterFunctions::parse("copy_net_ns\ncleanup_net\nfoo_init [foo]\n\n");
        assert_eq!(f.len(), 3);
        assert!(f.contains("copy_net_ns"));
        assert!(f.contains("foo_init"));
        assert!(!f.contains("__put_net"));
    }

    #[test]
    fn read_matches_parse() {
        let parsed = Symbols::parse(SAMPLE);
        // Buffers of every size cut lines everywhere, the last one without
        // its newline included.
        let text = SAMPLE.trim_end();
        for cap in 1..=text.len() {
            let read =
                Symbols::read(std::io::BufReader::with_capacity(cap, text.as_bytes())).unwrap();
            assert_eq!(read.len(), parsed.len(), "buffer of {cap}");
            assert_eq!(
                read.lookup(0xffffffffc0a01010),
                parsed.lookup(0xffffffffc0a01010)
            );
            assert_eq!(read.address_of("cleanup_net"), Some(0xffffffff81001400));
            assert_eq!(
                read.lookup(0xffffffffc0a01000),
                Some(("foo_init", 0, Some("foo")))
            );
        }
    }

    #[test]
    fn a_read_ends_once_its_last_names_are_in() {
        let small = |text: &'static str| std::io::BufReader::with_capacity(16, text.as_bytes());
        let w = Wanted::new(["foo_init", "copy_net_ns"]).ending_with(&["init_net", "some_alias"]);
        let s = Symbols::read_only(small(SAMPLE), &w).unwrap();
        assert!(s.contains_function("copy_net_ns"));
        assert_eq!(s.any_address_of("some_alias"), Some(0xffffffff81004000));
        assert!(
            !s.contains_function("foo_init"),
            "listed after the last one"
        );
        // One of them absent: read to the end.
        let w = Wanted::new(["foo_init"]).ending_with(&["init_net", "nope"]);
        let s = Symbols::read_only(small(SAMPLE), &w).unwrap();
        assert!(s.contains_function("foo_init"));
        assert!(s.contains("init_net"));
    }

    #[test]
    fn wanted_names_and_their_clones_only() {
        let w = Wanted::new(["cleanup_net", "nd_tbl", ""]);
        for yes in [
            "cleanup_net",
            "cleanup_net.isra.0",
            "nd_tbl",
            "nd_tbl.constprop.0.cold",
        ] {
            assert!(w.keeps(yes.as_bytes()), "{yes}");
        }
        let long = "n".repeat(200);
        for no in [
            "cleanup_netx",
            "cleanup_ne",
            "cleanup_net.foo",
            "xleanup_net",
            "nd_tbl2",
            "",
            ".isra.0",
            long.as_str(),
        ] {
            assert!(!w.keeps(no.as_bytes()), "{no}");
        }
        assert!(!w.keeps(b"nd_\xff"), "not UTF-8");
    }

    #[test]
    fn partial_table_plans_but_never_resolves() {
        let keep = Wanted::new(["dst_destroy", "init_net"]);
        let s = Symbols::read_only(SAMPLE.as_bytes(), &keep).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.clones_of("dst_destroy"),
            ["dst_destroy.isra.0".to_string()]
        );
        assert_eq!(s.any_address_of("init_net"), Some(0xffffffff81004000));
        assert!(!s.contains_function("copy_net_ns"), "left out");
        assert!(!s.addresses_hidden());
        // dst_destroy.isra.0 is the nearest kept symbol below copy_net_ns's
        // address: a partial table must not claim it.
        assert_eq!(s.lookup(0xffffffff81003010), None);
        let zeros = "0000000000000000 T copy_net_ns\n0000000000000000 T other\n";
        let hidden = Symbols::read_only(zeros.as_bytes(), &Wanted::new(["other"])).unwrap();
        assert!(hidden.addresses_hidden());
    }

    #[test]
    fn garbage_lines_skipped() {
        let s = Symbols::parse("zzz T foo\nffffffff81000000\n\nffffffff81000000 T ok\n");
        assert_eq!(s.len(), 1);
        assert!(s.contains_function("ok"));
    }
}
