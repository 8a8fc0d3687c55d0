//! Request tags per SQL text, so a statement run many times reads its
//! comments once.
//!
//! Reading tags (locating the edge comments, URL-decoding values, building
//! the route) was the largest part of analysing a statement whose
//! fingerprint is cached. The texts that carry tags repeat: an ORM sends
//! the same text, request id included, for every execution of one shape in
//! one request (the children of an N+1 are exactly that), and prepared
//! statements repeat across requests. Entries are keyed by the fingerprint
//! cache's 128-bit text hash (see [`crate::fingerprint::FingerprintCache`]
//! for why a hash is safe as a key), so a hit costs no extra pass over the
//! text. Memory is bounded by the entry count: an entry is a pointer for a
//! text without tags, and at most a few kilobytes with them (every value is
//! capped at [`MAX_VALUE_LEN`](crate::correlation::tags::MAX_VALUE_LEN)
//! bytes, and there are at most a dozen: ids, labels, route and source).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::correlation::{extract_tags, RequestTags};
use crate::detect::n_plus_one::IdHasher;

/// Bounded text → tags cache. When full it starts over rather than track
/// recency: texts with a per-request id stop repeating once their request
/// ends, so old entries are mostly dead weight anyway.
pub(crate) struct RequestTagsCache {
    /// Boxed, so the many texts without tags cost a pointer, not a
    /// `RequestTags`.
    entries: HashMap<u128, Option<Box<RequestTags>>, BuildHasherDefault<IdHasher>>,
    capacity: usize,
}

impl RequestTagsCache {
    /// A cache of at most `capacity` texts (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        RequestTagsCache {
            entries: HashMap::default(),
            capacity: capacity.max(1),
        }
    }

    /// [`extract_tags`] of `sql`, whose text hash is `key`.
    pub(crate) fn get(&mut self, key: u128, sql: &str) -> Option<&RequestTags> {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.clear();
        }
        self.entries
            .entry(key)
            .or_insert_with(|| extract_tags(sql).map(Box::new))
            .as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::FingerprintCache;

    #[test]
    fn cached_tags_equal_extracted_tags_and_the_cache_stays_bounded() {
        let mut cache = RequestTagsCache::new(2);
        let texts = [
            "SELECT 1 /*request_id='a',route='%2Fposts'*/",
            "SELECT 1",
            "SELECT 1 /*request_id='b'*/",
            "SELECT 1 /*request_id='a',route='%2Fposts'*/",
        ];
        for sql in texts.iter().chain(&texts) {
            let key = FingerprintCache::text_key(sql);
            assert_eq!(cache.get(key, sql), extract_tags(sql).as_ref(), "{sql}");
            assert!(cache.entries.len() <= 2);
        }
    }
}
