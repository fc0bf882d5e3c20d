//! Building the command line for one agent run, from data: one table per runtime.
//!
//! Owns: which binary, flags, environment and generated files each CLI needs for a prompt, a
//! model, a phase (its native permission controls), a turn limit and a session to resume, as
//! observed with Claude Code 2.1.330, Codex 0.169.0 and Gemini CLI 0.61.0. The prompt always goes
//! on stdin: argv has a 128 KiB per-argument limit, claude's list flags are variadic and would
//! swallow a trailing prompt, and codex hangs on an open stdin that is never written. Does not
//! spawn anything (`exec`) or parse output (`parse`).

use std::path::{Path, PathBuf};

use crate::gemini_home::GeminiHome;
use crate::parse::Runtime;
use orchestrate_lang::model::Phase;

impl Runtime {
    /// The runtime a profile or step names (`claude`, `codex`, `gemini`); `None` for any other
    /// name.
    pub fn from_name(name: &str) -> Option<Runtime> {
        match name {
            "claude" => Some(Runtime::Claude),
            "codex" => Some(Runtime::Codex),
            "gemini" => Some(Runtime::Gemini),
            _ => None,
        }
    }

    /// The name as written in workflows, profiles and records.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Claude => "claude",
            Runtime::Codex => "codex",
            Runtime::Gemini => "gemini",
        }
    }
}

/// What one agent run asks for.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Which CLI builds the command.
    pub runtime: Runtime,
    /// The executable, when not the runtime's name on PATH.
    pub bin: Option<&'a str>,
    /// The runtime profile's `args:`, right after the binary (codex: after `exec`).
    pub extra_args: &'a [String],
    /// The model to pass with `--model` (or the CLI's equivalent); `None` leaves the CLI's default.
    pub model: Option<&'a str>,
    /// What the agent may do: read only, plan, edit files, or anything (mapped to each CLI's
    /// permission mode).
    pub phase: Phase,
    /// Turn limit, for CLIs that have one (claude `--max-turns`, gemini through its home).
    pub max_turns: Option<u32>,
    /// A session to continue (`--resume`, `exec resume`) instead of starting a new one.
    pub resume_session: Option<&'a str>,
    /// Command prefixes the agent may run in the `write` phase (claude `Bash(prefix:*)`).
    pub allow_shell: &'a [String],
    /// The directory the CLI runs in.
    pub workspace: &'a Path,
    /// A private directory of the step for files the CLI must read (gemini's policy, settings).
    pub scratch: &'a Path,
    /// Whether the engine runs as root (claude refuses bypassPermissions as root otherwise).
    pub is_root: bool,
    /// The step's `output_schema`, for CLIs with a native flag (claude `--json-schema`, codex
    /// `--output-schema FILE`); the engine validates the answer either way.
    pub output_schema: Option<&'a serde_json::Value>,
}

/// The command to run: argv, extra environment, and files to write before spawning.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// The program and its arguments, program first.
    pub argv: Vec<String>,
    /// Variables to set on top of the engine's environment for this run.
    pub env: Vec<(String, String)>,
    /// Files to write (path, contents) before spawning, such as gemini's policy.
    pub files: Vec<(PathBuf, String)>,
    /// Things the CLI cannot do that the request asked for (recorded as warnings).
    pub notes: Vec<String>,
    /// A private gemini home to lay down before spawning (`max_turns`), over the user's.
    pub gemini_home: Option<GeminiHome>,
}

fn s(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| i.to_string()).collect()
}

/// Builds the invocation. Pure: the same request always gives the same argv.
pub fn build(req: &Request) -> Invocation {
    match req.runtime {
        Runtime::Claude => claude(req),
        Runtime::Codex => codex(req),
        Runtime::Gemini => gemini(req),
    }
}

