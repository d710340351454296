//! Random 32-hex ids (event ids, machine ids, journal record ids), §1.4.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// 32 lower-case hex characters from 16 random bytes.
///
/// Uses `getrandom(2)`; falls back to `/dev/urandom` (opened `O_NOFOLLOW`, as in C), and as a
/// last resort to time/pid/counter mixing so that a record is never refused for want of
/// entropy (ids identify records; they are not secrets).
pub fn random_id() -> String {
    let bytes = random_bytes();
    let mut s = String::with_capacity(32);
    for b in bytes {
        s.push(char::from(HEX[(b >> 4) as usize]));
        s.push(char::from(HEX[(b & 0xf) as usize]));
    }
    s
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn random_bytes() -> [u8; 16] {
    let mut buf = [0u8; 16];
    // SAFETY: the buffer is valid for 16 bytes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == 16 {
        return buf;
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open("/dev/urandom")
    {
        if f.read_exact(&mut buf).is_ok() {
            return buf;
        }
    }
    fallback_bytes()
}

fn fallback_bytes() -> [u8; 16] {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(8) {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_lower_hex_and_differ() {
        let a = random_id();
        let b = random_id();
        assert!(crate::record::validate_event_id(&a).is_ok());
        assert_ne!(a, b);
        let f = fallback_bytes();
        assert_ne!(f, fallback_bytes());
    }
}
