//! The `mce:mce_record` tracepoint through a private tracefs instance (the rasdaemon way),
//! for kernels without `/dev/mcelog` (`CONFIG_X86_MCELOG_LEGACY=n`).
//!
//! * A private instance (`instances/<name>`) has its own ring buffer and its own event
//!   enables, so global tracing (`tracing_on`, the top-level `events/*/enable`, other users'
//!   buffers) is never touched.
//! * The binary records of `per_cpu/cpuN/trace_pipe_raw` are decoded with the layout the
//!   kernel publishes in `events/mce/mce_record/format` (field offsets and sizes changed
//!   across kernel versions; the text form changed even more) and in `events/header_page`.
//! * On exit the event is disabled and the instance directory removed.
//!
//! Architecture Invariant: every path written by this module is inside the instance
//! directory.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::mce::{Mce, MCE_STRUCT_SIZE};

/// Largest `format` / `header_page` file read.
const MAX_FORMAT_FILE: u64 = 64 * 1024;
/// Most fields accepted from a format file.
const MAX_FIELDS: usize = 256;
/// Mask of the data length in a page's `commit` word (libtraceevent's `COMMIT_MASK`).
const COMMIT_MASK: u64 = (1 << 27) - 1;
/// `RB_MISSED_EVENTS`: events were lost before this page.
const RB_MISSED_EVENTS: u64 = 1 << 31;
/// Ring-buffer event `type_len` values.
const TYPE_PADDING: u32 = 29;
const TYPE_TIME_EXTEND: u32 = 30;
const TYPE_TIME_STAMP: u32 = 31;

#[derive(Debug, Error)]
pub enum TraceError {
    #[error("no tracefs found (tried {0})")]
    NoTracefs(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {message}")]
    BadFormat { path: PathBuf, message: String },
    #[error("tracepoint format has no field {0:?}")]
    MissingField(&'static str),
    #[error("no per-CPU trace_pipe_raw files in {0}")]
    NoCpus(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TraceError + '_ {
    move |source| TraceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One `field:` line of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
    /// `__data_loc` (dynamic array): the field holds a locator, not the value.
    pub data_loc: bool,
}

/// A parsed `events/<group>/<event>/format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFormat {
    pub name: String,
    pub id: u32,
    pub fields: Vec<Field>,
}

impl EventFormat {
    /// Parse the text of a format file.
    pub fn parse(text: &str) -> Result<EventFormat, String> {
        let mut name = String::new();
        let mut id = None;
        let mut fields = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if let Some(v) = trimmed.strip_prefix("name:") {
                name = v.trim().to_string();
            } else if let Some(v) = trimmed.strip_prefix("ID:") {
                id = Some(
                    v.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("bad ID {:?}", v.trim()))?,
                );
            } else if trimmed.starts_with("field:") {
                if fields.len() >= MAX_FIELDS {
                    return Err(format!("more than {MAX_FIELDS} fields"));
                }
                fields.push(parse_field(trimmed)?);
            }
        }
        let id = id.ok_or("no ID line")?;
        if fields.is_empty() {
            return Err("no fields".into());
        }
        Ok(EventFormat { name, id, fields })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Unsigned value of field `name` in one event's data; `None` when the field is absent,
    /// is a dynamic array, has an unusual size, or lies outside `data`.
    pub fn value(&self, data: &[u8], name: &str) -> Option<u64> {
        let f = self.field(name)?;
        if f.data_loc {
            return None;
        }
        let bytes = data.get(f.offset..f.offset.checked_add(f.size)?)?;
        Some(match f.size {
            1 => u64::from(bytes[0]),
            2 => u64::from(u16::from_ne_bytes([bytes[0], bytes[1]])),
            4 => u64::from(u32::from_ne_bytes(bytes.try_into().ok()?)),
            8 => u64::from_ne_bytes(bytes.try_into().ok()?),
            _ => return None,
        })
    }

    /// Check that the fields the probe cannot do without are described.
    pub fn check_mce_record(&self) -> Result<(), TraceError> {
        for required in ["common_type", "status", "mcgstatus", "bank"] {
            if self.field(required).is_none() {
                return Err(TraceError::MissingField(required));
            }
        }
        Ok(())
    }

    /// The `struct mce` an `mce_record` event describes, or `None` when `data` is another
    /// event (its `common_type` is not this format's ID). Fields the kernel does not
    /// provide stay 0.
    pub fn to_mce(&self, data: &[u8]) -> Option<Mce> {
        if self.value(data, "common_type")? != u64::from(self.id) {
            return None;
        }
        let v = |n: &str| self.value(data, n).unwrap_or(0);
        Some(Mce {
            status: v("status"),
            misc: v("misc"),
            addr: v("addr"),
            mcgstatus: v("mcgstatus"),
            ip: v("ip"),
            tsc: v("tsc"),
            time: v("walltime"),
            cpuvendor: v("cpuvendor") as u8,
            inject_flags: 0,
            cpuid: v("cpuid") as u32,
            cs: v("cs") as u8,
            bank: v("bank") as u8,
            cpu: 0,
            // A tracepoint record is always complete.
            finished: 1,
            extcpu: v("cpu") as u32,
            socketid: v("socketid") as u32,
            apicid: v("apicid") as u32,
            mcgcap: v("mcgcap"),
            synd: v("synd"),
            ipid: v("ipid"),
            ppin: v("ppin"),
            microcode: v("microcode") as u32,
            kflags: 0,
            record_len: MCE_STRUCT_SIZE,
        })
    }
}

/// `field:unsigned int cpu;\toffset:96;\tsize:4;\tsigned:0;`
fn parse_field(line: &str) -> Result<Field, String> {
    let mut parts = line.split(';').map(str::trim);
    let decl = parts
        .next()
        .and_then(|d| d.strip_prefix("field:"))
        .ok_or_else(|| format!("bad field line {line:?}"))?
        .trim();
    let data_loc = decl.starts_with("__data_loc");
    let last = decl
        .split_whitespace()
        .last()
        .ok_or_else(|| format!("field without a name: {line:?}"))?;
    let name = last.split('[').next().unwrap_or(last).to_string();
    if name.is_empty() {
        return Err(format!("field without a name: {line:?}"));
    }
    let (mut offset, mut size, mut signed) = (None, None, false);
    for p in parts {
        let num = |v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad number in {line:?}"))
        };
        if let Some(v) = p.strip_prefix("offset:") {
            offset = Some(num(v)?);
        } else if let Some(v) = p.strip_prefix("size:") {
            size = Some(num(v)?);
        } else if let Some(v) = p.strip_prefix("signed:") {
            signed = v.trim() == "1";
        }
    }
    Ok(Field {
        name,
        offset: offset.ok_or_else(|| format!("no offset in {line:?}"))?,
        size: size.ok_or_else(|| format!("no size in {line:?}"))?,
        signed,
        data_loc,
    })
}

