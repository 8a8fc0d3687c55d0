//! A bounded cache from SQL text to its fingerprints.
//!
//! Applications send the same few hundred statement texts over and over
//! (every prepared statement, every ORM query with bind parameters), so
//! the analyzer should pay for parsing once per text. A hit costs one
//! XXH3-128 hash of the text and one table lookup.
//!
//! Entries are keyed by the 128-bit hash of the exact text rather than the
//! text itself: the text can be megabytes long and the cache must stay
//! small. A false hit needs two different texts with equal 128-bit hashes;
//! with at most millions of distinct texts in a run the chance is below
//! 2^-80, far less than any hardware error rate.
//!
//! Eviction is CLOCK (second chance): each entry has a "referenced" bit set
//! on every hit; when space is needed a hand sweeps the slots, clearing set
//! bits and evicting the first entry whose bit is already clear. It
//! approximates LRU without reordering anything on a hit. The cache is
//! bounded both by entry count and by the bytes its fingerprints hold.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_128;

use super::{fingerprint_sql, Fingerprint};

/// Default number of distinct statement texts kept.
const DEFAULT_CAPACITY: usize = 10_000;

/// Default bound on the bytes held by cached fingerprints.
const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// Counters for the coverage section of reports and for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to fingerprint the text.
    pub misses: u64,
    /// Entries removed to make room.
    pub evictions: u64,
    /// Fallback (unparsed) statements handed out, hits included: each
    /// execution of an unparsable statement counts once per statement.
    pub fallbacks: u64,
}

struct Slot {
    key: u128,
    fingerprints: Arc<[Fingerprint]>,
    /// Bytes this entry accounts for against the byte bound.
    bytes: usize,
    /// How many of the fingerprints are fallbacks (added to the counter on
    /// every hit without looking at them).
    fallbacks: u32,
    referenced: bool,
}

/// Bounded text → fingerprints cache; see the module docs.
pub struct FingerprintCache {
    index: HashMap<u128, usize, BuildHasherDefault<KeyHasher>>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    hand: usize,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    stats: CacheStats,
}

impl Default for FingerprintCache {
    /// 10 000 texts and 64 MiB.
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl std::fmt::Debug for FingerprintCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FingerprintCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .field("bytes", &self.bytes)
            .field("stats", &self.stats)
            .finish()
    }
}

impl FingerprintCache {
    /// A cache for up to `capacity` distinct texts (at least 1) and the
    /// default byte bound.
    pub fn new(capacity: usize) -> Self {
        Self::with_limits(capacity, DEFAULT_MAX_BYTES)
    }

    /// A cache bounded by `capacity` texts and `max_bytes` of fingerprint
    /// data (normalized text, table names, hashes). A single text whose
    /// fingerprints exceed an eighth of `max_bytes` is computed but not kept.
    pub fn with_limits(capacity: usize, max_bytes: usize) -> Self {
        let capacity = capacity.max(1);
        FingerprintCache {
            index: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), Default::default()),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            capacity,
            max_bytes,
            bytes: 0,
            stats: CacheStats::default(),
        }
    }

    /// The fingerprints of every statement in `sql`, computed on a miss.
    pub fn get(&mut self, sql: &str) -> Arc<[Fingerprint]> {
        let key = xxh3_128(sql.as_bytes());
        if let Some(&i) = self.index.get(&key) {
            if let Some(slot) = self.slots[i].as_mut() {
                slot.referenced = true;
                self.stats.hits += 1;
                self.stats.fallbacks += u64::from(slot.fallbacks);
                return Arc::clone(&slot.fingerprints);
            }
        }
        self.stats.misses += 1;
        let fingerprints: Arc<[Fingerprint]> = fingerprint_sql(sql).into();
        let fallbacks = fingerprints.iter().filter(|f| f.fallback).count();
        self.stats.fallbacks += fallbacks as u64;
        let bytes = entry_bytes(&fingerprints);
        if bytes <= self.max_bytes / 8 {
            self.insert(
                key,
                Slot {
                    key,
                    fingerprints: Arc::clone(&fingerprints),
                    bytes,
                    fallbacks: u32::try_from(fallbacks).unwrap_or(u32::MAX),
                    referenced: false,
                },
            );
        }
        fingerprints
    }

    /// Counters since the cache was created.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Number of texts currently cached.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The most texts the cache keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn insert(&mut self, key: u128, slot: Slot) {
        while self.index.len() >= self.capacity || self.bytes + slot.bytes > self.max_bytes {
            if !self.evict_one() {
                break;
            }
        }
        self.bytes += slot.bytes;
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.index.insert(key, i);
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
            let Some(slot) = self.slots[i].as_mut() else {
                continue;
            };
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            if let Some(slot) = self.slots[i].take() {
                self.index.remove(&slot.key);
                self.bytes -= slot.bytes;
                self.free.push(i);
                self.stats.evictions += 1;
                return true;
            }
        }
        false
    }
}

/// Approximate heap bytes held by one entry.
fn entry_bytes(fingerprints: &[Fingerprint]) -> usize {
    fingerprints
        .iter()
        .map(|f| {
            std::mem::size_of::<Fingerprint>()
                + f.normalized.len()
                + f.tables.iter().map(|t| t.len() + 24).sum::<usize>()
                + f.literal_hashes.len().saturating_sub(4) * 8
        })
        .sum::<usize>()
        + 64
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
