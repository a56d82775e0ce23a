//! `GET /search`: the caller's own messages and replies, ranked, highlighted safely,
//! paged; bad queries get a clean 422, odd ones a clean empty page.

use api_tests::{TestApp, gemini_path, gemini_text, unique_email};
use axum::http::StatusCode;
use serde_json::Value;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

fn q(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn ids(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["message_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn search_ranks_highlights_and_pages_the_callers_messages_only() {
    let app = TestApp::spawn().await;
    Mock::given(method("POST"))
        .and(gemini_path())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(gemini_text("Kangaroos hop; a kangaroo <b>boxes</b>.")),
        )
        .mount(&app.gemini)
        .await;
    let token = app.user_token(&unique_email("search")).await;
    app.set_tier(&token, "pro").await;
    let room = app.create_chatroom(&token, Some("Zoo")).await;
    let mut sent = Vec::new();
    for content in [
        "<script>alert(1)</script> where does the kangaroo live?",
        "kangaroo kangaroo kangaroo facts",
        "nothing about marsupials here",
    ] {
        let r = app.send_message(&token, &room, content).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        sent.push(r.body["message"]["id"].as_str().unwrap().to_string());
        app.run_worker().await;
    }
    let other = app.user_token(&unique_email("search-other")).await;
    let theirs = app.create_chatroom(&other, Some("Theirs")).await;
    let r = app.send_message(&other, &theirs, "my own kangaroo").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    let r = app
        .get(&format!("/search?q={}", q("kangaroo")), &token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let hits = r.body["results"].as_array().unwrap();
    // Two user messages and three replies ("Kangaroos" is another word in `simple`).
    assert_eq!(hits.len(), 5, "{}", r.body);
    // The message that says it most ranks first; ranks never increase.
    assert_eq!(hits[0]["message_id"], sent[1].as_str(), "{}", r.body);
    let ranks: Vec<f64> = hits.iter().map(|h| h["rank"].as_f64().unwrap()).collect();
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "{ranks:?}");
    assert!(hits.iter().all(|h| h["chatroom_id"] == room.as_str()));
    assert!(hits.iter().all(|h| h["chatroom_name"] == "Zoo"));
    assert!(
        !ids(&r.body).contains(&sent[2]),
        "a message without the word matched"
    );
    let script = hits
        .iter()
        .find(|h| h["message_id"] == sent[0].as_str())
        .unwrap();
    assert_eq!(script["role"], "user");
    let html = script["snippet_html"].as_str().unwrap();
    // Text as written (a snippet may start at a word), escaped.
    assert!(html.contains("alert(1)&lt;/script&gt;"), "{html}");
    assert!(html.contains("<mark>kangaroo</mark>"), "{html}");
    assert!(!html.contains("<script>"), "{html}");
    assert!(script["snippet"].as_str().unwrap().contains("</script>"));
    let reply = hits.iter().find(|h| h["role"] == "model").unwrap();
    assert!(reply["reply_to"].is_string());
    let html = reply["snippet_html"].as_str().unwrap();
    assert!(html.contains("&lt;b&gt;boxes"), "{html}");
    assert!(r.body["next_cursor"].is_null());

    // Pages of one: the same results in the same order, then the end.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut url = "/search?q=kangaroo&limit=1".to_string();
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={}", q(c)));
        }
        let r = app.get(&url, &token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        paged.extend(ids(&r.body));
        cursor = r.body["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(
        paged,
        ids(&app.get("/search?q=kangaroo", &token).await.body)
    );

    // Phrases and exclusions (web-search syntax).
    let r = app
        .get(&format!("/search?q={}", q("kangaroo -facts")), &token)
        .await;
    assert!(!ids(&r.body).contains(&sent[1]), "{}", r.body);

    // No match, punctuation only: a clean empty page; 1,000 characters: a clean answer.
    for query in ["wombat", "!!! ???"] {
        let r = app.get(&format!("/search?q={}", q(query)), &token).await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.body);
        assert_eq!(r.body["results"], serde_json::json!([]), "{query}");
        assert!(r.body["next_cursor"].is_null());
    }
    let long = format!("{}kangaroo", "x".repeat(992));
    assert_eq!(long.len(), 1000);
    let r = app.get(&format!("/search?q={}", q(&long)), &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["results"], serde_json::json!([]));
    let long = format!("kangaroo{}", " kangaroo".repeat(110));
    assert!(long.len() <= 1000);
    let r = app.get(&format!("/search?q={}", q(&long)), &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(ids(&r.body).len(), 5, "{}", r.body);

    // Empty, blank, too long, bad paging: 422.
    for url in [
        "/search".to_string(),
        "/search?q=".to_string(),
        format!("/search?q={}", q("   ")),
        format!("/search?q={}", "a".repeat(1001)),
        "/search?q=kangaroo&limit=0".to_string(),
        "/search?q=kangaroo&limit=51".to_string(),
        "/search?q=kangaroo&cursor=nope".to_string(),
    ] {
        let r = app.get(&url, &token).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {}",
            r.body
        );
        assert_eq!(r.error_code(), "validation_error");
    }
    // Unauthenticated: 401.
    let r = app.get("/search?q=kangaroo", "not-a-token").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
