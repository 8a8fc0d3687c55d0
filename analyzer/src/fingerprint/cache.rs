//! A bounded cache from SQL text to its fingerprints.
//!
//! Applications send the same few hundred statement texts over and over
//! (every prepared statement, every ORM query with bind parameters), so the
//! analyzer should pay for parsing once per text. A hit costs one XXH3-128
//! hash of the text and one table lookup.
//!
//! Clients that put values inline (psycopg2, Sequelize, PDO emulation)
//! send a new text for every value, so the cache has a second tier keyed
//! by *shape* (the token stream without the values, see `scan.rs`): a new
//! text whose shape was parsed before costs one scan instead of a parse.
//!
//! Entries are keyed by 128-bit hashes rather than by the text: the text
//! can be megabytes long and the cache must stay small. A false hit needs
//! two different texts with equal 128-bit hashes; with at most millions of
//! distinct texts in a run the chance is below 2^-80, far less than any
//! hardware error rate.
//!
//! Eviction is CLOCK (second chance): each entry has a "referenced" bit set
//! on every hit; when space is needed a hand sweeps the slots, clearing set
//! bits and evicting the first entry whose bit is already clear. It
//! approximates LRU without reordering anything on a hit. Both tiers are
//! bounded by entry count and by the bytes their fingerprints hold.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_128;

use super::{fingerprint_scanned, scan, Fingerprint};

/// Default number of distinct statement texts (and of shapes) kept.
const DEFAULT_CAPACITY: usize = 10_000;

/// Default bound on the bytes held by each tier.
const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// Counters for the coverage section of reports and for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Lookups answered from the text tier.
    pub hits: u64,
    /// Lookups of a new text answered from the shape tier (no parse).
    pub shape_hits: u64,
    /// Lookups that parsed (or digested) the text.
    pub misses: u64,
    /// Entries removed from either tier to make room.
    pub evictions: u64,
    /// Fallback (unparsed) statements handed out, hits included: each
    /// execution of an unparsable statement counts once per statement.
    pub fallbacks: u64,
}

/// Bounded text → fingerprints cache; see the module docs.
pub struct FingerprintCache {
    texts: Clock<Arc<[Fingerprint]>>,
    shapes: Clock<Fingerprint>,
    stats: CacheStats,
    /// Statements of one text that are fingerprinted; later ones get none.
    max_statements: usize,
}

impl Default for FingerprintCache {
    /// 10 000 texts and shapes, 64 MiB each.
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl std::fmt::Debug for FingerprintCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FingerprintCache")
            .field("texts", &self.texts.len())
            .field("shapes", &self.shapes.len())
            .field("capacity", &self.texts.capacity)
            .field("stats", &self.stats)
            .finish()
    }
}

impl FingerprintCache {
    /// A cache for up to `capacity` distinct texts (at least 1), as many
    /// shapes, and the default byte bound.
    pub fn new(capacity: usize) -> Self {
        Self::with_limits(capacity, DEFAULT_MAX_BYTES)
    }

    /// A cache bounded by `capacity` entries and `max_bytes` of fingerprint
    /// data (normalized text, table names, hashes) per tier. A single text
    /// whose fingerprints exceed an eighth of `max_bytes` is computed but
    /// not kept.
    pub fn with_limits(capacity: usize, max_bytes: usize) -> Self {
        FingerprintCache {
            texts: Clock::new(capacity, max_bytes),
            shapes: Clock::new(capacity, max_bytes),
            stats: CacheStats::default(),
            max_statements: super::MAX_STATEMENTS,
        }
    }

    /// Fingerprints only the first `max` statements of each text (at least
    /// one): the rest of a text with a hundred thousand statements costs a
    /// scan, not a parse each, and nothing is cached for it.
    pub fn with_statement_cap(mut self, max: usize) -> Self {
        self.max_statements = max.max(1);
        self
    }

    /// The fingerprints of every statement in `sql`, computed on a miss.
    pub fn get(&mut self, sql: &str) -> Arc<[Fingerprint]> {
        self.get_keyed(Self::text_key(sql), sql)
    }

    /// The key a text is cached under (XXH3-128 of its bytes), for callers
    /// that keep their own per-text data and should not hash the text twice.
    pub(crate) fn text_key(sql: &str) -> u128 {
        xxh3_128(sql.as_bytes())
    }

