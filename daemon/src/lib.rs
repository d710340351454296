//! The two daemons of the suite, as libraries with thin `main`s in `src/bin/`:
//! `telemprobd` ([`probd`]: Unix socket → staged records) and `telempostd` ([`postd`]:
//! staged records → backend, spool, rate limits, journal, retention), with what both
//! share: the C command line ([`cli`]), logging and readiness notification.

pub mod cli;
pub mod logging;
pub mod notify;
pub mod postd;
pub mod probd;
