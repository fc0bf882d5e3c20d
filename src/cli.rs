//! The command line: argument parsing and the one exit-code table.
//!
//! Owns: turning `orchestrate <command> ...` into calls on the library, finding WORKSPACE
//! (`locate_workspace`: `--workspace`, `$ORCHESTRATE_WORKSPACE`, else upward as git does) and
//! resolving every user path against it, printing errors the way users read them, and signal
//! handling (first Ctrl-C stops the run cleanly, a second exits at once). Does not implement any
//! command's logic.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use orchestrate_base::fsutil::WORKSPACE_ENV;
use orchestrate_engine::runner::{RunConfig, RunReport, Runner, exit};
use orchestrate_engine::state::{RunDir, RunStatus};
use orchestrate_lang::load::{self, LoadError};
use orchestrate_lang::model::Workflow;
use orchestrate_queue::processed;

#[derive(Debug, Parser)]
#[command(
    name = "orchestrate",
    version,
    about = "Run YAML workflows of shell commands and coding-agent CLIs, enforced by the engine"
)]
struct Cli {
    /// The workspace every path resolves against (default: $ORCHESTRATE_WORKSPACE, else the
    /// nearest directory at or above the current one with agents/ or .orchestrate/).
    #[arg(long, global = true, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// The least severe log events shown on stderr (default: `RUST_LOG` when set, else info).
    #[arg(long, global = true, value_enum, value_name = "LEVEL")]
    log_level: Option<crate::logging::LogLevel>,
    /// How log events are written on stderr: text lines, or one JSON object per line.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<crate::logging::LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workflow from its first step.
    Run {
        /// The workflow file.
        file: PathBuf,
        #[command(flatten)]
        context: ContextArgs,
        /// Empty WORKSPACE/processed/ before the run (refuses any other directory).
        #[arg(long)]
        clean_processed: bool,
        /// Zip processed/ when the run succeeds (default destination: RUN_ROOT/processed.zip).
        #[arg(long, value_name = "ZIP", num_args = 0..=1)]
        archive_processed: Option<Option<PathBuf>>,
        /// No per-step progress lines.
        #[arg(long, short)]
        quiet: bool,
        /// Print each event on stdout as it is recorded, one JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        agents: AgentArgs,
    },
    /// Continue an interrupted or failed run from the first step that did not complete; or,
    /// when the name is a role (agents/NAME.yaml), lift that role's pause.
    Resume {
        /// A run id, or a role name.
        #[arg(value_name = "RUN_ID|ROLE")]
        run_id: String,
        /// Resume the role NAME, even if a run has that id.
        #[arg(long, conflicts_with = "run")]
        role: bool,
        /// Resume the run NAME, even if a role has that name.
        #[arg(long)]
        run: bool,
        /// No per-step progress lines.
        #[arg(long, short)]
        quiet: bool,
        /// Print each event on stdout as it is recorded, one JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        agents: AgentArgs,
    },
    /// Stop a running run (its process gets SIGTERM, like Ctrl-C) or a swarm task (its role
    /// process stops it and moves it to failed/); waits until it has stopped.
    Cancel {
        /// A run id, a swarm task id, or the run id of a task's attempt.
        #[arg(value_name = "RUN_ID|TASK")]
        target: String,
        /// Return once the request is made, without waiting.
        #[arg(long)]
        no_wait: bool,
        /// Seconds to wait for it to stop.
        #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, default_value = "10", value_parser = crate::flags::parse_duration)]
        timeout: Duration,
    },
    /// Stop a role from claiming new tasks (tasks in flight finish; queued ones wait) until
    /// `orchestrate resume ROLE`; survives restarts.
    Pause {
        /// The role (agents/ROLE.yaml).
        role: String,
    },
    /// Run one step of a workflow on its own.
    RunStep {
        /// The step's name.
        step: String,
        /// The workflow file the step is in.
        #[arg(long, value_name = "FILE")]
        workflow: PathBuf,
        #[command(flatten)]
        context: ContextArgs,
        /// Make the step results of this earlier run visible as `${steps.*}`.
        #[arg(long = "run", value_name = "RUN_ID")]
        from_run: Option<String>,
        /// No per-step progress lines.
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        agents: AgentArgs,
    },
    /// Run a workflow, and run it again each time the file changes.
    Watch {
        /// The workflow file.
        file: PathBuf,
        #[command(flatten)]
        context: ContextArgs,
        #[command(flatten)]
        agents: AgentArgs,
    },
    /// Where a run is (current step, phase, elapsed, cost so far); with a swarm running, its roles.
    Status {
        /// The run (default: the latest).
        run_id: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a run's step logs in order; -f follows them until the run ends.
    Logs {
        /// The run.
        run_id: String,
        /// Only this step's logs.
        step: Option<String>,
        /// Keep printing new output until the run ends.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Per-step visits, attempts, time, tokens and cost of a run, and the path it took against
    /// the graph; across runs (--since, or all), p50/p95 per step, failure rates, slowest and costliest.
    Report {
        /// One run (default: a report across runs).
        run_id: Option<String>,
        /// Runs started at or after this time (RFC 3339, or YYYY-MM-DD).
        #[arg(long, value_name = "TIME", conflicts_with = "run_id", value_parser = crate::flags::parse_time)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Test a workflow: run it with each agent step answered from fixture files and check the
    /// path taken and the outputs against the fixture's expect.yaml.
    Test {
        /// The workflow file.
        file: PathBuf,
        /// A case directory (with expect.yaml), or a directory of them.
        #[arg(long, value_name = "DIR")]
        fixtures: PathBuf,
        /// Keep each case's scratch workspace (failed cases always keep theirs).
        #[arg(long)]
        keep: bool,
    },
    /// Print a workflow's graph (Mermaid or Graphviz dot), with a run's path overlaid.
    Graph {
        /// The workflow file.
        file: PathBuf,
        /// Overlay the path this run took.
        #[arg(long = "run", value_name = "RUN_ID")]
        run_id: Option<String>,
        /// Mermaid or Graphviz dot.
        #[arg(long, value_enum, default_value_t = orchestrate_observe::observe::GraphFormat::Mermaid)]
        format: orchestrate_observe::observe::GraphFormat,
    },
    /// Print the command line orchestrate builds for an agent runtime (JSON: argv, env, files).
    Argv {
        /// The agent CLI.
        #[arg(value_enum)]
        runtime: orchestrate_runtime::parse::Runtime,
        /// The phase whose permissions the command line grants.
        #[arg(long, value_enum, default_value_t = orchestrate_lang::model::Phase::Readonly)]
        phase: orchestrate_lang::model::Phase,
        /// The model to ask for.
        #[arg(long)]
        model: Option<String>,
        /// The most agent turns to allow.
        #[arg(long, allow_negative_numbers = true)]
        max_turns: Option<u32>,
        /// Continue this agent session id.
        #[arg(long)]
        resume: Option<String>,
        /// Allow shell commands starting with PREFIX (repeatable).
        #[arg(long = "allow-shell", value_name = "PREFIX")]
        allow_shell: Vec<String>,
    },
    /// Approve a pending `approval` step of a run.
    Approve {
        /// The run waiting for the approval.
        run_id: String,
        /// The approval step.
        step: String,
        /// A note recorded with the decision (`${steps.STEP.note}`).
        #[arg(long)]
        note: Option<String>,
        /// Who decides (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Reject a pending `approval` step; the reason reaches the step the rejection leads to.
    Reject {
        /// The run waiting for the approval.
        run_id: String,
        /// The approval step.
        step: String,
        /// Why: reaches the step the rejection leads to as `${feedback.reason}`.
        #[arg(long)]
        reason: String,
        /// Who decides (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Remove the git worktrees of finished tasks and runs (`isolation: worktree`): of
    /// succeeded ones, of failed ones older than --older-than, of ones that no longer exist;
    /// delete the branches orchestrate made that hold nothing beyond their base; prune git's
    /// records of worktrees whose directories are gone. Running and queued tasks keep theirs.
    Gc {
        /// Print what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Failed tasks' and runs' worktrees go once they failed this long ago (30m, 12h, 7d).
        #[arg(long, value_name = "AGE", allow_negative_numbers = true, default_value = "7d", value_parser = crate::flags::parse_duration)]
        older_than: Duration,
        /// Remove worktrees with uncommitted changes too (their changes are lost).
        #[arg(long)]
        force: bool,
    },
    /// Check workflow files and print every problem found.
    Validate {
        /// Workflow files, role files (agents/ROLE.yaml) or swarm.yaml.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Lay down a workspace: inbox/, processed/, failed/, artifacts/, and a working three-role
    /// example (architect -> engineer -> qa) in agents/, workflows/ and prompts/.
    Init {
        /// Where (default: the workspace).
        dir: Option<PathBuf>,
    },
    /// Run one role's process in the foreground: watch its inbox, run its workflow per task.
    Agent {
        /// The role to run (agents/ROLE.yaml).
        role: String,
        /// Which replica this is (for logs and leases).
        #[arg(long, allow_negative_numbers = true, default_value_t = 1)]
        replica: u32,
        /// Process what is queued, then exit (for cron and scripts).
        #[arg(long)]
        once: bool,
        /// Seconds tasks in flight may run on after a stop request.
        #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, default_value = "30", value_parser = crate::flags::parse_duration)]
        grace: Duration,
        /// No progress lines on stderr (tasks claimed, finished, handed back).
        #[arg(long, short)]
        quiet: bool,
        /// Write Prometheus metrics to DIR/orchestrate_<role>_<replica>.prom (default:
        /// $ORCHESTRATE_METRICS_DIR).
        #[arg(long, value_name = "DIR")]
        metrics_dir: Option<PathBuf>,
    },
    /// Add a task to a role's inbox, durably and atomically.
    Enqueue {
        /// The role whose inbox gets the task (agents/ROLE.yaml).
        role: String,
        /// Take the task from a file.
        #[arg(long, conflicts_with = "text")]
        file: Option<PathBuf>,
        /// The task text.
        #[arg(long)]
        text: Option<String>,
        /// `-`: read the task from standard input.
        #[arg(value_name = "-", conflicts_with_all = ["file", "text"])]
        stdin: Option<String>,
        /// The task id (default: a new time-ordered id).
        #[arg(long)]
        name: Option<String>,
        /// Carry this correlation id (default: the task id).
        #[arg(long)]
        correlation_id: Option<String>,
    },
    /// List tasks: queued, running, processed, failed; and inbox files no role takes (ignored).
    Tasks {
        /// Only this role's tasks.
        role: Option<String>,
        /// Only tasks in this state.
        #[arg(long, value_enum)]
        state: Option<orchestrate_queue::queue::TaskState>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one task: where it is, its status.json, attempts and logs.
    Show {
        /// The task id.
        task: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put a failed task back into its role's inbox with its attempts reset.
    Retry {
        /// The failed task's id.
        task: String,
    },
    /// Follow one request across roles by its correlation id.
    Trace {
        /// A correlation id (or a task id, which is one).
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Start, stop and inspect every role of the workspace under one supervisor.
    Swarm {
        #[command(subcommand)]
        action: SwarmAction,
    },
    /// Print a shell completion script on stdout (e.g. `orchestrate completions bash >
    /// ~/.local/share/bash-completion/completions/orchestrate`).
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout, or write one page per command into DIR.
    Man {
        /// Write orchestrate.1 and one orchestrate-COMMAND.1 per command into DIR.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum SwarmAction {
    /// Start one process per role replica (agents/*.yaml) and keep them running.
    Up {
        /// Run the supervisor in the background; return once every role is running.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Seconds role processes get to finish tasks in flight when stopping.
        #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, default_value = "30", value_parser = crate::flags::parse_duration)]
        grace: Duration,
        /// Every role process writes Prometheus metrics to
        /// DIR/orchestrate_<role>_<replica>.prom (sets ORCHESTRATE_METRICS_DIR for them).
        #[arg(long, value_name = "DIR")]
        metrics_dir: Option<PathBuf>,
    },
    /// Stop the running supervisor (graceful; a second `down` or --force kills at once).
    Down {
        /// Kill the role processes and their tasks now instead of letting tasks finish.
        #[arg(long)]
        force: bool,
        /// Seconds to wait for it to exit.
        #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, default_value = "60", value_parser = crate::flags::parse_duration)]
        timeout: Duration,
    },
    /// Make the running role processes look at their role files now (added roles start, removed
    /// ones stop after their task); report per role what happened. SIGHUP to the supervisor
    /// does the same.
    Reload {
        /// Seconds to wait for every role process to answer.
        #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, default_value = "10", value_parser = crate::flags::parse_duration)]
        timeout: Duration,
    },
    /// Roles, pids, states, restarts, queue depths and tasks in flight.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Who executes agent steps.
#[derive(Debug, Args, Clone, Default)]
struct AgentArgs {
    /// Run every agent step on this runtime or runtimes.yaml profile (claude, codex, gemini, ...).
    #[arg(long, value_name = "NAME")]
    runtime: Option<String>,
    /// Allow agent steps with `phase: full` (no permission checks; use inside a sandbox).
    #[arg(long)]
    allow_full: bool,
}

impl AgentArgs {
    /// Applies the options and the workspace's runtimes.yaml to a run's configuration.
    fn apply(&self, workspace: &Path, config: &mut RunConfig) -> Result<(), u8> {
        match orchestrate_runtime::profile::Profiles::load(workspace) {
            Ok(profiles) => config.profiles = std::sync::Arc::new(profiles),
            Err(err) => {
                eprint!("{}", relative_render(&err, workspace));
                eprintln!("error: runtimes.yaml has problems; nothing was run");
                return Err(exit::INVALID);
            }
        }
        config.runtime_override = self.runtime.clone();
        config.allow_full = self.allow_full;
        Ok(())
    }
}

#[derive(Debug, Args, Clone)]
struct ContextArgs {
    /// A context value, `${context.KEY}` in the workflow (repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pairs: Vec<String>,
    /// A JSON object of context values; `--context` wins over it.
    #[arg(long, value_name = "FILE")]
    context_file: Option<PathBuf>,
}

/// Entry point used by `main` and by tests.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    // Started by `orchestrate test` in place of an agent CLI: answer from the fixture.
    if let Some(case) = std::env::var_os(crate::wftest::AGENT_ENV) {
        return ExitCode::from(crate::wftest::fixture_agent(Path::new(&case)));
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() {
                exit::INVALID
            } else {
                exit::SUCCESS
            });
        }
    };
    crate::logging::install(cli.log_level, cli.log_format);
    let mut command = cli.command;
    let located = match locate_workspace(
        cli.workspace.as_deref(),
        std::env::var_os(WORKSPACE_ENV),
        command.needs(),
    ) {
        Ok(located) => located,
        Err(message) => return fail(exit::INVALID, &message),
    };
    if let Some(cwd) = &located.below {
        command.rebase_paths(cwd, &located.dir);
    }
    let workspace = located.dir;
    if let Command::Swarm {
        action: SwarmAction::Up {
            metrics_dir: Some(dir),
            ..
        },
    } = &command
    {
        // The role processes (and a detached supervisor) inherit it.
        // SAFETY: no other thread exists yet: the async runtime is started below.
        unsafe { std::env::set_var("ORCHESTRATE_METRICS_DIR", workspace.join(dir)) };
    }
    // A role process runs several tasks at once: give their blocking file work two threads.
    let builder = match command {
        Command::Agent { .. } => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let mut builder = builder;
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            return fail(
                exit::INVALID,
                &format!("failed to start the async runtime: {err}"),
            );
        }
    };
    let code = runtime.block_on(dispatch(command, workspace));
    ExitCode::from(code)
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// What a command needs of its workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Queues, roles, the supervisor, steering: there must be a workspace, or nothing it
    /// writes would be read (a cron job in the wrong directory would lose its tasks).
    Swarm,
    /// Runs and workflow files: the workspace found upward, else the current directory (where
    /// a run then keeps its `.orchestrate/`).
    Runs,
    /// `init`: lays a workspace down where it is named or here, never in one found upward.
    Here,
}

impl Command {
    fn needs(&self) -> Needs {
        match self {
            Command::Init { .. } | Command::Completions { .. } | Command::Man { .. } => Needs::Here,
            Command::Agent { .. }
            | Command::Enqueue { .. }
            | Command::Tasks { .. }
            | Command::Show { .. }
            | Command::Retry { .. }
            | Command::Trace { .. }
            | Command::Swarm { .. }
            | Command::Cancel { .. }
            | Command::Pause { .. } => Needs::Swarm,
            _ => Needs::Runs,
        }
    }

    /// Every path argument, so that paths typed below a workspace found upward keep meaning
    /// what they meant where they were typed.
    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut paths: Vec<&mut PathBuf> = Vec::new();
        match self {
            Command::Run {
                file,
                context,
                archive_processed,
                ..
            } => {
                paths.push(file);
                paths.extend(context.context_file.as_mut());
                paths.extend(archive_processed.as_mut().and_then(Option::as_mut));
            }
            Command::RunStep {
                workflow, context, ..
            } => {
                paths.push(workflow);
                paths.extend(context.context_file.as_mut());
            }
            Command::Watch { file, context, .. } => {
                paths.push(file);
                paths.extend(context.context_file.as_mut());
            }
            Command::Test { file, fixtures, .. } => paths.extend([file, fixtures]),
            Command::Graph { file, .. } => paths.push(file),
            Command::Validate { files } => paths.extend(files.iter_mut()),
            Command::Init { dir } | Command::Man { dir } => paths.extend(dir.as_mut()),
            Command::Agent { metrics_dir, .. } => paths.extend(metrics_dir.as_mut()),
            Command::Enqueue { file, .. } => paths.extend(file.as_mut()),
            Command::Swarm {
                action: SwarmAction::Up { metrics_dir, .. },
            } => paths.extend(metrics_dir.as_mut()),
            _ => {}
        }
        paths
    }

    /// Makes relative paths typed in `cwd` relative to `workspace` (absolute when they lead
    /// outside it), since every command resolves them against the workspace.
    fn rebase_paths(&mut self, cwd: &Path, workspace: &Path) {
        for path in self.paths_mut() {
            if path.is_relative() {
                let full = cwd.join(&*path);
                *path = match full.strip_prefix(workspace) {
                    Ok(rel) => rel.to_path_buf(),
                    Err(_) => full,
                };
            }
        }
    }
}

/// A resolved workspace; `below` is the current directory when the workspace was found above it.
#[derive(Debug)]
struct Located {
    dir: PathBuf,
    below: Option<PathBuf>,
}

/// Whether `dir` is a workspace: it has `agents/` (roles) or `.orchestrate/` (records).
pub fn is_workspace(dir: &Path) -> bool {
    dir.join("agents").is_dir() || dir.join(".orchestrate").is_dir()
}

/// Finds the workspace the way git finds a repository: `--workspace DIR`, else
/// `$ORCHESTRATE_WORKSPACE`, else the nearest directory at or above the current one that
/// is a workspace. With none found, a swarm command is refused and the others use the current
/// directory; `init` never looks upward.
fn locate_workspace(
    flag: Option<&Path>,
    env: Option<OsString>,
    needs: Needs,
) -> Result<Located, String> {
    let named = match (flag, env.filter(|v| !v.is_empty())) {
        (Some(dir), _) => Some((dir.to_path_buf(), "--workspace")),
        (None, Some(dir)) => Some((PathBuf::from(dir), WORKSPACE_ENV)),
        (None, None) => None,
    };
    if let Some((dir, from)) = named {
        let dir = dir.canonicalize().map_err(|e| {
            format!(
                "workspace {} (from {from}) is not usable: {e}",
                dir.display()
            )
        })?;
        if needs == Needs::Swarm && !is_workspace(&dir) {
            return Err(format!(
                "{} (from {from}) is not a workspace (no agents/ or .orchestrate/); name the directory that holds agents/, or run `orchestrate init` there",
                dir.display()
            ));
        }
        return Ok(Located { dir, below: None });
    }
    let cwd = std::env::current_dir()
        .and_then(|d| d.canonicalize())
        .map_err(|e| format!("cannot read the current directory: {e}"))?;
    if needs == Needs::Here {
        return Ok(Located {
            dir: cwd,
            below: None,
        });
    }
    match cwd.ancestors().find(|dir| is_workspace(dir)) {
        Some(dir) if dir == cwd => Ok(Located {
            dir: cwd,
            below: None,
        }),
        Some(dir) => Ok(Located {
            dir: dir.to_path_buf(),
            below: Some(cwd),
        }),
        None if needs == Needs::Swarm => Err(format!(
            "no workspace found from {} upward (no agents/ or .orchestrate/); cd into one or pass --workspace DIR (or set {WORKSPACE_ENV})",
            cwd.display()
        )),
        None => Ok(Located {
            dir: cwd,
            below: None,
        }),
    }
}

async fn dispatch(command: Command, workspace: PathBuf) -> u8 {
    match command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut out = std::io::stdout();
            clap_complete::generate(shell, &mut Cli::command(), "orchestrate", &mut out);
            exit::SUCCESS
        }
        Command::Man { dir } => man(dir.map(|d| workspace.join(d)).as_deref()),
        Command::Validate { files } => validate(&workspace, &files),
        Command::Gc {
            dry_run,
            older_than,
            force,
        } => orchestrate_engine::worktree::gc_command(
            &workspace,
            &orchestrate_engine::worktree::GcOptions {
                dry_run,
                older_than,
                force,
            },
            &|run_id| {
                orchestrate_observe::observe::status(&workspace, Some(run_id))
                    .ok()
                    .and_then(|view| view.status)
            },
        ),
        Command::Init { dir } => crate::commands::init(&workspace, dir.as_deref()),
        Command::Agent {
            role,
            replica,
            once,
            grace,
            quiet,
            metrics_dir,
        } => {
            let options = orchestrate_swarm::worker::AgentOptions {
                replica,
                once,
                grace,
                quiet,
                metrics_dir: orchestrate_swarm::metrics::dir_from(metrics_dir, &workspace),
            };
            crate::commands::agent(&workspace, &role, options).await
        }
        Command::Enqueue {
            role,
            file,
            text,
            stdin,
            name,
            correlation_id,
        } => crate::commands::enqueue(
            &workspace,
            &role,
            file.as_deref(),
            text.as_deref(),
            stdin.as_deref(),
            name.as_deref(),
            correlation_id.as_deref(),
        ),
        Command::Tasks { role, state, json } => {
            crate::commands::tasks(&workspace, role.as_deref(), state, json)
        }
        Command::Show { task, json } => crate::commands::show(&workspace, &task, json),
        Command::Retry { task } => crate::commands::retry(&workspace, &task),
        Command::Trace { id, json } => crate::commands::trace(&workspace, &id, json),
        Command::Swarm { action } => match action {
            SwarmAction::Up { detach, grace, .. } => {
                crate::commands::swarm_up(&workspace, detach, grace).await
            }
            SwarmAction::Down { force, timeout } => {
                crate::commands::swarm_down(&workspace, force, timeout)
            }
            SwarmAction::Status { json } => crate::commands::swarm_status(&workspace, json),
            SwarmAction::Reload { timeout } => crate::commands::swarm_reload(&workspace, timeout),
        },
        Command::Run {
            file,
            context,
            clean_processed,
            archive_processed,
            quiet,
            json,
            agents,
        } => {
            run(
                &workspace,
                &file,
                &context,
                clean_processed,
                archive_processed,
                (quiet, json),
                &agents,
            )
            .await
        }
        Command::Cancel {
            target,
            no_wait,
            timeout,
        } => orchestrate_swarm::control::cancel_command(
            &workspace,
            &target,
            (!no_wait).then_some(timeout),
        ),
        Command::Pause { role } => orchestrate_swarm::control::pause_command(&workspace, &role),
        Command::Resume {
            run_id, role, run, ..
        } if role || (!run && orchestrate_swarm::control::is_role(&workspace, &run_id)) => {
            orchestrate_swarm::control::resume_role_command(&workspace, &run_id)
        }
        Command::Resume {
            run_id,
            quiet,
            json,
            agents,
            ..
        } => {
            let mut config = RunConfig::new(workspace.clone(), Map::new(), signal_cancel());
            config.progress = !quiet;
            let reporter = orchestrate_engine::progress::Mode::choose(quiet, json).reporter();
            config.reporter = reporter.clone();
            if let Err(code) = agents.apply(&workspace, &mut config) {
                return code;
            }
            match Runner::resume(&run_id, config) {
                Ok(mut runner) => {
                    eprintln!("run_id: {}", runner.run_id());
                    // The run continues in the worktree it started in (made again from its
                    // branch if it was removed).
                    let owner = orchestrate_engine::worktree::Owner::Run {
                        run_id: runner.run_id().to_string(),
                    };
                    let spec =
                        orchestrate_engine::worktree::record_of(&workspace, &owner).map(|r| {
                            orchestrate_lang::model::WorktreeSpec {
                                base: Some(r.base),
                                keep: Some(r.keep),
                                dir: r
                                    .path
                                    .parent()
                                    .and_then(Path::parent)
                                    .map(|d| d.display().to_string()),
                                branch: Some(r.branch),
                                at: "the run's worktree record".into(),
                            }
                        });
                    let name = runner.workflow_name().to_string();
                    let worktree = match isolate(&workspace, spec, &mut runner, &name, quiet) {
                        Ok(record) => record,
                        Err(code) => return code,
                    };
                    drive(
                        runner,
                        reporter.as_ref(),
                        &workspace,
                        worktree.as_ref(),
                        quiet,
                        json,
                    )
                    .await
                    .0
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    exit::INVALID
                }
            }
        }
        Command::RunStep {
            step,
            workflow,
            context,
            from_run,
            quiet,
            agents,
        } => {
            run_step(
                &workspace,
                &step,
                &workflow,
                &context,
                from_run.as_deref(),
                quiet,
                &agents,
            )
            .await
        }
        Command::Watch {
            file,
            context,
            agents,
        } => watch(&workspace, &file, &context, &agents).await,
        Command::Test {
            file,
            fixtures,
            keep,
        } => crate::wftest::run(&workspace, &file, &fixtures, keep).await,
        Command::Status { run_id, json } => observe_status(&workspace, run_id.as_deref(), json),
        Command::Logs {
            run_id,
            step,
            follow,
        } => {
            let mut out = std::io::stdout();
            match orchestrate_observe::observe::logs(
                &workspace,
                &run_id,
                step.as_deref(),
                follow,
                &mut out,
            ) {
                Ok(()) => exit::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err}");
                    exit::INVALID
                }
            }
        }
        Command::Report {
            run_id,
            since,
            json,
        } => observe_report(&workspace, run_id, since, json),
        Command::Graph {
            file,
            run_id,
            format,
        } => observe_graph(&workspace, &file, run_id.as_deref(), format),
        Command::Argv {
            runtime,
            phase,
            model,
            max_turns,
            resume,
            allow_shell,
        } => print_argv(
            &workspace,
            runtime,
            phase,
            model.as_deref(),
            max_turns,
            resume.as_deref(),
            &allow_shell,
        ),
        Command::Approve {
            run_id,
            step,
            note,
            by,
        } => decide(
            &workspace,
            &run_id,
            &step,
            orchestrate_engine::approval::Verdict::Approve,
            None,
            note,
            by,
        ),
        Command::Reject {
            run_id,
            step,
            reason,
            by,
        } => decide(
            &workspace,
            &run_id,
            &step,
            orchestrate_engine::approval::Verdict::Reject,
            Some(reason),
            None,
            by,
        ),
    }
}

/// `orchestrate man`: the page on stdout, or every command's page written into `dir`.
fn man(dir: Option<&Path>) -> u8 {
    use clap::CommandFactory;
    let written = match dir {
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
            .map(|()| eprintln!("man pages written to {}", dir.display())),
        None => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()),
    };
    match written {
        Ok(()) => exit::SUCCESS,
        // `orchestrate man | head` is not a failure.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => exit::SUCCESS,
        Err(err) => {
            let target = dir.map_or("stdout".into(), |d| d.display().to_string());
            eprintln!("error: failed to write the man page to {target}: {err}");
            exit::STEP_FAILED
        }
    }
}

fn observe_status(workspace: &Path, run_id: Option<&str>, json: bool) -> u8 {
    let view = match orchestrate_observe::observe::status(workspace, run_id) {
        Ok(view) => view,
        Err(err) => {
            eprintln!("error: {err}");
            return exit::INVALID;
        }
    };
    // With no run named, a running swarm is part of "where things are".
    let swarm = if run_id.is_none() {
        orchestrate_swarm::supervisor::status(workspace)
            .ok()
            .filter(|s| s.supervisor.is_some())
    } else {
        None
    };
    if json {
        println!("{}", serde_json::json!({"run": view, "swarm": swarm}));
    } else {
        print!("{}", view.render());
        if let Some(swarm) = swarm {
            println!();
            print!("{}", orchestrate_swarm::supervisor::render_status(&swarm));
        }
    }
    exit::SUCCESS
}

fn observe_report(
    workspace: &Path,
    run_id: Option<String>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    json: bool,
) -> u8 {
    use orchestrate_observe::observe::RunSelector;
    let selector = match (run_id, since) {
        (Some(id), _) => RunSelector::One(id),
        (None, Some(time)) => RunSelector::Since(time),
        (None, None) => RunSelector::All,
    };
    match orchestrate_observe::observe::report(workspace, selector) {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", report.render());
            }
            exit::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            exit::INVALID
        }
    }
}

