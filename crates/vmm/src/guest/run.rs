//! Running a [`Program`] on a [`GuestVm`]: the system area is written, the vCPU is put
//! straight into 64-bit mode at CPL3 (no guest kernel, no CPL0 code: on hosts whose KVM
//! emulates CPL0 instruction by instruction that would be slow), and `KVM_RUN` is repeated
//! until the program's `OUT` to the done port, a reported exception, or the deadline.

use std::time::{Duration, Instant};

use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::{VcpuExit, VcpuFd};
use memtype::MemType;
use memtype::mtrr::MSR_MTRR_DEF_TYPE;
use memtype::pat::{MSR_IA32_CR_PAT, Pat};

use super::codegen::{self, CompiledProgram};
use super::descriptors::{self, TSS_SEL, USER_CS, USER_DS};
use super::error::GuestError;
use super::exceptions::{self, GuestFault};
use super::layout::{
    CODE_GPA, DONE_PORT, FAULT_PORT, GDT_GPA, IDLE_PORT, IDT_GPA, RESULTS_GPA, STACK_TOP,
    STUBS_GPA, TSS_GPA,
};
use super::paging;
use super::program::Program;
use super::vm::{CR0_CD, GuestVm, errno};
use super::watchdog::Watchdog;

// Control-register and EFER bits the runtime sets.
const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS: bit 1 is always set; IOPL=3 lets CPL3 code use `OUT` (and where a host drops
/// IOPL, the TSS I/O bitmap does: see [`descriptors`]).
const RFLAGS_IOPL3: u64 = 0x2 | (3 << 12);

/// What a completed run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRun {
    /// One value per `Load` (the value loaded), `TimedLoads` (TSC ticks) and `Dirty` (pages
    /// written), in program order.
    pub results: Vec<u64>,
    /// `(port, value)` of each `Signal`, in order.
    pub signals: Vec<(u16, u32)>,
    /// How many times `KVM_RUN` returned (signals, the done port, and any spurious wakeups).
    pub exits: u64,
    /// Wall time from the first `KVM_RUN` to the done port.
    pub elapsed: Duration,
}

/// The longest one idle exit sleeps: a guest with longer to wait exits again, so the
/// watchdog and a pause are never held up for long.
pub(crate) const MAX_IDLE: Duration = Duration::from_millis(10);

/// How long to sleep for an `OUT` of `ticks` to [`IDLE_PORT`] on a vCPU whose TSC runs at
/// `tsc_khz`.
pub(crate) fn idle_time(ticks: u32, tsc_khz: u32) -> Duration {
    Duration::from_micros(u64::from(ticks) * 1000 / u64::from(tsc_khz.max(1))).min(MAX_IDLE)
}

/// A `KVM_RUN` return, copied out of `kvm_run` so the vCPU can be used again.
pub(crate) enum Exit {
    Out { port: u16, value: u32 },
    Shutdown,
    InternalError,
    Interrupted,
    Failed(uapi::Errno),
    Other(String),
}

impl GuestVm {
    /// Runs `program` from its first operation to its end and returns what it recorded,
    /// or stops it after `timeout`.
    ///
    /// The VM can run any number of programs one after the other; each run rebuilds the
    /// system area and resets the vCPU's registers, PAT, MTRR default type and CR0.
    pub fn run(&mut self, program: &Program, timeout: Duration) -> Result<GuestRun, GuestError> {
        let compiled = self.prepare(program)?;

        let watchdog = Watchdog::arm(timeout)?;
        let start = Instant::now();
        let mut exits = 0;
        let mut signals = Vec::new();
        let mut tsc_khz = None;
        loop {
            let exit = classify(self.vcpu().run());
            exits += 1;
            match exit {
                Exit::Out {
                    port: DONE_PORT, ..
                } => break,
                Exit::Out {
                    port: FAULT_PORT, ..
                } => return Err(GuestError::Fault(self.fault(&compiled)?)),
                Exit::Out {
                    port: IDLE_PORT,
                    value,
                } => {
                    let khz = match tsc_khz {
                        Some(khz) => khz,
                        None => *tsc_khz.insert(self.tsc_khz()?),
                    };
                    std::thread::sleep(idle_time(value, khz));
                }
                Exit::Out { port, value } => signals.push((port, value)),
                Exit::Interrupted if watchdog.fired() => {
                    return Err(GuestError::Timeout {
                        after: timeout,
                        exits,
                        rip: self.rip()?,
                    });
                }
                Exit::Interrupted => {}
                Exit::Shutdown => return Err(GuestError::TripleFault { rip: self.rip()? }),
                Exit::InternalError => {
                    let exit = format!(
                        "KVM_EXIT_INTERNAL_ERROR (suberror {})",
                        self.internal_suberror()
                    );
                    return Err(GuestError::UnexpectedExit {
                        exit,
                        rip: self.rip()?,
                    });
                }
                Exit::Failed(errno) => return Err(GuestError::Run(errno)),
                Exit::Other(exit) => {
                    return Err(GuestError::UnexpectedExit {
                        exit,
                        rip: self.rip()?,
                    });
                }
            }
        }
        let elapsed = start.elapsed();
        drop(watchdog);
        let results = (0..compiled.result_slots as u64)
            .map(|i| {
                self.memory
                    .read_u64(RESULTS_GPA + 8 * i)
                    .expect("the results area lies in the system area")
            })
            .collect();
        Ok(GuestRun {
            results,
            signals,
            exits,
            elapsed,
        })
    }

