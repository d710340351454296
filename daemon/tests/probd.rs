//! telemprobd integration tests.
