//! The daily cap: atomic under concurrency on both backends, refunds, Pro, headers.

use std::sync::Arc;

use api_tests::{TestApp, dynamodb_client, unique_email};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use axum::http::StatusCode;
use shared::quota::dynamodb::DynamoQuota;

async fn dynamo_table() -> String {
    let client = dynamodb_client();
    let table = format!("quota-{}", uuid::Uuid::new_v4().simple());
    client
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create the quota table in the emulator");
    table
}

async fn dynamo_app() -> TestApp {
    let table = dynamo_table().await;
    TestApp::spawn_full(
        |_| {},
        |s| s.quota = Arc::new(DynamoQuota::with_client(dynamodb_client(), table)),
    )
    .await
}

async fn fifty_concurrent_sends_admit_exactly_five(app: TestApp) {
    let app = Arc::new(app);
    let token = app.user_token(&unique_email("burst")).await;
    let room = app.create_chatroom(&token, Some("burst")).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (app, token, room) = (app.clone(), token.clone(), room.clone());
        tasks.push(tokio::spawn(async move {
            app.send_message(&token, &room, &format!("msg {i}"))
                .await
                .status
        }));
    }
    let mut accepted = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((accepted, limited), (5, 45));
    let stored = app.count("SELECT count(*) FROM messages").await;
    assert_eq!(stored, 5);
}

#[tokio::test]
async fn fifty_concurrent_sends_redis() {
    fifty_concurrent_sends_admit_exactly_five(TestApp::spawn().await).await;
}

#[tokio::test]
async fn fifty_concurrent_sends_dynamodb() {
    fifty_concurrent_sends_admit_exactly_five(dynamo_app().await).await;
}

async fn sixth_is_refused_with_headers(app: TestApp) {
    let token = app.user_token(&unique_email("sixth")).await;
    let room = app.create_chatroom(&token, Some("cap")).await;
    for i in 0..5 {
        let r = app.send_message(&token, &room, "hi").await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        assert_eq!(r.headers["ratelimit-limit"], "5");
        assert_eq!(
            r.headers["ratelimit-remaining"],
            (4 - i).to_string().as_str()
        );
        assert!(r.headers.contains_key("ratelimit-reset"));
    }
    let r = app.send_message(&token, &room, "one too many").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.error_code(), "daily_limit_reached");
    assert_eq!(r.headers["ratelimit-remaining"], "0");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    let reset: u64 = r.headers["ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry));
    assert_eq!(retry, reset);

    // Upgrading lifts the cap at once; downgrading restores it.
    app.set_tier(&token, "pro").await;
    for _ in 0..3 {
        let r = app.send_message(&token, &room, "pro").await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        assert!(!r.headers.contains_key("ratelimit-remaining"));
    }
    app.set_tier(&token, "basic").await;
    assert_eq!(
        app.send_message(&token, &room, "basic again").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn sixth_message_refused_redis() {
    sixth_is_refused_with_headers(TestApp::spawn().await).await;
}

#[tokio::test]
async fn sixth_message_refused_dynamodb() {
    sixth_is_refused_with_headers(dynamo_app().await).await;
}

#[tokio::test]
async fn failed_requests_give_the_unit_back() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("refund")).await;
    let room = app.create_chatroom(&token, Some("refund")).await;
    // Validation failures after counting: refunded.
    for _ in 0..7 {
        let r = app.send_message(&token, &room, "   ").await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    // Someone else's or a missing chatroom: 404 before counting.
    for _ in 0..7 {
        let r = app
            .send_message(&token, &uuid::Uuid::new_v4().to_string(), "hi")
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
    let r = app.send_message(&token, &room, "first real one").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.headers["ratelimit-remaining"], "4");
}

#[tokio::test]
async fn pro_users_are_unlimited_but_counted() {
    let app = TestApp::spawn().await;
    let token = app.user_token(&unique_email("pro")).await;
    app.set_tier(&token, "pro").await;
    let room = app.create_chatroom(&token, Some("pro")).await;
    for _ in 0..12 {
        assert_eq!(
            app.send_message(&token, &room, "unlimited").await.status,
            StatusCode::ACCEPTED
        );
    }
    let used = app.used_today(&token).await;
    assert_eq!(used, 12);
}

/// Counts for real, then loses the answer (a Redis reply that timed out).
struct LostAnswer(Arc<dyn shared::quota::QuotaStore>);

#[async_trait::async_trait]
impl shared::quota::QuotaStore for LostAnswer {
    async fn try_consume(
        &self,
        user: uuid::Uuid,
        day: chrono::NaiveDate,
        limit: Option<u32>,
    ) -> shared::AppResult<shared::quota::Decision> {
        self.0.try_consume(user, day, limit).await?;
        Err(shared::AppError::redis_unavailable())
    }
    async fn refund(&self, user: uuid::Uuid, day: chrono::NaiveDate) -> shared::AppResult<()> {
        self.0.refund(user, day).await
    }
    async fn used(&self, user: uuid::Uuid, day: chrono::NaiveDate) -> shared::AppResult<u32> {
        self.0.used(user, day).await
    }
}

#[tokio::test]
async fn counting_is_idempotent_per_message() {
    // A count whose answer is lost is given back: no unit stranded by a 503.
    let app = TestApp::spawn_full(
        |_| {},
        |s| {
            let real = s.quota.clone();
            s.quota = Arc::new(LostAnswer(real));
        },
    )
    .await;
    let token = app.user_token(&unique_email("lost")).await;
    let user = app.user_id(&token).await;
    let room = app.create_chatroom(&token, Some("lost")).await;
    let r = app
        .send_message(&token, &room, "counted, answer lost")
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    let day = shared::quota::today(chrono::Utc::now());
    assert_eq!(
        app.state.quota.used(user, day).await.unwrap(),
        0,
        "not stranded"
    );

    // DynamoDB failing: the ADD goes out once (an SDK retry of a lost answer would count
    // twice), then the uncertain unit is given back once.
    let fake = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(500).set_body_string("{}"))
        .mount(&fake)
        .await;
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "t", "t", None, None, "t",
        ))
        .endpoint_url(fake.uri())
        .build();
    let client = aws_sdk_dynamodb::Client::from_conf(conf);
    let app = TestApp::spawn_full(
        |_| {},
        |s| s.quota = Arc::new(DynamoQuota::with_client(client, "quota-fake".into())),
    )
    .await;
    let token = app.user_token(&unique_email("dynamo-lost")).await;
    let room = app.create_chatroom(&token, Some("d")).await;
    let r = app.send_message(&token, &room, "dynamodb down").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    let requests = fake.received_requests().await.unwrap();
    let updates: Vec<String> = requests
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).to_string())
        .collect();
    let adds = updates.iter().filter(|b| b.contains(":one")).count();
    let refunds = updates.iter().filter(|b| b.contains(":minus")).count();
    assert_eq!((adds, refunds), (1, 1), "{updates:#?}");
}
