//! What a statement names that the planner could turn into code: the pure
//! half of the check in [`super::ClientStatement::clear`].
//!
//! Read from the syntax tree (sqlparser, PostgreSQL dialect) and the token
//! stream: function names, operator spellings, the custom types it casts
//! to, the relations it reads or writes, and how many `$n` parameters it
//! takes. Whatever can be refused without the catalog is refused here
//! (several statements, statement kinds EXPLAIN must not see, functions or
//! types qualified with a schema other than `pg_catalog`, `pg_catalog`
//! functions that run SQL given as text); names that need the client's
//! search path to resolve are handed to the catalog lookups.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    ArrayElemTypeDef, DataType, Expr, Ident, ObjectName, ObjectNamePart, Query, SetExpr, Statement,
    TableFactor, ValueWithSpan, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

/// The only schema whose functions, operators and types the check trusts.
pub(crate) const CATALOG_SCHEMA: &str = "pg_catalog";

/// `pg_catalog` functions that run SQL handed to them as text (or read a
/// whole relation, views included), so the statement's own text does not
/// show what they would run. Some are STABLE, which the planner evaluates
/// while estimating selectivity.
const RUNS_SQL_TEXT: &[&str] = &[
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "ts_stat",
    "ts_rewrite",
    "set_config",
];

/// Operators every statement may use without spelling them: `IN`,
/// `BETWEEN`, `CASE x WHEN`, `NULLIF`, `IS DISTINCT FROM` compare with
/// these, and `LIKE`/`ILIKE`/`SIMILAR TO` are operators too. PostgreSQL
/// resolves all of them through the search path.
const IMPLIED_OPERATORS: &[&str] = &[
    "=", "<>", "<", ">", "<=", ">=", "~~", "!~~", "~~*", "!~~*", "~", "!~",
];

/// A relation the statement names, as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RelationName {
    /// `Some` when schema-qualified.
    pub schema: Option<String>,
    /// The name, case-folded like PostgreSQL folds it.
    pub name: String,
    /// A CTE of the statement has this name, so it may be no relation at
    /// all; if a relation of this name resolves, it is checked anyway.
    pub maybe_cte: bool,
}

/// Everything [`super::ClientStatement::clear`] looks up in the catalog.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct References {
    /// Unqualified function names (qualified ones must be `pg_catalog`).
    pub functions: BTreeSet<String>,
    /// Runs of operator characters as written, plus [`IMPLIED_OPERATORS`]:
    /// an operator outside `pg_catalog` whose name occurs in any of them
    /// could be the one PostgreSQL picks.
    pub operator_runs: BTreeSet<String>,
    /// Unqualified names of types the statement casts to that sqlparser
    /// does not know as built-in.
    pub cast_types: BTreeSet<String>,
    /// Relations read or written.
    pub relations: BTreeSet<RelationName>,
    /// Highest `$n`.
    pub params: usize,
}

impl References {
    /// Reads `sql`; `Err` says why it must not be planned at all.
    pub(crate) fn of(sql: &str) -> Result<References, String> {
        let statements = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_statements())
            .map_err(|_| "the statement does not parse".to_string())?;
        let [statement] = &statements[..] else {
            return Err("only a single statement is planned".into());
        };
        if !plannable(statement) {
            return Err("only SELECT, UPDATE, DELETE and INSERT ... SELECT are planned".into());
        }
        let mut walker = Walker::default();
        if let ControlFlow::Break(why) = statement.visit(&mut walker) {
            return Err(why);
        }
        let mut refs = walker.refs;
        let ctes = walker.ctes;
        refs.relations = refs
            .relations
            .into_iter()
            .map(|mut r| {
                r.maybe_cte = r.schema.is_none() && ctes.contains(&r.name);
                r
            })
            .collect();
        refs.operator_runs = operator_runs(sql)?;
        Ok(refs)
    }
}

