//! Claim latency with a deep queue: 10,000 queued builds on PostgreSQL (and
//! SQLite, for comparison), then claims timed one by one. Goal: a claim stays
//! under 5 ms. Run by `cargo xtask bench-scale` (needs OPENFACTORY_TEST_POSTGRES).

use std::time::{Duration, Instant};

use openfactory_store::{Needs, NewBuild, OwnerId, Store, queue::any_claimer, test_databases};

const QUEUED: usize = 10_000;
const CLAIMS: usize = 500;
const GOAL: Duration = Duration::from_millis(5);

#[tokio::main]
async fn main() {
    let mut stores = vec![("sqlite".to_owned(), {
        let dir = tempfile::tempdir().unwrap().keep();
        Store::open(&format!("sqlite://{}", dir.join("bench.db").display()))
            .await
            .unwrap()
    })];
    match test_databases::fresh_postgres().await {
        Some(url) => stores.push(("postgres".into(), Store::open(&url).await.unwrap())),
        None => {
            eprintln!("bench-scale: OPENFACTORY_TEST_POSTGRES is unset: PostgreSQL not measured")
        }
    }
    println!("claim latency with {QUEUED} queued builds ({CLAIMS} claims each), goal < {GOAL:?}:");
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>8}",
        "engine", "p50", "p99", "max", "p99/goal"
    );
    for (engine, store) in stores {
        let owner = OwnerId::local();
        let filled = Instant::now();
        for i in 0..QUEUED {
            let id = format!("bench-{i:05}");
            let build = NewBuild {
                id: &id,
                recipe_digest: "d",
                recipe_name: "bench",
                recipe_json: "{}",
                plan_json: "{}",
                features: &[],
                retry_of: None,
                needs: Needs {
                    arch: "amd64",
                    disk_bytes: 1 << 30,
                },
            };
            store.create_build(&owner, &build).await.unwrap();
        }
        let fill = filled.elapsed();
        let mut times = Vec::with_capacity(CLAIMS);
        for _ in 0..CLAIMS {
            let started = Instant::now();
            let claimed = store.claim_build(&any_claimer("bench")).await.unwrap();
            times.push(started.elapsed());
            assert!(claimed.is_some());
        }
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        let p99 = at(0.99);
        println!(
            "{engine:<10} {:>10.2?} {:>10.2?} {:>10.2?} {:>8.2}   (queued {QUEUED} in {:.1?})",
            at(0.5),
            p99,
            times[times.len() - 1],
            p99.as_secs_f64() / GOAL.as_secs_f64(),
            fill
        );
    }
}
