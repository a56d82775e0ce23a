"""The product walked end to end against a running stack: sign up, sign in, chat, stream the
reply, read it back, the conversation controls (models, instructions, regenerate, search,
export), check usage and subscription, delete the chatroom, and close the account (when a
code can be read: response or mailbox sign-in). One line per step;
exits 1 at the first failure. `make smoke` runs it (docs/deployment.md#smoke-test).

Where the stack is (first that is set):
  API_URL and STREAM_URL   base URLs, e.g. http://127.0.0.1:3000/ for `make dev` (the local
                           server serves the stream route itself: STREAM_URL defaults to API_URL)
  STACK                    a CloudFormation stack: its ApiUrl and StreamUrl outputs (boto3,
                           with the caller's AWS credentials and region; with AWS_ENDPOINT_URL
                           set, the stack of a local emulator, whose URLs are translated)

How it signs in without a person reading mail (SMOKE_SIGN_IN, default `auto`):
  response  the code comes back in send-otp's answer (OTP_DELIVERY=response: `make dev`)
  mailbox   the code is read from an emulator's SES mailbox (SMOKE_MAILBOX_URL, e.g.
            http://127.0.0.1:PORT/_ministack/ses/messages): the real SES path end to end
  token     on AWS: a 5-minute access token for the new smoke user, signed with the stack's
            JWT key read from Secrets Manager with the operator's credentials. It grants
            nothing new: whoever can read that key can already sign any token, the deployed
            code has no test-only door, and the token names only the account just created.
  auto      mailbox if SMOKE_MAILBOX_URL is set, else token if STACK is set, else response.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

TIMEOUT = float(os.environ.get("SMOKE_TIMEOUT_SECONDS", "150"))
STARTED = time.monotonic()
STEP = [0]


class Failure(Exception):
    pass


def step(name):
    """Decorator-free step runner: `with step("...")` prints ok/FAIL with the time taken."""

    class Step:
        def __enter__(self):
            STEP[0] += 1
            self.started = time.monotonic()
            self.detail = ""
            return self

        def __exit__(self, kind, error, _tb):
            ms = (time.monotonic() - self.started) * 1000
            if error is None:
                print(f"ok   {STEP[0]:>2} {name}{': ' + self.detail if self.detail else ''} ({ms:.0f} ms)", flush=True)
                return False
            print(f"FAIL {STEP[0]:>2} {name}: {error}", flush=True)
            sys.exit(1)

    return Step()


def request(method, url, body=None, token=None, headers=None, timeout=30):
    """(status, headers, parsed JSON or raw text) of one HTTP call; never raises on 4xx/5xx."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, head, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        status, head, raw = e.code, e.headers, e.read()
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise Failure(f"{method} {url}: {e}") from None
    text = raw.decode(errors="replace")
    try:
        return status, head, json.loads(text) if text else None
    except json.JSONDecodeError:
        return status, head, text


def expect(status, want, body, what):
    if status != want:
        raise Failure(f"{what} answered {status}, wanted {want}: {str(body)[:300]}")


def stack_urls(stack):
    import boto3  # only for STACK=: the tools venv has it (aws-sam-cli)

    cfn = boto3.client("cloudformation")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])}
    api, stream = outputs.get("ApiUrl"), outputs.get("StreamUrl")
    if not api or not stream:
        raise Failure(f"stack {stack} has no ApiUrl/StreamUrl outputs: {sorted(outputs)}")
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        # The emulator serves API Gateway and Function URLs under its own address.
        endpoint = endpoint.rstrip("/")
        api = re.sub(r"^https://([^.]+)\.execute-api\.[^/]+", rf"{endpoint}/_aws/execute-api/\1", api)
        stream = re.sub(r"^https://([^.]+)\.lambda-url\.[^/]+", rf"{endpoint}/_aws/lambda-url/\1", stream)
    return api, stream