fn observe_graph(
    workspace: &Path,
    file: &Path,
    run_id: Option<&str>,
    format: orchestrate_observe::observe::GraphFormat,
) -> u8 {
    use orchestrate_observe::observe::{self, Report, RunSelector};
    let workflow = match load::load_in(workspace, &workspace.join(file)) {
        Ok(w) => w,
        Err(err) => {
            eprint!("{}", relative_render(&err, workspace));
            return exit::INVALID;
        }
    };
    let text = match run_id {
        None => observe::graph(&workflow, None, format),
        Some(id) => match observe::report(workspace, RunSelector::One(id.to_string())) {
            Ok(Report::Run(run)) => observe::graph_of_run(&workflow, &run, format),
            Ok(_) => observe::graph(&workflow, None, format),
            Err(err) => {
                eprintln!("error: {err}");
                return exit::INVALID;
            }
        },
    };
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    exit::SUCCESS
}

fn print_argv(
    workspace: &Path,
    runtime: orchestrate_runtime::parse::Runtime,
    phase: orchestrate_lang::model::Phase,
    model: Option<&str>,
    max_turns: Option<u32>,
    resume: Option<&str>,
    allow_shell: &[String],
) -> u8 {
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
    exit::SUCCESS
}

fn decide(
    workspace: &Path,
    run_id: &str,
    step: &str,
    verdict: orchestrate_engine::approval::Verdict,
    reason: Option<String>,
    note: Option<String>,
    by: Option<String>,
) -> u8 {
    match orchestrate_engine::approval::decide(workspace, run_id, step, verdict, reason, note, by) {
        Ok(path) => {
            let word = if verdict == orchestrate_engine::approval::Verdict::Approve {
                "approved"
            } else {
                "rejected"
            };
            eprintln!(
                "{word} step `{step}` of run {run_id} ({})",
                path.strip_prefix(workspace).unwrap_or(&path).display()
            );
            exit::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            exit::INVALID
        }
    }
}

