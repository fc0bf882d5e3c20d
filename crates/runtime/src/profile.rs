//! `runtimes.yaml`: who executes agent steps, separately from the workflows.
//!
//! Owns: profiles (a runtime, a model, extra environment, a binary path, extra CLI arguments),
//! the workspace default,
//! and price overrides, plus resolving a name given on the command line, a role or a step into a
//! concrete choice. Does not build argv (`adapter`) or read any other file.
//!
//! ```yaml
//! default: sonnet                 # used when neither --runtime, the step nor the role decides
//! profiles:
//!   sonnet: {runtime: claude, model: sonnet}
//!   gpt:    {runtime: codex, model: gpt-5, env: {OPENAI_BASE_URL: "http://127.0.0.1:8080/v1"}}
//!   work:   {runtime: codex, args: ["-p", "work"]}   # the CLI's own flags, passed as they are
//! prices:                         # USD per million tokens, by model-name prefix
//!   gpt-5: {input: 1.25, output: 10, cache_read: 0.125}
//! ```

use std::time::Duration;

use std::collections::BTreeMap;
use std::path::Path;

use crate::parse::{Price, Prices, Runtime};
use orchestrate_lang::diag::{Diagnostic, did_you_mean};
use orchestrate_lang::load::LoadError;
use orchestrate_lang::yaml::{self, Node, Value};

pub(crate) const FILE: &str = "runtimes.yaml";

/// `failures` defaults to this many consecutive failures of one class.
pub(crate) const DEFAULT_FAILURES: u32 = 5;
pub(crate) const DEFAULT_COOLDOWN: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_MAX_COOLDOWN: Duration = Duration::from_secs(30 * 60);

/// A breaker's settings (`breaker:` in runtimes.yaml, at the top or in a profile).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures of one class that open it; 0 turns the breaker off.
    pub failures: u32,
    /// Seconds to wait before letting one trial run through after the breaker opened.
    pub cooldown: Duration,
    /// The longest the cool-down grows to after failed trials (never below `cooldown`).
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: DEFAULT_FAILURES,
            cooldown: DEFAULT_COOLDOWN,
            max_cooldown: DEFAULT_MAX_COOLDOWN,
        }
    }
}

/// One entry of `profiles:` in runtimes.yaml: how to run an agent step that names it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// An agent runtime (`claude`, `codex`, `gemini`) or a provider template's name.
    pub runtime: String,
    /// `model:`, passed to the CLI; `None` names no model.
    pub model: Option<String>,
    /// `env:`: variables set for the CLI's process (an API base URL, a key's name).
    pub env: Vec<(String, String)>,
    /// The executable, when not the runtime's name on PATH.
    pub bin: Option<String>,
    /// `args:`: the CLI's own flags, passed after its subcommand and before the engine's
    /// (codex `-p work`, `-c model=o3`). The model they choose is recorded and priced.
    pub args: Vec<String>,
    /// `breaker:` settings for this profile's circuit breaker (over the top-level ones).
    pub breaker: BreakerSettings,
}

/// `breaker: {failures, cooldown_sec, max_cooldown_sec}`, each optional.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BreakerSettings {
    pub(crate) failures: Option<u32>,
    pub(crate) cooldown_sec: Option<f64>,
    pub(crate) max_cooldown_sec: Option<f64>,
}

impl BreakerSettings {
    fn over(&self, base: BreakerConfig) -> BreakerConfig {
        let mut out = base;
        if let Some(n) = self.failures {
            out.failures = n;
        }
        if let Some(s) = self.cooldown_sec {
            out.cooldown = std::time::Duration::from_secs_f64(s);
        }
        if let Some(s) = self.max_cooldown_sec {
            out.max_cooldown = std::time::Duration::from_secs_f64(s);
        }
        out.max_cooldown = out.max_cooldown.max(out.cooldown);
        out
    }
}

/// runtimes.yaml as loaded: the profiles, the price table and the breakers.
#[derive(Debug, Clone)]
pub struct Profiles {
    /// `default:`: the runtime or profile an agent step runs with when neither `--runtime`, the
    /// step nor the task's role names one.
    pub default: Option<String>,
    /// `profiles:` by name.
    pub profiles: BTreeMap<String, Profile>,
    /// The built-in prices with runtimes.yaml's `prices:` over them (USD per million tokens, by
    /// model-name prefix).
    pub prices: Prices,
    /// The top-level `breaker:`: every runtime's breaker unless its profile says otherwise.
    pub(crate) breaker: BreakerSettings,
}

