//! Typed access to the programs and maps of a loaded object, for the loader, the attach plan
//! and the write side.

use aya::{Ebpf, programs::ProgramError};

#[derive(Debug, thiserror::Error)]
#[error("eBPF map `{name}` is missing or of the wrong type: {reason}")]
pub struct MapError {
    pub name: &'static str,
    pub reason: String,
}

/// The program `name` as its type (`TracePoint`, `SkMsg`, ...): `NotLoaded` if the object has
/// no such program, the conversion error if it is of another type.
pub fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, ProgramError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProgramError::NotLoaded)?
        .try_into()
}

/// Takes the map `name` out of the object as its type (`RingBuf`, `Array`, ...).
pub fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, MapError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| MapError {
        name,
        reason: "not in the object".into(),
    })?;
    T::try_from(map).map_err(|e| MapError {
        name,
        reason: e.to_string(),
    })
}

/// Puts program `fd` into slot `slot` of the program array `map` (the target of a tail call).
pub fn set_tail_call(
    ebpf: &mut Ebpf,
    map: &'static str,
    slot: u32,
    fd: std::io::Result<aya::programs::ProgramFd>,
) -> Result<(), MapError> {
    let failed = |reason: String| MapError { name: map, reason };
    let fd = fd.map_err(|e| failed(e.to_string()))?;
    let mut progs: aya::maps::ProgramArray<_> = aya::maps::ProgramArray::try_from(
        ebpf.map_mut(map)
            .ok_or_else(|| failed("not in the object".into()))?,
    )
    .map_err(|e| failed(e.to_string()))?;
    progs.set(slot, &fd, 0).map_err(|e| failed(e.to_string()))
}
