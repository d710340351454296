//! Integration tests of the kernel probes: golden oops payloads, property tests of the
//! parser, and the four binaries run against a test telemprobd socket.

mod support;

mod goldens;
mod journalprobe;
mod klogscanner;
mod parser_properties;
mod pstore;
