//! Every integration test in one binary: each test binary links the whole stack
//! (AWS SDKs, Stripe, Postgres, Redis), so one binary instead of eleven saves most
//! of the link time and disk of `make test`.

mod abuse;
mod account;
mod activity;
mod auth;
mod batched_reads;
mod billing;
mod billing_truth;
mod chat;
mod cluster;
mod controls;
mod cors;
mod events;
mod faults;
mod gemini_stream;
mod history;
mod idempotency;
mod keys;
mod logs;
mod migrate;
mod openapi;
mod panics;
mod quota;
mod routes;
mod search;
mod secrets;
mod signin;
mod stream;
mod sweeper;
mod tls;
mod unavailable;
mod web;
mod worker;
