//! C ABI (filled by the foundation work).
