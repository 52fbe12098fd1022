//! Compiles a [`Program`] to x86-64 with iced-x86's `CodeAssembler`.
//!
//! The code is placed at [`CODE_GPA`] and runs at CPL3. Register use is fixed: `rdi` holds
//! the results array's address for the whole program, `rsi` the operation's address, `rax`
//! the value, `rcx` a loop count. Every `Load`, `TimedLoads` and `Dirty` writes one `u64` to the next
//! slot of the results array; the program ends with an `OUT` to [`DONE_PORT`] (followed by
//! `UD2`, so a VMM that wrongly resumed it would get a loud #UD rather than run off the end).
//!
//! `TimedLoads` brackets its loop with `LFENCE; RDTSC` on both sides: the first fence keeps
//! earlier work out of the interval, the second waits for every load of the loop to complete
//! before the TSC is read again.
//!
//! Each operation is assembled on its own, at the address it will occupy, so that the first
//! instruction of every loop can be put on a [`LOOP_ALIGN`] boundary (NOPs go before the
//! loop's setup, outside any timed interval). Measured on this project's host, the same
//! timed loop costs 0.8 or 1.5 TSC ticks per load depending only on where it falls in the
//! instruction stream; aligned, every repetition times alike.

use iced_x86::IcedError;
use iced_x86::code_asm::{
    CodeAssembler, CodeLabel, al, ax, byte_ptr, dword_ptr, dx, eax, ecx, qword_ptr, r8, r9, r10,
    r11, r12, r13, r14, r15, rax, rbx, rcx, rdi, rdx, rsi, word_ptr,
};

use super::layout::{CODE_GPA, CODE_SIZE, DONE_PORT, IDLE_PORT, RESULTS_CAPACITY, RESULTS_GPA};
use super::program::{GuestOp, Program, ProgramError};

/// The alignment of every loop's first instruction: a cache line.
pub const LOOP_ALIGN: u64 = 64;

/// A program compiled for [`CODE_GPA`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledProgram {
    /// Machine code, to be copied to [`CODE_GPA`].
    pub code: Vec<u8>,
    /// How many results the program writes, from [`RESULTS_GPA`] on.
    pub result_slots: usize,
    /// The address of each operation's first byte (alignment padding included), then that of
    /// the epilogue: op `i` occupies `[op_starts[i], op_starts[i + 1])`.
    pub op_starts: Vec<u64>,
}

impl CompiledProgram {
    /// The operation whose code contains `rip`, if any.
    pub fn op_at(&self, rip: u64) -> Option<usize> {
        self.op_starts
            .windows(2)
            .position(|w| (w[0]..w[1]).contains(&rip))
    }
}

/// Compiles `program` (which must have passed [`Program::validate`]).
pub fn compile(program: &Program) -> Result<CompiledProgram, ProgramError> {
    let result_slots = program.result_slots();
    if result_slots > RESULTS_CAPACITY {
        return Err(ProgramError::TooManyResults {
            slots: result_slots,
            capacity: RESULTS_CAPACITY,
        });
    }
    let at = |index| move |_: IcedError| ProgramError::Assemble { index };
    let mut g = Gen {
        code: Vec::new(),
        slot: 0,
    };
    g.chunk(&|a| a.mov(rdi, RESULTS_GPA)).map_err(at(None))?;
    let mut op_starts = Vec::with_capacity(program.ops.len() + 1);
    for (index, op) in program.ops.iter().enumerate() {
        op_starts.push(g.ip());
        g.op(op).map_err(at(Some(index)))?;
    }
    op_starts.push(g.ip());
    g.chunk(&|a| {
        a.mov(dx, u32::from(DONE_PORT))?;
        a.out(dx, eax)?;
        a.ud2()
    })
    .map_err(at(None))?;
    if g.code.len() as u64 > CODE_SIZE {
        return Err(ProgramError::CodeTooLarge {
            len: g.code.len(),
            capacity: CODE_SIZE,
        });
    }
    Ok(CompiledProgram {
        code: g.code,
        result_slots,
        op_starts,
    })
}

