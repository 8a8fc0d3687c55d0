//! Request tags read from the comments ORMs and tracing libraries add to SQL.
//!
//! Two comment styles cover what is emitted in practice:
//! - sqlcommenter, `/*key='value',...*/`, from google/OpenTelemetry
//!   sqlcommenter (Django, SQLAlchemy, psycopg2, Spring/Hibernate, knex,
//!   sequelize), OpenTelemetry's SQL instrumentations (`traceparent`) and
//!   Rails 7.1+ `ActiveRecord::QueryLogs` in its `:sqlcommenter` format.
//!   Keys and values are URL-encoded, `'` is escaped as `\'`, and Python
//!   integrations may double `%` as `%%`.
//! - marginalia, `/*key:value,...*/`, from the marginalia gem and Rails'
//!   `:legacy` QueryLogs format. Values are taken as written.
//!
//! Only comments at the start or end of the statement are read (the
//! private `comment` module), the first value of a key wins (the trailing
//! comment is read first, as sqlcommenter appends), unknown keys are ignored,
//! and values are capped at [`MAX_VALUE_LEN`] bytes. Nothing here fails:
//! text that is not a tag comment simply yields no tags.
//!
//! Besides the request's identity and labels, a comment may say where the
//! statement was issued ([`RequestTags::source`]): Rails'
//! `source_location`, marginalia's `line`, or OpenTelemetry's
//! `code.filepath`/`code.lineno`/`code.function` (see [`crate::source`]).

use std::sync::Arc;

use smallvec::SmallVec;

use super::comment::{edge_comments, pairs};
use crate::source::SourceLocation;

/// Longest tag value kept, in bytes. Tags are stored per request context, so
/// a hostile or buggy tagger must not be able to make them large.
pub const MAX_VALUE_LEN: usize = 200;

/// The descriptive tags qproxy keeps. A closed set, so label storage per
/// request is bounded and report/metric code can match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelKey {
    /// `application`: the app's name (Rails, Spring).
    Application,
    /// `controller`: Rails controller, Django view name.
    Controller,
    /// `action`: Rails action (or HTTP method in some integrations).
    Action,
    /// `route`: URL pattern (Django, Express, Spring).
    Route,
    /// `framework`: framework and version, e.g. `django:4.2`.
    Framework,
    /// `db_driver`: the database driver, e.g. `psycopg2`.
    DbDriver,
    /// `job`: a background job class (Rails ActiveJob, Sidekiq).
    Job,
}

impl LabelKey {
    /// The key as sqlcommenter spells it; used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelKey::Application => "application",
            LabelKey::Controller => "controller",
            LabelKey::Action => "action",
            LabelKey::Route => "route",
            LabelKey::Framework => "framework",
            LabelKey::DbDriver => "db_driver",
            LabelKey::Job => "job",
        }
    }
}

/// Labels of one request: at most one value per [`LabelKey`], so never more
/// than seven entries.
pub type Labels = SmallVec<[(LabelKey, Arc<str>); 4]>;

/// What the comments of one statement say about the request that sent it.
///
/// Values are `Arc<str>` because a context keeps them for its lifetime and a
/// caller may cache the tags of a SQL text: cloning is a reference count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestTags {
    /// From `request_id`, `x-request-id`, `correlation_id` and their
    /// spellings (case, `-`/`_` insensitive). The preferred request identity.
    pub request_id: Option<Arc<str>>,
    /// The 32-hex-digit trace id of a valid W3C `traceparent`, lower-cased.
    /// Identifies the request when no request id is given.
    pub trace_id: Option<Arc<str>>,
    /// `route`, else `controller#action`, else `controller`, else `job`:
    /// what a finding names as "where it happened".
    pub route: Option<Arc<str>>,
    /// The descriptive tags found, in the order read.
    pub labels: Labels,
    /// Where in the application the statement was issued: Rails'
    /// `source_location` or marginalia's `line` (one backtrace line), else
    /// OpenTelemetry's `code.filepath` / `code.lineno` / `code.function`.
    /// Describes the statement, not the request: correlation ignores it.
    pub source: Option<Arc<SourceLocation>>,
}

impl RequestTags {
    /// The value of one label, if present.
    pub fn label(&self, key: LabelKey) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| &**v)
    }

    /// Whether the tags identify a request (rather than only describe it).
    pub fn has_identity(&self) -> bool {
        self.request_id.is_some() || self.trace_id.is_some()
    }

    fn is_empty(&self) -> bool {
        !self.has_identity() && self.labels.is_empty() && self.source.is_none()
    }
}

/// Which field a comment key feeds.
#[derive(Clone, Copy)]
enum Field {
    RequestId,
    TraceParent,
    Label(LabelKey),
    /// One backtrace line: Rails `source_location`, marginalia `line`.
    SourceLine,
    /// OpenTelemetry `code.filepath`.
    CodeFile,
    /// OpenTelemetry `code.lineno`.
    CodeLine,
    /// OpenTelemetry `code.function`.
    CodeFunction,
}

