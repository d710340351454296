//! thermalprobe (in progress).
