//! Compiling and running C programs against the built libtelemetry.so.4.
