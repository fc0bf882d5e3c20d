//! Time formats used in records and names.
//!
//! Owns: the UTC timestamp shapes the spec fixes (`YYYYMMDDTHHMMSSZ` for `${run.timestamp_utc}`,
//! RFC 3339 in records). Does not measure durations (callers use `Instant`).

use chrono::{SecondsFormat, Utc};

pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `YYYYMMDDTHHMMSSZ`, sortable as text.
pub fn compact(time: chrono::DateTime<Utc>) -> String {
    time.format("%Y%m%dT%H%M%SZ").to_string()
}

/// A new run id: the UTC start time and 24 random bits, so ids sort by start and do not collide
/// when two runs start in the same second.
pub fn new_run_id() -> String {
    let mut bytes = [0u8; 3];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = Utc::now().timestamp_subsec_nanos().to_le_bytes();
        bytes.copy_from_slice(&nanos[..3]);
    }
    format!(
        "{}-{:02x}{:02x}{:02x}",
        compact(Utc::now()),
        bytes[0],
        bytes[1],
        bytes[2]
    )
}
