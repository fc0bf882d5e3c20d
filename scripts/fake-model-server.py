#!/usr/bin/env python3
"""Stand-in model server for running the REAL coding-agent CLIs offline (Python 3.11 stdlib only).

It listens on 127.0.0.1 only, on a free port unless --port is given, prints ``PORT=<n>`` on stdout
once listening and serves until SIGTERM/SIGINT. It speaks just enough of three wire APIs:

  * Anthropic Messages   POST /v1/messages[?beta=true] (SSE when "stream": true, else JSON),
                         POST /v1/messages/count_tokens                         -- claude
  * OpenAI Responses     POST /v1/responses (SSE), GET /v1/models               -- codex
  * Gemini               POST /v1beta/models/<m>:streamGenerateContent?alt=sse,
                         :generateContent, :countTokens                         -- gemini

Behaviour is scripted by the directory FAKE_DIR (--dir, else $FAKE_DIR). The file FAKE_DIR/mode is
re-read on every request (missing or empty = text):
  text          answer with TEXT (contains the marker FAKE-OK)
  write         first turn: the CLI's own write tool writes fake-written.txt (content WRITTEN) in
                the CLI's cwd (claude Write; codex apply_patch: as its freeform tool, through
                its JavaScript "exec" tool (code mode of its default model) or as an apply_patch
                heredoc run by exec_command (older models like gpt-5); gemini write_file); once
                the tool result comes back: answer with AFTER_TOOL_TEXT
  shell         same, but the CLI's shell tool runs SHELL_COMMAND, or the first line of
                FAKE_DIR/shell-command when that file exists (claude Bash, codex
                exec_command (directly or from "exec")/shell_command/shell, gemini run_shell_command)
  401 | 500     that HTTP error, in the API's own error shape
  429           HTTP 429 (rate limit) with retry-after: RETRY_AFTER seconds, on every request
  429-then-ok   the first N model requests (N=1; "429-then-ok:3" for N=3) get 429, then text;
                the count restarts whenever the mode file is rewritten
  400-too-long  HTTP 400 "prompt is too long", shaped as each API reports a context overflow
  workflow      answers from the step's prompt, so a whole workflow (workflows/default.yaml) runs:
                a prompt containing "Answer with JSON only" gets a JSON answer: the first line of
                FAKE_DIR/review-answers when the prompt mentions "Review", of
                FAKE_DIR/verify-answers when it mentions "Verify" (each line is consumed: the file
                is rewritten without it, and FAKE_DIR/answers.log gets "<nnnn> <file> <line>"),
                else (or when the file is missing or used up) DEFAULT_JSON; any other prompt gets
                WORKFLOW_TEXT (contains FAKE-OK). Only a step's first model request consumes a
                line: requests that carry a tool result, and gemini's JSON side calls, do not.
  write:force | shell:force
                as write/shell, but the tool is called even when the request does not offer it
                (a model that tries anyway: the CLI must refuse an unknown or withheld tool)
  slip          a write that slips past the CLI, simulated: the fake itself (another process than
                the CLI) writes fake-slipped.txt (content SLIPPED) into the CLI's cwd while it
                answers, then answers with TEXT. A write by a process outside the step: where
                the engine attributes writes per process (fanotify) it rightly does not blame
                the step for it; scripts/e2e-engine makes its slips inside the step instead
A tool is only called when the request offers it (unless :force); otherwise the answer is the
text "FAKE-NO-TOOL: <tool> was not offered" (e.g. gemini without a shell-enabling approval mode).
The write/shell/slip path is relative to the cwd the CLI reports in its prompt; FAKE_DIR/cwd (one
line, an absolute directory) overrides it.

Side files: every request (numbered n = 1, 2, ... across all APIs) has its body dumped to
FAKE_DIR/requests/<nnnn>-<api>.json (api = anthropic|openai|gemini|other; bodiless GETs/HEADs get
no dump) and one line appended to FAKE_DIR/requests.log:
  <nnnn> <api> <METHOD> <path> model=<model asked for, or -> mode=<mode> status=<http status> reply=<text|tool:NAME|json|error|...>
so a test can count e.g. `grep -c 'status=429' requests.log` to see that retries happened. In mode
workflow a JSON answer logs reply=json:<file> (json:<file>:default once the file is used up, and
json:default for other JSON prompts); gemini's own JSON side calls log reply=json. In mode slip
the reply is prefixed "slipped:fake-slipped.txt+".

Fixed usage numbers in every successful model response (a two-turn tool run reports them twice;
gemini's side calls, e.g. its model router, report them too). What orchestrate records per request
(input excludes cache reads, as the engine normalizes it):
  claude  input 1234, output 56, cache_read 2000, cache_write 100 (cost_usd: claude's own figure)
  codex   input 234 (1234 - 1000 cached), cache_read 1000, output 56, reasoning 12
  gemini  input 234 (1234 - 1000 cached), cache_read 1000, output 66 (56 candidates + 10
          thinking: stream-json has no thoughts field, the engine takes total - input - output),
          reasoning 10; gemini 0.61's model router ("auto") adds one request to most steps
The wire numbers:
  Anthropic  input_tokens 1234, output_tokens 56, cache_read_input_tokens 2000,
             cache_creation_input_tokens 100; count_tokens -> input_tokens 1234
  OpenAI     input_tokens 1234 (input_tokens_details.cached_tokens 1000), output_tokens 56
             (output_tokens_details.reasoning_tokens 12), total_tokens 1290
  Gemini     promptTokenCount 1234, cachedContentTokenCount 1000, candidatesTokenCount 56,
             thoughtsTokenCount 10, totalTokenCount 1300; countTokens -> totalTokens 1234
"""
import argparse
import gzip
import json
import os
import re
import signal
import sys
import threading
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TEXT = "FAKE-OK: hello from the fake model."
AFTER_TOOL_TEXT = "FAKE-OK: done, the tool ran."
WRITE_FILE = "fake-written.txt"
WRITTEN = "written by the fake model\n"
SHELL_COMMAND = "printf hi > fake-shell.txt"
PATCH = "*** Begin Patch\n*** Add File: %s\n+%s*** End Patch\n" % (WRITE_FILE, WRITTEN)
RETRY_AFTER = "1"
SLIP_FILE = "fake-slipped.txt"
SLIPPED = "slipped past the CLI\n"
WORKFLOW_TEXT = "FAKE-OK: 1. change the CLI parser, 2. add a test, 3. run the tests."
DEFAULT_JSON = '{"approved": true, "passed": true, "findings": []}'
ANSWER_FILES = [("Review", "review-answers"), ("Verify", "verify-answers")]
USAGE_IN, USAGE_OUT, CACHE_READ, CACHE_WRITE, CACHED, REASONING, THOUGHTS = 1234, 56, 2000, 100, 1000, 12, 10
TOO_LONG = "prompt is too long: 250000 tokens > 200000 maximum"
CWD_PATTERNS = [r"<cwd>([^<]+)</cwd>", r"[Ww]orking directory: (/[^\s\"\\]+)",
                r"Workspace Directories:\*\*\\n\s*- (/[^\s\"\\]+)"]


