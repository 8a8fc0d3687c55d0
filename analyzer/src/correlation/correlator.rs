//! The [`Correlator`]: assigns each event to a request context.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::context::{Connection, Freshness, Identity, Key, Registry, SetVar};
use super::statement::{self, Classified, RequestIdSignal, SessionEffect, SetScope, TxEffect};
use super::tags::RequestTags;
use super::{
    ContextId, CorrelationConfig, CorrelationSource, CorrelationStats, EndReason, EndedRequest,
    Observed, StatementRole,
};
use crate::event::{Outcome, QueryEvent, TxStatus};

/// Groups statements into requests, per the rules in the
/// [module docs](super), and keeps a detector state `S` per request.
///
/// Single-threaded by design: the analyzer task owns it and feeds it events
/// in arrival order. All state is bounded by
/// [`CorrelationConfig::max_contexts`].
pub struct Correlator<S> {
    config: CorrelationConfig,
    registry: Registry<S>,
    /// Boxed: the map keeps room for up to twice as many entries as it
    /// holds, and an idle connection should cost its state, not that.
    connections: HashMap<u64, Box<Connection>>,
}

/// Where the resolution step decided a statement goes.
enum Target {
    /// A context named by the application, found or created by key.
    Named {
        source: CorrelationSource,
        key: Key,
        alias: Option<Key>,
        request_id: Arc<str>,
    },
    /// The connection's per-request application_name.
    App(Arc<str>),
    /// The connection's current context.
    Join(ContextId),
    NewTransaction,
    NewIdleGap,
    /// The connection's current untagged group reached a fallback bound:
    /// a new group of the same source carries on.
    Continue(CorrelationSource),
}

