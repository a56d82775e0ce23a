"""The stack on the local AWS emulator (ministack), run by scripts/emulator.sh around its two
`sam deploy`s. Each step is one a user of the emulator could run too.

  existing STACK BUILT_TEMPLATE
      after the existing-mode deploy (also the form `emulator.py STACK BUILT_TEMPLATE`):
      secrets   fill the placeholder secrets, as docs/deployment.md tells AWS users to
      migrate   run the migrations with the deployed migrate function, invoked with the
                Update request CloudFormation sends (answer caught by a local ResponseURL):
                in existing mode the first deploy meets the placeholder and applies nothing
      routes    create the HTTP API's routes and integrations from the template's HttpApi
                events: the emulator ignores the OpenAPI `Body` SAM generates (AWS reads
                it; routes and CORS come out empty here), so they are made with the
                apigatewayv2 API instead
      check     the stack as the emulator built it: every function, the SQS event sources,
                the stream's Function URL in RESPONSE_STREAM mode, no metric-math alarm

  create-template BUILT_TEMPLATE OUT
      the create-mode template as far as the emulator models it: the resource types it
      cannot create (EMULATOR_CANNOT below) become no-op stand-ins of the same logical id,
      the functions' DATABASE_URL and REDIS_URL in create mode point at the local stores
      (EMULATOR_DATABASE_URL, EMULATOR_REDIS_URL: the emulator's own PostgreSQL and Redis
      play RDS Proxy and ElastiCache), and CodeUri paths become absolute. Prints the
      stand-ins.

  rules EXISTING_STACK CREATE_STACK
      the template's Rules, as the emulator's CloudFormation evaluates them: change sets
      with half a network configuration (and SubnetIds in create mode) are refused

  create STACK BUILT_TEMPLATE
      after the create-mode deploy: the stack CREATE_COMPLETE with every resource create
      mode declares, of its type (stand-ins as stand-ins), and what the emulator built:
      the VPC and its four subnets over two zones, the security groups' rules, the route
      tables, the generated database credentials, the Aurora cluster and instance, every
      function in the private subnets with the create-mode settings, and the Migrations
      custom resource answered by the real migrate function (Applied lists what it did;
      EMULATOR_DATABASE_URL is then at the newest migration); then fills the Stripe and
      Gemini secrets and makes the routes, as for existing mode.

Environment: AWS_ENDPOINT_URL and dummy credentials; secret values in SECRET_<NAME>
variables (e.g. SECRET_DATABASE_URL) for `existing`.
"""

import http.server
import json
import os
import subprocess
import sys
import threading
import uuid

import boto3
import yaml
from cfnlint.decode import decode

sys.path.insert(0, os.path.dirname(__file__))
import template_modes  # noqa: E402

# Secret resource -> the environment variable holding its value (existing mode).
SECRETS = {
    "DatabaseUrlSecret": "SECRET_DATABASE_URL",
    "RedisUrlSecret": "SECRET_REDIS_URL",
    "GoogleApiKeySecret": "SECRET_GOOGLE_API_KEY",
    "StripeApiKeySecret": "SECRET_STRIPE_API_KEY",
    "StripeReadKeySecret": "SECRET_STRIPE_API_KEY",
    "StripeWebhookSecretSecret": "SECRET_STRIPE_WEBHOOK_SECRET",
}

# Resource types of create mode that ministack 1.5.33's CloudFormation cannot create (its
# APIs know some of them, its provisioner does not), and what stands for them in the check.
# docs/deployment.md lists the same.
EMULATOR_CANNOT = {
    "AWS::EC2::EIP": "no Elastic IPs",
    "AWS::EC2::NatGateway": "no NAT gateways (the routes to them are created, pointing at the stand-in)",
    "AWS::RDS::DBProxy": "no RDS Proxy: the functions reach the emulator's PostgreSQL directly",
    "AWS::RDS::DBProxyTargetGroup": "no RDS Proxy target group",
    "AWS::ElastiCache::ServerlessCache": "no ElastiCache Serverless: the functions reach the emulator's Redis",
}
STAND_IN = "AWS::CloudFormation::WaitConditionHandle"
# What SAM's resources become (same logical id).
SAM_TYPES = {template_modes.SAM_FUNCTION: "AWS::Lambda::Function", "AWS::Serverless::HttpApi": "AWS::ApiGatewayV2::Api"}


def log(line):
    print(f"[emulator] {line}", file=sys.stderr, flush=True)


