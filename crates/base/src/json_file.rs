//! Versioned JSON records on disk: `status.json`, `state.json` and the like, each with a
//! `format_version`.
//!
//! Owns: reading one back with the version check (a file written by a newer orchestrate is
//! refused rather than misread; a missing version reads as 0) and writing one as people and
//! tools expect it (pretty JSON, a final newline, replaced atomically). Does not name the files,
//! know their types, or word the errors: callers map [`ReadError`] into their own, with the path.

use std::fs;
use std::io;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::fsutil;

/// Why a versioned file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Reading the bytes failed (`NotFound` included: callers decide what a missing file means).
    Io(io::Error),
    /// Not JSON, or not the shape of the record.
    Corrupt(serde_json::Error),
    /// Its `format_version` is newer than the reader knows.
    TooNew(u64),
}

/// Reads the record at `path`, refusing a `format_version` above `newest`.
pub fn read<T: DeserializeOwned>(path: &Path, newest: u32) -> Result<T, ReadError> {
    let bytes = fs::read(path).map_err(ReadError::Io)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(ReadError::Corrupt)?;
    let version = value
        .get("format_version")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if version > u64::from(newest) {
        return Err(ReadError::TooNew(version));
    }
    serde_json::from_value(value).map_err(ReadError::Corrupt)
}

/// The bytes of a record: pretty JSON and a final newline.
pub(crate) fn encode<T: Serialize>(record: &T) -> io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Replaces the record at `path` atomically; `durable` makes it survive a power loss (fsync of
/// the file and the directory), else readers only never see a partial file.
pub fn write<T: Serialize>(path: &Path, record: &T, durable: bool) -> io::Result<()> {
    let bytes = encode(record)?;
    if durable {
        fsutil::atomic_write(path, &bytes)
    } else {
        fsutil::replace(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        format_version: u32,
        name: String,
    }

    #[test]
    fn a_record_round_trips_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let record = Record {
            format_version: 2,
            name: "x".into(),
        };
        write(&path, &record, true).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\n  \"format_version\": 2,") && text.ends_with("}\n"));
        assert_eq!(read::<Record>(&path, 2).unwrap(), record);
        assert!(matches!(
            read::<Record>(&path, 1),
            Err(ReadError::TooNew(2))
        ));
        fs::write(&path, "{").unwrap();
        assert!(matches!(
            read::<Record>(&path, 2),
            Err(ReadError::Corrupt(_))
        ));
        assert!(matches!(
            read::<Record>(&dir.path().join("none.json"), 2),
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound
        ));
    }
}