impl<S: Default> Correlator<S> {
    /// A correlator with no contexts.
    pub fn new(config: CorrelationConfig) -> Self {
        let registry = Registry::new(config.max_contexts);
        Correlator {
            config,
            registry,
            connections: HashMap::new(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &CorrelationConfig {
        &self.config
    }

    /// Coverage counters so far.
    pub fn stats(&self) -> CorrelationStats {
        self.registry.stats
    }

    /// Contexts currently open.
    pub fn live_contexts(&self) -> usize {
        self.registry.len()
    }

    /// Assigns `ev` to a request context and returns it with the statement's
    /// role. `tags` is [`extract_tags`](super::extract_tags) of `ev.sql`
    /// (callers may cache it per SQL text); `now` drives idle timeouts and
    /// recency and must not go backwards.
    pub fn observe(
        &mut self,
        ev: &QueryEvent,
        tags: Option<&RequestTags>,
        now: Instant,
    ) -> Observed<'_, S> {
        self.registry.flush();
        self.registry.stats.events += 1;
        let class = statement::classify(ev);
        let ev_end = ev
            .started_at
            .checked_add(ev.duration)
            .unwrap_or(ev.started_at);
        self.make_room_for(ev.connection_id);
        let Correlator {
            config,
            registry,
            connections,
        } = self;
        let conn = connections
            .entry(ev.connection_id)
            .or_insert_with(|| Box::new(Connection::new(ev.connection_id, now)));
        conn.last_active = now;
        if conn.current.is_some_and(|c| registry.get(c).is_none()) {
            conn.current = None;
        }

        sync_transaction_status(conn, registry, ev);
        let gap_exceeded = conn.last_end.is_some_and(|end| {
            ev.started_at.duration_since(end).unwrap_or_default() > config.idle_gap
        });
        if let Some(RequestIdSignal::Set { id, scope }) = &class.signal {
            conn.set_var = Some(SetVar {
                id: id.clone(),
                local: *scope == SetScope::Local,
            });
        }

        let (tags, remember) = fresh_tags(conn, registry, ev, tags);
        let target = resolve(conn, registry, ev, &class, tags, gap_exceeded, config);
        match &target {
            Target::Named { key, .. } => {
                conn.set_identity(Identity::Key(key.clone()), ev.started_at)
            }
            Target::App(name) => conn.set_identity(Identity::App(name.clone()), ev.started_at),
            _ => {}
        }
        if let Some((name, key)) = remember {
            conn.remember_prepared(name, key);
        }
        let current = conn.current;
        let cut = matches!(target, Target::Continue(_));
        let ctx_id = context_for(registry, target, current, ev, now);

        if current != Some(ctx_id) {
            if let Some(old) = current {
                let reason = if cut {
                    EndReason::FallbackBound
                } else if gap_exceeded {
                    EndReason::IdleGap
                } else {
                    EndReason::RequestChanged
                };
                if cut {
                    for id in [old, ctx_id] {
                        if let Some(ctx) = registry.get_mut(id) {
                            ctx.info.cut = true;
                        }
                    }
                }
                registry.release(old, conn.id, reason);
            }
            registry.hold(ctx_id, conn.id);
            conn.current = Some(ctx_id);
        }
        registry.touch(ctx_id, now);
        conn.last_end = Some(conn.last_end.map_or(ev_end, |e| e.max(ev_end)));

        let succeeded = matches!(ev.outcome, Outcome::Complete { .. });
        apply_effects(conn, registry, &class, succeeded);

        if registry
            .get(ctx_id)
            .is_some_and(|ctx| ctx.info.source.is_correlated())
        {
            registry.stats.correlated += 1;
        }
        // `ctx_id` is live: it was found live, joined after the check at the
        // top, or just created (eviction runs before insertion), and every end
        // decided since is only queued until the next call.
        let ctx = registry.get_mut(ctx_id).expect("assigned context is live");
        ctx.record(
            ev.connection_id,
            ev_end,
            class.role == StatementRole::Normal,
            tags,
        );
        Observed {
            request: &ctx.info,
            role: class.role,
            state: &mut ctx.state,
        }
    }

    /// The connection closed: its own contexts end, and named contexts no
    /// other connection is using end too.
    pub fn connection_closed(&mut self, connection_id: u64) {
        self.registry.flush();
        if let Some(conn) = self.connections.remove(&connection_id) {
            if let Some(current) = conn.current {
                self.registry
                    .release(current, connection_id, EndReason::ConnectionClosed);
            }
        }
        self.registry.flush();
    }

    /// Ends contexts that have been quiet too long (see
    /// [`CorrelationConfig`]). Call it periodically, after handing over the
    /// events already received, with a `now` that never goes backwards.
    pub fn expire_idle(&mut self, now: Instant) {
        self.registry.flush();
        self.registry.expire(
            now,
            self.config.request_grace,
            self.config.context_idle_timeout,
        );
    }

    /// Ends every open context, for shutdown: DESIGN requires open requests
    /// to be finalized before exit.
    pub fn finish_all(&mut self) {
        self.registry.flush();
        self.registry.end_all(EndReason::Shutdown);
        for conn in self.connections.values_mut() {
            conn.current = None;
        }
    }

    /// Hands over the contexts that have ended, oldest first.
    pub fn drain_ended(&mut self) -> impl Iterator<Item = EndedRequest<S>> + '_ {
        self.registry.flush();
        self.registry.drain()
    }

    /// Keeps the per-connection map within the cap by forgetting the least
    /// recently active connection (its Closed event was probably dropped).
    fn make_room_for(&mut self, connection_id: u64) {
        if self.connections.len() < self.config.max_contexts.max(1)
            || self.connections.contains_key(&connection_id)
        {
            return;
        }
        let oldest = self
            .connections
            .values()
            .min_by_key(|c| c.last_active)
            .map(|c| c.id);
        if let Some(oldest) = oldest {
            self.connection_closed(oldest);
        }
    }
}

/// The key that names the request in `tags`: its request id, else its trace id.
fn primary_key(tags: &RequestTags) -> Option<Key> {
    match (&tags.request_id, &tags.trace_id) {
        (Some(id), _) => Some(Key::Request(id.clone())),
        (None, Some(trace)) => Some(Key::Trace(trace.clone())),
        (None, None) => None,
    }
}

/// The tags that apply to `ev`: `None` when they are the Parse-time tags of
/// a named statement reused after the connection moved to another request.
/// Also returns the statement to remember as fresh.
fn fresh_tags<'t, S: Default>(
    conn: &Connection,
    registry: &mut Registry<S>,
    ev: &QueryEvent,
    tags: Option<&'t RequestTags>,
) -> (Option<&'t RequestTags>, Option<(Arc<str>, Key)>) {
    let tags = tags.filter(|t| t.has_identity() || !t.labels.is_empty());
    let (Some(t), Some(name)) = (tags, &ev.statement_name) else {
        return (tags, None);
    };
    let Some(key) = primary_key(t) else {
        return (tags, None);
    };
    match conn.freshness(name, &key, ev.prepared_at) {
        Freshness::Stale => {
            registry.stats.stale_tags_ignored += 1;
            (None, None)
        }
        Freshness::New | Freshness::Current => (tags, Some((name.clone(), key))),
    }
}

