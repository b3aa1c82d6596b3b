//! Terms as the index keeps them: every token of a text (cut as `search::tokens` cuts it:
//! runs of Unicode letters and digits, lower-cased) under a keyed 64-bit hash, so no index
//! file holds a word of any message. A plain store's key is fixed; an encrypted store's is
//! derived from its store key, so its index files say nothing to whoever lacks that key.

use std::hash::Hasher;

use crate::search::each_token;

/// Context string for deriving an encrypted store's term key from its store key.
pub const TERM_KEY_CONTEXT: &str = "sessionlog 2026-12 search index term key";

/// The key terms are hashed under (SipHash-2-4's 128 bits).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TermKey {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for TermKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TermKey(..)")
    }
}

impl TermKey {
    /// The key of every plain store: terms are hashed so that their size is fixed, not to
    /// hide them.
    pub const PLAIN: TermKey = TermKey {
        k0: 0x7365_7373_696f_6e6c,
        k1: 0x6f67_2d69_6e64_6578,
    };

    /// A key from 32 secret bytes (an encrypted store's derived key); the first 16 are used.
    pub fn secret(bytes: &[u8; 32]) -> TermKey {
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(w)
        };
        TermKey {
            k0: word(0),
            k1: word(8),
        }
    }

    /// The hash of one token.
    pub fn hash(&self, token: &str) -> u64 {
        // SipHash-2-4 is a keyed pseudo-random function: without the key, a hash says nothing
        // of its token. std keeps it (deprecated only in favour of an unkeyed default).
        #[allow(deprecated)]
        let mut hasher = std::hash::SipHasher::new_with_keys(self.k0, self.k1);
        hasher.write(token.as_bytes());
        hasher.finish()
    }

    /// A value that identifies the key without revealing it, kept in the index's state so
    /// that an index hashed under another key is rebuilt, never read.
    pub fn check(&self) -> u64 {
        self.hash("\u{0}sessionlog index key check")
    }
}

/// What a text adds to the index: its token count and each distinct term with its frequency,
/// sorted by term.
pub fn doc_terms(key: &TermKey, texts: &[&str]) -> (u32, Vec<(u64, u32)>) {
    let mut hashes = Vec::new();
    for text in texts {
        each_token(text, |token| {
            hashes.push(key.hash(token));
            true
        });
    }
    let len = u32::try_from(hashes.len()).unwrap_or(u32::MAX);
    hashes.sort_unstable();
    let mut terms: Vec<(u64, u32)> = Vec::new();
    for hash in hashes {
        match terms.last_mut() {
            Some((last, tf)) if *last == hash => *tf = tf.saturating_add(1),
            _ => terms.push((hash, 1)),
        }
    }
    (len, terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_cut_as_search_cuts_them() {
        for text in ["Hello, wörld-42!", "  ,, ", "ÀÉ straße İstanbul 42x", "a"] {
            let mut seen = Vec::new();
            each_token(text, |t| {
                seen.push(t.to_owned());
                true
            });
            assert_eq!(seen, crate::search::tokens(text), "{text:?}");
        }
    }

    #[test]
    fn terms_count_repeats_and_keys_change_hashes() {
        let (len, terms) = doc_terms(&TermKey::PLAIN, &["the cat, The dog"]);
        assert_eq!(len, 4);
        assert_eq!(terms.len(), 3);
        let the = TermKey::PLAIN.hash("the");
        assert_eq!(terms.iter().find(|(h, _)| *h == the).map(|t| t.1), Some(2));
        let other = TermKey::secret(&[7; 32]);
        assert_ne!(other.hash("the"), the);
        assert_ne!(other.check(), TermKey::PLAIN.check());
    }
}