/// Instructions to assemble into one chunk.
type Emit<'a> = &'a dyn Fn(&mut CodeAssembler) -> Result<(), IcedError>;

struct Gen {
    code: Vec<u8>,
    /// The next free result slot.
    slot: usize,
}

impl Gen {
    /// Where the next byte goes.
    fn ip(&self) -> u64 {
        CODE_GPA + self.code.len() as u64
    }

    /// Assembles `emit` at the current address and appends it.
    fn chunk(&mut self, emit: Emit<'_>) -> Result<(), IcedError> {
        let bytes = assemble(emit, self.ip())?;
        self.code.extend_from_slice(&bytes);
        Ok(())
    }

    /// Appends NOPs, then `setup`, then `body`, with as many NOPs as put `body` on a
    /// [`LOOP_ALIGN`] boundary. (`setup` holds no branch, so its length does not depend on
    /// where it is assembled.)
    fn aligned(&mut self, setup: Emit<'_>, body: Emit<'_>) -> Result<(), IcedError> {
        let setup_len = assemble(setup, 0)?.len() as u64;
        let pad = (LOOP_ALIGN - (self.ip() + setup_len) % LOOP_ALIGN) % LOOP_ALIGN;
        if pad > 0 {
            self.chunk(&|a| a.nops_with_size(pad as usize))?;
        }
        self.chunk(setup)?;
        self.chunk(body)
    }

    /// The displacement from `rdi` of the next result slot, which it takes.
    fn next_slot(&mut self) -> i32 {
        // At most RESULTS_CAPACITY slots (checked before generating), so this fits an i32.
        let disp = (self.slot * 8) as i32;
        self.slot += 1;
        disp
    }

    fn op(&mut self, op: &GuestOp) -> Result<(), IcedError> {
        match *op {
            GuestOp::Store { gpa, value, len } => self.chunk(&|a| {
                a.mov(rsi, gpa)?;
                a.mov(rax, value)?;
                match len {
                    1 => a.mov(byte_ptr(rsi), al),
                    2 => a.mov(word_ptr(rsi), ax),
                    4 => a.mov(dword_ptr(rsi), eax),
                    _ => a.mov(qword_ptr(rsi), rax),
                }
            }),
            GuestOp::Load { gpa, len } => {
                let disp = self.next_slot();
                self.chunk(&|a| {
                    a.mov(rsi, gpa)?;
                    match len {
                        1 => a.movzx(eax, byte_ptr(rsi))?,
                        2 => a.movzx(eax, word_ptr(rsi))?,
                        // A 32-bit load zero-extends into rax.
                        4 => a.mov(eax, dword_ptr(rsi))?,
                        _ => a.mov(rax, qword_ptr(rsi))?,
                    }
                    a.mov(qword_ptr(rdi + disp), rax)
                })
            }
            GuestOp::NtStore { gpa, value } => self.chunk(&|a| {
                a.mov(rsi, gpa)?;
                a.mov(rax, value)?;
                a.movnti(qword_ptr(rsi), rax)
            }),
            GuestOp::Clflush { gpa } => self.chunk(&|a| {
                a.mov(rsi, gpa)?;
                a.clflush(byte_ptr(rsi))
            }),
            GuestOp::Clflushopt { gpa } => self.chunk(&|a| {
                a.mov(rsi, gpa)?;
                a.clflushopt(byte_ptr(rsi))
            }),
            GuestOp::Sfence => self.chunk(&|a| a.sfence()),
            GuestOp::Mfence => self.chunk(&|a| a.mfence()),
            GuestOp::Fill { gpa, len, value } => self.aligned(
                &|a| {
                    a.mov(rsi, gpa)?;
                    a.mov(rcx, len / 8)?;
                    a.mov(rax, value)
                },
                &|a| {
                    let mut top = a.create_label();
                    a.set_label(&mut top)?;
                    a.mov(qword_ptr(rsi), rax)?;
                    a.add(rsi, 8)?;
                    a.dec(rcx)?;
                    a.jnz(top)
                },
            ),
            GuestOp::TimedLoads { gpa, count, stride } => {
                let disp = self.next_slot();
                self.aligned(
                    &|a| {
                        a.mov(rsi, gpa)?;
                        a.mov(rcx, count)?;
                        a.mov(r10, stride)?;
                        read_tsc(a)?;
                        a.mov(r8, rax)
                    },
                    &|a| {
                        let mut top = a.create_label();
                        a.set_label(&mut top)?;
                        a.mov(r9, qword_ptr(rsi))?;
                        a.add(rsi, r10)?;
                        a.dec(rcx)?;
                        a.jnz(top)?;
                        read_tsc(a)?;
                        a.sub(rax, r8)?;
                        a.mov(qword_ptr(rdi + disp), rax)
                    },
                )
            }
            GuestOp::Dirty {
                gpa,
                len,
                ticks_per_page,
                burst,
                laps,
            } => {
                let disp = self.next_slot();
                self.aligned(
                    &|a| {
                        a.mov(r13, gpa)?;
                        a.mov(rsi, gpa)?;
                        a.mov(r8, gpa + len)?;
                        a.mov(rbx, 1u64)?;
                        a.mov(r10, ticks_per_page.saturating_mul(burst))?;
                        a.xor(r11, r11)?;
                        a.mov(r12, laps)?;
                        a.mov(r15, burst)?;
                        a.mov(r14, burst)?;
                        read_tsc(a)?;
                        a.mov(r9, rax)
                    },
                    &|a| dirty_loop(a, disp),
                )
            }
            GuestOp::Signal { port, value } => self.chunk(&|a| {
                a.mov(eax, value)?;
                a.mov(dx, u32::from(port))?;
                a.out(dx, eax)
            }),
        }
    }
}