def fail(message):
    raise SystemExit(f"emulator check failed: {message}")


def load(path):
    template, errors = decode(path)
    if errors:
        raise SystemExit(f"{path}: {errors}")
    return template


def stack_resources(stack):
    cfn = boto3.client("cloudformation")
    return {r["LogicalResourceId"]: r for r in cfn.describe_stack_resources(StackName=stack)["StackResources"]}


# --- the migrate function, invoked as CloudFormation does ---
class _Catcher(http.server.BaseHTTPRequestHandler):
    answers = []

    def do_PUT(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        _Catcher.answers.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def run_migrations(stack, physical):
    """Invokes the migrate function's alias with the Update request CloudFormation sends on
    a deploy, its ResponseURL a local catcher; returns the answer."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Catcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    lam = boto3.client("lambda")
    alias = lam.get_alias(FunctionName=physical["MigrateFunction"], Name="live")
    version = alias["FunctionVersion"]
    stack_id = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]["StackId"]
    props = {"ServiceToken": alias["AliasArn"], "CodeVersion": version}
    event = {
        "RequestType": "Update", "ServiceToken": alias["AliasArn"],
        "ResponseURL": f"http://127.0.0.1:{server.server_port}/answer",
        "StackId": stack_id, "RequestId": str(uuid.uuid4()), "LogicalResourceId": "Migrations",
        "PhysicalResourceId": physical.get("Migrations", "chatroom-migrations"),
        "ResourceType": "Custom::Migrations", "ResourceProperties": props, "OldResourceProperties": props,
    }
    _Catcher.answers.clear()
    lam.invoke(FunctionName=alias["AliasArn"], Payload=json.dumps(event).encode())
    server.shutdown()
    if not _Catcher.answers:
        fail("the migrate function sent no answer to its ResponseURL")
    return _Catcher.answers[-1]


# --- existing mode ---
def existing(stack, built_template):
    resources = stack_resources(stack)
    physical = {k: r["PhysicalResourceId"] for k, r in resources.items()}

    # 1. Secrets.
    fill_secrets(physical)

    # 2. The migrations, now that the database URL is there.
    answer = run_migrations(stack, physical)
    if answer.get("Status") != "SUCCESS":
        fail(f"migrations: {answer.get('Reason')}")
    log(f"migrate function: {answer.get('Reason')} (Applied: {answer.get('Data', {}).get('Applied', '')!r})")

    # 3. Routes, from the built template's HttpApi events (the same list AWS gets).
    template = load(built_template)
    make_routes(template, physical)

    # 4. What the emulator built.
    check_functions(template, resources, physical)


def fill_secrets(physical):
    """Fills the placeholder secrets the stack has (create mode has no URL secrets)."""
    sm = boto3.client("secretsmanager")
    filled = [logical for logical in SECRETS if logical in physical]
    for logical in filled:
        sm.put_secret_value(SecretId=physical[logical], SecretString=os.environ[SECRETS[logical]])
    log(f"filled {len(filled)} secrets ({', '.join(filled)})")


def make_routes(template, physical):
    api_id = physical["HttpApi"]
    gw = boto3.client("apigatewayv2")
    there = {r["RouteKey"] for r in gw.get_routes(ApiId=api_id).get("Items", [])}
    lam = boto3.client("lambda")
    made = 0
    for logical, res in template["Resources"].items():
        if res["Type"] != template_modes.SAM_FUNCTION:
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
            if key in there:
                continue
            gw.create_route(ApiId=api_id, RouteKey=key, Target=f"integrations/{integration}")
            made += 1
    log(f"created {made} routes on HTTP API {api_id} ({len(there)} were there)")


def check_functions(template, resources, physical):
    lam = boto3.client("lambda")
    functions = [k for k, r in template["Resources"].items() if r["Type"] == template_modes.SAM_FUNCTION]
    missing = [f for f in functions if f not in physical]
    if missing:
        fail(f"functions missing from the stack: {missing}")
    mappings = lam.list_event_source_mappings(FunctionName=physical["ReplyWorkerFunction"])["EventSourceMappings"]
    if len(mappings) != 2:
        fail(f"the reply worker has {len(mappings)} SQS event sources, wanted 2")
    url = lam.get_function_url_config(FunctionName=physical["StreamFunction"])
    if url.get("InvokeMode") != "RESPONSE_STREAM":
        fail(f"the stream's Function URL is in {url.get('InvokeMode')} mode")
    math = [k for k, r in resources.items() if r["ResourceType"] == "AWS::CloudWatch::Alarm"
            and k in ("Api5xxRateAlarm", "LambdaThrottlesAlarm", "ReplyFailureRateAlarm", "StreamConcurrencyAlarm")]
    if math:
        fail(f"metric-math alarms present with MetricMathAlarms=false: {math}")
    log(f"{len(functions)} functions, 2 SQS event sources on the worker, stream URL in RESPONSE_STREAM mode")


# --- create mode ---
def create_template(built_template, out):
    """Writes the create-mode template the emulator can deploy; returns the stand-ins."""
    base = os.path.dirname(os.path.abspath(built_template))
    with open(built_template) as f:
        template = yaml.load(f, Loader=_CfnLoader)
    stand_ins = {}
    for name, res in template["Resources"].items():
        if res.get("Type") in EMULATOR_CANNOT:
            stand_ins[name] = res["Type"]
            kept = {k: v for k, v in res.items() if k in ("Condition", "DependsOn")}
            template["Resources"][name] = {"Type": STAND_IN, **kept}
        props = res.get("Properties", {})
        if res.get("Type") == template_modes.SAM_FUNCTION and isinstance(props.get("CodeUri"), str):
            props["CodeUri"] = os.path.join(base, props["CodeUri"])
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    for var, env in (("DATABASE_URL", "EMULATOR_DATABASE_URL"), ("REDIS_URL", "EMULATOR_REDIS_URL")):
        cond, _, existing_value = variables[var]["Fn::If"]
        variables[var] = {"Fn::If": [cond, os.environ[env], existing_value]}
    template = _replace_stand_in_attributes(template, set(stand_ins))
    with open(out, "w") as f:
        yaml.dump(template, f, Dumper=_CfnDumper, sort_keys=False, width=1000)
    return stand_ins


def _replace_stand_in_attributes(node, stand_ins):
    """GetAtt of a stand-in (it has no attributes) becomes a literal naming what it stands for."""
    if isinstance(node, dict):
        if set(node) == {"Fn::GetAtt"}:
            target = node["Fn::GetAtt"]
            target = target if isinstance(target, list) else target.split(".", 1)
            if target[0] in stand_ins:
                return f"emulator-stand-in-{target[0]}-{target[1]}".replace(".", "-")
        if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
            text = node["Fn::Sub"]
            for name in stand_ins:
                while f"${{{name}." in text:
                    start = text.index(f"${{{name}.")
                    end = text.index("}", start)
                    text = text[:start] + f"emulator-stand-in-{text[start + 2:end].replace('.', '-')}" + text[end + 1:]
            return {"Fn::Sub": text}
        return {k: _replace_stand_in_attributes(v, stand_ins) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_stand_in_attributes(v, stand_ins) for v in node]
    return node


def create(stack, built_template):
    cfn = boto3.client("cloudformation")
    status = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
    if status != "CREATE_COMPLETE":
        fail(f"stack {stack} is {status}")
    template = load(built_template)
    mode = template_modes.Mode(template, {"DataStores": "create", "OtpEmailFrom": "x@example.com", "MetricMathAlarms": "false"})
    declared = {k: v["Type"] for k, v in mode.resources().items()}
    resources = stack_resources(stack)
    physical = {k: r["PhysicalResourceId"] for k, r in resources.items()}
    problems = []
    for name, rtype in declared.items():
        rtype = SAM_TYPES.get(rtype, rtype)
        want = STAND_IN if rtype in EMULATOR_CANNOT else rtype
        got = resources.get(name, {}).get("ResourceType")
        state = resources.get(name, {}).get("ResourceStatus")
        if got != want or state != "CREATE_COMPLETE":
            problems.append(f"{name}: {got} {state}, wanted {want}")
    if problems:
        fail("resources of create mode: " + "; ".join(problems))
    stood_in = sorted(k for k, t in declared.items() if t in EMULATOR_CANNOT)
    log(f"stack {stack} CREATE_COMPLETE: all {len(declared)} resources of create mode, "
        f"{len(stood_in)} as stand-ins ({', '.join(stood_in)})")

    ec2 = boto3.client("ec2")
    vpc = ec2.describe_vpcs(VpcIds=[physical["Vpc"]])["Vpcs"][0]
    subnets = {s["SubnetId"]: s for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]}
    ours = [physical[k] for k in ("PrivateSubnetA", "PrivateSubnetB", "PublicSubnetA", "PublicSubnetB")]
    if not set(ours) <= set(subnets):
        fail(f"subnets {ours} not all in VPC {vpc['VpcId']}")
    zones = {subnets[physical[k]]["AvailabilityZone"] for k in ("PrivateSubnetA", "PrivateSubnetB")}
    if len(zones) != 2:
        fail(f"the private subnets are in {zones}, wanted two zones")
    blocks = sorted(subnets[s]["CidrBlock"] for s in ours)
    log(f"VPC {vpc['CidrBlock']}: subnets {', '.join(blocks)} over {', '.join(sorted(zones))}")

    groups = {g["GroupId"]: g for g in ec2.describe_security_groups(GroupIds=[
        physical[k] for k in ("FunctionsSecurityGroup", "DatabaseProxySecurityGroup", "DatabaseSecurityGroup", "CacheSecurityGroup")])["SecurityGroups"]}

    def admits(group, port, source):
        perms = groups[physical[group]].get("IpPermissions", [])
        return [(p.get("FromPort"), [g["GroupId"] for g in p.get("UserIdGroupPairs", [])]) for p in perms] == [(port, [physical[source]])]

    for group, port, source in (("DatabaseProxySecurityGroup", 5432, "FunctionsSecurityGroup"),
                                ("DatabaseSecurityGroup", 5432, "DatabaseProxySecurityGroup"),
                                ("CacheSecurityGroup", 6379, "FunctionsSecurityGroup")):
        if not admits(group, port, source):
            fail(f"{group} rules: {groups[physical[group]].get('IpPermissions')}")
    if groups[physical["FunctionsSecurityGroup"]].get("IpPermissions"):
        fail("the functions' security group admits traffic")
    log("security groups: 5432 proxy <- functions, 5432 cluster <- proxy, 6379 cache <- functions, nothing into the functions")

    tables = ec2.describe_route_tables(RouteTableIds=[physical["PrivateRouteTableA"], physical["PrivateRouteTableB"]])["RouteTables"]
    for table in tables:
        if not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" and r.get("NatGatewayId") == physical["NatGatewayA"]
                   for r in table.get("Routes", [])):
            fail(f"route table {table['RouteTableId']} has no default route to NatGatewayA: {table.get('Routes')}")
    log("both private route tables send 0.0.0.0/0 to NatGatewayA (a stand-in)")

    secret = json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=physical["DatabaseCredentialsSecret"])["SecretString"])
    if secret.get("username") != "chatroom" or len(secret.get("password", "")) < 32 or not secret["password"].isalnum():
        fail(f"database credentials secret: keys {sorted(secret)}")
    rds = boto3.client("rds")
    cluster = rds.describe_db_clusters(DBClusterIdentifier=physical["DatabaseCluster"])["DBClusters"][0]
    scaling = cluster.get("ServerlessV2ScalingConfiguration", {})
    if (cluster.get("Engine") != "aurora-postgresql" or cluster.get("DatabaseName") != "chatroom"
            or scaling.get("MinCapacity") != 0.5 or not cluster.get("StorageEncrypted")
            or cluster.get("MasterUsername") != "chatroom"):
        fail(f"Aurora cluster: {json.dumps({k: cluster.get(k) for k in ('Engine', 'DatabaseName', 'StorageEncrypted', 'MasterUsername', 'ServerlessV2ScalingConfiguration')}, default=str)}")
    instance = rds.describe_db_instances(DBInstanceIdentifier=physical["DatabaseInstance"])["DBInstances"][0]
    if instance.get("DBInstanceClass") != "db.serverless" or instance.get("DBClusterIdentifier") != cluster["DBClusterIdentifier"]:
        fail(f"Aurora instance: {instance.get('DBInstanceClass')} in {instance.get('DBClusterIdentifier')}")
    log(f"Aurora {cluster['Engine']} {cluster.get('EngineVersion')}, serverless v2 {scaling.get('MinCapacity')}-"
        f"{scaling.get('MaxCapacity')} ACU, master user from the generated secret")

    lam = boto3.client("lambda")
    want_vpc = {physical["PrivateSubnetA"], physical["PrivateSubnetB"]}
    unmodelled_vpc = 0
    for name in (k for k, t in declared.items() if t == template_modes.SAM_FUNCTION):
        config = lam.get_function_configuration(FunctionName=physical[name])
        vpc_config = config.get("VpcConfig") or {}
        variables = config.get("Environment", {}).get("Variables", {})
        # ministack 1.5.33 runs functions as local processes and drops VpcConfig; a value
        # it does report must be create mode's.
        if not vpc_config.get("SubnetIds"):
            unmodelled_vpc += 1
        elif set(vpc_config["SubnetIds"]) != want_vpc or vpc_config.get("SecurityGroupIds") != [physical["FunctionsSecurityGroup"]]:
            fail(f"{name} VpcConfig {vpc_config}")
        if (variables.get("DATABASE_CREDENTIALS_SECRET_ARN") != physical["DatabaseCredentialsSecret"]
                or variables.get("DATABASE_URL_SECRET_ARN") or variables.get("REDIS_URL_SECRET_ARN")
                or not variables.get("DATABASE_URL")):
            fail(f"{name} settings: {sorted(k for k, v in variables.items() if v)}")
    log("every function with create mode's settings (DATABASE_URL + DATABASE_CREDENTIALS_SECRET_ARN, no URL secrets); "
        + ("VpcConfig not kept by the emulator" if unmodelled_vpc else "each in the private subnets with the functions' group"))

    migrations = cfn.describe_stack_resource(StackName=stack, LogicalResourceId="Migrations")["StackResourceDetail"]
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])}
    if migrations["ResourceType"] != "Custom::Migrations" or migrations["ResourceStatus"] != "CREATE_COMPLETE":
        fail(f"Migrations: {migrations['ResourceType']} {migrations['ResourceStatus']}")
    log(f"Migrations custom resource answered by the migrate function: Applied {outputs.get('MigrationsApplied')!r}")

    # What a user does next, so that make smoke can walk the stack.
    fill_secrets(physical)
    make_routes(template, physical)
    return outputs


def rules(existing_stack, create_stack):
    """The Rules refuse half a network configuration, on the emulator's CloudFormation too:
    each stack's own template, with parameters that must be refused (and one that must
    not). Change sets only; nothing is created."""
    cfn, s3 = boto3.client("cloudformation"), boto3.client("s3")
    bucket = next(b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith("aws-sam-cli-managed-default"))
    cases = [
        (existing_stack, {"DataStores": "existing", "SubnetIds": "subnet-1"}, "SubnetsNeedSecurityGroups"),
        (existing_stack, {"DataStores": "existing", "SecurityGroupIds": "sg-1"}, "SecurityGroupsNeedSubnets"),
        (create_stack, {"DataStores": "create", "SubnetIds": "subnet-1", "SecurityGroupIds": "sg-1"}, "CreateModeBuildsItsOwnNetwork"),
        (existing_stack, {"DataStores": "existing", "SubnetIds": "subnet-1", "SecurityGroupIds": "sg-1"}, None),
    ]
    for stack, params, rule in cases:
        key = f"emulator-rules/{stack}.template"
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(cfn.get_template(StackName=stack)["TemplateBody"]).encode())
        parameters = [{"ParameterKey": k, "ParameterValue": v}
                      for k, v in {**params, "OtpEmailFrom": "noreply@example.com"}.items()]
        try:
            made = cfn.create_change_set(
                StackName=f"{stack}-rules", ChangeSetName="rules", ChangeSetType="CREATE",
                TemplateURL=f"https://s3.amazonaws.com/{bucket}/{key}", Parameters=parameters,
                Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"])
            cfn.delete_change_set(ChangeSetName=made["Id"])
            if rule:
                fail(f"{params} accepted; rule {rule} should refuse it")
        except cfn.exceptions.ClientError as e:
            if not rule or f"rule {rule} failed" not in str(e):
                fail(f"{params}: {e}")
    log("the Rules refuse SubnetIds without SecurityGroupIds and the reverse, and either in create mode")


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (!Ref, !Sub, ...) as their long forms."""


def _construct_tag(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else "Fn::" + suffix
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Condition":
        return {"Condition": value}
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


class _CfnDumper(yaml.SafeDumper):
    pass


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) == 2:
        existing(*args)
    elif args and args[0] == "existing" and len(args) == 3:
        existing(args[1], args[2])
    elif args and args[0] == "create-template" and len(args) == 3:
        made = create_template(args[1], args[2])
        for name, rtype in sorted(made.items()):
            log(f"stand-in for {name} ({rtype}): {EMULATOR_CANNOT[rtype]}")
    elif args and args[0] == "create" and len(args) == 3:
        create(args[1], args[2])
    elif args and args[0] == "rules" and len(args) == 3:
        rules(args[1], args[2])
    else:
        raise SystemExit(__doc__)
