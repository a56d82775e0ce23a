//! Test harness: each `TestApp` gets its own fresh database (cloned from a migrated
//! template) and its own Redis key prefix, so tests run in parallel without sharing state.

pub mod faults;
pub mod live;
pub mod tls;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;
use tower::ServiceExt;
use uuid::Uuid;

use std::sync::Arc;

use shared::AppState;
use shared::chat::worker::{Outcome, Retry, Worker};
use shared::clients::gemini::GeminiClient;
use shared::clients::queue::ReplyJob;
use shared::clients::queue::memory::MemoryQueue;
use shared::config::{Config, OtpDelivery, Secret};
use shared::state::Services;
use tokio::sync::Mutex;
use tokio::sync::mpsc::UnboundedReceiver;
use wiremock::MockServer;

pub const STRIPE_WEBHOOK_SECRET: &str = "whsec_test_secret";
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// The auth function's own key for one-time-code hashes (never the JWT key).
pub const OTP_HASH_KEY: &str = "test-otp-hash-key-test-otp-hash-key-0123";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests with `make test`, which starts PostgreSQL and Redis"
        )
    })
}

pub fn admin_db_url() -> String {
    env("TEST_DATABASE_URL")
}

pub fn redis_url() -> String {
    env("TEST_REDIS_URL")
}

/// Replaces the database name at the end of a postgres URL.
pub fn db_url(name: &str) -> String {
    let admin = admin_db_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{name}")
}

pub async fn admin_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&admin_db_url(), NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(conn);
    client
}

/// A migrated template database, built once per migration set across all test processes.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("tmpl_{}", shared::store::postgres::migrations_fingerprint());
            let admin = admin_client().await;
            // Serialise template creation between concurrently running test binaries.
            admin
                .execute("SELECT pg_advisory_lock(727274)", &[])
                .await
                .unwrap();
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .unwrap()
                .is_some();
            if !exists {
                let building = format!("{name}_building");
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{building}\""))
                    .await
                    .unwrap();
                admin
                    .batch_execute(&format!("CREATE DATABASE \"{building}\""))
                    .await
                    .unwrap();
                shared::store::postgres::migrate(&db_url(&building), None)
                    .await
                    .expect("migrations apply");
                admin
                    .batch_execute(&format!(
                        "ALTER DATABASE \"{building}\" RENAME TO \"{name}\""
                    ))
                    .await
                    .unwrap();
            }
            admin
                .execute("SELECT pg_advisory_unlock(727274)", &[])
                .await
                .unwrap();
            name
        })
        .await
}

/// Creates an empty, fully migrated database and returns its URL.
pub async fn fresh_database() -> String {
    let template = template().await;
    let name = format!("t_{}", Uuid::new_v4().simple());
    let admin = admin_client().await;
    let sql = format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"");
    // Concurrent clones of one template can collide briefly; retry.
    let mut tries = 0;
    loop {
        match admin.batch_execute(&sql).await {
            Ok(()) => break,
            Err(e) if tries < 20 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50 * tries)).await;
            }
            Err(e) => panic!("create test database: {e}"),
        }
    }
    db_url(&name)
}

