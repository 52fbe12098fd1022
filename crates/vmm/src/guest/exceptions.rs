//! Exceptions fail loudly: an IDT whose 32 gates lead to stubs that report the vector to the
//! VMM through [`FAULT_PORT`], and the decoding of what they leave on the stack.
//!
//! The stubs run at CPL3 like the program (the gates target the user code segment, so the
//! exception is delivered without a privilege change and never reaches the slow CPL0 path),
//! on the IST1 stack, so that even a fault on the program's own stack is reported. Each stub
//! pushes a zero where the CPU pushes no error code, then its vector, and jumps to a common
//! tail that writes the vector to the port. The VMM then reads the frame
//! `[vector, error code, RIP, CS, RFLAGS, RSP, SS]` at the stub's RSP, and CR2 from the
//! vCPU, and stops the run; the stub is never resumed (its tail ends in `UD2` should a VMM
//! ever do so).

use std::fmt;

use iced_x86::code_asm::{CodeAssembler, dword_ptr, dx, eax, rsp};

use super::descriptors::USER_CS;
use super::layout::{FAULT_PORT, STUBS_GPA, STUBS_SIZE};
use super::program::ProgramError;

/// Vectors with a gate: the architectural exceptions.
pub const VECTORS: usize = 32;

/// Whether the CPU pushes an error code for exception `vector`.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// The mnemonic of exception `vector`, or `None` for reserved vectors.
pub fn mnemonic(vector: u8) -> Option<&'static str> {
    const NAMES: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "", "#TS", "#NP", "#SS",
        "#GP", "#PF", "", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "", "", "", "", "", "", "#HV",
        "#VC", "#SX", "",
    ];
    NAMES
        .get(usize::from(vector))
        .filter(|n| !n.is_empty())
        .copied()
}

/// The exception stubs, assembled for [`STUBS_GPA`], and the address of each vector's stub.
pub fn stubs() -> Result<(Vec<u8>, [u64; VECTORS]), ProgramError> {
    let fail = |_| ProgramError::Assemble { index: None };
    let mut a = CodeAssembler::new(64).map_err(fail)?;
    let mut common = a.create_label();
    let mut entries = Vec::with_capacity(VECTORS);
    for vector in 0..VECTORS as u8 {
        let mut entry = a.create_label();
        a.set_label(&mut entry).map_err(fail)?;
        if !has_error_code(vector) {
            a.push(0).map_err(fail)?;
        }
        a.push(i32::from(vector)).map_err(fail)?;
        a.jmp(common).map_err(fail)?;
        entries.push(entry);
    }
    a.set_label(&mut common).map_err(fail)?;
    a.mov(eax, dword_ptr(rsp)).map_err(fail)?;
    a.mov(dx, u32::from(FAULT_PORT)).map_err(fail)?;
    a.out(dx, eax).map_err(fail)?;
    a.ud2().map_err(fail)?;
    let result = a
        .assemble_options(
            STUBS_GPA,
            iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .map_err(fail)?;
    let mut addrs = [0u64; VECTORS];
    for (addr, label) in addrs.iter_mut().zip(&entries) {
        *addr = result.label_ip(label).map_err(fail)?;
    }
    let code = result.inner.code_buffer;
    if code.len() as u64 > STUBS_SIZE {
        return Err(ProgramError::CodeTooLarge {
            len: code.len(),
            capacity: STUBS_SIZE,
        });
    }
    Ok((code, addrs))
}

/// The IDT: one 64-bit interrupt gate per stub, targeting the user code segment on IST1.
pub fn idt(stub_addrs: &[u64; VECTORS]) -> Vec<u8> {
    let mut idt = Vec::with_capacity(VECTORS * 16);
    for &addr in stub_addrs {
        // Present, DPL 0 (software `INT n` from the program is a #GP), 64-bit interrupt gate.
        let type_attr: u64 = 0x8e;
        let ist: u64 = 1;
        let low = (addr & 0xffff)
            | u64::from(USER_CS) << 16
            | ist << 32
            | type_attr << 40
            | ((addr >> 16) & 0xffff) << 48;
        idt.extend_from_slice(&low.to_le_bytes());
        idt.extend_from_slice(&(addr >> 32).to_le_bytes());
    }
    idt
}

/// An exception the program raised, as its stub reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestFault {
    /// The vector.
    pub vector: u8,
    /// The error code (0 where the CPU pushes none).
    pub error_code: u64,
    /// Where the program was: the faulting instruction (or the next one, for traps).
    pub rip: u64,
    /// CR2 at the report (the faulting address for a #PF).
    pub cr2: u64,
    /// The program operation `rip` lies in, if it lies in one.
    pub op: Option<usize>,
}

