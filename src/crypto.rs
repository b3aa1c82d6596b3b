//! Encryption at rest ([`crate::Options::encryption`]): the store key, the sessions' data keys
//! and the sealing of record payloads. `docs/FORMAT.md` ("Encryption") gives the bytes.
//!
//! The embedding program supplies one 256-bit store key; it is never written anywhere. Each
//! session gets its own random data key, kept in `keys/{session_id:016x}.key` sealed under the
//! store key. Record payloads are sealed with AES-256-GCM-SIV under the session's data key;
//! the record's framing stays outside the seal, and all of it but the CRC (length, length
//! check, sequence number, time, `prev`) is its associated data, so torn-tail recovery works
//! as without encryption and a record cannot be moved elsewhere unnoticed. Erasing a session removes its data key first: every
//! copy of its bytes is unreadable from then on, before the copies themselves are removed.
//!
//! Nonces are 12 bytes: the store's *epoch*, a 32-bit number that every writable open raises
//! by one and makes durable in `keys/STORE` before it seals anything, then a 64-bit counter
//! that starts at a random number in each open and that every seal advances. Within a store
//! no nonce is used twice; two opens of one epoch (a store restored from a backup, or two stores
//! under one store key) would need their random ranges to overlap; and GCM-SIV is resistant to
//! nonce misuse besides (a repeat would reveal only that two sealed texts were equal).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use aes_gcm_siv::aead::{AeadInOut, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Key, Nonce, Tag};
use parking_lot::RwLock;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::fs::{context, read_prefix, sync_dir, FileSystem, TEMP_SUFFIX};

/// Bytes of a key (store or data key).
pub const KEY_LEN: usize = 32;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of an authentication tag.
pub const TAG_LEN: usize = 16;
/// What sealing adds to a payload: the nonce before it and the tag after it.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// The folder of an encrypted store that holds its key check and its sealed data keys.
pub const KEYS_DIR: &str = "keys";
/// The file in `keys/` that tells whether a store key is the right one.
pub const CHECK_FILE: &str = "STORE";
/// Suffix of a sealed data key: `keys/{session_id:016x}.key`.
pub const KEY_SUFFIX: &str = ".key";
/// Suffix of an erasure in progress: `keys/{session_id:016x}.erasing`.
pub const ERASING_SUFFIX: &str = ".erasing";

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

/// A 256-bit key that the embedding program supplies to encrypt a store
/// ([`crate::Options::encryption`]). It is never written to disk, its bytes are wiped from
/// memory when it is dropped, and `Debug` does not show them.
#[derive(Clone)]
pub struct EncryptionKey(Zeroizing<[u8; KEY_LEN]>);

impl EncryptionKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> EncryptionKey {
        EncryptionKey(Zeroizing::new(bytes))
    }

    /// A key from 64 hexadecimal digits (surrounding whitespace ignored), as the command line
    /// reads it from a file or an environment variable.
    pub fn from_hex(text: &str) -> Result<EncryptionKey> {
        let text = text.trim();
        let invalid = || Error::InvalidOptions {
            reason: "an encryption key is 64 hexadecimal digits (32 bytes)".into(),
        };
        if text.len() != 2 * KEY_LEN || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        for (i, byte) in bytes.iter_mut().enumerate() {
            let pair = text.get(2 * i..2 * i + 2).ok_or_else(invalid)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
        }
        Ok(EncryptionKey(bytes))
    }

    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<EncryptionKey> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        random(&mut bytes[..])?;
        Ok(EncryptionKey(bytes))
    }

    /// The key as 64 lowercase hexadecimal digits (to store it where the program keeps its
    /// secrets).
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(2 * KEY_LEN));
        for byte in self.0.iter() {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }

    fn cipher(&self) -> Aes256GcmSiv {
        Aes256GcmSiv::new(&Key::<Aes256GcmSiv>::from(*self.0))
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(..)")
    }
}

impl PartialEq for EncryptionKey {
    fn eq(&self, other: &EncryptionKey) -> bool {
        *self.0 == *other.0
    }
}

impl Eq for EncryptionKey {}

