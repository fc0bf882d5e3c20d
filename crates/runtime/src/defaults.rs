//! The model a coding-agent CLI will use when the engine names none.
//!
//! Owns: the pinned CLI versions (`PINNED`, kept equal to `scripts/install-agent-clis` by a unit
//! test) with the models each uses when told nothing (every one priced in `Prices::builtin`,
//! checked by the same test), and reading the user's own choice where the CLI keeps it: codex's
//! `$CODEX_HOME/config.toml` (`model`, or `profile` and its `[profiles.NAME]` table), gemini's
//! `GEMINI_MODEL` and `model.name` in its user settings, claude's `ANTHROPIC_MODEL`.
//!
//! Does not build argv (`adapter`) or read output (`parse`). Claude and gemini name the models
//! they used in their output, and that wins over this; codex never does, so for codex this is
//! the only way its spending gets a price.

use std::path::{Path, PathBuf};

use crate::parse::Runtime;

/// A pinned CLI and the models it uses when no model is named.
#[derive(Debug, Clone, Copy)]
pub struct Pinned {
    pub runtime: Runtime,
    /// The npm package `scripts/install-agent-clis` installs.
    pub package: &'static str,
    pub version: &'static str,
    /// The model it runs without `--model` and without user configuration; `None` when it
    /// routes each request itself (gemini's `auto`), naming the models in its output.
    pub default_model: Option<&'static str>,
    /// Other models it uses on its own: routers, background and fallback models.
    pub also_uses: &'static [&'static str],
}

/// The versions RUNTIMES.md and the adapter tables were written against; bump with
/// `scripts/install-agent-clis` (a unit test compares the two) and price any new default.
pub const PINNED: &[Pinned] = &[
    Pinned {
        runtime: Runtime::Claude,
        package: "@anthropic-ai/claude-code",
        version: "2.1.330",
        // Its `init` line and `modelUsage` name it too; `sonnet` is claude-sonnet-5-5, and
        // background work goes to haiku.
        default_model: Some("claude-opus-5-5"),
        also_uses: &["claude-sonnet-5-5", "claude-haiku-5-5"],
    },
    Pinned {
        runtime: Runtime::Codex,
        package: "@openai/codex",
        version: "0.169.0",
        // Observed: the model of its Responses API requests with an empty config.toml.
        default_model: Some("gpt-6.1-sol"),
        also_uses: &[],
    },
    Pinned {
        runtime: Runtime::Gemini,
        package: "@google/gemini-cli",
        version: "0.61.0",
        default_model: None,
        // `auto`: a flash-lite router picks flash or pro (its resolveModel, by rollout).
        also_uses: &[
            "gemini-3.5-flash-lite",
            "gemini-3.1-flash-lite",
            "gemini-3.8-flash",
            "gemini-3.5-flash",
            "gemini-3-flash-preview",
            "gemini-3.1-pro-preview",
            "gemini-3.1-pro-preview-customtools",
            "gemini-3-pro-preview",
            "gemini-2.5-pro",
        ],
    },
];

/// The model a run will use and where that was learned.
#[derive(Debug, Clone, PartialEq)]
pub struct Guess {
    pub model: String,
    /// "ANTHROPIC_MODEL", "/home/u/.codex/config.toml", "the default of codex 0.169.0", ...
    pub source: String,
}

/// The model `runtime` will use when the engine passes no `--model`, from the environment the
/// CLI will see (`env`: the profile's entries over the engine's own), its configuration file,
/// then the pinned version's default. `None` for gemini left on `auto`.
pub fn default_model(runtime: Runtime, env: &dyn Fn(&str) -> Option<String>) -> Option<Guess> {
    let from_env = |name: &str| {
        env(name)
            .filter(|value| !value.trim().is_empty())
            .map(|model| Guess {
                model: model.trim().to_string(),
                source: name.to_string(),
            })
    };
    let home = || env("HOME").map(PathBuf::from);
    let configured = match runtime {
        Runtime::Claude => from_env("ANTHROPIC_MODEL"),
        Runtime::Codex => {
            let dir = env("CODEX_HOME")
                .map(PathBuf::from)
                .or_else(|| home().map(|h| h.join(".codex")));
            dir.and_then(|dir| {
                let path = dir.join("config.toml");
                let text = std::fs::read_to_string(&path).ok()?;
                Some(Guess {
                    model: codex_config_model(&text)?,
                    source: path.display().to_string(),
                })
            })
        }
        Runtime::Gemini => from_env("GEMINI_MODEL").or_else(|| {
            let dir = env("GEMINI_CLI_HOME").map(PathBuf::from).or_else(home)?;
            gemini_settings_model(&dir.join(".gemini").join("settings.json"))
        }),
    };
    // gemini's aliases (`auto`, `pro`, `flash`) name no model: its output will.
    let configured =
        configured.filter(|guess| runtime != Runtime::Gemini || guess.model.starts_with("gemini-"));
    configured.or_else(|| {
        let pinned = PINNED.iter().find(|p| p.runtime == runtime)?;
        Some(Guess {
            model: pinned.default_model?.to_string(),
            source: format!("the default of {} {}", runtime.name(), pinned.version),
        })
    })
}

/// `model` of codex's config.toml: the selected `profile`'s when it sets one, else the
/// top-level key. The file is parsed as TOML (the `toml` crate), so dotted keys, inline tables
/// and every string form count; a file that does not parse names no model (codex itself would
/// refuse it).
fn codex_config_model(text: &str) -> Option<String> {
    let config: toml::Table = toml::from_str(text).ok()?;
    let string = |table: &toml::Table, key: &str| {
        table
            .get(key)
            .and_then(toml::Value::as_str)
            .map(str::to_string)
    };
    let profile_model = string(&config, "profile").and_then(|name| {
        let profile = config.get("profiles")?.as_table()?.get(&name)?.as_table()?;
        string(profile, "model")
    });
    profile_model.or_else(|| string(&config, "model"))
}

