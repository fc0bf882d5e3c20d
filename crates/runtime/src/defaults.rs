//! The model a coding-agent CLI will use when the engine names none.
//!
//! Owns: the pinned CLI versions (`PINNED`, kept equal to `scripts/install-agent-clis` by a unit
//! test) with the models each uses when told nothing (every one priced in `Prices::builtin`,
//! checked by the same test), and reading the user's own choice where the CLI keeps it: codex's
//! own arguments in a profile's `args:` (`-m`, `-c model=`, `-p NAME` and its
//! `$CODEX_HOME/NAME.config.toml`), codex's `$CODEX_HOME/config.toml` (`model`), gemini's
//! `GEMINI_MODEL` and `model.name` in its user settings, claude's `ANTHROPIC_MODEL`.
//!
//! Does not build argv (`adapter`) or read output (`parse`). Claude and gemini name the models
//! they used in their output, and that wins over this; codex never does, so for codex this is
//! the only way its spending gets a price.

use std::path::{Path, PathBuf};

use crate::parse::Runtime;

/// A pinned CLI and the models it uses when no model is named.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pinned {
    pub(crate) runtime: Runtime,
    /// The npm package `scripts/install-agent-clis` installs.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "a unit test compares it with the install script")
    )]
    pub(crate) package: &'static str,
    pub(crate) version: &'static str,
    /// The model it runs without `--model` and without user configuration; `None` when it
    /// routes each request itself (gemini's `auto`), naming the models in its output.
    pub(crate) default_model: Option<&'static str>,
    /// Other models it uses on its own: routers, background and fallback models.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "a unit test checks each is priced")
    )]
    pub(crate) also_uses: &'static [&'static str],
}

/// The versions RUNTIMES.md and the adapter tables were written against; bump with
/// `scripts/install-agent-clis` (a unit test compares the two) and price any new default.
pub(crate) const PINNED: &[Pinned] = &[
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
    /// The model name, as the CLI would pass it to its API.
    pub model: String,
    /// "ANTHROPIC_MODEL", "/home/u/.codex/config.toml", "the default of codex 0.169.0", ...
    pub(crate) source: String,
}