/// Statement kinds that are safe and meaningful to EXPLAIN.
fn plannable(statement: &Statement) -> bool {
    match statement {
        Statement::Query(q) => !matches!(&*q.body, SetExpr::Select(s) if s.into.is_some()),
        Statement::Update(_) | Statement::Delete(_) => true,
        Statement::Insert(i) => i
            .source
            .as_ref()
            .is_some_and(|q| !matches!(&*q.body, SetExpr::Values(_))),
        _ => false,
    }
}

/// An identifier as PostgreSQL stores it: unquoted ones fold to lower case
/// (ASCII only, as for UTF-8 databases).
fn folded(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    }
}

/// `[schema.]name` of an object name; `Err` for longer or dialect-specific
/// forms, which are refused.
fn split_name(name: &ObjectName) -> Result<(Option<String>, String), String> {
    let parts: Option<Vec<String>> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(folded(i)),
            ObjectNamePart::Function(_) => None,
        })
        .collect();
    match parts.as_deref() {
        Some([name]) => Ok((None, name.clone())),
        Some([schema, name]) => Ok((Some(schema.clone()), name.clone())),
        _ => Err(format!("names {name}, which is not a [schema.]name")),
    }
}

#[derive(Default)]
struct Walker {
    refs: References,
    ctes: BTreeSet<String>,
    /// The next relation visited is the name of a table function
    /// (`FROM generate_series(...)`), not a relation.
    next_is_function: bool,
}

impl Walker {
    fn function(&mut self, name: &ObjectName) -> ControlFlow<String> {
        let (schema, function) = match split_name(name) {
            Ok(n) => n,
            Err(why) => return ControlFlow::Break(why),
        };
        if RUNS_SQL_TEXT.contains(&function.as_str()) || function.starts_with("dblink") {
            return ControlFlow::Break(format!(
                "calls {function}(), which runs SQL it is given as text"
            ));
        }
        match schema {
            None => {
                self.refs.functions.insert(function);
            }
            Some(s) if s == CATALOG_SCHEMA => {}
            Some(s) => {
                return ControlFlow::Break(format!(
                    "calls {s}.{function}(), a function outside pg_catalog that planning could run"
                ))
            }
        }
        ControlFlow::Continue(())
    }

