//! An encrypted store's keys ([`crate::Options::encryption`]): the `keys/` folder, the store
//! key's check, and each session's data key sealed under the store key.
//! `docs/FORMAT.md` ("Encryption") gives the bytes.
//!
//! The embedding program supplies one 256-bit store key; it is never written anywhere. Each
//! session gets its own random data key, kept in `keys/{session_id:016x}.key` sealed under the
//! store key. Record payloads are sealed with AES-256-GCM-SIV under the session's data key;
//! the record's framing stays outside the seal, and all of it but the CRC (length, length
//! check, sequence number, time, `prev`) is its associated data, so torn-tail recovery works
//! as without encryption and a record cannot be moved elsewhere unnoticed. Erasing a session
//! removes its data key first: every copy of its bytes is unreadable from then on, before the
//! copies themselves are removed.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm_siv::Aes256GcmSiv;
use parking_lot::RwLock;
use zeroize::Zeroizing;

use crate::cipher::{
    open_sealed, random, seal_in_place, DataKey, EncryptionKey, Nonces, KEY_LEN, NONCE_LEN,
    SEAL_OVERHEAD, TAG_LEN,
};
use crate::error::{Error, Result};
use crate::fs::{context, read_prefix, subfolder, sync_dir, FileSystem, TEMP_SUFFIX};
use crate::layout::{
    erasing_path, key_path, parse_key_name, ERASING_SUFFIX, KEYS_DIR, KEY_SUFFIX, STORE_CHECK_FILE,
};

const CHECK_MAGIC: [u8; 8] = *b"SLSTORE\0";
const KEY_MAGIC: [u8; 8] = *b"SLDKEY\0\0";
const KEYS_VERSION: u32 = 1;

// keys/STORE: { magic: [u8; 8] | version: u32 | epoch: u32 | nonce: [u8; 12] | tag: [u8; 16]
//                | crc: u32 }
const CHECK_EPOCH: usize = 12;
const CHECK_NONCE: usize = CHECK_EPOCH + 4;
const CHECK_TAG: usize = CHECK_NONCE + NONCE_LEN;
const CHECK_CRC: usize = CHECK_TAG + TAG_LEN;
const CHECK_LEN: usize = CHECK_CRC + 4;
// keys/{id}.key: { magic: [u8; 8] | version: u32 | session_id: u64 | nonce: [u8; 12]
//                  | sealed_key: [u8; 32] | tag: [u8; 16] | crc: u32 }
const KEY_ID: usize = 12;
const KEY_NONCE: usize = KEY_ID + 8;
const KEY_SEALED: usize = KEY_NONCE + NONCE_LEN;
const KEY_TAG: usize = KEY_SEALED + KEY_LEN;
const KEY_CRC: usize = KEY_TAG + TAG_LEN;
const KEY_FILE_LEN: usize = KEY_CRC + 4;
const _: () = assert!(
    CHECK_LEN == 48 && KEY_FILE_LEN == 84,
    "docs/FORMAT.md documents 48- and 84-byte key files"
);

/// An encrypted store's keys: the store key (in memory only) and the sessions' data keys,
/// read from `keys/` when first needed.
pub struct Keyring {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    store: Aes256GcmSiv,
    /// The epoch `keys/STORE` holds.
    epoch: u32,
    nonces: Arc<Nonces>,
    keys: RwLock<HashMap<u64, Arc<DataKey>>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("dir", &self.dir).finish()
    }
}

/// Session `session_id`'s data key in an encrypted store (`keys`); `None` in a plain one.
pub fn data_key(keys: Option<&Keyring>, session_id: u64) -> Result<Option<Arc<DataKey>>> {
    keys.map(|keys| keys.data_key(session_id)).transpose()
}

/// What a store folder says about encryption, before any key is tried.
pub fn is_encrypted(fs: &dyn FileSystem, store_dir: &Path) -> bool {
    fs.exists(&store_dir.join(KEYS_DIR).join(STORE_CHECK_FILE))
}

