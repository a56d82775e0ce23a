"""What AWS will really build from template.yaml: the template translated by SAM's own
translator (aws-sam-translator, offline), then checked where the translation has lost
settings before. Writes the translated template to OUT (for the policy check).

  - The HTTP API's CORS block (`x-amazon-apigateway-cors` in the OpenAPI body API Gateway
    gets): with and without CorsExtraOrigins, origins, methods, headers, exposed headers and
    max-age all survive, and equal the local server's lists (shared/src/http/cors.rs).
    (An `!If` inside AllowOrigins once translated to the origins alone.)
  - The stream's Function URL CORS keeps its methods and headers.
  - Every HttpApi event became a path in the body.
  - Both data-store modes translate to the same document (the policy check covers both).
  - The migrations custom resource is served by the migrate function's alias and
    versioned by its published version (SAM's `.Alias` and `.Version` references resolved).

Usage: python check_sam_translation.py OUT   (from the repository root, venv-tools python)
"""

import json
import os
import re
import sys

from cfnlint.decode import decode
from samtranslator.translator.transform import transform

failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))
    if not ok:
        failures.append(name)


class NoManagedPolicies:
    """The translator asks for managed policy ARNs only for policies named by name; this
    template names none (SAM policy templates and inline statements), so none are needed."""

    def load(self):
        return {}


os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
template, errors = decode("template.yaml")
if errors:
    raise SystemExit(f"template.yaml: {errors}")
template = json.loads(json.dumps(template, default=str))
for res in template["Resources"].values():
    if res["Type"] == "AWS::Serverless::Function":
        # What `sam package` does: code in S3 (the translator accepts nothing else).
        res["Properties"]["CodeUri"] = "s3://bucket/key.zip"
params = {"OtpEmailFrom": "noreply@example.com"}
out = transform(json.loads(json.dumps(template)), params, NoManagedPolicies())
with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=1)

# The data-store modes differ only by conditions, which CloudFormation resolves, not the
# translator: both modes translate to the same document, so the policy check of this one
# covers both.
for mode in ("create", "existing"):
    other = transform(json.loads(json.dumps(template)), {**params, "DataStores": mode}, NoManagedPolicies())
    check(f"DataStores={mode} translates to the same document (one policy check covers both)", other == out)

cors_rs = open("shared/src/http/cors.rs").read()


def rust_list(const):
    body = re.search(rf"pub const {const}: \[[^\]]*\] = \[(.*?)\];", cors_rs, re.S).group(1)
    return [re.sub(r"^Method::", "", x.strip().strip('"')) for x in body.split(",") if x.strip()]


max_age = int(re.search(r"MAX_AGE_SECS: u64 = (\d+);", cors_rs).group(1))
body = out["Resources"]["HttpApi"]["Properties"]["Body"]
cors = body.get("x-amazon-apigateway-cors")
branches = cors["Fn::If"][1:] if isinstance(cors, dict) and "Fn::If" in cors else [cors]
check("the API's CORS block is chosen whole per condition", len(branches) == 2, cors)
for name, block in zip(("with CorsExtraOrigins", "without"), branches):
    block = block if isinstance(block, dict) else {}
    check(f"API CORS ({name}): allowMethods", block.get("allowMethods") == rust_list("ALLOW_METHODS"), block.get("allowMethods"))
    check(f"API CORS ({name}): allowHeaders", block.get("allowHeaders") == rust_list("ALLOW_HEADERS"), block.get("allowHeaders"))
    check(f"API CORS ({name}): exposeHeaders", block.get("exposeHeaders") == rust_list("EXPOSE_HEADERS"), block.get("exposeHeaders"))
    check(f"API CORS ({name}): maxAge", block.get("maxAge") == max_age, block.get("maxAge"))
    origins = json.dumps(block.get("allowOrigins"))
    check(f"API CORS ({name}): FrontendUrl and the web distribution are allowed",
          "app.example.com" in origins and "WebDistribution.DomainName" in origins, origins)
    if name == "with CorsExtraOrigins":
        check(f"API CORS ({name}): CorsExtraOrigins are allowed", "Fn::Join" in origins, origins)

url_cors = out["Resources"]["StreamFunctionUrl"]["Properties"]["Cors"]
check("stream URL CORS: GET with authorization and last-event-id",
      url_cors.get("AllowMethods") == ["GET"] and url_cors.get("AllowHeaders") == ["authorization", "last-event-id"],
      url_cors)

events = {
    (e["Properties"]["Method"].lower(), e["Properties"]["Path"])
    for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"
    for e in r["Properties"].get("Events", {}).values() if e["Type"] == "HttpApi"
}
paths = {(m, p) for p, ops in body["paths"].items() for m in ops if m != "options"}
check("every HttpApi event is a route of the translated API", events <= paths, sorted(events - paths))

mig = out["Resources"]["Migrations"]["Properties"]
alias = mig["ServiceToken"].get("Ref", "")
version = mig["CodeVersion"].get("Ref", "")
check("Migrations: ServiceToken is the migrate function's alias, CodeVersion its published version",
      out["Resources"].get(alias, {}).get("Type") == "AWS::Lambda::Alias"
      and out["Resources"].get(version, {}).get("Type") == "AWS::Lambda::Version"
      and out["Resources"][alias]["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version, "Version"]}, mig)
deps = {k: r.get("DependsOn") for k, r in out["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}
late = sorted(k for k, d in deps.items() if k != "MigrateFunction" and "Migrations" not in ([d] if isinstance(d, str) else d or []))
check("every translated function but the migrate function depends on Migrations", not late, late)

print(f"SAM translation checks: {len(failures)} failed")
sys.exit(1 if failures else 0)
