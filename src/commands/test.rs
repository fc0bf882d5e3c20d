//! `orchestrate test WORKFLOW --fixtures DIR`: runs every case and prints one line per case.
//!
//! Does not run a case itself (`crate::wftest` does: the scratch workspace, the fixture agent,
//! the comparison).

use std::path::Path;
use std::process::ExitCode;

use crate::error::{Error, Outcome};
use crate::wftest::{find_cases, run_case};

/// Runs every case under `fixtures` (the directory itself when it holds `expect.yaml`, else
/// each subdirectory that does) and prints one line per case. Exit 0 when all pass, 1 when one
/// fails, 2 when the workflow or a fixture cannot be read.
pub(crate) async fn run(workspace: &Path, workflow: &Path, fixtures: &Path, keep: bool) -> Outcome {
    let fixtures = if fixtures.is_absolute() {
        fixtures.to_path_buf()
    } else {
        workspace.join(fixtures)
    };
    let cases = match find_cases(&fixtures) {
        Ok(cases) => cases,
        Err(message) => return Err(Error::Invalid(message)),
    };
    let mut failed = 0;
    for case in &cases {
        let verdict = match run_case(workspace, workflow, case, keep).await {
            Ok(verdict) => verdict,
            Err(message) => {
                return Err(Error::invalid(format!("{}: {message}", case.display())));
            }
        };
        if verdict.problems.is_empty() {
            println!("ok      {} ({})", verdict.name, verdict.path.join(" -> "));
        } else {
            failed += 1;
            println!("FAILED  {}", verdict.name);
            for problem in &verdict.problems {
                println!("        {problem}");
            }
        }
        if let Some(kept) = &verdict.kept {
            println!("        its workspace is kept in {}", kept.display());
        }
    }
    println!(
        "{} case(s): {} passed, {failed} failed",
        cases.len(),
        cases.len() - failed
    );
    Ok(ExitCode::from(u8::from(failed > 0)))
}