    /// Everything [`GuestVm::run`] does before the first `KVM_RUN`: the program checked and
    /// compiled, the system area written, the vCPU's PAT, MTRR default type, control
    /// registers and registers loaded so that its next `KVM_RUN` starts the program.
    pub(crate) fn prepare(&mut self, program: &Program) -> Result<CompiledProgram, GuestError> {
        program.validate()?;
        let compiled = codegen::compile(program)?;
        self.settle()?;
        let cr3 = self.load(program, &compiled)?;
        self.write_msr(MSR_IA32_CR_PAT, program.guest_pat)?;
        self.write_msr(MSR_MTRR_DEF_TYPE, program.mtrr_def_type)?;
        self.enter_user_mode(cr3, program.cr0_cd)?;
        Ok(compiled)
    }

    /// Writes the system area (descriptor tables, exception stubs, page tables, code, a
    /// cleared results array); returns CR3.
    fn load(&mut self, program: &Program, compiled: &CompiledProgram) -> Result<u64, GuestError> {
        let (stubs, stub_addrs) = exceptions::stubs()?;
        let gdt: Vec<u8> = descriptors::gdt()
            .iter()
            .flat_map(|d| d.to_le_bytes())
            .collect();
        let parts = [
            (GDT_GPA, gdt),
            (IDT_GPA, exceptions::idt(&stub_addrs)),
            (TSS_GPA, descriptors::tss()),
            (STUBS_GPA, stubs),
            (CODE_GPA, compiled.code.clone()),
            (RESULTS_GPA, vec![0; compiled.result_slots * 8]),
        ];
        for (gpa, bytes) in parts {
            // Each part lies in the system area (the layout and the code and results
            // capacities say so), and `GuestVm::new` refuses memory smaller than that.
            self.memory
                .write(gpa, &bytes)
                .expect("the system area is in guest memory");
        }
        let system_pat = system_pat_index(program.guest_pat);
        let cr3 = paging::build(self.memory.as_mut_slice(), &program.mappings, system_pat)?;
        Ok(cr3)
    }

    /// Loads long mode at CPL3 into the vCPU: segments from the GDT, paging on at `cr3`,
    /// RIP at the code, RSP at the stack top, IOPL 3, interrupts off.
    fn enter_user_mode(&mut self, cr3: u64, cache_disable: bool) -> Result<(), GuestError> {
        let old = self
            .vcpu()
            .get_sregs()
            .map_err(|e| GuestError::GetSregs(errno(e)))?;
        let data = descriptors::segment(USER_DS);
        let mut ldt = descriptors::segment(USER_DS);
        ldt.selector = 0;
        ldt.unusable = 1;
        ldt.present = 0;
        let sregs = kvm_sregs {
            cs: descriptors::segment(USER_CS),
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            tr: descriptors::segment(TSS_SEL),
            ldt,
            gdt: kvm_bindings::kvm_dtable {
                base: GDT_GPA,
                limit: descriptors::gdt_size() - 1,
                ..Default::default()
            },
            idt: kvm_bindings::kvm_dtable {
                base: IDT_GPA,
                limit: (exceptions::VECTORS * 16 - 1) as u16,
                ..Default::default()
            },
            cr0: CR0_PE
                | CR0_MP
                | CR0_ET
                | CR0_NE
                | CR0_WP
                | CR0_PG
                | if cache_disable { CR0_CD } else { 0 },
            cr2: 0,
            cr3,
            cr4: CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT,
            cr8: 0,
            efer: EFER_LME | EFER_LMA,
            // Keep what KVM gave the vCPU: the local APIC's base and no pending interrupt.
            apic_base: old.apic_base,
            interrupt_bitmap: [0; 4],
        };
        self.vcpu()
            .set_sregs(&sregs)
            .map_err(|e| GuestError::SetSregs(errno(e)))?;
        let regs = kvm_regs {
            rip: CODE_GPA,
            rsp: STACK_TOP,
            rflags: RFLAGS_IOPL3,
            ..Default::default()
        };
        self.vcpu()
            .set_regs(&regs)
            .map_err(|e| GuestError::SetRegs(errno(e)))
    }

