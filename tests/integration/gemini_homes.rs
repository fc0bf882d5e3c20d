//! The private gemini home of a step with `max_turns` (`runtime::gemini_home`) as steps and
//! fan-outs meet it: laid over the step's effective `GEMINI_CLI_HOME`, one per invocation, and
//! the sessions begun under it found by the next step's `--resume`.

use crate::harness::*;

/// A stand-in gemini 0.61: reads `<home>/.gemini/` (home = `GEMINI_CLI_HOME`, else `HOME`),
/// keeps sessions in `<home>/.gemini/tmp/project/chats/`, refuses a `--resume` of a session it
/// cannot find there. Each invocation `n` records, in `rec`, the home it ran in
/// (`home.n`), its settings (`settings.n.json`) and whether the sign-in was there (`creds.n`).
fn recording_gemini(ws: &Ws, rec: &std::path::Path) {
    ws.script(
        "bin/gemini",
        &format!(
            r#"#!/usr/bin/env bash
rec='{rec}'
home="${{GEMINI_CLI_HOME:-$HOME}}"
dir="$home/.gemini"
n=$(mktemp -u XXXXXXXX)
echo "$home" > "$rec/home.$n"
cp "$dir/settings.json" "$rec/settings.$n.json" 2>/dev/null
[ -f "$dir/oauth_creds.json" ] && touch "$rec/creds.$n"
cat > /dev/null
session="s-$n"
while [ $# -gt 0 ]; do [ "$1" = --resume ] && session=$2; shift; done
chats="$dir/tmp/project/chats"
if [ "$session" != "s-$n" ] && [ ! -f "$chats/$session" ]; then
  echo "Error resuming session: No previous sessions found for this project." >&2
  exit 42
fi
mkdir -p "$chats" && touch "$chats/$session"
echo '{{"type":"init","session_id":"'"$session"'","model":"gemini-2.5-flash"}}'
echo '{{"type":"message","role":"assistant","content":"done","delta":true}}'
echo '{{"type":"result","status":"success","stats":{{"total_tokens":3,"input_tokens":2,"output_tokens":1,"cached":0,"input":2,"duration_ms":1,"tool_calls":0}}}}'
"#,
            rec = rec.display()
        ),
    );
}

/// A user's gemini home signed in with Google.
fn signed_in_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join(".gemini");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("settings.json"),
        "{\"security\": {\"auth\": {\"selectedType\": \"oauth-personal\"}}}\n",
    )
    .unwrap();
    std::fs::write(dir.join("oauth_creds.json"), "{\"refresh_token\": \"r\"}").unwrap();
    home
}

/// What the recording gemini saw, invocation by invocation: (home, settings, signed in).
fn invocations(rec: &std::path::Path) -> Vec<(String, serde_json::Value, bool)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(rec).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(n) = name.strip_prefix("home.") else {
            continue;
        };
        let home = std::fs::read_to_string(rec.join(&name)).unwrap();
        let settings = std::fs::read_to_string(rec.join(format!("settings.{n}.json")))
            .map(|text| serde_json::from_str(&text).unwrap())
            .unwrap_or(serde_json::Value::Null);
        out.push((
            home.trim().to_string(),
            settings,
            rec.join(format!("creds.{n}")).exists(),
        ));
    }
    out
}

#[test]
fn gemini_max_turns_home_sits_over_the_steps_own_gemini_cli_home() {
    let mut ws = Ws::new();
    ws.with_bin_path();
    let user = signed_in_home();
    // The engine's own HOME has no gemini settings: only the step's env names the user's.
    let elsewhere = tempfile::tempdir().unwrap();
    let rec = tempfile::tempdir().unwrap();
    ws.env("HOME", elsewhere.path().to_str().unwrap())
        .env("GEMINI_CLI_HOME", "");
    recording_gemini(&ws, rec.path());
    ws.workflow(&format!(
        r#"name: turns
steps:
  - name: First
    runtime: gemini
    max_turns: 2
    env: {{GEMINI_CLI_HOME: "{user}"}}
    prompt: "look"
  - name: Second
    runtime: gemini
    resume: First
    env: {{GEMINI_CLI_HOME: "{user}"}}
    prompt: "go on"
"#,
        user = user.path().display()
    ));
    let run = ws.run_wf(&[]);
    run.ok();
    let second = run.step("Second");
    assert_eq!(second["status"], "succeeded", "{second:#}");
    assert_eq!(second["session_id"], run.step("First")["session_id"]);
    let seen = invocations(rec.path());
    assert_eq!(seen.len(), 2, "{seen:?}");
    let (private, limited): (Vec<_>, Vec<_>) = seen
        .iter()
        .partition(|(_, settings, _)| settings["model"]["maxSessionTurns"] == 2);
    assert_eq!(limited.len(), 1, "{seen:?}");
    let (home, settings, signed_in) = &private[0];
    assert_ne!(home, &user.path().display().to_string(), "{seen:?}");
    assert_eq!(
        settings["security"]["auth"]["selectedType"], "oauth-personal",
        "the step's GEMINI_CLI_HOME settings were not the ones laid under the turn limit: {seen:?}"
    );
    assert!(
        signed_in,
        "the sign-in of the step's GEMINI_CLI_HOME was hidden"
    );
    assert!(limited[0].2, "the resumed step ran signed in");
    assert!(
        !elsewhere.path().join(".gemini").exists(),
        "the engine's HOME was taken for the user's gemini home"
    );
}

#[test]
fn gemini_fan_out_items_each_get_their_own_max_turns_home_and_their_sessions_resume() {
    let mut ws = Ws::new();
    ws.with_bin_path();
    let user = signed_in_home();
    let rec = tempfile::tempdir().unwrap();
    ws.env("HOME", user.path().to_str().unwrap())
        .env("GEMINI_CLI_HOME", "");
    recording_gemini(&ws, rec.path());
    ws.workflow(
        r#"name: fan
steps:
  - name: Each
    for_each:
      items: ["a", "b", "c", "d"]
      as: it
      max_parallel: 4
      steps:
        - name: Look
          runtime: gemini
          max_turns: 3
          prompt: "look at ${it}"
  - name: After
    runtime: gemini
    resume: Look
    prompt: "go on"
"#,
    );
    let run = ws.run_wf(&[]);
    run.ok();
    let seen = invocations(rec.path());
    assert_eq!(seen.len(), 5, "{seen:?}");
    let mut homes: Vec<&String> = seen
        .iter()
        .filter(|(_, settings, _)| settings["model"]["maxSessionTurns"] == 3)
        .map(|(home, _, _)| home)
        .collect();
    assert_eq!(homes.len(), 4, "{seen:?}");
    homes.sort();
    homes.dedup();
    assert_eq!(
        homes.len(),
        4,
        "fan-out items shared a gemini home: {seen:?}"
    );
    assert!(seen.iter().all(|(_, _, signed_in)| *signed_in), "{seen:?}");
    // Every item's session is in the user's home, where `After` resumed one of them.
    let chats = user.path().join(".gemini/tmp/project/chats");
    assert_eq!(std::fs::read_dir(&chats).unwrap().count(), 4);
    assert_eq!(run.step("After")["status"], "succeeded");
}
