//! TLS to PostgreSQL and Redis, against private servers that accept TLS only, with a CA
//! and server certificate made by the test.

use api_tests::faults::{TempPostgres, TempRedis};
use api_tests::tls::TestCerts;
use api_tests::{TestApp, gemini_path, gemini_text, test_config, unique_email};
use axum::http::StatusCode;
use serde_json::json;
use shared::AppError;
use shared::chat::worker::Outcome;
use shared::config::Secret;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

/// Sign up, sign in with a code (OTP + throttles), list chatrooms twice (cache miss then
/// hit), send a message (daily cap) and let the worker answer it.
async fn full_flow(app: &TestApp) {
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_text("over TLS")))
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("tls")).await;
    let room = app.create_chatroom(&token, Some("secure")).await;
    assert_eq!(
        app.get("/chatroom", &token).await.headers["x-cache"],
        "miss"
    );
    assert_eq!(app.get("/chatroom", &token).await.headers["x-cache"], "hit");
    let r = app.send_message(&token, &room, "hello").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let done = app.run_worker().await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].1, Ok(Outcome::Answered));
    let r = app.get(&format!("/chatroom/{room}"), &token).await;
    assert_eq!(r.body["messages"][1]["content"], "over TLS", "{}", r.body);
    assert_eq!(app.used_today(&token).await, 1);
}

/// A TLS-only PostgreSQL with the schema applied over TLS; returns its `sslmode=require` URL.
async fn tls_postgres(certs: &TestCerts) -> (TempPostgres, String) {
    let pg = TempPostgres::start_tls(certs).await;
    let url = format!("{}?sslmode=require", pg.url());
    shared::store::postgres::migrate(&url, Some(&certs.ca_path()))
        .await
        .expect("migrations apply over TLS");
    (pg, url)
}

#[tokio::test]
async fn postgres_require_with_the_ca_works_end_to_end() {
    let certs = TestCerts::generate();
    let (_pg, url) = tls_postgres(&certs).await;
    let mut config = test_config(&url);
    config.database_ca_file = Some(certs.ca_path());
    let app = TestApp::from_config(config).await;
    full_flow(&app).await;
    let ssl: bool = app
        .db()
        .await
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the connection is encrypted");
}

#[tokio::test]
async fn postgres_without_the_ca_or_without_tls_is_503() {
    let certs = TestCerts::generate();
    let (pg, url) = tls_postgres(&certs).await;
    // A token minted by a working app, so the broken ones fail at the database.
    let mut config = test_config(&url);
    config.database_ca_file = Some(certs.ca_path());
    let good = TestApp::from_config(config).await;
    let token = good.user_token(&unique_email("tlsca")).await;

    // Unknown CA: the handshake fails, and the cause is a TLS one.
    let err = shared::store::postgres::migrate(&url, None)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("UnknownIssuer"),
        "names the cause: {err:#}"
    );
    let without_ca = TestApp::from_config(test_config(&url)).await;
    // sslmode=disable: the server's pg_hba.conf refuses plaintext (SQLSTATE 28000).
    let plaintext =
        TestApp::from_config(test_config(&format!("{}?sslmode=disable", pg.url()))).await;
    for broken in [&without_ca, &plaintext] {
        let r = broken.get("/user/me", &token).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
        assert_eq!(r.error_code(), "database_unavailable");
    }

    // What the log line says for each (tracing writes `cause` and the error text).
    let connect = |url: String, ca: Option<String>| async move {
        let connector = shared::store::postgres::connector(ca.as_deref()).unwrap();
        tokio_postgres::connect(&url, connector).await.map(|_| ())
    };
    let unknown_ca = connect(url.clone(), None).await.unwrap_err();
    assert_eq!(shared::error::connection_failure(&unknown_ca), Some("TLS"));
    let logged = shared::error::error_chain(&unknown_ca);
    assert!(logged.contains("UnknownIssuer"), "{logged}");
    let refused = connect(format!("{}?sslmode=disable", pg.url()), None)
        .await
        .unwrap_err();
    assert_eq!(
        shared::error::connection_failure(&refused),
        Some("authentication or TLS required by the server")
    );
    let logged = shared::error::error_chain(&refused);
    assert!(logged.contains("no encryption"), "{logged}");
    assert!(matches!(
        AppError::from(refused),
        AppError::DatabaseUnavailable
    ));
}

