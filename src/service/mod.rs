//! The EC2 semantics: images, snapshots, tags, regions, accounts and who may see what.
//!
//! The service knows nothing about HTTP or XML. Reads are served from the in-memory
//! [`state::State`]; every write goes through [`Service::write`], which validates against
//! the state while holding the writer gate, commits the resulting [`ChangeSet`] to the
//! [`Store`] in one transaction, and only then applies it in memory. So a client never sees,
//! and never is told about, a change that is not on disk.

pub mod attachments;
pub mod export;
pub mod filters;
pub mod ids;
pub mod images;
pub mod import;
pub mod instance_images;
pub mod instance_types;
pub mod instances;
pub mod machines;
pub mod model;
pub mod pagination;
pub mod regions;
pub mod snapshot_data;
pub mod snapshots;
pub mod state;
pub mod tags;
pub mod time;
pub mod usage;
pub mod volumes;

use crate::blocks::{BlockStore, LocalDir};
use crate::error::{Error, Result};
use crate::store::{Change, ChangeSet, Store};
use model::{AccessKey, Account};
use state::State;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

/// Account id of the built-in owner of Kiln's public Quick Start images.
pub const KILN_OWNER_ACCOUNT_ID: &str = "100000000001";
/// Name and owner alias of the built-in owner account.
pub const KILN_OWNER_ALIAS: &str = "kiln";

/// Who is calling, where, and whether it is a dry run.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The authenticated caller.
    pub account: Account,
    /// Region from the SigV4 credential scope.
    pub region: String,
    /// `DryRun=true`: validate, then answer `DryRunOperation` instead of acting.
    pub dry_run: bool,
}

impl RequestContext {
    /// The caller's account id.
    pub fn account_id(&self) -> &str {
        &self.account.account_id
    }

    /// Ends a validated dry run: the call would have succeeded.
    pub fn finish_dry_run(&self) -> Result<()> {
        if self.dry_run {
            Err(Error::DryRunOperation)
        } else {
            Ok(())
        }
    }
}

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Regions this Kiln serves.
    pub regions: Vec<String>,
    /// How long a copy stays `pending` at least (lets clients observe the transition).
    pub copy_delay_ms: i64,
    /// Directories `file://` imports may read from (the data directory never).
    pub import_roots: Vec<std::path::PathBuf>,
    /// Store new blocks zstd-compressed where that saves at least a tenth.
    pub compress_blocks: bool,
    /// How long a guest may take to power off after the power button before QEMU is ended.
    pub stop_timeout: std::time::Duration,
}

