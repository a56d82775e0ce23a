"""Post-deploy steps for a stack on the local AWS emulator (ministack), run by
scripts/emulator.sh after `sam deploy`. Each is a step a user of the emulator could run too:

  secrets  fill the stack's placeholder secrets, as docs/deployment.md tells AWS users to
  routes   create the HTTP API's routes and integrations from the template's HttpApi events:
           the emulator ignores the OpenAPI `Body` SAM generates (AWS reads it; routes and
           CORS come out empty here), so they are made with the apigatewayv2 API instead
  check    the stack as the emulator built it: every function, the SQS event sources, the
           stream's Function URL in RESPONSE_STREAM mode, no metric-math alarm

Usage: python emulator.py STACK BUILT_TEMPLATE   (AWS_ENDPOINT_URL and dummy credentials set;
secret values in SECRET_<NAME> variables, e.g. SECRET_DATABASE_URL)
"""

import os
import sys

import boto3
from cfnlint.decode import decode

# Secret resource -> the environment variable holding its value.
SECRETS = {
    "DatabaseUrlSecret": "SECRET_DATABASE_URL",
    "RedisUrlSecret": "SECRET_REDIS_URL",
    "GoogleApiKeySecret": "SECRET_GOOGLE_API_KEY",
    "StripeApiKeySecret": "SECRET_STRIPE_API_KEY",
    "StripeWebhookSecretSecret": "SECRET_STRIPE_WEBHOOK_SECRET",
}


def log(line):
    print(f"[emulator] {line}", file=sys.stderr, flush=True)


def main(stack, built_template):
    cfn = boto3.client("cloudformation")
    resources = {
        r["LogicalResourceId"]: r
        for r in cfn.describe_stack_resources(StackName=stack)["StackResources"]
    }
    physical = {k: r["PhysicalResourceId"] for k, r in resources.items()}

    # 1. Secrets.
    sm = boto3.client("secretsmanager")
    for logical, var in SECRETS.items():
        sm.put_secret_value(SecretId=physical[logical], SecretString=os.environ[var])
    log(f"filled {len(SECRETS)} secrets")

    # 2. Routes, from the built template's HttpApi events (the same list AWS gets).
    template, errors = decode(built_template)
    if errors:
        raise SystemExit(f"{built_template}: {errors}")
    api_id = physical["HttpApi"]
    gw = boto3.client("apigatewayv2")
    existing = {r["RouteKey"] for r in gw.get_routes(ApiId=api_id).get("Items", [])}
    lam = boto3.client("lambda")
    made = 0
    for logical, res in template["Resources"].items():
        if res["Type"] != "AWS::Serverless::Function":
            continue
        events = [e["Properties"] for e in res["Properties"].get("Events", {}).values() if e["Type"] == "HttpApi"]
        if not events:
            continue
        arn = lam.get_function(FunctionName=physical[logical])["Configuration"]["FunctionArn"]
        integration = gw.create_integration(
            ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=arn,
            PayloadFormatVersion="2.0", IntegrationMethod="POST",
        )["IntegrationId"]
        for event in events:
            key = f"{event['Method'].upper()} {event['Path']}"
            if key in existing:
                continue
            gw.create_route(ApiId=api_id, RouteKey=key, Target=f"integrations/{integration}")
            made += 1
    log(f"created {made} routes on HTTP API {api_id} ({len(existing)} were there)")

    # 3. What the emulator built.
    functions = [k for k, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
    missing = [f for f in functions if f not in physical]
    if missing:
        raise SystemExit(f"functions missing from the stack: {missing}")
    mappings = lam.list_event_source_mappings(FunctionName=physical["ReplyWorkerFunction"])["EventSourceMappings"]
    if len(mappings) != 2:
        raise SystemExit(f"the reply worker has {len(mappings)} SQS event sources, wanted 2")
    url = lam.get_function_url_config(FunctionName=physical["StreamFunction"])
    if url.get("InvokeMode") != "RESPONSE_STREAM":
        raise SystemExit(f"the stream's Function URL is in {url.get('InvokeMode')} mode")
    math = [k for k, r in resources.items() if r["ResourceType"] == "AWS::CloudWatch::Alarm"
            and k in ("Api5xxRateAlarm", "LambdaThrottlesAlarm", "ReplyFailureRateAlarm")]
    if math:
        raise SystemExit(f"metric-math alarms present with MetricMathAlarms=false: {math}")
    log(f"{len(functions)} functions, 2 SQS event sources on the worker, stream URL in RESPONSE_STREAM mode")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
