"""template.yaml as CloudFormation resolves it for one set of parameters: the Conditions
evaluated, every Fn::If replaced by its branch, AWS::NoValue removed, resources and
outputs whose condition is false left out, SAM's Globals merged into each function, and
the Rules evaluated. Used by scripts/check_template.py (run_checks) to check the
invariants of both data-store modes, and by scripts/emulator.py to know what a mode
deploys.

Only the intrinsic functions this template uses in Conditions and Rules are evaluated;
anything else is kept as written (a Ref to a resource stays {"Ref": name}).
"""

import copy
import json
import re

SAM_FUNCTION = "AWS::Serverless::Function"
PSEUDO = {
    "AWS::AccountId", "AWS::NoValue", "AWS::NotificationARNs", "AWS::Partition",
    "AWS::Region", "AWS::StackId", "AWS::StackName", "AWS::URLSuffix",
}
LAMBDA_FUNCTION_KEYS = ("Environment", "VpcConfig")


class Mode:
    def __init__(self, template, overrides=None):
        self.template = template
        self.overrides = dict(overrides or {})
        parameters = template.get("Parameters", {})
        self.params = {}
        for name, spec in parameters.items():
            value = self.overrides.get(name, spec.get("Default", ""))
            if spec.get("Type") == "CommaDelimitedList":
                value = value if isinstance(value, list) else [s.strip() for s in str(value).split(",")]
            else:
                value = str(value)
            self.params[name] = value
        self._conditions = {}
        self.conditions = {name: self.condition(name) for name in template.get("Conditions", {})}

    # --- values and conditions ---
    def value(self, node):
        """A parameter-level value: Ref to a parameter, Fn::Join, Fn::FindInMap, literals."""
        if isinstance(node, dict) and len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Ref":
                if arg in self.params:
                    return self.params[arg]
                raise ValueError(f"Ref {arg} is not a parameter")
            if fn == "Fn::Join":
                sep, items = arg
                items = self.value(items)
                return sep.join(str(self.value(i)) for i in items)
            if fn == "Fn::FindInMap":
                m, k1, k2 = (self.value(a) for a in arg)
                return self.template["Mappings"][m][k1][k2]
        if isinstance(node, list):
            return [self.value(n) for n in node]
        return node

    def truth(self, node):
        (fn, arg), = node.items()
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Fn::Equals":
            a, b = (self.value(x) for x in arg)
            return str(a) == str(b) if not isinstance(a, list) else a == b
        if fn == "Fn::Not":
            return not self.truth(arg[0])
        if fn == "Fn::And":
            return all(self.truth(x) for x in arg)
        if fn == "Fn::Or":
            return any(self.truth(x) for x in arg)
        if fn == "Fn::EachMemberEquals":
            members, wanted = self.value(arg[0]), self.value(arg[1])
            return all(str(m) == str(wanted) for m in members)
        if fn == "Fn::EachMemberIn":
            members, allowed = self.value(arg[0]), self.value(arg[1])
            return all(m in allowed for m in members)
        if fn == "Fn::Contains":
            members, wanted = self.value(arg[0]), self.value(arg[1])
            return wanted in members
        raise ValueError(f"cannot evaluate {fn}")

    def condition(self, name):
        if name not in self._conditions:
            self._conditions[name] = None  # a cycle would show as None
            self._conditions[name] = self.truth(self.template["Conditions"][name])
        return self._conditions[name]

    # --- the Rules ---
    def rule_failures(self):
        """The AssertDescriptions of every failed assertion (the deploy would be refused)."""
        failed = []
        for name, rule in self.template.get("Rules", {}).items():
            applies = rule.get("RuleCondition")
            if applies is not None and not self.truth(applies):
                continue
            for assertion in rule.get("Assertions", []):
                if not self.truth(assertion["Assert"]):
                    failed.append(f"{name}: {assertion.get('AssertDescription', '')}")
        return failed

    # --- resolution ---
    def resolve(self, node):
        if isinstance(node, dict):
            if len(node) == 1 and "Fn::If" in node:
                cond, yes, no = node["Fn::If"]
                return self.resolve(yes if self.conditions[cond] else no)
            out = {}
            for k, v in node.items():
                r = self.resolve(v)
                if r != {"Ref": "AWS::NoValue"}:
                    out[k] = r
            return out
        if isinstance(node, list):
            return [r for r in (self.resolve(v) for v in node) if r != {"Ref": "AWS::NoValue"}]
        return node

    def included(self, thing):
        cond = thing.get("Condition")
        return cond is None or self.conditions[cond]

    def resources(self):
        """Logical id -> resolved resource, for the resources this mode creates; SAM
        functions with the Globals merged in (function values win, maps merged)."""
        glob = self.template.get("Globals", {}).get("Function", {})
        out = {}
        for name, res in self.template["Resources"].items():
            if not self.included(res):
                continue
            res = copy.deepcopy(res)
            if res["Type"] == SAM_FUNCTION:
                props = res.setdefault("Properties", {})
                for key, value in glob.items():
                    if key not in props:
                        props[key] = copy.deepcopy(value)
                    elif key == "Environment":
                        merged = copy.deepcopy(value.get("Variables", {}))
                        merged.update(props[key].get("Variables", {}))
                        props[key] = {"Variables": merged}
            out[name] = self.resolve(res)
        return out

    def outputs(self):
        return {k: self.resolve(v) for k, v in self.template.get("Outputs", {}).items() if self.included(v)}


