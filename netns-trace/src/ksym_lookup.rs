//! Symbol addresses asked of the kernel by name, without /proc/kallsyms.
//!
//! Start-up needs about thirty names: the hooks' functions and four data
//! symbols. The kernel writes /proc/kallsyms one formatted line at a time,
//! in address order, and the data symbols come after every function: on
//! the 6.12 guest reading that far was 0.37 s, a third of the start-up.
//! The kernel's own `kallsyms_lookup_name` answers one name with a binary
//! search (since 6.2; a linear scan before). BPF reaches it through the
//! helper `bpf_kallsyms_lookup_name` (5.16+), which only a sleepable
//! `BPF_PROG_TYPE_SYSCALL` program may call, run by `BPF_PROG_TEST_RUN`
//! ([`crate::testrun`]).
//! aya 0.14 knows neither, so the program (31 instructions) is built and
//! loaded here with the raw `bpf()` syscall.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{anyhow, bail, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SYSCALL: u32 = 31;
const BPF_F_SLEEPABLE: u32 = 1 << 4;
const BPF_FUNC_KALLSYMS_LOOKUP_NAME: i32 = 179;

/// Longest name the program copies (with its NUL): the stack buffer.
const NAME_MAX: usize = 64;

/// What one run of the program reads and writes (its context).
#[repr(C)]
#[derive(Clone, Copy)]
struct Query {
    name: [u8; NAME_MAX],
    /// Bytes of `name` including the NUL.
    name_sz: u32,
    _pad: u32,
    /// The helper's return: 0, or -errno (-ENOENT: no such symbol;
    /// -EPERM: addresses hidden from this process).
    ret: i64,
    addr: u64,
}

const OFF_NAME_SZ: i16 = NAME_MAX as i16;
const OFF_RET: i16 = OFF_NAME_SZ + 8;
const OFF_ADDR: i16 = OFF_RET + 8;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes used (class | size/op | mode/source).
const MOV64_REG: u8 = 0xbf;
const MOV64_IMM: u8 = 0xb7;
const ADD64_IMM: u8 = 0x07;
const LDX_DW: u8 = 0x79;
const LDX_W: u8 = 0x61;
const STX_DW: u8 = 0x7b;
const ST_DW: u8 = 0x7a;
const JGT_IMM: u8 = 0x25;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R6: u8 = 6;
const FP: u8 = 10;

/// The program: copy the name from the context to the stack (the helper
/// takes no context pointer), call the helper, store its return and the
/// address back into the context, which the test run copies out.
fn program() -> Vec<Insn> {
    let name_at = -(NAME_MAX as i16);
    let addr_at = name_at - 8;
    let mut p = vec![insn(MOV64_REG, R6, R1, 0, 0)];
    for i in 0..(NAME_MAX as i16 / 8) {
        p.push(insn(LDX_DW, R0, R6, 8 * i, 0));
        p.push(insn(STX_DW, FP, R0, name_at + 8 * i, 0));
    }
    let tail = [
        insn(ST_DW, FP, 0, addr_at, 0),
        insn(LDX_W, R2, R6, OFF_NAME_SZ, 0),
        // The verifier needs the size bounded by the buffer.
        insn(JGT_IMM, R2, 0, 9, NAME_MAX as i32),
        insn(MOV64_REG, R1, FP, 0, 0),
        insn(ADD64_IMM, R1, 0, 0, name_at as i32),
        insn(MOV64_IMM, R3, 0, 0, 0),
        insn(MOV64_REG, R4, FP, 0, 0),
        insn(ADD64_IMM, R4, 0, 0, addr_at as i32),
        insn(CALL, 0, 0, 0, BPF_FUNC_KALLSYMS_LOOKUP_NAME),
        insn(STX_DW, R6, R0, OFF_RET, 0),
        insn(LDX_DW, R1, FP, addr_at, 0),
        insn(STX_DW, R6, R1, OFF_ADDR, 0),
        insn(MOV64_IMM, R0, 0, 0, 0),
        insn(EXIT, 0, 0, 0, 0),
    ];
    p.extend(tail);
    p
}

