//! The record as C sees it: `struct telem_ref` and the `struct telem_record` layout of the C
//! library (`char *headers[15]; char *payload; size_t header_size; size_t payload_size;`),
//! which existing C code reads directly (`ref->record->headers[i]`).
//!
//! A [`RecordBox`] owns one record: the C-visible [`TelemRecord`] as its first field (so a
//! `*mut TelemRecord` handed to C is also a `*mut RecordBox`), the Rust [`Record`] that is
//! validated and encoded, and the NUL-terminated C copies of the header lines and payload.

use std::ffi::c_char;

use libtelemetry::record::{Header, HEADER_NAMES, NUM_HEADERS};
use libtelemetry::{Record, RecordError};

/// `struct telem_record`.
#[repr(C)]
pub struct TelemRecord {
    pub headers: [*mut c_char; NUM_HEADERS],
    pub payload: *mut c_char,
    pub header_size: usize,
    pub payload_size: usize,
}

/// `struct telem_ref`.
#[repr(C)]
pub struct TelemRef {
    pub record: *mut TelemRecord,
}

/// A heap byte buffer handed out to C by raw pointer; freed on drop.
struct CBuf {
    ptr: *mut [u8],
}

impl CBuf {
    fn new(bytes: Vec<u8>) -> CBuf {
        CBuf {
            ptr: Box::into_raw(bytes.into_boxed_slice()),
        }
    }

