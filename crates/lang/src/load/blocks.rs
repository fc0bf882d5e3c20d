//! The blocks a workflow and a role share: `budget:` and `isolation:`. Does not decide which
//! one wins when both set them (the engine does, when it runs).

use crate::diag::did_you_mean;
use crate::model::{Budget, Isolation, WorktreeSpec};
use crate::yaml::{Node, Pos, Value};

use super::fields::Loader;

pub(super) const BUDGET_FIELDS: &[&str] = &["max_cost_usd", "max_tokens", "max_wall_sec"];
pub(super) const ISOLATION_KINDS: &[&str] = &["worktree", "none"];
pub(super) const WORKTREE_FIELDS: &[&str] = &["base", "keep", "branch", "dir", "remote"];

impl Loader {
    /// `budget: {max_cost_usd, max_tokens, max_wall_sec}` of a workflow or a role.
    pub(super) fn budget(&mut self, node: &Node, owner: &str) -> Option<Budget> {
        let what = format!("`budget` of {owner}");
        let fields = self.fields(node, BUDGET_FIELDS, &what)?;
        let mut budget = Budget::default();
        if let Some(n) = fields.value("max_cost_usd") {
            budget.max_cost_usd = self.positive(n, "`budget.max_cost_usd`", 1e9);
            budget.cost_at = self.at_line(n);
        }
        if let Some(n) = fields.value("max_tokens") {
            budget.max_tokens = self
                .count(n, "`budget.max_tokens`", 1, u32::MAX)
                .map(u64::from);
            budget.tokens_at = self.at_line(n);
        }
        if let Some(n) = fields.value("max_wall_sec") {
            budget.max_wall = self.positive_seconds(n, "`budget.max_wall_sec`");
            budget.wall_at = self.at_line(n);
        }
        if fields.entries.is_empty() {
            self.error(node.pos, format!("{what} sets no limit")).hint = Some(format!(
                "set any of {}, or remove `budget`",
                BUDGET_FIELDS.join(", ")
            ));
        }
        Some(budget)
    }

    /// `isolation: worktree`, `isolation: none`, or `isolation: {worktree: {base, keep, branch,
    /// dir}}` of a workflow or a role.
    pub(super) fn isolation(&mut self, node: &Node, owner: &str) -> Option<Isolation> {
        let what = format!("`isolation` of {owner}");
        let hint = "write `isolation: worktree`, `isolation: none`, or `isolation: {worktree: {base: main, keep: false, branch: \"orchestrate/{role}/{task}\", dir: .orchestrate/worktrees}}`";
        let unknown = |this: &mut Self, pos: Pos, kind: &str| {
            let guess = did_you_mean(kind, ISOLATION_KINDS.iter().copied())
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            this.error(pos, format!("unknown isolation `{kind}` in {what}"))
                .hint = Some(format!("{guess}{hint}"));
        };
        let spec = |this: &Self| WorktreeSpec {
            at: this.at_line(node),
            ..WorktreeSpec::default()
        };
        match &node.value {
            Value::Str(kind) => match kind.as_str() {
                "worktree" => Some(Isolation::Worktree(spec(self))),
                "none" => Some(Isolation::None),
                other => {
                    unknown(self, node.pos, other);
                    None
                }
            },
            Value::Map(entries) => {
                let fields = self.fields(node, ISOLATION_KINDS, &what)?;
                if entries.len() != 1 {
                    self.error(node.pos, format!("{what} must name one kind"))
                        .hint = Some(hint.into());
                    return None;
                }
                if fields.get("none").is_some() {
                    return Some(Isolation::None);
                }
                let mut out = spec(self);
                let Some(body) = fields.value("worktree") else {
                    return fields.get("worktree").map(|_| Isolation::Worktree(out));
                };
                let body = self.fields(
                    body,
                    WORKTREE_FIELDS,
                    &format!("`isolation.worktree` of {owner}"),
                )?;
                let text = |this: &mut Self, key: &str| -> Option<String> {
                    let node = body.value(key)?;
                    let value = this.string(node, &format!("`isolation.worktree.{key}`"))?;
                    if value.trim().is_empty() {
                        this.error(node.pos, format!("`isolation.worktree.{key}` is empty"))
                            .hint = Some(format!("remove `{key}` for the default"));
                        return None;
                    }
                    Some(value)
                };
                out.base = text(self, "base");
                out.dir = text(self, "dir");
                out.remote = text(self, "remote");
                out.branch = text(self, "branch");
                if let (Some(branch), Some(n)) = (&out.branch, body.value("branch"))
                    && let Err(why) = crate::branch::check_template(branch)
                {
                    let message = format!("`isolation.worktree.branch` `{branch}` {why}");
                    self.error(n.pos, message).hint = Some(
                        "use `{role}`, `{task}` and `{workflow}` and what a git branch name may hold, e.g. `orchestrate/{role}/{task}`".into(),
                    );
                }
                out.keep = body
                    .value("keep")
                    .and_then(|n| self.boolean(n, "`isolation.worktree.keep`"));
                Some(Isolation::Worktree(out))
            }
            other => {
                self.error(
                    node.pos,
                    format!(
                        "{what} must be `worktree`, `none` or a mapping, found {}",
                        other.kind()
                    ),
                )
                .hint = Some(hint.into());
                None
            }
        }
    }
}