/// Where the `commit` word and the data lie in a ring-buffer page (`events/header_page`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLayout {
    pub commit_offset: usize,
    pub commit_size: usize,
    pub data_offset: usize,
}

impl Default for PageLayout {
    /// The 64-bit layout: `u64 timestamp; local_t commit; char data[]` at 0, 8, 16.
    fn default() -> Self {
        PageLayout {
            commit_offset: 8,
            commit_size: 8,
            data_offset: 16,
        }
    }
}

impl PageLayout {
    /// From the text of `events/header_page`; missing fields keep the 64-bit defaults.
    pub fn parse(text: &str) -> PageLayout {
        let mut layout = PageLayout::default();
        for line in text.lines() {
            let Ok(f) = parse_field(line.trim().replace("field: ", "field:").as_str()) else {
                continue;
            };
            match f.name.as_str() {
                "commit" if matches!(f.size, 4 | 8) => {
                    layout.commit_offset = f.offset;
                    layout.commit_size = f.size;
                }
                "data" => layout.data_offset = f.offset,
                _ => {}
            }
        }
        layout
    }
}

/// Events of one ring-buffer page.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PageEvents<'a> {
    /// The data of each event (starting with its `common_type`), in order.
    pub events: Vec<&'a [u8]>,
    /// The kernel dropped events before this page (ring buffer overrun).
    pub missed_events: bool,
    /// The page ended in a malformed event header; the events before it are kept.
    pub malformed: bool,
}