impl Default for Profiles {
    fn default() -> Self {
        Profiles {
            default: None,
            profiles: BTreeMap::new(),
            prices: Prices::builtin(),
            breaker: BreakerSettings::default(),
        }
    }
}

impl Profiles {
    /// Reads `WORKSPACE/runtimes.yaml` if there is one.
    pub fn load(workspace: &Path) -> Result<Profiles, LoadError> {
        let path = workspace.join(FILE);
        if !path.exists() {
            return Ok(Profiles::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|err| LoadError {
            path: path.clone(),
            source_text: None,
            diagnostics: vec![Diagnostic::error(
                &path,
                yaml::Pos::default(),
                format!("cannot read it: {err}"),
            )],
        })?;
        let mut diags = Vec::new();
        let profiles = parse(&path, &text, &mut diags);
        if diags.is_empty() {
            Ok(profiles)
        } else {
            Err(LoadError {
                path,
                source_text: Some(text),
                diagnostics: diags,
            })
        }
    }

    /// The circuit breaker settings of a runtime or profile: the defaults, then the top-level
    /// `breaker:`, then the profile's.
    pub fn breaker(&self, name: &str) -> BreakerConfig {
        let base = self.breaker.over(BreakerConfig::default());
        match self.profiles.get(name) {
            Some(profile) => profile.breaker.over(base),
            None => base,
        }
    }

    /// Resolves a name (a profile, or a runtime/provider name used directly) to a profile.
    pub fn resolve(&self, name: &str) -> Profile {
        self.profiles.get(name).cloned().unwrap_or_else(|| Profile {
            runtime: name.to_string(),
            ..Profile::default()
        })
    }
}

fn parse(path: &Path, text: &str, diags: &mut Vec<Diagnostic>) -> Profiles {
    let mut out = Profiles::default();
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(err) => {
            diags.push(Diagnostic::error(
                path,
                err.pos,
                format!("invalid YAML: {}", err.message),
            ));
            return out;
        }
    };
    let Some(entries) = map(
        path,
        &root,
        &["default", "profiles", "prices", "breaker"],
        "runtimes.yaml",
        diags,
    ) else {
        return out;
    };
    for (key, value) in entries {
        match key.as_str() {
            "default" => out.default = value.scalar_text(),
            "breaker" => out.breaker = breaker(path, value, "the top-level `breaker`", diags),
            "profiles" => profiles(path, value, &mut out, diags),
            _ => prices(path, value, &mut out, diags),
        }
    }
    check_default(path, &root, &out, diags);
    out
}

/// `profiles:`, a mapping of names to profiles, into `out`.
fn profiles(path: &Path, value: &Node, out: &mut Profiles, diags: &mut Vec<Diagnostic>) {
    let Value::Map(items) = &value.value else {
        diags.push(Diagnostic::error(
            path,
            value.pos,
            "`profiles` must be a mapping of names to profiles",
        ));
        return;
    };
    for (name, body) in items {
        let name = name.scalar_text().unwrap_or_default();
        let what = format!("profile `{name}`");
        let Some(fields) = map(
            path,
            body,
            &["runtime", "model", "env", "bin", "args", "breaker"],
            &what,
            diags,
        ) else {
            continue;
        };
        let mut profile = Profile::default();
        for (k, v) in fields {
            match k.as_str() {
                "runtime" => profile.runtime = v.scalar_text().unwrap_or_default(),
                "model" => profile.model = v.scalar_text(),
                "bin" => profile.bin = v.scalar_text(),
                "args" => match &v.value {
                    Value::Seq(items) => {
                        profile.args = items.iter().filter_map(|item| item.scalar_text()).collect()
                    }
                    _ => diags.push(
                        Diagnostic::error(
                            path,
                            v.pos,
                            format!("`args` of {what} must be a list of strings"),
                        )
                        .with_hint("args: [\"-p\", \"work\"]"),
                    ),
                },
                "breaker" => {
                    profile.breaker = breaker(path, v, &format!("`breaker` of {what}"), diags)
                }
                _ => match &v.value {
                    Value::Map(env) => {
                        profile.env = env
                            .iter()
                            .map(|(a, b)| {
                                (
                                    a.scalar_text().unwrap_or_default(),
                                    b.scalar_text().unwrap_or_default(),
                                )
                            })
                            .collect()
                    }
                    _ => diags.push(Diagnostic::error(
                        path,
                        v.pos,
                        format!("`env` of {what} must be a mapping"),
                    )),
                },
            }
        }
        if profile.runtime.is_empty() {
            diags.push(
                Diagnostic::error(path, body.pos, format!("{what} has no `runtime`"))
                    .with_hint("runtime: claude, codex, gemini, or a provider template's name"),
            );
        }
        out.profiles.insert(name, profile);
    }
}

