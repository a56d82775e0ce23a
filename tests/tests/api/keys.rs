//! Each function holds only the keys it needs, and a JWT rotation signs nobody out
//! (issues 22 and 23: keys per function, rotation with a key id).

use api_tests::{TestApp, secrets_client, test_config, unique_email};
use axum::http::StatusCode;
use shared::config::Secret;
use shared::state::{Adapters, AppState};
use uuid::Uuid;

#[tokio::test]
async fn webhook_and_worker_hold_no_token_key_and_token_functions_need_one() {
    let config = test_config(&api_tests::fresh_database().await);
    // The webhook and the worker wire no token keys even where one is configured.
    let webhook = AppState::with_adapters(config.clone(), Adapters::NONE).unwrap();
    assert!(webhook.token_keys.is_none() && webhook.otp_codes.is_none());
    assert!(webhook.tokens().is_err(), "no token can be minted there");
    // A token-checking function without JWT_SECRET_KEY does not start.
    let mut without = config.clone();
    without.jwt_secret = None;
    let err = AppState::with_adapters(without.clone(), Adapters::TOKENS)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("JWT_SECRET_KEY"), "{err}");
    // ...while the webhook does.
    assert!(AppState::with_adapters(without, Adapters::NONE).is_ok());
}

#[tokio::test]
async fn a_deployed_auth_function_needs_its_own_otp_key() {
    let mut config = test_config(&api_tests::fresh_database().await);
    config.in_lambda = true;
    config.otp_hash_key = None;
    let auth = Adapters {
        tokens: true,
        otp_codes: true,
        ..Adapters::NONE
    };
    let err = AppState::with_adapters(config.clone(), auth)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("OTP_HASH_KEY"), "{err}");
    config.otp_hash_key = Some(Secret::new(api_tests::OTP_HASH_KEY));
    assert!(AppState::with_adapters(config, auth).is_ok());
}

#[tokio::test]
async fn codes_are_hashed_with_the_otp_key_not_the_jwt_key() {
    // Two apps with one JWT key and different OTP keys: a code issued by one is not
    // accepted by the other, so the OTP key, not the JWT key, keys the hash.
    let database_url = api_tests::fresh_database().await;
    let mut a = test_config(&database_url);
    let mut b = a.clone();
    a.otp_hash_key = Some(Secret::new("otp-key-a-otp-key-a-otp-key-a-otp-key-a"));
    b.otp_hash_key = Some(Secret::new("otp-key-b-otp-key-b-otp-key-b-otp-key-b"));
    let app_a = TestApp::from_config(a).await;
    let app_b = TestApp::from_config(b).await;
    let email = unique_email("otpkey");
    assert_eq!(app_a.signup(&email, None).await.status, StatusCode::CREATED);
    let code = app_a.request_otp(&email).await;
    let refused = app_b
        .post(
            "/auth/verify-otp",
            serde_json::json!({"email": email, "otp": code}),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{:?}",
        refused.body
    );
    let accepted = app_a
        .post(
            "/auth/verify-otp",
            serde_json::json!({"email": email, "otp": code}),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::OK, "{:?}", accepted.body);
}

#[tokio::test]
async fn a_rotated_jwt_secret_is_read_with_its_previous_version() {
    let client = secrets_client();
    let old = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let new = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let arn = client
        .create_secret()
        .name(format!("chatroom-test/{}/jwt", Uuid::new_v4().simple()))
        .secret_string(&old)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let get =
        |arn: String| move |name: &str| (name == "JWT_SECRET_KEY_SECRET_ARN").then(|| arn.clone());
    let source =
        shared::store::secrets::JwtKeySource::from_env(&get(arn.clone()), &client).unwrap();
    let (current, previous) = source.read().await.unwrap();
    assert_eq!(
        (current.expose(), previous),
        (old.as_str(), None),
        "never rotated"
    );
    // The runbook's rotation: put a new value; the old one becomes AWSPREVIOUS.
    client
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(&new)
        .send()
        .await
        .unwrap();
    let (current, previous) = source.read().await.unwrap();
    assert_eq!(current.expose(), new);
    assert_eq!(previous.unwrap().expose(), old);

    // A cold start after the rotation accepts a token signed before it.
    let mut config = test_config(&api_tests::fresh_database().await);
    config.jwt_secret = Some(Secret::new(old.clone()));
    let before = TestApp::from_config(config.clone()).await;
    let token = before.user_token(&unique_email("rotation")).await;
    config.jwt_secret = Some(Secret::new(new));
    config.jwt_previous_secret = Some(Secret::new(old));
    let after = TestApp::from_config(config).await;
    assert_eq!(after.get("/user/me", &token).await.status, StatusCode::OK);
}
