//! The workflow graph model: nodes are steps (plus `_start` and `_end`), edges are sequential
//! fall-throughs, `on` targets, for_each bodies and loop-backs; routing a run's transitions onto
//! those edges; and the path a run takes when every step succeeds.
//!
//! Does not draw anything (`draw`) or read records.

use super::fold::Execution;
use orchestrate_lang::model::{Step, StepKind, Target, Workflow};
use std::collections::{HashMap, HashSet};

/// An edge of the drawn graph. Node keys are step names, `_start` and `_end`.
#[derive(Debug, Clone)]
pub(super) struct Edge {
    pub(super) from: String,
    pub(super) to: String,
    /// `success`, `failure`, `always`, `rejected`, `stalled` (`converge.on_stall`), `each` (into
    /// a for_each body), `next item` (the body's end, back to its for_each), `branch` (into a
    /// parallel branch), `join` (a branch's end, back to its parallel step), or none for the
    /// sequential edge.
    pub(super) label: Option<&'static str>,
}

/// One place on a path, with what is known of it: from a run's records, its status and
/// iteration; from a list of names, nothing more.
pub(super) struct Hop<'a> {
    pub(super) step: &'a str,
    pub(super) status: Option<&'a str>,
    pub(super) iteration: Option<&'a [u64]>,
}

