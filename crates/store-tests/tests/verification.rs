//! Repositories' rotating verification records on every store
//! (`RM_TEST_STORE`): runs applied in one transaction each, keyed by the
//! repository's identity (so hosts sharing one count once), replays
//! counted once, failures kept with their error, concurrent ends of one
//! repository both kept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use rm_core::verification::{RunOutcome, VerificationRun};
use rm_store_tests::{open_temp_store, t};

fn run(cycle: u32, subset: u32, at: i64, outcome: RunOutcome) -> VerificationRun {
    VerificationRun {
        cycle,
        subset: Some(subset),
        finished_at: t(at),
        outcome,
    }
}

#[tokio::test]
async fn a_cycle_of_three_fills_up_once_per_subset_and_starts_again() {
    let (_db, store) = open_temp_store().await.unwrap();
    assert_eq!(
        store.verification("rest:http://r/fleet").await.unwrap(),
        None
    );
    for (n, at) in [(1, 10), (2, 20)] {
        store
            .record_verification("rest:http://r/fleet", &run(3, n, at, RunOutcome::Passed))
            .await
            .unwrap();
    }
    // The same end reported again (a replayed job.finished) counts once.
    let replayed = store
        .record_verification("rest:http://r/fleet", &run(3, 2, 20, RunOutcome::Passed))
        .await
        .unwrap();
    assert_eq!(replayed.subsets_done, BTreeSet::from([1, 2]));
    let done = store
        .record_verification("rest:http://r/fleet", &run(3, 3, 30, RunOutcome::Passed))
        .await
        .unwrap();
    assert!(done.is_complete());
    let stored = store
        .verification("rest:http://r/fleet")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, done);
    assert_eq!(stored.cycle_started_at, Some(t(10)));
    assert_eq!(stored.last_run_at, Some(t(30)));
    assert_eq!(stored.last_subset, Some(3));
    assert_eq!(stored.coverage(), 1.0);
    // Another repository is a record of its own.
    assert_eq!(store.verification("/srv/other").await.unwrap(), None);

    let next = store
        .record_verification("rest:http://r/fleet", &run(3, 1, 40, RunOutcome::Passed))
        .await
        .unwrap();
    assert_eq!(next.subsets_done, BTreeSet::from([1]));
    assert_eq!(next.cycle_started_at, Some(t(40)));
}

#[tokio::test]
async fn a_failed_subset_is_kept_out_with_its_error_until_it_passes() {
    let (_db, store) = open_temp_store().await.unwrap();
    let key = "/srv/repo";
    store
        .record_verification(key, &run(3, 1, 10, RunOutcome::Passed))
        .await
        .unwrap();
    let failed = store
        .record_verification(
            key,
            &run(
                3,
                2,
                20,
                RunOutcome::Failed("Pack ID does not match".into()),
            ),
        )
        .await
        .unwrap();
    assert_eq!(failed.subsets_done, BTreeSet::from([1]));
    assert_eq!(failed.failed_subset, Some(2));
    assert_eq!(failed.next_subset(3), 2);
    let stored = store.verification(key).await.unwrap().unwrap();
    assert_eq!(stored.last_error.as_deref(), Some("Pack ID does not match"));
    let passed = store
        .record_verification(key, &run(3, 2, 30, RunOutcome::Passed))
        .await
        .unwrap();
    assert_eq!(passed.last_error, None);
    assert_eq!(passed.failed_subset, None);
    assert_eq!(
        store.verification(key).await.unwrap().unwrap().subsets_done,
        BTreeSet::from([1, 2])
    );
    // A run that proves nothing (a pass naming no subset) stores nothing
    // for a repository without a record.
    let nothing = VerificationRun {
        subset: None,
        ..run(3, 1, 40, RunOutcome::Passed)
    };
    store
        .record_verification("/srv/none", &nothing)
        .await
        .unwrap();
    assert_eq!(store.verification("/srv/none").await.unwrap(), None);
}

#[tokio::test]
async fn ends_of_one_repository_recorded_at_once_are_all_kept() {
    let (_db, store) = open_temp_store().await.unwrap();
    let key = "s3:https://s3/bucket";
    let mut writes = tokio::task::JoinSet::new();
    for n in 1..=8 {
        let store = store.clone();
        writes.spawn(async move {
            store
                .record_verification(key, &run(8, n, 10 + i64::from(n), RunOutcome::Passed))
                .await
        });
    }
    while let Some(written) = writes.join_next().await {
        written.unwrap().unwrap();
    }
    let stored = store.verification(key).await.unwrap().unwrap();
    assert_eq!(stored.subsets_done, (1..=8).collect::<BTreeSet<u32>>());
    assert!(stored.is_complete());
}
