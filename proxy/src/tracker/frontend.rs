//! The client → server half of the tracker.

use std::borrow::Cow;
use std::sync::Arc;

use qproxy_analyzer::event::Protocol;
use qproxy_analyzer::offset::{decode_bound_offset, top_level_offset, OffsetClause};
use qproxy_analyzer::values::value_hash;
use smallvec::SmallVec;
use xxhash_rust::xxh3::Xxh3;

use super::{
    Effect, Execution, HeldBytes, Note, Now, Pending, Phase, Portal, Statement, Tracker, Unread,
    Verdict,
};
use crate::limits::UNCHARGED_BYTES;
use crate::wire::error_response::ProxyError;
use crate::wire::frontend::{self as fe, tag, Bind, Execute, Parse, Target, TargetRef};
use crate::wire::{body, DecodeError, Fields};

/// What a client that announced SCRAM channel binding is told when the
/// server's offer of it had to be withheld (see [`Tracker::frontend`]).
pub const CHANNEL_BINDING_IMPOSSIBLE: &str = "SCRAM channel binding cannot work through qproxy: \
the client announced channel binding support, but the server's SCRAM-SHA-256-PLUS is bound to \
qproxy's own TLS session with the server, so qproxy withheld it, and the server would refuse \
the login with \"channel binding negotiation error\". Connect with channel_binding=disable, \
or give qproxy a plain upstream leg (sslmode=disable in --upstream).";

impl Tracker {
    /// Whether the relay must hold the next client message with tag `t`
    /// whole for [`Tracker::frontend`]: the messages in
    /// [`fe::is_inspected`], and the SASLInitialResponse that answers an
    /// offer the proxy stripped `-PLUS` from.
    pub fn frontend_inspects(&self, t: u8) -> bool {
        fe::is_inspected(t) || (t == tag::PASSWORD && self.sasl_plus_stripped)
    }

    /// Observes one whole client message that [`Tracker::frontend_inspects`]
    /// asked for.
    ///
    /// A message that does not decode is still the server's to judge: it
    /// is forwarded, and the server answers it (PostgreSQL rejects a
    /// garbled Parse with an error the client can recover from), so only
    /// broken framing, which the relay checks, ends a session.
    ///
    /// The one refusal: a SASLInitialResponse whose GS2 flag is `y` ("I
    /// support channel binding, but the server did not offer it") after the
    /// proxy stripped the server's `SCRAM-SHA-256-PLUS`. The server did
    /// offer it, sees a downgrade, and fails the login with a puzzling
    /// "channel binding negotiation error"; the client is told the real
    /// cause and the fixes instead.
    pub fn frontend(&mut self, msg: &[u8], now: Now) -> Verdict {
        self.now = now;
        let Some(&t) = msg.first() else {
            return Verdict::Forward;
        };
        if t == tag::PASSWORD {
            return self.on_password(msg);
        }
        if self.phase == Phase::Startup {
            // Before the first ReadyForQuery only authentication messages
            // flow.
            return Verdict::Forward;
        }
        if let Err(e) = self.on_frontend(t, msg) {
            self.unreadable(t, e);
        }
        Verdict::Forward
    }

    /// A password message: read only when it answers a stripped SASL
    /// offer, and then only for its channel-binding flag. Nothing else in
    /// it is decoded, so no secret can reach a log from here.
    fn on_password(&mut self, msg: &[u8]) -> Verdict {
        if !std::mem::take(&mut self.sasl_plus_stripped) {
            return Verdict::Forward;
        }
        match fe::sasl_channel_binding_flag(msg) {
            Ok(Some(b'y')) => {
                self.outbox.push(Effect::Note(Note::ChannelBindingRefused));
                Verdict::Refuse {
                    kind: ProxyError::ChannelBindingImpossible,
                    message: CHANNEL_BINDING_IMPOSSIBLE,
                }
            }
            _ => Verdict::Forward,
        }
    }

