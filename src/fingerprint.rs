//! TEMPORARY STUB (replaced by the real module)
use std::path::Path;
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub ignore: Vec<String>,
    pub max_files: usize,
}
#[derive(Debug, Clone, Default)]
pub struct Snapshot;
#[derive(Debug, Clone, serde::Serialize)]
pub enum ChangeKind {
    Added,
    Removed,
    Modified,
    TypeChanged,
}
#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
}
#[derive(Debug, thiserror::Error)]
#[error("stub")]
pub struct FingerprintError;
pub fn snapshot(_w: &Path, _o: &Options) -> Result<Snapshot, FingerprintError> {
    Ok(Snapshot)
}
pub fn diff(_a: &Snapshot, _b: &Snapshot) -> Vec<Change> {
    Vec::new()
}
