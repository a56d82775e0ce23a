//! The built `auth` binary's start-up checks, run as Lambda would start it.

use std::process::{Command, Output};

fn start(env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_auth"))
        .env_clear()
        .env("DATABASE_URL", "postgres://app@127.0.0.1:1/none")
        .env("REDIS_URL", "redis://127.0.0.1:1/")
        .env("JWT_SECRET_KEY", "startup-test-secret-startup-test-secret")
        .env("OTP_HASH_KEY", "startup-test-otp-key-startup-test-otp-key")
        .env("AWS_LAMBDA_FUNCTION_NAME", "chatroom-auth")
        // The local stores of this test are plaintext (see the TLS test below).
        .env("ALLOW_PLAINTEXT_STORES", "true")
        .envs(env.iter().copied())
        .output()
        .expect("the auth binary runs")
}

fn all_output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn response_delivery_refuses_to_start_in_a_lambda() {
    let out = start(&[("OTP_DELIVERY", "response")]);
    assert!(!out.status.success());
    let text = all_output(&out);
    assert!(
        text.contains("OTP_DELIVERY") && text.contains("refused in a Lambda"),
        "{text}"
    );
}

#[test]
fn ses_delivery_without_a_sender_refuses_to_start() {
    let out = start(&[("OTP_DELIVERY", "ses")]);
    assert!(!out.status.success());
    let text = all_output(&out);
    assert!(text.contains("OTP_EMAIL_FROM"), "{text}");
}

#[test]
fn log_delivery_in_a_lambda_warns_that_codes_are_in_the_logs() {
    // Settings pass; the runtime then stops for want of the Lambda runtime API, after the
    // warning has been written.
    let out = start(&[("OTP_DELIVERY", "log")]);
    let text = all_output(&out);
    assert!(
        text.contains("OTP_DELIVERY=log: sign-in codes are written to the logs"),
        "{text}"
    );
}

#[test]
fn tls_is_required_where_it_matters() {
    // Inside Lambda, `sslmode=prefer` would fall back to plaintext and a cleartext password.
    let out = start(&[
        ("ALLOW_PLAINTEXT_STORES", "false"),
        ("OTP_DELIVERY", "log"),
        (
            "DATABASE_URL",
            "postgres://app:pw@127.0.0.1:1/none?sslmode=prefer",
        ),
    ]);
    assert!(!out.status.success());
    let text = all_output(&out);
    assert!(
        text.contains("DATABASE_URL") && text.contains("sslmode=require"),
        "{text}"
    );
    assert!(!text.contains("app:pw"), "never the URL: {text}");
    let out = start(&[
        ("ALLOW_PLAINTEXT_STORES", "false"),
        ("OTP_DELIVERY", "log"),
        (
            "DATABASE_URL",
            "postgres://app@127.0.0.1:1/none?sslmode=require",
        ),
    ]);
    let text = all_output(&out);
    assert!(
        text.contains("REDIS_URL") && text.contains("rediss://"),
        "{text}"
    );
}

#[test]
fn each_function_holds_only_its_keys() {
    // The auth function hashes codes with a key of its own: no OTP_HASH_KEY, no start.
    let out = start(&[("OTP_DELIVERY", "log"), ("OTP_HASH_KEY", "")]);
    assert!(!out.status.success());
    let text = all_output(&out);
    assert!(
        text.contains("OTP_HASH_KEY") && text.contains("required"),
        "{text}"
    );
    let out = start(&[("OTP_DELIVERY", "log"), ("JWT_SECRET_KEY", "")]);
    let text = all_output(&out);
    assert!(
        text.contains("JWT_SECRET_KEY") && text.contains("required"),
        "{text}"
    );
}
