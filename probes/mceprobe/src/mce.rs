//! The kernel's `struct mce` (x86 UAPI) as read from `/dev/mcelog`, and the classification
//! the Clear Linux mcelog telemetry patch gave each record.
//!
//! Records are sized by the kernel (`MCE_GET_RECORD_LEN`), not by this program: a field is
//! read only when the record holds all of its bytes, and the text layout prints a field only
//! when `record_len > offsetof(field)`, exactly as mcelog guards it.

use thiserror::Error;

/// `sizeof(struct mce)` of current kernels (up to and including `kflags`).
pub const MCE_STRUCT_SIZE: usize = 128;
/// Smallest record accepted: it must at least hold `bank`, `cpu` and `finished`.
pub const MIN_RECORD_LEN: usize = 68;
/// Largest record length believed from the kernel or a flag (sanity bound).
pub const MAX_RECORD_LEN: usize = 4096;

/// `bank` value of the fake thermal records of kernels before 4.11.
pub const MCE_THERMAL_BANK: u8 = 128;
/// First "extended" bank number (not a hardware bank).
pub const MCE_EXTENDED_BANK: u8 = 128;
/// Bank number the kernel uses for "timeout waiting for other CPUs".
pub const MCE_TIMEOUT_BANK: u8 = MCE_EXTENDED_BANK + 90;

// MCi_STATUS bits.
pub const MCI_STATUS_VAL: u64 = 1 << 63;
pub const MCI_STATUS_OVER: u64 = 1 << 62;
pub const MCI_STATUS_UC: u64 = 1 << 61;
pub const MCI_STATUS_EN: u64 = 1 << 60;
pub const MCI_STATUS_MISCV: u64 = 1 << 59;
pub const MCI_STATUS_ADDRV: u64 = 1 << 58;
pub const MCI_STATUS_PCC: u64 = 1 << 57;
pub const MCI_STATUS_S: u64 = 1 << 56;
pub const MCI_STATUS_AR: u64 = 1 << 55;
pub const MCI_STATUS_FWST: u64 = 1 << 37;

// MCG_STATUS bits.
pub const MCG_STATUS_RIPV: u64 = 1 << 0;
pub const MCG_STATUS_EIPV: u64 = 1 << 1;
pub const MCG_STATUS_MCIP: u64 = 1 << 2;
pub const MCG_STATUS_LMCES: u64 = 1 << 3;

// MCG_CAP bits.
pub const MCG_TES_P: u64 = 1 << 11;
pub const MCG_SER_P: u64 = 1 << 24;

/// Byte offsets of `struct mce` fields (x86 UAPI `asm/mce.h`).
pub mod offset {
    pub const STATUS: usize = 0;
    pub const MISC: usize = 8;
    pub const ADDR: usize = 16;
    pub const MCGSTATUS: usize = 24;
    pub const IP: usize = 32;
    pub const TSC: usize = 40;
    pub const TIME: usize = 48;
    pub const CPUVENDOR: usize = 56;
    pub const INJECT_FLAGS: usize = 57;
    pub const CPUID: usize = 60;
    pub const CS: usize = 64;
    pub const BANK: usize = 65;
    pub const CPU: usize = 66;
    pub const FINISHED: usize = 67;
    pub const EXTCPU: usize = 68;
    pub const SOCKETID: usize = 72;
    pub const APICID: usize = 76;
    pub const MCGCAP: usize = 80;
    pub const SYND: usize = 88;
    pub const IPID: usize = 96;
    pub const PPIN: usize = 104;
    pub const MICROCODE: usize = 112;
    pub const KFLAGS: usize = 120;
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MceError {
    #[error("record length {0} is outside {MIN_RECORD_LEN}..={MAX_RECORD_LEN}")]
    BadRecordLen(usize),
    #[error("record has {actual} bytes, expected {expected}")]
    Truncated { expected: usize, actual: usize },
}

/// One machine-check record. Fields the record was too short to hold are 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mce {
    pub status: u64,
    pub misc: u64,
    pub addr: u64,
    pub mcgstatus: u64,
    pub ip: u64,
    pub tsc: u64,
    /// Wall-clock seconds when the error was logged.
    pub time: u64,
    pub cpuvendor: u8,
    pub inject_flags: u8,
    pub cpuid: u32,
    pub cs: u8,
    pub bank: u8,
    /// Legacy 8-bit CPU number; `extcpu` wins when non-zero.
    pub cpu: u8,
    pub finished: u8,
    pub extcpu: u32,
    pub socketid: u32,
    pub apicid: u32,
    pub mcgcap: u64,
    pub synd: u64,
    pub ipid: u64,
    pub ppin: u64,
    pub microcode: u32,
    pub kflags: u64,
    /// The record length this record came with (the kernel's `sizeof(struct mce)`).
    pub record_len: usize,
}

/// Classification and severity of one record, as the mcelog telemetry patch chose them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// The last segment of `org.clearlinux/mce/<class>`.
    pub class: &'static str,
    pub severity: u32,
}

/// `arstate[(status >> 55) & 3]` of mcelog's `p4.c`.
const ARSTATE: [&str; 4] = ["UCNA", "AR", "SRAO", "SRAR"];