class Script:
    """Reads FAKE_DIR/mode, numbers requests, keeps the 429-then-ok counter, writes the logs."""

    def __init__(self, root):
        self.root = root
        self.lock = threading.Lock()
        try:  # keep numbering across restarts on the same directory
            with open(os.path.join(root, "requests.log")) as f:
                self.n = sum(1 for _ in f)
        except FileNotFoundError:
            self.n = 0
        self.fails = {}  # (mode text, mtime_ns) -> 429s already served in that 429-then-ok period
        os.makedirs(os.path.join(root, "requests"), exist_ok=True)

    def mode(self):
        """(mode, argument, raw text, key): e.g. ('429-then-ok', '3', '429-then-ok:3', key); the key
        changes whenever the mode file is rewritten."""
        path = os.path.join(self.root, "mode")
        try:
            with open(path) as f:
                raw = f.read().strip()
            key = (raw, os.stat(path).st_mtime_ns)
        except FileNotFoundError:
            raw, key = "", None
        name, _, arg = (raw or "text").partition(":")
        return name, arg, raw or "text", key

    def next_number(self):
        with self.lock:
            self.n += 1
            return self.n

    def take_429(self, key, limit):
        """True while fewer than `limit` 429s were served since the mode file was last written."""
        with self.lock:
            served = self.fails.get(key, 0)
            if served >= limit:
                return False
            self.fails[key] = served + 1
            return True

    def cwd(self, body_text):
        try:
            with open(os.path.join(self.root, "cwd")) as f:
                if f.read(1):
                    f.seek(0)
                    return f.readline().strip()
        except FileNotFoundError:
            pass
        for pattern in CWD_PATTERNS:
            m = re.search(pattern, body_text)
            if m:
                return m.group(1).strip()
        return None

    def shell_command(self):
        """The command of mode shell: FAKE_DIR/shell-command (its first line) or SHELL_COMMAND."""
        try:
            with open(os.path.join(self.root, "shell-command")) as f:
                return f.readline().strip() or SHELL_COMMAND
        except FileNotFoundError:
            return SHELL_COMMAND

    def json_answer(self, n, prompt):
        """The JSON answer for a prompt that asks for one: the next line of the matching answers
        file (consumed), else DEFAULT_JSON."""
        name = next((f for word, f in ANSWER_FILES if word in prompt), None)
        if name is None:
            return DEFAULT_JSON, "default"
        path = os.path.join(self.root, name)
        with self.lock:
            try:
                with open(path) as f:
                    lines = [line for line in f.read().splitlines() if line.strip()]
            except FileNotFoundError:
                lines = []
            if not lines:
                return DEFAULT_JSON, name + ":default"
            with open(path + ".tmp", "w") as f:
                f.write("".join(line + "\n" for line in lines[1:]))
            os.replace(path + ".tmp", path)
            with open(os.path.join(self.root, "answers.log"), "a") as f:
                f.write("%04d %s %s\n" % (n, name, lines[0]))
            return lines[0], name

    def dump(self, n, api, raw):
        try:
            data = json.dumps(json.loads(raw), indent=1).encode()
        except ValueError:
            data = raw
        with open(os.path.join(self.root, "requests", "%04d-%s.json" % (n, api)), "wb") as f:
            f.write(data)

    def log(self, line):
        with self.lock, open(os.path.join(self.root, "requests.log"), "a") as f:
            f.write(line + "\n")