# --- references ---
def references(node):
    """Every (kind, target) a resolved node refers to: Ref, GetAtt and ${...} in Fn::Sub."""
    found = []
    if isinstance(node, dict):
        if len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Ref" and isinstance(arg, str):
                found.append(("Ref", arg))
            elif fn == "Fn::GetAtt":
                target = arg[0] if isinstance(arg, list) else arg.split(".")[0]
                found.append(("GetAtt", target))
            elif fn == "Fn::Sub":
                text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                for name in re.findall(r"\$\{([^!}][^}]*)\}", text):
                    if name not in local:
                        found.append(("Sub", name.split(".")[0] if not name.startswith("AWS::") else name))
                found += references(local)
                return found
        for v in node.values():
            found += references(v)
    elif isinstance(node, list):
        for v in node:
            found += references(v)
    return found


def sam_generated(resources):
    """Names SAM adds next to the functions, which the template may refer to."""
    names = set()
    for name, res in resources.items():
        if res["Type"] != SAM_FUNCTION:
            continue
        props = res.get("Properties", {})
        names.add(f"{name}Role")
        if "FunctionUrlConfig" in props:
            names.add(f"{name}Url")
        if "AutoPublishAlias" in props:
            names |= {f"{name}.Alias", f"{name}.Version"}
    return names


def unresolved(mode):
    """References to resources this mode leaves out (CloudFormation: "Unresolved resource
    dependencies"), including DependsOn."""
    resources = mode.resources()
    known = set(resources) | set(mode.params) | PSEUDO | sam_generated(resources)
    bad = []
    things = list(resources.items()) + [(f"Outputs.{k}", v) for k, v in mode.outputs().items()]
    for name, res in things:
        for kind, target in references(res):
            if target not in known and target.split(".")[0] not in known:
                bad.append(f"{name} -> {kind} {target}")
        deps = res.get("DependsOn", []) if isinstance(res, dict) else []
        for dep in [deps] if isinstance(deps, str) else deps:
            if dep not in resources:
                bad.append(f"{name} -> DependsOn {dep}")
    return bad


# --- the checks ---
def secret_policy(fn):
    """The secrets a function's policies let it read (GetSecretValue resources)."""
    allowed = []
    for policy in fn["Properties"].get("Policies", []):
        for st in policy.get("Statement", []) if isinstance(policy, dict) else []:
            actions = st.get("Action")
            actions = [actions] if isinstance(actions, str) else actions or []
            if "secretsmanager:GetSecretValue" in actions:
                res = st.get("Resource")
                allowed += res if isinstance(res, list) else [res]
    return allowed