impl Mce {
    /// Decode one record of `record_len` bytes. `bytes` must hold exactly `record_len`.
    pub fn parse(bytes: &[u8], record_len: usize) -> Result<Mce, MceError> {
        check_record_len(record_len)?;
        if bytes.len() != record_len {
            return Err(MceError::Truncated {
                expected: record_len,
                actual: bytes.len(),
            });
        }
        let u64_at = |off: usize| -> u64 {
            bytes
                .get(off..off + 8)
                .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
        };
        let u32_at = |off: usize| -> u32 {
            bytes
                .get(off..off + 4)
                .map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap_or([0; 4])))
        };
        let u8_at = |off: usize| -> u8 { bytes.get(off).copied().unwrap_or(0) };
        use offset::*;
        Ok(Mce {
            status: u64_at(STATUS),
            misc: u64_at(MISC),
            addr: u64_at(ADDR),
            mcgstatus: u64_at(MCGSTATUS),
            ip: u64_at(IP),
            tsc: u64_at(TSC),
            time: u64_at(TIME),
            cpuvendor: u8_at(CPUVENDOR),
            inject_flags: u8_at(INJECT_FLAGS),
            cpuid: u32_at(CPUID),
            cs: u8_at(CS),
            bank: u8_at(BANK),
            cpu: u8_at(CPU),
            finished: u8_at(FINISHED),
            extcpu: u32_at(EXTCPU),
            socketid: u32_at(SOCKETID),
            apicid: u32_at(APICID),
            mcgcap: u64_at(MCGCAP),
            synd: u64_at(SYND),
            ipid: u64_at(IPID),
            ppin: u64_at(PPIN),
            microcode: u32_at(MICROCODE),
            kflags: u64_at(KFLAGS),
            record_len,
        })
    }

    /// Encode as a `record_len`-byte `struct mce` (fixtures, `--from-file` data).
    pub fn to_bytes(&self, record_len: usize) -> Vec<u8> {
        let mut b = vec![0u8; record_len.max(MCE_STRUCT_SIZE)];
        use offset::*;
        let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(STATUS, &self.status.to_ne_bytes());
        put(MISC, &self.misc.to_ne_bytes());
        put(ADDR, &self.addr.to_ne_bytes());
        put(MCGSTATUS, &self.mcgstatus.to_ne_bytes());
        put(IP, &self.ip.to_ne_bytes());
        put(TSC, &self.tsc.to_ne_bytes());
        put(TIME, &self.time.to_ne_bytes());
        put(CPUVENDOR, &[self.cpuvendor]);
        put(INJECT_FLAGS, &[self.inject_flags]);
        put(CPUID, &self.cpuid.to_ne_bytes());
        put(CS, &[self.cs]);
        put(BANK, &[self.bank]);
        put(CPU, &[self.cpu]);
        put(FINISHED, &[self.finished]);
        put(EXTCPU, &self.extcpu.to_ne_bytes());
        put(SOCKETID, &self.socketid.to_ne_bytes());
        put(APICID, &self.apicid.to_ne_bytes());
        put(MCGCAP, &self.mcgcap.to_ne_bytes());
        put(SYND, &self.synd.to_ne_bytes());
        put(IPID, &self.ipid.to_ne_bytes());
        put(PPIN, &self.ppin.to_ne_bytes());
        put(MICROCODE, &self.microcode.to_ne_bytes());
        put(KFLAGS, &self.kflags.to_ne_bytes());
        b.truncate(record_len);
        b
    }

    /// mcelog's guard for printing a field: `recordlen > offsetof(struct mce, field)`.
    pub fn has(&self, field_offset: usize) -> bool {
        self.record_len > field_offset
    }

    /// The CPU number mcelog prints (`extcpu ? extcpu : cpu`).
    pub fn cpu_number(&self) -> u32 {
        if self.extcpu != 0 {
            self.extcpu
        } else {
            u32::from(self.cpu)
        }
    }

    pub fn is_uncorrected(&self) -> bool {
        self.status & MCI_STATUS_UC != 0
    }

    /// Class and severity exactly as the mcelog telemetry patch chose them: thermal bank →
    /// `thermal`; UC clear → `corrected`; UC with S or AR → `arstate[(status>>55)&3]`
    /// (`SRAO`, `SRAR`, or the odd `AR`); other UC → `UCNA`. Severity 4 if UC, else 2.
    pub fn classify(&self) -> Classified {
        let severity = if self.is_uncorrected() { 4 } else { 2 };
        let class = if self.bank == MCE_THERMAL_BANK {
            "thermal"
        } else if !self.is_uncorrected() {
            "corrected"
        } else if self.status & (MCI_STATUS_S | MCI_STATUS_AR) != 0 {
            ARSTATE[((self.status >> 55) & 3) as usize]
        } else {
            "UCNA"
        };
        Classified { class, severity }
    }
}

/// Accept a record length from the kernel or a flag.
pub fn check_record_len(record_len: usize) -> Result<(), MceError> {
    if (MIN_RECORD_LEN..=MAX_RECORD_LEN).contains(&record_len) {
        Ok(())
    } else {
        Err(MceError::BadRecordLen(record_len))
    }
}

/// Split `bytes` into records of `record_len`; a trailing partial record is returned
/// separately so a reader can keep it until the rest arrives.
pub fn split_records(bytes: &[u8], record_len: usize) -> Result<(Vec<Mce>, &[u8]), MceError> {
    check_record_len(record_len)?;
    let whole = bytes.len() / record_len * record_len;
    let records = bytes[..whole]
        .chunks_exact(record_len)
        .map(|c| Mce::parse(c, record_len))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((records, &bytes[whole..]))
}
