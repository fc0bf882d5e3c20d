//! `orchestrate validate FILE...`: workflow, role and swarm files checked as what they are,
//! every problem shown with its file:line:column.
//!
//! Does not check anything itself (`orchestrate_lang::load` does).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use orchestrate_engine::runner::exit;
use orchestrate_lang::load;

use super::loading::relative_render;
use crate::error::Outcome;

pub(crate) fn validate(workspace: &Path, files: &[PathBuf]) -> Outcome {
    let mut problems = 0;
    for file in files {
        let path = workspace.join(file);
        // `swarm.yaml` and role files (`agents/<role>.yaml`) are checked as what they are.
        let special = if file.file_name() == Some(std::ffi::OsStr::new(load::SWARM_FILE)) {
            Some(load::load_swarm_file(&path).map(|_| "swarm settings".to_string()))
        } else if path.parent().and_then(Path::file_name) == Some(std::ffi::OsStr::new("agents")) {
            Some(
                load::load_role_file(workspace, &path)
                    .map(|(role, _)| format!("role `{}`", role.name))
                    .map_err(|mut errs| errs.remove(0)),
            )
        } else {
            None
        };
        if let Some(result) = special {
            match result {
                Ok(what) => println!("{}: ok ({what})", file.display()),
                Err(err) => {
                    problems += err.diagnostics.len();
                    eprint!("{}", relative_render(&err, workspace));
                }
            }
            continue;
        }
        match load::load_in(workspace, &path) {
            Ok(workflow) => println!(
                "{}: ok ({} steps)",
                file.display(),
                workflow.all_steps().len()
            ),
            Err(err) => {
                problems += err.diagnostics.len();
                eprint!("{}", relative_render(&err, workspace));
            }
        }
    }
    if problems > 0 {
        // Every problem is shown above: a failure, not an error to render.
        eprintln!("{problems} problem(s) found");
        Ok(ExitCode::from(exit::INVALID))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
