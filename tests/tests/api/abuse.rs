//! Abuse and security: brute force, flooding, cross-user access, hostile input.

use std::sync::Arc;

use api_tests::{TestApp, gemini_path, gemini_text, unique_email};
use axum::http::{Method, StatusCode};
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

#[tokio::test]
async fn parallel_otp_brute_force_never_logs_in_and_burns_the_code() {
    let app = Arc::new(TestApp::spawn().await);
    let email = unique_email("brute");
    app.signup(&email, None).await;
    let code = app.request_otp(&email).await;
    let mut tasks = Vec::new();
    for guess in 0..60u32 {
        let guess = format!("{:06}", (guess * 7919 + 13) % 1_000_000);
        if guess == code {
            continue;
        }
        let (app, email) = (app.clone(), email.clone());
        tasks.push(tokio::spawn(async move {
            app.post("/auth/verify-otp", json!({ "email": email, "otp": guess }))
                .await
        }));
    }
    let guesses = tasks.len();
    let (mut wrong, mut refused) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.body.get("access_token").is_none());
        match r.status {
            StatusCode::UNAUTHORIZED => {
                assert_eq!(r.error_code(), "invalid_otp");
                wrong += 1;
            }
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("{other}: {}", r.body),
        }
    }
    assert_eq!(wrong, 20, "one source's budget: 20 wrong tries a day");
    assert_eq!(wrong + refused, guesses);
    // The code was burned at its fifth wrong try: useless even from another source.
    let r = app
        .post_from(
            "203.0.113.50",
            "/auth/verify-otp",
            json!({ "email": email, "otp": code }),
        )
        .await;
    assert_eq!(r.error_code(), "invalid_otp", "the code is burned");
}

