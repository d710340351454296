//! libtelemetry — the core of the telemetrics suite.
//!
//! Every format of the suite is implemented once, here: the [`record`] model and its
//! validation, the probe→daemon wire [`frame`], the [`staged`] file, the [`config`] (in the
//! C client's [`ini`] dialect), the [`journal`] line, the daemons' [`status`] files,
//! crashprobe's [`crashloop`] state, the [`paths`] of everything, and the [`client`] that
//! sends one record to telemprobd.

pub mod civil;
pub mod client;
pub mod config;
pub mod crashloop;
pub mod frame;
pub mod fsutil;
pub mod getopt;
pub mod header_value;
pub mod hostinfo;
pub mod ids;
pub mod ini;
pub mod journal;
pub mod paths;
pub mod record;
pub mod staged;
pub mod status;

pub use client::{is_opted_in, send_record, Ack, Delivery, SendError};
pub use config::{Config, ConfigError, ConfigSource, CrashFrames, DebuginfodUrls};
pub use frame::{decode_frame, encode_frame, Frame, FrameError};
pub use hostinfo::HostInfo;
pub use paths::Paths;
pub use record::{Header, Headers, Record, RecordError};
pub use staged::{
    encode_staged, format_staged_name, parse_staged, parse_staged_name, StagedError, StagedRecord,
    StagedSender,
};

/// The suite's version, printed by every `-V` (the C client's last release number).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