def plan(mode, offered, after_tool, wanted, ctx=None):
    """What to answer: ('text', text) or ('tool', name). `wanted` maps write/shell -> tool names
    in order of preference; `offered` is the tool list of the request. `ctx` (mode workflow:
    (script, request number, prompt text)) picks the workflow answer."""
    name, _, arg = mode.partition(":")
    if after_tool:
        return ("text", AFTER_TOOL_TEXT)
    if name == "workflow" and ctx:
        script, n, prompt = ctx
        if "Answer with JSON only" in prompt:
            answer, source = script.json_answer(n, prompt)
            return ("json", answer, source)
        return ("text", WORKFLOW_TEXT)
    if name not in ("write", "shell"):
        return ("text", TEXT)
    for tool in wanted[name]:
        if tool in offered:
            return ("tool", tool)
    if arg == "force":
        return ("tool", wanted[name][0])
    return ("text", "FAKE-NO-TOOL: %s was not offered" % "/".join(wanted[name]))


def prompt_block(content):
    """The prompt in a message's content: the string, or the last text block/part that is not
    context the CLI added (claude's <system-reminder>s, gemini's <session_context>)."""
    if isinstance(content, str):
        return content
    texts = [b.get("text") for b in content if isinstance(b, dict)] if isinstance(content, list) else []
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    own = [t for t in texts if not t.lstrip().startswith(("<system-reminder>", "<session_context>"))]
    return (own or texts or [""])[-1]


