//! `orchestrate test WORKFLOW --fixtures DIR`: runs a workflow with every agent step answered
//! from fixture files instead of a real CLI, and checks the path taken and the outputs against
//! the expectations written next to them.
//!
//! Owns: finding the cases, the scratch workspace each case runs in, the fixture agent (this
//! same binary, started by the runner as the `fixture` profile's executable with
//! [`AGENT_ENV`] set, answering in claude's stream-json format so that the real parser reads
//! it), answering approval steps, and comparing. It does not interpret workflows: the runner
//! runs them exactly as `orchestrate run` does; nor print a case's verdict (`commands::test`).
//!
//! A case is a directory holding `expect.yaml`:
//!
//! ```yaml
//! context: {task: "add a flag"}      # the run's context (over the workflow's defaults)
//! path: [Plan, Review, Plan, Review] # the steps that ran, in order (skipped ones left out)
//! status: succeeded                  # or failed
//! exit_code: 0
//! outputs:                           # STEP.FIELD[.PATH...] of each step's last result
//!   Review.json.approved: true
//! approvals:                         # answers to approval steps, one per visit
//!   Approve: [approve, {reject: "too broad"}]
//! task:                              # run as a role's task: `${task.*}` as a role process sets
//!   role: architect                  # (default: the workflow's name; agents/ROLE.yaml, when
//!   id: t1                           #  present, lends its capabilities and budget)
//!   text: "Add a --verbose flag"     # or `json: {...}`; id defaults to the case's name
//! enqueued:                          # the tasks the run handed on, in order (all of them)
//!   - {role: engineer, id: t1, text: "Implement ..."}   # text/json: the content, exactly
//! ```
//!
//! and `agents/STEP.json` (every visit) or `agents/STEP.N.json` (visit N, from 1): `{"result":
//! text or JSON, "usage": {"input_tokens", "output_tokens"}, "cost_usd", "exit_code",
//! "is_error", "writes": {"path": "content"}}`. A `files/` directory is copied over the scratch
//! workspace first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use orchestrate_engine::event::{Envelope, Event, StepFinished};
use orchestrate_engine::runner::{RunConfig, Runner};
use orchestrate_engine::step_result::StepStatus;

/// Set (to a case's directory) in the environment of the fixture agent's process.
pub(crate) const AGENT_ENV: &str = "ORCHESTRATE_FIXTURE_AGENT";
/// `text` when the fixture agent answers a provider step: the result alone on stdout.
const FORMAT_ENV: &str = "ORCHESTRATE_FIXTURE_FORMAT";
/// Where the fixture agent counts visits per step.
const STATE_ENV: &str = "ORCHESTRATE_FIXTURE_STATE";
/// The profile agent steps run under in a test.
const PROFILE: &str = "fixture";
/// Workspace entries a scratch copy leaves out: records, queues, build output, VCS data.
const NOT_COPIED: &[&str] = &[
    ".git",
    ".orchestrate",
    "target",
    "node_modules",
    "processed",
    "failed",
    "running",
    "inbox",
    "approvals",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    #[allow(dead_code, reason = "documentation for people reading the case")]
    description: Option<String>,
    #[serde(default)]
    context: Map<String, Value>,
    #[serde(default)]
    path: Option<Vec<String>>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    exit_code: Option<i64>,
    #[serde(default)]
    outputs: BTreeMap<String, Value>,
    #[serde(default)]
    approvals: BTreeMap<String, Answers>,
    #[serde(default)]
    task: Option<TaskCase>,
    #[serde(default)]
    enqueued: Option<Vec<EnqueuedCase>>,
}

/// `task:`: the run is a role's task.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskCase {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    json: Option<Value>,
}