fn validate(workspace: &Path, files: &[PathBuf]) -> u8 {
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
        eprintln!("{problems} problem(s) found");
        exit::INVALID
    } else {
        exit::SUCCESS
    }
}

/// Renders load errors with paths relative to the workspace, as the user typed them.
fn relative_render(err: &LoadError, workspace: &Path) -> String {
    let mut err_copy = LoadError {
        path: err.path.clone(),
        source_text: err.source_text.clone(),
        diagnostics: err.diagnostics.clone(),
    };
    for d in &mut err_copy.diagnostics {
        if let Ok(rel) = d.file.strip_prefix(workspace) {
            d.file = rel.to_path_buf();
        }
    }
    let mut text = err_copy.render();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Loads a workflow for running: problems are printed and mean exit 2.
fn load_for_run(workspace: &Path, file: &Path) -> Result<(Workflow, String), u8> {
    let path = workspace.join(file);
    match load::load_in(workspace, &path) {
        Ok(mut workflow) => {
            workflow.path = file.to_path_buf();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            Ok((workflow, text))
        }
        Err(err) => {
            eprint!("{}", relative_render(&err, workspace));
            eprintln!(
                "error: the workflow has {} problem(s); nothing was run",
                err.diagnostics.len()
            );
            Err(exit::INVALID)
        }
    }
}

/// Context precedence: workflow `context:` defaults, then `--context-file`, then `--context`.
fn build_context(
    workspace: &Path,
    workflow: &Workflow,
    args: &ContextArgs,
) -> Result<Map<String, Value>, String> {
    let mut context = workflow.context.clone();
    if let Some(file) = &args.context_file {
        let path = workspace.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read --context-file {}: {e}", file.display()))?;
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => context.extend(map),
            Ok(_) => {
                return Err(format!(
                    "--context-file {} must hold a JSON object",
                    file.display()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "--context-file {} is not valid JSON: {e}",
                    file.display()
                ));
            }
        }
    }
    for pair in &args.pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("--context `{pair}` must be KEY=VALUE"));
        };
        if key.is_empty() {
            return Err(format!("--context `{pair}` has an empty key"));
        }
        context.insert(key.to_string(), Value::String(value.to_string()));
    }
    Ok(context)
}