    /// A client message that does not decode is followed as a request
    /// whose answer is the server's error (see [`Pending::Unreadable`]).
    fn unreadable(&mut self, t: u8, e: DecodeError) {
        self.unread(Unread::UndecodableClient(e));
        match t {
            tag::QUERY => self.push(Pending::Unreadable { simple: true }),
            tag::PARSE | tag::BIND | tag::EXECUTE | tag::DESCRIBE | tag::CLOSE => {
                self.push(Pending::Unreadable { simple: false })
            }
            // The other inspected messages have nothing to decode.
            _ => {}
        }
    }

    fn on_frontend(&mut self, t: u8, msg: &[u8]) -> Result<(), DecodeError> {
        match t {
            tag::QUERY => {
                let sql = fe::query(msg)?;
                let exec = match self.keep_text(None, sql) {
                    Ok((sql, hold)) => {
                        let mut exec = self.new_execution(sql, None, Protocol::Simple);
                        exec.hold = hold;
                        exec
                    }
                    Err(note) => {
                        self.outbox.push(Effect::Note(note));
                        self.unanalysed_execution(Protocol::Simple)
                    }
                };
                self.push(Pending::Query {
                    exec,
                    failed: false,
                });
            }
            tag::PARSE => {
                let parse = Parse::decode(msg)?;
                self.on_parse(parse.name, Some(parse.query));
            }
            tag::BIND => {
                let bind = Bind::decode(msg)?;
                self.on_bind(&bind.portal, &bind.statement, Some(&bind));
            }
            tag::EXECUTE => self.on_execute(Execute::decode(msg)?),
            tag::DESCRIBE => {
                TargetRef::decode(msg)?;
                self.push(Pending::Describe);
            }
            tag::CLOSE => {
                let target = TargetRef::decode(msg)?;
                let mut portal = None;
                match (target.target, target.name.as_ref()) {
                    (Target::Statement, "") => self.unnamed_statement = None,
                    (Target::Statement, name) => {
                        self.statements.remove(name);
                    }
                    (Target::Portal, "") => {
                        self.unnamed_portal = None;
                        portal = Some(Box::from(""));
                    }
                    (Target::Portal, name) => {
                        self.portals.remove(name);
                        portal = Some(Box::from(name));
                    }
                }
                self.push(Pending::Close { portal });
            }
            // During COPY FROM STDIN the server ignores Sync.
            tag::SYNC if !self.copy_in => self.push(Pending::Sync),
            tag::FUNCTION_CALL => self.push(Pending::FunctionCall),
            tag::COPY_DONE | tag::COPY_FAIL => self.copy_in = false,
            _ => {}
        }
        Ok(())
    }

    /// Observes a message the relay forwards without holding it whole (it
    /// is too large for the budget for held bytes): `prefix` is its header
    /// and as much of its body as had arrived. The request is followed as
    /// usual, so the replies still match, but what it runs is counted, not
    /// analysed. When even the names it refers to are not in `prefix`, the
    /// tracker cannot follow the connection any more and stops analysing it.
    pub fn frontend_unheld(&mut self, prefix: &[u8], now: Now) {
        self.now = now;
        let Some(&t) = prefix.first() else {
            return;
        };
        if self.phase == Phase::Startup {
            return;
        }
        let mut names = Fields::new(body(prefix), "unheld message");
        match t {
            tag::QUERY => {
                let exec = self.unanalysed_execution(Protocol::Simple);
                self.push(Pending::Query {
                    exec,
                    failed: false,
                });
            }
            tag::PARSE => match names.text() {
                Ok(name) => self.on_parse(name, None),
                Err(_) => self.desync(),
            },
            tag::BIND => match (names.text(), names.text()) {
                (Ok(portal), Ok(statement)) => self.on_bind(&portal, &statement, None),
                _ => self.desync(),
            },
            tag::SYNC if !self.copy_in => self.push(Pending::Sync),
            tag::FUNCTION_CALL => self.push(Pending::FunctionCall),
            tag::COPY_DONE | tag::COPY_FAIL => self.copy_in = false,
            // Execute, Describe or Close with a name of many kilobytes.
            _ => self.desync(),
        }
    }