/// `prices:`, model-name prefixes to USD per million tokens, into `out` (a later one replaces
/// an earlier one of the same prefix).
fn prices(path: &Path, value: &Node, out: &mut Profiles, diags: &mut Vec<Diagnostic>) {
    let Value::Map(items) = &value.value else {
        diags.push(Diagnostic::error(
            path,
            value.pos,
            "`prices` must map model prefixes to prices",
        ));
        return;
    };
    for (model, body) in items {
        let prefix = model.scalar_text().unwrap_or_default();
        let what = format!("price `{prefix}`");
        let Some(fields) = map(
            path,
            body,
            &["input", "output", "cache_read", "cache_write"],
            &what,
            diags,
        ) else {
            continue;
        };
        let mut price = Price {
            prefix: prefix.clone(),
            input: 0.0,
            output: 0.0,
            cache_read: 0.0,
            cache_write: 0.0,
        };
        for (k, v) in fields {
            let number = match v.to_json() {
                serde_json::Value::Number(n) => n.as_f64(),
                _ => None,
            };
            let Some(number) = number.filter(|n| *n >= 0.0) else {
                diags.push(Diagnostic::error(
                    path,
                    v.pos,
                    format!("`{k}` of {what} must be a number of USD per million tokens"),
                ));
                continue;
            };
            match k.as_str() {
                "input" => price.input = number,
                "output" => price.output = number,
                "cache_read" => price.cache_read = number,
                _ => price.cache_write = number,
            }
        }
        out.prices.overrides.retain(|p| p.prefix != prefix);
        out.prices.overrides.push(price);
    }
}

/// `default:` must name a profile or a runtime.
fn check_default(path: &Path, root: &Node, out: &Profiles, diags: &mut Vec<Diagnostic>) {
    if let Some(default) = &out.default
        && !out.profiles.contains_key(default)
        && Runtime::from_name(default).is_none()
    {
        let pos = root_pos(root, "default");
        let names: Vec<&str> = out
            .profiles
            .keys()
            .map(String::as_str)
            .chain(["claude", "codex", "gemini"])
            .collect();
        let hint = did_you_mean(default, names.iter().copied())
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| format!("known: {}", names.join(", ")));
        diags.push(
            Diagnostic::error(
                path,
                pos,
                format!("`default: {default}` names no profile or runtime"),
            )
            .with_hint(hint),
        );
    }
}

/// A `breaker:` mapping, validated: `failures` a whole number (0 turns the breaker off),
/// `cooldown_sec` and `max_cooldown_sec` positive seconds, the maximum not below the cool-down.
fn breaker(path: &Path, node: &Node, what: &str, diags: &mut Vec<Diagnostic>) -> BreakerSettings {
    let mut out = BreakerSettings::default();
    let Some(fields) = map(
        path,
        node,
        &["failures", "cooldown_sec", "max_cooldown_sec"],
        what,
        diags,
    ) else {
        return out;
    };
    for (k, v) in fields {
        let number = match v.to_json() {
            serde_json::Value::Number(n) => n.as_f64(),
            _ => None,
        };
        if k == "failures" {
            match number.filter(|n| n.fract() == 0.0 && (0.0..=1_000_000.0).contains(n)) {
                Some(n) => out.failures = Some(n as u32),
                None => diags.push(
                    Diagnostic::error(path, v.pos, format!("`failures` of {what} must be a whole number"))
                        .with_hint("consecutive failures of one class that open the breaker (default 5; 0 turns it off)"),
                ),
            }
            continue;
        }
        match number.filter(|n| n.is_finite() && *n > 0.0 && *n <= 7.0 * 86400.0) {
            Some(n) if k == "cooldown_sec" => out.cooldown_sec = Some(n),
            Some(n) => out.max_cooldown_sec = Some(n),
            None => diags.push(
                Diagnostic::error(
                    path,
                    v.pos,
                    format!("`{k}` of {what} must be a number of seconds above 0 (at most a week)"),
                )
                .with_hint("cooldown_sec defaults to 60, max_cooldown_sec to 1800"),
            ),
        }
    }
    if let (Some(cool), Some(max)) = (out.cooldown_sec, out.max_cooldown_sec)
        && max < cool
    {
        diags.push(
            Diagnostic::error(
                path,
                node.pos,
                format!("{what} has max_cooldown_sec {max} below cooldown_sec {cool}"),
            )
            .with_hint("the cool-down doubles after each failed trial up to max_cooldown_sec"),
        );
    }
    out
}