    /// Pointer to byte `offset` of the buffer.
    fn at(&self, offset: usize) -> *mut c_char {
        debug_assert!(offset < self.ptr.len());
        // SAFETY: `offset` is within the live allocation owned by `self`.
        unsafe { self.ptr.cast::<u8>().add(offset).cast() }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` came from `Box::into_raw` and is only freed in `drop`; the `&mut self`
        // borrow keeps this the only Rust reference (C only reads through its copies).
        unsafe { &mut *self.ptr }
    }
}

impl Drop for CBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `Box::into_raw` and is dropped exactly once, here.
        drop(unsafe { Box::from_raw(self.ptr) });
    }
}

/// Owner of one record handed to C.
#[repr(C)]
pub struct RecordBox {
    /// Must stay the first field: C holds a pointer to it, which is cast back on free.
    c: TelemRecord,
    record: Record,
    /// The 15 lines `"name: value\n\0"`, back to back.
    header_text: CBuf,
    /// Byte offset of each line in `header_text`.
    header_offsets: [usize; NUM_HEADERS],
    /// `payload` + NUL, once set.
    payload_text: Option<CBuf>,
}

impl RecordBox {
    /// Box `record` and return the pointer C keeps (`ref->record`).
    pub fn into_raw(record: Record) -> *mut TelemRecord {
        let mut b = Box::new(RecordBox {
            c: TelemRecord {
                headers: [std::ptr::null_mut(); NUM_HEADERS],
                payload: std::ptr::null_mut(),
                header_size: 0,
                payload_size: 0,
            },
            record,
            header_text: CBuf::new(Vec::new()),
            header_offsets: [0; NUM_HEADERS],
            payload_text: None,
        });
        b.rebuild_headers();
        Box::into_raw(b).cast()
    }

    /// Take back ownership of a pointer made by [`RecordBox::into_raw`].
    ///
    /// # Safety
    /// `ptr` must come from [`RecordBox::into_raw`] and not have been freed.
    pub unsafe fn from_raw(ptr: *mut TelemRecord) -> Box<RecordBox> {
        // SAFETY: per the contract; `RecordBox` is `repr(C)` with `TelemRecord` first.
        unsafe { Box::from_raw(ptr.cast::<RecordBox>()) }
    }

    /// The record behind a pointer made by [`RecordBox::into_raw`].
    ///
    /// # Safety
    /// `ptr` must come from [`RecordBox::into_raw`], not have been freed, and not be used
    /// elsewhere for the lifetime of the returned reference.
    pub unsafe fn from_ptr<'a>(ptr: *mut TelemRecord) -> &'a mut RecordBox {
        // SAFETY: per the contract.
        unsafe { &mut *ptr.cast::<RecordBox>() }
    }

    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Write every header line into a fresh buffer and point `headers[]` at it.
    fn rebuild_headers(&mut self) {
        let mut text = Vec::with_capacity(768);
        for (i, (name, value)) in HEADER_NAMES.iter().zip(&self.record.headers.0).enumerate() {
            self.header_offsets[i] = text.len();
            text.extend_from_slice(name.as_bytes());
            text.extend_from_slice(b": ");
            text.extend_from_slice(value.as_bytes());
            text.extend_from_slice(b"\n\0");
        }
        self.c.header_size = text.len() - NUM_HEADERS;
        self.header_text = CBuf::new(text);
        for i in 0..NUM_HEADERS {
            self.c.headers[i] = self.header_text.at(self.header_offsets[i]);
        }
    }

    /// `tm_set_event_id`. The id has a fixed length, so the line is rewritten in place and
    /// pointers C may have kept to `headers[]` stay valid.
    pub fn set_event_id(&mut self, id: &str) -> Result<(), RecordError> {
        let old_len = self.record.headers.get(Header::EventId).len();
        self.record.set_event_id(id)?;
        if old_len != id.len() {
            self.rebuild_headers();
            return Ok(());
        }
        let i = Header::EventId as usize;
        let start = self.header_offsets[i] + Header::EventId.name().len() + 2;
        self.header_text.bytes_mut()[start..start + id.len()].copy_from_slice(id.as_bytes());
        Ok(())
    }

    /// `tm_set_payload`: validated copy; replaces (and frees) an earlier payload.
    pub fn set_payload(&mut self, payload: &[u8]) -> Result<(), RecordError> {
        self.record.set_payload(payload)?;
        let mut text = Vec::with_capacity(payload.len() + 1);
        text.extend_from_slice(payload);
        text.push(0);
        let buf = CBuf::new(text);
        self.c.payload = buf.at(0);
        self.c.payload_size = payload.len();
        self.payload_text = Some(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libtelemetry::HostInfo;
    use std::ffi::CStr;

    fn line(r: &TelemRecord, i: usize) -> String {
        // SAFETY: headers point at NUL-terminated lines owned by the box.
        unsafe { CStr::from_ptr(r.headers[i]) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn c_view_matches_the_record() {
        let rec = Record::new(9, "a/b/c", 7, &HostInfo::fixed_for_tests()).unwrap();
        let ptr = RecordBox::into_raw(rec.clone());
        // SAFETY: fresh pointer from into_raw.
        let c = unsafe { &*ptr };
        assert_eq!(line(c, 1), "classification: a/b/c\n");
        assert_eq!(line(c, 2), "severity: 4\n");
        assert_eq!(c.header_size, rec.headers.block().len());
        assert!(c.payload.is_null());
        // SAFETY: same pointer, no other reference in use.
        let b = unsafe { RecordBox::from_ptr(ptr) };
        let kept = c.headers[14];
        b.set_event_id("0123456789abcdef0123456789abcdef").unwrap();
        assert!(b.set_event_id("nope").is_err());
        // SAFETY: the line was rewritten in place; `kept` is still valid.
        let text = unsafe { CStr::from_ptr(kept) }.to_str().unwrap();
        assert_eq!(text, "event_id: 0123456789abcdef0123456789abcdef\n");
        b.set_payload(b"one").unwrap();
        b.set_payload(b"second").unwrap();
        assert!(b.set_payload(b"bad\x01").is_err());
        // SAFETY: payload points at a NUL-terminated copy.
        let p = unsafe { CStr::from_ptr(b.c.payload) };
        assert_eq!(p.to_bytes(), b"second");
        assert_eq!(b.c.payload_size, 6);
        assert_eq!(b.record().payload, b"second");
        // SAFETY: the pointer is freed exactly once.
        drop(unsafe { RecordBox::from_raw(ptr) });
    }
}
