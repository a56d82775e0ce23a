//! The auth function end to end, against real PostgreSQL and Redis.

use api_tests::{JWT_SECRET, TestApp, unique_email};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

#[tokio::test]
async fn signup_creates_user_and_rejects_duplicates() {
    let app = TestApp::spawn().await;
    let email = unique_email("signup");
    let r = app.signup(&email.to_uppercase(), Some("password123")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["user"]["email"], email);
    assert_eq!(r.body["user"]["tier"], "basic");
    assert_eq!(r.body["user"]["name"], "Test User");
    assert!(r.body["user"]["id"].is_string());
    assert!(r.body["user"].get("password_hash").is_none());

    let again = app.signup(&email, None).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "email_taken");
}

#[tokio::test]
async fn signup_validates_input_and_changes_nothing() {
    let app = TestApp::spawn().await;
    for (body, why) in [
        (json!({ "email": "not-an-email" }), "bad email"),
        (
            json!({ "email": unique_email("short"), "password": "1234567" }),
            "short password",
        ),
        (
            json!({ "email": unique_email("name"), "name": "   " }),
            "blank name",
        ),
        (json!({ "password": "password123" }), "missing email"),
    ] {
        let r = app.post("/auth/signup", body).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{why}: {}",
            r.body
        );
        assert_eq!(r.error_code(), "validation_error", "{why}");
        assert!(r.body["error"]["message"].as_str().unwrap().len() > 3);
    }
    let count = app.count("SELECT count(*) FROM users").await;
    assert_eq!(count, 0);
}

#[tokio::test]
async fn otp_login_flow_and_me() {
    let app = TestApp::spawn().await;
    let email = unique_email("otp");
    app.signup(&email, None).await;
    let r = app.post("/auth/send-otp", json!({ "email": email })).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["expires_in"], 300);
    assert!(r.body["message"].is_string());
    let otp = r.body["otp"].as_str().unwrap().to_string();
    assert_eq!(otp.len(), 6);
    assert!(otp.chars().all(|c| c.is_ascii_digit()));

    let r = app
        .post("/auth/verify-otp", json!({ "email": email, "otp": otp }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 3600);
    let token = r.body["access_token"].as_str().unwrap();

    let me = app.get("/user/me", token).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["email"], email);
    assert_eq!(me.body["tier"], "basic");
    assert_eq!(me.body["name"], "Test User");
    assert!(me.body["created_at"].is_string());
    assert!(me.body["id"].is_string());

    // Single use: the same code again is refused.
    let r = app
        .post("/auth/verify-otp", json!({ "email": email, "otp": otp }))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "invalid_otp");
}

#[tokio::test]
async fn otp_is_stored_only_as_a_hash_with_a_ttl() {
    let app = TestApp::spawn().await;
    let email = unique_email("hash");
    app.signup(&email, None).await;
    let otp = app.request_otp(&email).await;
    let mut conn = app.state.redis.conn();
    let key = app.state.redis.tagged_key("otp", &email, "login");
    let stored: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!stored.is_empty());
    assert!(stored.values().all(|v| !v.contains(&otp)));
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((290..=300).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn unknown_email_gets_the_same_answer_without_a_code() {
    let app = TestApp::spawn().await;
    let known = unique_email("known");
    app.signup(&known, None).await;
    let a = app.post("/auth/send-otp", json!({ "email": known })).await;
    let b = app
        .post("/auth/send-otp", json!({ "email": unique_email("nobody") }))
        .await;
    assert_eq!(a.status, b.status);
    assert_eq!(a.body["message"], b.body["message"]);
    assert!(a.body.get("otp").is_some());
    assert!(b.body.get("otp").is_none());
}

#[tokio::test]
async fn wrong_code_then_burn_after_five_tries() {
    let app = TestApp::spawn().await;
    let email = unique_email("burn");
    app.signup(&email, None).await;
    let otp = app.request_otp(&email).await;
    let wrong = if otp == "000000" { "111111" } else { "000000" };
    for i in 0..5 {
        let r = app
            .post("/auth/verify-otp", json!({ "email": email, "otp": wrong }))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "try {i}");
        assert_eq!(r.error_code(), "invalid_otp", "try {i}");
    }
    // Burned: even the right code no longer works.
    let r = app
        .post("/auth/verify-otp", json!({ "email": email, "otp": otp }))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "invalid_otp");
}

#[tokio::test]
async fn expired_code_is_refused() {
    let app = TestApp::spawn().await;
    let email = unique_email("expire");
    app.signup(&email, None).await;
    let otp = app.request_otp(&email).await;
    // Let Redis expire it, as five minutes would.
    let key = app.state.redis.tagged_key("otp", &email, "login");
    let _: () = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(1)
        .query_async(&mut app.state.redis.conn())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let r = app
        .post("/auth/verify-otp", json!({ "email": email, "otp": otp }))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "invalid_otp");
}

