//! Just enough of a BTF reader to find struct field offsets and functions in the kernel's
//! `/sys/kernel/btf/vmlinux`.
//!
//! Our kernel programs are Rust, which cannot emit CO-RE relocations, so the programs that read
//! `struct sock` get its field offsets from here as load-time globals. Fields of `sock_common`
//! sit inside anonymous unions and structs (`skc_addrpair`, `skc_portpair`), which are walked.

use std::path::Path;

use tracer_common::{FdOffsets, IterOffsets, SockOffsets};

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u8 = 1;
const KIND_ARRAY: u8 = 3;
const KIND_STRUCT: u8 = 4;
const KIND_UNION: u8 = 5;
const KIND_ENUM: u8 = 6;
const KIND_TYPEDEF: u8 = 8;
const KIND_VOLATILE: u8 = 9;
const KIND_CONST: u8 = 10;
const KIND_RESTRICT: u8 = 11;
const KIND_FUNC: u8 = 12;
const KIND_FUNC_PROTO: u8 = 13;
const KIND_VAR: u8 = 14;
const KIND_DATASEC: u8 = 15;
const KIND_DECL_TAG: u8 = 17;
const KIND_TYPE_TAG: u8 = 18;
const KIND_ENUM64: u8 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    #[error("not BTF data (bad magic or header)")]
    Header,
    #[error("BTF type section is truncated at type {0}")]
    Truncated(usize),
    #[error("unknown BTF kind {0}")]
    Kind(u8),
}

/// One type record, decoded on demand from the raw section.
#[derive(Clone, Copy, Debug)]
struct Type {
    name: u32,
    kind: u8,
    kind_flag: bool,
    vlen: usize,
    /// Referenced type for typedef/const/volatile/ptr and friends.
    target: u32,
    /// Where the record's trailing data (struct members) starts in the type section.
    extra: usize,
}

/// The kernel's BTF kept as it is on disk plus the position of each type: a few MB, where a
/// decoded copy of every type costs several times that at start-up (peak RSS counts).
pub struct Btf {
    data: Vec<u8>,
    types: std::ops::Range<usize>,
    strings: std::ops::Range<usize>,
    /// Position of type `id` (index) in the type section; index 0 is void.
    positions: Vec<u32>,
}

fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(off..off + 4)?.try_into().ok()?))
}

/// Bytes of trailing data after a type record of `kind` with `vlen` entries.
fn extra_len(kind: u8, vlen: usize) -> Result<usize, BtfError> {
    Ok(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => vlen * 12,
        KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
        2 | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_FUNC | 16
        | KIND_TYPE_TAG => 0,
        other => return Err(BtfError::Kind(other)),
    })
}

