//! The run's append-only event log, `events.jsonl`.
//!
//! Owns: appending one JSON object per line with a sequence number and timestamp, masking secret
//! values before anything reaches the disk, and reading a log back (tolerating a torn last line
//! left by a crash). Does not decide what happens; the runner reports, this module records.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::event::Event;

/// Schema version of each event line; bump when a field changes meaning.
pub(crate) const EVENTS_FORMAT: u32 = 1;

/// A run's `events.jsonl`, open for appending: numbers each record (`seq`), masks secrets and
/// writes one JSON line per event.
pub struct EventLog {
    path: PathBuf,
    file: File,
    seq: u64,
    mask: Vec<String>,
    /// Sees every line as it is appended (masked, without its newline): `--json` follows a run.
    tee: Option<Tee>,
}

/// A receiver of the log's lines as they are written.
pub(crate) type Tee = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

impl EventLog {
    /// Opens (creating) the log for appending; `seq` continues after the last readable record.
    pub fn open(path: &Path, mask: Vec<String>) -> io::Result<EventLog> {
        // A new log, the common case, costs one open.
        match OpenOptions::new().append(true).create_new(true).open(path) {
            Ok(file) => {
                return Ok(EventLog {
                    path: path.to_path_buf(),
                    file,
                    seq: 0,
                    mask,
                    tee: None,
                });
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
        let seq = match std::fs::metadata(path) {
            Ok(meta) if meta.len() == 0 => 0,
            Ok(_) => {
                drop_torn_tail(path)?;
                read(path)?
                    .last()
                    .and_then(|e| e.get("seq"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => 0,
            Err(err) => return Err(err),
        };
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(EventLog {
            path: path.to_path_buf(),
            file,
            seq,
            mask,
            tee: None,
        })
    }

    /// Sends every line appended from now on to `tee` too.
    pub(crate) fn set_tee(&mut self, tee: Tee) {
        self.tee = Some(tee);
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Appends `fields` (its `event` among them) after the envelope's `v`, `seq` and `ts`. With
    /// `durable`, the line is on disk (fdatasync) before this returns: used for records that
    /// resume depends on. For logs of other records than a run's [`Event`]s (the supervisor's,
    /// typed in `orchestrate_swarm`); a run's go through [`EventLog::append_event`].
    pub fn append_record(&mut self, fields: Map<String, Value>, durable: bool) -> io::Result<()> {
        self.write(fields, durable)
    }

    /// Appends `event` in its envelope: `lane` (left out when empty), `v`, `seq`, `ts`. With
    /// `durable`, as [`EventLog::append_record`].
    pub(crate) fn append_event(
        &mut self,
        event: &Event,
        lane: &[u64],
        durable: bool,
    ) -> io::Result<()> {
        let mut record = match serde_json::to_value(event).map_err(io::Error::other)? {
            Value::Object(record) => record,
            // A tagged enum serializes to an object; nothing else reaches here.
            other => return Err(io::Error::other(format!("not an event record: {other}"))),
        };
        if !lane.is_empty() {
            record.insert("lane".into(), json!(lane));
        }
        self.write(record, durable)
    }

    /// Writes `fields` after the envelope's `v`, `seq` and `ts` (keys sorted, as serde_json
    /// writes a map), masked, as one line.
    fn write(&mut self, fields: Map<String, Value>, durable: bool) -> io::Result<()> {
        self.seq += 1;
        let mut record = Map::new();
        record.insert("v".into(), json!(EVENTS_FORMAT));
        record.insert("seq".into(), json!(self.seq));
        record.insert("ts".into(), json!(orchestrate_base::clock::now_rfc3339()));
        record.extend(fields);
        let mut line = serde_json::to_string(&Value::Object(record)).map_err(io::Error::other)?;
        line = mask(&line, &self.mask);
        line.push('\n');
        // One write call per line: O_APPEND makes it land whole, so a crash leaves a readable
        // prefix and at most one torn final line.
        self.file.write_all(line.as_bytes())?;
        if durable {
            self.file.sync_data()?;
        }
        if let Some(tee) = &self.tee {
            tee(line.trim_end_matches('\n'));
        }
        Ok(())
    }
}

/// Cuts a torn final line (a crash mid-append) so that the next append starts a clean line.
fn drop_torn_tail(path: &Path) -> io::Result<()> {
    let bytes = std::fs::read(path)?;
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(keep as u64)?;
    file.sync_data()
}

/// Replaces each secret value in `text` with `***` (longest first, so a secret that contains
/// another is masked whole). Values are matched as they appear in JSON-escaped text too.
pub(crate) fn mask(text: &str, secrets: &[String]) -> String {
    if secrets.is_empty() {
        return text.to_string();
    }
    let mut out = text.to_string();
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
        let escaped = serde_json::to_string(secret).unwrap_or_default();
        let escaped = escaped.trim_matches('"');
        if escaped != secret && out.contains(escaped) {
            out = out.replace(escaped, "***");
        }
    }
    out
}

/// [`mask`] for bytes that may not be UTF-8 (an enqueued task file): each secret's bytes become
/// `***`.
pub(crate) fn mask_bytes(bytes: &[u8], secrets: &[String]) -> Vec<u8> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return mask(text, secrets).into_bytes();
    }
    let mut out = bytes.to_vec();
    for secret in secrets.iter().map(String::as_bytes) {
        let mut masked = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(secret) {
                masked.extend_from_slice(b"***");
                i += secret.len();
            } else {
                masked.push(out[i]);
                i += 1;
            }
        }
        out = masked;
    }
    out
}

/// Orders secret values for masking: non-empty, longest first, no duplicates.
pub(crate) fn mask_list(values: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
    values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    values.dedup();
    values
}

/// Reads every complete record; a torn last line (no newline, or not JSON) is ignored.
pub fn read(path: &Path) -> io::Result<Vec<Value>> {
    let reader = BufReader::new(File::open(path)?);
    let mut out = Vec::new();
    for line in reader.split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Value>(&line) {
            Ok(value) => out.push(value),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// A log read by [`read_checked`].
#[derive(Debug)]
pub struct EventFile {
    /// Every complete record, in order.
    pub records: Vec<Value>,
    /// The last line had no newline (a crash mid-append); it was left out.
    pub torn_tail: bool,
}

/// Reads `events.jsonl` strictly: a torn final line (a crash mid-append) is dropped, as the
/// runner does on its next open; a damaged line before the end, or a record from a newer format,
/// is an error that says which line, so that a report never rests on a guess.
pub fn read_checked(path: &Path) -> Result<EventFile, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut records = Vec::new();
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // `split` yields what follows the last newline: empty for a clean log, else a torn line.
    let tail = lines.pop().unwrap_or_default();
    let torn_tail = !tail.is_empty();
    for (index, line) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        let number = index + 1;
        let value: Value = serde_json::from_slice(line).map_err(|e| {
            format!("line {number} of events.jsonl is not a JSON record ({e}); the log is damaged")
        })?;
        if !value.is_object() {
            return Err(format!(
                "line {number} of events.jsonl is not a JSON object; the log is damaged"
            ));
        }
        let version = value["v"].as_u64().unwrap_or(1);
        if version > u64::from(EVENTS_FORMAT) {
            return Err(format!(
                "line {number} of events.jsonl has format v{version}, newer than this \
                 orchestrate reads (v{}); upgrade orchestrate to read it",
                EVENTS_FORMAT
            ));
        }
        records.push(value);
    }
    Ok(EventFile { records, torn_tail })
}

#[cfg(test)]
mod tests {
    #[test]
    fn mask_bytes_masks_in_text_and_in_binary() {
        let secrets = vec!["s3cret".to_string()];
        assert_eq!(super::mask_bytes(b"a s3cret b", &secrets), b"a *** b");
        assert_eq!(
            super::mask_bytes(b"\xff s3cret\xfes3cret", &secrets),
            b"\xff ***\xfe***"
        );
        assert_eq!(super::mask_bytes(b"plain", &[]), b"plain");
    }

    use super::*;

    fn fields(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(fields) => fields,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn appends_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut log = EventLog::open(&path, vec!["hunter2".into()]).unwrap();
        log.append_record(fields(json!({"event": "a", "x": "pw=hunter2"})), true)
            .unwrap();
        log.append_record(fields(json!({"event": "b"})), false)
            .unwrap();
        let events = read(&path).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["x"], "pw=***");
        assert_eq!(events[1]["seq"], 2);
        let log = EventLog::open(&path, vec![]).unwrap();
        assert_eq!(log.seq(), 2);
    }

    #[test]
    fn a_typed_event_is_the_line_the_untyped_append_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let (typed, untyped) = (dir.path().join("typed"), dir.path().join("untyped"));
        let mut log = EventLog::open(&typed, vec!["s3cret".into()]).unwrap();
        let event = crate::event::Event::Goto(crate::event::Goto {
            from: "A s3cret".into(),
            to: "_end".into(),
        });
        log.append_event(&event, &[], true).unwrap();
        log.append_event(&event, &[3, 1], false).unwrap();
        let mut log = EventLog::open(&untyped, vec!["s3cret".into()]).unwrap();
        log.append_record(
            fields(json!({"event": "goto", "from": "A s3cret", "to": "_end"})),
            true,
        )
        .unwrap();
        log.append_record(
            fields(json!({"event": "goto", "from": "A s3cret", "to": "_end", "lane": [3, 1]})),
            false,
        )
        .unwrap();
        let without_ts = |path: &Path| -> Vec<String> {
            read(path)
                .unwrap()
                .into_iter()
                .map(|mut record| {
                    record["ts"] = json!("T");
                    record.to_string()
                })
                .collect()
        };
        assert_eq!(without_ts(&typed), without_ts(&untyped));
        assert_eq!(
            without_ts(&typed)[1],
            r#"{"event":"goto","from":"A ***","lane":[3,1],"seq":2,"to":"_end","ts":"T","v":1}"#
        );
    }

    #[test]
    fn torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3,\"ev").unwrap();
        assert_eq!(read(&path).unwrap().len(), 2);
    }

    #[test]
    fn masks_longest_first() {
        assert_eq!(
            mask("ab abc", &mask_list(["ab".into(), "abc".into()])),
            "*** ***"
        );
    }
}