def env(fn):
    return fn["Properties"].get("Environment", {}).get("Variables", {})


def sub_text(value):
    if isinstance(value, dict) and "Fn::Sub" in value:
        return value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
    return None


CREATE_ONLY = {
    "Vpc": "AWS::EC2::VPC", "InternetGateway": "AWS::EC2::InternetGateway",
    "PrivateSubnetA": "AWS::EC2::Subnet", "PrivateSubnetB": "AWS::EC2::Subnet",
    "PublicSubnetA": "AWS::EC2::Subnet", "PublicSubnetB": "AWS::EC2::Subnet",
    "NatGatewayA": "AWS::EC2::NatGateway", "NatAddressA": "AWS::EC2::EIP",
    "PrivateDefaultRouteA": "AWS::EC2::Route", "PrivateDefaultRouteB": "AWS::EC2::Route",
    "FunctionsSecurityGroup": "AWS::EC2::SecurityGroup",
    "DatabaseProxySecurityGroup": "AWS::EC2::SecurityGroup",
    "DatabaseSecurityGroup": "AWS::EC2::SecurityGroup", "CacheSecurityGroup": "AWS::EC2::SecurityGroup",
    "DatabaseCredentialsSecret": "AWS::SecretsManager::Secret",
    "DatabaseSubnetGroup": "AWS::RDS::DBSubnetGroup", "DatabaseCluster": "AWS::RDS::DBCluster",
    "DatabaseInstance": "AWS::RDS::DBInstance", "DatabaseProxy": "AWS::RDS::DBProxy",
    "DatabaseProxyTargetGroup": "AWS::RDS::DBProxyTargetGroup",
    "Cache": "AWS::ElastiCache::ServerlessCache",
}
EXISTING_ONLY = {"DatabaseUrlSecret": "AWS::SecretsManager::Secret", "RedisUrlSecret": "AWS::SecretsManager::Secret"}


def ingress(sg):
    return [(r.get("IpProtocol"), r.get("FromPort"), r.get("ToPort"), r.get("SourceSecurityGroupId"), r.get("CidrIp"))
            for r in sg["Properties"].get("SecurityGroupIngress", [])]