/// `model.name` of a gemini settings file.
fn gemini_settings_model(path: &Path) -> Option<Guess> {
    let text = std::fs::read_to_string(path).ok()?;
    let settings: serde_json::Value = serde_json::from_str(&text).ok()?;
    let model = settings["model"]["name"].as_str()?.trim();
    (!model.is_empty()).then(|| Guess {
        model: model.to_string(),
        source: path.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Prices;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    /// The pins of `scripts/install-agent-clis`: `"PACKAGE@VERSION"` lines of its PINS array.
    fn script_pins() -> Vec<(String, String)> {
        let script = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/install-agent-clis"
        ))
        .expect("scripts/install-agent-clis is readable");
        let start = script.find("PINS=(").expect("the script has a PINS array");
        script[start..]
            .lines()
            .skip(1)
            .take_while(|line| line.trim() != ")")
            .filter_map(|line| {
                let spec = line.trim().trim_matches('"');
                let (package, version) = spec.rsplit_once('@')?;
                Some((package.to_string(), version.to_string()))
            })
            .collect()
    }

    #[test]
    fn every_pinned_cli_default_model_has_a_price() {
        let pins = script_pins();
        assert_eq!(pins.len(), 3, "{pins:?}");
        let prices = Prices::builtin();
        for (package, version) in &pins {
            let pinned = PINNED
                .iter()
                .find(|p| p.package == package)
                .unwrap_or_else(|| panic!("{package} is pinned by the script but not in PINNED"));
            assert_eq!(
                &pinned.version, version,
                "{package}: scripts/install-agent-clis pins {version}, runtime::defaults::PINNED says {}: update PINNED (its default models) and the price table together",
                pinned.version
            );
            for model in pinned.default_model.iter().chain(pinned.also_uses) {
                assert!(
                    prices.lookup(model).is_some(),
                    "{package}@{version} uses {model}, which has no price in Prices::builtin"
                );
            }
        }
    }

    #[test]
    fn codex_default_is_the_pinned_one_without_config() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().display().to_string();
        let guess = default_model(Runtime::Codex, &env_of(&[("CODEX_HOME", &home)])).unwrap();
        assert_eq!(guess.model, "gpt-6.1-sol");
        assert_eq!(guess.source, "the default of codex 0.169.0");
    }

    #[test]
    fn codex_config_model_and_profiles() {
        assert_eq!(
            codex_config_model("model = \"gpt-5\" # mine\n[model_providers.x]\nmodel = \"no\"\n"),
            Some("gpt-5".into())
        );
        let with_profile = "profile = 'fast'\nmodel = \"gpt-5\"\n\n[profiles.fast]\nmodel = \"gpt-5-mini\"\n[profiles.slow]\nmodel = \"o3\"\n";
        assert_eq!(codex_config_model(with_profile), Some("gpt-5-mini".into()));
        assert_eq!(
            codex_config_model("model_provider = \"fake\"\n"),
            None,
            "no model: the pinned default applies"
        );
        // Dotted keys and inline tables are TOML too.
        assert_eq!(
            codex_config_model("profile = \"p\"\nprofiles.p.model = \"gpt-5-nano\"\n"),
            Some("gpt-5-nano".into())
        );
        assert_eq!(
            codex_config_model(
                "profile = \"p\"\nmodel = \"o3\"\nprofiles = { p = { model_provider = \"x\" } }\n"
            ),
            Some("o3".into()),
            "a profile without a model falls back to the top-level one"
        );
        assert_eq!(
            codex_config_model("model = \"\"\"\ngpt-5\"\"\"\n"),
            Some("gpt-5".into())
        );
        assert_eq!(codex_config_model("model = [unclosed\n"), None);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), with_profile).unwrap();
        let home = dir.path().display().to_string();
        let guess = default_model(Runtime::Codex, &env_of(&[("CODEX_HOME", &home)])).unwrap();
        assert_eq!(guess.model, "gpt-5-mini");
        assert!(guess.source.ends_with("config.toml"), "{guess:?}");
        // Without CODEX_HOME, ~/.codex.
        let home_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(home_dir.path().join(".codex")).unwrap();
        std::fs::write(
            home_dir.path().join(".codex/config.toml"),
            "model = \"o3\"\n",
        )
        .unwrap();
        let home = home_dir.path().display().to_string();
        let guess = default_model(Runtime::Codex, &env_of(&[("HOME", &home)])).unwrap();
        assert_eq!(guess.model, "o3");
    }

    #[test]
    fn gemini_auto_names_no_model_but_a_configured_one_counts() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().display().to_string();
        assert_eq!(
            default_model(Runtime::Gemini, &env_of(&[("GEMINI_CLI_HOME", &home)])),
            None
        );
        assert_eq!(
            default_model(Runtime::Gemini, &env_of(&[("GEMINI_MODEL", "auto")])),
            None
        );
        std::fs::create_dir(dir.path().join(".gemini")).unwrap();
        std::fs::write(
            dir.path().join(".gemini/settings.json"),
            r#"{"model": {"name": "gemini-2.5-pro"}}"#,
        )
        .unwrap();
        let guess = default_model(Runtime::Gemini, &env_of(&[("GEMINI_CLI_HOME", &home)])).unwrap();
        assert_eq!(guess.model, "gemini-2.5-pro");
        let claude = default_model(Runtime::Claude, &env_of(&[])).unwrap();
        assert_eq!(claude.model, "claude-opus-5-5");
    }
}