/// Cancels the token on the first SIGINT or SIGTERM; exits at once on the second.
pub(crate) fn signal_cancel() -> CancellationToken {
    let (stop, kill) = crate::commands::signal_pair();
    let token = stop.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        eprintln!("interrupted: stopping the current step (press Ctrl-C again to exit at once)");
        kill.cancelled().await;
        // Nothing the run started outlives it.
        orchestrate_base::exec::kill_all_now();
        std::process::exit(i32::from(exit::INTERRUPTED));
    });
    token
}

async fn run(
    workspace: &Path,
    file: &Path,
    context: &ContextArgs,
    clean: bool,
    archive: Option<Option<PathBuf>>,
    (quiet, json): (bool, bool),
    agents: &AgentArgs,
) -> u8 {
    let (workflow, text) = match load_for_run(workspace, file) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let context = match build_context(workspace, &workflow, context) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::INVALID;
        }
    };
    let needs_processed = clean || archive.is_some();
    let processed_dir = if needs_processed {
        match processed::processed_dir(workspace, &workflow.queue.processed_dir) {
            Ok(dir) => Some(dir),
            Err(err) => {
                eprintln!("error: {err}");
                return exit::INVALID;
            }
        }
    } else {
        None
    };
    if let (Some(dir), Some(Some(dest))) = (&processed_dir, &archive)
        && let Err(err) = processed::check_archive_dest(dir, &workspace.join(dest))
    {
        eprintln!("error: {err}");
        return exit::INVALID;
    }
    if clean && let Some(dir) = &processed_dir {
        match processed::clean(dir) {
            Ok(n) if !quiet => eprintln!("cleaned {} ({n} entries removed)", dir.display()),
            Ok(_) => {}
            Err(err) => {
                eprintln!("error: {err}");
                return exit::INVALID;
            }
        }
    }
    let cancel = signal_cancel();
    let mut config = RunConfig::new(workspace.to_path_buf(), context, cancel);
    config.progress = !quiet;
    let reporter = orchestrate_engine::progress::Mode::choose(quiet, json).reporter();
    config.reporter = reporter.clone();
    if let Err(code) = agents.apply(workspace, &mut config) {
        return code;
    }
    let isolation = orchestrate_engine::worktree::effective(None, workflow.isolation.as_ref());
    let workflow_name = workflow.name.clone();
    let mut runner = match Runner::create(workflow, &text, config) {
        Ok(r) => r,
        Err(err) => {
            eprintln!("error: {err}");
            return exit::INVALID;
        }
    };
    eprintln!("run_id: {}", runner.run_id());
    let worktree = match isolate(workspace, isolation, &mut runner, &workflow_name, quiet) {
        Ok(record) => record,
        Err(code) => {
            // Nothing ran: no run to resume or to list.
            let root = runner.run_root().to_path_buf();
            drop(runner);
            let _ = std::fs::remove_dir_all(root);
            return code;
        }
    };
    let (code, root) = drive(
        runner,
        reporter.as_ref(),
        workspace,
        worktree.as_ref(),
        quiet,
        json,
    )
    .await;
    if code == exit::SUCCESS
        && let (Some(dir), Some(dest)) = (&processed_dir, archive)
    {
        let dest = match dest {
            Some(dest) => workspace.join(dest),
            None => root.join("processed.zip"),
        };
        match processed::archive(dir, &dest) {
            Ok(n) => {
                if !quiet {
                    eprintln!(
                        "archived {n} file(s) from {} to {}",
                        dir.display(),
                        dest.display()
                    );
                }
            }
            Err(err) => {
                eprintln!("error: {err}");
                return exit::STEP_FAILED;
            }
        }
    }
    code
}

