//! The sign of a write to a per-CPU reference counter, from the x86-64
//! instruction that made it.
//!
//! A data breakpoint traps after the writing instruction, so a perf sample
//! of it (which carries no counter value) has the IP of the next one. The
//! writer of a per-CPU `int` counter is `this_cpu_inc`/`this_cpu_dec` (or
//! `this_cpu_add/sub` with a constant): a %gs-prefixed `inc`, `dec`,
//! `add imm` or `sub imm` on memory. Given the text bytes that end at the
//! IP, the one such instruction that ends exactly there gives the delta.
//! Several candidates (bytes that decode both ways) or none: unknown.

/// The delta a counter write made, decoded from `text`: the bytes that end
/// exactly at the instruction after the write. None when no recognised
/// instruction, or more than one, ends there.
pub fn write_delta(text: &[u8]) -> Option<i32> {
    let mut found = None;
    for start in 0..text.len() {
        let Some((len, delta)) = decode(&text[start..]) else {
            continue;
        };
        if start + len != text.len() {
            continue;
        }
        if found.is_some() {
            return None; // ambiguous
        }
        found = Some(delta);
    }
    found
}

/// Decodes one `%gs:` inc/dec/add/sub on memory at the start of `b`:
/// its length and delta.
fn decode(b: &[u8]) -> Option<(usize, i32)> {
    const GS: u8 = 0x65;
    if *b.first()? != GS {
        return None;
    }
    let mut at = 1;
    if (0x40..=0x4f).contains(b.get(at)?) {
        at += 1; // REX: widens register numbers only, not lengths
    }
    let opcode = *b.get(at)?;
    let modrm = *b.get(at + 1)?;
    let reg = (modrm >> 3) & 7;
    // Which operation, and how many immediate bytes follow the operand.
    let (sign, imm_len) = match (opcode, reg) {
        (0xff, 0) => (1, 0),
        (0xff, 1) => (-1, 0),
        (0x83, 0) => (1, 1),
        (0x83, 5) => (-1, 1),
        (0x81, 0) => (1, 4),
        (0x81, 5) => (-1, 4),
        _ => return None,
    };
    let operand = memory_operand_len(&b[at + 1..])?;
    let imm_at = at + 1 + operand;
    let magnitude = match imm_len {
        0 => 1,
        1 => i32::from(*b.get(imm_at)? as i8),
        _ => i32::from_le_bytes(b.get(imm_at..imm_at + 4)?.try_into().ok()?),
    };
    Some((imm_at + imm_len, sign * magnitude))
}

