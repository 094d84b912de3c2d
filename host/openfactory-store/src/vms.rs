//! VMs: owner-scoped by name; the id is the backend's.

use serde::Serialize;
use sqlx::Row;

use crate::{OwnerId, Store, StoreError, now, rfc3339};

#[derive(Debug, Clone, Serialize)]
pub struct VmRow {
    #[serde(skip)]
    pub id: String,
    pub name: String,
    pub build_id: String,
    pub memory_mb: u32,
    pub vcpus: u32,
    pub created_at: String,
}

fn row(r: &sqlx::any::AnyRow) -> Result<VmRow, StoreError> {
    let memory: i64 = r.try_get("memory_mb")?;
    let vcpus: i64 = r.try_get("vcpus")?;
    Ok(VmRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        build_id: r.try_get("build_id")?,
        memory_mb: memory as u32,
        vcpus: vcpus as u32,
        created_at: rfc3339(r.try_get("created_at")?),
    })
}

impl Store {
    /// Record a VM; `Conflict` if the owner already has one with that name.
    pub async fn insert_vm(&self, owner: &OwnerId, vm: &VmRow) -> Result<(), StoreError> {
        self.touch_owner(owner).await?;
        let done = sqlx::query(
            "INSERT INTO vms (id, owner_id, name, build_id, memory_mb, vcpus, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (owner_id, name) DO NOTHING",
        )
        .bind(&vm.id)
        .bind(owner.as_str())
        .bind(&vm.name)
        .bind(&vm.build_id)
        .bind(i64::from(vm.memory_mb))
        .bind(i64::from(vm.vcpus))
        .bind(now())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "you already have a VM named `{}`; pick another name or delete_vm it first",
                vm.name
            )));
        }
        Ok(())
    }

    pub async fn vms(
        &self,
        owner: &OwnerId,
        build_id: Option<&str>,
    ) -> Result<Vec<VmRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, build_id, memory_mb, vcpus, created_at FROM vms
             WHERE owner_id = $1 AND ($2 IS NULL OR build_id = $2) ORDER BY created_at, name",
        )
        .bind(owner.as_str())
        .bind(build_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }

    pub async fn vm(&self, owner: &OwnerId, name: &str) -> Result<Option<VmRow>, StoreError> {
        let r = sqlx::query(
            "SELECT id, name, build_id, memory_mb, vcpus, created_at FROM vms WHERE owner_id = $1 AND name = $2",
        )
        .bind(owner.as_str())
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(row).transpose()
    }

    /// One of the owner's VMs by id (console links carry the id).
    pub async fn vm_by_id(&self, owner: &OwnerId, id: &str) -> Result<Option<VmRow>, StoreError> {
        let r = sqlx::query(
            "SELECT id, name, build_id, memory_mb, vcpus, created_at FROM vms WHERE owner_id = $1 AND id = $2",
        )
        .bind(owner.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(row).transpose()
    }

    /// Forget a VM; whether it was there.
    pub async fn delete_vm(&self, owner: &OwnerId, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM vms WHERE owner_id = $1 AND name = $2")
            .bind(owner.as_str())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_are_unique_per_owner_and_private() {
        for (_engine, store) in crate::test_databases::each().await {
            let alice = OwnerId::ip("192.0.2.1".parse().unwrap());
            let bob = OwnerId::ip("192.0.2.2".parse().unwrap());
            let vm = |id: &str| VmRow {
                id: id.into(),
                name: "web".into(),
                build_id: "b1".into(),
                memory_mb: 1024,
                vcpus: 1,
                created_at: String::new(),
            };
            store.insert_vm(&alice, &vm("01")).await.unwrap();
            let err = store.insert_vm(&alice, &vm("02")).await.unwrap_err();
            assert!(
                err.to_string().contains("already have a VM named `web`"),
                "{err}"
            );
            store.insert_vm(&bob, &vm("03")).await.unwrap();
            assert_eq!(store.vm(&alice, "web").await.unwrap().unwrap().id, "01");
            assert_eq!(store.vms(&bob, Some("b1")).await.unwrap().len(), 1);
            assert!(store.vms(&bob, Some("b2")).await.unwrap().is_empty());
            assert!(store.delete_vm(&alice, "web").await.unwrap());
            assert!(!store.delete_vm(&alice, "web").await.unwrap());
            assert!(store.vm(&bob, "web").await.unwrap().is_some());
        }
    }
}