    /// An execution the tracker follows but does not analyse.
    fn unanalysed_execution(&self, protocol: Protocol) -> Box<Execution> {
        let mut exec = self.new_execution(Arc::from(""), None, protocol);
        exec.analysed = false;
        exec
    }

    /// A Parse; `query` is `None` when the message was not held whole.
    fn on_parse(&mut self, name: Cow<'_, str>, query: Option<Cow<'_, str>>) {
        let generation = self.next_generation;
        self.next_generation += 1;
        if name.is_empty() {
            let (statement, note) =
                self.statement(self.unnamed_statement.as_ref(), query, generation);
            self.unnamed_statement = Some(statement);
            self.outbox.extend(note.map(Effect::Note));
            self.push(Pending::Parse {
                name: None,
                generation,
            });
            return;
        }
        let name: Arc<str> = Arc::from(name.as_ref());
        if self.statements.len() >= self.limits.max_statements
            && !self.statements.contains_key(name.as_ref())
        {
            // Over the cap: the statement still reaches the server, but its
            // executions are not analysed (counted as untracked).
        } else {
            let (statement, note) =
                self.statement(self.statements.get(name.as_ref()), query, generation);
            self.outbox.extend(note.map(Effect::Note));
            self.statements.insert(
                Box::from(name.as_ref()),
                Statement {
                    name: Some(name.clone()),
                    ..statement
                },
            );
        }
        self.push(Pending::Parse {
            name: Some(name),
            generation,
        });
    }

    /// The statement a Parse creates (its name is set by the caller): the
    /// text shared with `previous` when identical, or a new copy charged to
    /// the budget when large; not analysed when `query` was not held or the
    /// budget could not cover the copy (then the note to log says so).
    fn statement(
        &self,
        previous: Option<&Statement>,
        query: Option<Cow<'_, str>>,
        generation: u64,
    ) -> (Statement, Option<Note>) {
        let (kept, note) = match query.map(|q| self.keep_text(previous, q)) {
            Some(Ok(kept)) => (Some(kept), None),
            Some(Err(note)) => (None, Some(note)),
            None => (None, None),
        };
        let analysed = kept.is_some();
        let (sql, hold) = kept.unwrap_or_else(|| (Arc::from(""), None));
        // A reused text keeps what was read from it; a new one is scanned
        // once for `OFFSET $n`.
        let offset_param = match previous {
            _ if !analysed => None,
            Some(p) if Arc::ptr_eq(&p.sql, &sql) => p.offset_param,
            _ => offset_parameter(&sql),
        };
        let statement = Statement {
            sql,
            hold,
            analysed,
            name: None,
            parsed_at: self.now.wall,
            generation,
            offset_param,
        };
        (statement, note)
    }

    /// A Bind; `bind` is `None` when the message was not held whole (its
    /// parameters are unknown, so executions of the portal are not
    /// analysed).
    fn on_bind(&mut self, portal_name: &str, statement_name: &str, bind: Option<&Bind<'_>>) {
        let statement = if statement_name.is_empty() {
            self.unnamed_statement.clone()
        } else {
            self.statements.get(statement_name).cloned()
        };
        let portal = statement.map(|statement| match bind {
            Some(bind) => {
                let (params_hash, param_hashes) = hash_params(bind, self.limits.max_param_hashes);
                let offset = statement
                    .offset_param
                    .and_then(|n| bound_offset(bind, usize::from(n) - 1));
                Portal {
                    statement,
                    params_hash,
                    param_hashes,
                    result_formats: SmallVec::from_slice(bind.result_formats),
                    offset,
                }
            }
            None => Portal {
                statement: Statement {
                    analysed: false,
                    ..statement
                },
                params_hash: 0,
                param_hashes: SmallVec::new(),
                result_formats: SmallVec::new(),
                offset: None,
            },
        });
        if portal_name.is_empty() {
            self.unnamed_portal = portal;
        } else {
            match portal {
                Some(p)
                    if self.portals.len() < self.limits.max_portals
                        || self.portals.contains_key(portal_name) =>
                {
                    self.portals.insert(Box::from(portal_name), p);
                }
                _ => {
                    self.portals.remove(portal_name);
                }
            }
        }
        self.push(Pending::Bind {
            unnamed: portal_name.is_empty(),
        });
    }