/// TSC ticks of a wait the `Dirty` loop spins rather than sleeps: about 100 µs at the TSC
/// rates of current x86 parts (1 to 4 GHz), less than an idle exit and the VMM's wake-up
/// cost on a nested host.
const SPIN_TICKS: i32 = 1 << 18;

/// The body of a `Dirty` op, its registers set up: `r13` the range's start, `rsi` the
/// page, `r8` the range's end, `rbx` the lap, `r10` the ticks per burst, `r11` the pages
/// written, `r12` the lap limit (0: none), `r15` the burst, `r14` the pages left in this
/// burst, `r9` the next burst's deadline.
fn dirty_loop(a: &mut CodeAssembler, disp: i32) -> Result<(), IcedError> {
    let mut top = a.create_label();
    let mut next = a.create_label();
    let mut pace = a.create_label();
    let mut sleep = a.create_label();
    let mut spin = a.create_label();
    let mut reset = a.create_label();
    let mut done = a.create_label();
    a.set_label(&mut top)?;
    a.mov(rax, rbx)?;
    a.and(rax, 511)?;
    a.mov(qword_ptr(rsi + rax * 8), rbx)?;
    a.inc(r11)?;
    a.mov(qword_ptr(rdi + disp), r11)?;
    a.add(rsi, 4096)?;
    a.cmp(rsi, r8)?;
    a.jb(next)?;
    a.mov(rsi, r13)?;
    a.cmp(rbx, r12)?;
    a.je(done)?;
    a.inc(rbx)?;
    a.set_label(&mut next)?;
    a.dec(r14)?;
    a.jnz(top)?;
    a.mov(r14, r15)?;
    a.set_label(&mut pace)?;
    a.add(r9, r10)?;
    // Deadline passed: pace from now on rather than burst to catch up.
    ticks_to_deadline(a, reset, reset)?;
    // Give the core back for the wait, as a kernel HLTs until its deadline timer and HLTs
    // again after an early wake-up: the VMM sleeps about `rcx` ticks (capped to 32 bits,
    // and by the VMM to `MAX_IDLE`), and while more than `SPIN_TICKS` are left the guest
    // asks again. Only that last stretch is spun, so a guest waiting a second between
    // pages costs no more than one waiting 10 ms.
    a.set_label(&mut sleep)?;
    a.cmp(rcx, SPIN_TICKS)?;
    a.jbe(spin)?;
    a.mov(eax, u32::MAX)?;
    a.cmp(rcx, rax)?;
    a.cmova(rcx, rax)?;
    a.mov(eax, ecx)?;
    a.mov(dx, u32::from(IDLE_PORT))?;
    a.out(dx, eax)?;
    // Slept past the deadline: the next burst is due now, paced from the deadline.
    ticks_to_deadline(a, top, reset)?;
    a.jmp(sleep)?;
    a.set_label(&mut spin)?;
    a.pause()?;
    read_tsc(a)?;
    a.cmp(rax, r9)?;
    a.jb(spin)?;
    a.jmp(top)?;
    a.set_label(&mut reset)?;
    a.mov(r9, rax)?;
    a.jmp(top)?;
    a.set_label(&mut done)?;
    a.nop()
}

