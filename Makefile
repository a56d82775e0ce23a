.PHONY: dev test check fmt clippy migrate release

## Run the whole API locally on http://127.0.0.1:3000 (installs and starts what it needs)
dev:
	bash scripts/dev.sh

## Run every test against real services it starts and stops itself
test:
	bash scripts/test.sh

## Formatting and lints, as CI runs them
check: fmt clippy

fmt:
	cargo fmt --all --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

## Apply migrations to the database at $DATABASE_URL (e.g. a deployed one)
migrate:
	cargo run --release -p local-server --bin migrate

release:
	cargo build --release --workspace --bins
