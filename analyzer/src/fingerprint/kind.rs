//! What kind of statement a fingerprint stands for.
//!
//! Detectors and metrics treat statement kinds differently: `BEGIN`/`COMMIT`
//! must not skew per-query statistics, only reads can be unbounded SELECTs,
//! and correlation's transaction fallback needs to see where transactions
//! end. The kind is derived from the parsed statement, or from the leading
//! keywords when sqlparser could not parse it.

use sqlparser::ast::{SetExpr, Statement};

/// The kind of a statement, serialized in snake_case (`"select"`, `"ddl"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementKind {
    /// `SELECT`, `VALUES`, `TABLE`, and `WITH ... SELECT`.
    Select,
    /// `INSERT` (also as the body of a `WITH`).
    Insert,
    /// `UPDATE` (also as the body of a `WITH`).
    Update,
    /// `DELETE` (also as the body of a `WITH`).
    Delete,
    /// `MERGE`.
    Merge,
    /// `COPY ... FROM/TO`.
    Copy,
    /// `BEGIN` / `START TRANSACTION`.
    Begin,
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT` of the whole transaction.
    Rollback,
    /// `SAVEPOINT`, `RELEASE SAVEPOINT`, `ROLLBACK TO SAVEPOINT`: transaction
    /// control that does not end the transaction.
    Savepoint,
    /// `SET`, `RESET`, `SET TRANSACTION`, `DISCARD`.
    Set,
    /// `SHOW`.
    Show,
    /// Schema changes: `CREATE`, `ALTER`, `DROP`, `TRUNCATE`, `COMMENT ON`,
    /// `GRANT`, `REVOKE`.
    Ddl,
    /// `PREPARE name AS ...`.
    Prepare,
    /// `EXECUTE name (...)`.
    Execute,
    /// `DEALLOCATE name`.
    Deallocate,
    /// `DECLARE`, `FETCH`, `MOVE`, `CLOSE` (cursors).
    Cursor,
    /// `LISTEN`, `NOTIFY`, `UNLISTEN`.
    Notify,
    /// `EXPLAIN ...`.
    Explain,
    /// Anything else (`VACUUM`, `ANALYZE`, `LOCK`, `CALL`, `DO`, ...).
    Other,
}

impl StatementKind {
    /// Whether this statement starts, ends or partitions a transaction.
    /// Such statements are counted but kept out of per-query statistics.
    pub fn is_transaction_control(self) -> bool {
        matches!(
            self,
            StatementKind::Begin
                | StatementKind::Commit
                | StatementKind::Rollback
                | StatementKind::Savepoint
        )
    }

    /// Whether the statement only reads (and so can be an unbounded SELECT
    /// or an N+1 child).
    pub fn is_read(self) -> bool {
        matches!(
            self,
            StatementKind::Select | StatementKind::Show | StatementKind::Explain
        )
    }

    /// The snake_case name, as serialized; handy for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Select => "select",
            StatementKind::Insert => "insert",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Merge => "merge",
            StatementKind::Copy => "copy",
            StatementKind::Begin => "begin",
            StatementKind::Commit => "commit",
            StatementKind::Rollback => "rollback",
            StatementKind::Savepoint => "savepoint",
            StatementKind::Set => "set",
            StatementKind::Show => "show",
            StatementKind::Ddl => "ddl",
            StatementKind::Prepare => "prepare",
            StatementKind::Execute => "execute",
            StatementKind::Deallocate => "deallocate",
            StatementKind::Cursor => "cursor",
            StatementKind::Notify => "notify",
            StatementKind::Explain => "explain",
            StatementKind::Other => "other",
        }
    }
}

impl std::fmt::Display for StatementKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kind of a parsed statement.
pub(crate) fn classify(stmt: &Statement) -> StatementKind {
    use StatementKind as K;
    match stmt {
        Statement::Query(q) => match q.body.as_ref() {
            SetExpr::Insert(_) => K::Insert,
            SetExpr::Update(_) => K::Update,
            SetExpr::Delete(_) => K::Delete,
            SetExpr::Merge(_) => K::Merge,
            _ => K::Select,
        },
        Statement::Insert(_) => K::Insert,
        Statement::Update(_) => K::Update,
        Statement::Delete(_) => K::Delete,
        Statement::Merge(_) => K::Merge,
        Statement::Copy { .. } => K::Copy,
        Statement::StartTransaction { .. } => K::Begin,
        Statement::Commit { .. } => K::Commit,
        Statement::Rollback {
            savepoint: Some(_), ..
        } => K::Savepoint,
        Statement::Rollback { .. } => K::Rollback,
        Statement::Savepoint { .. } | Statement::ReleaseSavepoint { .. } => K::Savepoint,
        Statement::Set(_) | Statement::Reset(_) | Statement::Discard { .. } => K::Set,
        Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. } => K::Show,
        Statement::Prepare { .. } => K::Prepare,
        Statement::Execute { .. } => K::Execute,
        Statement::Deallocate { .. } => K::Deallocate,
        Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => K::Cursor,
        Statement::LISTEN { .. } | Statement::UNLISTEN { .. } | Statement::NOTIFY { .. } => {
            K::Notify
        }
        Statement::Explain { .. } | Statement::ExplainTable { .. } => K::Explain,
        Statement::Truncate(_)
        | Statement::Comment { .. }
        | Statement::Grant(_)
        | Statement::Revoke(_)
        | Statement::RenameTable(_) => K::Ddl,
        other => classify_by_name(other),
    }
}

/// CREATE/ALTER/DROP come in dozens of variants; their `Debug` name says
/// which family they belong to without listing every one (and without
/// breaking when sqlparser adds another).
fn classify_by_name(stmt: &Statement) -> StatementKind {
    let mut name = [0u8; 8];
    let mut writer = PrefixWriter {
        buf: &mut name,
        len: 0,
    };
    let _ = std::fmt::Write::write_fmt(&mut writer, format_args!("{stmt:?}"));
    let len = writer.len;
    let name = &name[..len];
    if name.starts_with(b"Create") || name.starts_with(b"Alter") || name.starts_with(b"Drop") {
        StatementKind::Ddl
    } else {
        StatementKind::Other
    }
}

/// Keeps the first few bytes written and then stops the formatter, so
/// taking a variant's name never formats the whole statement.
struct PrefixWriter<'a> {
    buf: &'a mut [u8; 8],
    len: usize,
}

impl std::fmt::Write for PrefixWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let take = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if self.len == self.buf.len() {
            Err(std::fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// Kind of an unparsed statement from its first keywords (lower-cased):
/// `first` is the first word, `second` the next one, and `main` the first
/// top-level DML keyword after a `WITH` clause.
pub(crate) fn classify_words(first: &str, second: &str, main: &str) -> StatementKind {
    use StatementKind as K;
    match first {
        "select" | "values" | "table" => K::Select,
        "with" => match main {
            "insert" => K::Insert,
            "update" => K::Update,
            "delete" => K::Delete,
            "merge" => K::Merge,
            _ => K::Select,
        },
        "insert" => K::Insert,
        "update" => K::Update,
        "delete" => K::Delete,
        "merge" => K::Merge,
        "copy" => K::Copy,
        "begin" | "start" => K::Begin,
        "commit" | "end" => K::Commit,
        "rollback" | "abort" if second == "to" => K::Savepoint,
        "rollback" | "abort" => K::Rollback,
        "savepoint" | "release" => K::Savepoint,
        "set" | "reset" | "discard" => K::Set,
        "show" => K::Show,
        "create" | "alter" | "drop" | "truncate" | "comment" | "grant" | "revoke" => K::Ddl,
        "prepare" if second == "transaction" => K::Other,
        "prepare" => K::Prepare,
        "execute" => K::Execute,
        "deallocate" => K::Deallocate,
        "declare" | "fetch" | "move" | "close" => K::Cursor,
        "listen" | "notify" | "unlisten" => K::Notify,
        "explain" => K::Explain,
        _ => K::Other,
    }
}