fn claude(req: &Request) -> Invocation {
    let mut argv = vec![req.bin.unwrap_or("claude").to_string()];
    argv.extend(req.extra_args.iter().cloned());
    // Prompt on stdin; stream-json with -p requires --verbose.
    argv.extend(s(&["-p", "--output-format", "stream-json", "--verbose"]));
    let mut env = vec![
        (
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_string(),
            "1".to_string(),
        ),
        ("DISABLE_AUTOUPDATER".to_string(), "1".to_string()),
    ];
    match req.phase {
        // dontAsk denies anything not allowed; the write tools are removed outright.
        Phase::Readonly => argv.extend(s(&[
            "--permission-mode",
            "dontAsk",
            "--disallowedTools",
            "Write,Edit,NotebookEdit",
        ])),
        Phase::Plan => argv.extend(s(&["--permission-mode", "plan"])),
        Phase::Write => {
            argv.extend(s(&["--permission-mode", "acceptEdits"]));
            if !req.allow_shell.is_empty() {
                // One comma-joined value: the flag is variadic.
                let allowed: Vec<String> = req
                    .allow_shell
                    .iter()
                    .map(|p| format!("Bash({p}:*)"))
                    .collect();
                argv.push("--allowedTools".into());
                argv.push(allowed.join(","));
            }
        }
        Phase::Full => {
            argv.extend(s(&["--permission-mode", "bypassPermissions"]));
            if req.is_root {
                env.push(("IS_SANDBOX".into(), "1".into()));
            }
        }
    }
    if let Some(model) = req.model {
        argv.extend(["--model".to_string(), model.to_string()]);
    }
    if let Some(turns) = req.max_turns {
        argv.extend(["--max-turns".to_string(), turns.to_string()]);
    }
    if let Some(session) = req.resume_session {
        argv.extend(["--resume".to_string(), session.to_string()]);
    }
    if let Some(schema) = req.output_schema {
        argv.extend(["--json-schema".to_string(), schema.to_string()]);
    }
    Invocation {
        argv,
        env,
        files: Vec::new(),
        notes: Vec::new(),
        gemini_home: None,
    }
}

fn codex(req: &Request) -> Invocation {
    let mut argv = vec![req.bin.unwrap_or("codex").to_string(), "exec".to_string()];
    argv.extend(req.extra_args.iter().cloned());
    argv.extend(s(&["--json", "--skip-git-repo-check"]));
    argv.extend(["-C".to_string(), req.workspace.display().to_string()]);
    // Sandbox flags must come before `resume`; exec always runs with approval `never`.
    match req.phase {
        Phase::Readonly | Phase::Plan => argv.extend(s(&["-s", "read-only"])),
        Phase::Write => argv.extend(s(&["-s", "workspace-write"])),
        Phase::Full => argv.push("--dangerously-bypass-approvals-and-sandbox".into()),
    }
    if let Some(model) = req.model {
        argv.extend(["-m".to_string(), model.to_string()]);
    }
    let mut files = Vec::new();
    if let Some(schema) = req.output_schema {
        let path = req.scratch.join("output-schema.json");
        argv.extend(["--output-schema".to_string(), path.display().to_string()]);
        files.push((path, schema.to_string()));
    }
    let mut notes = Vec::new();
    if req.max_turns.is_some() {
        notes
            .push("codex has no turn limit; max_turns is enforced only through timeout_sec".into());
    }
    if !req.allow_shell.is_empty() {
        notes.push("codex has no per-command allow list; workspace-write lets it run commands inside its sandbox".into());
    }
    if let Some(session) = req.resume_session {
        argv.extend(["resume".to_string(), session.to_string()]);
    }
    // `-` reads the prompt from stdin.
    argv.push("-".into());
    Invocation {
        argv,
        env: Vec::new(),
        files,
        notes,
        gemini_home: None,
    }
}

