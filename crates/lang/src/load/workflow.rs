//! A workflow file's top level: its fields (queue directories, `strict_flow`, `max_visits`,
//! `budget`, `isolation`, `providers`, `context`, `env`, `outputs`, `steps`) and its
//! fingerprint. Does not read a step (`steps`) nor check the whole (`checks`).

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::model::{
    DEFAULT_MAX_VISITS, ProviderTemplate, QueueDirs, Step, Workflow, builtin_providers,
};
use crate::yaml::{Node, Value};

use super::fields::Loader;

pub(super) const WORKFLOW_FIELDS: &[&str] = &[
    "name",
    "version",
    "description",
    "strict_flow",
    "inbox_dir",
    "processed_dir",
    "failed_dir",
    "task_extension",
    "providers",
    "context",
    "env",
    "max_visits",
    "budget",
    "outputs",
    "isolation",
    "steps",
];

/// The fields of a provider template under `providers:`.
pub(super) const PROVIDER_FIELDS: &[&str] = &["command", "defaults"];

/// FNV-1a over the text: enough to notice that a workflow changed between a run and a resume.
pub fn fingerprint(text: &str) -> String {
    format!("{:016x}", orchestrate_base::hash::fnv1a(text.as_bytes()))
}

impl Loader {
    pub(super) fn workflow(&mut self, root: &Node, text: &str) -> Option<Workflow> {
        if root.value == Value::Null {
            self.error(root.pos, "the workflow is empty").hint =
                Some("a workflow needs at least `steps:` with one step".into());
            return None;
        }
        let fields = self.fields(root, WORKFLOW_FIELDS, "the workflow")?;
        let name = match fields.value("name") {
            Some(node) => self.string(node, "`name`").unwrap_or_default(),
            None => self
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let mut queue = QueueDirs::default();
        for (key, slot) in [
            ("inbox_dir", &mut queue.inbox_dir),
            ("processed_dir", &mut queue.processed_dir),
            ("failed_dir", &mut queue.failed_dir),
            ("task_extension", &mut queue.task_extension),
        ] {
            if let Some(node) = fields.value(key)
                && let Some(value) = self.string(node, &format!("`{key}`"))
            {
                *slot = value;
            }
        }
        let strict_flow = match fields.value("strict_flow") {
            Some(node) => self.boolean(node, "`strict_flow`").unwrap_or(true),
            None => true,
        };
        let max_visits = match fields.value("max_visits") {
            Some(node) => self
                .count(node, "`max_visits`", 1, 1_000_000)
                .unwrap_or(DEFAULT_MAX_VISITS),
            None => DEFAULT_MAX_VISITS,
        };
        let budget = fields
            .value("budget")
            .and_then(|n| self.budget(n, "the workflow"));
        let isolation = fields
            .value("isolation")
            .and_then(|n| self.isolation(n, "the workflow"));
        let mut providers = builtin_providers();
        if let Some(node) = fields.value("providers") {
            self.providers(node, &mut providers);
        }
        let context = match fields.value("context") {
            Some(node) => match node.to_json() {
                Json::Object(map) => map,
                _ => {
                    self.error(
                        node.pos,
                        "`context` must be a mapping of names to default values",
                    );
                    serde_json::Map::new()
                }
            },
            None => serde_json::Map::new(),
        };
        let env = match fields.value("env") {
            Some(node) => self.string_map(node, "`env`").unwrap_or_default(),
            None => Vec::new(),
        };
        let outputs = match fields.value("outputs") {
            Some(node) => self.string_map(node, "`outputs`").unwrap_or_default(),
            None => Vec::new(),
        };
        let steps = match fields.get("steps") {
            Some(node) => self.steps(node),
            None => {
                self.error(root.pos, "the workflow has no `steps`").hint =
                    Some("add `steps:` with a list of steps".into());
                Vec::new()
            }
        };
        Some(Workflow {
            name,
            path: self.file.clone(),
            fingerprint: fingerprint(text),
            queue,
            providers,
            context,
            env,
            max_visits,
            strict_flow,
            budget,
            outputs,
            isolation,
            steps,
        })
    }

    pub(super) fn providers(
        &mut self,
        node: &Node,
        providers: &mut BTreeMap<String, ProviderTemplate>,
    ) {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                "`providers` must be a mapping of provider names to templates",
            );
            return;
        };
        for (key, value) in entries {
            let Some(name) = self.string(key, "a provider name") else {
                continue;
            };
            let what = format!("provider `{name}`");
            let Some(fields) = self.fields(value, PROVIDER_FIELDS, &what) else {
                continue;
            };
            let command = match fields.get("command") {
                Some(node) => self.templates(node, &format!("`command` of {what}")),
                None => {
                    self.error(value.pos, format!("{what} has no `command`"));
                    None
                }
            };
            let mut defaults = BTreeMap::new();
            if let Some(node) = fields.value("defaults") {
                if let Value::Map(entries) = &node.value {
                    for (k, v) in entries {
                        if let (Some(k), Some(v)) = (
                            self.string(k, "a default's name"),
                            self.string(v, &format!("`defaults` of {what}")),
                        ) {
                            defaults.insert(k, v);
                        }
                    }
                } else {
                    self.error(node.pos, format!("`defaults` of {what} must be a mapping"));
                }
            }
            if let Some(command) = command {
                providers.insert(
                    name,
                    ProviderTemplate {
                        command,
                        defaults,
                        model_flag: None,
                    },
                );
            }
        }
    }

    pub(super) fn steps(&mut self, node: &Node) -> Vec<Step> {
        let Value::Seq(items) = &node.value else {
            self.error(
                node.pos,
                format!(
                    "`steps` must be a list of steps, found {}",
                    node.value.kind()
                ),
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.error(node.pos, "`steps` is empty").hint = Some("add at least one step".into());
        }
        items.iter().filter_map(|item| self.step(item)).collect()
    }
}
