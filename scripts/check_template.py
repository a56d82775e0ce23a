"""Checks template.yaml against the code, offline (run by scripts/test.sh after cfn-lint):
per-function builds, quota settings vs. the clients each function wires, CORS lists, metric names, the
worker's concurrency arithmetic, the `sam local` env file and the sample events; then the
template as CloudFormation would resolve it in each data-store mode (create and existing):
conditions and Fn::If resolved, no reference to a resource the mode leaves out, the Rules,
each function's settings, secrets and network, the stores, migrations on deploy, the
alarms and the quotas of a new account; and the Logs Insights fields the runbook lists.
Prints one line per check; exits 1 if any fails.

Usage: python check_template.py   (from the repository root, with the venv-tools python)
"""

import json
import os
import re
import sys
import tempfile
import tomllib

from cfnlint.decode import decode

sys.path.insert(0, os.path.dirname(__file__))
import sam_env  # noqa: E402

failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))
    if not ok:
        failures.append(name)


template, errors = decode("template.yaml")
if errors:
    raise SystemExit(f"template.yaml: {errors}")
resources = template["Resources"]
functions = {k: v for k, v in resources.items() if v["Type"] == "AWS::Serverless::Function"}
workspace = tomllib.load(open("Cargo.toml", "rb"))["workspace"]["members"]
binaries = {}

# 1. Each function builds its own crate: CodeUri is that crate's folder.
for name, fn in functions.items():
    code_uri = fn["Properties"].get("CodeUri")
    binary = fn.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
    binaries[name] = binary
    manifest = os.path.join(str(code_uri), "Cargo.toml")
    bins = []
    if os.path.isfile(manifest):
        bins = [b["name"] for b in tomllib.load(open(manifest, "rb")).get("bin", [])]
    check(
        f"{name}: CodeUri {code_uri} is a workspace member whose crate has bin `{binary}`",
        code_uri in workspace and binary in bins,
        f"members {workspace}, bins {bins}",
    )

# 2. Quota settings go only to functions that wire the DynamoDB counters (their main.rs
# names `quota::dynamodb::store` in its Adapters), and every function builds `shared` with
# the one feature set of the functions (so `sam build` compiles it once).
variables = sam_env.function_variables(template)
for name, fn in functions.items():
    manifest = os.path.join(fn["Properties"]["CodeUri"], "Cargo.toml")
    main_path = os.path.join(fn["Properties"]["CodeUri"], "src", "main.rs")
    if not (os.path.isfile(manifest) and os.path.isfile(main_path)):
        check(f"{name}: its crate exists ({manifest}, {main_path})", False, "missing")
        continue
    shared = tomllib.load(open(manifest, "rb")).get("dependencies", {}).get("shared", {})
    features = shared.get("features", []) if isinstance(shared, dict) else []
    main_rs = open(main_path).read()
    wires_dynamodb = "quota::dynamodb::store" in main_rs
    has_quota = "QUOTA_BACKEND" in variables[name]
    reads_table = "QuotaTable" in json.dumps(fn["Properties"].get("Policies", []))
    check(f"{name}: builds shared with the functions' feature set", features == ["functions"], features)
    check(
        f"{name}: QUOTA_BACKEND set ({has_quota}) => main.rs wires the DynamoDB counters",
        not has_quota or wires_dynamodb,
    )
    check(
        f"{name}: may use the quota table ({reads_table}) => gets QUOTA_BACKEND",
        not reads_table or has_quota,
    )

# 3. CORS: the HttpApi and the local server's CorsLayer allow the same.
cors_rs = open("shared/src/http/cors.rs").read()


def rust_list(const):
    body = re.search(rf"pub const {const}: \[[^\]]*\] = \[(.*?)\];", cors_rs, re.S).group(1)
    return [re.sub(r"^Method::", "", x.strip().strip('"')) for x in body.split(",") if x.strip()]


# Two complete settings chosen by Fn::If (see the template's comment): both must agree.
cors_choice = resources["HttpApi"]["Properties"]["CorsConfiguration"]
check("CORS is a whole CorsConfiguration per branch of Fn::If",
      isinstance(cors_choice, dict) and list(cors_choice) == ["Fn::If"], cors_choice)
