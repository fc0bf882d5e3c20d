//! Time formats used in records and names.
//!
//! Owns: the UTC timestamp shapes the spec fixes (`YYYYMMDDTHHMMSSZ` for `${run.timestamp_utc}`,
//! RFC 3339 in records). Does not measure durations (callers use `Instant`) nor make run ids (`ids`).

use chrono::{SecondsFormat, Utc};

/// The current UTC time as RFC 3339 with microseconds and `Z` (`2026-01-31T12:00:00.000000Z`), the
/// form every record stores.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `YYYYMMDDTHHMMSSZ`, sortable as text.
pub fn compact(time: chrono::DateTime<Utc>) -> String {
    time.format("%Y%m%dT%H%M%SZ").to_string()
}
