//! Every integration test in one binary: each test binary links the whole stack
//! (AWS SDKs, Stripe, Postgres, Redis), so one binary instead of eleven saves most
//! of the link time and disk of `make test`.

mod abuse;
mod auth;
mod billing;
mod chat;
mod events;
mod faults;
mod openapi;
mod quota;
mod routes;
mod stream;
mod unavailable;
mod web;
mod worker;
