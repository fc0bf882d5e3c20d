//! Drawing a workflow's graph as Mermaid or Graphviz DOT, with the path a run took laid over it
//! (visited nodes and taken edges highlighted and counted).
//!
//! Does not build the graph (`graph`) or read records: a run's path comes in as a `RunReport`.

use super::fold::Execution;
use super::graph::{END, Graph, Hop, START};
use super::report_data::RunReport;
use orchestrate_lang::model::{Step, StepKind, Workflow};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;

/// The language of a drawn graph (`orchestrate graph --format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum GraphFormat {
    /// A Mermaid `flowchart` (renders in GitHub Markdown).
    Mermaid,
    /// Graphviz DOT (`dot -Tsvg`).
    Dot,
}

/// Draws `workflow`: a node per step (a for_each's body inside a subgraph/cluster), sequential
/// edges unlabelled, `on` edges labelled success/failure/always/rejected, `each` into a body and
/// `next item` back out of it, and `_end`. With `overlay` (the path a run took, as step names in
/// execution order, e.g. `RunReport::path_taken`), visited nodes and taken edges are highlighted
/// and labelled with their counts; names not in the workflow are ignored. Names alone cannot
/// tell a step's failure edge from the next item of its loop; `graph_of_run` can.
pub fn graph(workflow: &Workflow, overlay: Option<&[String]>, format: GraphFormat) -> String {
    let hops: Option<Vec<Hop>> =
        overlay.map(|path| path.iter().map(|name| Hop::name(name)).collect());
    draw(workflow, hops.as_deref(), format)
}

/// `graph` with the path of `run` laid over it, each transition matched to the edge the run
/// took using the recorded status and loop iteration of every step.
pub fn graph_of_run(workflow: &Workflow, run: &RunReport, format: GraphFormat) -> String {
    let mut path: Vec<&Execution> = run.executions.iter().filter(|e| !e.superseded).collect();
    path.sort_by_key(|e| e.key());
    let hops: Vec<Hop> = path.into_iter().map(Hop::of).collect();
    draw(workflow, Some(&hops), format)
}

pub(super) fn draw(workflow: &Workflow, overlay: Option<&[Hop]>, format: GraphFormat) -> String {
    let drawing = Drawing::new(workflow, overlay);
    match format {
        GraphFormat::Mermaid => drawing.mermaid(),
        GraphFormat::Dot => drawing.dot(),
    }
}

/// A workflow's graph with the path of a run laid over it: what both drawings print.
struct Drawing<'a> {
    workflow: &'a Workflow,
    graph: Graph,
    /// Whether a path is laid over the graph (then counts are shown and unvisited nodes dimmed).
    overlay: bool,
    /// Visits of each step on the path.
    visits: HashMap<&'a str, usize>,
    /// Times the path took each edge of `graph.edges`.
    taken: Vec<usize>,
    /// Node id of each step: `s0`, `s1`, ... in `Workflow::all_steps` order.
    ids: HashMap<&'a str, String>,
}

