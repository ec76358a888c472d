//! Accounts and access keys: creation for the CLI and the first start of `kiln serve`,
//! and the shared-credentials file that lets the `aws` CLI use them.

use crate::error::{Error, Result};
use crate::service::ids::random_string;
use crate::service::model::{AccessKey, Account};
use crate::store::Store;
use rand::Rng;
use std::io::Write;
use std::path::Path;

const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Name of the account created on first start.
pub const DEFAULT_ACCOUNT_NAME: &str = "default";
/// Profile name in the credentials file.
pub const CREDENTIALS_PROFILE: &str = "kiln";

/// What `account create` needs.
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    /// Unique name.
    pub name: String,
    /// Twelve-digit id; random when absent.
    pub account_id: Option<String>,
    /// Access key id; random when absent.
    pub access_key_id: Option<String>,
    /// Secret; random when absent.
    pub secret_access_key: Option<String>,
    /// Organization membership.
    pub organization_arn: Option<String>,
    /// Organizational unit membership.
    pub organizational_unit_arn: Option<String>,
}

/// A fresh random access key for an account.
pub fn new_access_key(account_id: &str) -> AccessKey {
    AccessKey {
        access_key_id: format!("AKIA{}", random_string(UPPER_DIGITS, 16)),
        secret_access_key: random_string(SECRET_ALPHABET, 40),
        account_id: account_id.to_string(),
    }
}

fn random_account_id() -> String {
    let n: u64 = rand::thread_rng().gen_range(200_000_000_000..999_999_999_999);
    n.to_string()
}

/// Creates an account with one access key.
pub fn create_account(store: &Store, new: NewAccount) -> Result<(Account, AccessKey)> {
    if new.name.is_empty() {
        return Err(Error::InvalidParameterValue(
            "account name must not be empty".into(),
        ));
    }
    let account_id = new.account_id.unwrap_or_else(random_account_id);
    if !crate::service::ids::is_account_id(&account_id) {
        return Err(Error::InvalidParameterValue(format!(
            "account id must be 12 digits, got '{account_id}'"
        )));
    }
    let mut key = new_access_key(&account_id);
    match (new.access_key_id, new.secret_access_key) {
        (Some(id), Some(secret)) => {
            key.access_key_id = id;
            key.secret_access_key = secret;
        }
        (None, None) => {}
        _ => {
            return Err(Error::InvalidParameterValue(
                "--access-key-id and --secret-access-key go together".into(),
            ))
        }
    }
    let account = Account {
        account_id,
        name: new.name,
        alias: None,
        organization_arn: new.organization_arn,
        organizational_unit_arn: new.organizational_unit_arn,
    };
    store.create_account(&account, Some(&key))?;
    Ok((account, key))
}

/// Adds a fresh access key to an account given by id or name.
pub fn add_key(store: &Store, id_or_name: &str) -> Result<(Account, AccessKey)> {
    let account = store
        .find_account(id_or_name)?
        .ok_or_else(|| Error::InvalidParameterValue(format!("no account '{id_or_name}'")))?;
    let key = new_access_key(&account.account_id);
    store.add_access_key(&key)?;
    Ok((account, key))
}

/// On first start: creates the default account and writes `DIR/credentials`.
/// Returns the new account and key, or `None` when the data dir was already set up.
pub fn first_start(store: &Store, data_dir: &Path) -> Result<Option<(Account, AccessKey)>> {
    if store.find_account(DEFAULT_ACCOUNT_NAME)?.is_some() {
        return Ok(None);
    }
    let (account, key) = create_account(
        store,
        NewAccount {
            name: DEFAULT_ACCOUNT_NAME.into(),
            ..Default::default()
        },
    )?;
    write_credentials_file(&data_dir.join("credentials"), &key)?;
    Ok(Some((account, key)))
}

/// Writes an AWS shared-credentials file with the `kiln` profile (mode 0600).
pub fn write_credentials_file(path: &Path, key: &AccessKey) -> Result<()> {
    let text = format!(
        "[{CREDENTIALS_PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        key.access_key_id, key.secret_access_key
    );
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| Error::InternalError(format!("writing {}: {e}", path.display()));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_twice_creates_one_account() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(first_start(&store, dir.path()).unwrap().is_some());
        assert!(first_start(&store, dir.path()).unwrap().is_none());
        let text = std::fs::read_to_string(dir.path().join("credentials")).unwrap();
        assert!(text.starts_with("[kiln]\naws_access_key_id = AKIA"));
    }

    #[test]
    fn create_account_bad_id_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = create_account(
            &store,
            NewAccount {
                name: "x".into(),
                account_id: Some("12".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.code(), "InvalidParameterValue");
    }
}
