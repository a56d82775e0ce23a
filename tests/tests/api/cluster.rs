//! Run by scripts/test.sh against the three-shard Redis Cluster it starts (with the
//! quota, cache, code and throttle tests): proves the cluster client is in use and that
//! keys in different slots would be refused, so those tests passing means no CROSSSLOT.

use api_tests::TestApp;
use redis::Script;
use shared::store::redis::RedisConnection;

#[tokio::test]
#[ignore = "needs the Redis Cluster that scripts/test.sh starts (TEST_REDIS_CLUSTER=true)"]
async fn the_cluster_client_is_used_and_crossslot_is_refused() {
    let app = TestApp::spawn().await;
    let mut conn = app.state.redis.conn();
    assert!(matches!(conn, RedisConnection::Cluster(_)));
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_known_nodes:3"), "{info}");

    // Two untagged keys: different slots, refused as a script's keys.
    let err = Script::new("return redis.call('MGET', KEYS[1], KEYS[2])")
        .key(app.state.redis.key(&["a"]))
        .key(app.state.redis.key(&["b"]))
        .invoke_async::<redis::Value>(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("CROSSSLOT"), "{err}");

    // The same two names under one hash tag share a slot and pass.
    let tagged = |name: &str| app.state.redis.tagged_key("check", "one-user", name);
    let slot = |key: String| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(slot(tagged("a")).await, slot(tagged("b")).await);
    let _: redis::Value = Script::new("return redis.call('MGET', KEYS[1], KEYS[2])")
        .key(tagged("a"))
        .key(tagged("b"))
        .invoke_async(&mut conn)
        .await
        .unwrap();
}