    fn on_execute(&mut self, execute: Execute<'_>) {
        let portal = if execute.portal.is_empty() {
            self.unnamed_portal.as_ref()
        } else {
            self.portals.get(execute.portal.as_ref())
        };
        let exec = match portal {
            Some(p) => {
                let mut exec = self.new_execution(
                    p.statement.sql.clone(),
                    p.statement.name.clone(),
                    Protocol::Extended,
                );
                exec.hold = p.statement.hold.clone();
                exec.analysed = p.statement.analysed;
                exec.params_hash = Some(p.params_hash);
                exec.param_hashes = p.param_hashes.clone();
                exec.result_formats = p.result_formats.clone();
                exec.offset = p.offset;
                exec.portal = Some(Box::from(execute.portal.as_ref()));
                if p.statement.name.is_some() {
                    exec.prepared_at = Some(p.statement.parsed_at);
                }
                Some(exec)
            }
            None => {
                self.outbox.push(Effect::Untracked);
                None
            }
        };
        self.push(Pending::Execute(exec));
    }
}

impl Tracker {
    /// The text to keep for analysis: the previous statement's when the new
    /// one is identical (an ORM that re-sends the same Parse for every query
    /// costs no allocation), else a copy; a large copy is charged to the
    /// budget, and an error means the budget could not cover it.
    fn keep_text(
        &self,
        previous: Option<&Statement>,
        sql: Cow<'_, str>,
    ) -> Result<(Arc<str>, Option<Arc<HeldBytes>>), Note> {
        if let Some(p) = previous.filter(|p| p.analysed && *p.sql == *sql) {
            return Ok((p.sql.clone(), p.hold.clone()));
        }
        let hold = match &self.budget {
            Some(budget) if sql.len() > UNCHARGED_BYTES => {
                let Some(held) = budget.try_reserve(sql.len()) else {
                    return Err(Note::TextOverBudget { bytes: sql.len() });
                };
                Some(Arc::new(held))
            }
            _ => None,
        };
        Ok((Arc::from(sql.as_ref()), hold))
    }
}

/// The bind parameter (1-based) a new statement text's top-level OFFSET
/// takes, found once per text so Bind knows which value to decode.
fn offset_parameter(sql: &str) -> Option<u16> {
    match top_level_offset(sql) {
        Some(OffsetClause::Parameter(n)) => Some(n),
        _ => None,
    }
}

/// The value bound to the OFFSET parameter at `index` (0-based), decoded
/// and not kept beyond the execution (see `qproxy_analyzer::offset`).
fn bound_offset(bind: &Bind<'_>, index: usize) -> Option<u64> {
    let value = bind.params().nth(index)??;
    decode_bound_offset(value, bind.param_is_binary(index))
}

/// Hashes the parameter tuple (formats and values, so equal tuples hash
/// equal) and each value on its own. The values are never kept.
fn hash_params(bind: &Bind<'_>, max_each: usize) -> (u64, SmallVec<[Option<u64>; 4]>) {
    let mut tuple = Xxh3::new();
    tuple.update(bind.formats);
    let mut each = SmallVec::new();
    for (i, value) in bind.params().enumerate() {
        match value {
            Some(v) => {
                tuple.update(&(v.len() as u32).to_le_bytes());
                tuple.update(v);
                if each.len() < max_each {
                    each.push(Some(value_hash(v, bind.param_is_binary(i))));
                }
            }
            None => {
                tuple.update(&u32::MAX.to_le_bytes());
                if each.len() < max_each {
                    each.push(None);
                }
            }
        }
    }
    (tuple.digest(), each)
}