/// Applies the precedence: comment id, SET id, application_name, fallback.
fn resolve<S: Default>(
    conn: &mut Connection,
    registry: &Registry<S>,
    ev: &QueryEvent,
    class: &Classified,
    tags: Option<&RequestTags>,
    gap_exceeded: bool,
    config: &CorrelationConfig,
) -> Target {
    if let Some((t, key)) = tags.and_then(|t| primary_key(t).map(|key| (t, key))) {
        // Both ids given: the trace id also finds this request.
        let alias = t
            .request_id
            .as_ref()
            .and(t.trace_id.clone())
            .map(Key::Trace);
        let request_id = match &key {
            Key::Request(id) | Key::Trace(id) => id.clone(),
        };
        return Target::Named {
            source: CorrelationSource::Comment,
            key,
            alias,
            request_id,
        };
    }
    if let Some(var) = &conn.set_var {
        let key = Key::Request(var.id.clone());
        let request_id = var.id.clone();
        return Target::Named {
            source: CorrelationSource::SetVariable,
            key,
            alias: None,
            request_id,
        };
    }
    if let Some(name) = per_request_app_name(conn, ev) {
        return Target::App(name);
    }
    fallback(
        conn,
        registry,
        gap_exceeded,
        class,
        tags.and_then(|t| t.route.as_ref()),
        ev,
        config,
    )
}

/// Finds or creates the context a target designates.
fn context_for<S: Default>(
    registry: &mut Registry<S>,
    target: Target,
    current: Option<ContextId>,
    ev: &QueryEvent,
    now: Instant,
) -> ContextId {
    let create = |registry: &mut Registry<S>, source, request_id| {
        registry.create(source, request_id, ev.connection_id, ev.started_at, now)
    };
    match target {
        Target::Named {
            source,
            key,
            alias,
            request_id,
        } => {
            let by_key = registry.lookup(&key);
            let found = by_key.or_else(|| alias.as_ref().and_then(|a| registry.lookup(a)));
            // A trace id goes in `trace_id`, not `request_id`.
            let rid = matches!(key, Key::Request(_)).then_some(request_id);
            let id = found.unwrap_or_else(|| create(registry, source, rid));
            // A key that found its context is bound already (binding never
            // moves a key): skip hashing it again on every statement.
            if by_key.is_none() {
                registry.bind_key(key, id);
            }
            if let Some(alias) = alias {
                registry.bind_key(alias, id);
            }
            id
        }
        Target::App(name) => {
            let same = current.filter(|c| {
                registry.get(*c).is_some_and(|ctx| {
                    ctx.info.source == CorrelationSource::ApplicationName
                        && ctx.info.request_id.as_ref() == Some(&name)
                })
            });
            same.unwrap_or_else(|| create(registry, CorrelationSource::ApplicationName, Some(name)))
        }
        Target::Join(id) => id,
        Target::NewTransaction => create(registry, CorrelationSource::Transaction, None),
        Target::NewIdleGap => create(registry, CorrelationSource::IdleGap, None),
        Target::Continue(source) => create(registry, source, None),
    }
}

/// Keeps `in_tx` right when BEGIN/COMMIT events were missed. Only a change
/// of the reported status is trusted: statements pipelined before a Sync all
/// carry the status from before the batch (JDBC sends BEGIN in the same
/// batch as the first query), but a change means a newer ReadyForQuery.
fn sync_transaction_status<S: Default>(
    conn: &mut Connection,
    registry: &mut Registry<S>,
    ev: &QueryEvent,
) {
    let previous = std::mem::replace(&mut conn.last_status, ev.tx_status);
    if previous != ev.tx_status {
        match ev.tx_status {
            TxStatus::Idle if conn.in_tx => end_transaction(conn, registry),
            TxStatus::Idle => {}
            TxStatus::InTransaction | TxStatus::Failed => conn.in_tx = true,
        }
    }
    // A SET LOCAL outside a transaction block lasts only for the rest of its
    // own query string (PostgreSQL's implicit transaction).
    if ev.statement_index == 0 && !conn.in_tx && conn.set_var.as_ref().is_some_and(|v| v.local) {
        conn.set_var = None;
        drop_current(conn, registry, EndReason::TransactionEnded);
    }
}

