//! The crate's one module with `unsafe` code: a read-only memory map of a file the store
//! never changes once it is written, so that reading it neither copies it nor allocates its
//! length (a sparse file of any size costs nothing until its pages are read).
//!
//! Used for the checkpoint (`checkpoint.rs`), through [`crate::fs::FileHandle::map`].

// The lint is denied for the whole crate (Cargo.toml); this module alone may map files.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;

/// A file's bytes, mapped read-only.
#[derive(Debug)]
pub(crate) struct Mapped(memmap2::Mmap);

impl Mapped {
    /// Maps the whole of `file`, read-only. Only for files the store wrote whole and never
    /// opens for writing again (the checkpoint).
    pub(crate) fn of(file: &File) -> io::Result<Mapped> {
        // SAFETY: a mapping is undefined behaviour to read (a SIGBUS) if the file shrinks
        // while it is mapped, and returns changing bytes if the file is written. The files
        // mapped here are never written once they have their name: the checkpoint is written
        // whole to `CHECKPOINT.tmp`, synced, and renamed to `CHECKPOINT`, and no code opens
        // `CHECKPOINT` for writing, truncates it or renames over it while a store has it
        // mapped (a store rewrites it only at its close, after every mapping of it is gone,
        // by a rename that leaves a mapped inode whole). Removing it (the first write after
        // open) unlinks the name only: the mapped inode and its bytes stay until unmapped.
        // A writable store holds the folder's lock, so no other store writes the folder;
        // what the store cannot rule out is a program that ignores the lock and truncates
        // the file in place, which the store documents as outside what it survives
        // (docs/FORMAT.md, "What the store assumes of the disk"), like any edit of its files
        // while it runs. The mapping is private to this value and read-only.
        let map = unsafe { memmap2::Mmap::map(file)? };
        Ok(Mapped(map))
    }
}

impl std::ops::Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}
