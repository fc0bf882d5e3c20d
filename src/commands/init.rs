//! `orchestrate init [DIR]`: lays a workspace down (the template's skeleton, the shipped
//! example roles and workflows, and the JSON Schemas their `yaml-language-server` comments name),
//! never overwriting what is there.
//!
//! Does not look for a workspace upward (`cli` gives it the directory).

use std::path::Path;
use std::process::ExitCode;

use crate::error::{Error, Outcome};

/// What `init` lays down: the template's skeleton plus the shipped example roles.
const INIT_FILES: &[(&str, &str, bool)] = &[
    (
        "README.md",
        include_str!("../../workspace-template/README.md"),
        false,
    ),
    (
        "agents/architect.yaml",
        include_str!("../../agents/architect.yaml"),
        false,
    ),
    (
        "agents/engineer.yaml",
        include_str!("../../agents/engineer.yaml"),
        false,
    ),
    (
        "agents/qa.yaml",
        include_str!("../../agents/qa.yaml"),
        false,
    ),
    (
        "workflows/architect.yaml",
        include_str!("../../workflows/architect.yaml"),
        false,
    ),
    (
        "workflows/engineer.yaml",
        include_str!("../../workflows/engineer.yaml"),
        false,
    ),
    (
        "workflows/qa.yaml",
        include_str!("../../workflows/qa.yaml"),
        false,
    ),
    (
        "workflows/demo.yaml",
        include_str!("../../workflows/demo.yaml"),
        false,
    ),
    (
        "prompts/architect.md",
        include_str!("../../prompts/architect.md"),
        false,
    ),
    (
        "prompts/engineer.md",
        include_str!("../../prompts/engineer.md"),
        false,
    ),
    ("prompts/qa.md", include_str!("../../prompts/qa.md"), false),
    (
        "scripts/stand-in-agent",
        include_str!("../../scripts/stand-in-agent"),
        true,
    ),
    (
        ".orchestrate/schema/workflow.schema.json",
        include_str!("../../docs/schema/workflow.schema.json"),
        false,
    ),
    (
        ".orchestrate/schema/role.schema.json",
        include_str!("../../docs/schema/role.schema.json"),
        false,
    ),
    (
        ".orchestrate/schema/swarm.schema.json",
        include_str!("../../docs/schema/swarm.schema.json"),
        false,
    ),
];

/// The schema comment of a shipped YAML file points into this repository's `docs/schema/`;
/// in a workspace it points at the copies `init` writes beside its files.
const SCHEMA_IN_REPOSITORY: &str = "$schema=../docs/schema/";
const SCHEMA_IN_WORKSPACE: &str = "$schema=../.orchestrate/schema/";

const INIT_DIRS: &[&str] = &[
    "inbox/architect",
    "inbox/engineer",
    "inbox/qa",
    "processed",
    "failed",
    "artifacts",
    "running",
];

/// Writes what is missing and says what it did and what to run next.
pub(crate) fn init(workspace: &Path, dir: Option<&Path>) -> Outcome {
    use std::os::unix::fs::PermissionsExt;
    let root = match dir {
        Some(d) => workspace.join(d),
        None => workspace.to_path_buf(),
    };
    let mut written = 0;
    let mut kept = 0;
    for d in INIT_DIRS {
        if let Err(err) = std::fs::create_dir_all(root.join(d)) {
            return Err(Error::failed(format!(
                "cannot create {}: {err}",
                root.join(d).display()
            )));
        }
    }
    for (rel, content, executable) in INIT_FILES {
        let path = root.join(rel);
        if path.exists() {
            // Never overwrite what a user has.
            kept += 1;
            continue;
        }
        let result = std::fs::create_dir_all(path.parent().unwrap_or(&root))
            .and_then(|()| {
                let content = content.replacen(SCHEMA_IN_REPOSITORY, SCHEMA_IN_WORKSPACE, 1);
                std::fs::write(&path, content)
            })
            .and_then(|()| {
                if *executable {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                } else {
                    Ok(())
                }
            });
        if let Err(err) = result {
            return Err(Error::failed(format!(
                "cannot write {}: {err}",
                path.display()
            )));
        }
        written += 1;
    }
    eprintln!(
        "initialized {} ({written} files written, {kept} already there and kept)\nnext: cd {} && orchestrate enqueue architect --text \"Design a rate limiter\" && orchestrate swarm up",
        root.display(),
        root.display()
    );
    Ok(ExitCode::SUCCESS)
}