/// Length of a memory operand (ModRM, SIB, displacement) at the start of
/// `b`; None for a register operand (no memory written) or short input.
fn memory_operand_len(b: &[u8]) -> Option<usize> {
    let modrm = *b.first()?;
    let (md, rm) = (modrm >> 6, modrm & 7);
    if md == 3 {
        return None;
    }
    let mut len = 1;
    let mut disp = match md {
        1 => 1,
        2 => 4,
        _ => 0,
    };
    if rm == 4 {
        let sib = *b.get(1)?;
        len += 1;
        // No base register: a 32-bit displacement instead.
        if md == 0 && sib & 7 == 5 {
            disp = 4;
        }
    } else if md == 0 && rm == 5 {
        disp = 4; // RIP-relative
    }
    len += disp;
    (b.len() >= len).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::write_delta;

    /// `text` preceded by unrelated bytes that decode as nothing.
    fn after_noise(insn: &[u8]) -> Vec<u8> {
        let mut v = vec![0x90, 0x90, 0x48, 0x8b, 0x87]; // nops, mov ...
        v.extend_from_slice(insn);
        v
    }

    #[test]
    fn inc_and_dec_through_a_register() {
        // incl %gs:(%rax), decl %gs:(%rax)
        assert_eq!(write_delta(&after_noise(&[0x65, 0xff, 0x00])), Some(1));
        assert_eq!(write_delta(&after_noise(&[0x65, 0xff, 0x08])), Some(-1));
        // incl %gs:0x10(%rdx), decl %gs:0x100(%rbx)
        assert_eq!(
            write_delta(&after_noise(&[0x65, 0xff, 0x42, 0x10])),
            Some(1)
        );
        assert_eq!(
            write_delta(&after_noise(&[0x65, 0xff, 0x8b, 0x00, 0x01, 0, 0])),
            Some(-1)
        );
    }

    #[test]
    fn rex_b_forms() {
        // incl %gs:(%r8), decl %gs:(%r12) (SIB needed), decl %gs:0x0(%r13)
        assert_eq!(
            write_delta(&after_noise(&[0x65, 0x41, 0xff, 0x00])),
            Some(1)
        );
        assert_eq!(
            write_delta(&after_noise(&[0x65, 0x41, 0xff, 0x0c, 0x24])),
            Some(-1)
        );
        assert_eq!(
            write_delta(&after_noise(&[0x65, 0x41, 0xff, 0x4d, 0x00])),
            Some(-1)
        );
    }

    #[test]
    fn add_and_sub_immediates() {
        // addl $0x1,%gs:(%rax); subl $0x1,%gs:(%rcx); addl $-1 (a release)
        assert_eq!(
            write_delta(&after_noise(&[0x65, 0x83, 0x00, 0x01])),
            Some(1)
        );
        assert_eq!(
            write_delta(&after_noise(&[0x65, 0x83, 0x29, 0x01])),
            Some(-1)
        );
        assert_eq!(
            write_delta(&after_noise(&[0x65, 0x83, 0x00, 0xff])),
            Some(-1)
        );
        // subl $0x2,%gs:0x8(%rsp,%rax,1) with imm32
        assert_eq!(
            write_delta(&after_noise(&[0x65, 0x81, 0x6c, 0x04, 0x08, 0x02, 0, 0, 0])),
            Some(-2)
        );
        // addl $0x3,%gs:0x1234(,%rax,4): SIB without base, disp32
        assert_eq!(
            write_delta(&after_noise(&[
                0x65, 0x81, 0x04, 0x85, 0x34, 0x12, 0, 0, 3, 0, 0, 0
            ])),
            Some(3)
        );
        // incl %gs:0x10(%rip)
        assert_eq!(
            write_delta(&after_noise(&[0x65, 0xff, 0x05, 0x10, 0, 0, 0])),
            Some(1)
        );
    }

    #[test]
    fn must_end_exactly_at_the_ip() {
        // The incl ends one byte before the IP.
        assert_eq!(write_delta(&[0x90, 0x65, 0xff, 0x00, 0x90]), None);
        // Operand cut short by the IP.
        assert_eq!(write_delta(&[0x90, 0x65, 0xff, 0x40]), None);
    }

    #[test]
    fn other_instructions_and_garbage_are_unknown() {
        // incl (%rax) without %gs; incl %eax (register); push %gs:(%rax).
        assert_eq!(write_delta(&after_noise(&[0xff, 0x00])), None);
        assert_eq!(write_delta(&after_noise(&[0x65, 0xff, 0xc0])), None);
        assert_eq!(write_delta(&after_noise(&[0x65, 0xff, 0x30])), None);
        assert_eq!(write_delta(&[]), None);
        assert_eq!(write_delta(&[0x65]), None);
        assert_eq!(write_delta(&[0xff; 16]), None);
        assert_eq!(write_delta(&[0x65; 16]), None);
    }

    #[test]
    fn two_candidates_ending_at_the_ip_are_ambiguous() {
        // addl $0xff6507,%gs:(%rax), whose immediate's last three
        // bytes are also incl %gs:(%rax): both end at the IP.
        let text = [0x65, 0x81, 0x00, 0x07, 0x65, 0xff, 0x00];
        assert_eq!(write_delta(&text), None);
        // Without the long form's prefix, the incl alone decodes.
        assert_eq!(write_delta(&text[1..]), Some(1));
    }
}