/// Under `isolation: worktree`, makes (or reopens) the run's worktree and points the runner's
/// steps at it; an error is printed and becomes the exit code.
fn isolate(
    workspace: &Path,
    spec: Option<orchestrate_lang::model::WorktreeSpec>,
    runner: &mut Runner,
    workflow: &str,
    quiet: bool,
) -> Result<Option<orchestrate_engine::worktree::Record>, u8> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    let owner = orchestrate_engine::worktree::Owner::Run {
        run_id: runner.run_id().to_string(),
    };
    match orchestrate_engine::worktree::prepare(workspace, &spec, &owner, workflow) {
        Ok(record) => {
            if !quiet {
                eprintln!(
                    "worktree: {} (branch `{}`)",
                    record.checkout.display(),
                    record.branch
                );
            }
            runner.set_checkout(record.checkout.clone());
            Ok(Some(record))
        }
        Err(err) => {
            eprintln!(
                "error: failed to prepare the worktree of run {}: {err}",
                runner.run_id()
            );
            Err(exit::INVALID)
        }
    }
}

/// Runs a created or resumed run to its end, as `run` and `resume` do: the live display
/// closed, the outcome reported, the worktree ended, the trace exported. Returns the exit code
/// and RUN_ROOT.
async fn drive(
    runner: Runner,
    reporter: Option<&std::sync::Arc<dyn orchestrate_engine::progress::Reporter>>,
    workspace: &Path,
    worktree: Option<&orchestrate_engine::worktree::Record>,
    quiet: bool,
    json: bool,
) -> (u8, PathBuf) {
    let root = runner.run_root().to_path_buf();
    let outcome = runner.run().await;
    if let Some(reporter) = reporter {
        reporter.finish();
    }
    let succeeded = matches!(&outcome, Ok(r) if r.status == RunStatus::Succeeded);
    if let Ok(report) = &outcome
        && report.status == RunStatus::Succeeded
        && !json
    {
        // The run's result on stdout (`--json` has it in its `run_finished` event).
        print!("{}", result_text(report));
    }
    let code = report(outcome);
    end_worktree(workspace, worktree, succeeded, quiet);
    orchestrate_observe::otlp::export_run(&root);
    (code, root)
}

