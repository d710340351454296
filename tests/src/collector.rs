//! An in-process HTTP collector on loopback that validates requests like the public telemetrics-backend collector.
