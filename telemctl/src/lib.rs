//! telemctl.