impl fmt::Display for GuestFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match mnemonic(self.vector) {
            Some(name) => write!(f, "{name} (vector {})", self.vector)?,
            None => write!(f, "vector {}", self.vector)?,
        }
        if has_error_code(self.vector) {
            write!(f, ", error code {:#x}", self.error_code)?;
        }
        write!(f, " at rip {:#x}", self.rip)?;
        if let Some(op) = self.op {
            write!(f, " (op {op})")?;
        }
        if self.vector == 14 {
            write!(f, ", address {:#x}", self.cr2)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    use super::*;

    #[test]
    fn every_stub_pushes_its_vector_and_reaches_the_port() {
        let (code, addrs) = stubs().unwrap();
        for (vector, &addr) in addrs.iter().enumerate() {
            let start = (addr - STUBS_GPA) as usize;
            let mut d = Decoder::with_ip(64, &code[start..], addr, DecoderOptions::NONE);
            let mut pushes = Vec::new();
            let mut insn = d.decode();
            while insn.mnemonic() == Mnemonic::Push {
                pushes.push(insn.immediate32());
                insn = d.decode();
            }
            let expected = if has_error_code(vector as u8) {
                vec![vector as u32]
            } else {
                vec![0, vector as u32]
            };
            assert_eq!(pushes, expected, "vector {vector}");
            assert_eq!(insn.mnemonic(), Mnemonic::Jmp);
            let tail = (insn.near_branch_target() - STUBS_GPA) as usize;
            let mut d = Decoder::with_ip(64, &code[tail..], tail as u64, DecoderOptions::NONE);
            let mnemonics: Vec<Mnemonic> = (0..4).map(|_| d.decode().mnemonic()).collect();
            assert_eq!(
                mnemonics,
                [Mnemonic::Mov, Mnemonic::Mov, Mnemonic::Out, Mnemonic::Ud2]
            );
        }
    }

    #[test]
    fn gates_point_at_the_stubs() {
        let (_, addrs) = stubs().unwrap();
        let idt = idt(&addrs);
        assert_eq!(idt.len(), VECTORS * 16);
        for (gate, &addr) in idt.chunks(16).zip(&addrs) {
            let offset = u64::from(u16::from_le_bytes([gate[0], gate[1]]))
                | u64::from(u16::from_le_bytes([gate[6], gate[7]])) << 16
                | u64::from(u32::from_le_bytes(gate[8..12].try_into().unwrap())) << 32;
            assert_eq!(offset, addr);
            assert_eq!(u16::from_le_bytes([gate[2], gate[3]]), USER_CS);
            assert_eq!((gate[4], gate[5]), (1, 0x8e));
        }
    }

    #[test]
    fn faults_read_clearly() {
        let pf = GuestFault {
            vector: 14,
            error_code: 4,
            rip: 0x10_0010,
            cr2: 0x4000_0000,
            op: Some(2),
        };
        assert_eq!(
            pf.to_string(),
            "#PF (vector 14), error code 0x4 at rip 0x100010 (op 2), address 0x40000000"
        );
        let ud = GuestFault {
            vector: 6,
            error_code: 0,
            rip: 0x10_0000,
            cr2: 0,
            op: None,
        };
        assert_eq!(ud.to_string(), "#UD (vector 6) at rip 0x100000");
    }
}
