"""Writes the `--env-vars` file for `sam local start-api` / `sam local invoke`: for every
function in template.yaml, every variable the template passes it (Globals and its own),
with values that reach `make dev`'s PostgreSQL and Redis from inside SAM's containers.

Values come from LOCAL below, else from the template parameter a variable refers to
(its Default); a variable with neither is an error, so a setting added to the template
without a local value is caught (scripts/check_template.py runs this).

Usage: python sam_env.py TEMPLATE OUT.json   (settings: SAM_HOST, PG_PORT, REDIS_PORT,
JWT_SECRET_FILE, REPLY_QUEUE_URL, GOOGLE_API_KEY, STRIPE_* from the environment)
"""

import json
import hashlib
import os
import platform
import re
import sys
from pathlib import Path

from cfnlint.decode import decode


def secret_settings():
    """The settings a deployed function reads from Secrets Manager, read from the code's
    own list (`SECRET_SETTINGS` in shared/src/config/secret_arns.rs) so the two cannot
    drift."""
    path = Path(__file__).resolve().parent.parent / "shared/src/config/secret_arns.rs"
    source = path.read_text()
    listed = re.search(r"SECRET_SETTINGS: \[&str; \d+\] = \[(.*?)\];", source, re.S)
    if not listed:
        sys.exit("sam_env.py: SECRET_SETTINGS not found in shared/src/config/secret_arns.rs")
    return re.findall(r'"([A-Z_]+)"', listed.group(1))


SECRET_SETTINGS = secret_settings()


def local_values():
    # On Linux, run sam with `--docker-network host`: containers then share the host's
    # loopback, where `make dev` listens. Docker Desktop forwards host.docker.internal.
    host = os.environ.get("SAM_HOST") or (
        "127.0.0.1" if platform.system() == "Linux" else "host.docker.internal"
    )
    pg_port = os.environ.get("PG_PORT", "55432")
    redis_port = os.environ.get("REDIS_PORT", "56379")
    secret_file = os.environ["JWT_SECRET_FILE"]
    with open(secret_file) as f:
        jwt_secret = f.read().strip()
    return {
        "DATABASE_URL": f"postgres://postgres@{host}:{pg_port}/chatroom",
        "REDIS_URL": f"redis://{host}:{redis_port}/",
        "JWT_SECRET_KEY": jwt_secret,
        # The auth function's own key for code hashes (a deployed one gets its own secret).
        "OTP_HASH_KEY": hashlib.sha256(("otp-hash-key:" + jwt_secret).encode()).hexdigest(),
        # sam local runs the functions as in Lambda, against `make dev`'s plaintext stores.
        "ALLOW_PLAINTEXT_STORES": "true",
        # sam local sets AWS_LAMBDA_FUNCTION_NAME, where `response` is refused: the
        # codes are in the function's log (printed by sam local).
        "OTP_DELIVERY": "log",
        "RUST_LOG": "info",
        "QUOTA_BACKEND": "redis",
        "QUOTA_TABLE": "local-quota-unused",
        # No SQS under sam local unless you point this at one: sends then answer 503.
        "REPLY_QUEUE_URL": os.environ.get("REPLY_QUEUE_URL", ""),
        "DEAD_LETTER_QUEUE_ARN": "arn:aws:sqs:eu-west-1:000000000000:local-dead-letters",
        "GOOGLE_API_KEY": os.environ.get("GOOGLE_API_KEY", "set-GOOGLE_API_KEY"),
        "STRIPE_API_KEY": os.environ.get("STRIPE_API_KEY", ""),
        "STRIPE_PRO_PRICE_ID": os.environ.get("STRIPE_PRO_PRICE_ID", ""),
        "STRIPE_WEBHOOK_SECRET": os.environ.get("STRIPE_WEBHOOK_SECRET", "whsec_local_sam"),
        "FRONTEND_URL": "http://localhost:3000",
        "METRICS_NAMESPACE": "chatroom-lambda-local",
        # Deployed functions read their secrets from Secrets Manager; locally the values
        # above are given directly, so no ARN is set.
        **{f"{s}_SECRET_ARN": "" for s in SECRET_SETTINGS},
    }


def function_variables(template):
    """{logical id: {variable: template value}} for every AWS::Serverless::Function."""
    globals_ = (
        template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    )
    out = {}
    for name, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        own = resource.get("Properties", {}).get("Environment", {}).get("Variables", {})
        out[name] = {**globals_, **own}
    return out


def resolve(variable, value, local, parameters):
    if variable in local:
        return local[variable]
    if isinstance(value, (str, int, float)):
        return str(value)
    ref = value.get("Ref") if isinstance(value, dict) else None
    if ref in parameters and "Default" in parameters[ref]:
        return str(parameters[ref]["Default"])
    return None


def build(template_path):
    template, errors = decode(template_path)
    if errors:
        raise SystemExit(f"cannot read {template_path}: {errors}")
    local = local_values()
    parameters = template.get("Parameters", {})
    env, missing = {}, []
    for function, variables in function_variables(template).items():
        env[function] = {}
        for variable, value in variables.items():
            resolved = resolve(variable, value, local, parameters)
            if resolved is None:
                missing.append(f"{function}.{variable}")
            else:
                env[function][variable] = resolved
    if missing:
        raise SystemExit(
            "no local value for " + ", ".join(missing) + " (add it to LOCAL in scripts/sam_env.py)"
        )
    return env


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    env = build(sys.argv[1])
    with open(sys.argv[2], "w") as f:
        json.dump(env, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"wrote {sys.argv[2]}: {len(env)} functions")
