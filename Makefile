.PHONY: dev test smoke emulator test-web deploy-web watch check fmt clippy lint links migrate package arm64-check soak bench bench-quick profile sam-env sam-check

## The web client and the whole API on http://127.0.0.1:3000 (installs and starts what it needs)
dev:
	bash scripts/dev.sh

## Run every test against real services it starts and stops itself (also lints the template)
test:
	bash scripts/test.sh

## The product walked end to end against a stack: `make dev` (default), STACK=name (its
## outputs; AWS credentials), or API_URL=... STREAM_URL=... (docs/deployment.md#smoke-test)
smoke:
	bash scripts/smoke.sh

## sam deploy of the built packages onto a local AWS emulator (ministack), then make smoke
## against it (part of `make test`; needs `sam build` output in .aws-sam/build)
emulator:
	bash scripts/emulator.sh

## The web client's browser tests alone (headless Chromium; part of `make test`)
test-web:
	bash scripts/web-test.sh

## Upload web/ with a generated config.json to the stack's bucket (after `sam deploy`)
deploy-web:
	bash scripts/deploy-web.sh

## Serve the HTTP functions under the Lambda emulator (cargo lambda watch) on :9000
watch:
	bash scripts/watch.sh

## Formatting and lints, as CI runs them, and the docs' links
check: fmt clippy lint links

fmt:
	cargo fmt --all --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

lint:
	bash -c 'source scripts/services.sh && ensure_packages && ensure_tools && cfn-lint template.yaml && SAM_CLI_TELEMETRY=0 sam validate --lint'

## Relative links and #anchors in README.md and docs/*.md (also part of `make test`)
links:
	python3 scripts/check_links.py

## Apply migrations to the database at $$DATABASE_URL (e.g. a deployed one)
migrate:
	cargo run --release -p local-server --bin migrate

## The --env-vars file for `sam local start-api` / `sam local invoke` against `make dev` (.local/sam-env.json)
sam-env:
	bash scripts/sam-env.sh

## sam build (release), then sizes, start-up and EMF output of every function (needs make test's services; make test runs it)
sam-check:
	bash scripts/sam-check.sh

## Release packages for Lambda, one per function, for x86_64 and arm64, with their sizes
package:
	bash scripts/package.sh both

## The arm64 packages started under qemu-user with the sample events (after make package)
arm64-check:
	bash scripts/arm64-check.sh

## A few minutes of concurrent users, then the invariants (not part of `make test`)
soak:
	bash scripts/soak.sh

## Benchmarks: cold start, warm latency, worker, memory, sizes, cost growth (prints a table)
bench:
	bash bench/run.sh

## The same suite, short and on a debug build: proves it works (CI runs this)
bench-quick:
	bash bench/run.sh --quick

## Flame graphs of list, detail and send under the bench's load (perf; bench/results/)
profile:
	bash bench/profile.sh