/// Decode one page read from `trace_pipe_raw`.
pub fn parse_page<'a>(page: &'a [u8], layout: &PageLayout) -> PageEvents<'a> {
    let mut out = PageEvents::default();
    let commit = match layout.commit_size {
        4 => page
            .get(layout.commit_offset..layout.commit_offset + 4)
            .map(|b| u64::from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))),
        _ => page
            .get(layout.commit_offset..layout.commit_offset + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_ne_bytes),
    };
    let Some(commit) = commit else {
        out.malformed = true;
        return out;
    };
    out.missed_events = commit & RB_MISSED_EVENTS != 0;
    let len = (commit & COMMIT_MASK) as usize;
    let Some(data) = page.get(layout.data_offset..) else {
        out.malformed = true;
        return out;
    };
    if len > data.len() {
        out.malformed = true;
    }
    let data = &data[..len.min(data.len())];
    let u32_at = |pos: usize| -> Option<u32> {
        data.get(pos..pos + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut pos = 0usize;
    while pos + 4 <= data.len() {
        let Some(header) = u32_at(pos) else { break };
        let type_len = header & 0x1f;
        let time_delta = header >> 5;
        let next = match type_len {
            0 => {
                let Some(l) = u32_at(pos + 4).map(|l| l as usize) else {
                    out.malformed = true;
                    break;
                };
                if l < 4 {
                    out.malformed = true;
                    break;
                }
                let start = pos + 8;
                let Some(ev) = data.get(start..start + (l - 4)) else {
                    out.malformed = true;
                    break;
                };
                out.events.push(ev);
                start + ((l - 4 + 3) & !3)
            }
            TYPE_PADDING => {
                // A null padding event (delta 0) ends the page.
                if time_delta == 0 {
                    break;
                }
                let Some(l) = u32_at(pos + 4) else { break };
                pos + 4 + l as usize
            }
            TYPE_TIME_EXTEND | TYPE_TIME_STAMP => pos + 8,
            n => {
                let start = pos + 4;
                let end = start + n as usize * 4;
                let Some(ev) = data.get(start..end) else {
                    out.malformed = true;
                    break;
                };
                out.events.push(ev);
                end
            }
        };
        if next <= pos {
            out.malformed = true;
            break;
        }
        pos = next;
    }
    out
}

/// Read a small text file (format, header_page) with a size bound.
fn read_small(path: &Path) -> Result<String, TraceError> {
    let mut s = String::new();
    File::open(path)
        .and_then(|f| f.take(MAX_FORMAT_FILE).read_to_string(&mut s))
        .map_err(io_err(path))?;
    Ok(s)
}

/// The tracefs mount to use: `explicit`, else the first of `sys/kernel/tracing` and
/// `sys/kernel/debug/tracing` (under `sys_dir`'s parent root) that has an `instances` dir.
pub fn find_tracefs(sys_dir: &Path, explicit: Option<&Path>) -> Result<PathBuf, TraceError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => vec![
            sys_dir.join("kernel/tracing"),
            sys_dir.join("kernel/debug/tracing"),
        ],
    };
    candidates
        .iter()
        .find(|c| c.join("instances").is_dir())
        .cloned()
        .ok_or_else(|| {
            TraceError::NoTracefs(
                candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
}

/// A private tracefs instance with `mce:mce_record` enabled. Dropping it disables the
/// event and removes the instance.
pub struct Instance {
    dir: PathBuf,
    enabled: bool,
    closed: bool,
}

impl Instance {
    /// Create (or, after a crash of an earlier run, reuse) `instances/<name>`.
    pub fn create(tracefs: &Path, name: &str) -> Result<Instance, TraceError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(TraceError::BadFormat {
                path: tracefs.to_path_buf(),
                message: format!("invalid instance name {name:?}"),
            });
        }
        let dir = tracefs.join("instances").join(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                tracing::info!("reusing tracefs instance {}", dir.display());
            }
            Err(e) => return Err(io_err(&dir)(e)),
        }
        Ok(Instance {
            dir,
            enabled: false,
            closed: false,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn event_dir(&self) -> PathBuf {
        self.dir.join("events/mce/mce_record")
    }

    /// The event's binary layout.
    pub fn format(&self) -> Result<EventFormat, TraceError> {
        let path = self.event_dir().join("format");
        let fmt =
            EventFormat::parse(&read_small(&path)?).map_err(|message| TraceError::BadFormat {
                path: path.clone(),
                message,
            })?;
        fmt.check_mce_record()?;
        Ok(fmt)
    }

    /// The page layout (`events/header_page`), defaulting to the 64-bit one.
    pub fn page_layout(&self) -> PageLayout {
        read_small(&self.dir.join("events/header_page"))
            .map(|t| PageLayout::parse(&t))
            .unwrap_or_default()
    }

    /// Wake readers on every event (the default, 50 %, would delay rare MCEs), then enable
    /// the event in this instance only.
    pub fn enable(&mut self) -> Result<(), TraceError> {
        let percent = self.dir.join("buffer_percent");
        if percent.exists() {
            if let Err(e) = write_control(&percent, "0") {
                tracing::warn!("cannot set {}: {e}", percent.display());
            }
        }
        let enable = self.event_dir().join("enable");
        write_control(&enable, "1").map_err(io_err(&enable))?;
        self.enabled = true;
        Ok(())
    }

    /// `per_cpu/cpuN/trace_pipe_raw`, sorted by CPU number.
    pub fn cpu_pipes(&self) -> Result<Vec<(u32, PathBuf)>, TraceError> {
        let per_cpu = self.dir.join("per_cpu");
        let mut out: Vec<(u32, PathBuf)> = std::fs::read_dir(&per_cpu)
            .map_err(io_err(&per_cpu))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let cpu = name.strip_prefix("cpu")?.parse::<u32>().ok()?;
                let pipe = e.path().join("trace_pipe_raw");
                pipe.exists().then_some((cpu, pipe))
            })
            .collect();
        out.sort();
        if out.is_empty() {
            return Err(TraceError::NoCpus(per_cpu));
        }
        Ok(out)
    }

    /// Disable the event and remove the instance. Errors are logged: nothing more can be
    /// done about them on the way out.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.enabled {
            let enable = self.event_dir().join("enable");
            if let Err(e) = write_control(&enable, "0") {
                tracing::warn!("cannot disable {}: {e}", enable.display());
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            tracing::warn!("cannot remove tracefs instance {}: {e}", self.dir.display());
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.close();
    }
}

/// Write a tracefs control file (never creates it: a missing control file is an error).
fn write_control(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write;
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(value.as_bytes())
}
