//! netd's state on disk: an embedded transactional store (redb) under `--root`.
//!
//! Records are JSON values keyed by id, one table per kind. Every operation writes its
//! records in one durable transaction *before* touching the kernel, so a crash at any point
//! leaves a desired state that start-up reconciliation can make true.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{NetdError, Result};

const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");
const POLICIES: TableDefinition<&str, &[u8]> = TableDefinition::new("policies");

/// The kinds of record netd stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Network,
    Sandbox,
    /// NetworkPolicy objects, keyed `namespace/name`.
    Policy,
}

impl Kind {
    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Kind::Network => NETWORKS,
            Kind::Sandbox => SANDBOXES,
            Kind::Policy => POLICIES,
        }
    }
}

/// One change of a transaction.
#[derive(Debug)]
pub enum Change {
    Put(Kind, String, Vec<u8>),
    Delete(Kind, String),
}

impl Change {
    pub fn put<T: Serialize>(kind: Kind, id: &str, value: &T) -> Result<Self> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| NetdError::store(format!("encoding {id}"), e))?;
        Ok(Change::Put(kind, id.to_string(), bytes))
    }

    pub fn delete(kind: Kind, id: &str) -> Self {
        Change::Delete(kind, id.to_string())
    }
}

fn store_error(e: impl Into<redb::Error>) -> NetdError {
    NetdError::store("redb", e.into())
}

/// The store.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)
            .map_err(|e| NetdError::store(format!("cannot create {}", root.display()), e))?;
        let path = root.join("netd.redb");
        let db = Database::create(&path)
            .map_err(|e| NetdError::store(path.display().to_string(), redb::Error::from(e)))?;
        let tx = db.begin_write().map_err(store_error)?;
        {
            tx.open_table(NETWORKS).map_err(store_error)?;
            tx.open_table(SANDBOXES).map_err(store_error)?;
            tx.open_table(POLICIES).map_err(store_error)?;
        }
        tx.commit().map_err(store_error)?;
        Ok(Store { db })
    }

    /// Every record of one kind.
    pub fn load<T: DeserializeOwned>(&self, kind: Kind) -> Result<Vec<T>> {
        let tx = self.db.begin_read().map_err(store_error)?;
        let table = tx.open_table(kind.table()).map_err(store_error)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(store_error)? {
            let (key, value) = entry.map_err(store_error)?;
            let record = serde_json::from_slice(value.value()).map_err(|e| {
                NetdError::store(format!("record {} is unreadable", key.value()), e)
            })?;
            out.push(record);
        }
        Ok(out)
    }

    /// Applies the changes atomically and durably.
    pub fn commit(&self, changes: Vec<Change>) -> Result<()> {
        let tx = self.db.begin_write().map_err(store_error)?;
        for change in &changes {
            match change {
                Change::Put(kind, id, bytes) => {
                    let mut table = tx.open_table(kind.table()).map_err(store_error)?;
                    table
                        .insert(id.as_str(), bytes.as_slice())
                        .map_err(store_error)?;
                }
                Change::Delete(kind, id) => {
                    let mut table = tx.open_table(kind.table()).map_err(store_error)?;
                    table.remove(id.as_str()).map_err(store_error)?;
                }
            }
        }
        tx.commit().map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_and_deletes_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            store
                .commit(vec![
                    Change::put(Kind::Network, "a", &"net-a").expect("ser"),
                    Change::put(Kind::Network, "b", &"net-b").expect("ser"),
                    Change::put(Kind::Sandbox, "s", &"sb").expect("ser"),
                ])
                .expect("commit");
            store
                .commit(vec![Change::delete(Kind::Network, "a")])
                .expect("commit");
        }
        let store = Store::open(dir.path()).expect("reopen");
        let nets: Vec<String> = store.load(Kind::Network).expect("load");
        assert_eq!(nets, vec!["net-b".to_string()]);
        let sbs: Vec<String> = store.load(Kind::Sandbox).expect("load");
        assert_eq!(sbs, vec!["sb".to_string()]);
    }
}
