//! The migrate function's custom resource (template.yaml `Migrations`): Create and Update
//! apply the migrations, idempotently, and answer CloudFormation at its ResponseURL; a
//! failure answers FAILED (the deploy rolls back); Delete touches nothing.

use migrate_fn::{Ran, Request};
use serde_json::{Value, json};
use shared::config::{DatabaseSettings, DbCredentials, Secret};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn request(kind: &str, response_url: &str) -> Value {
    let mut v = json!({
        "RequestType": kind,
        "ResponseURL": response_url,
        "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/chat/1",
        "RequestId": format!("req-{kind}"),
        "ResourceType": "Custom::Migrations",
        "LogicalResourceId": "Migrations",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:m", "CodeVersion": "3"},
    });
    if kind != "Create" {
        v["PhysicalResourceId"] = json!(migrate_fn::PHYSICAL_ID);
    }
    if kind == "Update" {
        v["OldResourceProperties"] = json!({"CodeVersion": "2"});
    }
    v
}

/// Runs one request as the function does and returns what CloudFormation received.
async fn run(kind: &str, db: Option<DatabaseSettings>, cloudformation: &MockServer) -> Value {
    let event = request(kind, &format!("{}/signed/response", cloudformation.uri()));
    run_event(event, Some("3"), db, cloudformation).await
}

async fn run_event(
    event: Value,
    own_version: Option<&str>,
    db: Option<DatabaseSettings>,
    cloudformation: &MockServer,
) -> Value {
    let url = format!("{}/signed/response", cloudformation.uri());
    let req = Request::parse(&event).expect("a CloudFormation request");
    let response = migrate_fn::answer(&req, own_version, || async move {
        let db = db.expect("this request must not migrate");
        shared::store::postgres::migrate_database(&db, std::time::Duration::ZERO)
            .await
            .map(Ran::Applied)
    })
    .await;
    migrate_fn::send(&reqwest::Client::new(), &url, &response)
        .await
        .expect("the answer is delivered");
    let received = cloudformation.received_requests().await.unwrap();
    let last = received.last().expect("one PUT");
    assert_eq!(last.method.as_str(), "PUT");
    serde_json::from_slice(&last.body).unwrap()
}

async fn cloudformation() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/signed/response"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn create_applies_every_migration_with_the_credentials_secret_and_update_is_idempotent() {
    let admin = api_tests::admin_client().await;
    let name = format!("m_{}", uuid::Uuid::new_v4().simple());
    let role = format!("migrator_{}", &name[2..14]);
    for sql in [
        format!("CREATE DATABASE \"{name}\""),
        format!("CREATE ROLE \"{role}\" LOGIN PASSWORD 'pw-from-secret'"),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    admin
        .batch_execute(&format!("ALTER DATABASE \"{name}\" OWNER TO \"{role}\""))
        .await
        .unwrap();
    // The URL as the template writes it (no credentials); the user comes from the secret.
    let url = api_tests::db_url(&name);
    let db = DatabaseSettings {
        url: Secret::new(url.clone()),
        credentials: Some(DbCredentials {
            username: role.clone(),
            password: Secret::new("pw-from-secret"),
        }),
        ca_file: None,
    };
    let cf = cloudformation().await;
    let created = run("Create", Some(db.clone()), &cf).await;
    assert_eq!(created["Status"], "SUCCESS", "{created}");
    assert_eq!(created["PhysicalResourceId"], migrate_fn::PHYSICAL_ID);
    assert_eq!(created["RequestId"], "req-Create");
    assert_eq!(created["LogicalResourceId"], "Migrations");
    let applied = created["Data"]["Applied"].as_str().unwrap();
    assert!(applied.starts_with("V1__users"), "{applied}");
    assert_eq!(
        applied.split(',').count(),
        std::fs::read_dir("../migrations").unwrap().count()
    );

    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let owner: String = client
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 'users'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, role, "migrated as the secret's user");

    let updated = run("Update", Some(db), &cf).await;
    assert_eq!(updated["Status"], "SUCCESS", "{updated}");
    assert_eq!(updated["Data"]["Applied"], "", "nothing twice");
    assert_eq!(updated["Reason"], "database schema is up to date");
}

#[tokio::test]
async fn a_failed_migration_answers_failed_with_the_reason() {
    let cf = cloudformation().await;
    let unreachable = DatabaseSettings {
        url: Secret::new("postgres://app@127.0.0.1:1/none"),
        credentials: None,
        ca_file: None,
    };
    let answer = run("Update", Some(unreachable), &cf).await;
    assert_eq!(answer["Status"], "FAILED", "{answer}");
    let reason = answer["Reason"].as_str().unwrap();
    assert!(reason.starts_with("migrations failed:"), "{reason}");
    assert!(reason.len() <= 900);
}

#[tokio::test]
async fn delete_changes_nothing_and_succeeds() {
    let cf = cloudformation().await;
    // `None`: the closure panics if Delete tried to migrate.
    let answer = run("Delete", None, &cf).await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(answer["PhysicalResourceId"], migrate_fn::PHYSICAL_ID);
}

#[tokio::test]
async fn a_rollback_update_changes_nothing() {
    // CloudFormation rolling back asks version 4 of the function to go back to version 3.
    let cf = cloudformation().await;
    let mut event = request("Update", &format!("{}/signed/response", cf.uri()));
    event["ResourceProperties"]["CodeVersion"] =
        json!("arn:aws:lambda:eu-west-1:123456789012:function:m:3");
    let answer = run_event(event, Some("4"), None, &cf).await;
    assert_eq!(answer["Status"], "SUCCESS", "{answer}");
    assert_eq!(answer["Data"]["Applied"], "");
    assert!(
        answer["Reason"].as_str().unwrap().contains("rollback"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_direct_invocation_migrates_and_says_what_it_did() {
    let url = api_tests::fresh_database().await;
    let db = DatabaseSettings {
        url: Secret::new(url),
        credentials: None,
        ca_file: None,
    };
    let req = Request::parse(&json!({"RequestType": "Migrate"})).unwrap();
    let response = migrate_fn::answer(&req, None, || async move {
        shared::store::postgres::migrate_database(&db, std::time::Duration::ZERO)
            .await
            .map(Ran::Applied)
    })
    .await;
    let result = migrate_fn::direct_result(&response);
    assert_eq!(result["Status"], "SUCCESS", "{result}");
    assert_eq!(
        result["Applied"], "",
        "a fresh test database is already migrated"
    );
    assert_eq!(result["Reason"], "database schema is up to date");
    assert!(
        Request::parse(&json!({"RequestType": "Create"})).is_err(),
        "no ResponseURL"
    );
}