fn gemini(req: &Request) -> Invocation {
    let mut argv = vec![req.bin.unwrap_or("gemini").to_string()];
    argv.extend(req.extra_args.iter().cloned());
    // No -p: a non-TTY stdin makes gemini headless and reads the prompt from it.
    argv.extend(s(&["--output-format", "stream-json", "--skip-trust"]));
    let mut env = vec![("GEMINI_CLI_TRUST_WORKSPACE".to_string(), "true".to_string())];
    let mut files = Vec::new();
    match req.phase {
        Phase::Readonly => argv.extend(s(&["--approval-mode", "default"])),
        Phase::Plan => argv.extend(s(&["--approval-mode", "plan"])),
        Phase::Write => {
            argv.extend(s(&["--approval-mode", "auto_edit"]));
            if !req.allow_shell.is_empty() {
                // Without a policy, auto_edit offers no shell at all.
                let policy = req.scratch.join("gemini-policy.toml");
                let mut text =
                    String::from("# generated by orchestrate: shell prefixes this step may run\n");
                for prefix in req.allow_shell {
                    text.push_str(&format!(
                        "\n[[rule]]\ntoolName = \"run_shell_command\"\ncommandPrefix = {}\ndecision = \"allow\"\npriority = 100\n",
                        toml_string(prefix)
                    ));
                }
                files.push((policy.clone(), text));
                argv.extend(["--policy".to_string(), policy.display().to_string()]);
            }
        }
        Phase::Full => argv.extend(s(&["--approval-mode", "yolo"])),
    }
    if let Some(model) = req.model {
        argv.extend(["-m".to_string(), model.to_string()]);
    }
    let mut gemini_home = None;
    if let Some(turns) = req.max_turns {
        // Only settings limit turns: a private GEMINI_CLI_HOME that is the user's own seen
        // through links, with the limit added to the user's settings (`gemini_home`).
        let home = req.scratch.join("gemini-home");
        env.push(("GEMINI_CLI_HOME".into(), home.display().to_string()));
        gemini_home = Some(GeminiHome {
            home,
            max_session_turns: turns,
        });
    }
    if let Some(session) = req.resume_session {
        argv.extend(["--resume".to_string(), session.to_string()]);
    }
    Invocation {
        argv,
        env,
        files,
        notes: Vec::new(),
        gemini_home,
    }
}