impl<'a> Hop<'a> {
    pub(super) fn name(step: &'a str) -> Hop<'a> {
        Hop {
            step,
            status: None,
            iteration: None,
        }
    }

    pub(super) fn of(e: &'a Execution) -> Hop<'a> {
        Hop {
            step: &e.step,
            status: Some(&e.status),
            iteration: Some(&e.iteration),
        }
    }
}

/// Whether a step that ended with `status` can leave by an edge labelled `label`. Into a body
/// (`each`) is always possible: a for_each's own status comes after its body.
fn label_fits(label: Option<&str>, status: Option<&str>) -> bool {
    match (status, label) {
        (None, _) | (_, Some("each" | "branch")) => true,
        (Some("succeeded"), l) => {
            matches!(
                l,
                None | Some("success" | "always" | "next item" | "join" | "stalled")
            )
        }
        (Some("failed"), l) => {
            matches!(l, None | Some("failure" | "always" | "next item" | "join"))
        }
        (Some("rejected"), l) => matches!(l, Some("rejected" | "failure" | "always" | "stalled")),
        (Some("skipped"), l) => matches!(l, None | Some("next item" | "join")),
        // Interrupted, or a status this version does not know: do not judge.
        _ => true,
    }
}

pub(super) const START: &str = "_start";
pub(super) const END: &str = "_end";

/// Whether control can fall through to the next step of the list: a skipped step always does;
/// a succeeded one without `on.success`/`always`; a failed one in a non-strict workflow without
/// `on.failure`/`always`.
fn falls_through(step: &Step, strict: bool) -> bool {
    let on = &step.on;
    step.when.is_some()
        || (on.success.is_none() && on.always.is_none())
        || (!strict && on.failure.is_none() && on.always.is_none())
}

pub(super) struct Graph {
    pub(super) edges: Vec<Edge>,
    /// Body step -> its for_each.
    pub(super) parent: HashMap<String, String>,
}

impl Graph {
    pub(super) fn of(workflow: &Workflow) -> Graph {
        let mut graph = Graph {
            edges: Vec::new(),
            parent: HashMap::new(),
        };
        if let Some(first) = workflow.steps.first() {
            graph.edges.push(Edge {
                from: START.into(),
                to: first.name.clone(),
                label: None,
            });
        }
        graph.walk(&workflow.steps, None, workflow.strict_flow);
        graph
    }

    /// `parent`: the step whose body `steps` is, and the label of the edge back to it (`next
    /// item` from a for_each body, `join` from a parallel branch).
    fn walk(&mut self, steps: &[Step], parent: Option<(&str, &'static str)>, strict: bool) {
        for (i, step) in steps.iter().enumerate() {
            if let Some((parent, _)) = parent {
                self.parent.insert(step.name.clone(), parent.to_string());
            }
            let (into, back) = match step.kind {
                StepKind::Parallel { .. } => ("branch", "join"),
                _ => ("each", "next item"),
            };
            for body in step.kind.bodies() {
                if let Some(first) = body.first() {
                    self.edges.push(Edge {
                        from: step.name.clone(),
                        to: first.name.clone(),
                        label: Some(into),
                    });
                    self.walk(body, Some((&step.name, back)), strict);
                }
            }
            let on = &step.on;
            for (label, target) in [
                ("success", &on.success),
                ("failure", &on.failure),
                ("always", &on.always),
                ("rejected", &on.rejected),
                ("invalid", &on.invalid),
            ] {
                if let Some(target) = target {
                    self.edges.push(Edge {
                        from: step.name.clone(),
                        to: match target {
                            Target::Step(name) => name.clone(),
                            Target::End => END.into(),
                        },
                        label: Some(label),
                    });
                }
            }
            if let Some(target) = step.converge.as_ref().and_then(|c| c.on_stall.as_ref()) {
                self.edges.push(Edge {
                    from: step.name.clone(),
                    to: target.clone(),
                    label: Some("stalled"),
                });
            }
            if falls_through(step, strict) {
                let (to, label) = match (steps.get(i + 1), parent) {
                    (Some(next), _) => (next.name.clone(), None),
                    (None, Some((parent, back))) => (parent.to_string(), Some(back)),
                    (None, None) => (END.to_string(), None),
                };
                self.edges.push(Edge {
                    from: step.name.clone(),
                    to,
                    label,
                });
            }
        }
    }

    /// How many for_each bodies enclose `step`.
    fn depth(&self, step: &str) -> usize {
        let mut depth = 0;
        let mut current = step;
        while let Some(parent) = self.parent.get(current) {
            depth += 1;
            current = parent;
        }
        depth
    }

    /// The drawn edges that take control from `from` to `to`: a direct edge, or out of
    /// enclosing for_each bodies (through their `next item` edges) and on from the for_each.
    /// What is known of `from` narrows the choice: its status picks the edges it can take (a
    /// failed step its failure edge, and it may leave its loop without a drawn edge, since a
    /// failed iteration ends the loop), and the iterations of both say whether control stayed in
    /// the same pass of a body or went round to the next item.
    pub(super) fn route(&self, from: &Hop, to: &Hop) -> Option<Vec<usize>> {
        let status = from.status;
        let free_exit = status.is_none_or(|s| !matches!(s, "succeeded" | "skipped"));
        let mut hops = Vec::new();
        let mut current = from.step.to_string();
        let mut level = self.depth(from.step);
        let mut first = true;
        loop {
            let same_pass = match (from.iteration, to.iteration) {
                (Some(a), Some(b)) => {
                    a.len() >= level && b.len() >= level && a[..level] == b[..level]
                }
                _ => true,
            };
            if same_pass {
                let fits: Vec<usize> = self
                    .edges
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.from == current && e.to == to.step)
                    .filter(|(_, e)| !first || label_fits(e.label, status))
                    .map(|(i, _)| i)
                    .collect();
                // Of a sequential edge and an `on` edge to the same step, the `on` edge is the
                // one taken (the sequential one is there for a skip or a tolerated failure).
                let labelled: Vec<usize> = fits
                    .iter()
                    .copied()
                    .filter(|&i| self.edges[i].label.is_some())
                    .collect();
                let chosen = if labelled.is_empty() { fits } else { labelled };
                if !chosen.is_empty() {
                    hops.extend(chosen);
                    return Some(hops);
                }
            }
            let parent = self.parent.get(&current)?;
            match self
                .edges
                .iter()
                .position(|e| e.from == current && &e.to == parent)
            {
                Some(i) => hops.push(i),
                None if free_exit => {}
                None => return None,
            }
            current = parent.clone();
            level = level.saturating_sub(1);
            first = false;
        }
    }

    /// Where control may go from `from`, for messages.
    pub(super) fn successors(&self, from: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut current = from.to_string();
        loop {
            for edge in self.edges.iter().filter(|e| e.from == current) {
                if self.parent.get(&current) != Some(&edge.to) && !out.contains(&edge.to) {
                    out.push(edge.to.clone());
                }
            }
            match self.parent.get(&current) {
                Some(parent)
                    if self
                        .edges
                        .iter()
                        .any(|e| e.from == current && &e.to == parent) =>
                {
                    current = parent.clone();
                }
                _ => return out,
            }
        }
    }
}

/// The steps a run visits when every step succeeds: from the first step along `on.success`
/// (else `always`, else the next step), into every for_each body, until `_end`, the end of the
/// workflow, or a step already on the path.
pub(super) fn default_path(workflow: &Workflow) -> Vec<String> {
    fn walk(steps: &[Step], path: &mut Vec<String>) -> bool {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut i = 0;
        while let Some(step) = steps.get(i) {
            if !seen.insert(step.name.as_str()) {
                return true;
            }
            path.push(step.name.clone());
            for body in step.kind.bodies() {
                if walk(body, path) {
                    return true;
                }
            }
            match step.on.success.as_ref().or(step.on.always.as_ref()) {
                Some(Target::End) => return true,
                Some(Target::Step(name)) => {
                    i = steps
                        .iter()
                        .position(|s| &s.name == name)
                        .unwrap_or(steps.len());
                }
                None => i += 1,
            }
        }
        false
    }
    let mut path = Vec::new();
    walk(&workflow.steps, &mut path);
    path
}