def last_user_text(messages, content_key="content"):
    """The step's prompt: from the last user message that has text (claude also sends a trailing
    "system" message, codex its developer instructions and environment context as user
    messages before the prompt)."""
    for m in reversed(messages or []):
        if isinstance(m, dict) and m.get("role", "user") == "user":
            text = prompt_block(m.get(content_key))
            if text.strip():
                return text
    return ""


class AnthropicAPI:
    """Anthropic Messages API as claude uses it (SSE streaming and plain JSON)."""
    name = "anthropic"
    tools = {"write": ["Write"], "shell": ["Bash"]}
    usage = {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT,
             "cache_read_input_tokens": CACHE_READ, "cache_creation_input_tokens": CACHE_WRITE}

    @staticmethod
    def matches(path):
        return path.startswith("/v1/messages")

    def error(self, status):
        etype, msg = {401: ("authentication_error", "invalid x-api-key (fake)"),
                      429: ("rate_limit_error", "Number of request tokens has exceeded your rate limit (fake)"),
                      500: ("api_error", "Internal server error (fake)"),
                      400: ("invalid_request_error", TOO_LONG)}[status]
        headers = {"request-id": "req_fake", "x-should-retry": "true" if status in (429, 500) else "false"}
        if status == 429:
            headers["retry-after"] = RETRY_AFTER
        return {"type": "error", "error": {"type": etype, "message": msg}, "request_id": "req_fake"}, headers

    def answer(self, h, body, mode, cwd):
        if h.path.startswith("/v1/messages/count_tokens"):
            return h.send_json(200, {"input_tokens": USAGE_IN}) or "count"
        last = (body.get("messages") or [{}])[-1].get("content")
        after_tool = isinstance(last, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in last)
        offered = [t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)]
        kind, what, *source = plan(mode, offered, after_tool, self.tools,
                                   (h.script, h.n, last_user_text(body.get("messages"))))
        if kind == "tool":
            target = os.path.join(cwd, WRITE_FILE) if cwd else WRITE_FILE
            inp = ({"file_path": target, "content": WRITTEN} if what == "Write"
                   else {"command": h.script.shell_command(), "description": "Write fake-shell.txt"})
            block = {"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:20], "name": what, "input": inp}
        else:
            block = {"type": "text", "text": what}
        stop = "tool_use" if kind == "tool" else "end_turn"
        msg = {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant",
               "model": body.get("model", "claude-fake"), "content": [block], "stop_reason": stop,
               "stop_sequence": None, "usage": dict(self.usage)}
        reply = "tool:" + what if kind == "tool" else "json:" + source[0] if kind == "json" else "text"
        if not body.get("stream"):
            h.send_json(200, msg)
            return reply
        h.sse_start()
        h.sse("message_start", {"type": "message_start", "message": dict(
            msg, content=[], stop_reason=None, usage=dict(self.usage, output_tokens=1))})
        if kind == "tool":
            h.sse("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": dict(block, input={})})
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        else:
            h.sse("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}})
            delta = {"type": "text_delta", "text": what}
        h.sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        h.sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        h.sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                "usage": {"output_tokens": USAGE_OUT}})
        h.sse("message_stop", {"type": "message_stop"})
        return reply