fn root_pos(root: &Node, key: &str) -> yaml::Pos {
    match &root.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.scalar_text().as_deref() == Some(key))
            .map(|(_, v)| v.pos)
            .unwrap_or(root.pos),
        _ => root.pos,
    }
}

/// The entries of a mapping node with only `allowed` keys (unknown ones reported).
fn map<'a>(
    path: &Path,
    node: &'a Node,
    allowed: &[&str],
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<(String, &'a Node)>> {
    let Value::Map(entries) = &node.value else {
        diags.push(Diagnostic::error(
            path,
            node.pos,
            format!("{what} must be a mapping"),
        ));
        return None;
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let key = k.scalar_text().unwrap_or_default();
        if allowed.contains(&key.as_str()) {
            out.push((key, v));
        } else {
            let hint = did_you_mean(&key, allowed.iter().copied())
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| format!("allowed: {}", allowed.join(", ")));
            diags.push(
                Diagnostic::error(path, k.pos, format!("unknown field `{key}` in {what}"))
                    .with_hint(hint)
                    .with_width(key.chars().count()),
            );
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Profiles, Vec<Diagnostic>> {
        let mut diags = Vec::new();
        let p = parse(Path::new("runtimes.yaml"), text, &mut diags);
        if diags.is_empty() { Ok(p) } else { Err(diags) }
    }

    #[test]
    fn profile_args_are_a_list_of_strings() {
        let p =
            load("profiles:\n  work: {runtime: codex, args: [\"-p\", work, -c, \"model='o3'\"]}\n")
                .unwrap();
        assert_eq!(p.resolve("work").args, ["-p", "work", "-c", "model='o3'"]);
        let diags = load("profiles:\n  work: {runtime: codex, args: \"-p work\"}\n").unwrap_err();
        assert!(
            diags[0]
                .message
                .contains("`args` of profile `work` must be a list"),
            "{diags:?}"
        );
    }

    #[test]
    fn profiles_and_default() {
        let p = load(
            "default: fast\nprofiles:\n  fast: {runtime: claude, model: haiku, env: {A: b}}\n",
        )
        .unwrap();
        assert_eq!(p.resolve("fast").model.as_deref(), Some("haiku"));
        assert_eq!(p.resolve("codex").runtime, "codex");
        assert_eq!(
            p.resolve("fast").env,
            vec![("A".to_string(), "b".to_string())]
        );
    }

    #[test]
    fn unknown_fields_and_bad_default() {
        let errs = load("default: nope\nprofiles:\n  x: {runtme: claude}\n").unwrap_err();
        assert!(
            errs.iter()
                .any(|d| d.message.contains("unknown field `runtme`"))
        );
        assert!(errs.iter().any(|d| d.message.contains("`default: nope`")));
    }

    #[test]
    fn breaker_settings() {
        let p = load("breaker: {failures: 3}\nprofiles:\n  fast: {runtime: claude, breaker: {cooldown_sec: 0.5}}\n").unwrap();
        let fast = p.breaker("fast");
        assert_eq!((fast.failures, fast.cooldown.as_millis()), (3, 500));
        assert_eq!(p.breaker("codex").cooldown.as_secs(), 60);
        let errs =
            load("breaker: {failures: -1, cooldown_sec: 0, max_coldown_sec: 3}\n").unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(load("breaker: {cooldown_sec: 10, max_cooldown_sec: 5}\n").is_err());
    }

    #[test]
    fn price_override() {
        let p = load("prices:\n  my-model: {input: 1, output: 2}\n").unwrap();
        assert_eq!(p.prices.lookup("my-model-v2").map(|x| x.output), Some(2.0));
        // An override wins over a built-in entry with a longer prefix.
        let p = load("prices:\n  gemini-3: {input: 1, output: 2}\n").unwrap();
        assert_eq!(
            p.prices.lookup("gemini-3.8-flash").map(|x| x.input),
            Some(1.0)
        );
        assert_eq!(p.prices.lookup("gpt-5").map(|x| x.input), Some(1.25));
    }
}