for branch, cors in zip(("with CorsExtraOrigins", "without"), cors_choice["Fn::If"][1:]):
    for key, const in [
        ("AllowMethods", "ALLOW_METHODS"),
        ("AllowHeaders", "ALLOW_HEADERS"),
        ("ExposeHeaders", "EXPOSE_HEADERS"),
    ]:
        check(f"CORS ({branch}) {key} matches {const} in cors.rs", cors.get(key) == rust_list(const),
              f"{cors.get(key)} vs {rust_list(const)}")
    max_age = int(re.search(r"MAX_AGE_SECS: u64 = (\d+);", cors_rs).group(1))
    check(f"CORS ({branch}) MaxAge matches MAX_AGE_SECS", cors.get("MaxAge") == max_age)
    check(f"CORS ({branch}) allows FrontendUrl", "FrontendUrl" in json.dumps(cors.get("AllowOrigins")))

# 4. Metric names in the alarms and the dashboard are those the code emits.
metrics_rs = open("shared/src/telemetry/metrics.rs").read()
consts = dict(re.findall(r'const (\w+): &str = "(\w+)";', metrics_rs))
names_block = re.search(r"pub const NAMES: \[&str; \d+\] = \[(.*?)\];", metrics_rs, re.S).group(1)
emitted = {consts[c.strip()] for c in names_block.split(",") if c.strip()}
dashboard = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
used = set(re.findall(r'\["\$\{AWS::StackName\}", "(\w+)", "function", "([\w-]+)"', dashboard))
for alarm in (r for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"):
    for m in alarm["Properties"].get("Metrics", []):
        metric = m.get("MetricStat", {}).get("Metric", {})
        if metric.get("Namespace") == {"Ref": "AWS::StackName"}:
            used.add((metric["MetricName"], metric["Dimensions"][0]["Value"]))
unknown = sorted(n for n, _ in used if n not in emitted)
check("alarms and dashboard use only metrics the code emits", not unknown, unknown)
shown = {n for n, _ in used}
check("the dashboard shows every metric the code emits", emitted <= shown, sorted(emitted - shown))
bad_fn = sorted({f for _, f in used} - set(binaries.values()))
check("metric dimensions name real functions", not bad_fn, bad_fn)
check("DashboardBody is valid JSON",
      json.loads(re.sub(r"\$\{[^}]+\}", "x", dashboard)) is not None)

# 5. Worker concurrency and batch size follow the documented arithmetic, and no row lets
# the worker exceed its quota: concurrency x batch x 30 calls a minute (2 s a call) <= RPM.
quota = template["Mappings"]["GeminiQuota"]
allowed = template["Parameters"]["GeminiRequestsPerMinute"]["AllowedValues"]
for rpm in allowed:
    row = quota.get(str(rpm), {})
    want = max(2, int(rpm) // 300)
    batch = min(10, int(rpm) // (30 * want))
    check(f"GeminiQuota[{rpm}]: concurrency max(2, RPM/300) = {want}, batch {batch}, "
          f"{want * batch * 30} calls/min <= {rpm}",
          row.get("WorkerConcurrency") == want and row.get("WorkerBatchSize") == batch
          and want * batch * 30 <= int(rpm), row)

# 6. The sam local env file covers every function and every setting the template passes.
with tempfile.TemporaryDirectory() as tmp:
    secret = os.path.join(tmp, "secret")
    open(secret, "w").write("x" * 48)
    os.environ["JWT_SECRET_FILE"] = secret
    env = sam_env.build("template.yaml")
check("sam env file has every function", set(env) == set(functions), sorted(set(functions) ^ set(env)))
for name in functions:
    missing = sorted(set(variables[name]) - set(env.get(name, {})))
    check(f"sam env file gives {name} every setting", not missing, missing)

# 7. Every events/ folder is named after a function's binary. The migrate function's
# sample (a CloudFormation custom-resource request) is events/migrate-create.json, outside
# the folders that tests/tests/api/events.rs runs through the HTTP and SQS handlers.
folders = sorted(d for d in os.listdir("events") if os.path.isdir(os.path.join("events", d)))
stray = [d for d in folders if d not in binaries.values()]
check("every events/ folder names a function in the template", not stray, stray)
loose = {f.split("-")[0] for f in os.listdir("events") if f.endswith(".json")}
uncovered = [b for b in binaries.values() if b not in folders and b not in loose]
check("every function has sample events", not uncovered, uncovered)
sample = json.load(open("events/migrate-create.json"))
check("events/migrate-create.json is a Create request for the Migrations custom resource",
      sample.get("RequestType") == "Create" and sample.get("ResourceType") == "Custom::Migrations"
      and sample.get("LogicalResourceId") == "Migrations"
      and {"ResponseURL", "StackId", "RequestId", "ServiceToken"} <= set(sample)
      and "CodeVersion" in sample.get("ResourceProperties", {}), sample)

# 8. The template in each data-store mode, as CloudFormation resolves it.
sys.path.insert(0, os.path.dirname(__file__))
import template_modes  # noqa: E402

template_modes.run_checks(template, check)

# 9. The Logs Insights queries of docs/operations.md and the fields they use
# (docs/logs-insights-fields.json, read by a Rust test that renders the code's log lines).
fields_doc = json.load(open("docs/logs-insights-fields.json"))
runbook = open("docs/operations.md").read()
for query, fields in fields_doc.items():
    block = re.search(rf"<!-- query: {re.escape(query)} -->\s*```(?:text|sql)?\n(.*?)```", runbook, re.S)
    check(f"Logs Insights query `{query}` is in docs/operations.md", block is not None)
    if block:
        text = block.group(1)
        used = set(re.findall(r"\b(?:fields\.[A-Za-z_]+|spans\.\d+\.[A-Za-z]+|level|target)\b", text))
        check(f"Logs Insights query `{query}` uses exactly the fields it lists", used == set(fields),
              f"query {sorted(used)}, listed {sorted(fields)}")
        stale = [w for w in ("@type = \"REPORT\"", "fields message_id") if w in text]
        check(f"Logs Insights query `{query}` uses the JSON log format's names", not stale, stale)
named = set(re.findall(r"<!-- query: (\w+) -->", runbook))
check("every named query of docs/operations.md is in docs/logs-insights-fields.json",
      named == set(fields_doc), sorted(named ^ set(fields_doc)))
check("no query of docs/operations.md uses the text log format (@type = \"REPORT\")",
      '@type = "REPORT"' not in runbook)

# The deployed page's Content-Security-Policy is the local server's (which the browser
# tests run under) but for connect-src: there, this region's API Gateway and Function URL
# hosts, never any https: origin (deploy-web.sh narrows it to the stack's two origins).
def csp(text):
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in text.split(";")) if d}
local_rs = open("local/src/lib.rs").read()
local_csp = re.search(r'CONTENT_SECURITY_POLICY: &str = "(.*?)";', local_rs, re.S).group(1)
local_csp = csp(re.sub(r'\\\n\s*', '', local_csp))
policy = resources["WebResponseHeaders"]["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]["ContentSecurityPolicy"]["ContentSecurityPolicy"]
policy = policy["Fn::Sub"] if isinstance(policy, dict) else policy
stack_csp = csp(policy)
check("the page's CSP matches the local server's but for connect-src",
      {k: v for k, v in stack_csp.items() if k != "connect-src"} == {k: v for k, v in local_csp.items() if k != "connect-src"},
      (stack_csp, local_csp))
connect = stack_csp.get("connect-src", [])
check("the page's connect-src names no bare https: and only AWS API hosts of the region",
      "https:" not in connect and all(s == "'self'" or s.endswith((".amazonaws.com", ".on.aws")) for s in connect),
      connect)
check("deploy-web.sh narrows connect-src to the stack's API and stream origins",
      "connect-src $CONNECT" in open("scripts/deploy-web.sh").read())

print(f"template checks: {len(failures)} failed")
sys.exit(1 if failures else 0)
