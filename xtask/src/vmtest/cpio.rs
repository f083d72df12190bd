//! A minimal writer of the `newc` cpio format the kernel unpacks as its initramfs.
//!
//! Written here rather than with `find | cpio`: cpio is not on a fresh machine, and the archive
//! can hold /dev/console (a device node, which creating on the host would need mknod) and
//! root-owned files whatever user builds it.

use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, Result};

enum Entry {
    Dir,
    File { data: Vec<u8>, executable: bool },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// Entries by path (no leading `/`); the map's order puts every directory before its contents.
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    fn insert(&mut self, path: &str, entry: Entry) {
        let path = path.trim_start_matches('/');
        // Parent directories first, so the kernel can create each entry.
        let mut parent = Path::new(path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            self.entries
                .entry(dir.to_string_lossy().into_owned())
                .or_insert(Entry::Dir);
            parent = dir.parent();
        }
        self.entries.insert(path.to_owned(), entry);
    }

    pub fn dir(&mut self, path: &str) {
        self.insert(path, Entry::Dir);
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, executable: bool) {
        self.insert(path, Entry::File { data, executable });
    }

    /// Copies a host file (following symlinks) to `path`.
    pub fn copy(&mut self, path: &str, from: &Path) -> Result<()> {
        let data = fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
        self.file(path, data, true);
        Ok(())
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Entry::Symlink(target.to_owned()));
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        self.insert(path, Entry::CharDev { major, minor });
    }

    /// Writes the archive to `out`; returns its size in bytes.
    pub fn write(&self, out: &Path) -> Result<u64> {
        let mut bytes = Vec::new();
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (mode, rdev, data): (u32, _, &[u8]) = match entry {
                Entry::Dir => (0o040_755, (0, 0), &[]),
                Entry::File { data, executable } => (
                    if *executable { 0o100_755 } else { 0o100_644 },
                    (0, 0),
                    data,
                ),
                Entry::Symlink(target) => (0o120_777, (0, 0), target.as_bytes()),
                Entry::CharDev { major, minor } => (0o020_600, (*major, *minor), &[]),
            };
            header(&mut bytes, ino, mode, rdev, data.len(), path);
            bytes.extend_from_slice(data);
            pad4(&mut bytes);
        }
        header(&mut bytes, 0, 0, (0, 0), 0, "TRAILER!!!");
        fs::write(out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
        Ok(bytes.len() as u64)
    }
}

/// `070701`, then 13 fields of 8 hex digits, then the name with its NUL, padded to 4 bytes.
fn header(out: &mut Vec<u8>, ino: u32, mode: u32, rdev: (u32, u32), size: usize, name: &str) {
    let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        u32::try_from(size).expect("initramfs files are far below 4 GiB"),
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        u32::try_from(name.len() + 1).expect("short names"),
        0, // check
    ];
    let mut text = String::from("070701");
    for field in fields {
        let _ = write!(text, "{field:08x}");
    }
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_parents_and_pads() {
        let mut a = Archive::default();
        a.file("/bin/x", b"abc".to_vec(), true);
        assert_eq!(a.entries.keys().collect::<Vec<_>>(), ["bin", "bin/x"]);
        let mut out = Vec::new();
        header(&mut out, 1, 0o100_755, (0, 0), 3, "bin/x");
        // 110 header bytes + "bin/x\0" = 116, already a multiple of 4.
        assert_eq!(out.len(), 116);
        assert!(out.starts_with(b"07070100000001000081ed"));
    }
}