pub fn test_config(database_url: &str) -> Config {
    Config {
        database_url: Secret::new(database_url),
        database_credentials: None,
        database_ca_file: None,
        db_pool_size: 4,
        redis_url: Secret::new(redis_url()),
        redis_ca_file: None,
        redis_cluster: std::env::var("TEST_REDIS_CLUSTER").is_ok_and(|v| v == "true"),
        redis_key_prefix: format!("test:{}:", Uuid::new_v4().simple()),
        jwt_secret: Some(Secret::new(JWT_SECRET)),
        jwt_previous_secret: None,
        jwt_ttl: Duration::from_secs(3600),
        otp_hash_key: Some(Secret::new(OTP_HASH_KEY)),
        otp_delivery: OtpDelivery::Response,
        otp_min_interval_secs: 30,
        otp_max_per_hour: 10,
        otp_max_wrong_per_day: 20,
        otp_email_from: None,
        ses_configuration_set: None,
        ip_limits: shared::config::IpLimits::default(),
        in_lambda: false,
        quota_backend: shared::config::QuotaBackend::Redis,
        quota_table: None,
        basic_daily_limit: 5,
        reply_queue_url: None,
        gemini: shared::config::GeminiSettings {
            api_key: Some(Secret::new("test-gemini-key")),
            model: "gemini-test".into(),
            models: vec!["gemini-test".into(), "gemini-test-pro".into()],
            pro_only_models: vec!["gemini-test-pro".into()],
            base_url: "http://127.0.0.1:1".into(),
            request_timeout: Duration::from_secs(5),
            retry_budget: Duration::from_secs(3),
            max_output_tokens: 256,
            history_max_messages: 20,
            history_max_chars: 16_000,
        },
        max_receive_count: 3,
        dead_letter_queue_arn: None,
        sweep_after: Duration::from_secs(600),
        queue_retention: Duration::from_secs(345_600),
        stripe: shared::config::StripeSettings {
            api_key: Some(Secret::new("sk_test_fake")),
            webhook_secret: Some(Secret::new(STRIPE_WEBHOOK_SECRET)),
            pro_price_id: Some("price_pro_test".into()),
            frontend_url: "https://app.example.com".into(),
            api_base: None,
        },
        stream_max: Duration::from_secs(20),
        streams_per_user: 5,
    }
}

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub database_url: String,
    /// Fake Gemini: tests mount the answers they need.
    pub gemini: MockServer,
    /// Fake Stripe API.
    pub stripe: MockServer,
    pub worker: Worker,
    jobs: Mutex<UnboundedReceiver<ReplyJob>>,
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestResponse {
    /// The error code of an error envelope (panics when the body is not one).
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error envelope: {} {}", self.status, self.body))
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_full(tweak, |_| {}).await
    }

    /// Shaped as the local server runs: callers' rows and newest pages read in batches.
    pub async fn spawn_batched() -> Self {
        Self::spawn_full(
            |_| {},
            |s| s.batched = Some(shared::state::Batches::default()),
        )
        .await
    }

    /// `tweak` edits the configuration; `change` swaps parts of the built state
    /// (another quota store, an SQS queue, ...).
    pub async fn spawn_full(
        tweak: impl FnOnce(&mut Config),
        change: impl FnOnce(&mut Services),
    ) -> Self {
        let database_url = fresh_database().await;
        let mut config = test_config(&database_url);
        tweak(&mut config);
        Self::from_config_with(config, change).await
    }

    /// An app over an existing configuration (e.g. one pointing at a dead service).
    pub async fn from_config(config: Config) -> Self {
        Self::from_config_with(config, |_| {}).await
    }

    pub async fn from_config_with(mut config: Config, change: impl FnOnce(&mut Services)) -> Self {
        let gemini = MockServer::start().await;
        config.gemini.base_url = gemini.uri();
        let stripe = MockServer::start().await;
        config.stripe.api_base = Some(format!("{}/", stripe.uri()));
        let database_url = config.database_url.expose().to_string();
        let (queue, jobs) = MemoryQueue::new();
        let state = AppState::new(config).expect("state builds").with(|s| {
            s.queue = Some(Arc::new(queue));
            change(s);
        });
        let model = GeminiClient::new(&state.config.gemini).expect("gemini client");
        let routes = Router::new()
            .merge(auth_fn::routes(state.clone()))
            .merge(user_fn::routes(state.clone()))
            .merge(chatroom_fn::routes(state.clone()))
            .merge(subscription_fn::routes(state.clone()))
            .merge(stripe_webhook_fn::routes(state.clone()))
            .merge(stream_fn::routes(state.clone()));
        Self {
            router: shared::http::app(routes),
            worker: Worker {
                state: state.clone(),
                model: Arc::new(model),
            },
            state,
            database_url,
            gemini,
            stripe,
            jobs: Mutex::new(jobs),
        }
    }

    /// Runs the worker over every job queued so far (first delivery), like the Lambda would.
    pub async fn run_worker(&self) -> Vec<(Uuid, Result<Outcome, Retry>)> {
        let mut jobs = self.jobs.lock().await;
        let mut out = Vec::new();
        while let Ok(job) = jobs.try_recv() {
            out.push((job.message_id, self.worker.process(job, 1).await));
        }
        out
    }

    /// The jobs queued so far, taken off the queue (to run them by hand).
    pub async fn take_jobs(&self) -> Vec<ReplyJob> {
        let mut jobs = self.jobs.lock().await;
        let mut out = Vec::new();
        while let Ok(job) = jobs.try_recv() {
            out.push(job);
        }
        out
    }

    /// A worker over this app's state whose Gemini is at `base_url`.
    pub fn worker_with_gemini(&self, base_url: &str) -> Worker {
        let mut settings = self.state.config.gemini.clone();
        settings.base_url = base_url.to_string();
        Worker {
            state: self.state.clone(),
            model: Arc::new(GeminiClient::new(&settings).expect("gemini client")),
        }
    }

    /// `GET .../stream`: the response status, and its body to read events from.
    pub async fn open_stream(
        &self,
        token: &str,
        chatroom: &str,
        message: &str,
        last_event_id: Option<&str>,
    ) -> (StatusCode, HeaderMap, live::SseReader) {
        let mut request = Request::get(format!("/chatroom/{chatroom}/messages/{message}/stream"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, live::SseReader::new(response.into_body()))
    }

    pub async fn set_tier(&self, token: &str, tier: &str) {
        let id = self.user_id(token).await;
        self.db()
            .await
            .execute("UPDATE users SET tier = $2 WHERE id = $1", &[&id, &tier])
            .await
            .unwrap();
    }

    pub async fn create_chatroom(&self, token: &str, name: Option<&str>) -> String {
        let body = match name {
            Some(n) => json!({ "name": n }),
            None => json!({}),
        };
        let r = self
            .call(Method::POST, "/chatroom", Some(body), Some(token))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["chatroom"]["id"].as_str().unwrap().to_string()
    }

    pub async fn send_message(&self, token: &str, chatroom: &str, content: &str) -> TestResponse {
        self.call(
            Method::POST,
            &format!("/chatroom/{chatroom}/message"),
            Some(json!({ "content": content })),
            Some(token),
        )
        .await
    }

    /// [`Self::send_message`] with an `Idempotency-Key`.
    pub async fn send_with_key(
        &self,
        token: &str,
        chatroom: &str,
        key: &str,
        content: &str,
    ) -> TestResponse {
        let req = Request::post(format!("/chatroom/{chatroom}/message"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(json!({ "content": content }).to_string()))
            .unwrap();
        self.send(req).await
    }

    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        Self::send_to(self.router.clone(), request).await
    }

    /// Calls any router (e.g. a single function's) and reads the JSON answer.
    pub async fn send_to(router: Router, request: Request<Body>) -> TestResponse {
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "{status}: body is not JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).unwrap()).await
    }

    pub async fn post(&self, path: &str, body: Value) -> TestResponse {
        self.call(Method::POST, path, Some(body), None).await
    }

    /// A POST from the client address `ip` (as API Gateway's `sourceIp` would give it).
    pub async fn post_from(&self, ip: &str, path: &str, body: Value) -> TestResponse {
        let mut request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        request
            .extensions_mut()
            .insert(shared::http::ClientIp(Some(ip.to_string())));
        self.send(request).await
    }

    pub async fn get(&self, path: &str, token: &str) -> TestResponse {
        self.call(Method::GET, path, None, Some(token)).await
    }

    pub async fn signup(&self, email: &str, password: Option<&str>) -> TestResponse {
        let mut body = json!({ "email": email, "name": "Test User" });
        if let Some(p) = password {
            body["password"] = json!(p);
        }
        self.post("/auth/signup", body).await
    }

    pub async fn request_otp(&self, email: &str) -> String {
        let r = self.post("/auth/send-otp", json!({ "email": email })).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["otp"]
            .as_str()
            .expect("otp in response mode")
            .to_string()
    }

    /// Signs in with a fresh code, sending `password` along (the first sign-in keeps a
    /// signup password only when it carries it); returns the answer.
    pub async fn verify_with_password(&self, email: &str, password: Option<&str>) -> TestResponse {
        let otp = self.request_otp(email).await;
        let mut body = json!({ "email": email, "otp": otp });
        if let Some(p) = password {
            body["password"] = json!(p);
        }
        self.post("/auth/verify-otp", body).await
    }

    /// Signs a new user up and logs in with a one-time code; returns the token.
    pub async fn user_token(&self, email: &str) -> String {
        let r = self.signup(email, None).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let otp = self.request_otp(email).await;
        let r = self
            .post("/auth/verify-otp", json!({ "email": email, "otp": otp }))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["access_token"].as_str().unwrap().to_string()
    }

    /// Delivers a webhook body with the given `Stripe-Signature` header (if any).
    pub async fn webhook(&self, body: &str, signature: Option<&str>) -> TestResponse {
        let mut req =
            Request::post("/webhook/stripe").header(header::CONTENT_TYPE, "application/json");
        if let Some(sig) = signature {
            req = req.header("stripe-signature", sig);
        }
        self.send(req.body(Body::from(body.to_string())).unwrap())
            .await
    }

    /// Delivers a webhook body signed for real with the test secret, now.
    pub async fn signed_webhook(&self, body: &str) -> TestResponse {
        let sig = shared::billing::webhook::sign(
            body.as_bytes(),
            STRIPE_WEBHOOK_SECRET,
            chrono::Utc::now().timestamp(),
        );
        self.webhook(body, Some(&sig)).await
    }

    pub async fn user_id(&self, token: &str) -> Uuid {
        let me = self.get("/user/me", token).await;
        me.body["id"].as_str().unwrap().parse().unwrap()
    }

    /// Messages counted today against the token's user, as the quota store says.
    pub async fn used_today(&self, token: &str) -> u32 {
        let id = self.user_id(token).await;
        let today = shared::quota::today(chrono::Utc::now());
        self.state.quota.used(id, today).await.unwrap()
    }

    /// `SELECT count(*) ...` on this app's database.
    pub async fn count(&self, sql: &str) -> i64 {
        self.db().await.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// A direct connection to this app's database (over TLS when its URL asks).
    pub async fn db(&self) -> tokio_postgres::Client {
        let connector =
            shared::store::postgres::connector(self.state.config.database_ca_file.as_deref())
                .unwrap();
        let (client, conn) = tokio_postgres::connect(&self.database_url, connector)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }
}

/// A unique address per call, so tests never share throttles or accounts.
pub fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", Uuid::new_v4().simple())
}

