//! The published schemas (`crate::schema`) against the loader's field tables: every field the
//! loader reads is a property at the same place in the schema, and no schema property is one
//! the loader would refuse. Tests only; the schema types cannot read the tables themselves
//! (they mirror the YAML, the loader walks it).

use std::collections::BTreeSet;

use serde_json::Value;

use super::blocks::{BUDGET_FIELDS, ISOLATION_KINDS, WORKTREE_FIELDS};
use super::kinds::{
    APPROVAL_FIELDS, ENQUEUE_FIELDS, FOR_EACH_FIELDS, PARALLEL_FIELDS, WAIT_FOR_FIELDS,
};
use super::roles::ROLE_FIELDS;
use super::steps::{
    COMPARE_FIELDS, CONDITION_FIELDS, CONVERGE_FIELDS, GOTO_FIELDS, RETRY_FIELDS, STEP_FIELDS,
    TRANSITION_FIELDS,
};
use super::swarm::{SWARM_BUDGET_FIELDS, SWARM_FIELDS};
use super::workflow::{PROVIDER_FIELDS, WORKFLOW_FIELDS};

fn schema(name: &str) -> Value {
    serde_json::from_str(&crate::schema::render(name).unwrap()).unwrap()
}

/// `node` with a `$ref` into `#/$defs/` followed.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        Some(name) => resolve(root, &root["$defs"][name]),
        None => node,
    }
}

/// The alternatives of `node` (itself, or those of its `anyOf`/`oneOf`), references followed.
fn alternatives<'a>(root: &'a Value, node: &'a Value) -> Vec<&'a Value> {
    let node = resolve(root, node);
    let mut out = vec![node];
    for key in ["anyOf", "oneOf"] {
        for alt in node[key].as_array().into_iter().flatten() {
            out.extend(alternatives(root, alt));
        }
    }
    out
}

/// The mapping `node` describes (through `Option` and untagged alternatives).
fn object<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    alternatives(root, node)
        .into_iter()
        .find(|alt| alt["properties"].is_object())
        .unwrap_or_else(|| panic!("no mapping in {node}"))
}

/// Property `key` of the mapping `node` describes.
fn property<'a>(root: &'a Value, node: &'a Value, key: &str) -> &'a Value {
    let found = &object(root, node)["properties"][key];
    assert!(!found.is_null(), "no property `{key}` in {node}");
    found
}

fn keys(root: &Value, node: &Value) -> BTreeSet<String> {
    object(root, node)["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// The strings an enumeration allows (`enum` or a `oneOf` of `const`s).
fn names(root: &Value, node: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for alt in alternatives(root, node) {
        out.extend(alt["const"].as_str().map(String::from));
        for v in alt["enum"].as_array().into_iter().flatten() {
            out.extend(v.as_str().map(String::from));
        }
    }
    out
}

fn set(fields: &[&str]) -> BTreeSet<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

#[track_caller]
fn same(what: &str, schema: BTreeSet<String>, loader: &[&str]) {
    let loader = set(loader);
    assert_eq!(
        schema, loader,
        "{what}: the schema (left) and the loader's fields (right) differ; update crate::schema"
    );
}

fn check_step(root: &Value, step: &Value) {
    same("a step", keys(root, step), STEP_FIELDS);
    let field = |key| property(root, step, key);
    same("`when`", keys(root, field("when")), CONDITION_FIELDS);
    for key in ["equals", "not_equals"] {
        let compare = property(root, field("when"), key);
        same("`when.equals`", keys(root, compare), COMPARE_FIELDS);
    }
    same("`on`", keys(root, field("on")), TRANSITION_FIELDS);
    for key in TRANSITION_FIELDS {
        same(
            "`on.*`",
            keys(root, property(root, field("on"), key)),
            GOTO_FIELDS,
        );
    }
    same("`retry`", keys(root, field("retry")), RETRY_FIELDS);
    same("`converge`", keys(root, field("converge")), CONVERGE_FIELDS);
    same("`approval`", keys(root, field("approval")), APPROVAL_FIELDS);
    same("`enqueue`", keys(root, field("enqueue")), ENQUEUE_FIELDS);
    same("`for_each`", keys(root, field("for_each")), FOR_EACH_FIELDS);
    same("`parallel`", keys(root, field("parallel")), PARALLEL_FIELDS);
    same("`wait_for`", keys(root, field("wait_for")), WAIT_FOR_FIELDS);
    same(
        "`output_capture`",
        names(root, field("output_capture")),
        &["text", "lines", "json"],
    );
    same(
        "`phase`",
        names(root, field("phase")),
        &["readonly", "plan", "write", "full"],
    );
    for fan in ["for_each", "parallel"] {
        let join = property(root, field(fan), "join");
        same("`join`", names(root, join), &crate::model::Join::NAMES);
    }
}

fn check_blocks(root: &Value, owner: &Value) {
    same(
        "`budget`",
        keys(root, property(root, owner, "budget")),
        BUDGET_FIELDS,
    );
    let isolation = property(root, owner, "isolation");
    same(
        "`isolation` by name",
        names(root, isolation),
        ISOLATION_KINDS,
    );
    same(
        "`isolation` as a mapping",
        keys(root, isolation),
        ISOLATION_KINDS,
    );
    let worktree = property(root, isolation, "worktree");
    same(
        "`isolation.worktree`",
        keys(root, worktree),
        WORKTREE_FIELDS,
    );
}

#[test]
fn the_workflow_schema_has_the_loaders_fields_at_their_places() {
    let root = &schema("workflow");
    same("the workflow", keys(root, root), WORKFLOW_FIELDS);
    let providers = property(root, root, "providers");
    let provider = alternatives(root, providers)
        .into_iter()
        .find_map(|alt| alt.get("additionalProperties"))
        .unwrap();
    same("a provider", keys(root, provider), PROVIDER_FIELDS);
    check_blocks(root, root);
    let step = &property(root, root, "steps")["items"];
    check_step(root, step);
    // Nested step lists are steps too.
    let for_each = property(root, step, "for_each");
    same(
        "a `for_each` step",
        keys(root, &property(root, for_each, "steps")["items"]),
        STEP_FIELDS,
    );
    let branches = property(root, property(root, step, "parallel"), "branches");
    same(
        "a `parallel` branch's step",
        keys(root, &branches["additionalProperties"]["items"]),
        STEP_FIELDS,
    );
}

#[test]
fn the_role_schema_has_the_loaders_fields_at_their_places() {
    let root = &schema("role");
    same("the role", keys(root, root), ROLE_FIELDS);
    check_blocks(root, root);
    let capabilities = &property(root, root, "capabilities");
    let item = alternatives(root, capabilities)
        .into_iter()
        .find_map(|alt| alt.get("items"))
        .unwrap();
    same(
        "`capabilities`",
        names(root, item),
        crate::model::CAPABILITIES,
    );
}

#[test]
fn the_swarm_schema_has_the_loaders_fields_at_their_places() {
    let root = &schema("swarm");
    same("swarm.yaml", keys(root, root), SWARM_FIELDS);
    same(
        "`budget` of swarm.yaml",
        keys(root, property(root, root, "budget")),
        SWARM_BUDGET_FIELDS,
    );
}
