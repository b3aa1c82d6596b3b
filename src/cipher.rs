//! Sealing with AES-256-GCM-SIV: the store key ([`EncryptionKey`]), a session's data key
//! ([`DataKey`]) and the nonces they seal with. Pure computation: the files that hold the keys
//! are [`crate::keyring`]'s. `docs/FORMAT.md` ("Encryption") gives the bytes.
//!
//! Nonces are 12 bytes: the store's *epoch*, a 32-bit number that every writable open raises
//! by one and makes durable in `keys/STORE` before it seals anything, then a 64-bit counter
//! that starts at a random number in each open and that every seal advances. Within a store
//! no nonce is used twice; two opens of one epoch (a store restored from a backup, or two stores
//! under one store key) would need their random ranges to overlap; and GCM-SIV is resistant to
//! nonce misuse besides (a repeat would reveal only that two sealed texts were equal).

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use aes_gcm_siv::aead::{AeadInOut, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Key, Nonce, Tag};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Bytes of a key (store or data key).
pub const KEY_LEN: usize = 32;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of an authentication tag.
pub const TAG_LEN: usize = 16;
/// What sealing adds to a payload: the nonce before it and the tag after it.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

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

    /// 32 bytes derived from the key for `context` (BLAKE3's key derivation): a key for
    /// another purpose (the search index's term hashes) that reveals nothing of this one.
    pub(crate) fn derive(&self, context: &str) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(blake3::derive_key(context, &self.0[..]))
    }

    pub(crate) fn cipher(&self) -> Aes256GcmSiv {
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

pub(crate) fn random(out: &mut [u8]) -> Result<()> {
    getrandom::fill(out)
        .map_err(|e| Error::io("drawing random bytes", std::io::Error::other(e.to_string())))
}

/// Where nonces come from: the open's epoch (durable in `keys/STORE` before the first seal)
/// and a counter that starts at a random number.
pub(crate) struct Nonces {
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
    pub(crate) fn random_start(epoch: u32) -> Result<Nonces> {
        Ok(Nonces::new(epoch, random_u64()?))
    }

    /// Moves on to `epoch`, counting from a random number. Only before anything seals with
    /// these nonces concurrently (a store's open).
    pub(crate) fn restart(&self, epoch: u32) -> Result<()> {
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
pub(crate) fn seal_in_place(cipher: &Aes256GcmSiv, nonces: &Nonces, aad: &[u8], sealed: &mut [u8]) {
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
pub(crate) fn open_sealed(
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
    /// A data key from its bytes, sealing with `nonces`.
    pub(crate) fn new(key: &[u8; KEY_LEN], nonces: Arc<Nonces>) -> DataKey {
        DataKey {
            cipher: Aes256GcmSiv::new(&Key::<Aes256GcmSiv>::from(*key)),
            nonces,
        }
    }

    /// A data key from its bytes, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(key: [u8; KEY_LEN]) -> DataKey {
        DataKey::new(&key, Arc::new(Nonces::new(1, 0)))
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
}
