#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

    python3 fuzz/make_seeds.py [--vaultctl PATH]

Seeds are meaningful inputs each target's parser accepts (or nearly accepts),
so the fuzzer starts from deep inside the grammar:

- request_path: method / path / rules / header / query / credential fields
  separated by the byte 0xFF (the target's input format), valid paths and
  rules from DESIGN.md plus the classic traversal spellings;
- policy: the DESIGN.md and README examples and every auth type and option;
- vault_file: edit lists for the vault the target seals itself, and one whole
  genuine file (raw mode) made by `vaultctl init` with 8 MiB / 1 pass argon2id
  and the target's passphrase (skipped when no vaultctl binary is found);
- audit_line: MAC-chained logs in the exact format `AuditLog` writes, keyed
  as the target keys them (HKDF-SHA256 of the data key [7u8; 32], info
  "vaultd audit mac v1"), plus damaged variants;
- mcp_stdin: JSON-RPC sessions as MCP clients send them (the Python SDK's
  `server/discover` probe, initialize, tools/list, each tool, bad arguments,
  notifications before initialize, garbage).

File names are content hashes, as libFuzzer names them, so rerunning this
script adds nothing twice.
"""

import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- request_path

def request_path():
    def fields(*parts):
        return b"\xff".join(p.encode() if isinstance(p, str) else p for p in parts)

    good = [
        ("GET", "/repos/octo/hello/issues", "GET /repos/*/*/issues", "GET /repos/*/*/issues/**"),
        ("get", "/repos/octo/hello/issues/42/comments", "GET /repos/*/*/issues/**", "* /**"),
        ("POST", "/v1/chat/completions", "POST /v1/chat/completions", "DELETE /**"),
        ("DELETE", "/repos/o/r/", "DELETE /repos/*/*/", "* /repos/**"),
        ("PATCH", "/a;b=c/d", "PATCH /a;b=c/*", "* /*/d"),
        ("PUT", "/caf%C3%A9/x%20y", "PUT /caf%C3%A9/*", "GET /**/x%20y"),
        ("OPTIONS", "/", "OPTIONS /", "* /**"),
        ("HEAD", "/~user/a.b/...x/v1.2", "HEAD /~user/**", "HEAD /**/v1.2"),
    ]
    for method, path, rule_a, rule_b in good:
        put("request_path", fields(method, path, rule_a, rule_b, "Accept", "application/json",
                                   "per_page", "100", "api_key"))
        put("request_path", fields(method, path, rule_a, rule_b, "X-Api-Key", "x", "api.key", "1",
                                   "X-Api-Key"))
    hostile = [
        "/repos/../admin", "/repos/%2e%2e/admin", "/repos/%2E%2E/admin", "/repos/.%2E/admin",
        "/a/..;/b", "/a/%252e%252e/b", "//evil.example/x", "https://evil.example/x",
        "/a%2Fb", "/a%5Cb", "/a\\b", "/a?b=1", "/a#frag", "/a b", "/caf\u00e9",
        "/a%00", "/a%0D%0Ab", "/%C0%AE%C0%AE/", "/%EF%BC%8E%EF%BC%8E/x", "/a/./b", "/a//b",
        "/;x/b", "/%3Bx", "/a%41", "/a%c3%a9", "/a%", "/a%4", "/x/.. /y", "relative/path",
    ]
    for path in hostile:
        put("request_path", fields("GET", path, "GET /**", "* /a/*/b", "Host", "x", "_method", "DELETE",
                                   "authorization"))
    for method in ["TRACE", "CONNECT", "get\r\n", "G ET", ""]:
        put("request_path", fields(method, "/x", "TRACE /x", "get /x"))
    for name, value in [("Authorization", "Bearer x"), ("Proxy-Authorization", "x"),
                        ("X-Forwarded-For", "1.2.3.4"), ("Accept", "a\r\nX: y"),
                        ("Content-Type", "text/plain\x00"), ("X-HTTP-Method-Override", "DELETE"),
                        ("Range", "bytes=0-3")]:
        put("request_path", fields("POST", "/x", "POST /x", "POST /*", name, value, "api key", "v\n",
                                   "api_key"))
    for rule in ["GET /a/**/b/**/c", "* /**/**/**", "GET /a*", "GET  /x", "get /x", "GET x",
                 "GET /a/../b", "FOO /x", "GET /a/%2F"]:
        put("request_path", fields("GET", "/a/x/b/y/c", rule, "GET /a/*/b/*/c"))


# ---------------------------------------------------------------------- policy

POLICY_DESIGN = '''[[service]]
name = "github"
base_url = "https://api.github.com"          # scheme, host, port and path prefix are all binding
auth = { type = "bearer", secret = "github-token" }

[[agent]]
name = "claude-code"

[[capability]]
name = "github-issues-read"
service = "github"
agents = ["claude-code"]
allow = ["GET /repos/*/*/issues", "GET /repos/*/*/issues/**"]
deny = []                 # optional, default []; deny wins over allow
rate_limit = "60/min"     # optional, default: no limit
requires_reason = false   # optional, default false
'''

POLICY_ALL = '''[[service]]
name = "openai"
base_url = "https://api.openai.com/v1/"
auth = { type = "header", name = "X-Api-Key", secret = "api-key", prefix = "Key " }
timeout = "2m"
max_response_bytes = 4194304

[[service]]
name = "internal"
base_url = "https://127.0.0.1:8443/api"
auth = { type = "basic", username = "robot", secret = "basic-pw" }
ca_file = "/etc/vaultd/ca.pem"
allow_private_network = true

[[service]]
name = "maps"
base_url = "https://maps.example.com:444"
auth = { type = "query", name = "api_key", secret = "github-token" }
timeout = "500ms"

[[agent]]
name = "cursor"

[[capability]]
name = "chat"
service = "openai"
agents = ["cursor", "claude-code"]
allow = ["POST /chat/completions", "GET /models/**"]
deny = ["* /files/**", "DELETE /**"]
rate_limit = "10/s"
requires_reason = true

[[capability]]
name = "internal-all"
service = "internal"
agents = []
allow = ["* /**"]
rate_limit = "1000/h"

[[capability]]
name = "geo"
service = "maps"
allow = ["GET /geocode/*/json"]
'''

POLICY_BAD = [
    # unknown secret, short secret, bad URL, unknown agent, bad rule, bad rate
    '''[[service]]
name = "x"
base_url = "http://example.com"
auth = { type = "bearer", secret = "short" }

[[capability]]
name = "c"
service = "y"
agents = ["nobody"]
allow = ["get /x", "GET /a/../b"]
rate_limit = "lots"
''',
    '''[[service]]
name = "dup"
base_url = "https://u:p@example.com/a/../b?x#y"
auth = { type = "magic", secret = "nope" }
timeout = "1d"
max_response_bytes = -1
ca_file = "/tmp/not-a-cert.pem"

[[service]]
name = "dup"
base_url = "https://example.com"
auth = { type = "header", name = "Bad Header", secret = "api-key", prefix = "\\u0001" }

[[agent]]
name = "bad name!"

[[agent]]
name = "cursor"

[[agent]]
name = "cursor"

[[capability]]
name = "c"
service = "dup"
allow = []
''',
    'service = 3\n',
    '[[service]]\nname = "x"\nextra = 1\n',
    '[[capability]]\nname = "c"\nservice = "s"\nallow = ["GET /**"]\nrequires_reason = "yes"\n',
]


def policy():
    put("policy", POLICY_DESIGN)
    put("policy", POLICY_ALL)
    readme = POLICY_DESIGN.replace("deny = []                 # optional, default []; deny wins over allow\n", "")
    put("policy", readme)
    for p in POLICY_BAD:
        put("policy", p)
    put("policy", "")


# ------------------------------------------------------------------ vault_file

def vault_file(vaultctl):
    # Mutate mode (flags bit 0 clear): 3-byte edits (u16 LE offset, xor byte)
    # on the vault the target seals itself; bit 1 truncates, bit 2 fixes the checksum.
    def edits(flags, *pairs):
        out = bytes([flags])
        for off, x in pairs:
            out += off.to_bytes(2, "little") + bytes([x])
        return out

    put("vault_file", edits(0))
    for flags in (0, 4):
        for off in (0, 8, 10, 11, 12, 16, 20, 24, 56, 80, 112, 127, 128, 151, 152, 160, 200, 400):
            put("vault_file", edits(flags, (off, 1)))
    put("vault_file", edits(4, (152, 0x80), (153, 0x80)))
    put("vault_file", edits(2, (100, 0)))
    put("vault_file", edits(6, (300, 0)))
    put("vault_file", edits(6, (200, 0), (150, 0xff)))
    # Raw mode: a whole file.
    put("vault_file", b"\x01VLTD\r\n\x1a\n")
    put("vault_file", b"\x05" + b"VLTD\r\n\x1a\n" + b"\x01\x00\x01\x00" + bytes(240))
    if vaultctl:
        with tempfile.TemporaryDirectory() as home:
            r, w = os.pipe()
            os.write(w, b"correct horse battery staple\n")
            os.close(w)
            env = dict(os.environ, VAULTD_HOME=home)
            subprocess.run([vaultctl, "--passphrase-fd", str(r), "init", "--kdf-memory-mib", "8",
                            "--kdf-iterations", "1"], env=env, check=True, pass_fds=(r,),
                           stdout=subprocess.DEVNULL)
            os.close(r)
            with open(os.path.join(home, "vault.bin"), "rb") as f:
                put("vault_file", b"\x01" + f.read())
    else:
        print("make_seeds: no vaultctl binary, skipping the genuine raw vault seed", file=sys.stderr)


# ------------------------------------------------------------------ audit_line

def hkdf_sha256(ikm, info, length=32):
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm += t
        i += 1
    return okm[:length]


AUDIT_KEY = hkdf_sha256(bytes([7]) * 32, b"vaultd audit mac v1")


def chain(records):
    """Lines as AuditLog writes them: compact JSON in field order, then the MAC."""
    head = bytes(32)
    lines = []
    for i, rec in enumerate(records, 1):
        rec = dict(seq=i, time=f"2026-11-27T16:{i % 60:02}:00.123Z", **rec)
        body = json.dumps(rec, separators=(",", ":"), ensure_ascii=False)
        mac = hmac.new(AUDIT_KEY, head + body.encode(), hashlib.sha256).digest()
        lines.append(body[:-1] + ',"mac":"' + mac.hex() + '"}\n')
        head = mac
    return lines


def audit_line():
    records = [
        dict(kind="admin", event="unlock"),
        dict(kind="decision", agent="claude-code", peer_pid=4242, peer_uid=1000,
             peer_exe="/usr/bin/node", capability="github-issues-read", method="GET",
             path="/repos/octo/hello/issues", decision="allowed", rule="GET /repos/*/*/issues",
             reason="triage the new issues"),
        dict(kind="result", agent="claude-code", capability="github-issues-read", method="GET",
             path="/repos/octo/hello/issues", decision_seq=2, status=200, bytes=5120,
             truncated=False, duration_ms=87),
        dict(kind="decision", agent="cursor", capability="chat", method="DELETE", path="/files/x",
             decision="denied", rule="DELETE /**", code="denied_by_rule"),
        dict(kind="result", agent="claude-code", code="upstream_error", decision_seq=2,
             error="service \"github\" did not answer within its timeout (30000 ms)", duration_ms=30001),
        dict(kind="admin", event="secret set github-token \u00e9\u00e8 \"quoted\" \\ back"),
        dict(kind="admin", event="lock"),
    ]
    lines = chain(records)
    put("audit_line", "".join(lines))
    put("audit_line", "".join(lines[:3]))
    put("audit_line", lines[0])
    put("audit_line", lines[0].rstrip("\n"))
    # Damaged: edited, removed, reordered, duplicated, CRLF, MAC case.
    put("audit_line", "".join(lines).replace('"unlock"', '"unlocK"'))
    put("audit_line", "".join([lines[0], lines[2], lines[1]]))
    put("audit_line", "".join([lines[0], lines[0]]))
    put("audit_line", "".join(lines[1:]))
    put("audit_line", lines[0][:-70] + lines[0][-70:].upper())
    put("audit_line", '{"seq":1,"time":"x","kind":"admin"}\n')
    put("audit_line", "")


# ------------------------------------------------------------------- mcp_stdin

def mcp_stdin():
    def msg(**kw):
        return json.dumps(dict(jsonrpc="2.0", **kw))

    init = msg(id=1, method="initialize", params={
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "fuzz", "version": "1.0"}})
    initialized = msg(method="notifications/initialized")
    discover = msg(id=0, method="server/discover", params={})

    def call(i, name, args):
        return msg(id=i, method="tools/call", params={"name": name, "arguments": args})

    execute = {"capability": "github-issues-read", "method": "GET", "path": "/repos/o/r/issues",
               "query": {"state": "open"}, "headers": {"Accept": "application/json"},
               "body": "{\"a\":1}", "reason": "triage"}
    sessions = [
        [init, initialized, msg(id=2, method="tools/list")],
        [discover, init, initialized, msg(id=2, method="tools/list"),
         call(3, "list_services", {}), call(4, "vault_status", {}), call(5, "execute", execute)],
        [init, initialized, call(2, "execute", {"capability": "x", "method": "TRACE", "path": "//h"}),
         call(3, "execute", {"capability": "x"}), call(4, "execute", dict(execute, extra=1)),
         call(5, "nope", {}), msg(id=6, method="ping")],
        [msg(method="notifications/cancelled", params={"requestId": 0}), init, initialized,
         msg(id="s", method="tools/call", params={"name": "vault_status"})],
        [msg(id=7, result={}), init],
        [init, initialized, "{not json", "[]", "{}", msg(id=2, method="resources/list"),
         msg(id=3, method="prompts/list"), msg(method="notifications/cancelled", params={"requestId": 2})],
        [msg(id=1, method="tools/list")],
        [init, init],
    ]
    for s in sessions:
        put("mcp_stdin", "\n".join(s) + "\n")
    put("mcp_stdin", init)  # no trailing newline
    put("mcp_stdin", "")


def find_vaultctl():
    for i, arg in enumerate(sys.argv):
        if arg == "--vaultctl" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
    for p in (os.path.join(HERE, "..", "target", "debug", "vaultctl"),
              os.path.join(HERE, "..", "target", "release", "vaultctl")):
        if os.access(p, os.X_OK):
            return p
    return None


if __name__ == "__main__":
    request_path()
    policy()
    vault_file(find_vaultctl())
    audit_line()
    mcp_stdin()
    for t in sorted(os.listdir(CORPUS)):
        print(t, len(os.listdir(os.path.join(CORPUS, t))), "seeds")