/// Leaves in `rcx` the TSC ticks from now (`rax`) to the deadline in `r9`; jumps to
/// `passed` if the deadline is not ahead (signed: it may lie behind now), and to `reset`
/// if it is further than one interval (`r10`) ahead, which only a moved TSC makes (as on a
/// restored VM).
fn ticks_to_deadline(
    a: &mut CodeAssembler,
    passed: CodeLabel,
    reset: CodeLabel,
) -> Result<(), IcedError> {
    read_tsc(a)?;
    a.mov(rcx, r9)?;
    a.sub(rcx, rax)?;
    a.jle(passed)?;
    a.cmp(rcx, r10)?;
    a.ja(reset)
}

/// Assembles `emit` for address `ip`.
fn assemble(emit: Emit<'_>, ip: u64) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    emit(&mut a)?;
    a.assemble(ip)
}

/// `LFENCE; RDTSC`, leaving the 64-bit TSC in `rax`.
fn read_tsc(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.lfence()?;
    a.rdtsc()?;
    a.shl(rdx, 32)?;
    a.or(rax, rdx)
}

#[cfg(test)]
mod tests {
    use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, Mnemonic};

    use super::*;

    fn decode(code: &[u8]) -> Vec<Instruction> {
        Decoder::with_ip(64, code, CODE_GPA, DecoderOptions::NONE)
            .into_iter()
            .collect()
    }

    fn text(insns: &[Instruction]) -> Vec<String> {
        let mut f = IntelFormatter::new();
        f.options_mut().set_uppercase_hex(false);
        f.options_mut().set_hex_prefix("0x");
        f.options_mut().set_hex_suffix("");
        f.options_mut().set_show_branch_size(false);
        f.options_mut().set_branch_leading_zeros(false);
        insns
            .iter()
            .map(|i| {
                let mut s = String::new();
                f.format(i, &mut s);
                s
            })
            .collect()
    }

    #[test]
    fn a_small_program_compiles_to_the_expected_instructions() {
        let program = Program {
            ops: vec![
                GuestOp::Store {
                    gpa: 0x20_0000,
                    value: 0xab,
                    len: 1,
                },
                GuestOp::Load {
                    gpa: 0x20_0000,
                    len: 2,
                },
                GuestOp::NtStore {
                    gpa: 0x20_0040,
                    value: 7,
                },
                GuestOp::Clflushopt { gpa: 0x20_0040 },
                GuestOp::Sfence,
                GuestOp::Signal {
                    port: 0x10,
                    value: 3,
                },
                GuestOp::Load {
                    gpa: 0x20_0040,
                    len: 8,
                },
            ],
            ..Program::default()
        };
        let compiled = compile(&program).unwrap();
        assert_eq!(compiled.result_slots, 2);
        let insns = decode(&compiled.code);
        assert_eq!(
            text(&insns),
            [
                "mov rdi,0x180000",
                // Store, 1 byte
                "mov rsi,0x200000",
                "mov rax,0xab",
                "mov [rsi],al",
                // Load, 2 bytes, into result 0
                "mov rsi,0x200000",
                "movzx eax,word ptr [rsi]",
                "mov [rdi],rax",
                // NtStore
                "mov rsi,0x200040",
                "mov rax,7",
                "movnti [rsi],rax",
                // Clflushopt
                "mov rsi,0x200040",
                "clflushopt [rsi]",
                "sfence",
                // Signal
                "mov eax,3",
                "mov dx,0x10",
                "out dx,eax",
                // Load, 8 bytes, into result 1
                "mov rsi,0x200040",
                "mov rax,[rsi]",
                "mov [rdi+8],rax",
                // Done
                "mov dx,0xf4",
                "out dx,eax",
                "ud2",
            ]
        );
        // Each op starts where its first instruction is, and rip maps back to the op.
        let ips: Vec<u64> = insns.iter().map(Instruction::ip).collect();
        let firsts = [1, 4, 7, 10, 12, 13, 16, 19];
        let expected: Vec<u64> = firsts.iter().map(|&i| ips[i]).collect();
        assert_eq!(compiled.op_starts, expected);
        assert_eq!(compiled.op_at(ips[5]), Some(1));
        assert_eq!(compiled.op_at(ips[0]), None);
        assert_eq!(compiled.op_at(ips[20]), None);
    }

    #[test]
    fn loops_are_aligned_and_branch_back_to_their_first_instruction() {
        let program = Program {
            ops: vec![
                GuestOp::Fill {
                    gpa: 0x20_0000,
                    len: 0x100,
                    value: 1,
                },
                GuestOp::TimedLoads {
                    gpa: 0x20_0000,
                    count: 16,
                    stride: 64,
                },
                GuestOp::Sfence,
            ],
            ..Program::default()
        };
        let compiled = compile(&program).unwrap();
        let all = decode(&compiled.code);
        // Padding comes first in an op, before its setup, so no NOP is inside a loop or
        // between the two TSC reads.
        let insns: Vec<Instruction> = all
            .iter()
            .copied()
            .filter(|i| i.mnemonic() != Mnemonic::Nop)
            .collect();
        for (i, w) in all.windows(2).enumerate() {
            if w[1].mnemonic() == Mnemonic::Nop {
                assert!(
                    w[0].mnemonic() == Mnemonic::Nop || compiled.op_starts.contains(&w[1].ip()),
                    "NOP inside an op at instruction {i}"
                );
            }
        }
        let t = text(&insns);
        let fill_top = insns[4].ip();
        assert_eq!(
            t[1..8],
            [
                "mov rsi,0x200000",
                "mov rcx,0x20",
                "mov rax,1",
                "mov [rsi],rax",
                "add rsi,8",
                "dec rcx",
                &format!("jne {fill_top:#x}"),
            ]
        );
        let timed_top = insns[16].ip();
        assert_eq!(
            t[8..],
            [
                "mov rsi,0x200000",
                "mov rcx,0x10",
                "mov r10,0x40",
                "lfence",
                "rdtsc",
                "shl rdx,0x20",
                "or rax,rdx",
                "mov r8,rax",
                "mov r9,[rsi]",
                "add rsi,r10",
                "dec rcx",
                &format!("jne {timed_top:#x}"),
                "lfence",
                "rdtsc",
                "shl rdx,0x20",
                "or rax,rdx",
                "sub rax,r8",
                "mov [rdi],rax",
                "sfence",
                "mov dx,0xf4",
                "out dx,eax",
                "ud2",
            ]
        );
        assert_eq!(fill_top % LOOP_ALIGN, 0);
        assert_eq!(timed_top % LOOP_ALIGN, 0);
        // Op starts include the padding: the setup of op 1 follows op 0's branch directly.
        assert_eq!(compiled.op_starts[1], insns[7].next_ip());
        assert_eq!(compiled.op_starts[2], insns[26].ip());
    }

    #[test]
    fn refuses_more_results_than_fit() {
        let program = Program {
            ops: vec![GuestOp::Load { gpa: 0, len: 8 }; RESULTS_CAPACITY + 1],
            ..Program::default()
        };
        assert_eq!(
            compile(&program),
            Err(ProgramError::TooManyResults {
                slots: RESULTS_CAPACITY + 1,
                capacity: RESULTS_CAPACITY
            })
        );
    }
}
