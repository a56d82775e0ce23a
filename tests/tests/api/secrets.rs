//! Secrets from Secrets Manager (moto): a cold start given only `*_SECRET_ARN` settings
//! (all six secrets, one BatchGetSecretValue call) serves requests; a missing secret stops it with a message naming the secret.

use std::collections::HashMap;

use api_tests::{JWT_SECRET, TestApp, redis_url, secrets_client, unique_email};
use axum::http::StatusCode;
use uuid::Uuid;

/// Creates a secret holding `value`; returns its ARN.
async fn create_secret(client: &aws_sdk_secretsmanager::Client, name: &str, value: &str) -> String {
    client
        .create_secret()
        .name(format!("chatroom-test/{}/{name}", Uuid::new_v4().simple()))
        .secret_string(value)
        .send()
        .await
        .expect("moto creates the secret")
        .arn()
        .unwrap()
        .to_string()
}

fn lookup(vars: HashMap<&'static str, String>) -> impl Fn(&str) -> Option<String> {
    move |name| vars.get(name).cloned()
}

#[tokio::test]
async fn a_cold_start_with_only_secret_arns_serves_requests() {
    let client = secrets_client();
    let database_url = api_tests::fresh_database().await;
    let jwt_key = format!("{}-{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let vars = HashMap::from([
        (
            "DATABASE_URL_SECRET_ARN",
            create_secret(&client, "database-url", &database_url).await,
        ),
        (
            "REDIS_URL_SECRET_ARN",
            create_secret(&client, "redis-url", &redis_url()).await,
        ),
        (
            "JWT_SECRET_KEY_SECRET_ARN",
            create_secret(&client, "jwt", &jwt_key).await,
        ),
        (
            "STRIPE_WEBHOOK_SECRET_SECRET_ARN",
            create_secret(&client, "whsec", api_tests::STRIPE_WEBHOOK_SECRET).await,
        ),
        (
            "STRIPE_API_KEY_SECRET_ARN",
            create_secret(&client, "stripe", "sk_test_fake").await,
        ),
        (
            "GOOGLE_API_KEY_SECRET_ARN",
            create_secret(&client, "gemini", "test-gemini-key").await,
        ),
        ("OTP_DELIVERY", "response".to_string()),
        (
            "REDIS_KEY_PREFIX",
            format!("test:{}:", Uuid::new_v4().simple()),
        ),
    ]);
    let config = shared::store::secrets::config_from(lookup(vars), &client)
        .await
        .expect("every secret is read");
    assert_eq!(config.database_url.expose(), database_url);
    assert_eq!(config.jwt_secret.as_ref().unwrap().expose(), jwt_key);
    assert_eq!(
        config.stripe.webhook_secret.as_ref().unwrap().expose(),
        api_tests::STRIPE_WEBHOOK_SECRET
    );
    assert_eq!(
        config.stripe.api_key.as_ref().unwrap().expose(),
        "sk_test_fake"
    );
    assert_eq!(
        config.gemini.api_key.as_ref().unwrap().expose(),
        "test-gemini-key"
    );

    let app = TestApp::from_config(config).await;
    let token = app.user_token(&unique_email("secrets")).await;
    assert_eq!(app.get("/user/me", &token).await.status, StatusCode::OK);
    // The token is signed with the key from Secrets Manager, not the test default.
    let key = |k: &str| jsonwebtoken::DecodingKey::from_secret(k.as_bytes());
    let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    type Claims = HashMap<String, serde_json::Value>;
    assert!(jsonwebtoken::decode::<Claims>(&token, &key(&jwt_key), &validation).is_ok());
    assert!(jsonwebtoken::decode::<Claims>(&token, &key(JWT_SECRET), &validation).is_err());
}

#[tokio::test]
async fn a_missing_secret_stops_init_naming_it() {
    let client = secrets_client();
    let database_url = api_tests::fresh_database().await;
    let present = create_secret(&client, "database-url", &database_url).await;
    let missing = format!(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:chatroom-test/{}/jwt-AbCdEf",
        Uuid::new_v4().simple()
    );
    let vars = HashMap::from([
        ("DATABASE_URL_SECRET_ARN", present),
        ("JWT_SECRET_KEY_SECRET_ARN", missing.clone()),
        ("REDIS_URL", redis_url()),
    ]);
    let err = shared::store::secrets::config_from(lookup(vars), &client)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("JWT_SECRET_KEY_SECRET_ARN"), "{err}");
    assert!(err.contains(&missing), "{err}");
    assert!(err.contains("ResourceNotFoundException"), "{err}");
    assert!(!err.contains(&database_url), "never a value: {err}");

    // A secret the template created but nobody filled yet.
    let placeholder = create_secret(&client, "gemini", shared::store::secrets::PLACEHOLDER).await;
    let vars = HashMap::from([("GOOGLE_API_KEY_SECRET_ARN", placeholder.clone())]);
    let err = shared::store::secrets::config_from(lookup(vars), &client)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("GOOGLE_API_KEY_SECRET_ARN"), "{err}");
    assert!(
        err.contains(&placeholder) && err.contains("placeholder"),
        "{err}"
    );

    // A setting given twice (directly and as a secret) is refused before any call.
    let vars = HashMap::from([
        ("JWT_SECRET_KEY_SECRET_ARN", missing),
        ("JWT_SECRET_KEY", JWT_SECRET.to_string()),
    ]);
    let err = shared::store::secrets::config_from(lookup(vars), &client)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("JWT_SECRET_KEY"), "{err}");
}
