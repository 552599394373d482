//! The dead-letter lease on the real Redis: however many copies of one failed attempt race to
//! dead-letter it — some slow, some whose publish fails, some killed in the middle of
//! publishing — exactly one letter goes out when any copy can publish, every copy ends within
//! the lease's bound, and the attempt is pending in `dlq:pending` once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flashsale::keys;
use flashsale::order::OrderMessage;
use flashsale::processor::dead_letter::{DeadLetters, Letter, LetterError};
use flashsale::redis_conn::{Redis, RedisEndpoint};
use proptest::prelude::*;
use tokio::time::Instant;

/// Short, so that a case whose holder was killed ends quickly.
const LEASE: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy)]
enum Fate {
    /// The publish takes `ms` and succeeds.
    Publishes { ms: u64 },
    /// The publish fails after `ms` (the broker is down).
    Fails { ms: u64 },
    /// Killed while publishing: the future is dropped holding the lease, like kill -9.
    Killed,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        3 => (0u64..30).prop_map(|ms| Fate::Publishes { ms }),
        1 => (0u64..30).prop_map(|ms| Fate::Fails { ms }),
        1 => Just(Fate::Killed),
    ]
}

struct Bed {
    _dir: tempfile::TempDir,
    _server: chaos::process::Supervised,
    redis: Redis,
}

async fn bed() -> Bed {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = chaos::process::start_on_free_port(|addr| chaos::components::redis(addr, dir.path()))
        .await
        .expect("redis-server starts");
    let endpoint = RedisEndpoint::Direct(server.addr().to_string());
    let redis = Redis::connect_when_up(&endpoint, Duration::from_secs(2), Duration::from_secs(10))
        .await
        .expect("redis answers");
    Bed { _dir: dir, _server: server, redis }
}

fn order(request_id: &str, attempt: u32) -> OrderMessage {
    OrderMessage {
        request_id: request_id.into(),
        user_id: "u1".into(),
        item_id: "101".into(),
        amount: 1,
        correlation_id: format!("c-{request_id}"),
        accepted_at_ms: 1,
        attempt,
    }
}

