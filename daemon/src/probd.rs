//! telemprobd: receives records on a Unix socket and stages them.