impl Btf {
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data =
            std::fs::read(path).map_err(|e| BtfError::Read(path.display().to_string(), e))?;
        Self::parse(data)
    }

    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        let d = &data;
        let magic = d.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if magic != Some(MAGIC) {
            return Err(BtfError::Header);
        }
        let field = |off| u32_at(d, off).map(|v| v as usize).ok_or(BtfError::Header);
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (field(4)?, field(8)?, field(12)?, field(16)?, field(20)?);
        let types = hdr_len + type_off..hdr_len + type_off + type_len;
        let strings = hdr_len + str_off..hdr_len + str_off + str_len;
        if d.get(types.clone()).is_none() || d.get(strings.clone()).is_none() {
            return Err(BtfError::Header);
        }
        let section = &d[types.clone()];
        let mut positions = vec![0u32];
        let mut pos = 0;
        while pos < section.len() {
            let id = positions.len();
            let info = u32_at(section, pos + 4).ok_or(BtfError::Truncated(id))?;
            let kind = u8::try_from((info >> 24) & 0x1f).unwrap_or(0);
            let vlen = (info & 0xffff) as usize;
            positions.push(u32::try_from(pos).map_err(|_| BtfError::Truncated(id))?);
            pos += 12 + extra_len(kind, vlen)?;
            if pos > section.len() {
                return Err(BtfError::Truncated(id));
            }
        }
        Ok(Self {
            data,
            types,
            strings,
            positions,
        })
    }

    fn ty(&self, id: u32) -> Option<Type> {
        let pos = *self.positions.get(id as usize)? as usize;
        if id == 0 {
            return None;
        }
        let section = &self.data[self.types.clone()];
        let info = u32_at(section, pos + 4)?;
        Some(Type {
            name: u32_at(section, pos)?,
            kind: u8::try_from((info >> 24) & 0x1f).ok()?,
            kind_flag: info >> 31 == 1,
            vlen: (info & 0xffff) as usize,
            target: u32_at(section, pos + 8)?,
            extra: pos + 12,
        })
    }

    /// Members of a struct or union: (name, type id, bit offset).
    fn members(&self, t: Type) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        let section = &self.data[self.types.clone()];
        (0..t.vlen).filter_map(move |i| {
            let at = t.extra + i * 12;
            let offset = u32_at(section, at + 8)?;
            Some((
                u32_at(section, at)?,
                u32_at(section, at + 4)?,
                if t.kind_flag {
                    offset & 0x00ff_ffff
                } else {
                    offset
                },
            ))
        })
    }

    fn name(&self, off: u32) -> &str {
        let strings = &self.data[self.strings.clone()];
        let rest = strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<Type> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            if matches!(
                t.kind,
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
            ) {
                id = t.target;
            } else {
                return Some(t);
            }
        }
        None
    }

    /// Bit offset of `field` in a struct or union, looking inside anonymous members.
    fn find_member(&self, t: Type, field: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for (name, type_id, bit_offset) in self.members(t) {
            if name != 0 {
                if self.name(name) == field {
                    return Some(bit_offset);
                }
                continue;
            }
            let inner = self.resolve(type_id)?;
            if matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some(off) = self.find_member(inner, field, depth + 1)
            {
                return Some(bit_offset + off);
            }
        }
        None
    }

    /// The first struct called `name` (vmlinux has exactly one of each).
    fn find_struct(&self, name: &str) -> Option<Type> {
        (1..u32::try_from(self.positions.len()).ok()?)
            .filter_map(|id| self.ty(id))
            .find(|t| t.kind == KIND_STRUCT && t.name != 0 && self.name(t.name) == name)
    }

    /// Byte offset of `field` in `struct name`.
    #[must_use]
    pub fn field_offset(&self, name: &str, field: &str) -> Option<u32> {
        let bits = self.find_member(self.find_struct(name)?, field, 0)?;
        (bits % 8 == 0).then_some(bits / 8)
    }

    /// The value of the enumerator `name` of `enum enum_name`.
    #[must_use]
    pub fn enum_value(&self, enum_name: &str, name: &str) -> Option<i64> {
        let section = &self.data[self.types.clone()];
        let t = (1..u32::try_from(self.positions.len()).ok()?)
            .filter_map(|id| self.ty(id))
            .find(|t| {
                matches!(t.kind, KIND_ENUM | KIND_ENUM64)
                    && t.name != 0
                    && self.name(t.name) == enum_name
            })?;
        let entry = if t.kind == KIND_ENUM { 8 } else { 12 };
        (0..t.vlen).find_map(|i| {
            let at = t.extra + i * entry;
            if self.name(u32_at(section, at)?) != name {
                return None;
            }
            let low = u32_at(section, at + 4)?;
            Some(if t.kind == KIND_ENUM {
                i64::from(low.cast_signed())
            } else {
                (i64::from(u32_at(section, at + 8)?) << 32) | i64::from(low)
            })
        })
    }

    /// How many parameters the kernel function `name` takes.
    #[must_use]
    pub fn func_params(&self, name: &str) -> Option<usize> {
        let func = (1..u32::try_from(self.positions.len()).ok()?)
            .filter_map(|id| self.ty(id))
            .find(|t| t.kind == KIND_FUNC && self.name(t.name) == name)?;
        let proto = self.ty(func.target)?;
        (proto.kind == KIND_FUNC_PROTO).then_some(proto.vlen)
    }

    /// Where the user bytes of a `struct msghdr` are described, for the socket-level capture;
    /// `None` if this kernel's `iov_iter` is not one it knows.
    #[must_use]
    pub fn iter_offsets(&self) -> Option<IterOffsets> {
        let f = |field| self.field_offset("iov_iter", field);
        let value = |name| {
            self.enum_value("iter_type", name)
                .and_then(|v| u32::try_from(v).ok())
        };
        // 5.14 made the kind a u8 enum of its own; before, it was a bit in `type`, whose
        // lowest bit is the direction.
        let (kind, kind_mask) = match f("iter_type") {
            Some(at) => (at, 0xff),
            None => (f("type")?, !1),
        };
        Some(IterOffsets {
            valid: 1,
            msg_iter: self.field_offset("msghdr", "msg_iter")?,
            kind,
            kind_mask,
            iov_offset: f("iov_offset")?,
            ptr: f("__iov").or_else(|| f("iov"))?,
            nr_segs: f("nr_segs")?,
            iovec: value("ITER_IOVEC")?,
            ubuf: value("ITER_UBUF").unwrap_or(u32::MAX),
            pad: 0,
        })
    }

    /// Offsets from the current task to the `struct sock` of a file descriptor; `None` if any
    /// is missing.
    #[must_use]
    pub fn fd_offsets(&self) -> Option<FdOffsets> {
        Some(FdOffsets {
            valid: 1,
            task_files: self.field_offset("task_struct", "files")?,
            files_fdt: self.field_offset("files_struct", "fdt")?,
            fdt_max_fds: self.field_offset("fdtable", "max_fds")?,
            fdt_fd: self.field_offset("fdtable", "fd")?,
            file_private_data: self.field_offset("file", "private_data")?,
            socket_sk: self.field_offset("socket", "sk")?,
            sk_socket: self.field_offset("sock", "sk_socket")?,
        })
    }

    /// Offsets the socket-tuple programs need; `None` if any essential one is missing.
    #[must_use]
    pub fn sock_offsets(&self) -> Option<SockOffsets> {
        let f = |field| self.field_offset("sock_common", field);
        // `struct sock` starts with `struct sock_common __sk_common`.
        if self.field_offset("sock", "__sk_common")? != 0 {
            return None;
        }
        Some(SockOffsets {
            valid: 1,
            family: f("skc_family")?,
            num: f("skc_num")?,
            dport: f("skc_dport")?,
            rcv_saddr: f("skc_rcv_saddr")?,
            daddr: f("skc_daddr")?,
            v6_rcv_saddr: f("skc_v6_rcv_saddr").unwrap_or(0),
            v6_daddr: f("skc_v6_daddr").unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF blob: `struct s { int a; union { int b; struct { int c; int d; }; }; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0c\0d\0f\0".to_vec();
        let name = |n: &str| {
            let pos = strings
                .windows(n.len() + 2)
                .position(|w| w[0] == 0 && &w[1..=n.len()] == n.as_bytes() && w[n.len() + 1] == 0)
                .unwrap();
            u32::try_from(pos + 1).unwrap()
        };
        let mut t = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                t.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int
        push(&[name("int"), u32::from(KIND_INT) << 24, 4, 32]);
        // 2: anonymous struct { int c; int d; }
        push(&[
            0,
            (u32::from(KIND_STRUCT) << 24) | 2,
            8,
            name("c"),
            1,
            0,
            name("d"),
            1,
            32,
        ]);
        // 3: anonymous union { int b; struct 2; }
        push(&[
            0,
            (u32::from(KIND_UNION) << 24) | 2,
            8,
            name("b"),
            1,
            0,
            0,
            2,
            0,
        ]);
        // 4: struct s { int a; union 3; }
        push(&[
            name("s"),
            (u32::from(KIND_STRUCT) << 24) | 2,
            12,
            name("a"),
            1,
            0,
            0,
            3,
            32,
        ]);
        // 5: func f
        push(&[name("f"), u32::from(KIND_FUNC) << 24, 0]);
        let mut d = Vec::new();
        d.extend_from_slice(&MAGIC.to_le_bytes());
        d.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            u32::try_from(t.len()).unwrap(),
            u32::try_from(t.len()).unwrap(),
            u32::try_from(strings.len()).unwrap(),
        ] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d.extend_from_slice(&t);
        d.extend_from_slice(&strings);
        d
    }

    #[test]
    fn finds_fields_inside_anonymous_members() {
        let btf = Btf::parse(sample()).unwrap();
        assert_eq!(btf.field_offset("s", "a"), Some(0));
        assert_eq!(btf.field_offset("s", "b"), Some(4));
        assert_eq!(btf.field_offset("s", "c"), Some(4));
        assert_eq!(btf.field_offset("s", "d"), Some(8));
        assert_eq!(btf.field_offset("s", "e"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, not even close".to_vec()).is_err());
        let mut cut = sample();
        cut.truncate(40);
        assert!(Btf::parse(cut).is_err());
    }

    #[test]
    fn running_kernel_has_file_table_offsets() {
        let btf = Btf::from_file(Path::new("/sys/kernel/btf/vmlinux")).expect("kernel BTF");
        let off = btf
            .fd_offsets()
            .expect("task/files/fdtable/file/socket fields");
        // The fd array pointer follows max_fds in struct fdtable.
        assert!(off.fdt_fd > off.fdt_max_fds, "{off:?}");
        assert!(off.task_files > 0 && off.file_private_data > 0, "{off:?}");
    }

    #[test]
    fn running_kernel_has_iov_iter_layout() {
        let btf = Btf::from_file(Path::new("/sys/kernel/btf/vmlinux")).expect("kernel BTF");
        let off = btf.iter_offsets().expect("msghdr/iov_iter fields");
        // This machine's kernel (6.x): a u8 kind at the start, ITER_UBUF present, the buffer
        // pointer in the union after iov_offset.
        assert_eq!((off.kind, off.kind_mask), (0, 0xff), "{off:?}");
        assert_ne!(off.ubuf, u32::MAX, "{off:?}");
        assert_ne!(off.ubuf, off.iovec, "{off:?}");
        assert!(off.ptr > off.iov_offset && off.nr_segs > off.ptr, "{off:?}");
        // (sk, msg, len, flags) since addr_len went (6 parameters up to 5.18, then 5).
        assert_eq!(btf.func_params("tcp_recvmsg"), Some(4));
        assert_eq!(btf.func_params("tcp_sendmsg"), Some(3));
    }

    #[test]
    fn running_kernel_has_sock_common_offsets() {
        // Every kernel this agent supports ships BTF (the matrix kernels and CI's host do).
        let btf = Btf::from_file(Path::new("/sys/kernel/btf/vmlinux")).expect("kernel BTF");
        let off = btf.sock_offsets().expect("sock_common fields");
        // Layout since 2.6: skc_addrpair (8 bytes), skc_hash (4), skc_portpair (4), skc_family.
        assert_eq!(
            (off.daddr, off.rcv_saddr, off.dport, off.num, off.family),
            (0, 4, 12, 14, 16)
        );
        assert!(off.v6_daddr > off.family);
    }
}