#[tokio::test]
async fn send_otp_is_throttled_with_retry_after() {
    let app = TestApp::spawn().await;
    let email = unique_email("throttle");
    app.signup(&email, None).await;
    app.request_otp(&email).await;
    let r = app.post("/auth/send-otp", json!({ "email": email })).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.error_code(), "too_many_requests");
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "retry-after {retry}");
    // Unknown addresses are throttled alike, so a 429 reveals nothing either.
    let stranger = unique_email("stranger");
    assert_eq!(
        app.post("/auth/send-otp", json!({ "email": stranger }))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.post("/auth/send-otp", json!({ "email": stranger }))
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn hourly_budget_applies() {
    let app = TestApp::spawn_with(|c| {
        c.otp_min_interval_secs = 0;
        c.otp_max_per_hour = 3;
    })
    .await;
    let email = unique_email("hourly");
    app.signup(&email, None).await;
    for _ in 0..3 {
        app.request_otp(&email).await;
    }
    let r = app.post("/auth/send-otp", json!({ "email": email })).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 3000, "retry-after {retry}");
}

#[tokio::test]
async fn password_login() {
    let app = TestApp::spawn().await;
    let email = unique_email("pw");
    app.signup(&email, Some("password123")).await;
    // The first code sign-in proves the address and, carrying it, keeps the password.
    let r = app.verify_with_password(&email, Some("password123")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .post(
            "/auth/login",
            json!({ "email": email, "password": "password123" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(
        app.get("/user/me", r.body["access_token"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK
    );

    let r = app
        .post(
            "/auth/login",
            json!({ "email": email, "password": "wrong-password" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "invalid_credentials");
    let r = app
        .post(
            "/auth/login",
            json!({ "email": unique_email("none"), "password": "password123" }),
        )
        .await;
    assert_eq!(r.error_code(), "invalid_credentials");
    // A code-only account has no password to log in with.
    let codeonly = unique_email("codeonly");
    app.signup(&codeonly, None).await;
    let r = app
        .post(
            "/auth/login",
            json!({ "email": codeonly, "password": "password123" }),
        )
        .await;
    assert_eq!(r.error_code(), "invalid_credentials");
}

#[tokio::test]
async fn change_password_revokes_older_tokens() {
    let app = TestApp::spawn().await;
    let email = unique_email("change");
    let old = app.user_token(&email).await;

    // No password yet: current_password is not needed, but a fresh code is, so a
    // stolen token alone cannot become a lasting password.
    let r = app
        .call(
            Method::POST,
            "/auth/change-password",
            Some(json!({ "new_password": "first-password" })),
            Some(&old),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("otp"));
    let r = app
        .call(
            Method::POST,
            "/auth/change-password",
            Some(json!({ "new_password": "first-password", "otp": "12345x" })),
            Some(&old),
        )
        .await;
    assert_eq!(r.error_code(), "invalid_otp", "no code was requested yet");
    let code = app
        .post("/auth/forgot-password", json!({ "email": email }))
        .await
        .body["otp"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .call(
            Method::POST,
            "/auth/change-password",
            Some(json!({ "new_password": "first-password", "otp": code })),
            Some(&old),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let second = r.body["access_token"].as_str().unwrap().to_string();
    let r = app.get("/user/me", &old).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "unauthorized");
    assert_eq!(app.get("/user/me", &second).await.status, StatusCode::OK);

    // Now a password is set: it is required, and must be right.
    let r = app
        .call(
            Method::POST,
            "/auth/change-password",
            Some(json!({ "new_password": "second-password" })),
            Some(&second),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .call(
            Method::POST,
            "/auth/change-password",
            Some(json!({ "current_password": "not-it-at-all", "new_password": "second-password" })),
            Some(&second),
        )
        .await;
    assert_eq!(r.error_code(), "invalid_credentials");
    let r = app
        .call(
            Method::POST,
            "/auth/change-password",
            Some(json!({ "current_password": "first-password", "new_password": "short" })),
            Some(&second),
        )
        .await;
    assert_eq!(r.error_code(), "validation_error");
    let r = app
        .call(
            Method::POST,
            "/auth/change-password",
            Some(
                json!({ "current_password": "first-password", "new_password": "second-password" }),
            ),
            Some(&second),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        app.get("/user/me", &second).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .post(
            "/auth/login",
            json!({ "email": email, "password": "second-password" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let r = app
        .call(
            Method::POST,
            "/auth/change-password",
            Some(json!({ "new_password": "x-password" })),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forgot_and_reset_password() {
    let app = TestApp::spawn().await;
    let email = unique_email("reset");
    let r = app.signup(&email, Some("original-pass")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app
        .verify_with_password(&email, Some("original-pass"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let before = app
        .post(
            "/auth/login",
            json!({ "email": email, "password": "original-pass" }),
        )
        .await;
    let old_token = before.body["access_token"].as_str().unwrap().to_string();

    let r = app
        .post("/auth/forgot-password", json!({ "email": email }))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["expires_in"], 300);
    let code = r.body["otp"].as_str().unwrap().to_string();
    // A reset code is not a login code.
    let r = app
        .post("/auth/verify-otp", json!({ "email": email, "otp": code }))
        .await;
    assert_eq!(r.error_code(), "invalid_otp");
    // A too-short password is refused without consuming the code.
    let r = app
        .post(
            "/auth/reset-password",
            json!({ "email": email, "otp": code, "new_password": "short" }),
        )
        .await;
    assert_eq!(r.error_code(), "validation_error");
    let r = app
        .post(
            "/auth/reset-password",
            json!({ "email": email, "otp": "999999x", "new_password": "brand-new-pass" }),
        )
        .await;
    assert_eq!(r.error_code(), "invalid_otp");
    let r = app
        .post(
            "/auth/reset-password",
            json!({ "email": email, "otp": code, "new_password": "brand-new-pass" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["message"].is_string());

    assert_eq!(
        app.get("/user/me", &old_token).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .post(
            "/auth/login",
            json!({ "email": email, "password": "original-pass" }),
        )
        .await;
    assert_eq!(r.error_code(), "invalid_credentials");
    let r = app
        .post(
            "/auth/login",
            json!({ "email": email, "password": "brand-new-pass" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Used once.
    let r = app
        .post(
            "/auth/reset-password",
            json!({ "email": email, "otp": code, "new_password": "another-pass" }),
        )
        .await;
    assert_eq!(r.error_code(), "invalid_otp");
    // Throttled like send-otp.
    let r = app
        .post("/auth/forgot-password", json!({ "email": email }))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

fn sign(header: serde_json::Value, claims: serde_json::Value, key: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{h}.{c}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

#[tokio::test]
async fn bad_tokens_are_unauthorized() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("jwt")).await;
    let me = app.get("/user/me", &token).await;
    let id = me.body["id"].as_str().unwrap().to_string();
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64, ver: i32, sub: &str| json!({ "sub": sub, "iat": now - 10, "exp": exp, "ver": ver });
    let hs256 = json!({ "alg": "HS256", "typ": "JWT" });

    // Sanity: a hand-made token with the right key and claims works, so the
    // refusals below are about the one thing each changes.
    let good = sign(
        hs256.clone(),
        claims(now + 600, 0, &id),
        JWT_SECRET.as_bytes(),
    );
    assert_eq!(app.get("/user/me", &good).await.status, StatusCode::OK);

    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({ "alg": "none", "typ": "JWT" }).to_string()),
        URL_SAFE_NO_PAD.encode(claims(now + 600, 0, &id).to_string())
    );
    let cases = [
        ("tampered signature", tampered),
        ("alg none", none),
        (
            "HS512",
            sign(
                json!({ "alg": "HS512", "typ": "JWT" }),
                claims(now + 600, 0, &id),
                JWT_SECRET.as_bytes(),
            ),
        ),
        (
            "wrong key",
            sign(
                hs256.clone(),
                claims(now + 600, 0, &id),
                b"another-secret-another-secret-12345",
            ),
        ),
        (
            "expired",
            sign(
                hs256.clone(),
                claims(now - 120, 0, &id),
                JWT_SECRET.as_bytes(),
            ),
        ),
        (
            "old version",
            sign(
                hs256.clone(),
                claims(now + 600, -1, &id),
                JWT_SECRET.as_bytes(),
            ),
        ),
        (
            "unknown user",
            sign(
                hs256.clone(),
                claims(now + 600, 0, &uuid::Uuid::new_v4().to_string()),
                JWT_SECRET.as_bytes(),
            ),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (why, bad) in cases {
        let r = app.get("/user/me", &bad).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{why}");
        assert_eq!(r.error_code(), "unauthorized", "{why}");
    }
    let r = app.call(Method::GET, "/user/me", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "unauthorized");
    let r = app
        .send(
            Request::get("/user/me")
                .header(header::AUTHORIZATION, format!("Basic {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn malformed_requests_get_the_envelope() {
    let app = TestApp::spawn().await;
    let r = app
        .send(
            Request::post("/auth/signup")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "bad_request");
    let r = app
        .send(
            Request::post("/auth/signup")
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.error_code(), "unsupported_media_type");
    let big = format!("{{\"email\": \"{}\"}}", "a".repeat(1 << 20));
    let r = app
        .send(
            Request::post("/auth/signup")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(big))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error_code(), "payload_too_large");
    let r = app.call(Method::GET, "/auth/signup", None, None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.error_code(), "method_not_allowed");
    let r = app.call(Method::GET, "/no/such/route", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "not_found");
}