    /// Lets the kernel finish what the previous run's last exit left pending (the `OUT` that
    /// ended it is completed on the next `KVM_RUN`, which would otherwise move the new RIP
    /// past an instruction of the old program), without entering the guest: `KVM_RUN` with
    /// `immediate_exit` set completes pending I/O and returns `EINTR`.
    fn settle(&mut self) -> Result<(), GuestError> {
        settle(&mut self.vcpu())
    }

    /// `kvm_run.internal.suberror` after a `KVM_EXIT_INTERNAL_ERROR` (1: the instruction
    /// emulator failed, which is how a host that emulates guest code reports what it
    /// cannot run).
    fn internal_suberror(&mut self) -> u32 {
        let mut vcpu = self.vcpu();
        let run = vcpu.get_kvm_run();
        // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, for which the kernel fills the
        // `internal` member of the union; it is plain data.
        unsafe { run.__bindgen_anon_1.internal.suberror }
    }

    fn rip(&self) -> Result<u64, GuestError> {
        let regs = self
            .vcpu()
            .get_regs()
            .map_err(|e| GuestError::GetRegs(errno(e)))?;
        Ok(regs.rip)
    }

    /// Decodes the frame an exception stub left: `[vector, error code, RIP, …]` at its RSP.
    fn fault(&self, compiled: &CompiledProgram) -> Result<GuestFault, GuestError> {
        let regs = self
            .vcpu()
            .get_regs()
            .map_err(|e| GuestError::GetRegs(errno(e)))?;
        let sregs = self
            .vcpu()
            .get_sregs()
            .map_err(|e| GuestError::GetSregs(errno(e)))?;
        // The stubs run on the IST1 stack inside the system area, so the frame is readable;
        // a frame that is not (a stub reached some other way) is reported as zeros.
        let word = |i: u64| self.memory.read_u64(regs.rsp + 8 * i).unwrap_or(0);
        let rip = word(2);
        Ok(GuestFault {
            vector: word(0) as u8,
            error_code: word(1),
            rip,
            cr2: sregs.cr2,
            op: compiled.op_at(rip),
        })
    }
}

/// The PAT entry the system area is mapped with: the first WB entry of the program's PAT
/// (so the runtime's own code and results stay cacheable whatever the program measures), or
/// entry 0 if the PAT has no WB entry.
fn system_pat_index(guest_pat: u64) -> u8 {
    Pat::new(guest_pat)
        .ok()
        .and_then(|pat| pat.entries().iter().position(|&t| t == MemType::Wb))
        .map_or(0, |i| i as u8)
}

/// Completes what the vCPU's last exit left pending (see [`GuestVm::settle`]) without
/// entering the guest.
pub(crate) fn settle(vcpu: &mut VcpuFd) -> Result<(), GuestError> {
    vcpu.set_kvm_immediate_exit(1);
    let result = vcpu.run().map(|_| ());
    vcpu.set_kvm_immediate_exit(0);
    match result {
        Err(e) if e.errno() != libc::EINTR => Err(GuestError::Run(errno(e))),
        _ => Ok(()),
    }
}

pub(crate) fn classify(exit: Result<VcpuExit<'_>, vmm_sys_util::errno::Error>) -> Exit {
    match exit {
        Ok(VcpuExit::IoOut(port, data)) => {
            let mut bytes = [0u8; 4];
            let n = data.len().min(4);
            bytes[..n].copy_from_slice(&data[..n]);
            Exit::Out {
                port,
                value: u32::from_le_bytes(bytes),
            }
        }
        Ok(VcpuExit::Shutdown) => Exit::Shutdown,
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Exit::Interrupted,
        Err(e) => Exit::Failed(errno(e)),
        Ok(VcpuExit::IoIn(port, data)) => Exit::Other(format!(
            "KVM_EXIT_IO (IN of {} bytes from port {port:#x})",
            data.len()
        )),
        Ok(VcpuExit::MmioRead(addr, data)) => Exit::Other(format!(
            "KVM_EXIT_MMIO (read of {} bytes at {addr:#x}: no memslot there)",
            data.len()
        )),
        Ok(VcpuExit::MmioWrite(addr, data)) => Exit::Other(format!(
            "KVM_EXIT_MMIO (write of {} bytes at {addr:#x}: no memslot there)",
            data.len()
        )),
        Ok(VcpuExit::Hlt) => Exit::Other("KVM_EXIT_HLT".into()),
        Ok(VcpuExit::FailEntry(reason, cpu)) => Exit::Other(format!(
            "KVM_EXIT_FAIL_ENTRY (hardware entry failure reason {reason:#x} on cpu {cpu})"
        )),
        Ok(VcpuExit::InternalError) => Exit::InternalError,
        Ok(VcpuExit::Unsupported(reason)) => Exit::Other(format!("exit reason {reason}")),
        Ok(other) => Exit::Other(format!("{other:?}")),
    }
}
