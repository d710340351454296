//! What telemprobd and telempostd share: the C command line ([`cli`]), log setup
//! ([`logging`]) and readiness notification to systemd ([`notify`]). A crate of its own so
//! that each daemon compiles only its own dependencies (telemprobd no HTTP or TLS).

pub mod cli;
pub mod logging;
pub mod notify;
