//! Time formats used in records and names.
//!
//! Owns: the UTC timestamp shapes the spec fixes (`YYYYMMDDTHHMMSSZ` for `${run.timestamp_utc}`,
//! RFC 3339 in records), and the one monotonic clock two processes of a machine can compare
//! (`monotonic_ms`). Does not measure durations within a process (callers use `Instant`) nor make
//! run ids (`ids`).

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

/// `CLOCK_MONOTONIC` now, in milliseconds: a time two processes of one machine can pass each
/// other (an `Instant` cannot leave its process).
pub fn monotonic_ms() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(now.tv_sec).unwrap_or(0) * 1000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000_000
}