/// Default import roots: the server's working directory and the temporary directory.
pub fn default_import_roots() -> Vec<std::path::PathBuf> {
    let mut roots = vec![std::env::temp_dir()];
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    roots
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            regions: vec!["us-east-1".into(), "us-west-2".into(), "eu-west-1".into()],
            copy_delay_ms: 1000,
            import_roots: default_import_roots(),
            compress_blocks: false,
            stop_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// The EC2 service: state in memory, durable in the store.
pub struct Service {
    store: Store,
    /// Shared with volumes, which read their source blocks from it.
    blocks: Arc<BlockStore>,
    data_dir: std::path::PathBuf,
    /// Import tasks waiting for a worker.
    import_queue: Mutex<Vec<String>>,
    /// Export tasks waiting for a worker.
    export_queue: Mutex<Vec<String>>,
    /// Volume data opened by this process (shared by CreateSnapshot and, later, the
    /// hypervisor's NBD connection), by volume id.
    open_volumes: Mutex<HashMap<String, Arc<Mutex<crate::volumes::cow::CowVolume>>>>,
    /// Instances' QEMU processes and NBD servers, and their work queue.
    machines: machines::Machines,
    /// Key of block tokens, loaded from the store on first use.
    block_token_secret: std::sync::OnceLock<Vec<u8>>,
    state: RwLock<State>,
    /// Serializes writers: validation, commit and in-memory apply happen in order.
    write_gate: Mutex<()>,
    /// account id → owner alias, for `imageOwnerAlias` and `Owners=<alias>`.
    aliases: HashMap<String, String>,
    config: ServiceConfig,
}

impl Service {
    /// Opens the data directory, creating the built-in owner account if needed, and loads state.
    pub fn open(data_dir: &Path, config: ServiceConfig) -> Result<Service> {
        let store = Store::open(data_dir)?;
        Service::ensure_builtin_owner(&store)?;
        let aliases = store
            .list_accounts()?
            .into_iter()
            .filter_map(|a| a.alias.map(|alias| (a.account_id, alias)))
            .collect();
        let state = State::load(&store)?;
        let blocks = Arc::new(BlockStore::new(
            Box::new(LocalDir::open(data_dir)?),
            config.compress_blocks,
        ));
        Ok(Service {
            store,
            blocks,
            data_dir: data_dir.to_path_buf(),
            import_queue: Mutex::new(Vec::new()),
            export_queue: Mutex::new(Vec::new()),
            block_token_secret: std::sync::OnceLock::new(),
            open_volumes: Mutex::new(HashMap::new()),
            machines: machines::Machines::default(),
            state: RwLock::new(state),
            write_gate: Mutex::new(()),
            aliases,
            config,
        })
    }

    /// The underlying store (accounts are managed there directly).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The block store holding snapshot data.
    pub fn blocks(&self) -> &BlockStore {
        &self.blocks
    }

    /// The block store, shared (volumes keep a handle).
    pub fn shared_blocks(&self) -> Arc<BlockStore> {
        self.blocks.clone()
    }

    /// The service configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// True if this Kiln serves the region.
    pub fn serves_region(&self, region: &str) -> bool {
        self.config.regions.iter().any(|r| r == region)
    }

    /// Looks up the key of a request and the account it belongs to.
    pub fn authenticate(&self, access_key_id: &str) -> Result<Option<(AccessKey, Account)>> {
        let Some(key) = self.store.find_access_key(access_key_id)? else {
            return Ok(None);
        };
        let account = self.store.find_account(&key.account_id)?.ok_or_else(|| {
            Error::InternalError(format!("access key {access_key_id} has no account"))
        })?;
        Ok(Some((key, account)))
    }

    /// The owner alias of an account (`kiln` for the built-in owner), if any.
    pub fn owner_alias(&self, account_id: &str) -> Option<&str> {
        self.aliases.get(account_id).map(String::as_str)
    }

    /// Account ids that carry an owner alias.
    pub fn accounts_with_alias(&self, alias: &str) -> Vec<String> {
        self.aliases
            .iter()
            .filter(|(_, a)| a.as_str() == alias)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Resolves `Owner.N` values (`self`, account ids, owner aliases) to account ids.
    /// An alias with no account behind it selects nothing but still constrains the result.
    pub(crate) fn resolve_owners(
        &self,
        ctx: &RequestContext,
        owners: &[String],
    ) -> Result<std::collections::BTreeSet<String>> {
        let mut out = std::collections::BTreeSet::new();
        for owner in owners {
            match owner.as_str() {
                "self" => {
                    out.insert(ctx.account_id().to_string());
                }
                id if ids::is_account_id(id) => {
                    out.insert(id.to_string());
                }
                alias if !alias.is_empty() => {
                    out.extend(self.accounts_with_alias(alias));
                    out.insert(format!("alias:{alias}"));
                }
                _ => {
                    return Err(Error::InvalidParameterValue(
                        "Owner must be 'self', an account id or an owner alias".into(),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// A read view of the state.
    pub(crate) fn read(&self) -> Result<RwLockReadGuard<'_, State>> {
        self.state
            .read()
            .map_err(|_| Error::InternalError("state lock poisoned".into()))
    }

    /// Runs `check` against the state while holding the writer gate, so no write can
    /// interleave between the check and what `check` does to the store.
    pub(crate) fn gated<T>(&self, check: impl FnOnce(&State) -> Result<T>) -> Result<T> {
        let _gate = self
            .write_gate
            .lock()
            .map_err(|_| Error::InternalError("write gate poisoned".into()))?;
        let state = self.read()?;
        check(&state)
    }

    /// Runs one write: `plan` validates against the current state and returns the changes
    /// and the answer; the changes are committed, then applied in memory.
    pub(crate) fn write<T>(
        &self,
        plan: impl FnOnce(&State, &mut IdIssuer<'_>) -> Result<(ChangeSet, T)>,
    ) -> Result<T> {
        let _gate = self
            .write_gate
            .lock()
            .map_err(|_| Error::InternalError("write gate poisoned".into()))?;
        let (changes, answer) = {
            let state = self.read()?;
            let mut issuer = IdIssuer {
                store: &self.store,
                state: &state,
                issued: Vec::new(),
            };
            let (mut changes, answer) = plan(&state, &mut issuer)?;
            // Ids are reserved in the same transaction as the records that use them.
            let mut with_ids: ChangeSet = issuer.issued.into_iter().map(Change::IssueId).collect();
            with_ids.append(&mut changes);
            (with_ids, answer)
        };
        if !changes.is_empty() {
            self.store.apply(&changes)?;
            let mut state = self
                .state
                .write()
                .map_err(|_| Error::InternalError("state lock poisoned".into()))?;
            for change in &changes {
                state.apply(change);
            }
        }
        Ok(answer)
    }
}

/// Hands out fresh resource ids during a write; they are reserved when the write commits.
pub struct IdIssuer<'a> {
    store: &'a Store,
    state: &'a State,
    issued: Vec<String>,
}

impl IdIssuer<'_> {
    /// A new id with the prefix (`ami`, `snap`), never issued before.
    pub fn issue(&mut self, prefix: &str) -> Result<String> {
        loop {
            let id = ids::generate(prefix);
            let clash = self.issued.contains(&id)
                || self.state.contains_id(&id)
                || self.store.id_was_issued(&id)?;
            if !clash {
                self.issued.push(id.clone());
                return Ok(id);
            }
        }
    }
}

impl Service {
    /// Creates the built-in `kiln` owner account if it does not exist yet.
    pub fn ensure_builtin_owner(store: &Store) -> Result<()> {
        if store.find_account(KILN_OWNER_ACCOUNT_ID)?.is_some() {
            return Ok(());
        }
        store.create_account(
            &Account {
                account_id: KILN_OWNER_ACCOUNT_ID.into(),
                name: KILN_OWNER_ALIAS.into(),
                alias: Some(KILN_OWNER_ALIAS.into()),
                organization_arn: None,
                organizational_unit_arn: None,
            },
            None,
        )
    }
}