async fn reserved(redis: &Redis, request_id: &str, attempt: u32) {
    let key = keys::order_state(request_id);
    redis
        .call(|mut c| async move {
            redis::cmd("HSET")
                .arg(key)
                .arg("status")
                .arg("RESERVED")
                .arg("attempt")
                .arg(attempt)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .expect("HSET");
}

async fn pending(redis: &Redis, member: String) -> bool {
    let score: Option<f64> = redis
        .call(|mut c| async move { redis::cmd("ZSCORE").arg(keys::DLQ_PENDING).arg(member).query_async(&mut c).await })
        .await
        .expect("ZSCORE");
    score.is_some()
}

/// Runs one copy; `None` when it was killed.
async fn copy(
    letters: DeadLetters,
    order: OrderMessage,
    start_after: Duration,
    fate: Fate,
    sent: Arc<AtomicUsize>,
) -> Option<Result<Letter, LetterError<&'static str>>> {
    tokio::time::sleep(start_after).await;
    let publish = || async move {
        match fate {
            Fate::Publishes { ms } => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                sent.fetch_add(1, Ordering::SeqCst);
                Ok(1_000)
            }
            Fate::Fails { ms } => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Err("broker down")
            }
            Fate::Killed => std::future::pending().await,
        }
    };
    match fate {
        // Killed 20 ms into its publish (or while it still waits for the lease).
        Fate::Killed => tokio::time::timeout(Duration::from_millis(20), letters.write_once(&order, publish)).await.ok(),
        _ => Some(letters.write_once(&order, publish).await),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn copies_racing_to_dead_letter_one_attempt_write_one_letter(
        copies in prop::collection::vec((0u64..15, fate()), 2..7),
        case in any::<u64>(),
    ) {
        let rt = runtime();
        rt.block_on(async {
            let bed = bed().await;
            let letters = DeadLetters::new(bed.redis.clone(), LEASE);
            let request_id = format!("race-{case}");
            reserved(&bed.redis, &request_id, 1).await;
            let sent = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let runs: Vec<_> = copies
                .iter()
                .map(|&(after, fate)| {
                    tokio::spawn(copy(letters.clone(), order(&request_id, 1), Duration::from_millis(after), fate, sent.clone()))
                })
                .collect();
            let mut results = Vec::new();
            for run in runs {
                results.push(run.await.expect("copy ran"));
            }
            let took = started.elapsed();
            let publishers = copies.iter().filter(|(_, f)| matches!(f, Fate::Publishes { .. })).count();
            let letters_out = sent.load(Ordering::SeqCst);
            // Never two letters; exactly one whenever a copy could publish.
            prop_assert!(letters_out <= 1, "{letters_out} letters from {copies:?}: {results:?}");
            if publishers > 0 {
                prop_assert_eq!(letters_out, 1, "no letter from {:?}: {:?}", copies, results);
            }
            for ((_, fate), result) in copies.iter().zip(&results) {
                match (fate, result) {
                    (Fate::Killed, _) => {}
                    (Fate::Publishes { .. }, Some(Ok(Letter::Written { .. } | Letter::WrittenBefore))) => {}
                    // A failing copy either failed its own publish or found the letter out.
                    (Fate::Fails { .. }, Some(Err(LetterError::Publish(_)) | Ok(Letter::WrittenBefore))) => {}
                    _ => prop_assert!(false, "{fate:?} ended {result:?} ({copies:?})"),
                }
            }
            let member = keys::dlq_member(&request_id, 1);
            prop_assert_eq!(pending(&bed.redis, member).await, letters_out == 1);
            // Waiting is bounded: the longest wait is one killed holder's lease, plus the work.
            prop_assert!(took < LEASE * 2 + Duration::from_secs(1), "took {took:?}");
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_decided_attempt_gets_no_letter_and_a_replayed_attempt_gets_its_own() {
    let bed = bed().await;
    let letters = DeadLetters::new(bed.redis.clone(), LEASE);
    let publish = || async { Ok::<u64, &str>(5) };

    // Refunded by another copy already: nothing is written, and the caller learns the status.
    let key = keys::order_state("done-1");
    bed.redis
        .call(|mut c| async move {
            redis::cmd("HSET")
                .arg(key)
                .arg("status")
                .arg("FAILED_PAYMENT")
                .arg("attempt")
                .arg(1)
                .query_async::<i64>(&mut c)
                .await
        })
        .await
        .unwrap();
    let got = letters.write_once(&order("done-1", 1), publish).await.unwrap();
    assert_eq!(got, Letter::Decided { status: "FAILED_PAYMENT".into(), current: 1 });
    assert!(!pending(&bed.redis, keys::dlq_member("done-1", 1)).await);

    // Attempt 1 dead-lettered; its replay, attempt 2, fails again and gets a letter of its own;
    // a late copy of attempt 1 gets none.
    reserved(&bed.redis, "replay-1", 1).await;
    assert_eq!(letters.write_once(&order("replay-1", 1), publish).await.unwrap(), Letter::Written { failed_at_ms: 5 });
    assert_eq!(letters.write_once(&order("replay-1", 1), publish).await.unwrap(), Letter::WrittenBefore);
    reserved(&bed.redis, "replay-1", 2).await;
    assert_eq!(letters.write_once(&order("replay-1", 2), publish).await.unwrap(), Letter::Written { failed_at_ms: 5 });
    assert_eq!(
        letters.write_once(&order("replay-1", 1), publish).await.unwrap(),
        Letter::Decided { status: "RESERVED".into(), current: 2 }
    );
    assert!(pending(&bed.redis, keys::dlq_member("replay-1", 1)).await);
    assert!(pending(&bed.redis, keys::dlq_member("replay-1", 2)).await);
}

#[tokio::test]
async fn a_holder_killed_before_publishing_is_taken_over_once_its_lease_runs_out() {
    let bed = bed().await;
    let letters = DeadLetters::new(bed.redis.clone(), LEASE);
    reserved(&bed.redis, "killed-1", 1).await;
    // The holder takes the lease and dies in its publish.
    let dead = tokio::time::timeout(
        Duration::from_millis(50),
        letters.write_once(&order("killed-1", 1), std::future::pending::<Result<u64, &str>>),
    )
    .await;
    assert!(dead.is_err(), "the holder was to be killed while publishing");
    let started = Instant::now();
    let got = letters.write_once(&order("killed-1", 1), || async { Ok::<u64, &str>(7) }).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(got, Letter::Written { failed_at_ms: 7 });
    // It waited for the lease (less the 50 ms already gone), and not much longer.
    assert!(waited >= LEASE - Duration::from_millis(100), "took over after {waited:?}, before the lease ran out");
    assert!(waited < LEASE + Duration::from_millis(500), "took over after {waited:?}");
}
