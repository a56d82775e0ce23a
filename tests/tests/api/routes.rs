//! The routers, the SAM template and the `cargo lambda watch` router agree on every route.

use std::collections::BTreeSet;

use api_tests::TestApp;
use axum::http::{Method, StatusCode};

type RouteSet = BTreeSet<(String, String, String)>;

fn functions() -> Vec<(&'static str, &'static [(&'static str, &'static str)])> {
    vec![
        ("auth", auth_fn::ROUTES),
        ("user", user_fn::ROUTES),
        ("chatroom", chatroom_fn::ROUTES),
        ("subscription", subscription_fn::ROUTES),
        ("stripe-webhook", stripe_webhook_fn::ROUTES),
        ("stream", stream_fn::ROUTES),
    ]
}

/// Served by a Function URL of its own rather than by the HTTP API.
const FUNCTION_URL_ONLY: &str = "stream";

fn declared() -> RouteSet {
    functions()
        .into_iter()
        .flat_map(|(f, routes)| {
            routes
                .iter()
                .map(move |(m, p)| (f.to_string(), m.to_string(), p.to_string()))
        })
        .collect()
}

fn repo_file(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// (function binary, method, path) for every HttpApi event in template.yaml. The
/// template is written with one `Path:` then `Method:` per event, under a function
/// whose `Metadata.BuildProperties.Binary` names its binary.
fn template_routes() -> RouteSet {
    let text = repo_file("template.yaml");
    let mut out = BTreeSet::new();
    let mut binary = String::new();
    let mut path = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(b) = t.strip_prefix("Binary: ") {
            binary = b.to_string();
        } else if let Some(p) = t.strip_prefix("Path: ") {
            path = Some(p.to_string());
        } else if let Some(m) = t.strip_prefix("Method: ") {
            out.insert((
                binary.clone(),
                m.to_string(),
                path.take().expect("Path before Method"),
            ));
        }
    }
    out
}

#[test]
fn template_routes_match_the_routers() {
    let template = template_routes();
    let code: RouteSet = declared()
        .into_iter()
        .filter(|(f, _, _)| f != FUNCTION_URL_ONLY)
        .collect();
    assert!(!code.is_empty());
    let missing: Vec<_> = code.difference(&template).collect();
    let extra: Vec<_> = template.difference(&code).collect();
    assert!(
        missing.is_empty(),
        "routes served but not in template.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "routes in template.yaml but not served: {extra:?}"
    );
}

/// The stream function answers through a streaming Function URL (HTTP APIs buffer).
#[test]
fn stream_function_has_a_streaming_function_url() {
    let text = repo_file("template.yaml");
    let start = text
        .find("Binary: stream\n")
        .expect("a function built from the stream binary");
    let function = &text[start..];
    let function = &function[..function.find("\n\n  ").unwrap_or(function.len())];
    assert!(!function.contains("Type: HttpApi"), "{function}");
    for needle in [
        "FunctionUrlConfig:",
        "AuthType: NONE",
        "InvokeMode: RESPONSE_STREAM",
        "AllowOrigins: !If",
        "[!Ref FrontendUrl, !Sub \"https://${WebDistribution.DomainName}\"]",
        "STREAM_MAX_SECONDS:",
    ] {
        assert!(function.contains(needle), "missing {needle}:\n{function}");
    }
    assert!(text.contains("!GetAtt StreamFunctionUrl.FunctionUrl"));
}

#[test]
fn cargo_lambda_watch_router_matches_the_routers() {
    let toml = repo_file("Cargo.toml");
    let section = toml
        .split("[workspace.metadata.lambda.watch.router]")
        .nth(1)
        .expect("a watch router section");
    let watch: BTreeSet<(String, String)> = section
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once(" = "))
        .map(|(p, f)| {
            (
                f.trim_matches('"').to_string(),
                p.trim_matches('"').to_string(),
            )
        })
        .collect();
    let code: BTreeSet<(String, String)> = declared().into_iter().map(|(f, _, p)| (f, p)).collect();
    assert_eq!(watch, code);
}

fn concrete(path: &str) -> String {
    path.replace("{id}", &uuid::Uuid::new_v4().to_string())
        .replace("{message_id}", &uuid::Uuid::new_v4().to_string())
}

#[tokio::test]
async fn every_declared_route_is_served_and_nothing_else_on_its_paths() {
    let app = TestApp::spawn().await;
    let all = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    for (function, routes) in functions() {
        for (method, path) in routes {
            let r = app
                .call(method.parse().unwrap(), &concrete(path), None, None)
                .await;
            assert_ne!(
                r.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{function}: {method} {path}"
            );
            assert_ne!(
                r.body["error"]["message"], "no such route",
                "{function}: {method} {path} is not served"
            );
            let declared: Vec<&str> = routes
                .iter()
                .filter(|(_, p)| p == path)
                .map(|(m, _)| *m)
                .collect();
            for other in all.iter().filter(|m| !declared.contains(&m.as_str())) {
                let r = app.call(other.clone(), &concrete(path), None, None).await;
                assert_eq!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{function}: undeclared {other} {path}"
                );
            }
        }
    }
}