/// After an isolated run: a success removes its worktree (per `keep`), anything else keeps it
/// for `resume` and inspection.
fn end_worktree(
    workspace: &Path,
    record: Option<&orchestrate_engine::worktree::Record>,
    succeeded: bool,
    quiet: bool,
) {
    if let Some(record) = record {
        let ending = orchestrate_engine::worktree::finish(workspace, record, succeeded);
        if !quiet || ending.kept && succeeded {
            eprintln!("{}", ending.note);
        }
    }
}

/// What a successful run produced, as stdout shows it: the workflow's `outputs:`, one
/// `NAME: VALUE` line each, or without them the output of the step recorded last (the demo's
/// summary). Empty when there is neither.
fn result_text(report: &RunReport) -> String {
    let mut out = String::new();
    if !report.values.is_empty() {
        for (name, value) in &report.values {
            let value = match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{name}: {value}\n"));
        }
    } else if let Some(text) = &report.last_output {
        out.push_str(text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

fn report(outcome: Result<RunReport, orchestrate_engine::runner::RunError>) -> u8 {
    match outcome {
        Ok(report) => {
            match report.status {
                RunStatus::Succeeded => eprintln!("run {} succeeded", report.run_id),
                RunStatus::Interrupted => eprintln!(
                    "run {} interrupted; continue it with `orchestrate resume {}`",
                    report.run_id, report.run_id
                ),
                _ => eprintln!(
                    "run {} failed: {}\n  logs: {}\n  after fixing the cause, continue with `orchestrate resume {}`",
                    report.run_id,
                    report.error.as_deref().unwrap_or("a step failed"),
                    report.run_root.join("logs").display(),
                    report.run_id
                ),
            }
            report.exit_code
        }
        Err(err) => {
            eprintln!("error: {err}");
            exit::STEP_FAILED
        }
    }
}

async fn run_step(
    workspace: &Path,
    name: &str,
    file: &Path,
    context: &ContextArgs,
    from_run: Option<&str>,
    quiet: bool,
    agents: &AgentArgs,
) -> u8 {
    let (workflow, text) = match load_for_run(workspace, file) {
        Ok(w) => w,
        Err(code) => return code,
    };
    let Some(step) = workflow.find_step(name).cloned() else {
        let names: Vec<String> = workflow
            .all_steps()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let hint = orchestrate_lang::diag::did_you_mean(name, names.iter().map(String::as_str))
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| format!("steps: {}", names.join(", ")));
        eprintln!("error: {} has no step `{name}`; {hint}", file.display());
        return exit::INVALID;
    };
    let context = match build_context(workspace, &workflow, context) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::INVALID;
        }
    };
    let preset = match from_run {
        Some(run_id) => match RunDir::new(workspace, run_id).read_state() {
            Ok(state) => state.steps,
            Err(err) => {
                eprintln!("error: {err}");
                return exit::INVALID;
            }
        },
        None => Map::new(),
    };
    let mut single = workflow;
    let mut step = step;
    step.on = Default::default();
    single.steps = vec![step];
    let mut config = RunConfig::new(workspace.to_path_buf(), context, signal_cancel());
    config.progress = !quiet;
    config.preset_results = preset;
    if let Err(code) = agents.apply(workspace, &mut config) {
        return code;
    }
    let runner = match Runner::create(single, &text, config) {
        Ok(r) => r,
        Err(err) => {
            eprintln!("error: {err}");
            return exit::INVALID;
        }
    };
    eprintln!("run_id: {}", runner.run_id());
    report(runner.run().await)
}

