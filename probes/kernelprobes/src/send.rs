//! Building and sending one record through `libtelemetry::client`.

use std::path::{Path, PathBuf};

use libtelemetry::client::{send_record, Delivery};
use libtelemetry::{Config, HostInfo, Paths, Record};

use crate::error::ProbeError;

/// Payload format version of every record these probes send.
pub const PAYLOAD_VERSION: u32 = 1;

/// Where records go: the config's socket, with the host facts of the moment.
#[derive(Debug, Clone)]
pub struct Sender {
    paths: Paths,
    config: Config,
    /// The `-f` file, named in each frame so telemprobd reads the same config.
    cfg_path: Option<String>,
}

impl Sender {
    /// Load the config (`explicit` = the `-f` file, else the usual selection).
    pub fn new(paths: Paths, explicit: Option<&Path>) -> Result<Sender, ProbeError> {
        let explicit = explicit.map(absolute);
        let (config, _) = Config::load(&paths, explicit.as_deref())?;
        let cfg_path = explicit.and_then(|p| p.to_str().map(str::to_string));
        Ok(Sender {
            paths,
            config,
            cfg_path,
        })
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub fn socket_path(&self) -> &Path {
        &self.config.socket_path
    }

    /// Whether the host turned the privacy filters off (register values may be sent).
    pub fn privacy_filters_disabled(&self) -> bool {
        std::fs::symlink_metadata(self.paths.no_privacy_filters_file()).is_ok()
    }

    /// Create, fill and send one record.
    pub fn send(
        &self,
        classification: &str,
        severity: u32,
        payload: &str,
    ) -> Result<Delivery, ProbeError> {
        let host = HostInfo::collect(&self.paths);
        let mut record = Record::new(severity, classification, PAYLOAD_VERSION, &host)?;
        record.set_payload(payload.as_bytes())?;
        Ok(send_record(
            &self.paths,
            &self.config.socket_path,
            &record,
            self.cfg_path.as_deref(),
        )?)
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}
