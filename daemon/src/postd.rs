//! telempostd: delivers staged records to the backend.