fn toml_string(text: &str) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            '\n' => vec!['\\', 'n'],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(runtime: Runtime, phase: Phase) -> Request<'static> {
        Request {
            runtime,
            bin: None,
            extra_args: &[],
            model: Some("m1"),
            phase,
            max_turns: None,
            resume_session: None,
            allow_shell: &[],
            workspace: Path::new("/ws"),
            scratch: Path::new("/ws/.orchestrate/x"),
            is_root: false,
            output_schema: None,
        }
    }

    #[test]
    fn a_schema_goes_to_the_clis_that_take_one() {
        let schema = serde_json::json!({"type": "object", "required": ["ok"]});
        let mut r = req(Runtime::Claude, Phase::Readonly);
        r.output_schema = Some(&schema);
        let argv = build(&r).argv;
        let at = argv.iter().position(|a| a == "--json-schema").unwrap();
        assert_eq!(argv[at + 1], schema.to_string());
        let mut r = req(Runtime::Codex, Phase::Readonly);
        r.output_schema = Some(&schema);
        let inv = build(&r);
        let at = inv
            .argv
            .iter()
            .position(|a| a == "--output-schema")
            .unwrap();
        assert_eq!(inv.argv[at + 1], "/ws/.orchestrate/x/output-schema.json");
        assert!(at < inv.argv.len() - 1 && inv.argv.last().unwrap() == "-");
        assert_eq!(
            inv.files,
            vec![(
                PathBuf::from("/ws/.orchestrate/x/output-schema.json"),
                schema.to_string()
            )]
        );
    }

    #[test]
    fn claude_readonly() {
        assert_eq!(
            build(&req(Runtime::Claude, Phase::Readonly)).argv,
            s(&[
                "claude",
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--permission-mode",
                "dontAsk",
                "--disallowedTools",
                "Write,Edit,NotebookEdit",
                "--model",
                "m1"
            ])
        );
    }

    #[test]
    fn claude_write_with_shell_prefixes_is_one_value() {
        let shell = vec!["cargo test".to_string(), "cargo build".to_string()];
        let mut r = req(Runtime::Claude, Phase::Write);
        r.allow_shell = &shell;
        let argv = build(&r).argv;
        let i = argv.iter().position(|a| a == "--allowedTools").unwrap();
        assert_eq!(argv[i + 1], "Bash(cargo test:*),Bash(cargo build:*)");
    }

    #[test]
    fn claude_full_as_root_sets_is_sandbox() {
        let mut r = req(Runtime::Claude, Phase::Full);
        r.is_root = true;
        assert!(build(&r).env.contains(&("IS_SANDBOX".into(), "1".into())));
    }

    #[test]
    fn claude_resume_and_turns() {
        let mut r = req(Runtime::Claude, Phase::Plan);
        r.resume_session = Some("abc");
        r.max_turns = Some(3);
        let argv = build(&r).argv;
        assert!(argv.windows(2).any(|w| w == ["--resume", "abc"]));
        assert!(argv.windows(2).any(|w| w == ["--max-turns", "3"]));
    }

    #[test]
    fn codex_sandbox_before_resume_and_stdin_dash_last() {
        let mut r = req(Runtime::Codex, Phase::Write);
        r.resume_session = Some("th1");
        let argv = build(&r).argv;
        let sandbox = argv.iter().position(|a| a == "-s").unwrap();
        let resume = argv.iter().position(|a| a == "resume").unwrap();
        assert!(sandbox < resume);
        assert_eq!(argv.last().unwrap(), "-");
        assert_eq!(argv[sandbox + 1], "workspace-write");
    }

    #[test]
    fn codex_notes_missing_turn_limit() {
        let mut r = req(Runtime::Codex, Phase::Readonly);
        r.max_turns = Some(2);
        assert_eq!(build(&r).notes.len(), 1);
        assert!(!build(&r).argv.iter().any(|a| a.contains("turn")));
    }

    #[test]
    fn gemini_write_policy_file() {
        let shell = vec!["npm \"test\"".to_string()];
        let mut r = req(Runtime::Gemini, Phase::Write);
        r.allow_shell = &shell;
        let inv = build(&r);
        assert!(inv.argv.windows(2).any(|w| w[0] == "--policy"));
        assert!(
            inv.files[0]
                .1
                .contains("commandPrefix = \"npm \\\"test\\\"\"")
        );
    }

    #[test]
    fn gemini_max_turns_private_home() {
        let mut r = req(Runtime::Gemini, Phase::Readonly);
        r.max_turns = Some(4);
        let inv = build(&r);
        let home = PathBuf::from("/ws/.orchestrate/x/gemini-home");
        assert_eq!(
            inv.gemini_home,
            Some(GeminiHome {
                home: home.clone(),
                max_session_turns: 4
            })
        );
        assert!(
            inv.env
                .contains(&("GEMINI_CLI_HOME".into(), home.display().to_string()))
        );
        assert!(inv.notes.is_empty(), "{:?}", inv.notes);
    }

    #[test]
    fn phases_map_to_native_controls() {
        for (rt, phase, flag) in [
            (Runtime::Gemini, Phase::Plan, "plan"),
            (Runtime::Gemini, Phase::Full, "yolo"),
            (Runtime::Codex, Phase::Plan, "read-only"),
            (Runtime::Claude, Phase::Plan, "plan"),
            (Runtime::Claude, Phase::Full, "bypassPermissions"),
        ] {
            assert!(
                build(&req(rt, phase)).argv.iter().any(|a| a == flag),
                "{rt:?} {phase:?}"
            );
        }
    }
}
