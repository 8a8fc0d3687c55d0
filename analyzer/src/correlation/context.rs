//! The store of live request contexts and per-connection state, and the caps
//! that keep both bounded.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use smallvec::SmallVec;

use super::tags::RequestTags;
use super::{ContextId, CorrelationSource, CorrelationStats, EndReason, EndedRequest, RequestInfo};
use crate::event::TxStatus;

/// Connections remembered per context (for the report); a request fanned
/// out over more is still one context.
const MAX_CONNECTIONS_PER_CONTEXT: usize = 8;
/// Tagged named statements whose freshness is tracked per connection. Only
/// statements whose Parse text carries a request or trace id are tracked, and
/// those are mostly used within their own request; forgetting one only makes
/// its next execution count as fresh. 64 entries × 10 000 connections stays
/// in the tens of megabytes at worst.
const MAX_PREPARED_PER_CONNECTION: usize = 64;

/// How an application-named context is found again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// A request id (comment or SET); both sources share the namespace since
    /// the same id means the same request.
    Request(Arc<str>),
    /// A trace id, when no request id names the request.
    Trace(Arc<str>),
}

/// The explicit request identity a connection last carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Identity {
    Key(Key),
    App(Arc<str>),
}

/// A live context.
pub(crate) struct Context<S> {
    pub(crate) info: RequestInfo,
    pub(crate) state: S,
    /// `by_key` entries pointing here, removed when it ends.
    keys: SmallVec<[Key; 2]>,
    /// Connections whose current request this is.
    holders: SmallVec<[u64; 2]>,
    connections: SmallVec<[u64; 2]>,
    started_at: SystemTime,
    ended_at: SystemTime,
    last_active: Instant,
    touch: u64,
    statements: u64,
    work_statements: u64,
}

impl<S> Context<S> {
    /// Records one statement.
    pub(crate) fn record(
        &mut self,
        connection: u64,
        end: SystemTime,
        work: bool,
        tags: Option<&RequestTags>,
    ) {
        self.statements += 1;
        self.work_statements += u64::from(work);
        self.ended_at = self.ended_at.max(end);
        if !self.connections.contains(&connection)
            && self.connections.len() < MAX_CONNECTIONS_PER_CONTEXT
        {
            self.connections.push(connection);
        }
        let Some(tags) = tags else { return };
        let info = &mut self.info;
        if info.request_id.is_none() && info.source == CorrelationSource::Comment {
            info.request_id.clone_from(&tags.request_id);
        }
        if info.trace_id.is_none() {
            info.trace_id.clone_from(&tags.trace_id);
        }
        if info.route.is_none() {
            info.route.clone_from(&tags.route);
        }
        for (key, value) in &tags.labels {
            if !info.labels.iter().any(|(k, _)| k == key) {
                info.labels.push((*key, value.clone()));
            }
        }
    }

    /// Whether an untagged group has reached a fallback bound (see
    /// [`CorrelationConfig::fallback_max_duration`]) by a statement that
    /// starts at `at`. Named requests are never cut.
    ///
    /// [`CorrelationConfig::fallback_max_duration`]: super::CorrelationConfig::fallback_max_duration
    pub(crate) fn is_full(
        &self,
        at: SystemTime,
        max_duration: std::time::Duration,
        max_statements: u64,
    ) -> bool {
        if self.info.source.is_correlated() {
            return false;
        }
        self.statements >= max_statements.max(1)
            || at.duration_since(self.started_at).unwrap_or_default() >= max_duration
    }

    fn is_per_connection(&self) -> bool {
        !matches!(
            self.info.source,
            CorrelationSource::Comment | CorrelationSource::SetVariable
        )
    }
}

/// Live contexts, the keys that find them, their recency order and the queue
/// of ended ones.
pub(crate) struct Registry<S> {
    /// Boxed: a context is a few hundred bytes and the map keeps spare
    /// slots, so unboxed values would cost that much per empty slot too.
    contexts: HashMap<ContextId, Box<Context<S>>>,
    by_key: HashMap<Key, ContextId>,
    /// `(touch, id)`: least recently active first, for eviction and expiry.
    lru: BTreeSet<(u64, ContextId)>,
    /// Ends decided while the context is still borrowed (the COMMIT that
    /// ends a transaction belongs to it); applied by [`Registry::flush`].
    pending: Vec<(ContextId, EndReason)>,
    ended: VecDeque<EndedRequest<S>>,
    next_id: u64,
    touches: u64,
    max_contexts: usize,
    pub(crate) stats: CorrelationStats,
}