/// Runs the workflow, then again whenever its file changes; a change during a run stops it
/// first (like watchexec's restart).
async fn watch(workspace: &Path, file: &Path, context: &ContextArgs, agents: &AgentArgs) -> u8 {
    use notify::{RecursiveMode, Watcher};
    let path = workspace.join(file);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let target = path.clone();
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                let relevant = event.need_rescan() || event.paths.iter().any(|p| p == &target);
                if relevant && !matches!(event.kind, notify::EventKind::Access(_)) {
                    let _ = tx.send(());
                }
            }
        }) {
            Ok(w) => w,
            Err(err) => {
                eprintln!("error: failed to watch {}: {err}", file.display());
                return exit::INVALID;
            }
        };
    // Editors often replace the file by rename, so watch the directory.
    let dir = path.parent().unwrap_or(workspace).to_path_buf();
    if let Err(err) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        eprintln!("error: failed to watch {}: {err}", dir.display());
        return exit::INVALID;
    }
    let stop = signal_cancel();
    loop {
        let cancel = stop.child_token();
        let run_cancel = cancel.clone();
        let ws = workspace.to_path_buf();
        let run_file = file.to_path_buf();
        let context = context.clone();
        let agents = agents.clone();
        let run = async move {
            let (workflow, text) = match load_for_run(&ws, &run_file) {
                Ok(w) => w,
                Err(code) => return code,
            };
            let context = match build_context(&ws, &workflow, &context) {
                Ok(c) => c,
                Err(message) => {
                    eprintln!("error: {message}");
                    return exit::INVALID;
                }
            };
            let mut config = RunConfig::new(ws.clone(), context, run_cancel);
            config.progress = true;
            if let Err(code) = agents.apply(&ws, &mut config) {
                return code;
            }
            match Runner::create(workflow, &text, config) {
                Ok(runner) => {
                    eprintln!("run_id: {}", runner.run_id());
                    report(runner.run().await)
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    exit::INVALID
                }
            }
        };
        tokio::pin!(run);
        let mut changed = false;
        tokio::select! {
            _ = &mut run => {}
            Some(()) = rx.recv() => {
                changed = true;
                cancel.cancel();
                run.await;
            }
        }
        if stop.is_cancelled() {
            return exit::INTERRUPTED;
        }
        if !changed {
            eprintln!("watching {} for changes (Ctrl-C to stop)", file.display());
            tokio::select! {
                Some(()) = rx.recv() => {}
                _ = stop.cancelled() => return exit::INTERRUPTED,
            }
        }
        // Let a burst of writes settle, then drain it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while rx.try_recv().is_ok() {}
        eprintln!("{} changed; running again", file.display());
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument and flag of every command says what it is for in `--help`.
    #[test]
    fn every_argument_of_every_command_is_described() {
        fn walk(command: &clap::Command, path: &str, undescribed: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.get_about().is_none() && !command.is_hide_set() {
                undescribed.push(format!("`{path}` itself"));
            }
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
                    undescribed.push(format!("`{path}`: {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_name() != "help" {
                    walk(sub, &path, undescribed);
                }
            }
        }
        let mut undescribed = Vec::new();
        walk(&super::Cli::command(), "", &mut undescribed);
        assert!(
            undescribed.is_empty(),
            "give these a doc comment in src/cli.rs:\n{}",
            undescribed.join("\n")
        );
    }
}