def check_mode(template, label, overrides, check):
    mode = Mode(template, overrides)
    res = mode.resources()
    functions = {k: v for k, v in res.items() if v["Type"] == SAM_FUNCTION}
    create = mode.params["DataStores"] == "create"

    check(f"[{label}] the Rules accept the parameters", not mode.rule_failures(), mode.rule_failures())
    bad = unresolved(mode)
    check(f"[{label}] no reference to a resource this mode leaves out", not bad, bad)

    for name, rtype in CREATE_ONLY.items():
        present = name in res and res[name]["Type"] == rtype
        check(f"[{label}] {name} ({rtype}) {'created' if create else 'absent'}", present == create)
    for name, rtype in EXISTING_ONLY.items():
        present = name in res and res[name]["Type"] == rtype
        check(f"[{label}] {name} {'absent' if create else 'created (placeholder)'}", present != create)

    for name, fn in functions.items():
        variables = env(fn)
        migrate = name == "MigrateFunction"
        # Database and Redis settings: exactly one source each, as the code expects.
        if create:
            url = sub_text(variables.get("DATABASE_URL")) or ""
            ok = ("${DatabaseProxy.Endpoint}" in url and url.startswith("postgres://") and "@" not in url
                  and "sslmode=require" in url and "/chatroom" in url
                  and variables.get("DATABASE_CREDENTIALS_SECRET_ARN") == {"Ref": "DatabaseCredentialsSecret"}
                  and variables.get("DATABASE_URL_SECRET_ARN") == "")
            check(f"[{label}] {name}: DATABASE_URL is the proxy's (TLS, no credentials) + DATABASE_CREDENTIALS_SECRET_ARN",
                  ok, {k: variables.get(k) for k in ("DATABASE_URL", "DATABASE_CREDENTIALS_SECRET_ARN", "DATABASE_URL_SECRET_ARN")})
            redis = sub_text(variables.get("REDIS_URL")) or ""
            ok = (variables.get("REDIS_URL") == "" and variables.get("REDIS_URL_SECRET_ARN") == "") if migrate else (
                redis == "rediss://${Cache.Endpoint.Address}:${Cache.Endpoint.Port}/" and variables.get("REDIS_URL_SECRET_ARN") == "")
            check(f"[{label}] {name}: REDIS_URL {'unset (migrations only)' if migrate else 'is the cache (rediss://)'}", ok,
                  {k: variables.get(k) for k in ("REDIS_URL", "REDIS_URL_SECRET_ARN")})
            vpc = fn["Properties"].get("VpcConfig")
            check(f"[{label}] {name}: in the private subnets with the functions' security group",
                  vpc == {"SubnetIds": [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}],
                          "SecurityGroupIds": [{"Ref": "FunctionsSecurityGroup"}]}, vpc)
        else:
            ok = (variables.get("DATABASE_URL") == "" and variables.get("DATABASE_CREDENTIALS_SECRET_ARN") == ""
                  and variables.get("DATABASE_URL_SECRET_ARN") == {"Ref": "DatabaseUrlSecret"})
            check(f"[{label}] {name}: database URL from DatabaseUrlSecret", ok)
            ok = (variables.get("REDIS_URL") == "" and variables.get("REDIS_URL_SECRET_ARN") == "") if migrate else (
                variables.get("REDIS_URL") == "" and variables.get("REDIS_URL_SECRET_ARN") == {"Ref": "RedisUrlSecret"})
            check(f"[{label}] {name}: Redis URL {'unset (migrations only)' if migrate else 'from RedisUrlSecret'}", ok)
            vpc = fn["Properties"].get("VpcConfig")
            subnets = mode.params["SubnetIds"] != [""]
            want = {"SubnetIds": {"Ref": "SubnetIds"}, "SecurityGroupIds": {"Ref": "SecurityGroupIds"}} if subnets else None
            check(f"[{label}] {name}: {'in SubnetIds with SecurityGroupIds' if subnets else 'outside any VPC'}", vpc == want, vpc)
        # Secrets: the policy lets it read exactly the secrets its settings name.
        named = sorted(v["Ref"] for k, v in variables.items() if k.endswith("_SECRET_ARN") and isinstance(v, dict) and "Ref" in v)
        allowed = sorted(r["Ref"] for r in secret_policy(fn) if isinstance(r, dict) and "Ref" in r)
        check(f"[{label}] {name}: may read exactly the secrets its settings name", named == allowed,
              f"settings {named}, policy {allowed}")
        # Quotas of a new account: nothing reserved unless asked.
        reserved = fn["Properties"].get("ReservedConcurrentExecutions")
        if all(mode.params[p] == "0" for p in ("ChatroomMaxConcurrency", "WorkerReservedConcurrency", "StreamMaxConcurrency")):
            check(f"[{label}] {name}: reserves no concurrency", reserved is None, reserved)
        # Migrations before code.
        if not migrate:
            deps = fn.get("DependsOn")
            deps = [deps] if isinstance(deps, str) else deps or []
            check(f"[{label}] {name}: DependsOn Migrations", "Migrations" in deps, deps)
        logs = [r for r in res.values() if r["Type"] == "AWS::Logs::LogGroup"
                and sub_text(r["Properties"].get("LogGroupName")) == f"/aws/lambda/${{{name}}}"]
        check(f"[{label}] {name}: a log group with retention", len(logs) == 1
              and logs[0]["Properties"].get("RetentionInDays") == {"Ref": "LogRetentionDays"})

    # Migrations on deploy.
    mig, fn = res.get("Migrations", {}), functions.get("MigrateFunction", {})
    props = mig.get("Properties", {})
    check(f"[{label}] Migrations: Custom::Migrations served by the migrate function's alias, CodeVersion its version",
          mig.get("Type") == "Custom::Migrations" and props.get("ServiceToken") == {"Ref": "MigrateFunction.Alias"}
          and props.get("CodeVersion") == {"Ref": "MigrateFunction.Version"}
          and fn.get("Properties", {}).get("AutoPublishAlias")
          and fn.get("Metadata", {}).get("BuildProperties", {}).get("Binary") == "migrate", props)
    check(f"[{label}] MigrateFunction: Timeout 300, no async retries, ServiceTimeout covers it",
          fn.get("Properties", {}).get("Timeout") == 300
          and fn["Properties"].get("EventInvokeConfig", {}).get("MaximumRetryAttempts") == 0
          and 300 < int(props.get("ServiceTimeout", 3600)) <= 900)
    if create:
        refs = {t for _, t in references(props)}
        want = {"DatabaseProxyTargetGroup", "PrivateDefaultRouteA", "PrivateDefaultRouteB"}
        check(f"[{label}] Migrations waits for the proxy's target and the NAT routes", want <= refs, sorted(refs))

    # Network and stores.
    if create:
        sg = {k: ingress(res[k]) for k in ("DatabaseProxySecurityGroup", "DatabaseSecurityGroup", "CacheSecurityGroup", "FunctionsSecurityGroup")}
        check(f"[{label}] RDS Proxy admits 5432 from the functions' group only",
              sg["DatabaseProxySecurityGroup"] == [("tcp", 5432, 5432, {"Ref": "FunctionsSecurityGroup"}, None)], sg["DatabaseProxySecurityGroup"])
        check(f"[{label}] the cluster admits 5432 from RDS Proxy only",
              sg["DatabaseSecurityGroup"] == [("tcp", 5432, 5432, {"Ref": "DatabaseProxySecurityGroup"}, None)], sg["DatabaseSecurityGroup"])
        check(f"[{label}] the cache admits 6379 from the functions' group only",
              sg["CacheSecurityGroup"] == [("tcp", 6379, 6379, {"Ref": "FunctionsSecurityGroup"}, None)], sg["CacheSecurityGroup"])
        check(f"[{label}] the functions' group admits nothing", sg["FunctionsSecurityGroup"] == [])
        cluster = res["DatabaseCluster"]["Properties"]
        scaling = cluster.get("ServerlessV2ScalingConfiguration", {})
        check(f"[{label}] Aurora PostgreSQL Serverless v2, database chatroom, encrypted, 0.5 ACU floor",
              cluster.get("Engine") == "aurora-postgresql" and cluster.get("DatabaseName") == "chatroom"
              and cluster.get("StorageEncrypted") is True and scaling.get("MinCapacity") == 0.5
              and scaling.get("MaxCapacity") == {"Ref": "DatabaseMaxCapacity"}
              and res["DatabaseCluster"].get("DeletionPolicy") == "Snapshot"
              and res["DatabaseInstance"]["Properties"].get("DBInstanceClass") == "db.serverless")
        creds = json.dumps(cluster.get("MasterUsername")) + json.dumps(cluster.get("MasterUserPassword"))
        check(f"[{label}] the master user comes from DatabaseCredentialsSecret (dynamic references)",
              creds.count("{{resolve:secretsmanager:${DatabaseCredentialsSecret}:SecretString:") == 2, creds)
        gen = res["DatabaseCredentialsSecret"]["Properties"].get("GenerateSecretString", {})
        check(f"[{label}] the generated password has nothing to escape in a URL",
              gen.get("GenerateStringKey") == "password" and json.loads(gen.get("SecretStringTemplate", "{}")).get("username")
              and (gen.get("ExcludePunctuation") is True or set('"@/\\:?#[]%') <= set(gen.get("ExcludeCharacters", ""))), gen)
        proxy = res["DatabaseProxy"]["Properties"]
        auth = proxy.get("Auth", [{}])[0]
        check(f"[{label}] RDS Proxy: PostgreSQL, TLS required, signs in with the secret",
              proxy.get("EngineFamily") == "POSTGRESQL" and proxy.get("RequireTLS") is True
              and auth.get("SecretArn") == {"Ref": "DatabaseCredentialsSecret"} and auth.get("IAMAuth") == "DISABLED")
        role = json.dumps(res["DatabaseProxyRole"])
        check(f"[{label}] RDS Proxy's role may read the credentials", "secretsmanager:GetSecretValue" in role
              and '{"Ref": "DatabaseCredentialsSecret"}' in role)
        target = res["DatabaseProxyTargetGroup"]["Properties"]
        check(f"[{label}] the proxy's target is the cluster", target.get("DBClusterIdentifiers") == [{"Ref": "DatabaseCluster"}])
        cache = res["Cache"]["Properties"]
        check(f"[{label}] ElastiCache Serverless in the private subnets behind its group",
              cache.get("Engine") in ("valkey", "redis") and cache.get("SecurityGroupIds") == [{"Ref": "CacheSecurityGroup"}]
              and cache.get("SubnetIds") == [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}])
        two = mode.params["NatGateways"] == "2"
        route_b = res["PrivateDefaultRouteB"]["Properties"].get("NatGatewayId")
        check(f"[{label}] zone B's way out: {'its own NAT gateway' if two else 'zone A NAT gateway'}",
              route_b == {"Ref": "NatGatewayB" if two else "NatGatewayA"} and ("NatGatewayB" in res) == two, route_b)

    # Alarms reach a person.
    topic = res["AlarmTopic"]["Properties"]
    key = topic.get("KmsMasterKeyId")
    if mode.params["AlarmTopicEncryption"] == "kms":
        statements = res["AlarmTopicKey"]["Properties"]["KeyPolicy"]["Statement"]
        cw = [s for s in statements if s.get("Principal", {}).get("Service") == "cloudwatch.amazonaws.com"
              and s.get("Effect") == "Allow"]
        actions = set(cw[0]["Action"]) if cw else set()
        check(f"[{label}] the alarm topic's key lets CloudWatch publish (kms:Decrypt, kms:GenerateDataKey*)",
              key == {"Ref": "AlarmTopicKey"} and {"kms:Decrypt", "kms:GenerateDataKey*"} <= actions
              and res["AlarmTopicKey"]["Properties"].get("EnableKeyRotation") is True, key)
        check(f"[{label}] the account administers the alarm key", any(
            "iam::${AWS::AccountId}:root" in json.dumps(s.get("Principal")) and s.get("Action") == "kms:*" for s in statements))
    else:
        check(f"[{label}] the alarm topic is unencrypted", key is None and "AlarmTopicKey" not in res, key)
    check(f"[{label}] never the AWS-managed SNS key", "alias/aws/sns" not in json.dumps(res))
    alarms = {k: v["Properties"] for k, v in res.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    no_action = [k for k, a in alarms.items() if {"Ref": "AlarmTopic"} not in a.get("AlarmActions", [])]
    check(f"[{label}] every alarm notifies the topic", not no_action, no_action)
    dlq = alarms.get("DeadLetterUnsettledAlarm", {})
    check(f"[{label}] dead-letter alarm: records in flight (being redelivered) on the dead-letter queue",
          dlq.get("MetricName") == "ApproximateNumberOfMessagesNotVisible" and dlq.get("Statistic") == "Minimum"
          and dlq.get("Dimensions") == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["ReplyDeadLetterQueue", "QueueName"]}}], dlq)
    visibility = res["ReplyQueue"]["Properties"]["VisibilityTimeout"]
    worker_timeout = functions["ReplyWorkerFunction"]["Properties"]["Timeout"]
    age = template["Parameters"]["ReplyQueueMaxAgeSeconds"]
    check(f"[{label}] queue-age alarm above one retry cycle ({visibility} s + {worker_timeout} s)",
          age["Default"] > visibility + worker_timeout and age["MinValue"] >= visibility + worker_timeout
          and alarms["ReplyQueueAgeAlarm"]["Threshold"] == {"Ref": "ReplyQueueMaxAgeSeconds"}, age)
    capped = mode.params["StreamMaxConcurrency"] != "0"
    if mode.params["MetricMathAlarms"] == "true":
        throttles = alarms["LambdaThrottlesAlarm"]["Metrics"]
        watched = {m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"] for m in throttles if "MetricStat" in m}
        want = {"AuthFunction", "UserFunction", "SubscriptionFunction", "StripeWebhookFunction"} | (set() if capped else {"StreamFunction"})
        ids = {m["Id"] for m in throttles if "MetricStat" in m}
        expr = next(m["Expression"] for m in throttles if "Expression" in m)
        check(f"[{label}] throttle alarm: only functions throttled against design ({'stream capped' if capped else 'stream unreserved'})",
              watched == want and all(f"FILL({i}, 0)" in expr for i in ids), sorted(watched))
        check(f"[{label}] stream concurrency alarm {'at 80% of StreamMaxConcurrency' if capped else 'absent (nothing reserved)'}",
              ("StreamConcurrencyAlarm" in alarms) == capped)
    stream_errors = alarms.get("StreamErrorsAlarm", {})
    check(f"[{label}] stream errors alarm", stream_errors.get("MetricName") == "Errors"
          and stream_errors.get("Dimensions") == [{"Name": "FunctionName", "Value": {"Ref": "StreamFunction"}}])

    # Region-safe CloudFront names.
    names = [json.dumps(res["WebOriginAccessControl"]["Properties"]["OriginAccessControlConfig"].get("Name")),
             json.dumps(res["WebResponseHeaders"]["Properties"]["ResponseHeadersPolicyConfig"].get("Name"))]
    check(f"[{label}] CloudFront names include the region", all("${AWS::Region}" in n for n in names), names)
    return mode


SCENARIOS = [
    ("create, defaults", {}),
    ("existing, defaults", {"DataStores": "existing"}),
    ("existing, own network", {"DataStores": "existing", "SubnetIds": "subnet-1,subnet-2", "SecurityGroupIds": "sg-1"}),
    ("create, two NAT gateways, stream capped, topic unencrypted",
     {"NatGateways": "2", "StreamMaxConcurrency": "50", "AlarmTopicEncryption": "none",
      "ChatroomMaxConcurrency": "500", "WorkerReservedConcurrency": "6"}),
    ("existing, emulator settings", {"DataStores": "existing", "MetricMathAlarms": "false"}),
]

REFUSED = [
    ("create with SubnetIds", {"SubnetIds": "subnet-1", "SecurityGroupIds": "sg-1"}, "CreateModeBuildsItsOwnNetwork"),
    ("existing, SubnetIds without SecurityGroupIds", {"DataStores": "existing", "SubnetIds": "subnet-1"}, "SubnetsNeedSecurityGroups"),
    ("existing, SecurityGroupIds without SubnetIds", {"DataStores": "existing", "SecurityGroupIds": "sg-1"}, "SecurityGroupsNeedSubnets"),
]


def run_checks(template, check):
    base = {"OtpEmailFrom": "noreply@example.com"}
    for label, overrides in SCENARIOS:
        check_mode(template, label, {**base, **overrides}, check)
    for label, overrides, rule in REFUSED:
        failures = Mode(template, {**base, **overrides}).rule_failures()
        check(f"the Rules refuse: {label}", any(f.startswith(rule + ":") for f in failures), failures)
    defaults = template["Parameters"]
    check("defaults: DataStores=create, nothing reserved, one NAT gateway, topic under a key of the stack",
          defaults["DataStores"]["Default"] == "create" and defaults["NatGateways"]["Default"] == "1"
          and all(defaults[p]["Default"] == 0 for p in ("ChatroomMaxConcurrency", "WorkerReservedConcurrency", "StreamMaxConcurrency"))
          and defaults["AlarmTopicEncryption"]["Default"] == "kms")
    check("defaults: the functions refuse plaintext stores (AllowPlaintextStores=false)",
          defaults["AllowPlaintextStores"]["Default"] == "false"
          and template["Globals"]["Function"]["Environment"]["Variables"].get("ALLOW_PLAINTEXT_STORES") == {"Ref": "AllowPlaintextStores"})