/// The model `runtime` will use when the engine passes no `--model`, from the extra arguments
/// the engine passes it (`args`: the runtime profile's `args:`; codex only, see
/// [`codex_args_model`]), the environment the CLI will see (`env`), its configuration file,
/// then the pinned version's default. `None` for gemini left on `auto`.
pub fn default_model(
    runtime: Runtime,
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Guess> {
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
            codex_args_model(args, dir.as_deref()).or_else(|| {
                dir.and_then(|dir| {
                    let path = dir.join("config.toml");
                    let text = std::fs::read_to_string(&path).ok()?;
                    Some(Guess {
                        model: codex_config_model(&text)?,
                        source: path.display().to_string(),
                    })
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

/// The model codex's own arguments choose, in codex 0.169.0's order (observed against a stand-in
/// API, the model of its requests): `-m/--model NAME` wins; then the last `-c/--config
/// model=VALUE` (VALUE is TOML: `model="o3"`, `model = 'o3'`, or a bare literal as codex takes
/// it when it does not parse); then `model` of the file `-p/--profile NAME` layers over
/// config.toml, `$CODEX_HOME/NAME.config.toml` (`codex_home`). `None` when they choose none:
/// config.toml and the default decide.
pub(crate) fn codex_args_model(args: &[String], codex_home: Option<&Path>) -> Option<Guess> {
    let mut flag_model = None;
    let mut override_model = None;
    let mut profile = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        // `--flag VALUE`, `--flag=VALUE`, and for short flags `-fVALUE`.
        let value_of = |long: &str, short: &str| -> Option<Option<String>> {
            if arg == long || arg == short {
                return Some(None);
            }
            if let Some(value) = arg.strip_prefix(long).and_then(|v| v.strip_prefix('=')) {
                return Some(Some(value.to_string()));
            }
            arg.strip_prefix(short)
                .filter(|v| !v.is_empty() && !short.is_empty())
                .map(|v| Some(v.to_string()))
        };
        let mut take = |long: &str, short: &str| {
            value_of(long, short).map(|inline| inline.or_else(|| rest.next().cloned()))
        };
        if let Some(value) = take("--model", "-m") {
            flag_model = value.or(flag_model);
        } else if let Some(value) = take("--config", "-c") {
            if let Some(model) = value.as_deref().and_then(codex_model_override) {
                override_model = Some(model);
            }
        } else if let Some(value) = take("--profile", "-p") {
            profile = value.or(profile);
        }
    }
    let guess = |model: String, source: &str| {
        let model = model.trim().to_string();
        (!model.is_empty()).then(|| Guess {
            model,
            source: source.to_string(),
        })
    };
    if let Some(guess) = flag_model.and_then(|m| guess(m, "`--model` in codex's args")) {
        return Some(guess);
    }
    if let Some(guess) = override_model.and_then(|m| guess(m, "`-c model=` in codex's args")) {
        return Some(guess);
    }
    let path = codex_home?.join(format!("{}.config.toml", profile?));
    let text = std::fs::read_to_string(&path).ok()?;
    let config: toml::Table = toml::from_str(&text).ok()?;
    guess(
        config.get("model")?.as_str()?.to_string(),
        &path.display().to_string(),
    )
}

/// The model of one `-c KEY=VALUE` override when KEY is `model`: VALUE parsed as TOML, else
/// taken literally (codex does the same).
fn codex_model_override(pair: &str) -> Option<String> {
    let (key, value) = pair.split_once('=')?;
    if key.trim() != "model" {
        return None;
    }
    let value = value.trim();
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|table| table.get("v")?.as_str().map(str::to_string));
    Some(parsed.unwrap_or_else(|| value.to_string()))
}

/// `model` of codex's config.toml. The file is parsed as TOML (the `toml` crate), so dotted keys,
/// inline tables and every string form count. A file that does not parse, or that selects a
/// profile the legacy way (`profile = "NAME"`), names no model: codex 0.169 refuses both ("legacy
/// `profile = ...` config is no longer supported"). `[profiles.NAME]` tables alone are ignored,
/// as codex ignores them.
fn codex_config_model(text: &str) -> Option<String> {
    let config: toml::Table = toml::from_str(text).ok()?;
    if config.contains_key("profile") {
        return None;
    }
    config
        .get("model")
        .and_then(toml::Value::as_str)
        .map(str::to_string)
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
        let guess = default_model(Runtime::Codex, &[], &env_of(&[("CODEX_HOME", &home)])).unwrap();
        assert_eq!(guess.model, "gpt-6.1-sol");
        assert_eq!(guess.source, "the default of codex 0.169.0");
    }

    #[test]
    fn codex_config_model_and_profiles() {
        assert_eq!(
            codex_config_model("model = \"gpt-5\" # mine\n[model_providers.x]\nmodel = \"no\"\n"),
            Some("gpt-5".into())
        );
        // codex 0.169.0 refuses a legacy `profile =` (run against the pinned CLI) and ignores
        // `[profiles.NAME]` tables on their own.
        let legacy =
            "profile = 'fast'\nmodel = \"gpt-5\"\n\n[profiles.fast]\nmodel = \"gpt-5-mini\"\n";
        assert_eq!(codex_config_model(legacy), None);
        assert_eq!(
            codex_config_model("model = \"gpt-5\"\n\n[profiles.fast]\nmodel = \"gpt-5-mini\"\n"),
            Some("gpt-5".into())
        );
        assert_eq!(
            codex_config_model("model_provider = \"fake\"\n"),
            None,
            "no model: the pinned default applies"
        );
        // Dotted keys and inline tables are TOML too.
        assert_eq!(
            codex_config_model("model_provider = \"x\"\nmodel = \"gpt-5-nano\"\nx.y = 1\n"),
            Some("gpt-5-nano".into())
        );
        assert_eq!(
            codex_config_model("model = \"\"\"\ngpt-5\"\"\"\n"),
            Some("gpt-5".into())
        );
        assert_eq!(codex_config_model("model = [unclosed\n"), None);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            "model = \"gpt-5-mini\"\n[profiles.slow]\nmodel = \"o3\"\n",
        )
        .unwrap();
        let home = dir.path().display().to_string();
        let guess = default_model(Runtime::Codex, &[], &env_of(&[("CODEX_HOME", &home)])).unwrap();
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
        let guess = default_model(Runtime::Codex, &[], &env_of(&[("HOME", &home)])).unwrap();
        assert_eq!(guess.model, "o3");
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    fn args_model(args: &[&str], home: Option<&Path>) -> Option<String> {
        codex_args_model(&strings(args), home).map(|guess| guess.model)
    }

    #[test]
    fn codex_model_flag_in_every_form() {
        for args in [
            &["-m", "gpt-5-mini"][..],
            &["--model", "gpt-5-mini"],
            &["--model=gpt-5-mini"],
            &["-mgpt-5-mini"],
            &["--json", "-s", "read-only", "-m", "gpt-5-mini"],
        ] {
            assert_eq!(
                args_model(args, None).as_deref(),
                Some("gpt-5-mini"),
                "{args:?}"
            );
        }
        let guess = codex_args_model(&strings(&["-m", "o3"]), None).unwrap();
        assert_eq!(guess.source, "`--model` in codex's args");
    }

    #[test]
    fn codex_config_override_of_model_in_every_form() {
        for args in [
            &["-c", "model=gpt-5-nano"][..],
            &["-c", "model=\"gpt-5-nano\""],
            &["-c", "model = 'gpt-5-nano'"],
            &["--config", "model=gpt-5-nano"],
            &["--config=model=\"gpt-5-nano\""],
            &["-cmodel=gpt-5-nano"],
            // The last override wins, as in codex; other keys are not the model.
            &[
                "-c",
                "model=o3",
                "-c",
                "model=gpt-5-nano",
                "-c",
                "model_provider=x",
            ],
        ] {
            assert_eq!(
                args_model(args, None).as_deref(),
                Some("gpt-5-nano"),
                "{args:?}"
            );
        }
        assert_eq!(
            args_model(&["-c", "model_reasoning_effort=high"], None),
            None
        );
        assert_eq!(
            args_model(&["-c", "model="], None),
            None,
            "an empty model names none"
        );
    }

    #[test]
    fn codex_args_precedence_flag_then_override_then_profile_file() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(
            home.path().join("work.config.toml"),
            "model = \"gpt-4.1\"\n",
        )
        .unwrap();
        std::fs::write(home.path().join("config.toml"), "model = \"o4-mini\"\n").unwrap();
        let h = Some(home.path());
        assert_eq!(args_model(&["-p", "work"], h).as_deref(), Some("gpt-4.1"));
        assert_eq!(
            args_model(&["--profile=work"], h).as_deref(),
            Some("gpt-4.1")
        );
        assert_eq!(
            args_model(&["-p", "work", "-c", "model=o3"], h).as_deref(),
            Some("o3")
        );
        assert_eq!(
            args_model(&["-c", "model=o3", "-p", "work", "-m", "gpt-5-mini"], h).as_deref(),
            Some("gpt-5-mini")
        );
        assert_eq!(
            args_model(&["-p", "missing"], h),
            None,
            "no such file: config.toml decides"
        );
        // Through default_model: the args over config.toml, config.toml without them.
        let codex_home = home.path().display().to_string();
        let pairs = [("CODEX_HOME", codex_home.as_str())];
        let env = env_of(&pairs);
        let guess = default_model(Runtime::Codex, &strings(&["-p", "work"]), &env).unwrap();
        assert_eq!(guess.model, "gpt-4.1");
        assert!(guess.source.ends_with("work.config.toml"), "{guess:?}");
        let guess = default_model(Runtime::Codex, &strings(&["-p", "missing"]), &env).unwrap();
        assert_eq!(guess.model, "o4-mini");
        let guess = default_model(Runtime::Codex, &strings(&["-c", "model=o3"]), &env).unwrap();
        assert_eq!(
            (guess.model.as_str(), guess.source.as_str()),
            ("o3", "`-c model=` in codex's args")
        );
    }

    #[test]
    fn gemini_auto_names_no_model_but_a_configured_one_counts() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().display().to_string();
        assert_eq!(
            default_model(Runtime::Gemini, &[], &env_of(&[("GEMINI_CLI_HOME", &home)])),
            None
        );
        assert_eq!(
            default_model(Runtime::Gemini, &[], &env_of(&[("GEMINI_MODEL", "auto")])),
            None
        );
        std::fs::create_dir(dir.path().join(".gemini")).unwrap();
        std::fs::write(
            dir.path().join(".gemini/settings.json"),
            r#"{"model": {"name": "gemini-2.5-pro"}}"#,
        )
        .unwrap();
        let guess =
            default_model(Runtime::Gemini, &[], &env_of(&[("GEMINI_CLI_HOME", &home)])).unwrap();
        assert_eq!(guess.model, "gemini-2.5-pro");
        let claude = default_model(Runtime::Claude, &[], &env_of(&[])).unwrap();
        assert_eq!(claude.model, "claude-opus-5-5");
    }
}