/// A Gemini `generateContent` success body.
pub fn gemini_text(text: &str) -> Value {
    json!({
        "candidates": [{
            "content": { "role": "model", "parts": [{ "text": text }] },
            "finishReason": "STOP"
        }],
        "usageMetadata": { "promptTokenCount": 5, "candidatesTokenCount": 5 }
    })
}

pub const GEMINI_PATH: &str = "/v1beta/models/gemini-test:generateContent";
pub const GEMINI_STREAM_PATH: &str = "/v1beta/models/gemini-test:streamGenerateContent";

/// Matches both Gemini endpoints the client calls: replies stream
/// (`:streamGenerateContent`), titles do not (`:generateContent`).
pub fn gemini_path() -> wiremock::matchers::PathRegexMatcher {
    wiremock::matchers::path_regex(r"^/v1beta/models/gemini-test:(stream)?[gG]enerateContent$")
}

/// The local AWS emulator (moto) started by `make test`.
pub fn aws_endpoint() -> String {
    env("TEST_AWS_ENDPOINT")
}

pub fn sqs_client() -> aws_sdk_sqs::Client {
    use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(aws_endpoint())
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

pub fn secrets_client() -> aws_sdk_secretsmanager::Client {
    use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(aws_endpoint())
        .build();
    aws_sdk_secretsmanager::Client::from_conf(conf)
}

pub fn ses_client(endpoint: &str) -> aws_sdk_sesv2::Client {
    use aws_sdk_sesv2::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_sesv2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sesv2::Client::from_conf(conf)
}

/// An app that e-mails codes through SES at `endpoint` (moto, or a fake) from `from`.
pub async fn ses_app(endpoint: &str, from: &str, configuration_set: Option<&str>) -> TestApp {
    let client = ses_client(endpoint);
    let (from, set) = (from.to_string(), configuration_set.map(String::from));
    let mailer = shared::clients::ses::SesMailer::with_client(client, from.clone(), set.clone());
    TestApp::spawn_full(
        |c| {
            c.otp_delivery = OtpDelivery::Ses;
            c.otp_email_from = Some(from);
            c.ses_configuration_set = set;
        },
        |s| s.mailer = Some(Arc::new(mailer)),
    )
    .await
}

/// Marks `address` a verified SES identity in the emulator (as the console would).
pub async fn verify_ses_identity(address: &str) {
    ses_client(&aws_endpoint())
        .create_email_identity()
        .email_identity(address)
        .send()
        .await
        .expect("moto creates the identity");
}

/// The e-mails the emulator's SES accepted for `to`: `(subject, body)`, oldest first.
/// moto keeps the HTML body of a message that has both.
pub async fn ses_sent_to(to: &str) -> Vec<(String, String)> {
    let data: Value = reqwest::get(format!("{}/moto-api/data.json", aws_endpoint()))
        .await
        .expect("moto answers")
        .json()
        .await
        .expect("moto data is JSON");
    data["ses"]["Message"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["destinations"]["ToAddresses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == to))
        })
        .map(|m| {
            (
                m["subject"].as_str().unwrap_or_default().to_string(),
                m["body"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The six-digit code in an e-mail body.
pub fn code_in(body: &str) -> String {
    let digits: Vec<char> = body.chars().collect();
    digits
        .windows(8)
        .find(|w| {
            !w[0].is_ascii_digit()
                && !w[7].is_ascii_digit()
                && w[1..7].iter().all(char::is_ascii_digit)
        })
        .map(|w| w[1..7].iter().collect())
        .unwrap_or_else(|| panic!("no six-digit code in {body}"))
}

pub fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(aws_endpoint())
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

pub fn customer_json(id: &str) -> Value {
    json!({ "id": id, "object": "customer", "created": 1_700_000_000, "livemode": false })
}

/// A Stripe search result (`GET /v1/customers/search`) holding these customers.
pub fn search_json(customer_ids: &[&str]) -> Value {
    json!({
        "object": "search_result", "url": "/v1/customers/search", "has_more": false,
        "next_page": null,
        "data": customer_ids.iter().map(|id| customer_json(id)).collect::<Vec<_>>()
    })
}

pub fn session_json(id: &str) -> Value {
    json!({
        "id": id, "object": "checkout.session", "created": 1_700_000_000, "expires_at": 1_700_086_400,
        "livemode": false, "mode": "subscription", "payment_method_types": ["card"],
        "payment_status": "unpaid", "status": "open", "shipping_options": [], "custom_fields": [],
        "custom_text": { "after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null },
        "automatic_tax": { "enabled": false, "liability": null, "provider": null, "status": null },
        "url": format!("https://checkout.stripe.com/c/pay/{id}")
    })
}

impl TestApp {
    /// A fake Stripe API answering customer, Checkout and portal creation like Stripe
    /// does, only for requests with the test key and an idempotency key.
    pub async fn mount_fake_stripe(&self) {
        let app = self;
        // No customer of this user exists yet (the lookup by metadata finds none).
        wiremock::Mock::given(wiremock::matchers::method("GET"))
            .and(wiremock::matchers::path("/v1/customers/search"))
            .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(search_json(&[])))
            .mount(&app.stripe)
            .await;
        wiremock::Mock::given(wiremock::matchers::method("POST"))
            .and(wiremock::matchers::path("/v1/customers"))
            .and(wiremock::matchers::header(
                "authorization",
                "Bearer sk_test_fake",
            ))
            .and(wiremock::matchers::header_exists("idempotency-key"))
            .respond_with(
                wiremock::ResponseTemplate::new(200).set_body_json(customer_json("cus_test_1")),
            )
            .mount(&app.stripe)
            .await;
        wiremock::Mock::given(wiremock::matchers::method("POST"))
            .and(wiremock::matchers::path("/v1/checkout/sessions"))
            .and(wiremock::matchers::header(
                "authorization",
                "Bearer sk_test_fake",
            ))
            .and(wiremock::matchers::header_exists("idempotency-key"))
            .respond_with(
                wiremock::ResponseTemplate::new(200).set_body_json(session_json("cs_test_1")),
            )
            .mount(&app.stripe)
            .await;
        // Cancelling a subscription (DELETE /user/me) answers it canceled.
        wiremock::Mock::given(wiremock::matchers::method("DELETE"))
            .and(wiremock::matchers::path_regex(
                r"^/v1/subscriptions/sub_[A-Za-z0-9_]+$",
            ))
            .and(wiremock::matchers::header(
                "authorization",
                "Bearer sk_test_fake",
            ))
            .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({
                "id": "sub_cancelled", "object": "subscription", "status": "canceled"
            })))
            .mount(&app.stripe)
            .await;
        wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/v1/billing_portal/sessions"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({
            "id": "bps_1", "object": "billing_portal.session", "configuration": "bpc_1",
            "created": 1_700_000_000, "customer": "cus_test_1", "livemode": false,
            "return_url": "https://app.example.com/billing", "url": "https://billing.stripe.com/p/session/test_1"
        })))
        .mount(&app.stripe)
        .await;
    }
}