impl<'a> Drawing<'a> {
    fn new(workflow: &'a Workflow, overlay: Option<&[Hop<'a>]>) -> Drawing<'a> {
        let graph = Graph::of(workflow);
        let mut visits: HashMap<&str, usize> = HashMap::new();
        let mut taken = vec![0usize; graph.edges.len()];
        if let Some(path) = overlay {
            for hop in path {
                *visits.entry(hop.step).or_default() += 1;
            }
            let mut previous = Hop::name(START);
            for hop in path {
                // What the records say picks the edge; when they fit no edge, still show a way.
                let route = graph
                    .route(&previous, hop)
                    .or_else(|| graph.route(&Hop::name(previous.step), &Hop::name(hop.step)));
                for edge in route.unwrap_or_default() {
                    taken[edge] += 1;
                }
                previous = Hop {
                    step: hop.step,
                    status: hop.status,
                    iteration: hop.iteration,
                };
            }
        }
        let ids: HashMap<&str, String> = workflow
            .all_steps()
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), format!("s{i}")))
            .collect();
        Drawing {
            workflow,
            graph,
            overlay: overlay.is_some(),
            visits,
            taken,
            ids,
        }
    }

    fn id(&self, name: &str) -> String {
        match name {
            START => "start_".to_string(),
            END => "end_".to_string(),
            other => self
                .ids
                .get(other)
                .cloned()
                .unwrap_or_else(|| other.to_string()),
        }
    }

    fn node_label(&self, step: &Step) -> String {
        let kind = match &step.kind {
            StepKind::Agent(agent) => format!("agent, {}", agent.phase.label()),
            StepKind::Workflow(sub) => format!("workflow {}", sub.path),
            other => other.label().to_string(),
        };
        match (self.overlay, self.visits.get(step.name.as_str())) {
            (true, Some(&n)) => format!(
                "{} ({kind}) · {n} visit{}",
                step.name,
                if n == 1 { "" } else { "s" }
            ),
            _ => format!("{} ({kind})", step.name),
        }
    }

    fn edge_label(&self, i: usize) -> Option<String> {
        let base = self.graph.edges[i].label.map(str::to_string);
        let taken = self.taken[i];
        match (self.overlay && taken > 0, base) {
            (true, Some(label)) => Some(format!("{label} ×{taken}")),
            (true, None) => Some(format!("×{taken}")),
            (false, label) => label,
        }
    }

    fn mermaid(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "flowchart TD");
        let _ = writeln!(out, "  {}((start))", self.id(START));
        self.mermaid_nodes(&self.workflow.steps, 0, &mut out);
        let _ = writeln!(out, "  {}((_end))", self.id(END));
        for (i, edge) in self.graph.edges.iter().enumerate() {
            let arrow = if matches!(edge.label, Some("next item" | "join")) {
                "-.->"
            } else {
                "-->"
            };
            let (from, to) = (self.id(&edge.from), self.id(&edge.to));
            match self.edge_label(i) {
                Some(label) => {
                    let _ = writeln!(out, "  {from} {arrow}|\"{label}\"| {to}");
                }
                None => {
                    let _ = writeln!(out, "  {from} {arrow} {to}");
                }
            }
        }
        if self.overlay {
            self.mermaid_overlay(&mut out);
        }
        out
    }

    /// The nodes of `steps`, a for_each's body and a parallel's branches each in a subgraph.
    fn mermaid_nodes(&self, steps: &[Step], depth: usize, out: &mut String) {
        let pad = "  ".repeat(depth + 1);
        for step in steps {
            let text = self.node_label(step).replace('"', "'");
            let id = self.id(&step.name);
            match &step.kind {
                StepKind::ForEach {
                    steps: body, var, ..
                } => {
                    let _ = writeln!(out, "{pad}{id}{{{{\"{text}\"}}}}");
                    let _ = writeln!(
                        out,
                        "{pad}subgraph {id}_body [\"for_each {} (as {var})\"]",
                        step.name
                    );
                    self.mermaid_nodes(body, depth + 1, out);
                    let _ = writeln!(out, "{pad}end");
                }
                StepKind::Parallel { branches, .. } => {
                    let _ = writeln!(out, "{pad}{id}{{{{\"{text}\"}}}}");
                    for (i, branch) in branches.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "{pad}subgraph {id}_b{i} [\"branch {} of {}\"]",
                            branch.name, step.name
                        );
                        self.mermaid_nodes(&branch.steps, depth + 1, out);
                        let _ = writeln!(out, "{pad}end");
                    }
                }
                StepKind::Approval { .. } => {
                    let _ = writeln!(out, "{pad}{id}{{\"{text}\"}}");
                }
                // A sub-workflow: Mermaid's subroutine shape.
                StepKind::Workflow(_) => {
                    let _ = writeln!(out, "{pad}{id}[[\"{text}\"]]");
                }
                _ => {
                    let _ = writeln!(out, "{pad}{id}[\"{text}\"]");
                }
            }
        }
    }

    /// The classes that highlight visited nodes and dim the others, and the taken edges' style.
    fn mermaid_overlay(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "  classDef visited fill:#d8f3dc,stroke:#2d6a4f,stroke-width:2px"
        );
        let _ = writeln!(
            out,
            "  classDef unvisited fill:#f8f9fa,stroke:#adb5bd,color:#6c757d,stroke-dasharray:4 3"
        );
        let (seen, unseen): (Vec<&Step>, Vec<&Step>) = self
            .workflow
            .all_steps()
            .into_iter()
            .partition(|s| self.visits.contains_key(s.name.as_str()));
        for (class, steps) in [("visited", seen), ("unvisited", unseen)] {
            if !steps.is_empty() {
                let list: Vec<String> = steps.iter().map(|s| self.id(&s.name)).collect();
                let _ = writeln!(out, "  class {} {class}", list.join(","));
            }
        }
        let hot: Vec<String> = (0..self.graph.edges.len())
            .filter(|&i| self.taken[i] > 0)
            .map(|i| i.to_string())
            .collect();
        if !hot.is_empty() {
            let _ = writeln!(
                out,
                "  linkStyle {} stroke:#2d6a4f,stroke-width:3px",
                hot.join(",")
            );
        }
    }

    fn dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", dot_quote(&self.workflow.name));
        let _ = writeln!(out, "  rankdir=TB;");
        let _ = writeln!(
            out,
            "  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"Helvetica\"];"
        );
        let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=10];");
        let _ = writeln!(
            out,
            "  {} [label=\"start\", shape=circle, fillcolor=\"#e9ecef\"];",
            dot_quote(START)
        );
        let _ = writeln!(
            out,
            "  {} [label=\"_end\", shape=doublecircle, fillcolor=\"#e9ecef\"];",
            dot_quote(END)
        );
        self.dot_nodes(&self.workflow.steps, 0, &mut out);
        for (i, edge) in self.graph.edges.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {} -> {}{};",
                dot_quote(&edge.from),
                dot_quote(&edge.to),
                self.dot_edge_attrs(i)
            );
        }
        let _ = writeln!(out, "}}");
        out
    }

    /// The nodes of `steps`, a for_each's body and a parallel's branches each in a cluster.
    fn dot_nodes(&self, steps: &[Step], depth: usize, out: &mut String) {
        let pad = "  ".repeat(depth + 1);
        for step in steps {
            let shape = match &step.kind {
                StepKind::ForEach { .. } | StepKind::Parallel { .. } => "hexagon",
                StepKind::Approval { .. } => "diamond",
                StepKind::Workflow(_) => "component",
                _ => "box",
            };
            let _ = writeln!(
                out,
                "{pad}{} [label={}, shape={shape}{}];",
                dot_quote(&step.name),
                dot_quote(&self.node_label(step)),
                self.dot_style(step)
            );
            if let StepKind::ForEach {
                steps: body, var, ..
            } = &step.kind
            {
                let _ = writeln!(
                    out,
                    "{pad}subgraph {} {{",
                    dot_quote(&format!("cluster_{}", step.name))
                );
                let _ = writeln!(
                    out,
                    "{pad}  label={}; style=dashed;",
                    dot_quote(&format!("for_each {} (as {var})", step.name))
                );
                self.dot_nodes(body, depth + 1, out);
                let _ = writeln!(out, "{pad}}}");
            }
            if let StepKind::Parallel { branches, .. } = &step.kind {
                for branch in branches {
                    let _ = writeln!(
                        out,
                        "{pad}subgraph {} {{",
                        dot_quote(&format!("cluster_{}_{}", step.name, branch.name))
                    );
                    let _ = writeln!(
                        out,
                        "{pad}  label={}; style=dashed;",
                        dot_quote(&format!("branch {} of {}", branch.name, step.name))
                    );
                    self.dot_nodes(&branch.steps, depth + 1, out);
                    let _ = writeln!(out, "{pad}}}");
                }
            }
        }
    }

    /// A node's extra attributes: highlighted when visited, dimmed when a path was laid over
    /// the graph and missed it.
    fn dot_style(&self, step: &Step) -> &'static str {
        if !self.overlay {
            ""
        } else if self.visits.contains_key(step.name.as_str()) {
            ", fillcolor=\"#d8f3dc\", color=\"#2d6a4f\", penwidth=2"
        } else {
            ", color=\"#adb5bd\", fontcolor=\"#6c757d\", style=\"rounded,dashed\""
        }
    }

    /// ` [label=..., ...]` for edge `i`, or nothing.
    fn dot_edge_attrs(&self, i: usize) -> String {
        let edge = &self.graph.edges[i];
        let mut attrs: Vec<String> = Vec::new();
        if let Some(label) = self.edge_label(i) {
            attrs.push(format!("label={}", dot_quote(&label)));
        }
        if matches!(edge.label, Some("next item" | "join")) {
            attrs.push("style=dashed".into());
        }
        if self.overlay && self.taken[i] > 0 {
            attrs.push("color=\"#2d6a4f\", penwidth=3".into());
        } else if matches!(edge.label, Some("failure" | "rejected" | "stalled")) {
            attrs.push("color=\"#c0392b\"".into());
        }
        if attrs.is_empty() {
            String::new()
        } else {
            format!(" [{}]", attrs.join(", "))
        }
    }
}

