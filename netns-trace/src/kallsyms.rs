//! `/proc/kallsyms` and tracefs `available_filter_functions`, parsed.
//!
//! Pure text parsing: the loader reads the files, this module answers
//! "does this function exist, is it traceable, what is at this address".

use std::collections::{HashMap, HashSet};

/// Suffixes GCC/Clang give to specialised copies of a function. A symbol
/// that exists only as such a copy was inlined or rewritten: its arguments
/// (and return value) may not follow the source signature.
const CLONE_TAGS: &[&str] = &["isra", "constprop", "part", "cold", "llvm", "lto_priv"];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sym {
    addr: u64,
    name: String,
    module: Option<String>,
    text: bool,
}

/// A parsed `/proc/kallsyms`.
#[derive(Debug, Default, Clone)]
pub struct Symbols {
    /// Every symbol, sorted by address (stable: file order among equals).
    sorted: Vec<Sym>,
    /// Text symbol name -> index of its first occurrence in `sorted`.
    functions: HashMap<String, usize>,
    /// Base name -> names of its compiler clones (`foo` -> `foo.isra.0`).
    clones: HashMap<String, Vec<String>>,
    hidden: bool,
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

impl Symbols {
    /// Parse kallsyms text: `ffffffff81000000 T _stext` or
    /// `ffffffffc0a01000 t foo\t[mod]`. Malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        let mut sorted = Vec::new();
        let mut any_nonzero = false;
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(addr), Some(ty), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            let module = it
                .next()
                .map(|m| m.trim_start_matches('[').trim_end_matches(']').to_string());
            any_nonzero |= addr != 0;
            let text = matches!(ty, "t" | "T" | "w" | "W");
            sorted.push(Sym {
                addr,
                name: name.to_string(),
                module,
                text,
            });
        }
        sorted.sort_by_key(|s| s.addr);
        let mut functions = HashMap::new();
        let mut clones: HashMap<String, Vec<String>> = HashMap::new();
        for (i, s) in sorted.iter().enumerate().filter(|(_, s)| s.text) {
            functions.entry(s.name.clone()).or_insert(i);
            if let Some(base) = clone_base(&s.name) {
                let v = clones.entry(base.to_string()).or_default();
                if !v.contains(&s.name) {
                    v.push(s.name.clone());
                }
            }
        }
        // kptr_restrict (or no CAP_SYSLOG) shows every address as zero.
        let hidden = !sorted.is_empty() && !any_nonzero;
        Symbols {
            sorted,
            functions,
            clones,
            hidden,
        }
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
        self.functions.contains_key(name)
    }

    /// Any symbol (text or data) with exactly this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.functions.contains_key(name) || self.sorted.iter().any(|s| s.name == name)
    }

    /// Address of the function `name` (first if duplicated); `None` if
    /// absent or if addresses are hidden.
    pub fn address_of(&self, name: &str) -> Option<u64> {
        if self.hidden {
            return None;
        }
        self.functions.get(name).map(|&i| self.sorted[i].addr)
    }

    /// Address of any symbol (data included), e.g. `__per_cpu_offset`.
    pub fn any_address_of(&self, name: &str) -> Option<u64> {
        if self.hidden {
            return None;
        }
        self.sorted.iter().find(|s| s.name == name).map(|s| s.addr)
    }

    /// Compiler clones of `base` (`foo.isra.0`, ...), in address order.
    pub fn clones_of(&self, base: &str) -> &[String] {
        self.clones.get(base).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The function containing `addr`: (name, offset, module). `None` when
    /// addresses are hidden, below the first symbol, or the nearest symbol
    /// below is data (the address is not in code we know).
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64, Option<&str>)> {
        if self.hidden || addr == 0 {
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
        // No kernel function is this long: past the last symbol of a region
        // (e.g. beyond a module's text), not inside that function.
        if addr - s.addr >= MAX_FUNCTION_LEN {
            return None;
        }
        Some((s.name.as_str(), addr - s.addr, s.module.as_deref()))
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
    names: HashSet<String>,
}

impl FilterFunctions {
    /// One name per line, optionally followed by ` [module]`.
    pub fn parse(text: &str) -> Self {
        let names = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect();
        FilterFunctions { names }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
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
    fn garbage_lines_skipped() {
        let s = Symbols::parse("zzz T foo\nffffffff81000000\n\nffffffff81000000 T ok\n");
        assert_eq!(s.len(), 1);
        assert!(s.contains_function("ok"));
    }
}
