//! The guest architectures: what differs between an x86-64 guest and an arm64 one, from the
//! Debian packages to the QEMU machine and the serial console.

use std::fmt;

/// A guest architecture. Both are emulated (TCG): this machine runs x86-64 guests without KVM
/// too, so an arm64 guest is the same kind of run, only slower.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64", alias = "amd64")]
    X86_64,
    #[value(name = "arm64", alias = "aarch64")]
    Arm64,
}

impl Arch {
    pub const ALL: [Self; 2] = [Self::X86_64, Self::Arm64];

    /// Debian's (and Go's) name: `amd64`, `arm64`.
    pub fn debian(self) -> &'static str {
        match self {
            Self::X86_64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    /// The QEMU system emulator, in `qemu-system-x86` or `qemu-system-arm`.
    pub fn qemu_system(self) -> &'static str {
        match self {
            Self::X86_64 => "qemu-system-x86_64",
            Self::Arm64 => "qemu-system-aarch64",
        }
    }

    /// The machine: QEMU's default PC for x86-64; for arm64 the generic `virt` board, which
    /// boots Debian's kernel image directly from its device tree (no firmware needed).
    pub fn machine_args(self) -> &'static [&'static str] {
        match self {
            Self::X86_64 => &[],
            Self::Arm64 => &["-M", "virt"],
        }
    }

    /// The serial console the kernel writes to: the 16550 UART or the `virt` board's PL011.
    pub fn console(self) -> &'static str {
        match self {
            Self::X86_64 => "ttyS0",
            Self::Arm64 => "ttyAMA0",
        }
    }

    /// How many times an x86-64 guest's time limit a run of this architecture gets: every
    /// arm64 instruction is translated by TCG on this x86-64 host.
    pub fn slowdown(self) -> u64 {
        match self {
            Self::X86_64 => 1,
            Self::Arm64 => 2,
        }
    }

    /// The suffix of file names and labels: empty for x86-64, the matrix's first architecture,
    /// so its cached kernels and logs keep their names.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::X86_64 => "",
            Self::Arm64 => "-arm64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.debian())
    }
}