    /// [`get`](Self::get) with the text's [`text_key`](Self::text_key)
    /// already computed.
    pub(crate) fn get_keyed(&mut self, key: u128, sql: &str) -> Arc<[Fingerprint]> {
        if let Some(entry) = self.texts.get(key) {
            self.stats.hits += 1;
            self.stats.fallbacks += u64::from(entry.fallbacks);
            return Arc::clone(&entry.value);
        }
        let mut scans = scan::scan(sql, true);
        let shape = match scans.as_slice() {
            [only] => only.shape,
            _ => None,
        };
        if let (Some(shape), [only]) = (shape, scans.as_mut_slice()) {
            if let Some(entry) = self.shapes.get(shape) {
                let mut fingerprint = entry.value.clone();
                fingerprint.literal_hashes = std::mem::take(&mut only.literal_hashes);
                // Same shape, but this text's own statement bounds.
                fingerprint.span = only.start..only.end;
                let fingerprints: Arc<[Fingerprint]> = Arc::from([fingerprint]);
                self.stats.shape_hits += 1;
                self.remember_text(key, &fingerprints, 0);
                return fingerprints;
            }
        }
        self.stats.misses += 1;
        let fingerprints: Arc<[Fingerprint]> =
            fingerprint_scanned(sql, scans, self.max_statements).into();
        let fallbacks = fingerprints.iter().filter(|f| f.fallback).count();
        let fallbacks = u32::try_from(fallbacks).unwrap_or(u32::MAX);
        self.stats.fallbacks += u64::from(fallbacks);
        if let (Some(shape), [only]) = (shape, &*fingerprints) {
            if !only.fallback {
                let bytes = fingerprint_bytes(only);
                self.stats.evictions += self.shapes.insert(shape, only.clone(), bytes, 0);
            }
        }
        self.remember_text(key, &fingerprints, fallbacks);
        fingerprints
    }

    fn remember_text(&mut self, key: u128, fingerprints: &Arc<[Fingerprint]>, fallbacks: u32) {
        let bytes = fingerprints.iter().map(fingerprint_bytes).sum::<usize>() + 64;
        self.stats.evictions += self
            .texts
            .insert(key, Arc::clone(fingerprints), bytes, fallbacks);
    }

    /// Counters since the cache was created.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Number of texts currently cached.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether no text is cached.
    pub fn is_empty(&self) -> bool {
        self.texts.len() == 0
    }

    /// The most texts the cache keeps.
    pub fn capacity(&self) -> usize {
        self.texts.capacity
    }
}

/// Approximate heap bytes held by one fingerprint.
fn fingerprint_bytes(f: &Fingerprint) -> usize {
    std::mem::size_of::<Fingerprint>()
        + f.normalized.len()
        + f.tables.iter().map(|t| t.len() + 24).sum::<usize>()
        + f.literal_hashes.len().saturating_sub(4) * 8
}

struct Entry<V> {
    key: u128,
    value: V,
    /// Bytes this entry accounts for against the byte bound.
    bytes: usize,
    /// Fallback statements in the value, added to the counter on every hit.
    fallbacks: u32,
    referenced: bool,
}

/// A CLOCK-evicted map from 128-bit keys to values.
struct Clock<V> {
    index: HashMap<u128, usize, BuildHasherDefault<KeyHasher>>,
    slots: Vec<Option<Entry<V>>>,
    free: Vec<usize>,
    hand: usize,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
}

impl<V> Clock<V> {
    fn new(capacity: usize, max_bytes: usize) -> Self {
        let capacity = capacity.max(1);
        Clock {
            index: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), Default::default()),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            capacity,
            max_bytes,
            bytes: 0,
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    /// The entry for `key`, marked as recently used.
    fn get(&mut self, key: u128) -> Option<&Entry<V>> {
        let &i = self.index.get(&key)?;
        let entry = self.slots[i].as_mut()?;
        entry.referenced = true;
        Some(entry)
    }

    /// Inserts unless the value is too large; returns how many entries
    /// were evicted to make room.
    fn insert(&mut self, key: u128, value: V, bytes: usize, fallbacks: u32) -> u64 {
        if bytes > self.max_bytes / 8 || self.index.contains_key(&key) {
            return 0;
        }
        let mut evicted = 0;
        while self.index.len() >= self.capacity || self.bytes + bytes > self.max_bytes {
            if !self.evict_one() {
                break;
            }
            evicted += 1;
        }
        self.bytes += bytes;
        let entry = Entry {
            key,
            value,
            bytes,
            fallbacks,
            referenced: false,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(entry);
                i
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        };
        self.index.insert(key, i);
        evicted
    }

    /// Advances the clock hand to a victim and removes it; false if empty.
    fn evict_one(&mut self) -> bool {
        if self.index.is_empty() {
            return false;
        }
        // Two sweeps always find a victim: the first clears every bit.
        for _ in 0..self.slots.len() * 2 + 1 {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let Some(entry) = self.slots[i].as_mut() else {
                continue;
            };
            if entry.referenced {
                entry.referenced = false;
                continue;
            }
            if let Some(entry) = self.slots[i].take() {
                self.index.remove(&entry.key);
                self.bytes -= entry.bytes;
                self.free.push(i);
                return true;
            }
        }
        false
    }
}

/// The keys are already uniformly distributed hashes; hashing them again
/// with SipHash would only cost time on every hit.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}