#[tokio::test]
async fn redis_over_tls_with_auth_keeps_the_api_working() {
    let certs = TestCerts::generate();
    let redis = TempRedis::start_tls(&certs).await;
    let database_url = api_tests::fresh_database().await;
    let mut config = test_config(&database_url);
    config.redis_url = Secret::new(redis.tls_url());
    config.redis_ca_file = Some(certs.ca_path());
    let app = TestApp::from_config(config).await;
    full_flow(&app).await;
}

#[tokio::test]
async fn redis_without_the_ca_or_without_tls_or_password_is_503() {
    let certs = TestCerts::generate();
    let redis = TempRedis::start_tls(&certs).await;
    let database_url = api_tests::fresh_database().await;
    let email = unique_email("redistls");
    let mut configs = Vec::new();
    // Unknown CA (only the web PKI roots).
    let mut c = test_config(&database_url);
    c.redis_url = Secret::new(redis.tls_url());
    configs.push(("unknown CA", c));
    // Plaintext to the TLS port.
    let mut c = test_config(&database_url);
    c.redis_url = Secret::new(redis.url());
    configs.push(("plaintext", c));
    // TLS and the CA, but no password.
    let mut c = test_config(&database_url);
    c.redis_url = Secret::new(redis.tls_url().replace(":tls-test-password@", ""));
    c.redis_ca_file = Some(certs.ca_path());
    configs.push(("no password", c));
    for (case, config) in configs {
        let app = TestApp::from_config(config).await;
        if case == "unknown CA" {
            app.signup(&email, None).await;
        }
        let r = app.post("/auth/send-otp", json!({ "email": email })).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{case}: {}",
            r.body
        );
        assert_eq!(r.error_code(), "cache_unavailable", "{case}");
    }
}

/// Two rustls crypto backends in one binary make rustls panic at the first client it
/// builds, unless one is installed as the process default. Builds every client the
/// binaries build (PostgreSQL and Redis over TLS, Stripe, reqwest for Gemini, the AWS
/// SDK for SQS, DynamoDB and Secrets Manager) and checks that aws-lc-rs is the one.
#[tokio::test]
async fn every_client_builds_under_the_one_crypto_provider() {
    let certs = TestCerts::generate();
    let redis = TempRedis::start_tls(&certs).await;
    let (_pg, url) = tls_postgres(&certs).await;
    let mut config = test_config(&url);
    config.database_ca_file = Some(certs.ca_path());
    config.redis_url = Secret::new(redis.tls_url());
    config.redis_ca_file = Some(certs.ca_path());
    config.quota_backend = shared::config::QuotaBackend::DynamoDb;
    config.quota_table = Some("unused".into());
    config.reply_queue_url = Some(format!("{}/000000000000/unused", api_tests::aws_endpoint()));
    let state = shared::AppState::new(config).expect("every client builds");
    assert!(state.billing.is_some() && state.queue.is_some());
    shared::clients::gemini::GeminiClient::new(&state.config.gemini).expect("reqwest builds");
    let _ = shared::store::secrets::client().await;
    // Both stores really handshake.
    state
        .db()
        .await
        .expect("PostgreSQL over TLS")
        .simple_query("SELECT 1")
        .await
        .unwrap();
    let pong: String = redis::cmd("PING")
        .query_async(&mut state.redis.conn())
        .await
        .expect("Redis over TLS");
    assert_eq!(pong, "PONG");

    let installed = rustls::crypto::CryptoProvider::get_default().expect("a provider is installed");
    let suites = |p: &rustls::crypto::CryptoProvider| {
        p.cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        suites(installed),
        suites(&rustls::crypto::aws_lc_rs::default_provider())
    );
}
