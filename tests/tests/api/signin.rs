//! Real sign-in: codes e-mailed through SES (the moto emulator, or a fake SES endpoint
//! that records the SDK's request), proven ownership of an address, the 24-hour
//! wrong-code budget, per-IP throttles and sign-out. Real PostgreSQL and Redis.

use std::net::SocketAddr;

use api_tests::{
    TestApp, aws_endpoint, code_in, ses_app, ses_sent_to, unique_email, verify_ses_identity,
};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use shared::auth::delivery;
use shared::auth::otp::Purpose;
use shared::http::ClientIp;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn retry_after(r: &api_tests::TestResponse) -> u64 {
    r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn code_key_exists(app: &TestApp, purpose: &str, email: &str) -> bool {
    let key = app.state.redis.tagged_key("otp", email, purpose);
    redis::cmd("EXISTS")
        .arg(&key)
        .query_async::<bool>(&mut app.state.redis.conn())
        .await
        .unwrap()
}

#[tokio::test]
async fn ses_end_to_end_code_read_from_the_emulator() {
    let from = unique_email("noreply");
    verify_ses_identity(&from).await;
    let app = ses_app(&aws_endpoint(), &from, None).await;
    let email = unique_email("ses");
    assert_eq!(app.signup(&email, None).await.status, StatusCode::CREATED);

    let r = app.post("/auth/send-otp", json!({ "email": email })).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.get("otp").is_none(),
        "never in the answer: {}",
        r.body
    );
    let sent = ses_sent_to(&email).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (subject, body) = &sent[0];
    assert_eq!(subject, delivery::subject(Purpose::Login));
    assert!(body.contains("5 minutes") && body.contains("ignore this e-mail"));
    let code = code_in(body);

    let r = app
        .post("/auth/verify-otp", json!({ "email": email, "otp": code }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let token = r.body["access_token"].as_str().unwrap();
    let me = app.get("/user/me", token).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["email_verified"], true);

    // The password purpose has its own subject, and an unknown address gets no e-mail.
    let r = app
        .post("/auth/forgot-password", json!({ "email": email }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let sent = ses_sent_to(&email).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].0, delivery::subject(Purpose::PasswordReset));
    // Nor does its timing tell it apart: every answer waits for the same floor.
    let stranger = unique_email("stranger");
    let started = std::time::Instant::now();
    let r = app
        .post("/auth/send-otp", json!({ "email": stranger }))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(started.elapsed() >= shared::auth::SES_ANSWER_FLOOR);
    assert!(ses_sent_to(&stranger).await.is_empty());
}

#[tokio::test]
async fn ses_request_carries_both_bodies_in_utf8() {
    // A fake SES endpoint records exactly what the real SDK sends.
    let fake = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/email/outbound-emails"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "MessageId": "m-1" })))
        .mount(&fake)
        .await;
    let app = ses_app(
        &fake.uri(),
        "Chatroom <noreply@example.com>",
        Some("auth-mail"),
    )
    .await;
    let email = unique_email("bodies");
    app.signup(&email, None).await;
    let r = app.post("/auth/send-otp", json!({ "email": email })).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let requests = fake.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let sent: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(sent["FromEmailAddress"], "Chatroom <noreply@example.com>");
    assert_eq!(sent["Destination"]["ToAddresses"], json!([email]));
    assert_eq!(sent["ConfigurationSetName"], "auth-mail");
    let simple = &sent["Content"]["Simple"];
    assert_eq!(simple["Subject"]["Data"], delivery::subject(Purpose::Login));
    let text = simple["Body"]["Text"]["Data"].as_str().unwrap();
    let html = simple["Body"]["Html"]["Data"].as_str().unwrap();
    for part in [
        &simple["Subject"],
        &simple["Body"]["Text"],
        &simple["Body"]["Html"],
    ] {
        assert_eq!(part["Charset"], "UTF-8");
    }
    assert_eq!(code_in(text), code_in(html));
    assert!(text.contains("sign in") && html.contains("sign in"));
    assert!(!html.contains(&email), "no need to repeat the address");
}

#[tokio::test]
async fn ses_refusing_answers_as_sent_leaves_nothing_valid_and_a_retry_works_at_once() {
    // moto refuses (MessageRejected) a sender that is not a verified identity, as SES does.
    let from = unique_email("unverified-sender");
    let app = ses_app(&aws_endpoint(), &from, None).await;
    let email = unique_email("refused");
    app.signup(&email, None).await;
    let r = app.post("/auth/send-otp", json!({ "email": email })).await;
    // Answered as a sent code (a 503 only for registered addresses would tell them apart).
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        !code_key_exists(&app, "login", &email).await,
        "no code left valid"
    );
    assert!(ses_sent_to(&email).await.is_empty());

    // Back (the identity is verified): the next try goes through straight away, the
    // refused one did not use up the 30-second gap.
    verify_ses_identity(&from).await;
    let r = app.post("/auth/send-otp", json!({ "email": email })).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let sent = ses_sent_to(&email).await;
    assert_eq!(sent.len(), 1);
    let r = app
        .post(
            "/auth/verify-otp",
            json!({ "email": email, "otp": code_in(&sent[0].1) }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn ses_unreachable_or_throttling_leaves_no_code() {
    let app = ses_app("http://127.0.0.1:1", "noreply@example.com", None).await;
    let email = unique_email("unreachable");
    app.signup(&email, None).await;
    let r = app
        .post("/auth/forgot-password", json!({ "email": email }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(!code_key_exists(&app, "reset", &email).await);

    let fake = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .insert_header("x-amzn-errortype", "TooManyRequestsException")
                .set_body_json(json!({ "message": "Maximum sending rate exceeded." })),
        )
        .mount(&fake)
        .await;
    let app = ses_app(&fake.uri(), "noreply@example.com", None).await;
    app.signup(&email, None).await;
    let r = app.post("/auth/send-otp", json!({ "email": email })).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(!code_key_exists(&app, "login", &email).await);
}

#[tokio::test]
async fn registration_must_not_leak_through_sign_in() {
    // SES down: a registered address's e-mail fails, an unknown one's is never sent.
    let app = ses_app("http://127.0.0.1:1", "noreply@example.com", None).await;
    let registered = unique_email("leak-known");
    let unknown = unique_email("leak-unknown");
    app.signup(&registered, Some("a-long-password-1")).await;
    let answer = |r: &api_tests::TestResponse| (r.status, r.body.clone());
    for route in ["/auth/send-otp", "/auth/forgot-password"] {
        let started = std::time::Instant::now();
        let known = app.post(route, json!({ "email": registered })).await;
        let known_took = started.elapsed();
        let started = std::time::Instant::now();
        let other = app.post(route, json!({ "email": unknown })).await;
        let other_took = started.elapsed();
        assert_eq!(answer(&known), answer(&other), "{route}");
        // Both wait for the floor: the timing does not tell them apart either.
        for took in [known_took, other_took] {
            assert!(took >= shared::auth::SES_ANSWER_FLOOR, "{route}: {took:?}");
        }
    }
    // A wrong code: one answer whether or not a code exists (registered) or not.
    app.post("/auth/send-otp", json!({ "email": registered }))
        .await;
    let body = |email: &str| json!({ "email": email, "otp": "000000" });
    let known = app.post("/auth/verify-otp", body(&registered)).await;
    let other = app.post("/auth/verify-otp", body(&unknown)).await;
    assert_eq!(answer(&known), answer(&other));
    assert_eq!(known.error_code(), "invalid_otp");
    // A wrong password: the same too.
    let body = |email: &str| json!({ "email": email, "password": "not-the-password" });
    let known = app.post("/auth/login", body(&registered)).await;
    let other = app.post("/auth/login", body(&unknown)).await;
    assert_eq!(answer(&known), answer(&other));
    // The wrong-code budget runs out alike: 429 after as many tries, for both.
    let mut statuses = Vec::new();
    for email in [&registered, &unknown] {
        let mut n = 0;
        loop {
            n += 1;
            let r = app
                .post(
                    "/auth/verify-otp",
                    json!({ "email": email, "otp": "111111" }),
                )
                .await;
            if r.status == StatusCode::TOO_MANY_REQUESTS || n > 40 {
                statuses.push((n, r.status));
                break;
            }
            assert_eq!(r.error_code(), "invalid_otp");
        }
    }
    assert_eq!(
        statuses[0], statuses[1],
        "registered and unknown alike: {statuses:?}"
    );
}

#[tokio::test]
async fn prehijack_a_password_before_any_code_is_403() {
    let app = TestApp::spawn().await;
    let email = unique_email("hijack-a");
    app.signup(&email, Some("attacker-pass")).await;
    let r = app
        .post(
            "/auth/login",
            json!({ "email": email, "password": "attacker-pass" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.error_code(), "email_not_verified");
    // A wrong password still says only that.
    let r = app
        .post(
            "/auth/login",
            json!({ "email": email, "password": "other-pass" }),
        )
        .await;
    assert_eq!(r.error_code(), "invalid_credentials");
}

#[tokio::test]
async fn prehijack_the_owner_signing_in_by_code_discards_the_strangers_password() {
    let app = TestApp::spawn_with(|c| c.otp_min_interval_secs = 0).await;
    let email = unique_email("hijack-b");
    app.signup(&email, Some("attacker-pass")).await;
    // The owner arrives and signs in by code, knowing nothing of that password.
    let r = app.verify_with_password(&email, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let token = r.body["access_token"].as_str().unwrap();
    let me = app.get("/user/me", token).await;
    assert_eq!(me.body["email_verified"], true);
    assert_eq!(me.body["has_password"], false);
    let r = app
        .post(
            "/auth/login",
            json!({ "email": email, "password": "attacker-pass" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(r.error_code(), "invalid_credentials");
    // Later code sign-ins change nothing more (the owner's token stays valid).
    assert_eq!(
        app.verify_with_password(&email, Some("attacker-pass"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(app.get("/user/me", token).await.status, StatusCode::OK);
}

#[tokio::test]
async fn prehijack_the_owner_keeps_the_password_by_sending_it_with_the_code() {
    let app = TestApp::spawn().await;
    let email = unique_email("hijack-c");
    let r = app.signup(&email, Some("owner-pass-1")).await;
    assert_eq!(r.body["user"]["email_verified"], false);
    let r = app.verify_with_password(&email, Some("owner-pass-1")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .post(
            "/auth/login",
            json!({ "email": email, "password": "owner-pass-1" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let me = app
        .get("/user/me", r.body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(me.body["email_verified"], true);
    assert_eq!(me.body["has_password"], true);
}

#[tokio::test]
async fn twenty_wrong_codes_a_day_across_reissued_codes_then_429_even_when_right() {
    let app = TestApp::spawn_with(|c| {
        c.otp_min_interval_secs = 0;
        c.otp_max_per_hour = 100;
    })
    .await;
    let email = unique_email("budget");
    app.signup(&email, None).await;
    // Four codes, five wrong tries each (each burns its code): 20 wrong in all.
    for round in 0..4 {
        let code = app.request_otp(&email).await;
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for i in 0..5 {
            let r = app
                .post("/auth/verify-otp", json!({ "email": email, "otp": wrong }))
                .await;
            assert_eq!(r.error_code(), "invalid_otp", "round {round} try {i}");
        }
    }
    // The 21st try, with a fresh code and the right one: refused, for about a day.
    let code = app.request_otp(&email).await;
    let r = app
        .post("/auth/verify-otp", json!({ "email": email, "otp": code }))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert_eq!(r.error_code(), "too_many_requests");
    assert!(
        (86_000..=86_400).contains(&retry_after(&r)),
        "{:?}",
        r.headers
    );
    // Password resets draw on the same budget.
    let reset = app
        .post("/auth/forgot-password", json!({ "email": email }))
        .await;
    let r = app
        .post(
            "/auth/reset-password",
            json!({ "email": email, "otp": reset.body["otp"], "new_password": "new-password-1" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    // Another address is untouched.
    let other = unique_email("budget-other");
    app.signup(&other, None).await;
    let r = app.verify_with_password(&other, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn from_ip(app: &TestApp, ip: &str, path: &str, body: Value) -> api_tests::TestResponse {
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .extension(ClientIp(Some(ip.to_string())))
        .body(Body::from(body.to_string()))
        .unwrap();
    app.send(request).await
}

#[tokio::test]
async fn per_ip_throttle_answers_429_with_retry_after() {
    let app = TestApp::spawn_with(|c| {
        c.ip_limits.sign_in_attempts_per_hour = 3;
        c.ip_limits.code_requests_per_hour = 2;
    })
    .await;
    let body = json!({ "email": unique_email("ip"), "password": "wrong-password" });
    for _ in 0..3 {
        let r = from_ip(&app, "198.51.100.7", "/auth/login", body.clone()).await;
        assert_eq!(r.error_code(), "invalid_credentials");
    }
    // Sign-in attempts of any kind share the budget: a code try is refused too.
    let r = from_ip(
        &app,
        "198.51.100.7",
        "/auth/verify-otp",
        json!({ "email": unique_email("ip2"), "otp": "123456" }),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert_eq!(r.error_code(), "too_many_requests");
    assert!((3500..=3600).contains(&retry_after(&r)));
    // Another client is not affected.
    let r = from_ip(&app, "198.51.100.8", "/auth/login", body.clone()).await;
    assert_eq!(r.error_code(), "invalid_credentials");

    // Code requests: different addresses (so the per-address throttle is not what bites).
    for _ in 0..2 {
        let r = from_ip(
            &app,
            "198.51.100.9",
            "/auth/send-otp",
            json!({ "email": unique_email("c") }),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = from_ip(
        &app,
        "198.51.100.9",
        "/auth/forgot-password",
        json!({ "email": unique_email("c") }),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn per_ip_throttle_uses_api_gateway_source_ip() {
    let app = TestApp::spawn_with(|c| c.ip_limits.sign_in_attempts_per_hour = 2).await;
    let event = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../events/auth/login.json"
    ))
    .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        // Parsed as lambda_http does in the function; sourceIp is 203.0.113.10.
        let (parts, body) = lambda_http::request::from_str(&event).unwrap().into_parts();
        let request = Request::from_parts(parts, Body::from(body.to_vec()));
        let router = shared::http::app(auth_fn::routes(app.state.clone()));
        statuses.push(TestApp::send_to(router, request).await.status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test]
async fn per_ip_throttle_uses_the_peer_address_locally() {
    let app = TestApp::spawn_with(|c| c.ip_limits.signups_per_hour = 2).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = local_server::app(app.state.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = client
            .post(format!("http://{addr}/auth/signup"))
            // A client-set header changes nothing: only the peer address counts.
            .header("x-forwarded-for", format!("10.0.0.{}", statuses.len()))
            .json(&json!({ "email": unique_email("peer") }))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [201, 201, 429]);
}

/// Every way a route reads the caller refuses a revoked token: the extractor
/// (`/user/me`), the daily cap's one-statement read with the ownership check (a send),
/// and the detail routes, which read the caller alongside their own queries (in their
/// round trip, or in batches).
#[tokio::test]
async fn a_revoked_token_is_refused_on_every_path_that_reads_the_caller() {
    revoked_token_refused_everywhere(TestApp::spawn().await).await;
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_every_path_with_batched_caller_reads() {
    revoked_token_refused_everywhere(TestApp::spawn_batched().await).await;
}

async fn revoked_token_refused_everywhere(app: TestApp) {
    let token = app.user_token(&unique_email("revoked-paths")).await;
    let room = app.create_chatroom(&token, Some("kept")).await;
    let r = app.send_message(&token, &room, "before the logout").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let user = app.user_id(&token).await;
    let first_page = app.get(&format!("/chatroom/{room}"), &token).await;
    assert_eq!(first_page.status, StatusCode::OK, "{}", first_page.body);
    let r = app
        .call(Method::POST, "/auth/logout", None, Some(&token))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);

    for path in [
        "/user/me".to_string(),
        format!("/chatroom/{room}"),
        format!("/chatroom/{room}/messages"),
    ] {
        let r = app.get(&path, &token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}: {}", r.body);
        assert_eq!(r.error_code(), "unauthorized", "{path}");
    }
    let r = app.send_message(&token, &room, "after the logout").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let stored = app
        .count(&format!(
            "SELECT count(*) FROM messages WHERE user_id = '{user}' AND role = 'user'"
        ))
        .await;
    assert_eq!(stored, 1, "the refused send stored nothing");
    let today = shared::quota::today(chrono::Utc::now());
    let used = app.state.quota.used(user, today).await.unwrap();
    assert_eq!(used, 1, "and counted nothing");
}

#[tokio::test]
async fn logout_revokes_every_earlier_token() {
    let app = TestApp::spawn_with(|c| c.otp_min_interval_secs = 0).await;
    let email = unique_email("logout");
    let first = app.user_token(&email).await;
    let second = app.verify_with_password(&email, None).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .call(Method::POST, "/auth/logout", None, Some(&second))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    for old in [&first, &second] {
        let r = app.get("/user/me", old).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.error_code(), "unauthorized");
    }
    // Signing in again works; a second logout with the revoked token is refused.
    let fresh = app.verify_with_password(&email, None).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.get("/user/me", &fresh).await.status, StatusCode::OK);
    let r = app
        .call(Method::POST, "/auth/logout", None, Some(&second))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app.call(Method::POST, "/auth/logout", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