/// The query for `name`, or None when it cannot be asked (too long for
/// the program's buffer, or a NUL inside).
fn query(name: &str) -> Option<Query> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= NAME_MAX || bytes.contains(&0) {
        return None;
    }
    let mut q = Query {
        name: [0; NAME_MAX],
        name_sz: bytes.len() as u32 + 1,
        _pad: 0,
        ret: -i64::from(libc::EINVAL),
        addr: 0,
    };
    q.name[..bytes.len()].copy_from_slice(bytes);
    Some(q)
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// The loaded lookup program.
pub struct Lookup {
    prog: OwnedFd,
}

impl Lookup {
    /// Loads the program; an error says why this kernel cannot have it
    /// (before 5.16, or the program type refused).
    pub fn load() -> Result<Self> {
        let insns = program();
        let license = c"GPL";
        let mut log = vec![0u8; 4096];
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_SYSCALL,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 1,
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
            kern_version: 0,
            prog_flags: BPF_F_SLEEPABLE,
        };
        match crate::testrun::sys_bpf(BPF_PROG_LOAD, &mut attr) {
            // SAFETY: a new fd the kernel just returned, owned by nobody else.
            Ok(fd) => Ok(Lookup {
                prog: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            }),
            Err(err) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let said = String::from_utf8_lossy(&log[..end]);
                let last = said.lines().rev().find(|l| !l.trim().is_empty());
                bail!(
                    "the kernel refused a BPF syscall program calling bpf_kallsyms_lookup_name ({err}{})",
                    last.map(|l| format!(": {l}")).unwrap_or_default()
                )
            }
        }
    }

    /// The address of `name`: Ok(None) when the kernel has no such
    /// symbol; an error when it will not say (addresses hidden: EPERM).
    pub fn address_of(&self, name: &str) -> Result<Option<u64>> {
        let mut q = [query(name).ok_or_else(|| anyhow!("cannot look up {name:?}"))?];
        crate::testrun::run_with_context(self.prog.as_raw_fd(), &mut q)
            .map_err(|e| anyhow!("running the lookup program for {name}: {e}"))?;
        let q = q[0];
        match q.ret {
            0 => Ok(Some(q.addr)),
            r if r == -i64::from(libc::ENOENT) => Ok(None),
            r => Err(anyhow!(
                "bpf_kallsyms_lookup_name({name}): {}",
                std::io::Error::from_raw_os_error(-r as i32)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_sized_with_its_nul_and_bounded_by_the_buffer() {
        let q = query("copy_net_ns").unwrap();
        assert_eq!(q.name_sz, 12);
        assert_eq!(&q.name[..12], b"copy_net_ns\0");
        assert!(query(&"x".repeat(NAME_MAX - 1)).is_some());
        assert!(query(&"x".repeat(NAME_MAX)).is_none());
        assert!(query("").is_none());
        assert!(query("a\0b").is_none());
    }

    #[test]
    fn the_context_offsets_match_the_struct() {
        assert_eq!(std::mem::offset_of!(Query, name_sz), OFF_NAME_SZ as usize);
        assert_eq!(std::mem::offset_of!(Query, ret), OFF_RET as usize);
        assert_eq!(std::mem::offset_of!(Query, addr), OFF_ADDR as usize);
    }

    /// On the machine running the tests (root): the kernel's answers are
    /// /proc/kallsyms' addresses.
    #[test]
    fn lookups_agree_with_proc_kallsyms() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let file = |name: &str| {
            text.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                let addr = w.next()?;
                let _kind = w.next()?;
                (w.next()? == name).then(|| u64::from_str_radix(addr, 16).unwrap())
            })
        };
        let lookup = Lookup::load().expect("this kernel (5.16+) answers lookups");
        for name in ["copy_net_ns", "cleanup_net", "netdev_run_todo"] {
            assert_eq!(lookup.address_of(name).unwrap(), file(name), "{name}");
        }
        assert_eq!(
            lookup.address_of("no_such_symbol_netns_trace").unwrap(),
            None
        );
        assert!(lookup.address_of(&"x".repeat(80)).is_err());
    }

    #[test]
    fn the_size_check_jumps_to_the_exit() {
        let p = program();
        let at = p.iter().position(|i| i.code == JGT_IMM).unwrap();
        let target = at + 1 + p[at].off as usize;
        assert_eq!(p[target], insn(MOV64_IMM, R0, 0, 0, 0));
        assert_eq!(p[target + 1].code, EXIT);
    }
}