class OpenAIResponsesAPI:
    """OpenAI Responses API as codex uses it (SSE only), plus the model list it may fetch."""
    name = "openai"
    # "exec" is codex's JavaScript "code mode" tool (default model of 0.169): it reaches the
    # other tools as tools.apply_patch(...) / tools.exec_command(...)
    tools = {"write": ["apply_patch", "exec_command", "exec", "shell_command", "shell"],
             "shell": ["exec_command", "exec", "shell_command", "shell"]}
    usage = {"input_tokens": USAGE_IN, "input_tokens_details": {"cached_tokens": CACHED},
             "output_tokens": USAGE_OUT, "output_tokens_details": {"reasoning_tokens": REASONING},
             "total_tokens": USAGE_IN + USAGE_OUT}

    @staticmethod
    def matches(path):
        p = path.split("?")[0]
        return p.endswith("/responses") or p.endswith("/models") or p.endswith("/chat/completions")

    def error(self, status):
        etype, code, msg = {
            401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: fake (fake)."),
            429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (fake). Please try again in 1s."),
            500: ("server_error", None, "The server had an error while processing your request (fake)."),
            400: ("invalid_request_error", "context_length_exceeded",
                  "Your input exceeds the context window of this model. Please adjust your input and try again.")}[status]
        headers = {"retry-after": RETRY_AFTER} if status == 429 else {}
        return {"error": {"message": msg, "type": etype, "param": "input" if status == 400 else None, "code": code}}, headers

    def answer(self, h, body, mode, cwd):
        path = h.path.split("?")[0]
        if h.command != "POST" and path.endswith("/responses"):
            # codex tries a WebSocket upgrade first unless supports_websockets=false
            return h.send_json(404, {"error": {"message": "fake-model-server: no WebSocket transport"}}) or "no-websocket"
        if path.endswith("/models"):
            return h.send_json(200, {"object": "list", "data": [], "models": []}) or "models"
        if path.endswith("/chat/completions"):
            return h.send_json(404, {"error": {"message": "chat completions is not faked; use wire_api=responses"}}) or "error"
        items = body.get("input") or [{}]
        last = items[-1] if isinstance(items[-1], dict) else {}
        after_tool = last.get("type") in ("function_call_output", "custom_tool_call_output")
        offered = self.tool_names(body.get("tools") or [])
        for item in items:  # code mode sends its tools as an input item
            if isinstance(item, dict) and item.get("type") == "additional_tools":
                offered += self.tool_names(item.get("tools") or [])
        prompt = last_user_text([i for i in items if isinstance(i, dict) and i.get("type", "message") == "message"])
        kind, what, *source = plan(mode, offered, after_tool, self.tools, (h.script, h.n, prompt))
        rid, model = "resp_" + uuid.uuid4().hex[:24], body.get("model", "gpt-fake")
        h.sse_start()
        h.sse("response.created", {"type": "response.created", "response": {"id": rid, "model": model, "status": "in_progress"}})
        if kind == "tool":
            item = self.tool_item(what, mode, offered, h.script.shell_command())
        else:
            item = {"type": "message", "role": "assistant", "id": "msg_" + uuid.uuid4().hex[:20], "status": "completed",
                    "content": [{"type": "output_text", "text": what, "annotations": []}]}
            h.sse("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                                 "item": dict(item, content=[], status="in_progress")})
            h.sse("response.output_text.delta", {"type": "response.output_text.delta", "output_index": 0,
                                                 "content_index": 0, "item_id": item["id"], "delta": what})
        h.sse("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item})
        h.sse("response.completed", {"type": "response.completed", "response": {
            "id": rid, "model": model, "status": "completed", "output": [item], "usage": self.usage}})
        return "tool:" + item["name"] if kind == "tool" else "json:" + source[0] if kind == "json" else "text"

    def tool_names(self, tools):
        names = []
        for t in tools:
            if isinstance(t, dict):
                names.append(t.get("name") or t.get("type"))
                names += self.tool_names(t.get("tools") or [])  # namespaces
        return names

    @staticmethod
    def tool_item(name, mode, offered, shell_command):
        call_id = "call_" + uuid.uuid4().hex[:20]
        mode = mode.partition(":")[0]
        if name == "exec":
            js = ("const r = await tools.exec_command({cmd: %s});\ntext(r.output);\n" % json.dumps(shell_command)
                  if mode == "shell" else "const r = await tools.apply_patch(%s);\ntext(r);\n" % json.dumps(PATCH))
            return {"type": "custom_tool_call", "id": "ctc_" + uuid.uuid4().hex[:20], "call_id": call_id,
                    "name": "exec", "input": js, "status": "completed"}
        if name == "apply_patch":
            return {"type": "custom_tool_call", "id": "ctc_" + uuid.uuid4().hex[:20], "call_id": call_id,
                    "name": "apply_patch", "input": PATCH, "status": "completed"}
        # codex intercepts an apply_patch heredoc run through its shell tool and applies it itself
        # (reported as a file_change item, checked against the sandbox like its own tool)
        cmd = shell_command if mode == "shell" else "apply_patch <<'EOF'\n%sEOF\n" % PATCH
        args = {"exec_command": {"cmd": cmd}, "shell_command": {"command": cmd},
                "shell": {"command": ["bash", "-lc", cmd]}}[name]
        return {"type": "function_call", "id": "fc_" + uuid.uuid4().hex[:20], "call_id": call_id,
                "name": name, "arguments": json.dumps(args), "status": "completed"}


class GeminiAPI:
    """Gemini generateContent API as gemini-cli uses it (alt=sse streaming, plain JSON, countTokens)."""
    name = "gemini"
    tools = {"write": ["write_file"], "shell": ["run_shell_command"]}
    usage = {"promptTokenCount": USAGE_IN, "cachedContentTokenCount": CACHED, "candidatesTokenCount": USAGE_OUT,
             "thoughtsTokenCount": THOUGHTS, "totalTokenCount": USAGE_IN + USAGE_OUT + THOUGHTS}

    @staticmethod
    def matches(path):
        return re.search(r":(streamGenerateContent|generateContent|countTokens)\b", path) is not None

    def error(self, status):
        gstatus, msg = {401: ("UNAUTHENTICATED", "API key not valid. Please pass a valid API key. (fake)"),
                        429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota). (fake)"),
                        500: ("INTERNAL", "Internal error encountered. (fake)"),
                        400: ("INVALID_ARGUMENT", "The input token count (250000) exceeds the maximum number "
                                                  "of tokens allowed (200000).")}[status]
        err = {"code": status, "message": msg, "status": gstatus}
        if status == 429:
            err["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": RETRY_AFTER + "s"}]
        return {"error": err}, ({"retry-after": RETRY_AFTER} if status == 429 else {})

    def answer(self, h, body, mode, cwd):
        if ":countTokens" in h.path:
            return h.send_json(200, {"totalTokens": USAGE_IN}) or "count"
        last = (body.get("contents") or [{}])[-1]
        after_tool = any(isinstance(p, dict) and "functionResponse" in p for p in last.get("parts") or [])
        offered = [d.get("name") for t in body.get("tools") or [] if isinstance(t, dict)
                   for d in t.get("functionDeclarations") or t.get("function_declarations") or []]
        config = body.get("generationConfig") or {}
        if config.get("responseMimeType") == "application/json" or config.get("responseJsonSchema") or config.get("responseSchema"):
            # gemini's own side calls (model router, next-speaker check, ...) want JSON back
            kind, reply = "json", "json"
            part = {"text": json.dumps({"reasoning": "fake", "model_choice": "flash", "next_speaker": "user",
                                        "complexity_reasoning": "fake", "complexity_score": 10})}
        else:
            prompt = last_user_text(body.get("contents"), content_key="parts")
            kind, what, *source = plan(mode, offered, after_tool, self.tools, (h.script, h.n, prompt))
            reply = "tool:" + what if kind == "tool" else "json:" + source[0] if kind == "json" else "text"
            if kind == "tool" and what == "write_file":
                target = os.path.join(cwd, WRITE_FILE) if cwd else WRITE_FILE
                part = {"functionCall": {"name": what, "args": {"file_path": target, "content": WRITTEN}}}
            elif kind == "tool":
                part = {"functionCall": {"name": what, "args": {"command": h.script.shell_command(),
                                                                "description": "Write fake-shell.txt"}}}
            else:
                part = {"text": what}
        model = h.path.split("/models/")[-1].split(":")[0]
        resp = {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": self.usage, "modelVersion": model, "responseId": "fake-" + uuid.uuid4().hex[:12]}
        if ":streamGenerateContent" in h.path:
            h.sse_start()
            h.sse(None, resp)
        else:
            h.send_json(200, resp)
        return reply


APIS = [AnthropicAPI(), GeminiAPI(), OpenAIResponsesAPI()]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    script = None  # set in main()

    def log_message(self, fmt, *args):
        pass

    def read_body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            raw = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                chunk = self.rfile.read(size + 2)[:size]
                if size == 0:
                    break
                raw += chunk
        else:
            n = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(n) if n else b""
        enc = self.headers.get("content-encoding", "").lower()
        try:
            raw = gzip.decompress(raw) if enc == "gzip" else zlib.decompress(raw) if enc == "deflate" else raw
        except (OSError, zlib.error):
            pass
        return raw

    def send_json(self, status, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.status = status

    def sse_start(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        self.status = 200

    def sse(self, event, obj):
        text = ("event: %s\n" % event if event else "") + "data: " + json.dumps(obj) + "\n\n"
        self.wfile.write(text.encode())
        self.wfile.flush()

    def handle_any(self, method):
        raw = self.read_body() if method == "POST" else b""
        script, n = self.script, self.script.next_number()
        self.n = n
        api = next((a for a in APIS if a.matches(self.path)), None)
        api_name = api.name if api else "other"
        if raw:
            script.dump(n, api_name, raw)
        mode, arg, raw_mode, key = script.mode()
        self.status, reply = 0, "error"
        try:
            body = json.loads(raw or b"{}")
            body = body if isinstance(body, dict) else {}
        except ValueError:
            body = {}
        model_call = api is not None and method == "POST" and not self.path.split("?")[0].endswith("/models")
        error = {"401": 401, "429": 429, "500": 500, "400-too-long": 400}.get(mode)
        if mode == "429-then-ok":
            limit = int(arg) if arg.isdigit() else 1
            error = 429 if model_call and script.take_429(key, limit) else None
        if api is None:
            self.send_json(404, {"error": {"message": "fake-model-server: no such endpoint: %s %s" % (method, self.path)}})
        elif (mode not in ("text", "write", "shell", "429-then-ok", "workflow", "slip") and error is None
              or mode in ("write", "shell") and arg not in ("", "force")):
            self.send_json(400, {"error": {"message": "fake-model-server: unknown mode %r" % raw_mode}})
        elif error and model_call:
            obj, headers = api.error(error)
            self.send_json(error, obj, headers)
        else:
            cwd = script.cwd(raw.decode("utf-8", "replace"))
            slipped = mode == "slip" and model_call and cwd and os.path.isdir(cwd)
            if slipped:
                with open(os.path.join(cwd, SLIP_FILE), "w") as f:
                    f.write(SLIPPED)
            # the full mode ("write:force") tells the API classes about :force
            reply = api.answer(self, body, raw_mode if mode in ("write", "shell") else mode, cwd)
            reply = "slipped:%s+%s" % (SLIP_FILE, reply) if slipped else reply
        # The model the CLI asked for: gemini names it in the path (its router's and the routed
        # model's requests differ), the others in the body.
        if "/models/" in self.path and ":" in self.path:
            asked = self.path.split("/models/")[-1].split(":")[0]
        else:
            asked = body.get("model") if isinstance(body.get("model"), str) else "-"
        script.log("%04d %s %s %s model=%s mode=%s status=%d reply=%s" % (n, api_name, method, self.path, asked, raw_mode, self.status, reply))

    def do_POST(self):
        self.handle_any("POST")

    def do_GET(self):
        self.handle_any("GET")

    def do_HEAD(self):  # connectivity probes
        n = self.script.next_number()
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
        self.script.log("%04d other HEAD %s mode=- status=200 reply=empty" % (n, self.path))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=os.environ.get("FAKE_DIR"), help="script/log directory (default $FAKE_DIR)")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one)")
    args = ap.parse_args()
    if not args.dir:
        ap.error("give --dir or set FAKE_DIR")
    os.makedirs(args.dir, exist_ok=True)
    Handler.script = Script(os.path.abspath(args.dir))
    ThreadingHTTPServer.request_queue_size = 64
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print("PORT=%d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
