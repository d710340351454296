//! telempostd integration tests.
