//! TEMPORARY STUB (replaced by the real module)
pub struct Spec {
    pub argv: Vec<String>, pub env: Vec<(String, String)>, pub cwd: std::path::PathBuf, pub stdin: Stdin,
    pub stdout_log: std::path::PathBuf, pub stderr_log: std::path::PathBuf, pub stdout_file: Option<std::path::PathBuf>,
    pub capture_limit: usize, pub timeout: Option<std::time::Duration>, pub kill_grace: std::time::Duration, pub secrets: Vec<String>,
}
pub enum Stdin { Null, Bytes(Vec<u8>) }
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome { Exited { code: i32 }, Signaled { signal: i32 }, TimedOut, Cancelled, SpawnFailed { message: String } }
impl Outcome { pub fn exit_code(&self) -> i32 { 0 } pub fn success(&self) -> bool { true } }
pub struct Finished { pub outcome: Outcome, pub stdout: Vec<u8>, pub stdout_bytes: u64, pub stdout_lines: u64,
    pub started_at: chrono::DateTime<chrono::Utc>, pub duration: std::time::Duration, pub pid: Option<u32> }
pub async fn run(_spec: Spec, _cancel: tokio_util::sync::CancellationToken) -> Finished { todo!() }
