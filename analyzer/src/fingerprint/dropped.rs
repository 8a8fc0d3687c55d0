//! Names and values that do not make a different query.
//!
//! `SAVEPOINT s140234_x1` and `SAVEPOINT s140234_x2` (Django), `DEALLOCATE
//! stmtcache_19` (pgx), `FETCH 100 FROM c1`, `LISTEN jobs_42` and
//! `SET search_path TO app` differ only in a generated name or a setting's
//! value: names become `_` and values become a placeholder, so each such
//! statement kind has one fingerprint.

use sqlparser::ast::{
    CloseCursor, Ident, ObjectName, Set, SetSessionAuthorizationParamKind, Statement,
};

use super::placeholder::placeholder_expr;

/// Replacement for dropped names: a valid identifier that reads as
/// "don't care".
const ANONYMOUS: &str = "_";

fn anonymous() -> Ident {
    Ident::new(ANONYMOUS)
}

/// Drops the names and values of statements whose names and values do not
/// make a different query: savepoints, prepared statements, cursors,
/// channels, `SET` values.
pub(crate) fn drop_names(stmt: &mut Statement) {
    match stmt {
        Statement::Set(set) => drop_set_values(set),
        Statement::Savepoint { name } | Statement::ReleaseSavepoint { name } => *name = anonymous(),
        Statement::Rollback {
            savepoint: Some(name),
            ..
        } => *name = anonymous(),
        Statement::Prepare { name, .. } => *name = anonymous(),
        Statement::Execute {
            name: Some(name), ..
        } => *name = ObjectName::from(vec![anonymous()]),
        Statement::Deallocate { name, .. }
            if !(name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all")) =>
        {
            *name = anonymous();
        }
        Statement::Declare { stmts } => {
            for d in stmts {
                d.names.iter_mut().for_each(|n| *n = anonymous());
            }
        }
        Statement::Fetch { name, .. } => *name = anonymous(),
        Statement::Close {
            cursor: CloseCursor::Specific { name },
        } => *name = anonymous(),
        Statement::LISTEN { channel } => *channel = anonymous(),
        Statement::UNLISTEN { channel } if channel.value != "*" => *channel = anonymous(),
        Statement::NOTIFY { channel, payload } => {
            *channel = anonymous();
            if payload.is_some() {
                // Printed as '' and turned into a placeholder by the final pass.
                *payload = Some(String::new());
            }
        }
        _ => {}
    }
}

/// `SET x = <anything>` keeps the variable and drops the value.
fn drop_set_values(set: &mut Set) {
    match set {
        Set::SingleAssignment { values, .. } => {
            *values = vec![placeholder_expr()];
        }
        Set::ParenthesizedAssignments { values, .. } => {
            values.iter_mut().for_each(|v| *v = placeholder_expr());
        }
        Set::MultipleAssignments { assignments } => {
            for a in assignments {
                a.value = placeholder_expr();
            }
        }
        Set::SetTimeZone { value, .. } => *value = placeholder_expr(),
        Set::SetRole {
            role_name: Some(role),
            ..
        } => *role = anonymous(),
        Set::SetSessionAuthorization(param) => {
            if let SetSessionAuthorizationParamKind::User(user) = &mut param.kind {
                *user = anonymous();
            }
        }
        Set::SetNames { charset_name, .. } => *charset_name = anonymous(),
        _ => {}
    }
}