fn random_u64() -> Result<u64> {
    let mut bytes = [0; 8];
    random(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

fn random(out: &mut [u8]) -> Result<()> {
    getrandom::fill(out)
        .map_err(|e| Error::io("drawing random bytes", std::io::Error::other(e.to_string())))
}

/// Where nonces come from: the open's epoch (durable in `keys/STORE` before the first seal)
/// and a counter that starts at a random number.
struct Nonces {
    epoch: AtomicU32,
    counter: AtomicU64,
}

impl Nonces {
    fn new(epoch: u32, start: u64) -> Nonces {
        Nonces {
            epoch: AtomicU32::new(epoch),
            counter: AtomicU64::new(start),
        }
    }

    /// Nonces of `epoch`, counting from a random number.
    fn random_start(epoch: u32) -> Result<Nonces> {
        Ok(Nonces::new(epoch, random_u64()?))
    }

    /// Moves on to `epoch`, counting from a random number. Only before anything seals with
    /// these nonces concurrently (a store's open).
    fn restart(&self, epoch: u32) -> Result<()> {
        self.counter.store(random_u64()?, Ordering::SeqCst);
        self.epoch.store(epoch, Ordering::SeqCst);
        Ok(())
    }

    fn next(&self) -> [u8; NONCE_LEN] {
        // Wraps after 2^64 seals, far beyond any open's lifetime.
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0; NONCE_LEN];
        let epoch = self.epoch.load(Ordering::Relaxed);
        nonce[..4].copy_from_slice(&epoch.to_le_bytes());
        nonce[4..].copy_from_slice(&n.to_le_bytes());
        nonce
    }
}

/// Seals `data` in place; returns the tag.
fn seal(
    cipher: &Aes256GcmSiv,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    data: &mut [u8],
) -> [u8; TAG_LEN] {
    // Fails only for inputs past 64 GiB, and records are at most 1 GiB: never. Were it to
    // fail, the bytes must not be written as they are (they may be plaintext).
    cipher
        .encrypt_inout_detached(&Nonce::from(*nonce), aad, data.into())
        .map(Into::into)
        .expect("GCM-SIV seals anything up to 64 GiB; records are at most 1 GiB")
}

/// Opens `data` in place; false if the tag does not match (wrong key, or changed bytes).
fn open(cipher: &Aes256GcmSiv, nonce: &[u8], aad: &[u8], data: &mut [u8], tag: &[u8]) -> bool {
    let (Ok(nonce), Ok(tag)) = (<[u8; NONCE_LEN]>::try_from(nonce), Tag::try_from(tag)) else {
        return false;
    };
    cipher
        .decrypt_inout_detached(&Nonce::from(nonce), aad, data.into(), &tag)
        .is_ok()
}

/// Seals `sealed`, laid out as `nonce (filled in here) | plaintext | tag (filled in here)`, in
/// place, with the next nonce.
fn seal_in_place(cipher: &Aes256GcmSiv, nonces: &Nonces, aad: &[u8], sealed: &mut [u8]) {
    let Some(body_len) = sealed.len().checked_sub(SEAL_OVERHEAD) else {
        return; // never: every caller reserves the room
    };
    let nonce = nonces.next();
    let (head, rest) = sealed.split_at_mut(NONCE_LEN);
    let (body, tag_field) = rest.split_at_mut(body_len);
    head.copy_from_slice(&nonce);
    let tag = seal(cipher, &nonce, aad, body);
    tag_field.copy_from_slice(&tag);
}

/// Opens `nonce | ciphertext | tag` into `out`. `Err(true)`: too short to hold a nonce and a
/// tag; `Err(false)`: the tag does not match.
fn open_sealed(
    cipher: &Aes256GcmSiv,
    aad: &[u8],
    sealed: &[u8],
    out: &mut Vec<u8>,
) -> std::result::Result<(), bool> {
    let body_len = sealed.len().checked_sub(SEAL_OVERHEAD).ok_or(true)?;
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(body_len);
    out.clear();
    out.extend_from_slice(body);
    if open(cipher, nonce, aad, out, tag) {
        Ok(())
    } else {
        out.clear();
        Err(false)
    }
}

/// A session's data key: seals and opens its record payloads.
pub struct DataKey {
    cipher: Aes256GcmSiv,
    nonces: Arc<Nonces>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A data key from its bytes, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(key: [u8; KEY_LEN]) -> DataKey {
        DataKey {
            cipher: Aes256GcmSiv::new(&Key::<Aes256GcmSiv>::from(key)),
            nonces: Arc::new(Nonces::new(1, 0)),
        }
    }

    /// Seals a payload laid out as `nonce (12 bytes, filled in here) | plaintext | tag (16
    /// bytes, filled in here)`, with `aad` as associated data.
    pub fn seal_payload(&self, aad: &[u8], payload: &mut [u8]) {
        seal_in_place(&self.cipher, &self.nonces, aad, payload);
    }

    /// Opens a sealed payload into `out` and returns the plaintext, or why it does not open.
    pub fn open_payload<'b>(
        &self,
        aad: &[u8],
        payload: &[u8],
        out: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], String> {
        open_sealed(&self.cipher, aad, payload, out).map_err(|short| {
            if short {
                format!(
                    "sealed payload of {} bytes is shorter than its nonce and tag",
                    payload.len()
                )
            } else {
                "sealed payload does not open under the session's key (changed bytes, or a \
                 record moved from elsewhere)"
                    .into()
            }
        })?;
        Ok(out)
    }
}

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
    fs.exists(&store_dir.join(KEYS_DIR).join(CHECK_FILE))
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
            keyring.epoch = keyring.check(&keyring.dir.join(CHECK_FILE))?;
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
        self.write_check(&self.dir.join(CHECK_FILE), epoch)?;
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
        crate::compaction::subfolder(fs, crate::fs::parent(&self.dir), KEYS_DIR)?;
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
        self.dir.join(format!("{session_id:016x}{KEY_SUFFIX}"))
    }

    fn erasing_path(&self, session_id: u64) -> PathBuf {
        self.dir.join(format!("{session_id:016x}{ERASING_SUFFIX}"))
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
        DataKey {
            cipher: Aes256GcmSiv::new(&Key::<Aes256GcmSiv>::from(*key)),
            nonces: self.nonces.clone(),
        }
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
            .filter_map(|entry| parse_id(entry.name.to_str()?, suffix))
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

/// The session id in a `keys/` file name `{id:016x}{suffix}`.
pub fn parse_id(name: &str, suffix: &str) -> Option<u64> {
    crate::segment::parse_hex(name.strip_suffix(suffix)?, 16)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut field = [0; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        field.copy_from_slice(src);
    }
    u32::from_le_bytes(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys_round_trip_and_bad_ones_are_refused() {
        let key = EncryptionKey::generate().unwrap();
        let again = EncryptionKey::from_hex(&key.to_hex()).unwrap();
        assert_eq!(key, again);
        for bad in ["", "00", &"g".repeat(64), &"0".repeat(63), &"0".repeat(65)] {
            assert!(EncryptionKey::from_hex(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format!("{key:?}"), "EncryptionKey(..)");
    }

    #[test]
    fn nonces_are_the_epoch_then_a_counter() {
        let nonces = Nonces::new(7, u64::MAX);
        let a = nonces.next();
        let b = nonces.next();
        assert_eq!(a, [7, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255]);
        assert_eq!(b, [7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // Two opens of one epoch (a store restored from a backup) start far apart.
        let (x, y) = (
            Nonces::random_start(1).unwrap(),
            Nonces::random_start(1).unwrap(),
        );
        assert_ne!(x.next(), y.next());
    }

    #[test]
    fn ids_parse_only_from_exact_names() {
        assert_eq!(parse_id("00000000000000ab.key", KEY_SUFFIX), Some(0xab));
        assert_eq!(parse_id("00000000000000AB.key", KEY_SUFFIX), None);
        assert_eq!(parse_id("0000000000000ab.key", KEY_SUFFIX), None);
        assert_eq!(parse_id("00000000000000ab.key.tmp", KEY_SUFFIX), None);
    }
}