fn dot_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Log, failed, ok, one, run_root};
    use super::*;
    use serde_json::json;
    use std::fs;

    #[test]
    fn graph_draws_loops_edges_and_the_path_taken() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.yaml");
        fs::write(
            &file,
            "name: w
steps:
  - name: Prep
    command: [\"true\"]
  - name: Loop
    for_each:
      items: [a, b]
      steps:
        - name: Work
          command: [\"true\"]
        - name: Check
          command: [\"true\"]
          on:
            failure: {goto: Work}
  - name: Review
    approval:
      message: ok?
    on:
      rejected: {goto: Prep}
      success: {goto: _end}
  - name: Fix
    command: [\"true\"]
",
        )
        .unwrap();
        let workflow = orchestrate_lang::load::load_file(&file).unwrap();
        let plain = graph(&workflow, None, GraphFormat::Mermaid);
        assert!(plain.starts_with("flowchart TD\n"), "{plain}");
        assert!(
            plain.contains("subgraph s1_body [\"for_each Loop (as item)\"]"),
            "{plain}"
        );
        assert!(plain.contains("s1 -->|\"each\"| s2"), "{plain}");
        assert!(plain.contains("s3 -->|\"failure\"| s2"), "{plain}");
        assert!(plain.contains("s3 -.->|\"next item\"| s1"), "{plain}");
        assert!(plain.contains("s1 --> s4"), "{plain}");
        assert!(plain.contains("s4 -->|\"rejected\"| s0"), "{plain}");
        assert!(plain.contains("s4 -->|\"success\"| end_"), "{plain}");
        // Review always leaves by an edge of its own: no fall-through to Fix.
        assert!(!plain.contains("s4 --> s5"), "{plain}");
        assert!(plain.contains("s5 --> end_"), "{plain}");
        assert!(!plain.contains("classDef"), "{plain}");

        let path: Vec<String> = ["Prep", "Loop", "Work", "Check", "Work", "Check", "Review"]
            .map(String::from)
            .to_vec();
        let overlay = graph(&workflow, Some(&path), GraphFormat::Mermaid);
        assert!(overlay.contains("Work (command) · 2 visits"), "{overlay}");
        // Names alone: Check -> Work is taken to be Check's failure edge (a direct edge).
        assert!(overlay.contains("s3 -->|\"failure ×1\"| s2"), "{overlay}");
        assert!(
            overlay.contains("s3 -.->|\"next item ×1\"| s1"),
            "{overlay}"
        );
        assert!(overlay.contains("s1 -->|\"×1\"| s4"), "{overlay}");
        assert!(
            overlay.contains("class s0,s1,s2,s3,s4 visited"),
            "{overlay}"
        );
        assert!(overlay.contains("class s5 unvisited"), "{overlay}");
        assert!(overlay.contains("linkStyle "), "{overlay}");

        // From the records: item 0's Check failed and went back to Work, then item 1 ran.
        let ws = tempfile::tempdir().unwrap();
        let id = "20261124T140000Z-0f0f0f";
        let root = run_root(ws.path(), id);
        let mut log = Log::new("2026-11-24T14:00:00Z");
        log.at(0.0, "run_started", json!({"run_id": id, "name": "w"}))
            .step(0.0, "Prep", 1, &[], "command", ok(1.0))
            .at(1.0, "step_started", json!({"step": "Loop", "exec": 2, "kind": "for_each", "iteration": []}))
            .step(1.0, "Work", 3, &[0], "command", ok(1.0))
            .step(2.0, "Check", 4, &[0], "command", failed(1.0, 1))
            .at(3.0, "goto", json!({"from": "Check", "to": "Work"}))
            .step(3.0, "Work", 5, &[0], "command", ok(1.0))
            .step(4.0, "Check", 6, &[0], "command", ok(1.0))
            .step(5.0, "Work", 7, &[1], "command", ok(1.0))
            .step(6.0, "Check", 8, &[1], "command", ok(1.0))
            .finished(7.0, "Loop", 2, &[], json!({"status": "succeeded", "exit_code": 0, "duration": 6.0, "iterations": 2, "total": 2}))
            .at(7.0, "step_started", json!({"step": "Review", "exec": 9, "kind": "approval", "iteration": []}))
            .finished(8.0, "Review", 9, &[], json!({"status": "succeeded", "exit_code": 0, "decision": "approve", "duration": 1.0}))
            .at(8.0, "goto", json!({"from": "Review", "to": "_end"}))
            .at(8.0, "run_finished", json!({"status": "succeeded", "exit_code": 0, "error": null}));
        log.write(&root);
        fs::copy(&file, root.join("workflow.yaml")).unwrap();
        let run = one(ws.path(), id);
        let check = run.check.clone().unwrap();
        assert!(check.out_of_order.is_empty(), "{check:?}");
        assert_eq!(check.repeated.len(), 2, "{check:?}");
        assert_eq!(check.repeated[0].most_in_one_pass, 2);
        assert!(check.skipped.is_empty(), "{check:?}");
        let precise = graph_of_run(&workflow, &run, GraphFormat::Mermaid);
        assert!(precise.contains("s1 -->|\"each ×2\"| s2"), "{precise}");
        assert!(precise.contains("s3 -->|\"failure ×1\"| s2"), "{precise}");
        assert!(
            precise.contains("s3 -.->|\"next item ×2\"| s1"),
            "{precise}"
        );
        assert!(precise.contains("Work (command) · 3 visits"), "{precise}");

        let dot = graph(&workflow, Some(&path), GraphFormat::Dot);
        assert!(dot.starts_with("digraph \"w\" {"), "{dot}");
        assert!(dot.contains("subgraph \"cluster_Loop\" {"), "{dot}");
        assert!(
            dot.contains(
                "\"Loop\" -> \"Work\" [label=\"each ×1\", color=\"#2d6a4f\", penwidth=3];"
            ),
            "{dot}"
        );
        assert!(
            dot.contains(
                "\"Check\" -> \"Work\" [label=\"failure ×1\", color=\"#2d6a4f\", penwidth=3];"
            ),
            "{dot}"
        );
        assert!(
            dot.contains("\"Review\" -> \"_end\" [label=\"success\"];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"Review\" -> \"Prep\" [label=\"rejected\", color=\"#c0392b\"];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"Fix\" [label=\"Fix (command)\", shape=box, color=\"#adb5bd\""),
            "{dot}"
        );
        assert!(dot.trim_end().ends_with('}'));
    }
}
