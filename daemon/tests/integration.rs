//! Integration tests of both daemons, run as real processes in temp roots.

mod cli;
mod postd;
mod probd;
