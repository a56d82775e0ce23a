// `make deploy-web` (scripts/deploy-web.sh) against a stand-in `aws` command on PATH that
// answers describe-stacks with sample outputs and records what it is asked to do: the
// generated config.json, the files uploaded, the bucket and the invalidation.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const ROOT = path.resolve(import.meta.dirname, "../..");

function fakeAws(dir, outputs) {
  fs.writeFileSync(path.join(dir, "outputs.json"), JSON.stringify(outputs));
  const script = `#!/usr/bin/env bash
set -euo pipefail
echo "$*" >>"${dir}/calls"
case "$1 $2" in
  "cloudformation describe-stacks") cat "${dir}/outputs.json" ;;
  "s3 sync") rm -rf "${dir}/site"; cp -R "$3" "${dir}/site" ;;
  "cloudfront create-invalidation") echo I123 ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac
`;
  fs.writeFileSync(path.join(dir, "aws"), script, { mode: 0o755 });
}

// A scratch folder removed when the test ends, pass or fail.
function scratch(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "deploy-web-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function deploy(dir) {
  return execFileSync("bash", ["scripts/deploy-web.sh"], {
    cwd: ROOT,
    env: { ...process.env, PATH: `${dir}:${process.env.PATH}`, STACK_NAME: "web-test", AWS_REGION: "eu-west-1" },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
}

const OUTPUTS = [
  { OutputKey: "ApiUrl", OutputValue: "https://abc.execute-api.eu-west-1.amazonaws.com" },
  { OutputKey: "StreamUrl", OutputValue: "https://xyz.lambda-url.eu-west-1.on.aws/" },
  { OutputKey: "WebBucketName", OutputValue: "web-bucket-1" },
  { OutputKey: "WebDistributionId", OutputValue: "E2ABC" },
  { OutputKey: "WebUrl", OutputValue: "https://d111.cloudfront.net" },
];

test("deploy-web uploads web/ with a config.json from the stack outputs, then invalidates", (t) => {
  const dir = scratch(t);
  fakeAws(dir, OUTPUTS);
  deploy(dir);
  const config = JSON.parse(fs.readFileSync(path.join(dir, "site/config.json"), "utf8"));
  assert.deepEqual(config, {
    api_url: "https://abc.execute-api.eu-west-1.amazonaws.com",
    stream_url: "https://xyz.lambda-url.eu-west-1.on.aws/",
  });
  for (const f of ["style.css", "js/app.js", "js/api.js", "js/markdown.js"]) {
    assert.equal(fs.readFileSync(path.join(dir, "site", f), "utf8"), fs.readFileSync(path.join(ROOT, "web", f), "utf8"), f);
  }
  // The page may connect to its origin and exactly the stack's API and stream origins
  // (a <meta> policy, enforced with the CloudFront one); otherwise it is web/index.html.
  const page = fs.readFileSync(path.join(dir, "site/index.html"), "utf8");
  const meta =
    `  <meta http-equiv="Content-Security-Policy" content="connect-src 'self' ` +
    `https://abc.execute-api.eu-west-1.amazonaws.com https://xyz.lambda-url.eu-west-1.on.aws">\n`;
  assert.ok(page.includes(meta), page.slice(0, 300));
  assert.equal(page.replace(meta, ""), fs.readFileSync(path.join(ROOT, "web/index.html"), "utf8"));
  const calls = fs.readFileSync(path.join(dir, "calls"), "utf8").trim().split("\n");
  assert.match(calls[0], /^cloudformation describe-stacks --stack-name web-test /);
  assert.match(calls[1], /^s3 sync \S+ s3:\/\/web-bucket-1\/ --delete --cache-control no-cache/);
  assert.match(calls[2], /^cloudfront create-invalidation --distribution-id E2ABC --paths \/\*/);
  // The checked-in local config is untouched.
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(ROOT, "web/config.json"), "utf8")), { api_url: "", stream_url: "" });
});

test("a stack without live replies gets an empty stream_url; one without the web block is refused", (t) => {
  const dir = scratch(t);
  fakeAws(dir, OUTPUTS.filter((o) => o.OutputKey !== "StreamUrl"));
  deploy(dir);
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, "site/config.json"), "utf8")).stream_url, "");
  assert.match(
    fs.readFileSync(path.join(dir, "site/index.html"), "utf8"),
    /content="connect-src 'self' https:\/\/abc\.execute-api\.eu-west-1\.amazonaws\.com">/,
  );

  const bare = scratch(t);
  fakeAws(bare, OUTPUTS.filter((o) => o.OutputKey === "ApiUrl"));
  assert.throws(() => deploy(bare), /no ApiUrl\/WebBucketName\/WebDistributionId output/);
  assert.ok(!fs.existsSync(path.join(bare, "site")), "nothing uploaded");
});