#[tokio::test]
async fn nobody_can_lock_the_owner_out() {
    let app = TestApp::spawn().await;
    let email = unique_email("lockout");
    app.signup(&email, None).await;
    // A stranger: 25 wrong codes at the address from one source.
    let mut refused = 0;
    for i in 0..25 {
        let guess = json!({ "email": email, "otp": format!("{:06}", 100_000 + i) });
        let r = app
            .post_from("198.51.100.9", "/auth/verify-otp", guess)
            .await;
        match r.status {
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            _ => assert_eq!(r.error_code(), "invalid_otp"),
        }
    }
    assert_eq!(refused, 5, "past its 20, the stranger's source is refused");
    // The owner, from another source, asks for a fresh code and signs in with it.
    let code = app.request_otp(&email).await;
    assert_eq!(
        code.len(),
        6,
        "20 wrong tries do not put an address under attack"
    );
    let r = app
        .post_from(
            "203.0.113.7",
            "/auth/verify-otp",
            json!({ "email": email, "otp": code }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn an_address_under_attack_gets_long_codes_and_the_owner_still_signs_in() {
    let app = TestApp::spawn_with(|c| c.otp_min_interval_secs = 0).await;
    let email = unique_email("attacked");
    app.signup(&email, None).await;
    assert_eq!(app.request_otp(&email).await.len(), 6);
    // Many sources, 20 wrong tries each: 60 at the address in all.
    for source in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        for i in 0..20 {
            let guess = json!({ "email": email, "otp": format!("{:06}", 200_000 + i) });
            let r = app.post_from(source, "/auth/verify-otp", guess).await;
            assert_eq!(r.error_code(), "invalid_otp", "{source} try {i}");
        }
    }
    // Now codes are 12 digits (a guess is one in 10^12), and the owner signs in with one.
    let code = app.request_otp(&email).await;
    assert_eq!(code.len(), 12, "{code}");
    let spaced = format!("{} {}", &code[..6], &code[6..]);
    let r = app
        .post_from(
            "203.0.113.7",
            "/auth/verify-otp",
            json!({ "email": email, "otp": spaced }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn password_failures_only_are_counted_and_per_source() {
    let app = TestApp::spawn().await;
    let email = unique_email("pwbudget");
    let password = "the-right-password-1";
    app.signup(&email, Some(password)).await;
    // Prove the address (a password works only after a first code).
    let r = app.verify_with_password(&email, Some(password)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let login = |pw: &str| json!({ "email": email, "password": pw });
    // 25 right sign-ins do not use the budget up (20 per 15 minutes).
    for _ in 0..25 {
        let r = app
            .post_from("203.0.113.7", "/auth/login", login(password))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    // A stranger's wrong passwords from one source spend that source's budget only.
    let mut refused = 0;
    for _ in 0..25 {
        let r = app
            .post_from("198.51.100.9", "/auth/login", login("a-wrong-guess-99"))
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    assert_eq!(refused, 5);
    let r = app
        .post_from("203.0.113.7", "/auth/login", login(password))
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the owner is not locked out: {}",
        r.body
    );
}

#[tokio::test]
async fn send_otp_flood_issues_one_code() {
    let app = Arc::new(TestApp::spawn().await);
    let email = unique_email("flood");
    app.signup(&email, None).await;
    let mut tasks = Vec::new();
    for _ in 0..25 {
        let (app, email) = (app.clone(), email.clone());
        tasks.push(tokio::spawn(async move {
            app.post("/auth/send-otp", json!({ "email": email })).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => assert!(r.headers.contains_key("retry-after")),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn hostile_and_unicode_input_is_stored_byte_exact() {
    let app = TestApp::spawn().await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_text("ok")))
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("hostile")).await;
    app.set_tier(&token, "pro").await;
    let name = "Robert'); DROP TABLE chatrooms;-- 🚀";
    let room = app.create_chatroom(&token, Some(name)).await;
    let samples = [
        "'; DROP TABLE messages; --",
        "1 OR 1=1; SELECT * FROM users WHERE ''=''",
        "$1 $$ \\x00 %s %n {{7*7}} ${jndi:ldap://x}",
        "👩‍👩‍👧‍👦 family, e\u{301} combining, \u{202e}rtl override\u{202c}, zero\u{200b}width",
        "مرحبا بالعالم — שלום — こんにちは — 你好",
        "line1\nline2\r\n\ttabbed \"quoted\" <script>alert(1)</script>",
        "\u{10ffff}\u{fffd}",
    ];
    for content in samples {
        let r = app.send_message(&token, &room, content).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{content:?}: {}", r.body);
        assert_eq!(r.body["message"]["content"], content);
    }
    let r = app.get(&format!("/chatroom/{room}"), &token).await;
    assert_eq!(r.body["chatroom"]["name"], name);
    let stored: Vec<&str> = r.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(stored, samples.to_vec());
    let tables = app.count("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('messages', 'chatrooms', 'users')").await;
    assert_eq!(tables, 3);

    // NUL cannot be stored in PostgreSQL text: a clear 422, not a 500.
    let r = app.send_message(&token, &room, "nul \u{0} inside").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .call(
            Method::POST,
            "/chatroom",
            Some(json!({ "name": "a\u{0}b" })),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .post(
            "/auth/signup",
            json!({ "email": unique_email("nul"), "name": "x\u{0}y" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn messages_cannot_be_reached_across_users_or_chatrooms() {
    let app = TestApp::spawn().await;
    let alice = app.user_token(&unique_email("alice")).await;
    let bob = app.user_token(&unique_email("bob")).await;
    let alice_room = app.create_chatroom(&alice, Some("a")).await;
    let alice_other_room = app.create_chatroom(&alice, Some("a2")).await;
    let bob_room = app.create_chatroom(&bob, Some("b")).await;
    let sent = app
        .send_message(&alice, &alice_room, "alice's secret")
        .await;
    let msg = sent.body["message"]["id"].as_str().unwrap().to_string();

    // Bob, through his own chatroom, with Alice's message id.
    let r = app
        .get(&format!("/chatroom/{bob_room}/messages/{msg}"), &bob)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Alice's message through Alice's other chatroom: also not found.
    let r = app
        .get(
            &format!("/chatroom/{alice_other_room}/messages/{msg}"),
            &alice,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A cursor from another chatroom is refused, not used.
    let r = app
        .get(&format!("/chatroom/{bob_room}/messages?before={msg}"), &bob)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!r.body.to_string().contains("secret"));
    // Idempotency keys are per user: Bob reusing Alice's key gets his own message.
    for (token, room) in [(&alice, &alice_room), (&bob, &bob_room)] {
        let req = axum::http::Request::post(format!("/chatroom/{room}/message"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("idempotency-key", "shared-key")
            .body(axum::body::Body::from(
                json!({ "content": "mine" }).to_string(),
            ))
            .unwrap();
        let r = app.send(req).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        assert!(r.headers.get("idempotent-replayed").is_none());
    }
    // Each user's status shows only their own usage.
    let a = app.get("/subscription/status", &alice).await;
    let b = app.get("/subscription/status", &bob).await;
    assert_eq!(a.body["usage"]["used_today"], 2);
    assert_eq!(b.body["usage"]["used_today"], 1);
}
