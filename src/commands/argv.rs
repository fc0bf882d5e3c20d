//! `orchestrate argv`: the command line, environment and files a runtime's agent step would be
//! started with, as JSON, for checking a runtime without running it.
//!
//! Does not build the command line itself (`orchestrate_runtime::adapter` does).

use std::path::Path;
use std::process::ExitCode;

use crate::error::Outcome;

/// Prints the invocation as JSON on stdout.
pub(crate) fn print_argv(
    workspace: &Path,
    runtime: orchestrate_runtime::parse::Runtime,
    phase: orchestrate_lang::model::Phase,
    model: Option<&str>,
    max_turns: Option<u32>,
    resume: Option<&str>,
    allow_shell: &[String],
) -> Outcome {
    use orchestrate_runtime::adapter;
    let scratch = workspace.join(".orchestrate").join("argv");
    let is_root = orchestrate_base::process::is_root();
    let invocation = adapter::build(&adapter::Request {
        runtime,
        bin: None,
        extra_args: &[],
        model,
        phase,
        max_turns,
        resume_session: resume,
        allow_shell,
        workspace,
        scratch: &scratch,
        is_root,
        output_schema: None,
    });
    let files: Vec<serde_json::Value> = invocation
        .files
        .iter()
        .map(|(path, text)| serde_json::json!({"path": path, "content": text}))
        .collect();
    println!(
        "{}",
        serde_json::json!({"argv": invocation.argv, "env": invocation.env, "files": files, "notes": invocation.notes, "stdin": "the prompt"})
    );
    Ok(ExitCode::SUCCESS)
}
