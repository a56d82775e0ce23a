//! Batched reads (`shared::store::batched`) of callers' rows and of chatrooms' newest
//! pages: each request gets its own answer, never one read before it asked, and a failed
//! batch fails every waiter alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use api_tests::{TestApp, test_config, unique_email};
use shared::auth::users;
use shared::chat::messages;
use shared::config::Secret;
use shared::error::AppError;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_each_get_their_own_row() {
    let app = TestApp::spawn_batched().await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let token = app.user_token(&unique_email(&format!("batch{i}"))).await;
        ids.push(app.user_id(&token).await);
    }
    let unknown = Uuid::new_v4();
    let mut reads = Vec::new();
    for i in 0..400 {
        let state = app.state.clone();
        let id = if i % 10 == 9 {
            unknown
        } else {
            ids[i % ids.len()]
        };
        reads.push(tokio::spawn(async move { (id, state.caller(id).await) }));
    }
    for read in reads {
        let (id, row) = read.await.unwrap();
        let row = row.expect("the read succeeds");
        if id == unknown {
            assert!(row.is_none(), "an unknown id reads as no row");
        } else {
            assert_eq!(row.expect("a known id has a row").id, id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_sees_every_change_committed_before_it_began() {
    let app = TestApp::spawn_batched().await;
    let token = app.user_token(&unique_email("batchfresh")).await;
    let id = app.user_id(&token).await;
    // Keep batches in flight, so a read that joined one already sent would see the
    // token version from before the revocation that preceded it.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..16 {
        let (state, stop) = (app.state.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                state.caller(id).await.expect("background read");
            }
        }));
    }
    for _ in 0..60 {
        let revoked = users::revoke_tokens(&app.state.db().await.unwrap(), id)
            .await
            .unwrap();
        let read = app.state.caller(id).await.unwrap().unwrap();
        assert_eq!(
            read.token_version, revoked.token_version,
            "a read that began after the revocation committed must see it"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn every_waiter_of_a_failed_batch_gets_database_unavailable() {
    let mut config = test_config(&api_tests::fresh_database().await);
    config.database_url = Secret::new("postgres://postgres@127.0.0.1:1/nothing");
    let broken = TestApp::from_config_with(config, |s| {
        s.batched = Some(shared::state::Batches::default())
    })
    .await;
    let mut reads = Vec::new();
    for _ in 0..40 {
        let state = broken.state.clone();
        reads.push(tokio::spawn(
            async move { state.caller(Uuid::new_v4()).await },
        ));
    }
    for read in reads {
        let err = read.await.unwrap().expect_err("the database is down");
        assert!(
            matches!(err, AppError::DatabaseUnavailable),
            "each waiter answers 503: {err:?}"
        );
    }
}

/// Reads that wait for a batch must not hold the connections the batch needs: with a
/// pool of two and many concurrent reads on every batched path (the detail, a page with
/// a cursor, which reads its own statements beside a batched caller read, and
/// `/user/me`), every one is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detail_reads_never_hold_the_connection_their_batch_needs() {
    let app = Arc::new(
        TestApp::spawn_full(
            |c| c.db_pool_size = 2,
            |s| s.batched = Some(shared::state::Batches::default()),
        )
        .await,
    );
    let token = app.user_token(&unique_email("batchpool")).await;
    let user = app.user_id(&token).await;
    let room: Uuid = app
        .create_chatroom(&token, Some("pool"))
        .await
        .parse()
        .unwrap();
    let stored = store_messages(&app, user, room, 3).await;
    let detail = app.get(&format!("/chatroom/{room}"), &token).await;
    let newest = detail.body["messages"][2]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut reads = Vec::new();
    for i in 0..60 {
        let (app, token) = (app.clone(), token.clone());
        let path = match i % 3 {
            0 => format!("/chatroom/{room}"),
            1 => format!("/chatroom/{room}/messages?before={newest}&limit=1"),
            _ => "/user/me".to_string(),
        };
        reads.push(tokio::spawn(async move {
            (i % 3, app.get(&path, &token).await)
        }));
    }
    for read in reads {
        let (kind, r) = read.await.unwrap();
        assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.body);
        if kind == 1 {
            assert_eq!(
                contents(&r.body),
                stored[1..2].to_vec(),
                "the page before the newest"
            );
        }
    }
}

