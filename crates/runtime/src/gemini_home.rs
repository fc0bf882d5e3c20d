//! The private gemini home of a step with `max_turns`.
//!
//! Gemini CLI 0.61 limits turns only through its settings (`model.maxSessionTurns`). The one
//! settings file the engine may add to is a home of its own (`GEMINI_CLI_HOME`): the system
//! settings file that overrides the user's is refused unless it and every directory above it
//! belong to root and nobody else may write them, and a workspace `.gemini/settings.json` would
//! be a change to the user's files. A private home alone, though, hides the user's settings,
//! their Google sign-in, and the sessions: the next step's `--resume` looks in the user's
//! `~/.gemini/tmp/<project>/` and finds nothing. So the private home is the user's own seen
//! through links: its `.gemini/settings.json` is the user's settings plus the turn limit, and
//! every other entry of the user's gemini directory (credentials, accounts, the project
//! registry, `tmp/` with its sessions, `history/`, extensions, commands, ...) is a symbolic link
//! to the user's. `tmp/` and `history/` are made in the user's directory first when missing, so
//! that a session started under the private home is written where a later step finds it.
//!
//! Owns laying that directory down; does not decide when (`adapter`) or which home is the
//! user's (the caller, from the step's environment).

use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Entries of the user's gemini directory that must be shared even before gemini first
/// makes them: sessions and chats (`tmp/<project>/`) and the prompt history.
const SHARED_DIRS: &[&str] = &["tmp", "history"];

/// A private gemini home to lay down before the step starts.
#[derive(Debug, Clone, PartialEq)]
pub struct GeminiHome {
    /// The directory `GEMINI_CLI_HOME` points at (gemini reads `<home>/.gemini/`).
    pub(crate) home: PathBuf,
    pub(crate) max_session_turns: u32,
}

