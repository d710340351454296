//! Integration tests of both daemons, run as real processes in temp roots.

mod postd;
mod probd;
