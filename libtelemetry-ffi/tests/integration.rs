//! C-ABI tests: C programs compiled with the system compiler against the built
//! `libtelemetry.so` and `include/telemetry.h`, and checks of the built ELF file.

mod cabi;
