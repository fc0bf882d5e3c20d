# shellcheck shell=bash
# Environment for running the REAL coding-agent CLIs (claude, codex, gemini) offline against
# scripts/fake-model-server.py listening on 127.0.0.1:FAKE_PORT. Source this file, then call one
# function per CLI, preferably in a subshell since they export into the current shell:
#
#   . scripts/lib/agent-cli-env.sh
#   ( claude_env "$port" "$tmp/claude-home"; cd "$ws"; claude -p --output-format stream-json --verbose <<<"hi" )
#
# Each function takes FAKE_PORT and HOME_DIR (a private, throw-away directory for that CLI's
# config, sessions and caches; created if missing), exports what the CLI needs, unsets the
# variables that would send it elsewhere (real keys, other providers), and sets TMPDIR=HOME_DIR/tmp
# so the CLIs' temp files stay in HOME_DIR too (except codex's empty /tmp/codex-daemon-<uid>, a
# fixed path). After a call, AGENT_CLI_HOME=HOME_DIR is set. No argv changes
# are needed for claude and gemini; codex also accepts the provider as -c flags, which
# codex_env leaves in the array CODEX_PROVIDER_ARGS (optional: config.toml already has them).

# The API key handed to every CLI (the fake accepts any key; mode 401 rejects all).
AGENT_CLI_FAKE_KEY=fake-key-not-secret

# claude_env FAKE_PORT HOME_DIR
#   ANTHROPIC_BASE_URL + ANTHROPIC_API_KEY, CLAUDE_CONFIG_DIR=HOME_DIR/claude-config
#   (holds .claude.json, projects/<cwd-slug>/<session>.jsonl, settings). No update or telemetry
#   traffic. Root + bypassPermissions still needs IS_SANDBOX=1, which is NOT set here.
claude_env() {
  local port=${1:?claude_env FAKE_PORT HOME_DIR} home=${2:?claude_env FAKE_PORT HOME_DIR}
  mkdir -p "$home/claude-config"
  unset ANTHROPIC_AUTH_TOKEN CLAUDE_CODE_OAUTH_TOKEN CLAUDE_CODE_USE_BEDROCK CLAUDE_CODE_USE_VERTEX \
        ANTHROPIC_MODEL ANTHROPIC_SMALL_FAST_MODEL ANTHROPIC_DEFAULT_OPUS_MODEL \
        ANTHROPIC_DEFAULT_SONNET_MODEL ANTHROPIC_DEFAULT_HAIKU_MODEL CLAUDECODE CLAUDE_CODE_ENTRYPOINT
  export ANTHROPIC_BASE_URL="http://127.0.0.1:$port"
  export ANTHROPIC_API_KEY=$AGENT_CLI_FAKE_KEY
  export CLAUDE_CONFIG_DIR="$home/claude-config"
  export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1
  export DISABLE_AUTOUPDATER=1
  mkdir -p "$home/tmp"
  export TMPDIR="$home/tmp"
  export AGENT_CLI_HOME=$home
}

# codex_env FAKE_PORT HOME_DIR
#   CODEX_HOME=HOME_DIR/codex-home with a config.toml that selects the provider "fake"
#   (Responses API at http://127.0.0.1:PORT/v1, key from OPENAI_API_KEY, no WebSocket attempt,
#   one retry per level instead of codex's default 4 request + 5 stream retries, so a 401 fails
#   in well under a second instead of ~6.6 s; codex retries 401 like any error on a custom
#   provider), so `codex exec ...` needs no extra flags. The same provider as -c flags is left in
#   the array CODEX_PROVIDER_ARGS (for overriding a CODEX_HOME you don't control).
codex_env() {
  local port=${1:?codex_env FAKE_PORT HOME_DIR} home=${2:?codex_env FAKE_PORT HOME_DIR}
  local url="http://127.0.0.1:$port/v1"
  local provider="{ name = \"fake\", base_url = \"$url\", env_key = \"OPENAI_API_KEY\", wire_api = \"responses\", supports_websockets = false, request_max_retries = 1, stream_max_retries = 1 }"
  mkdir -p "$home/codex-home"
  cat > "$home/codex-home/config.toml" <<EOF
# written by scripts/lib/agent-cli-env.sh: codex against scripts/fake-model-server.py
model_provider = "fake"
check_for_update_on_startup = false

[model_providers.fake]
name = "fake"
base_url = "$url"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
supports_websockets = false
request_max_retries = 1
stream_max_retries = 1

[analytics]
enabled = false
EOF
  unset CODEX_API_KEY CODEX_ACCESS_TOKEN OPENAI_BASE_URL OPENAI_ORGANIZATION CODEX_OSS_BASE_URL
  export OPENAI_API_KEY=$AGENT_CLI_FAKE_KEY
  export CODEX_HOME="$home/codex-home"
  # shellcheck disable=SC2034 # for the caller
  CODEX_PROVIDER_ARGS=(-c 'model_provider="fake"' -c "model_providers.fake=$provider")
  mkdir -p "$home/tmp"
  export TMPDIR="$home/tmp"
  export AGENT_CLI_HOME=$home
}

# gemini_env FAKE_PORT HOME_DIR
#   GOOGLE_GEMINI_BASE_URL + GEMINI_API_KEY, GEMINI_CLI_HOME=HOME_DIR (so user settings live in
#   HOME_DIR/.gemini/settings.json: auth type pinned to gemini-api-key, which the base URL would
#   otherwise turn into "gateway" = exit 41; no telemetry/usage statistics/update checks), and
#   GEMINI_CLI_TRUST_WORKSPACE=true (else exit 55 in an untrusted cwd; --skip-trust does the same).
gemini_env() {
  local port=${1:?gemini_env FAKE_PORT HOME_DIR} home=${2:?gemini_env FAKE_PORT HOME_DIR}
  mkdir -p "$home/.gemini"
  cat > "$home/.gemini/settings.json" <<'EOF'
{
  "security": { "auth": { "selectedType": "gemini-api-key" } },
  "privacy": { "usageStatisticsEnabled": false },
  "telemetry": { "enabled": false },
  "general": { "enableAutoUpdate": false, "enableAutoUpdateNotification": false }
}
EOF
  unset GOOGLE_API_KEY GOOGLE_GENAI_USE_VERTEXAI GOOGLE_GENAI_USE_GCA GOOGLE_CLOUD_PROJECT \
        GOOGLE_CLOUD_LOCATION GOOGLE_VERTEX_BASE_URL GEMINI_MODEL GEMINI_CLI_SYSTEM_SETTINGS_PATH GEMINI_SANDBOX
  export GOOGLE_GEMINI_BASE_URL="http://127.0.0.1:$port"
  export GEMINI_API_KEY=$AGENT_CLI_FAKE_KEY
  export GEMINI_CLI_HOME=$home
  export GEMINI_CLI_TRUST_WORKSPACE=true
  mkdir -p "$home/tmp"
  export TMPDIR="$home/tmp"
  export AGENT_CLI_HOME=$home
}