    fn cast_type(&mut self, data_type: &DataType) -> ControlFlow<String> {
        match data_type {
            DataType::Custom(name, _) => match split_name(name) {
                Ok((None, t)) => {
                    self.refs.cast_types.insert(t);
                }
                Ok((Some(s), _)) if s == CATALOG_SCHEMA => {}
                Ok((Some(s), t)) => {
                    return ControlFlow::Break(format!(
                        "casts to {s}.{t}, a type defined outside pg_catalog"
                    ))
                }
                Err(why) => return ControlFlow::Break(why),
            },
            DataType::Array(
                ArrayElemTypeDef::AngleBracket(inner)
                | ArrayElemTypeDef::SquareBracket(inner, _)
                | ArrayElemTypeDef::Parenthesis(inner)
                | ArrayElemTypeDef::Qualified(inner, _),
            ) => return self.cast_type(inner),
            // Built-in type names: the grammar maps most to pg_catalog, and
            // the rest resolve there first (the check refuses search paths
            // that put another schema before pg_catalog).
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

impl Visitor for Walker {
    type Break = String;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<String> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(folded(&cte.alias.name));
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
        match factor {
            TableFactor::Table {
                args, sample, name, ..
            } => {
                if sample.is_some() {
                    return ControlFlow::Break(format!(
                        "samples {name} with TABLESAMPLE, whose method is a function"
                    ));
                }
                self.next_is_function = args.is_some();
            }
            TableFactor::Function { name, .. } => return self.function(name),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<String> {
        if std::mem::take(&mut self.next_is_function) {
            return self.function(relation);
        }
        match split_name(relation) {
            Ok((schema, name)) => {
                self.refs.relations.insert(RelationName {
                    schema,
                    name,
                    maybe_cte: false,
                });
                ControlFlow::Continue(())
            }
            Err(why) => ControlFlow::Break(why),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        match expr {
            Expr::Function(f) => self.function(&f.name),
            // Plain function calls in PostgreSQL, resolved by search path;
            // sqlparser gives them a node of their own.
            Expr::Ceil { .. } => self.function(&ObjectName::from(vec![Ident::new("ceil")])),
            Expr::Floor { .. } => self.function(&ObjectName::from(vec![Ident::new("floor")])),
            Expr::Cast { data_type, .. } => self.cast_type(data_type),
            Expr::TypedString(t) => self.cast_type(&t.data_type),
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_value(&mut self, value: &ValueWithSpan) -> ControlFlow<String> {
        if let sqlparser::ast::Value::Placeholder(p) = &value.value {
            if let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                self.refs.params = self.refs.params.max(n);
            }
        }
        ControlFlow::Continue(())
    }
}

/// Whether a token is punctuation, a word or a literal rather than (part
/// of) an operator.
fn is_operator_token(token: &Token) -> bool {
    !matches!(
        token,
        Token::EOF
            | Token::Word(_)
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Comma
            | Token::Whitespace(_)
            | Token::LParen
            | Token::RParen
            | Token::Period
            | Token::Colon
            | Token::DoubleColon
            | Token::SemiColon
            | Token::LBracket
            | Token::RBracket
            | Token::LBrace
            | Token::RBrace
            | Token::Placeholder(_)
    )
}

/// Adjacent operator tokens joined as written (PostgreSQL's lexer reads
/// `a+++b` as one operator where sqlparser may see three), plus the
/// implied ones. `OPERATOR(schema.op)` naming a schema other than
/// `pg_catalog` is refused.
fn operator_runs(sql: &str) -> Result<BTreeSet<String>, String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|_| "the statement does not parse".to_string())?;
    let mut runs: BTreeSet<String> = IMPLIED_OPERATORS.iter().map(|s| s.to_string()).collect();
    let mut run = String::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        if let Token::Word(w) = token {
            if w.keyword == Keyword::OPERATOR && w.quote_style.is_none() {
                let rest = tokens[i + 1..]
                    .iter()
                    .filter(|t| !matches!(t, Token::Whitespace(_)));
                let inside: Vec<&Token> = rest
                    .skip_while(|t| matches!(t, Token::LParen))
                    .take_while(|t| !matches!(t, Token::RParen))
                    .collect();
                if let [Token::Word(schema), Token::Period, ..] = inside[..] {
                    let schema = match schema.quote_style {
                        Some(_) => schema.value.clone(),
                        None => schema.value.to_ascii_lowercase(),
                    };
                    if schema != CATALOG_SCHEMA {
                        return Err(format!(
                            "uses OPERATOR({schema}.…), an operator outside pg_catalog"
                        ));
                    }
                }
            }
        }
        if is_operator_token(token) {
            run.push_str(&token.to_string());
        } else if !run.is_empty() {
            runs.insert(std::mem::take(&mut run));
        }
        i += 1;
    }
    if !run.is_empty() {
        runs.insert(run);
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(sql: &str) -> References {
        References::of(sql).unwrap_or_else(|e| panic!("{sql}: refused: {e}"))
    }

    fn refused(sql: &str) -> String {
        References::of(sql).expect_err(sql)
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_single_plannable_statements() {
        assert!(References::of("SELECT 1;").is_ok());
        assert!(References::of("UPDATE t SET a = 1 WHERE b = $1").is_ok());
        assert!(References::of("DELETE FROM t WHERE b = 2").is_ok());
        assert!(References::of("INSERT INTO t SELECT * FROM u").is_ok());
        for sql in [
            "INSERT INTO t VALUES (1)",
            "SELECT 1; SELECT 2",
            "DROP TABLE t",
            "SELECT * INTO t2 FROM t",
            "VACUUM",
            "SELECT (",
        ] {
            assert!(References::of(sql).is_err(), "{sql}");
        }
    }

    #[test]
    fn functions_are_collected_folded_and_qualified_ones_checked() {
        let r = refs(
            "SELECT Lower(name), \"MixedCase\"(1), pg_catalog.upper(x), ceil(y), count(*) \
             FROM t WHERE a = Evil(3) ORDER BY floor(z)",
        );
        assert_eq!(
            r.functions,
            set(&["MixedCase", "ceil", "count", "evil", "floor", "lower"])
        );
        let why = refused("SELECT * FROM big WHERE col = public.evil(3) LIMIT 1");
        assert!(why.contains("public.evil()"), "{why}");
        assert!(refused("SELECT x.y.z(1)").contains("x.y.z"));
    }

    #[test]
    fn table_functions_are_functions_not_relations() {
        let r = refs("SELECT * FROM generate_series(1, 3) g JOIN t ON t.id = g");
        assert!(r.functions.contains("generate_series"));
        assert_eq!(
            r.relations
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["t"]
        );
        assert!(refused("SELECT * FROM app.srf(1)").contains("app.srf()"));
    }

    #[test]
    fn functions_that_run_sql_text_are_refused_even_in_pg_catalog() {
        for sql in [
            "SELECT * FROM t WHERE a = length(query_to_xml('SELECT public.evil(1)', true, true, '')::text)",
            "SELECT pg_catalog.set_config('role', 'postgres', true) FROM t",
            "SELECT * FROM t WHERE a = ts_stat('SELECT 1')",
        ] {
            assert!(refused(sql).contains("runs SQL"), "{sql}");
        }
    }

    #[test]
    fn relations_with_schemas_and_ctes() {
        let r = refs(
            "WITH recent AS (SELECT * FROM app.\"Orders\" WHERE id > $2) \
             UPDATE users SET name = $1 FROM recent WHERE users.id = recent.user_id",
        );
        let names: Vec<(Option<&str>, &str, bool)> = r
            .relations
            .iter()
            .map(|r| (r.schema.as_deref(), r.name.as_str(), r.maybe_cte))
            .collect();
        assert_eq!(
            names,
            [
                (None, "recent", true),
                (None, "users", false),
                (Some("app"), "Orders", false)
            ]
        );
        assert_eq!(r.params, 2);
        assert!(refs("INSERT INTO audit SELECT * FROM t")
            .relations
            .iter()
            .any(|r| r.name == "audit"));
        assert!(refused("SELECT * FROM t TABLESAMPLE system (10)").contains("TABLESAMPLE"));
    }

    #[test]
    fn cast_types() {
        let r = refs("SELECT 'a'::mood, CAST(x AS text), ARRAY[]::Tag[], date '2020-01-01' FROM t");
        assert_eq!(r.cast_types, set(&["mood", "tag"]));
        assert!(refs("SELECT x::pg_catalog.int4 FROM t")
            .cast_types
            .is_empty());
        assert!(refused("SELECT 3::app.dom FROM t").contains("app.dom"));
    }

    #[test]
    fn operator_runs_as_written_plus_implied_ones() {
        let r =
            refs("SELECT * FROM t WHERE a = 1 ### 2 AND b @> '{1}' AND c LIKE 'x%' AND d = 1+-2");
        for op in ["###", "@>", "=", "~~", "<=", "+-"] {
            assert!(r.operator_runs.contains(op), "{op}: {:?}", r.operator_runs);
        }
        assert!(!r.operator_runs.iter().any(|o| o.contains('\'')));
        assert!(refs("SELECT * FROM t WHERE a OPERATOR(pg_catalog.=) 1").params == 0);
        let why = refused("SELECT * FROM t WHERE a OPERATOR(public.###) 1");
        assert!(why.contains("OPERATOR(public."), "{why}");
    }
}
