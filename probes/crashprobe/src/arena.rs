//! Owner of the bytes that parsed modules borrow: memory-mapped files and decompressed debug
//! sections. Everything lives until the arena is dropped, so `object`, `gimli` and
//! `addr2line` can work on plain slices without copying.

use std::cell::RefCell;

use memmap2::Mmap;

#[derive(Default)]
pub struct Arena {
    maps: RefCell<Vec<Mmap>>,
    bufs: RefCell<Vec<Box<[u8]>>>,
}

impl Arena {
    pub fn new() -> Arena {
        Arena::default()
    }

    /// Keep `map` alive for the arena's lifetime and return its bytes.
    pub fn keep_map(&self, map: Mmap) -> &[u8] {
        let (ptr, len) = (map.as_ptr(), map.len());
        self.maps.borrow_mut().push(map);
        // SAFETY: the mapping's pages do not move when the `Mmap` handle moves into the
        // vector; they are unmapped only when the arena drops, which the returned borrow of
        // `self` outlives not. Nothing writes through the read-only mapping.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// Keep `buf` alive for the arena's lifetime and return its bytes.
    pub fn keep_vec(&self, buf: Vec<u8>) -> &[u8] {
        let boxed = buf.into_boxed_slice();
        let (ptr, len) = (boxed.as_ptr(), boxed.len());
        self.bufs.borrow_mut().push(boxed);
        // SAFETY: the boxed slice's heap allocation stays put when the box moves into the
        // vector and is freed only when the arena drops; no `&mut` to it is ever created.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}
