//! swupdprobe (in progress).
