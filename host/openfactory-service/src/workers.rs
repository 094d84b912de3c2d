//! Remote workers, as operators manage them: enrol one (its token is shown
//! once and stored hashed, like API keys), list them, revoke one (its jobs go
//! back to the queue at once, and its next call is refused on every control
//! plane, since each call looks its token up).

use openfactory_store::{LeaseSettings, Requeued, Store, WorkerRecord};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What every worker token starts with.
pub const TOKEN_PREFIX: &str = "of_wkr_";
/// How much of a token is kept to tell tokens apart.
const SHOWN_PREFIX: usize = TOKEN_PREFIX.len() + 6;

/// A new worker and its token, which is never shown again.
#[derive(Debug, Serialize)]
pub struct Enrolled {
    pub name: String,
    pub token: String,
    pub prefix: String,
}

/// The hash a token is stored as; `None` unless it looks like a worker token.
pub fn token_hash(token: &str) -> Option<String> {
    let secret = token.strip_prefix(TOKEN_PREFIX)?;
    (secret.len() == 40 && secret.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex::encode(Sha256::digest(token.as_bytes())))
}

fn check_name(name: &str) -> Result<&str> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(name)
    } else {
        Err(Error::invalid(
            "name",
            "name: 1 to 40 lowercase letters, digits and -, e.g. build-01",
        ))
    }
}

/// Enrol a worker named `name`.
pub async fn enrol(store: &Store, name: &str) -> Result<Enrolled> {
    let name = check_name(name)?;
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let prefix = token[..SHOWN_PREFIX].to_owned();
    let hash = token_hash(&token).expect("a token we made");
    let stored = store.create_worker(name, &prefix, &hash).await?;
    Ok(Enrolled {
        name: stored.name,
        token,
        prefix: stored.prefix,
    })
}

pub async fn list(store: &Store) -> Result<Vec<WorkerRecord>> {
    Ok(store.workers().await?)
}

/// Revoke a worker's token; the jobs it held are requeued (or end, when
/// their attempts are used up).
pub async fn revoke(
    store: &Store,
    name: &str,
    leases: LeaseSettings,
) -> Result<(WorkerRecord, Vec<Requeued>)> {
    let worker = store.revoke_worker(name).await?.ok_or_else(|| {
        Error::not_found(format!(
            "no worker is named `{}`; `openfactory worker-token list` shows them",
            openfactory_core::rules::truncate(name, 40).escape_debug()
        ))
    })?;
    let why = format!("the token of worker {} was revoked", worker.name);
    let requeued = store
        .requeue_worker(&worker.worker_id(), leases, &why)
        .await?;
    Ok((worker, requeued))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_worker_tokens_hash() {
        let token = format!("{TOKEN_PREFIX}{}", "ab".repeat(20));
        assert_eq!(token_hash(&token).unwrap().len(), 64);
        for bad in [
            "",
            "of_wkr_",
            "of_mcp_abababababababababababababababababababab",
            &format!("{token}0"),
        ] {
            assert!(token_hash(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn names_are_plain() {
        assert!(check_name("build-01").is_ok());
        for bad in ["", "Build", "a b", "x/../y", &"a".repeat(41)] {
            let err = check_name(bad).unwrap_err();
            assert!(err.to_string().contains("name:"), "{err}");
        }
    }
}