impl GeminiHome {
    /// Lays the home down over the user's home `user_home` (the `GEMINI_CLI_HOME` the step
    /// would otherwise see, else `HOME`). Safe to repeat and to run twice at once (a retry,
    /// fan-out items of one step): nothing is removed, links already there are kept, and the
    /// settings file is replaced atomically.
    pub fn lay_down(&self, user_home: &Path) -> Result<(), String> {
        let user_dir = user_home.join(".gemini");
        let private = self.home.join(".gemini");
        for dir in SHARED_DIRS {
            create_dir(&user_dir.join(dir))?;
        }
        create_dir(&private)?;
        let entries = std::fs::read_dir(&user_dir)
            .map_err(|e| format!("cannot list gemini's directory {}: {e}", user_dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                format!("cannot list gemini's directory {}: {e}", user_dir.display())
            })?;
            let name = entry.file_name();
            if name == "settings.json" {
                continue;
            }
            link(&entry.path(), &private.join(&name))?;
        }
        // Skills and agents gemini reads from `<home>/.agents`.
        let agents = user_home.join(".agents");
        if agents.exists() {
            link(&agents, &self.home.join(".agents"))?;
        }
        let user_settings = user_dir.join("settings.json");
        let settings = match std::fs::read_to_string(&user_settings) {
            Ok(text) => with_turn_limit(&text, self.max_session_turns).map_err(|e| {
                format!(
                    "cannot read gemini's settings {}: {e}; gemini refuses such a file too: fix it",
                    user_settings.display()
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                with_turn_limit("{}", self.max_session_turns).expect("an empty object parses")
            }
            Err(e) => {
                return Err(format!(
                    "cannot read gemini's settings {}: {e}",
                    user_settings.display()
                ));
            }
        };
        let path = private.join("settings.json");
        match orchestrate_base::fsutil::atomic_write(&path, settings.as_bytes()) {
            Ok(()) => Ok(()),
            // Another item of the same step laid the same file down at the same moment.
            Err(_) if std::fs::read_to_string(&path).is_ok_and(|text| text == settings) => Ok(()),
            Err(e) => Err(format!("cannot write {}: {e}", path.display())),
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// A symbolic link `at` -> `target`, unless `at` already exists (a link laid down before).
fn link(target: &Path, at: &Path) -> Result<(), String> {
    match std::os::unix::fs::symlink(target, at) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!(
            "cannot link {} to {}: {e}",
            at.display(),
            target.display()
        )),
    }
}

/// The settings text `text` (JSON with comments, as gemini reads it) with
/// `model.maxSessionTurns` set to `turns`.
fn with_turn_limit(text: &str, turns: u32) -> Result<String, String> {
    let mut settings: Value =
        serde_json::from_str(&strip_comments(text)).map_err(|e| e.to_string())?;
    let Value::Object(object) = &mut settings else {
        return Err("it is not a JSON object".into());
    };
    let model = object
        .entry("model")
        .or_insert_with(|| Value::Object(Map::new()));
    if !model.is_object() {
        return Err("its `model` is not an object".into());
    }
    model["maxSessionTurns"] = Value::from(turns);
    let mut out = serde_json::to_string_pretty(&settings).map_err(|e| e.to_string())?;
    out.push('\n');
    Ok(out)
}

/// Removes `//` and `/* */` comments outside strings (gemini strips them before parsing).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => out.extend(chars.next()),
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_settings_keep_their_values_and_gain_the_turn_limit() {
        let text = "{\n  // the user's\n  \"security\": {\"auth\": {\"selectedType\": \"oauth-personal\"}},\n  /* a block */ \"model\": {\"name\": \"gemini-2.5-pro\", \"maxSessionTurns\": 50},\n  \"url\": \"http://x//y\"\n}\n";
        let out: Value = serde_json::from_str(&with_turn_limit(text, 3).unwrap()).unwrap();
        assert_eq!(out["security"]["auth"]["selectedType"], "oauth-personal");
        assert_eq!(out["model"]["name"], "gemini-2.5-pro");
        assert_eq!(out["model"]["maxSessionTurns"], 3);
        assert_eq!(out["url"], "http://x//y");
        assert!(with_turn_limit("[1]", 3).is_err());
        assert!(with_turn_limit("{\"model\": 1}", 3).is_err());
        assert!(with_turn_limit("{oops", 3).is_err());
    }

    #[test]
    fn the_private_home_links_everything_of_the_users_but_settings() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user");
        std::fs::create_dir_all(user.join(".gemini/extensions")).unwrap();
        std::fs::create_dir_all(user.join(".agents")).unwrap();
        std::fs::write(user.join(".gemini/oauth_creds.json"), "{}").unwrap();
        std::fs::write(
            user.join(".gemini/settings.json"),
            "{\"general\": {\"vimMode\": true}}",
        )
        .unwrap();
        let home = GeminiHome {
            home: dir.path().join("private"),
            max_session_turns: 2,
        };
        home.lay_down(&user).unwrap();
        home.lay_down(&user).unwrap(); // again: a retry
        let private = home.home.join(".gemini");
        for name in ["oauth_creds.json", "extensions", "tmp", "history"] {
            let at = private.join(name);
            assert_eq!(
                std::fs::read_link(&at).unwrap(),
                user.join(".gemini").join(name)
            );
        }
        assert!(
            user.join(".gemini/tmp").is_dir(),
            "sessions go to the user's tmp/"
        );
        assert_eq!(
            std::fs::read_link(home.home.join(".agents")).unwrap(),
            user.join(".agents")
        );
        let settings: Value =
            serde_json::from_str(&std::fs::read_to_string(private.join("settings.json")).unwrap())
                .unwrap();
        assert_eq!(settings["general"]["vimMode"], true);
        assert_eq!(settings["model"]["maxSessionTurns"], 2);
        assert!(
            !std::fs::symlink_metadata(private.join("settings.json"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn a_user_without_gemini_settings_gets_only_the_turn_limit() {
        let dir = tempfile::tempdir().unwrap();
        let home = GeminiHome {
            home: dir.path().join("private"),
            max_session_turns: 4,
        };
        home.lay_down(&dir.path().join("user")).unwrap();
        let settings: Value = serde_json::from_str(
            &std::fs::read_to_string(home.home.join(".gemini/settings.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            settings,
            serde_json::json!({"model": {"maxSessionTurns": 4}})
        );
    }
}