/// One entry of `enqueued:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueuedCase {
    role: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    json: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Answers {
    One(Answer),
    Each(Vec<Answer>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Answer {
    /// `approve` (or `reject`, which then needs a reason: use the map form).
    Word(String),
    /// `{reject: "reason"}` or `{approve: "note"}`.
    WithText(BTreeMap<String, String>),
}

/// One case's verdict.
pub(crate) struct Verdict {
    pub(crate) name: String,
    pub(crate) problems: Vec<String>,
    pub(crate) path: Vec<String>,
    /// The scratch workspace, when it was kept.
    pub(crate) kept: Option<PathBuf>,
}

pub(crate) fn find_cases(fixtures: &Path) -> Result<Vec<PathBuf>, String> {
    if fixtures.join("expect.yaml").is_file() {
        return Ok(vec![fixtures.to_path_buf()]);
    }
    let entries = std::fs::read_dir(fixtures).map_err(|e| {
        format!(
            "cannot read the fixtures directory {}: {e}",
            fixtures.display()
        )
    })?;
    let mut cases: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("expect.yaml").is_file())
        .collect();
    cases.sort();
    if cases.is_empty() {
        return Err(format!(
            "no test case in {}: a case is a directory with an expect.yaml (see docs/workflows.md, \"Testing a workflow\")",
            fixtures.display()
        ));
    }
    Ok(cases)
}

pub(crate) async fn run_case(
    workspace: &Path,
    workflow_rel: &Path,
    case: &Path,
    keep: bool,
) -> Result<Verdict, String> {
    let name = case
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let expect_path = case.join("expect.yaml");
    let text = std::fs::read_to_string(&expect_path)
        .map_err(|e| format!("cannot read {}: {e}", expect_path.display()))?;
    let expect: Expect = serde_saphyr::from_str(&text)
        .map_err(|e| format!("{} is not a valid expect.yaml: {e}", expect_path.display()))?;
    let case = std::fs::canonicalize(case).map_err(|e| format!("{}: {e}", case.display()))?;

    // A scratch copy of the workspace, with the case's files over it.
    let scratch = Scratch::new()?;
    let ws = scratch.0.join("ws");
    copy_tree(workspace, &ws, true)?;
    if case.join("files").is_dir() {
        copy_tree(&case.join("files"), &ws, false)?;
    }
    let state = scratch.0.join("fixture-state");
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;

    let workflow_path = ws.join(workflow_rel);
    // A task's workflow loads as its role's would, except that claude's runtime stands in for
    // the role's (steps without a provider become agent steps, which the fixture profile
    // answers as it does every agent step).
    let options = orchestrate_lang::load::LoadOptions {
        default_provider: expect.task.as_ref().map(|_| "claude".into()),
        workspace: Some(ws.clone()),
        ancestors: Vec::new(),
    };
    let mut workflow =
        orchestrate_lang::load::load_file_with(&workflow_path, &options).map_err(|e| e.render())?;
    workflow.path = workflow_rel.to_path_buf();
    let source = std::fs::read_to_string(&workflow_path).unwrap_or_default();
    // A task case's role: `task.role`, else the workflow's name.
    let role = expect
        .task
        .as_ref()
        .map(|task| task.role.clone().unwrap_or_else(|| workflow.name.clone()));
    let role_def = match &role {
        Some(role) => role_file(role, &ws, workflow_rel)?,
        None => None,
    };

    let mut profiles = orchestrate_runtime::profile::Profiles::load(&ws).map_err(|e| e.render())?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    profiles.profiles.insert(
        PROFILE.into(),
        orchestrate_runtime::profile::Profile {
            runtime: "claude".into(),
            model: Some("fixture".into()),
            env: vec![
                (AGENT_ENV.into(), case.display().to_string()),
                (STATE_ENV.into(), state.display().to_string()),
            ],
            bin: Some(exe.display().to_string()),
            ..Default::default()
        },
    );

    // Provider steps (a command template around a CLI) are answered by the fixture agent too,
    // printing the answer's result as text; in child workflows as well.
    let fixture_command: Vec<orchestrate_lang::template::Template> = [
        "env".to_string(),
        format!("{AGENT_ENV}={}", case.display()),
        format!("{STATE_ENV}={}", state.display()),
        format!("{FORMAT_ENV}=text"),
        exe.display().to_string(),
    ]
    .into_iter()
    .map(orchestrate_lang::template::Template::literal)
    .collect();
    answer_providers(&mut workflow, &fixture_command);
    let mut context = workflow.context.clone();
    context.extend(expect.context.clone());
    let cancel = CancellationToken::new();
    let mut config = RunConfig::new(ws.clone(), context, cancel.clone());
    config.runtime_override = Some(PROFILE.into());
    config.profiles = Arc::new(profiles);
    if let (Some(task), Some(role)) = (&expect.task, &role) {
        as_task(&mut config, task, role, role_def, &ws, &name, &expect_path)?;
    }
    let runner = Runner::create(workflow, &source, config).map_err(|e| e.to_string())?;
    let run_root = runner.run_root().to_path_buf();
    let run_id = run_root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    let mut problems = Vec::new();
    let answering = tokio::spawn(answer_approvals(
        ws.clone(),
        run_id.clone(),
        expect.approvals.clone(),
        cancel.clone(),
    ));
    let report = runner.run().await;
    answering.abort();
    if let Ok(Err(problem)) = answering.await {
        problems.push(problem);
    }
    let report = report.map_err(|e| e.to_string())?;

    let path = compare(&expect, &report, &run_root, &ws, &mut problems)?;
    // A failing case keeps its scratch workspace for a look; a passing one only when asked.
    let kept = (keep || !problems.is_empty()).then(|| scratch.keep().join("ws"));
    Ok(Verdict {
        name,
        problems,
        path,
        kept,
    })
}

/// Checks a finished case's run against its expectations (path, status, exit code, outputs,
/// enqueued tasks), adding what differs to `problems`; returns the path the run took.
fn compare(
    expect: &Expect,
    report: &orchestrate_engine::runner::RunReport,
    run_root: &Path,
    ws: &Path,
    problems: &mut Vec<String>,
) -> Result<Vec<String>, String> {
    let events = orchestrate_engine::events::read_checked(&run_root.join("events.jsonl"))
        .map_err(|e| format!("cannot read the run's events: {e}"))?
        .records;
    let mut path = Vec::new();
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    let finished: Vec<Finished> = events
        .iter()
        .filter_map(|record| match Event::from_record(record) {
            Event::StepFinished(event) => Some(Finished {
                lane: Envelope::from_record(record).lane,
                event,
            }),
            _ => None,
        })
        .collect();
    for finished in in_item_order(&finished) {
        let result = &finished.event.result;
        if result.status == StepStatus::Skipped {
            continue;
        }
        path.push(finished.event.step.clone());
        // Compared as `${steps.NAME.*}` sees the result: as JSON.
        last.insert(finished.event.step.clone(), result.to_value());
    }
    if let Some(expected) = &expect.path
        && *expected != path
    {
        problems.push(format!(
            "path: expected {}, ran {}",
            expected.join(" -> "),
            path.join(" -> ")
        ));
    }
    let status = serde_json::to_value(report.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    if let Some(expected) = &expect.status
        && *expected != status
    {
        let why = report.error.as_deref().unwrap_or("");
        problems.push(format!("status: expected {expected}, got {status} {why}"));
    }
    if let Some(expected) = expect.exit_code
        && expected != i64::from(report.exit_code)
    {
        problems.push(format!(
            "exit code: expected {expected}, got {}",
            report.exit_code
        ));
    }
    for (key, expected) in &expect.outputs {
        let mut parts = key.split('.');
        let step = parts.next().unwrap_or_default();
        let Some(mut value) = last.get(step) else {
            problems.push(format!("outputs: `{key}`: step `{step}` did not run"));
            continue;
        };
        let mut found = true;
        for part in parts {
            let next = match value {
                Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => value.get(part),
            };
            match next {
                Some(next) => value = next,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if !found {
            problems.push(format!("outputs: `{key}` is not in the step's result"));
        } else if value != expected {
            problems.push(format!(
                "outputs: `{key}`: expected {expected}, got {value}"
            ));
        }
    }
    if let Some(expected) = &expect.enqueued {
        problems.extend(compare_enqueued(expected, &report.enqueued, ws));
    }
    Ok(path)
}

/// Points every provider of `workflow`, and of the child workflows its `workflow:` steps run,
/// at the fixture agent.
fn answer_providers(
    workflow: &mut orchestrate_lang::model::Workflow,
    command: &[orchestrate_lang::template::Template],
) {
    use orchestrate_lang::model::{Step, StepKind};
    fn in_steps(steps: &mut [Step], command: &[orchestrate_lang::template::Template]) {
        for step in steps {
            match &mut step.kind {
                StepKind::ForEach { steps, .. } => in_steps(steps, command),
                StepKind::Parallel { branches, .. } => {
                    for branch in branches {
                        in_steps(&mut branch.steps, command);
                    }
                }
                StepKind::Workflow(sub) => {
                    if let Some(child) = &sub.child {
                        let mut workflow = child.workflow.clone();
                        answer_providers(&mut workflow, command);
                        let text = child.text.clone();
                        sub.child = Some(Arc::new(orchestrate_lang::model::LoadedChild {
                            workflow,
                            text,
                        }));
                    }
                }
                _ => {}
            }
        }
    }
    for template in workflow.providers.values_mut() {
        template.command = command.to_vec();
        // The fixture agent takes no model flag.
        template.model_flag = None;
    }
    in_steps(&mut workflow.steps, command);
}

/// Makes the run a role's task, as a role process would: the task file in its claimed
/// directory under `running/`, `${task.*}` built as the worker builds it, the correlation id,
/// and the role's capabilities, budget and idle timeout when `agents/ROLE.yaml` exists.
fn as_task(
    config: &mut RunConfig,
    task: &TaskCase,
    role: &str,
    role_def: Option<orchestrate_lang::model::Role>,
    ws: &Path,
    case_name: &str,
    expect_path: &Path,
) -> Result<(), String> {
    let id = task.id.clone().unwrap_or_else(|| case_name.to_string());
    let text = match (&task.text, &task.json) {
        (Some(text), None) => text.clone(),
        (None, Some(json)) => json.to_string(),
        (None, None) => String::new(),
        (Some(_), Some(_)) => {
            return Err(format!(
                "{}: `task:` has both `text` and `json`; give one",
                expect_path.display()
            ));
        }
    };
    let dir = Path::new("running").join(role).join(&id);
    std::fs::create_dir_all(ws.join(&dir)).map_err(|e| e.to_string())?;
    let task_path = dir.join("task");
    std::fs::write(ws.join(&task_path), &text).map_err(|e| e.to_string())?;
    let (vars, correlation_id) =
        orchestrate_swarm::worker::task_variables(orchestrate_swarm::worker::TaskFacts {
            path: task_path.display().to_string(),
            dir: dir.display().to_string(),
            name: format!("{id}.task"),
            id: &id,
            attempt: 1,
            text,
            correlation_id: None,
            role,
        });
    config.task = Some(vars);
    config.correlation_id = Some(correlation_id);
    config.default_provider = Some("claude".into());
    if let Some(role_def) = role_def {
        config.budget = role_def.budget.clone();
        config.default_idle_timeout = role_def.idle_timeout;
        config.capabilities = role_def.capabilities.map(|c| (role_def.name, c));
    }
    Ok(())
}

/// Role `name` from `agents/NAME.yaml` when it exists (loaded and checked as `swarm up` would:
/// a workflow beyond the role's capabilities fails the case). Its workflow must be the one
/// under test.
fn role_file(
    name: &str,
    ws: &Path,
    workflow_rel: &Path,
) -> Result<Option<orchestrate_lang::model::Role>, String> {
    let role_file = ws.join("agents").join(format!("{name}.yaml"));
    if !role_file.is_file() {
        return Ok(None);
    }
    let (role, _) = orchestrate_lang::load::load_role_file(ws, &role_file).map_err(|errors| {
        errors
            .iter()
            .map(|e| e.render())
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    if Path::new(&role.workflow) != workflow_rel {
        return Err(format!(
            "role `{name}` (agents/{name}.yaml) runs {}, not {}; set `task.role` to the role that runs this workflow",
            role.workflow,
            workflow_rel.display()
        ));
    }
    Ok(Some(role))
}

/// Compares the tasks a run handed on with `enqueued:`: the same number, in order, each with
/// the expected role, id and (when given) content.
fn compare_enqueued(
    expected: &[EnqueuedCase],
    actual: &[orchestrate_queue::queue::Enqueued],
    ws: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let listed = |list: &[orchestrate_queue::queue::Enqueued]| {
        list.iter()
            .map(|e| format!("{}/{}", e.role, e.id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if expected.len() != actual.len() {
        problems.push(format!(
            "enqueued: expected {} task(s), the run handed on {} ({})",
            expected.len(),
            actual.len(),
            listed(actual)
        ));
    }
    for (index, (want, got)) in expected.iter().zip(actual).enumerate() {
        if want.role != got.role || want.id.as_ref().is_some_and(|id| *id != got.id) {
            problems.push(format!(
                "enqueued[{index}]: expected {}/{}, got {}/{}",
                want.role,
                want.id.as_deref().unwrap_or("*"),
                got.role,
                got.id
            ));
            continue;
        }
        let content = std::fs::read_to_string(ws.join(&got.file)).unwrap_or_default();
        if let Some(text) = &want.text
            && *text != content
        {
            problems.push(format!(
                "enqueued[{index}] ({}/{}): expected the text {text:?}, got {content:?}",
                got.role, got.id
            ));
        }
        if let Some(json) = &want.json {
            let parsed: Option<Value> = serde_json::from_str(&content).ok();
            if parsed.as_ref() != Some(json) {
                problems.push(format!(
                    "enqueued[{index}] ({}/{}): expected the JSON {json}, got {content}",
                    got.role, got.id
                ));
            }
        }
    }
    problems
}

/// Answers each approval request of the run from the case's `approvals:`, visit by visit.
async fn answer_approvals(
    ws: PathBuf,
    run_id: String,
    answers: BTreeMap<String, Answers>,
    cancel: CancellationToken,
) -> Result<(), String> {
    let mut answered: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        let dir = orchestrate_engine::approval::dir(&ws, &run_id);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(step) = file.strip_suffix(".request.json") else {
                continue;
            };
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            let Ok(request) =
                serde_json::from_slice::<orchestrate_engine::approval::Request>(&bytes)
            else {
                continue;
            };
            let seen = answered.entry(step.to_string()).or_default();
            if seen.contains(&request.request_id) {
                continue;
            }
            let visit = seen.len();
            let answer = match answers.get(step) {
                Some(Answers::One(one)) => Some(one.clone()),
                Some(Answers::Each(each)) => each.get(visit).cloned(),
                None => None,
            };
            let Some(answer) = answer else {
                cancel.cancel();
                return Err(format!(
                    "approval step `{step}` asked (visit {}) but expect.yaml has no answer for it: add `approvals: {{{step}: [approve, ...]}}`",
                    visit + 1
                ));
            };
            let (verdict, text) = match answer {
                Answer::Word(w) if w == "approve" => {
                    (orchestrate_engine::approval::Verdict::Approve, None)
                }
                Answer::Word(w) => {
                    cancel.cancel();
                    return Err(format!(
                        "approvals: `{w}` for `{step}`: write `approve`, `{{approve: NOTE}}` or `{{reject: REASON}}`"
                    ));
                }
                Answer::WithText(map) => match map.into_iter().next() {
                    Some((k, v)) if k == "approve" => {
                        (orchestrate_engine::approval::Verdict::Approve, Some(v))
                    }
                    Some((k, v)) if k == "reject" => {
                        (orchestrate_engine::approval::Verdict::Reject, Some(v))
                    }
                    _ => {
                        cancel.cancel();
                        return Err(format!(
                            "approvals: an answer for `{step}` must be `approve`, `{{approve: NOTE}}` or `{{reject: REASON}}`"
                        ));
                    }
                },
            };
            let (reason, note) = match verdict {
                orchestrate_engine::approval::Verdict::Reject => (text, None),
                orchestrate_engine::approval::Verdict::Approve => (None, text),
            };
            orchestrate_engine::approval::decide(
                &ws,
                &run_id,
                step,
                verdict,
                reason,
                note,
                Some("orchestrate test".into()),
            )?;
            seen.push(request.request_id);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A scratch directory, removed on drop unless kept.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, String> {
        let dir = std::env::temp_dir().join(format!(
            "orchestrate-test-{}-{}",
            std::process::id(),
            orchestrate_base::ids::new_task_id()
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }

    fn keep(self) -> PathBuf {
        let dir = self.0.clone();
        std::mem::forget(self);
        dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `step_finished` record and the fan-out lane it was written on (empty outside fan-outs).
struct Finished {
    lane: Vec<u64>,
    event: StepFinished,
}

/// `step_finished` records as if fan-out items had run one after another: each fan-out step's
/// items (their lanes, item by item, nested ones likewise) just before its own record, so that
/// the path does not depend on which item finished first.
fn in_item_order(records: &[Finished]) -> Vec<&Finished> {
    fn emit<'a>(records: &'a [Finished], of: &[u64], out: &mut Vec<&'a Finished>) {
        for record in records.iter().filter(|r| r.lane == of) {
            let exec = record.event.exec;
            let mut items: Vec<&[u64]> = records
                .iter()
                .map(|r| r.lane.as_slice())
                .filter(|l| l.len() == of.len() + 2 && l.starts_with(of) && l[of.len()] == exec)
                .collect();
            items.sort();
            items.dedup();
            for item in items {
                emit(records, item, out);
            }
            out.push(record);
        }
    }
    let mut out = Vec::with_capacity(records.len());
    emit(records, &[], &mut out);
    out
}

/// Copies regular files and directories (symlinks as symlinks); `filter` leaves out the
/// top-level records and build output.
fn copy_tree(from: &Path, to: &Path, filter: bool) -> Result<(), String> {
    let walk = walkdir::WalkDir::new(from)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            !(filter
                && e.depth() == 1
                && NOT_COPIED.contains(&e.file_name().to_string_lossy().as_ref()))
        });
    for entry in walk {
        let entry = entry.map_err(|e| format!("cannot copy the workspace: {e}"))?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        let dest = to.join(rel);
        let kind = entry.file_type();
        let result = if kind.is_dir() {
            std::fs::create_dir_all(&dest)
        } else if kind.is_symlink() {
            std::fs::read_link(entry.path())
                .and_then(|target| std::os::unix::fs::symlink(target, &dest))
        } else {
            std::fs::copy(entry.path(), &dest).map(|_| ())
        };
        result.map_err(|e| format!("cannot copy {}: {e}", entry.path().display()))?;
    }
    Ok(())
}

/// The fixture agent: what runs instead of an agent CLI in `orchestrate test`. Reads its prompt
/// on stdin (and ignores it), finds the answer for `ORCHESTRATE_STEP`'s current visit, writes
/// the files it names, and prints claude's stream-json events with its result and usage.
pub(crate) fn fixture_agent(case: &Path) -> u8 {
    use std::io::Read;
    let mut prompt = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut prompt);
    let step = std::env::var("ORCHESTRATE_STEP").unwrap_or_default();
    let state = std::env::var_os(STATE_ENV).map(PathBuf::from);
    let visit = match &state {
        Some(dir) => {
            let counter = dir.join(format!("{step}.visits"));
            let n = std::fs::read_to_string(&counter)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .unwrap_or(0)
                + 1;
            let _ = std::fs::write(&counter, n.to_string());
            n
        }
        None => 1,
    };
    let agents = case.join("agents");
    let file = [
        agents.join(format!("{step}.{visit}.json")),
        agents.join(format!("{step}.json")),
    ]
    .into_iter()
    .find(|p| p.is_file());
    let Some(file) = file else {
        eprintln!(
            "orchestrate test: no fixture answer for step `{step}` (visit {visit}): add {} or {}",
            agents.join(format!("{step}.json")).display(),
            agents.join(format!("{step}.{visit}.json")).display()
        );
        return 2;
    };
    let answer: Value = match std::fs::read(&file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(answer) => answer,
        Err(err) => {
            eprintln!(
                "orchestrate test: {} is not a fixture answer: {err}",
                file.display()
            );
            return 2;
        }
    };
    if let Some(writes) = answer["writes"].as_object() {
        for (path, content) in writes {
            let path = Path::new(path);
            if path.is_absolute() || path.components().any(|c| c.as_os_str() == "..") {
                eprintln!(
                    "orchestrate test: `writes` paths stay in the workspace: {}",
                    path.display()
                );
                return 2;
            }
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let text = content
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| content.to_string());
            if let Err(err) = std::fs::write(path, text) {
                eprintln!("orchestrate test: cannot write {}: {err}", path.display());
                return 2;
            }
        }
    }
    let result = match &answer["result"] {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let exit_code = u8::try_from(answer["exit_code"].as_i64().unwrap_or(0)).unwrap_or(1);
    if std::env::var(FORMAT_ENV).is_ok_and(|f| f == "text") {
        println!("{result}");
        return exit_code;
    }
    let usage = &answer["usage"];
    let tokens = |key: &str| usage[key].as_u64().unwrap_or(0);
    let is_error = answer["is_error"].as_bool().unwrap_or(false);
    let session = format!("fixture-{step}-{visit}");
    let init =
        json!({"type": "system", "subtype": "init", "session_id": session, "model": "fixture"});
    let done = json!({
        "type": "result",
        "subtype": if is_error { "error_during_execution" } else { "success" },
        "is_error": is_error,
        "result": result,
        "session_id": session,
        "num_turns": answer["turns"].as_u64().unwrap_or(1),
        "total_cost_usd": answer["cost_usd"].as_f64().unwrap_or(0.0),
        "usage": {
            "input_tokens": tokens("input_tokens"),
            "output_tokens": tokens("output_tokens"),
            "cache_read_input_tokens": tokens("cache_read_input_tokens"),
            "cache_creation_input_tokens": tokens("cache_creation_input_tokens"),
        },
        "permission_denials": [],
    });
    println!("{init}");
    println!("{done}");
    exit_code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_items_are_on_the_path_in_item_order_before_their_step() {
        let finished = |step: &str, exec: u64, lane: &[u64]| Finished {
            lane: lane.to_vec(),
            event: StepFinished {
                step: step.into(),
                exec,
                iteration: Vec::new(),
                result: Box::new(orchestrate_engine::step_result::StepResult::succeeded()),
            },
        };
        let records = [
            finished("Start", 1, &[]),
            finished("B", 1, &[2, 1]),
            finished("Deep", 1, &[2, 0, 1, 1]),
            finished("Inner", 1, &[2, 0]),
            finished("A", 2, &[2, 0]),
            finished("Fan", 2, &[]),
            finished("End", 3, &[]),
        ];
        let names: Vec<&str> = in_item_order(&records)
            .iter()
            .map(|r| r.event.step.as_str())
            .collect();
        assert_eq!(names, ["Start", "Deep", "Inner", "A", "B", "Fan", "End"]);
    }
}