impl<S: Default> Registry<S> {
    pub(crate) fn new(max_contexts: usize) -> Self {
        Registry {
            contexts: HashMap::new(),
            by_key: HashMap::new(),
            lru: BTreeSet::new(),
            pending: Vec::new(),
            ended: VecDeque::new(),
            next_id: 0,
            touches: 0,
            max_contexts: max_contexts.max(1),
            stats: CorrelationStats::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.contexts.len()
    }

    pub(crate) fn get(&self, id: ContextId) -> Option<&Context<S>> {
        self.contexts.get(&id).map(|c| &**c)
    }

    pub(crate) fn get_mut(&mut self, id: ContextId) -> Option<&mut Context<S>> {
        self.contexts.get_mut(&id).map(|c| &mut **c)
    }

    pub(crate) fn lookup(&self, key: &Key) -> Option<ContextId> {
        self.by_key.get(key).copied()
    }

    /// Starts a context, first evicting the least recently active one when
    /// at the cap.
    pub(crate) fn create(
        &mut self,
        source: CorrelationSource,
        request_id: Option<Arc<str>>,
        connection_id: u64,
        start: SystemTime,
        now: Instant,
    ) -> ContextId {
        while self.contexts.len() >= self.max_contexts {
            let Some(&(_, victim)) = self.lru.iter().next() else {
                break;
            };
            self.stats.contexts_evicted += 1;
            self.end_now(victim, EndReason::Evicted);
        }
        let id = ContextId(self.next_id);
        self.next_id += 1;
        self.stats.contexts_started += 1;
        let info = RequestInfo {
            id,
            source,
            request_id,
            trace_id: None,
            route: None,
            labels: Default::default(),
            connection_id,
            cut: false,
        };
        let ctx = Context {
            info,
            state: S::default(),
            keys: SmallVec::new(),
            holders: SmallVec::new(),
            connections: SmallVec::new(),
            started_at: start,
            ended_at: start,
            last_active: now,
            touch: 0,
            statements: 0,
            work_statements: 0,
        };
        self.contexts.insert(id, Box::new(ctx));
        self.touch(id, now);
        id
    }

    /// Makes `key` find `id`, unless it already finds another live context.
    pub(crate) fn bind_key(&mut self, key: Key, id: ContextId) {
        let Some(ctx) = self.contexts.get_mut(&id) else {
            return;
        };
        if self.by_key.contains_key(&key) {
            return;
        }
        ctx.keys.push(key.clone());
        self.by_key.insert(key, id);
    }

    /// Marks activity: recency order and idle clocks.
    pub(crate) fn touch(&mut self, id: ContextId, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&id) else {
            return;
        };
        self.lru.remove(&(ctx.touch, id));
        self.touches += 1;
        ctx.touch = self.touches;
        ctx.last_active = now;
        self.lru.insert((ctx.touch, id));
    }

    pub(crate) fn hold(&mut self, id: ContextId, connection: u64) {
        if let Some(ctx) = self.contexts.get_mut(&id) {
            if !ctx.holders.contains(&connection) {
                ctx.holders.push(connection);
            }
        }
    }

    /// `connection` no longer has `id` as its current request. A
    /// per-connection context ends (it cannot be reached again); a named one
    /// lingers for the grace period, unless the connection closed and it was
    /// the last one using it.
    pub(crate) fn release(&mut self, id: ContextId, connection: u64, reason: EndReason) {
        let Some(ctx) = self.contexts.get_mut(&id) else {
            return;
        };
        ctx.holders.retain(|c| *c != connection);
        let closed_last = reason == EndReason::ConnectionClosed && ctx.holders.is_empty();
        if ctx.is_per_connection() || closed_last {
            self.pending.push((id, reason));
        }
    }

    /// Applies the ends decided during the previous call.
    pub(crate) fn flush(&mut self) {
        for (id, reason) in std::mem::take(&mut self.pending) {
            self.end_now(id, reason);
        }
    }

    pub(crate) fn end_now(&mut self, id: ContextId, reason: EndReason) {
        let Some(ctx) = self.contexts.remove(&id) else {
            return;
        };
        self.lru.remove(&(ctx.touch, id));
        for key in &ctx.keys {
            if self.by_key.get(key) == Some(&id) {
                self.by_key.remove(key);
            }
        }
        self.stats.contexts_ended += 1;
        if self.ended.len() >= self.max_contexts {
            self.ended.pop_front();
            self.stats.ended_dropped += 1;
        }
        self.ended.push_back(EndedRequest {
            request: ctx.info,
            connections: ctx.connections,
            started_at: ctx.started_at,
            ended_at: ctx.ended_at,
            statements: ctx.statements,
            work_statements: ctx.work_statements,
            reason,
            state: ctx.state,
        });
    }