/// The connection's application_name when it names a request: a value other
/// than the one the connection was first seen with.
fn per_request_app_name(conn: &mut Connection, ev: &QueryEvent) -> Option<Arc<str>> {
    let name = ev.application_name.as_ref()?;
    match &conn.app_baseline {
        None => {
            conn.app_baseline = Some(name.clone());
            None
        }
        Some(baseline) if baseline == name => None,
        Some(_) => Some(name.clone()),
    }
}

/// Grouping when the application named nothing.
fn fallback<S: Default>(
    conn: &Connection,
    registry: &Registry<S>,
    gap_exceeded: bool,
    class: &Classified,
    route: Option<&Arc<str>>,
    ev: &QueryEvent,
    config: &CorrelationConfig,
) -> Target {
    if let Some((id, ctx)) = conn
        .current
        .and_then(|c| registry.get(c).map(|ctx| (c, ctx)))
    {
        let route_changed = matches!((&ctx.info.route, route), (Some(a), Some(b)) if a != b);
        let full = ctx.is_full(
            ev.started_at,
            config.fallback_max_duration,
            config.fallback_max_statements,
        );
        if conn.in_tx {
            // A transaction stays in the request it began in, unless it is
            // an untagged one that outgrew the bounds: then it goes on in
            // a new group (COMMIT ends whichever is current).
            return if full {
                Target::Continue(ctx.info.source)
            } else {
                Target::Join(id)
            };
        }
        if full && !gap_exceeded && !route_changed && ctx.info.source == CorrelationSource::IdleGap
        {
            // The burst never went quiet: a new group of the same kind
            // carries on (and a BEGIN still starts a transaction below).
            if !matches!(class.tx, TxEffect::Begin | TxEffect::Restart) {
                return Target::Continue(CorrelationSource::IdleGap);
            }
        }
        let sticky = match ctx.info.source {
            CorrelationSource::Comment | CorrelationSource::SetVariable => true,
            CorrelationSource::IdleGap => !matches!(class.tx, TxEffect::Begin | TxEffect::Restart),
            CorrelationSource::ApplicationName | CorrelationSource::Transaction => false,
        };
        if sticky && !gap_exceeded && !route_changed && !full {
            return Target::Join(id);
        }
    }
    if conn.in_tx || matches!(class.tx, TxEffect::Begin | TxEffect::Restart) {
        Target::NewTransaction
    } else {
        Target::NewIdleGap
    }
}

/// What the statement does after it has been assigned: transaction
/// boundaries, request-id resets, session resets.
fn apply_effects<S: Default>(
    conn: &mut Connection,
    registry: &mut Registry<S>,
    class: &Classified,
    ok: bool,
) {
    match class.tx {
        TxEffect::Begin => conn.in_tx = true,
        TxEffect::End => end_transaction(conn, registry),
        TxEffect::Restart => {
            end_transaction(conn, registry);
            conn.in_tx = true;
        }
        TxEffect::None => {}
    }
    if class.signal == Some(RequestIdSignal::Clear) {
        conn.set_var = None;
        drop_current(conn, registry, EndReason::Reset);
    }
    if !ok {
        return;
    }
    match class.session {
        SessionEffect::ResetAll => {
            if conn.set_var.take().is_some() {
                drop_current(conn, registry, EndReason::Reset);
            }
        }
        SessionEffect::DiscardAll => {
            conn.set_var = None;
            conn.forget_prepared();
            drop_current(conn, registry, EndReason::Reset);
        }
        SessionEffect::DeallocateAll => conn.forget_prepared(),
        SessionEffect::None => {}
    }
    debug_assert!(class.role != StatementRole::Correlation || class.signal.is_some());
}

/// The transaction ended: a transaction context ends with it, and so does a
/// request id set with SET LOCAL.
fn end_transaction<S: Default>(conn: &mut Connection, registry: &mut Registry<S>) {
    conn.in_tx = false;
    let local_var = conn.set_var.as_ref().is_some_and(|v| v.local);
    if local_var {
        conn.set_var = None;
    }
    let current_source = conn
        .current
        .and_then(|c| registry.get(c))
        .map(|ctx| ctx.info.source);
    let ends = match current_source {
        Some(CorrelationSource::Transaction) => true,
        Some(CorrelationSource::SetVariable) => local_var,
        _ => false,
    };
    if ends {
        drop_current(conn, registry, EndReason::TransactionEnded);
    }
}

fn drop_current<S: Default>(conn: &mut Connection, registry: &mut Registry<S>, reason: EndReason) {
    if let Some(current) = conn.current.take() {
        registry.release(current, conn.id, reason);
    }
}
