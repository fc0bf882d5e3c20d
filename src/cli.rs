//! The command line: argument parsing, finding the workspace, and rendering a command's outcome.
//!
//! Owns: turning `orchestrate <command> ...` into one call per command (`dispatch`), finding
//! WORKSPACE (`locate_workspace`: `--workspace`, `$ORCHESTRATE_WORKSPACE`, else upward as git
//! does) and resolving every user path against it, and the async runtime the commands run on.
//! Does not implement any command (`commands`) nor print errors itself (`error::render`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use orchestrate_base::fsutil::WORKSPACE_ENV;
use orchestrate_engine::runner::exit;

use crate::commands::{self, AgentArgs, ContextArgs};
use crate::error::{Error, Outcome, render};

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
    /// The lease guard of a role process on a database queue (started by it; not for people).
    #[command(name = "__lease-guard", hide = true)]
    LeaseGuard {
        /// The role process.
        pid: u32,
        /// Its role's `running/` directory.
        running: PathBuf,
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
    /// The swarm's queue on PostgreSQL: create or upgrade its schema.
    Db {
        #[command(subcommand)]
        action: DbAction,
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
enum DbAction {
    /// Create the queue's schema in the database, or upgrade it to this version's; safe to run
    /// again, and from two machines at once.
    Migrate {
        /// The database: `postgres://USER:PASSWORD@HOST:PORT/DATABASE` or `host=… user=…
        /// dbname=…` (default: `ORCHESTRATE_QUEUE_URL`, else `queue:` in swarm.yaml).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
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
        /// This machine's labels, which roles' `machines:` ask for (comma-separated; sets
        /// ORCHESTRATE_MACHINE_LABELS for the role processes, over `machine_labels:` of
        /// swarm.yaml).
        #[arg(long, value_name = "LABEL,...", value_delimiter = ',')]
        labels: Option<Vec<String>>,
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
        Err(message) => return render(Err(Error::Invalid(message))),
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
    if let Command::Swarm {
        action: SwarmAction::Up {
            labels: Some(labels),
            ..
        },
    } = &command
    {
        let labels: Vec<&str> = labels
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        if let Some((label, reason)) = labels
            .iter()
            .find_map(|l| orchestrate_base::ids::check_id(l).err().map(|r| (l, r)))
        {
            eprintln!("error: `{label}` (--labels) is not a valid machine label: {reason}");
            return ExitCode::from(2);
        }
        // The role processes (and a detached supervisor) inherit it.
        // SAFETY: no other thread exists yet: the async runtime is started below.
        unsafe { std::env::set_var("ORCHESTRATE_MACHINE_LABELS", labels.join(",")) };
    }
    // One thread for every command, a role process included: its tasks' steps are processes,
    // its waits are on descriptors, and the fsyncs of its completions have a thread of their
    // own (`worker::finish`). A second worker thread only added hand-offs between the two
    // (measured: the same drain rate, more context switches per task).
    let mut builder = tokio::runtime::Builder::new_current_thread();
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            let message = format!("failed to start the async runtime: {err}");
            return render(Err(Error::Invalid(message)));
        }
    };
    render(runtime.block_on(dispatch(command, workspace)))
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
            Command::Init { .. }
            | Command::Completions { .. }
            | Command::Man { .. }
            | Command::Db { .. }
            | Command::LeaseGuard { .. } => Needs::Here,
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
fn is_workspace(dir: &Path) -> bool {
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

/// One function per command; each returns its outcome for `main` to render. Runs, workflows
/// and reading back here; the swarm's commands in `dispatch_swarm`.
async fn dispatch(command: Command, workspace: PathBuf) -> Outcome {
    let ws = workspace.as_path();
    match command {
        Command::Db {
            action: DbAction::Migrate { url },
        } => commands::db::migrate(ws, url).await,
        Command::Completions { shell } => commands::docs::completions(shell, Cli::command()),
        Command::Man { dir } => {
            commands::docs::man(dir.map(|d| ws.join(d)).as_deref(), Cli::command())
        }
        Command::Validate { files } => commands::validate::validate(ws, &files),
        Command::Gc {
            dry_run,
            older_than,
            force,
        } => commands::gc::gc(ws, dry_run, older_than, force),
        Command::Run {
            file,
            context,
            clean_processed,
            archive_processed,
            quiet,
            json,
            agents,
        } => {
            let archive = archive_processed;
            let mode = (quiet, json);
            commands::run::run(ws, &file, &context, clean_processed, archive, mode, &agents).await
        }
        Command::Resume {
            run_id, role, run, ..
        } if role || (!run && orchestrate_swarm::control::is_role(ws, &run_id)) => {
            commands::steer::resume_role(ws, &run_id)
        }
        Command::Resume {
            run_id,
            quiet,
            json,
            agents,
            ..
        } => commands::run::resume(ws, &run_id, quiet, json, &agents).await,
        Command::RunStep {
            step,
            workflow,
            context,
            from_run,
            quiet,
            agents,
        } => {
            let from_run = from_run.as_deref();
            commands::run::run_step(ws, &step, &workflow, &context, from_run, quiet, &agents).await
        }
        Command::Watch {
            file,
            context,
            agents,
        } => commands::run::watch(ws, &file, &context, &agents).await,
        Command::Test {
            file,
            fixtures,
            keep,
        } => commands::test::run(ws, &file, &fixtures, keep).await,
        Command::Status { run_id, json } => commands::observe::status(ws, run_id.as_deref(), json),
        Command::Logs {
            run_id,
            step,
            follow,
        } => commands::observe::logs(ws, &run_id, step.as_deref(), follow),
        Command::Report {
            run_id,
            since,
            json,
        } => commands::observe::report(ws, run_id, since, json),
        Command::Graph {
            file,
            run_id,
            format,
        } => commands::observe::graph(ws, &file, run_id.as_deref(), format),
        Command::Argv {
            runtime,
            phase,
            model,
            max_turns,
            resume,
            allow_shell,
        } => commands::argv::print_argv(
            ws,
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
        } => {
            let verdict = orchestrate_engine::approval::Verdict::Approve;
            commands::approve::decide(ws, &run_id, &step, verdict, None, note, by)
        }
        Command::Reject {
            run_id,
            step,
            reason,
            by,
        } => {
            let verdict = orchestrate_engine::approval::Verdict::Reject;
            commands::approve::decide(ws, &run_id, &step, verdict, Some(reason), None, by)
        }
        swarm => dispatch_swarm(swarm, ws).await,
    }
}

/// The swarm's commands: the queue, role processes, the supervisor, steering.
async fn dispatch_swarm(command: Command, ws: &Path) -> Outcome {
    match command {
        Command::Init { dir } => commands::init::init(ws, dir.as_deref()),
        Command::Agent {
            role,
            replica,
            once,
            grace,
            quiet,
            metrics_dir,
        } => commands::agent::agent(ws, &role, replica, once, grace, quiet, metrics_dir).await,
        Command::LeaseGuard { pid, running } => {
            orchestrate_swarm::guard::run(pid, running);
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Enqueue {
            role,
            file,
            text,
            stdin,
            name,
            correlation_id,
        } => commands::tasks::enqueue(
            ws,
            &role,
            file.as_deref(),
            text.as_deref(),
            stdin.as_deref(),
            name.as_deref(),
            correlation_id.as_deref(),
        ),
        Command::Tasks { role, state, json } => {
            commands::tasks::tasks(ws, role.as_deref(), state, json)
        }
        Command::Show { task, json } => commands::tasks::show(ws, &task, json),
        Command::Retry { task } => commands::tasks::retry(ws, &task),
        Command::Trace { id, json } => commands::tasks::trace(ws, &id, json),
        Command::Swarm { action } => match action {
            SwarmAction::Up { detach, grace, .. } => {
                commands::swarm::swarm_up(ws, detach, grace).await
            }
            SwarmAction::Down { force, timeout } => commands::swarm::swarm_down(ws, force, timeout),
            SwarmAction::Status { json } => commands::swarm::swarm_status(ws, json),
            SwarmAction::Reload { timeout } => commands::swarm::swarm_reload(ws, timeout),
        },
        Command::Cancel {
            target,
            no_wait,
            timeout,
        } => commands::steer::cancel(ws, &target, (!no_wait).then_some(timeout)),
        Command::Pause { role } => commands::steer::pause(ws, &role),
        other => unreachable!("`dispatch` runs {other:?}"),
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