    /// Ends contexts quiet for too long: `grace` for ones no connection uses
    /// and for idle-gap bursts, `timeout` for the rest. `now` must not go
    /// backwards between calls (it is an `Instant`), which lets the walk stop
    /// at the first context younger than `grace`.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        grace: std::time::Duration,
        timeout: std::time::Duration,
    ) {
        let mut due = Vec::new();
        for &(_, id) in &self.lru {
            let Some(ctx) = self.contexts.get(&id) else {
                continue;
            };
            let quiet = now.saturating_duration_since(ctx.last_active);
            if quiet < grace.min(timeout) {
                break;
            }
            let idle_gap = ctx.info.source == CorrelationSource::IdleGap;
            if quiet >= grace && idle_gap {
                due.push((id, EndReason::IdleGap));
            } else if quiet >= grace && ctx.holders.is_empty() {
                due.push((id, EndReason::Released));
            } else if quiet >= timeout {
                due.push((id, EndReason::IdleTimeout));
            }
        }
        for (id, reason) in due {
            self.end_now(id, reason);
        }
    }

    /// Ends every live context, oldest first.
    pub(crate) fn end_all(&mut self, reason: EndReason) {
        let mut ids: Vec<ContextId> = self.contexts.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.end_now(id, reason);
        }
    }

    pub(crate) fn drain(&mut self) -> std::collections::vec_deque::Drain<'_, EndedRequest<S>> {
        self.ended.drain(..)
    }
}

/// A request id set on a connection by SET or `set_config`.
pub(crate) struct SetVar {
    pub(crate) id: Arc<str>,
    pub(crate) local: bool,
}

/// When a named statement's tags were last fresh.
struct Prepared {
    key: Key,
    epoch: u64,
}

/// What correlation remembers about one client connection.
pub(crate) struct Connection {
    pub(crate) id: u64,
    /// The context its last statement went to.
    pub(crate) current: Option<ContextId>,
    /// Inside a transaction block, tracked from BEGIN/COMMIT and
    /// ReadyForQuery status changes (see `Correlator::observe`).
    pub(crate) in_tx: bool,
    pub(crate) last_status: TxStatus,
    /// End of the latest statement, for idle gaps.
    pub(crate) last_end: Option<SystemTime>,
    pub(crate) last_active: Instant,
    pub(crate) set_var: Option<SetVar>,
    /// application_name when first seen; only a different value names a
    /// request.
    pub(crate) app_baseline: Option<Arc<str>>,
    /// Bumped whenever the explicit identity changes; a named statement's
    /// tags are fresh only within the epoch they were first applied in.
    pub(crate) identity: Option<Identity>,
    pub(crate) epoch: u64,
    /// When the explicit identity last changed (start of that statement).
    pub(crate) identity_since: Option<SystemTime>,
    prepared: HashMap<Arc<str>, Prepared>,
}

/// Whether a named statement's tags still apply.
pub(crate) enum Freshness {
    /// First execution, or re-Parsed with other tags.
    New,
    /// Applied before within the current identity epoch.
    Current,
    /// From a request the connection has since left.
    Stale,
}

impl Connection {
    pub(crate) fn new(id: u64, now: Instant) -> Self {
        Connection {
            id,
            current: None,
            in_tx: false,
            last_status: TxStatus::Idle,
            last_end: None,
            last_active: now,
            set_var: None,
            app_baseline: None,
            identity: None,
            epoch: 0,
            identity_since: None,
            prepared: HashMap::new(),
        }
    }

    pub(crate) fn freshness(
        &self,
        name: &str,
        key: &Key,
        prepared_at: Option<SystemTime>,
    ) -> Freshness {
        let current = matches!(&self.identity, Some(Identity::Key(k)) if k == key);
        match self.prepared.get(name) {
            Some(p) if p.key != *key => Freshness::New,
            Some(p) if p.epoch == self.epoch || current => Freshness::Current,
            Some(_) => Freshness::Stale,
            // First execution: stale if the connection moved to another
            // request after the statement was prepared (prepared in request
            // A, first executed in request B).
            None => match (prepared_at, self.identity_since) {
                (Some(parsed), Some(since)) if !current && parsed < since => Freshness::Stale,
                _ => Freshness::New,
            },
        }
    }

    /// Switches the explicit identity, starting a new epoch when it changes.
    pub(crate) fn set_identity(&mut self, identity: Identity, at: SystemTime) {
        if self.identity.as_ref() != Some(&identity) {
            self.epoch += 1;
            self.identity = Some(identity);
            self.identity_since = Some(at);
        }
    }

    pub(crate) fn remember_prepared(&mut self, name: Arc<str>, key: Key) {
        if self.prepared.len() >= MAX_PREPARED_PER_CONNECTION && !self.prepared.contains_key(&name)
        {
            let oldest = self
                .prepared
                .iter()
                .min_by_key(|(_, p)| p.epoch)
                .map(|(n, _)| n.clone());
            if let Some(oldest) = oldest {
                self.prepared.remove(&oldest);
            }
        }
        let epoch = self.epoch;
        self.prepared.insert(name, Prepared { key, epoch });
    }

    pub(crate) fn forget_prepared(&mut self) {
        self.prepared.clear();
    }
}