/// Stores `n` user messages in `chatroom`, oldest first, and returns their contents.
async fn store_messages(app: &TestApp, user: Uuid, chatroom: Uuid, n: usize) -> Vec<String> {
    let db = app.state.db().await.unwrap();
    let mut contents = Vec::new();
    for _ in 0..n {
        let content = format!("message {}", Uuid::now_v7());
        messages::insert_user_message(&db, user, chatroom, &content)
            .await
            .unwrap()
            .expect("the user owns the chatroom");
        contents.push(content);
    }
    contents
}

fn contents(body: &serde_json::Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .expect("a page of messages")
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_page_reads_each_get_their_own_chatroom_and_page() {
    let app = Arc::new(TestApp::spawn_batched().await);
    let mut owners = Vec::new();
    for i in 0..6 {
        let token = app.user_token(&unique_email(&format!("pages{i}"))).await;
        let user = app.user_id(&token).await;
        let room: Uuid = app.create_chatroom(&token, None).await.parse().unwrap();
        let stored = store_messages(&app, user, room, i * 2).await;
        owners.push((token, room, stored));
    }
    let owners = Arc::new(owners);
    let mut reads = Vec::new();
    for i in 0..240 {
        let (app, owners) = (app.clone(), owners.clone());
        reads.push(tokio::spawn(async move {
            let (token, _, _) = &owners[i % owners.len()];
            // Every fifth read asks for someone else's chatroom; the rest for their own,
            // with limits from 1 to 4 and the default.
            let asked = if i % 5 == 4 {
                (i + 1) % owners.len()
            } else {
                i % owners.len()
            };
            let limit = i % 5;
            let path = match limit {
                0 => format!("/chatroom/{}", owners[asked].1),
                n => format!("/chatroom/{}/messages?limit={n}", owners[asked].1),
            };
            (i % owners.len(), asked, limit, app.get(&path, token).await)
        }));
    }
    for read in reads {
        let (reader, asked, limit, r) = read.await.unwrap();
        if reader != asked {
            assert_eq!(r.status, axum::http::StatusCode::NOT_FOUND, "{}", r.body);
            continue;
        }
        assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.body);
        let (_, room, stored) = &owners[asked];
        assert_eq!(r.body["chatroom"]["id"], room.to_string());
        let shown = if limit == 0 {
            stored.len()
        } else {
            limit.min(stored.len())
        };
        assert_eq!(contents(&r.body), stored[stored.len() - shown..].to_vec());
        assert_eq!(
            r.body["next_cursor"].is_null(),
            shown == stored.len(),
            "a cursor exactly when older messages remain: {}",
            r.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_read_sees_every_message_stored_before_it_began() {
    let app = Arc::new(TestApp::spawn_batched().await);
    let token = app.user_token(&unique_email("pagesfresh")).await;
    let user = app.user_id(&token).await;
    let room: Uuid = app.create_chatroom(&token, None).await.parse().unwrap();
    let path = format!("/chatroom/{room}/messages?limit=1");
    // Keep page reads in flight, so a read that joined a batch already sent would miss
    // the message stored just before it.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..16 {
        let (app, token, path, stop) = (app.clone(), token.clone(), path.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = app.get(&path, &token).await;
                assert_eq!(r.status, axum::http::StatusCode::OK, "{}", r.body);
            }
        }));
    }
    for _ in 0..40 {
        let stored = store_messages(&app, user, room, 1).await;
        let r = app.get(&path, &token).await;
        assert_eq!(
            contents(&r.body),
            stored,
            "a read that began after the message was stored must show it"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
}
