//! TEMPORARY STUB (replaced by the real module)
use serde_json::Value;
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JqError {
    #[error("invalid jq expression `{expr}`: {message}")]
    Compile { expr: String, message: String, offset: Option<usize> },
    #[error("jq expression `{expr}` failed: {message}")]
    Runtime { expr: String, message: String },
}
pub fn check(_expr: &str) -> Result<(), JqError> { Ok(()) }
pub fn eval(_expr: &str, _input: &Value) -> Result<Vec<Value>, JqError> { Ok(vec![]) }
pub fn eval_bool(_expr: &str, _input: &Value) -> Result<bool, JqError> { Ok(false) }
