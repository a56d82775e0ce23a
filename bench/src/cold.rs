//! Cold start and memory: each function's binary started fresh under a minimal Lambda
//! Runtime API, its init and first response against a hello-world's, and its peak RSS.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{FUNCTIONS, Fixture, Settings, ms};
use crate::report::Report;
use crate::runtime_api;

/// An API Gateway HTTP API (payload 2.0) event, as Lambda hands it to a function.
fn http_event(
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: Value,
    body: Option<String>,
) -> String {
    let mut h = json!({ "content-type": "application/json", "host": "bench" });
    if let Some(t) = token {
        h["authorization"] = json!(format!("Bearer {t}"));
    }
    if let Value::Object(extra) = headers {
        for (k, v) in extra {
            h[k] = v;
        }
    }
    json!({
        "version": "2.0", "routeKey": format!("{method} {path}"), "rawPath": path, "rawQueryString": "",
        "headers": h,
        "requestContext": { "accountId": "1", "apiId": "bench", "domainName": "bench", "domainPrefix": "bench",
            "http": { "method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench" },
            "requestId": "r", "routeKey": format!("{method} {path}"), "stage": "$default", "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 0 },
        "body": body, "isBase64Encoded": false
    })
    .to_string()
}

/// Each function, and a hello-world beside them, started afresh `runs` times for one
/// event; then once more for `invocations` events in a row.
pub async fn run(s: &Settings, f: &Fixture, report: &mut Report) -> anyhow::Result<()> {
    let runs = if s.quick { 3 } else { 10 };
    let invocations = if s.quick { 20 } else { 300 };
    let base_env: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), s.database_url.clone()),
        ("REDIS_URL".into(), s.redis_url.clone()),
        ("REDIS_KEY_PREFIX".into(), "bench:".into()),
        ("JWT_SECRET_KEY".into(), s.jwt_secret.clone()),
        // The auth function's own code-hashing key (required inside Lambda).
        (
            "OTP_HASH_KEY".into(),
            format!("{}-otp-hash-key", s.jwt_secret),
        ),
        // The bench's stores are local and plaintext; deployed functions require TLS.
        ("ALLOW_PLAINTEXT_STORES".into(), "true".into()),
        ("STRIPE_WEBHOOK_SECRET".into(), s.webhook_secret.clone()),
        ("GOOGLE_API_KEY".into(), "bench-key".into()),
        ("GEMINI_BASE_URL".into(), "http://127.0.0.1:9".into()),
    ];
    let token = f.token.clone();
    let secret = s.webhook_secret.clone();
    let event_for = move |function: &str| -> String {
        match function {
            "hello" => http_event("GET", "/", None, json!({}), None),
            "auth" => http_event("POST", "/auth/send-otp", None, json!({}),
                Some(json!({ "email": format!("cold-{}@example.com", Uuid::new_v4().simple()) }).to_string())),
            "user" => http_event("GET", "/user/me", Some(&token), json!({}), None),
            "chatroom" => http_event("GET", "/chatroom", Some(&token), json!({}), None),
            "subscription" => http_event("GET", "/subscription/status", Some(&token), json!({}), None),
            "stripe-webhook" => {
                let now = chrono::Utc::now().timestamp();
                let body = json!({ "id": format!("evt_{}", Uuid::new_v4().simple()), "type": "bench.ignored", "created": now,
                    "data": { "object": {} } }).to_string();
                let sig = shared::billing::webhook::sign(body.as_bytes(), &secret, now);
                http_event("POST", "/webhook/stripe", None, json!({ "stripe-signature": sig }), Some(body))
            }
            "reply-worker" => json!({ "Records": [{ "messageId": "m1", "receiptHandle": "r", "eventSource": "aws:sqs",
                "body": json!({ "message_id": Uuid::new_v4() }).to_string(), "attributes": { "ApproximateReceiveCount": "1" },
                "messageAttributes": {} }] }).to_string(),
            other => panic!("unknown function {other}"),
        }
    };
    let mut hello_init = Vec::new();
    for function in std::iter::once("hello").chain(FUNCTIONS) {
        let binary = format!("{}/{function}", s.bin_dir);
        let (mut init, mut first) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let run = runtime_api::run(&binary, &base_env, vec![event_for(function)]).await?;
            let answer = &run.responses[0];
            anyhow::ensure!(!answer.starts_with("ERROR"), "{function} failed: {answer}");
            if function != "hello" && function != "reply-worker" {
                let status = serde_json::from_str::<Value>(answer)?["statusCode"]
                    .as_u64()
                    .unwrap_or(0);
                anyhow::ensure!(
                    (200..300).contains(&status),
                    "{function} answered {status}: {answer}"
                );
            }
            init.push(ms(run.init));
            first.push(ms(run.first_response));
        }
        if function == "hello" {
            hello_init = init.clone();
        } else {
            let ratio: Vec<f64> = init.iter().zip(&hello_init).map(|(a, b)| a / b).collect();
            report.add(
                1,
                "cold start",
                &format!("{function}: init / hello-world init"),
                "×",
                ratio,
            );
        }
        report.add(
            1,
            "cold start",
            &format!("{function}: init (start → first poll)"),
            "ms",
            init,
        );
        report.add(
            1,
            "cold start",
            &format!("{function}: first response"),
            "ms",
            first,
        );

        // Peak memory over many sequential invocations (one container serves one at a time).
        let events = (0..invocations).map(|_| event_for(function)).collect();
        let run = runtime_api::run(&binary, &base_env, events).await?;
        report.add(
            4,
            "memory",
            &format!("{function}: peak RSS after {invocations} invocations"),
            "MB",
            vec![run.peak_rss_kb as f64 / 1024.0],
        );
    }
    Ok(())
}