/// Reads the request tags from the leading and trailing comments of `sql`.
/// `None` when no known tag is present. Cost is bounded by the comment window,
/// not by the length of `sql`.
pub fn extract(sql: &str) -> Option<RequestTags> {
    let mut tags = RequestTags::default();
    // OpenTelemetry's file, line and function, combined once every comment
    // has been read (they may come in any order).
    let mut code: [Option<String>; 3] = Default::default();
    for body in edge_comments(sql) {
        for pair in pairs(body) {
            let Some(field) = classify_key(&pair.key) else {
                continue;
            };
            let Some(value) = capped(&pair.value) else {
                continue;
            };
            match field {
                Field::RequestId if tags.request_id.is_none() => {
                    tags.request_id = Some(value.into())
                }
                Field::TraceParent if tags.trace_id.is_none() => tags.trace_id = trace_id(value),
                Field::Label(key) if tags.label(key).is_none() => {
                    tags.labels.push((key, value.into()))
                }
                Field::SourceLine if tags.source.is_none() => {
                    tags.source = SourceLocation::from_backtrace_line(value).map(Arc::new)
                }
                Field::CodeFile | Field::CodeLine | Field::CodeFunction => {
                    let slot = match field {
                        Field::CodeFile => 0,
                        Field::CodeLine => 1,
                        _ => 2,
                    };
                    code[slot].get_or_insert_with(|| value.to_string());
                }
                _ => {}
            }
        }
    }
    if let (None, [Some(file), line, function]) = (&tags.source, &code) {
        tags.source =
            SourceLocation::from_parts(file, line.as_deref(), function.as_deref()).map(Arc::new);
    }
    tags.route = derive_route(&tags);
    (!tags.is_empty()).then_some(tags)
}

/// The trace id of a W3C `traceparent` (`vv-<32 hex>-<16 hex>-ff`), lower-cased;
/// `None` unless every part has the right length and is hex, the version is
/// not the reserved `ff`, and neither id is all zeros (the spec's invalid
/// values).
pub fn trace_id(traceparent: &str) -> Option<Arc<str>> {
    let mut parts = traceparent.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_hexdigit());
    let nonzero = |s: &str| s.bytes().any(|c| c != b'0');
    let ok = hex(version, 2)
        && !version.eq_ignore_ascii_case("ff")
        && hex(trace, 32)
        && nonzero(trace)
        && hex(parent, 16)
        && nonzero(parent)
        && hex(flags, 2)
        // Version 00 has exactly four parts; later versions may append more.
        && (version != "00" || parts.next().is_none());
    ok.then(|| trace.to_ascii_lowercase().into())
}

fn derive_route(tags: &RequestTags) -> Option<Arc<str>> {
    if let Some((_, route)) = tags.labels.iter().find(|(k, _)| *k == LabelKey::Route) {
        return Some(route.clone());
    }
    match (
        tags.label(LabelKey::Controller),
        tags.label(LabelKey::Action),
    ) {
        (Some(c), Some(a)) => return Some(capped(&format!("{c}#{a}"))?.into()),
        (Some(c), None) => return Some(c.into()),
        _ => {}
    }
    tags.label(LabelKey::Job).map(Arc::from)
}

/// Matches a key ignoring ASCII case, `-` and `_`, so `X-Request-ID`,
/// `x_request_id`, `requestId` and `request-id` are one key.
fn classify_key(key: &str) -> Option<Field> {
    const KEYS: &[(&str, Field)] = &[
        ("requestid", Field::RequestId),
        ("xrequestid", Field::RequestId),
        ("correlationid", Field::RequestId),
        ("xcorrelationid", Field::RequestId),
        ("traceparent", Field::TraceParent),
        ("route", Field::Label(LabelKey::Route)),
        ("controller", Field::Label(LabelKey::Controller)),
        ("action", Field::Label(LabelKey::Action)),
        ("framework", Field::Label(LabelKey::Framework)),
        ("application", Field::Label(LabelKey::Application)),
        ("dbdriver", Field::Label(LabelKey::DbDriver)),
        ("job", Field::Label(LabelKey::Job)),
        ("sourcelocation", Field::SourceLine),
        ("line", Field::SourceLine),
        ("code.filepath", Field::CodeFile),
        ("code.file.path", Field::CodeFile),
        ("code.lineno", Field::CodeLine),
        ("code.line.number", Field::CodeLine),
        ("code.function", Field::CodeFunction),
        ("code.function.name", Field::CodeFunction),
    ];
    KEYS.iter()
        .find(|(name, _)| normalized_eq(key, name))
        .map(|(_, field)| *field)
}

fn normalized_eq(key: &str, normalized: &str) -> bool {
    let mut folded = key
        .bytes()
        .filter(|c| !matches!(c, b'-' | b'_'))
        .map(|c| c.to_ascii_lowercase());
    let mut want = normalized.bytes();
    loop {
        match (folded.next(), want.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Trims and caps a value at [`MAX_VALUE_LEN`] bytes on a character boundary;
/// `None` when nothing is left.
fn capped(value: &str) -> Option<&str> {
    let value = value.trim();
    let mut end = value.len().min(MAX_VALUE_LEN);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let value = &value[..end];
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_spellings() {
        for k in [
            "request_id",
            "X-Request-ID",
            "requestId",
            "x_request_id",
            "Correlation-Id",
            "x-correlation-id",
        ] {
            assert!(matches!(classify_key(k), Some(Field::RequestId)), "{k}");
        }
        assert!(classify_key("request").is_none());
        assert!(classify_key("tracestate").is_none());
        assert!(matches!(
            classify_key("db_driver"),
            Some(Field::Label(LabelKey::DbDriver))
        ));
    }

    #[test]
    fn traceparent_validation() {
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(
            trace_id(good).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(
            trace_id("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-00").as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert!(trace_id("00-00000000000000000000000000000000-b7ad6b7169203331-01").is_none());
        assert!(trace_id("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01").is_none());
        assert!(trace_id("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").is_none());
        assert!(trace_id("00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01").is_none());
        assert!(trace_id("00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01").is_none());
        assert!(trace_id("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xx").is_none());
        assert!(trace_id("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xx").is_some());
    }

    #[test]
    fn caps_on_char_boundary() {
        let long = "é".repeat(150);
        let c = capped(&long).unwrap();
        assert!(c.len() <= MAX_VALUE_LEN && c.len() % 2 == 0);
        assert_eq!(capped("   "), None);
    }
}