impl Keyring {
    /// Opens the keyring of the store in `store_dir` with `key`: checks the key against
    /// `keys/STORE`, or, with `create` (a new, empty store), starts from epoch 0 without it.
    /// Changes nothing: a store that will write calls [`Keyring::start_writing`] (which writes
    /// `keys/STORE`) before it seals anything; a read-only one seals nothing.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        store_dir: &Path,
        key: &EncryptionKey,
        create: bool,
    ) -> Result<Keyring> {
        let dir = store_dir.join(KEYS_DIR);
        let mut keyring = Keyring {
            fs,
            store: key.cipher(),
            epoch: 0,
            nonces: Arc::new(Nonces::random_start(0)?),
            keys: RwLock::new(HashMap::new()),
            dir,
        };
        if !create {
            keyring.epoch = keyring.check(&keyring.dir.join(STORE_CHECK_FILE))?;
        }
        Ok(keyring)
    }

    /// Before a writable store seals anything: raises the epoch (the nonces' first four bytes)
    /// and makes it durable, so that no nonce of an earlier open is used again; and removes
    /// key files a crash left half written (`*.tmp`, never renamed into place).
    pub fn start_writing(&mut self) -> Result<()> {
        let epoch = self
            .epoch
            .checked_add(1)
            .ok_or_else(|| Error::InvalidOptions {
                reason: "the store's nonce epochs are exhausted (2^32 opens)".into(),
            })?;
        self.nonces.restart(epoch)?;
        self.write_check(&self.dir.join(STORE_CHECK_FILE), epoch)?;
        self.epoch = epoch;
        let half_written = self.list_ids(&format!("{KEY_SUFFIX}{TEMP_SUFFIX}"))?;
        for &id in &half_written {
            let path = crate::fs::temp_path(&self.key_path(id));
            self.fs
                .remove_file(&path)
                .map_err(context("removing", &path))?;
        }
        if !half_written.is_empty() {
            // Keeps removed files from coming back after a crash.
            sync_dir(&*self.fs, &self.dir)?;
        }
        Ok(())
    }

    /// Writes `keys/STORE` with `epoch`, durably: no nonce of the epoch is used before.
    fn write_check(&self, check: &Path, epoch: u32) -> Result<()> {
        let fs = &*self.fs;
        // Created durably if missing, before the files in it.
        subfolder(fs, crate::fs::parent(&self.dir), KEYS_DIR)?;
        let mut prefix = Vec::with_capacity(CHECK_NONCE);
        prefix.extend_from_slice(&CHECK_MAGIC);
        prefix.extend_from_slice(&KEYS_VERSION.to_le_bytes());
        prefix.extend_from_slice(&epoch.to_le_bytes());
        let bytes = self.sealed_file(prefix, &[]);
        debug_assert_eq!(bytes.len(), CHECK_LEN);
        crate::fs::replace_file(fs, check, &bytes)
    }

    /// A key file's bytes: `prefix`, then `secret` sealed under the store key with `prefix` as
    /// associated data (nonce, ciphertext, tag), then the CRC-32 of everything before it.
    fn sealed_file(&self, mut prefix: Vec<u8>, secret: &[u8]) -> Vec<u8> {
        let sealed = self.seal_blob(&prefix, secret);
        prefix.extend_from_slice(&sealed);
        let crc = crc32fast::hash(&prefix);
        prefix.extend_from_slice(&crc.to_le_bytes());
        prefix
    }

    /// Checks a key file's length, magic, CRC and version; returns its prefix (the associated
    /// data, `..sealed_at`) and its sealed part (nonce, ciphertext, tag).
    fn parse_sealed_file<'b>(
        bytes: &'b [u8],
        magic: &[u8; 8],
        len: usize,
        sealed_at: usize,
    ) -> Result<(&'b [u8], &'b [u8]), &'static str> {
        if bytes.len() != len || bytes[..8] != *magic {
            return Err("not a key file of this kind");
        }
        let crc_at = len - 4;
        if crc32fast::hash(&bytes[..crc_at]) != read_u32(bytes, crc_at) {
            return Err("checksum mismatch");
        }
        if read_u32(bytes, 8) != KEYS_VERSION {
            return Err("unknown key file version");
        }
        Ok((&bytes[..sealed_at], &bytes[sealed_at..crc_at]))
    }

    /// Checks the store key against `keys/STORE`; returns the epoch it holds.
    fn check(&self, check: &Path) -> Result<u32> {
        let bytes = read_prefix(&*self.fs, check, CHECK_LEN as u64 + 1)?;
        let (aad, sealed) = Self::parse_sealed_file(&bytes, &CHECK_MAGIC, CHECK_LEN, CHECK_NONCE)
            .map_err(|reason| Error::Corrupt {
            path: check.to_path_buf(),
            offset: 0,
            reason: format!("store key check: {reason}"),
        })?;
        if self.open_blob(aad, sealed).is_some() {
            Ok(read_u32(&bytes, CHECK_EPOCH))
        } else {
            Err(Error::WrongKey {
                path: check.to_path_buf(),
            })
        }
    }

    fn key_path(&self, session_id: u64) -> PathBuf {
        key_path(&self.dir, session_id)
    }

    fn erasing_path(&self, session_id: u64) -> PathBuf {
        erasing_path(&self.dir, session_id)
    }

    /// Session `session_id`'s data key, read from its file when first asked for.
    pub fn data_key(&self, session_id: u64) -> Result<Arc<DataKey>> {
        if let Some(key) = self.keys.read().get(&session_id) {
            return Ok(key.clone());
        }
        let path = self.key_path(session_id);
        if !self.fs.exists(&path) {
            return Err(Error::Corrupt {
                path,
                offset: 0,
                reason: "the session's data key is missing (erased?): its records cannot be read"
                    .into(),
            });
        }
        let bytes = read_prefix(&*self.fs, &path, KEY_FILE_LEN as u64 + 1)?;
        let key = self
            .unseal_key(session_id, &bytes)
            .map_err(|reason| Error::Corrupt {
                path: path.clone(),
                offset: 0,
                reason,
            })?;
        let key = Arc::new(key);
        self.keys.write().insert(session_id, key.clone());
        Ok(key)
    }

    fn unseal_key(&self, session_id: u64, bytes: &[u8]) -> Result<DataKey, String> {
        let (aad, sealed) = Self::parse_sealed_file(bytes, &KEY_MAGIC, KEY_FILE_LEN, KEY_NONCE)
            .map_err(|reason| format!("data key file: {reason}"))?;
        if bytes[KEY_ID..KEY_NONCE] != session_id.to_le_bytes() {
            return Err("the data key belongs to another session".into());
        }
        let opened = self
            .open_blob(aad, sealed)
            .map(Zeroizing::new)
            .ok_or("the data key does not open under the store key (changed bytes)")?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&opened);
        Ok(self.data_key_from(&key))
    }

    fn data_key_from(&self, key: &[u8; KEY_LEN]) -> DataKey {
        DataKey::new(key, self.nonces.clone())
    }

    /// Makes a new random data key for session `session_id` and stores it sealed, durably,
    /// replacing any key file of that id (an id gets a key before its first segment, so a
    /// file left without a segment seals nothing).
    pub fn create_key(&self, session_id: u64) -> Result<Arc<DataKey>> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        random(&mut key[..])?;
        let mut prefix = Vec::with_capacity(KEY_NONCE);
        prefix.extend_from_slice(&KEY_MAGIC);
        prefix.extend_from_slice(&KEYS_VERSION.to_le_bytes());
        prefix.extend_from_slice(&session_id.to_le_bytes());
        let bytes = self.sealed_file(prefix, &key[..]);
        debug_assert_eq!(bytes.len(), KEY_FILE_LEN);
        crate::fs::replace_file(&*self.fs, &self.key_path(session_id), &bytes)?;
        let data_key = Arc::new(self.data_key_from(&key));
        self.keys.write().insert(session_id, data_key.clone());
        Ok(data_key)
    }

    /// The first step of erasing session `session_id`: from here on every copy of its
    /// records is unreadable. Leaves `keys/{id}.erasing` for [`Keyring::erased`] to remove
    /// once the session's files are gone, so that open finishes an erasure a crash cut short.
    pub fn destroy_key(&self, session_id: u64) -> Result<()> {
        self.keys.write().remove(&session_id);
        let path = self.key_path(session_id);
        if !self.fs.exists(&path) {
            return Ok(());
        }
        let marker = self.erasing_path(session_id);
        if !self.fs.exists(&marker) {
            // Durable before the key goes: a crash after the removal must leave open the
            // knowledge that the session's unreadable files are to be erased, not damage.
            crate::fs::write_new_file(&*self.fs, &marker, &[])?;
        }
        self.fs
            .remove_file(&path)
            .map_err(context("removing", &path))?;
        // The removal is what makes the session's bytes unreadable: it must be durable.
        sync_dir(&*self.fs, &self.dir)
    }

    /// The last step of erasing session `session_id`, once its files are gone.
    pub fn erased(&self, session_id: u64) -> Result<()> {
        let marker = self.erasing_path(session_id);
        if self.fs.exists(&marker) {
            self.fs
                .remove_file(&marker)
                .map_err(context("removing", &marker))?;
            // Not needed for safety (a marker that comes back makes open erase nothing
            // more), but it keeps the folder tidy after a crash.
            sync_dir(&*self.fs, &self.dir)?;
        }
        Ok(())
    }

    /// True while session `session_id`'s data key file is in `keys/` (its erasure has not
    /// taken it yet).
    pub fn holds_key(&self, session_id: u64) -> bool {
        self.fs.exists(&self.key_path(session_id))
    }

    /// Sessions whose erasure a crash interrupted (their `.erasing` markers).
    pub fn erasing(&self) -> Result<Vec<u64>> {
        self.list_ids(ERASING_SUFFIX)
    }

    fn list_ids(&self, suffix: &str) -> Result<Vec<u64>> {
        if !self.fs.is_dir(&self.dir) {
            return Ok(Vec::new());
        }
        let entries = self
            .fs
            .list(&self.dir)
            .map_err(context("listing", &self.dir))?;
        Ok(entries
            .iter()
            .filter(|entry| entry.is_file)
            .filter_map(|entry| parse_key_name(entry.name.to_str()?, suffix))
            .collect())
    }

    /// Seals a whole blob (the checkpoint, a data key) under the store key:
    /// `nonce | ciphertext | tag`.
    pub fn seal_blob(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = vec![0; plain.len() + SEAL_OVERHEAD];
        out[NONCE_LEN..NONCE_LEN + plain.len()].copy_from_slice(plain);
        seal_in_place(&self.store, &self.nonces, aad, &mut out);
        out
    }

    /// Opens a blob [`Keyring::seal_blob`] sealed; `None` if it does not open.
    pub fn open_blob(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        open_sealed(&self.store, aad, sealed, &mut out).ok()?;
        Some(out)
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut field = [0; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        field.copy_from_slice(src);
    }
    u32::from_le_bytes(field)
}