def mint_token(stack, user_id):
    import boto3

    cfn = boto3.client("cloudformation")
    arn = cfn.describe_stack_resource(StackName=stack, LogicalResourceId="JwtSecret")["StackResourceDetail"]["PhysicalResourceId"]
    key = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"].encode()
    now = int(time.time())

    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=")

    signing_input = b64({"alg": "HS256", "typ": "JWT"}) + b"." + b64({"sub": user_id, "iat": now, "exp": now + 300, "ver": 0})
    signature = base64.urlsafe_b64encode(hmac.new(key, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


def code_from_mailbox(mailbox, email, deadline, not_code=None):
    """The six-digit code of the newest message to `email` in the emulator's SES mailbox
    (waiting for one other than `not_code`, a code already used)."""
    deadline = min(deadline, time.monotonic() + 20)
    body = None
    while time.monotonic() < deadline:
        status, _, body = request("GET", mailbox)
        if status == 200 and isinstance(body, dict):
            # {"messages": {"<account id>": [{"To": [...], "BodyText": ...}, ...]}}
            messages = [m for per_account in body.get("messages", {}).values() for m in per_account]
            for message in reversed(messages):
                if email in message.get("To", []):
                    found = re.search(r"(?<![0-9])([0-9]{6})(?![0-9])", message.get("BodyText", ""))
                    if found and found.group(1) != not_code:
                        return found.group(1)
                    break
        time.sleep(0.5)
    raise Failure(f"no code for {email} reached {mailbox}: {json.dumps(body)[:600]}")


def read_stream(url, token, deadline):
    """The reply's text from the server-sent events, up to `done` (fails on `error`)."""
    req = urllib.request.Request(url, headers={"authorization": f"Bearer {token}", "accept": "text/event-stream"})
    text, events, event, data = "", 0, None, []
    try:
        resp = urllib.request.urlopen(req, timeout=max(1, deadline - time.monotonic()))
    except urllib.error.HTTPError as e:
        raise Failure(f"GET {url} answered {e.code}: {e.read()[:300]!r}") from None
    with resp:
        if resp.status != 200:
            raise Failure(f"stream answered {resp.status}")
        for raw in resp:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and event:
                payload = json.loads("\n".join(data)) if data else {}
                events += 1
                if event == "delta":
                    text += payload.get("text", "")
                elif event == "reset":
                    text = ""
                elif event == "done":
                    return text, events
                elif event == "error":
                    raise Failure(f"the stream ended with an error event: {payload}")
                event, data = None, []
            if time.monotonic() > deadline:
                break
    raise Failure(f"the stream closed before `done` ({events} events)")


def main():
    stack = os.environ.get("STACK")
    api = os.environ.get("API_URL")
    stream = os.environ.get("STREAM_URL") or api
    with step("stack") as s:
        if not api:
            if not stack:
                raise Failure("set API_URL (and STREAM_URL), or STACK")
            api, stream = stack_urls(stack)
        api, stream = api.rstrip("/") + "/", stream.rstrip("/") + "/"
        s.detail = f"API {api}, stream {stream}"

    mode = os.environ.get("SMOKE_SIGN_IN", "auto")
    mailbox = os.environ.get("SMOKE_MAILBOX_URL")
    email = os.environ.get("SMOKE_EMAIL") or f"smoke+{int(time.time())}-{uuid.uuid4().hex[:6]}@example.com"
    deadline = STARTED + TIMEOUT

    with step("sign up") as s:
        status, _, body = request("POST", api + "auth/signup", {"email": email, "name": "Smoke test"})
        expect(status, 201, body, "POST /auth/signup")
        user_id = body["user"]["id"]
        s.detail = f"{email}, user {user_id}"

    if mode == "auto":
        mode = "mailbox" if mailbox else ("token" if stack else "response")
    with step(f"sign in ({mode})") as s:
        if mode == "token":
            if not stack:
                raise Failure("SMOKE_SIGN_IN=token needs STACK (the JWT key is read from its secret)")
            token = mint_token(stack, user_id)
            s.detail = "a 5-minute token signed with the stack's JWT key (Secrets Manager)"
        elif mode in ("response", "mailbox"):
            status, _, body = request("POST", api + "auth/send-otp", {"email": email})
            expect(status, 200, body, "POST /auth/send-otp")
            if mode == "response":
                code = body.get("otp")
                if not code:
                    raise Failure("send-otp returned no code: the stack does not run OTP_DELIVERY=response (set SMOKE_SIGN_IN)")
                s.detail = "code from send-otp's answer (OTP_DELIVERY=response)"
            else:
                if not mailbox:
                    raise Failure("SMOKE_SIGN_IN=mailbox needs SMOKE_MAILBOX_URL")
                code = code_from_mailbox(mailbox, email, deadline)
                s.detail = "code e-mailed through SES, read from the emulator's mailbox"
            status, _, body = request("POST", api + "auth/verify-otp", {"email": email, "otp": code})
            expect(status, 200, body, "POST /auth/verify-otp")
            token = body["access_token"]
        else:
            raise Failure(f"SMOKE_SIGN_IN={mode}: use auto, response, mailbox or token")

    with step("profile") as s:
        status, _, body = request("GET", api + "user/me", token=token)
        expect(status, 200, body, "GET /user/me")
        me = body.get("user", body)
        if me.get("email") != email:
            raise Failure(f"GET /user/me names {me.get('email')}, not {email}")
        s.detail = f"tier {me.get('tier')}"

    with step("create a chatroom") as s:
        status, _, body = request("POST", api + "chatroom", {"name": "Smoke test"}, token)
        expect(status, 201, body, "POST /chatroom")
        room = body["chatroom"]["id"]
        s.detail = room

    with step("send a message") as s:
        key = f"smoke-{uuid.uuid4().hex}"
        status, head, body = request("POST", api + f"chatroom/{room}/message",
                                     {"content": "Smoke test: say hello in one short sentence."}, token,
                                     {"Idempotency-Key": key})
        expect(status, 202, body, "POST /chatroom/{id}/message")
        message = body["message"]["id"]
        s.detail = f"202, message {message}, RateLimit-Remaining {head.get('ratelimit-remaining')}"

    with step("stream the reply to done") as s:
        streamed, events = read_stream(stream + f"chatroom/{room}/messages/{message}/stream", token, deadline)
        s.detail = f"{events} events, {len(streamed)} characters"

    with step("read the reply back") as s:
        status, _, body = request("GET", api + f"chatroom/{room}/messages/{message}?wait=20", token=token, timeout=40)
        expect(status, 200, body, "GET /chatroom/{id}/messages/{message_id}")
        reply = body.get("reply") or {}
        if body["message"]["status"] != "answered" or reply.get("status") != "complete":
            raise Failure(f"message {body['message']['status']}, reply {reply.get('status')}")
        if reply.get("content") != streamed:
            raise Failure(f"the stored reply differs from the streamed one: {reply.get('content')!r} vs {streamed!r}")
        s.detail = f"answered: {reply['content'][:60]!r}"

    with step("models and chatroom instructions") as s:
        status, _, body = request("GET", api + "models", token=token)
        expect(status, 200, body, "GET /models")
        default, choices = body["default"], len(body["models"])
        status, _, body = request("PATCH", api + f"chatroom/{room}",
                                  {"instructions": "Answer in one short sentence.", "model": default}, token)
        expect(status, 200, body, "PATCH /chatroom/{id}")
        if body["chatroom"].get("instructions") != "Answer in one short sentence.":
            raise Failure(f"instructions not kept: {body}")
        s.detail = f"{choices} models, default {default}; instructions set"

    with step("regenerate the reply, streamed to done") as s:
        status, _, body = request("POST", api + f"chatroom/{room}/messages/{message}/regenerate", None, token,
                                  {"Idempotency-Key": f"smoke-regen-{uuid.uuid4().hex}"})
        expect(status, 202, body, "POST /chatroom/{id}/messages/{message_id}/regenerate")
        streamed, events = read_stream(stream + f"chatroom/{room}/messages/{message}/stream", token, deadline)
        status, _, body = request("GET", api + f"chatroom/{room}/messages/{message}?wait=20", token=token, timeout=40)
        expect(status, 200, body, "GET /chatroom/{id}/messages/{message_id}")
        if (body.get("reply") or {}).get("content") != streamed:
            raise Failure(f"the regenerated reply differs from the streamed one: {body}")
        s.detail = f"{events} events, {len(streamed)} characters"

    with step("search") as s:
        status, _, body = request("GET", api + "search?q=smoke", token=token)
        expect(status, 200, body, "GET /search")
        if message not in [hit["message_id"] for hit in body.get("results", [])]:
            raise Failure(f"the message was not found: {body}")
        s.detail = f"{len(body['results'])} results"

    with step("export my data") as s:
        # Served where replies stream (on AWS the stream function's URL: no 6 MB cap).
        status, head, body = request("GET", stream + "user/export", token=token, timeout=60)
        expect(status, 200, body, "GET /user/export")
        rooms = body.get("chatrooms", []) if isinstance(body, dict) else []
        if body.get("account", {}).get("email") != email or [r["id"] for r in rooms] != [room]:
            raise Failure(f"the export does not hold this account's chatroom: {str(body)[:300]}")
        s.detail = f"{len(rooms[0]['messages'])} messages, {head.get('content-disposition')}"

    with step("usage and subscription") as s:
        status, _, body = request("GET", api + "subscription/status", token=token)
        expect(status, 200, body, "GET /subscription/status")
        usage = body.get("usage", {})
        # The send and the regenerate.
        if body.get("tier") != "basic" or body.get("status") != "none" or usage.get("used_today") != 2:
            raise Failure(f"wanted tier basic, status none, used_today 2: {body}")
        s.detail = f"tier basic, {usage['used_today']} of {usage.get('daily_limit')} used today"

    with step("delete the chatroom") as s:
        status, _, body = request("DELETE", api + f"chatroom/{room}", token=token)
        expect(status, 204, body, "DELETE /chatroom/{id}")
        status, _, body = request("GET", api + f"chatroom/{room}", token=token)
        expect(status, 404, body, "GET /chatroom/{id} after delete")
        s.detail = "204, then 404"

    with step("close the account") as s:
        if mode not in ("response", "mailbox"):
            s.detail = "skipped: it needs a code (SMOKE_SIGN_IN response or mailbox)"
        else:
            # A new code: the sign-in's is used, and codes are at least
            # OTP_MIN_INTERVAL_SECONDS apart (429 + Retry-After until then).
            for _ in range(3):
                status, head, body = request("POST", api + "auth/send-otp", {"email": email})
                if status != 429:
                    break
                time.sleep(min(int(head.get("retry-after") or 5), 35))
            expect(status, 200, body, "POST /auth/send-otp")
            new_code = body.get("otp") if mode == "response" else code_from_mailbox(mailbox, email, deadline, code)
            status, _, body = request("DELETE", api + "user/me", {"otp": new_code}, token)
            expect(status, 204, body, "DELETE /user/me")
            status, _, body = request("GET", api + "user/me", token=token)
            expect(status, 401, body, "GET /user/me after DELETE /user/me")
            s.detail = "204, then the token is refused (401)"

    print(f"smoke: passed in {time.monotonic() - STARTED:.1f} s", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Failure as e:  # outside a step (should not happen)
        print(f"FAIL {e}")
        sys.exit(1)
