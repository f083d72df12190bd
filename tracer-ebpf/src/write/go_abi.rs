//! Go's internal register ABI (ABIInternal, Go 1.17 and later), as the goroutine uprobes read
//! it from the user registers the kernel saved: which register holds integer argument `n` of a
//! Go function, and which holds the running goroutine (`g`).
//!
//! - amd64: arguments in RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11; `g` in R14.
//! - arm64: arguments in R0 to R15; `g` in R28.
//!
//! Registers are named by their word index in the register block a uprobe gets (`struct
//! pt_regs` on x86-64, `struct user_pt_regs` on arm64, both all 64-bit words), so the table is
//! plain data: the kernel build checks it against aya's bindings of those structs, and the
//! agent's tests compile this file for the host and check the reads.

/// x86-64: `struct pt_regs` is r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi ...
// Both tables are compiled for every architecture (and tested on the host); a build reads one.
#[cfg_attr(not(bpf_target_arch = "x86_64"), allow(dead_code))]
pub mod amd64 {
    pub const R14: usize = 1;
    pub const RBX: usize = 5;
    pub const R11: usize = 6;
    pub const R10: usize = 7;
    pub const R9: usize = 8;
    pub const R8: usize = 9;
    pub const RAX: usize = 10;
    pub const RCX: usize = 11;
    pub const RSI: usize = 13;
    pub const RDI: usize = 14;
    /// Integer argument registers, in order.
    pub const ARGS: [usize; 9] = [RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11];
    /// The running goroutine.
    pub const G: usize = R14;
}

/// arm64: `struct user_pt_regs` is regs[0..31], sp, pc, pstate.
#[cfg_attr(not(bpf_target_arch = "aarch64"), allow(dead_code))]
pub mod arm64 {
    /// Integer argument registers R0..R15, in order.
    pub const ARGS: [usize; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    /// The running goroutine: R28.
    pub const G: usize = 28;
}

#[cfg(bpf_target_arch = "x86_64")]
use amd64 as native;
#[cfg(bpf_target_arch = "aarch64")]
use arm64 as native;

/// Integer argument `n` of the Go function a uprobe entered; `regs` is the probe's register
/// block.
#[cfg(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64"))]
#[inline(always)]
pub fn arg(regs: *const u64, n: usize) -> u64 {
    register(regs, native::ARGS[n])
}

/// The goroutine running the Go function a uprobe entered.
#[cfg(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64"))]
#[inline(always)]
pub fn goroutine(regs: *const u64) -> u64 {
    register(regs, native::G)
}

/// The register at word `index` of a register block.
#[inline(always)]
pub fn register(regs: *const u64, index: usize) -> u64 {
    // SAFETY: `regs` is the probe's register block, readable by the program, and every index
    // of the tables lies inside it (checked below against the struct's layout).
    unsafe { *regs.add(index) }
}

/// The tables against aya's bindings of the register blocks, in the kernel build.
#[cfg(all(target_arch = "bpf", bpf_target_arch = "x86_64"))]
const _: () = {
    use core::mem::offset_of;

    use aya_ebpf::bindings::pt_regs;
    assert!(offset_of!(pt_regs, rax) == 8 * amd64::RAX);
    assert!(offset_of!(pt_regs, rbx) == 8 * amd64::RBX);
    assert!(offset_of!(pt_regs, rcx) == 8 * amd64::RCX);
    assert!(offset_of!(pt_regs, rdi) == 8 * amd64::RDI);
    assert!(offset_of!(pt_regs, rsi) == 8 * amd64::RSI);
    assert!(offset_of!(pt_regs, r8) == 8 * amd64::R8);
    assert!(offset_of!(pt_regs, r9) == 8 * amd64::R9);
    assert!(offset_of!(pt_regs, r10) == 8 * amd64::R10);
    assert!(offset_of!(pt_regs, r11) == 8 * amd64::R11);
    assert!(offset_of!(pt_regs, r14) == 8 * amd64::R14);
};

#[cfg(all(target_arch = "bpf", bpf_target_arch = "aarch64"))]
const _: () = {
    use core::mem::offset_of;

    use aya_ebpf::bindings::pt_regs;
    assert!(offset_of!(pt_regs, regs) == 0);
    assert!(size_of::<pt_regs>() == 8 * 34);
    assert!(arm64::G < 31 && arm64::ARGS[arm64::ARGS.len() - 1] < 31);
};
