//! Tools' catalog queries, parsed with `datafusion-pg-catalog`'s rewrites
//! but keeping their correlated subqueries.
//!
//! The crate's parser replaces whole known queries of psql, pgcli and
//! DBeaver that DataFusion cannot plan, then applies rewrite rules. One
//! rule, `RemoveSubqueryFromProjection`, replaces every correlated scalar
//! subquery that is a select-list item with NULL — psql's `\d` then showed
//! no column defaults, and any query mentioning `pg_…` lost such values
//! without a word. ebb plans those subqueries itself
//! ([`scalar_subqueries`](crate::scalar_subqueries),
//! [`correlated_aggregates`](crate::correlated_aggregates)), so a statement
//! the crate did not replace wholesale gets the crate's rules without that
//! one; a replaced statement is taken as the crate gives it.

use std::sync::LazyLock;

use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_pg_catalog::sql::rules::{
    AliasDuplicatedProjectionRewrite, CurrentUserVariableToSessionUserFunctionCall, FixArrayLiteral, FixVersionColumnName, PrependUnqualifiedPgTableName,
    RemoveSubqueryFromProjection, ResolveUnqualifiedIdentifier, RewriteArrayAnyAllOperation, RewritePgCatalogOperator, RewriteRegCastToSubquery,
    SqlStatementRewriteRule, StripCallableQualifier, StripCollate,
};

static PARSER: LazyLock<PostgresCompatibilityParser> = LazyLock::new(PostgresCompatibilityParser::new);

/// The crate's rules in the crate's order; `keep_subqueries` leaves out
/// `RemoveSubqueryFromProjection`.
fn rules(keep_subqueries: bool) -> Vec<Box<dyn SqlStatementRewriteRule>> {
    let mut rules: Vec<Box<dyn SqlStatementRewriteRule>> = vec![
        Box::new(AliasDuplicatedProjectionRewrite),
        Box::new(ResolveUnqualifiedIdentifier),
        Box::new(RewriteArrayAnyAllOperation),
        Box::new(PrependUnqualifiedPgTableName),
        Box::new(StripCallableQualifier),
        Box::new(FixArrayLiteral),
        Box::new(CurrentUserVariableToSessionUserFunctionCall),
        Box::new(StripCollate),
        Box::new(RewritePgCatalogOperator),
        Box::new(RewriteRegCastToSubquery::new()),
    ];
    if !keep_subqueries {
        rules.push(Box::new(RemoveSubqueryFromProjection));
    }
    rules.push(Box::new(FixVersionColumnName));
    rules
}

static ALL_RULES: LazyLock<Vec<Box<dyn SqlStatementRewriteRule>>> = LazyLock::new(|| rules(false));
static KEEPING_SUBQUERIES: LazyLock<Vec<Box<dyn SqlStatementRewriteRule>>> = LazyLock::new(|| rules(true));

fn rewritten(rules: &[Box<dyn SqlStatementRewriteRule>], stmt: Statement) -> Statement {
    rules.iter().fold(stmt, |s, rule| rule.rewrite(s))
}

/// psql's `\d+` (15) appends a table's TOAST options to its options with
/// `ARRAY(subquery)` over `unnest` of an outer column, which neither
/// DataFusion nor [`array_subqueries`](crate::array_subqueries) plans (a
/// correlated function in FROM). ebb has no TOAST tables, so that array is
/// always empty and the options alone are exact.
const PSQL_TOAST_OPTIONS: &str = "c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x)";

/// `sql` with the text from `start` through the first `end` after it
/// replaced by `with`; `None` when `start` or `end` is not there.
fn replace_span(sql: &str, start: &str, end: &str, with: &str) -> Option<String> {
    let at = sql.find(start)?;
    let len = sql[at..].find(end)? + end.len();
    Some(format!("{}{with}{}", &sql[..at], &sql[at + len..]))
}

/// psql's `\d` (15) reads `pg_partition_ancestors`, which DataFusion cannot
/// plan where psql calls it (a set-returning function in a select list; a
/// correlated one in FROM). ebb has no partitions, so a table's only
/// ancestor is itself: the keys referencing a table (`confrelid IN (SELECT
/// pg_catalog.pg_partition_ancestors('oid') UNION ALL VALUES
/// ('oid'::regclass))`) are those with `confrelid = oid`, and the parent of a trigger
/// (a subquery over its ancestors, evaluated only for a trigger that has a
/// parent; ebb has no triggers) is NULL.
fn without_partition_ancestors(sql: &str) -> Option<String> {
    if !sql.contains("pg_partition_ancestors") {
        return None;
    }
    let mut out = sql.to_string();
    const ANCESTORS: &str = "IN (SELECT pg_catalog.pg_partition_ancestors('";
    if let Some(at) = out.find(ANCESTORS)
        && let Some(oid) = out[at + ANCESTORS.len()..].split('\'').next().filter(|o| o.bytes().all(|b| b.is_ascii_digit()))
        && let Some(rewritten) = replace_span(&out, ANCESTORS, "::pg_catalog.regclass))", &format!("= {oid}"))
    {
        out = rewritten;
    }
    if let Some(rewritten) = replace_span(&out, "(SELECT u.tgrelid::pg_catalog.regclass", "ORDER BY a.depth LIMIT 1)", "NULL") {
        out = rewritten;
    }
    Some(out)
}

/// Parses a catalog query (see the module documentation).
pub fn parse(sql: &str) -> Result<Vec<Statement>, ParserError> {
    let without_toast;
    let sql = if sql.contains(PSQL_TOAST_OPTIONS) {
        without_toast = sql.replace(PSQL_TOAST_OPTIONS, "c.reloptions");
        without_toast.as_str()
    } else {
        sql
    };
    let without_ancestors = without_partition_ancestors(sql);
    let sql = without_ancestors.as_deref().unwrap_or(sql);
    let from_crate = PARSER.parse(sql)?;
    let Ok(plain) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else { return Ok(qualified(from_crate)) };
    let same_as_crate = plain.len() == from_crate.len() && plain.iter().zip(&from_crate).all(|(p, c)| &rewritten(&ALL_RULES, p.clone()) == c);
    if !same_as_crate {
        // The crate replaced a known query: take its replacement.
        return Ok(qualified(from_crate));
    }
    Ok(qualified(plain.into_iter().map(|s| rewritten(&KEEPING_SUBQUERIES, s)).collect()))
}

/// Catalog tables ebb serves that the crate does not know (so its rule
/// that puts `pg_catalog.` before unqualified ones leaves them out).
const OWN_CATALOG_TABLES: [&str; 1] = ["pg_indexes"];

/// `stmts` with ebb's own catalog tables named with their schema.
fn qualified(mut stmts: Vec<Statement>) -> Vec<Statement> {
    use datafusion::sql::sqlparser::ast::{Ident, ObjectName, ObjectNamePart, visit_relations_mut};
    for stmt in &mut stmts {
        let _ = visit_relations_mut(stmt, |name: &mut ObjectName| {
            if let [ObjectNamePart::Identifier(table)] = name.0.as_slice()
                && OWN_CATALOG_TABLES.contains(&table.value.to_ascii_lowercase().as_str())
            {
                name.0.insert(0, ObjectNamePart::Identifier(Ident::new("pg_catalog")));
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
    }
    stmts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_its_only_partition_ancestor() {
        let sql = "SELECT conname FROM pg_catalog.pg_constraint c WHERE confrelid IN (SELECT pg_catalog.pg_partition_ancestors('16385') \
                   UNION ALL VALUES ('16385'::pg_catalog.regclass)) AND contype = 'f'";
        assert_eq!(
            without_partition_ancestors(sql).as_deref(),
            Some("SELECT conname FROM pg_catalog.pg_constraint c WHERE confrelid = 16385 AND contype = 'f'")
        );
        let triggers = "SELECT t.tgname, CASE WHEN t.tgparentid != 0 THEN (SELECT u.tgrelid::pg_catalog.regclass FROM pg_catalog.pg_trigger AS u, \
                        pg_catalog.pg_partition_ancestors(t.tgrelid) WITH ORDINALITY AS a(relid, depth) ORDER BY a.depth LIMIT 1) END AS parent FROM pg_catalog.pg_trigger t";
        assert_eq!(
            without_partition_ancestors(triggers).as_deref(),
            Some("SELECT t.tgname, CASE WHEN t.tgparentid != 0 THEN NULL END AS parent FROM pg_catalog.pg_trigger t")
        );
        assert_eq!(without_partition_ancestors("SELECT 1"), None);
    }

    #[test]
    fn correlated_subqueries_in_select_lists_are_kept() {
        let sql = "SELECT a.attname, (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) FROM pg_catalog.pg_attrdef d \
                   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef) FROM pg_catalog.pg_attribute a";
        let kept = parse(sql).expect("parse")[0].to_string();
        assert!(kept.contains("pg_get_expr"), "{kept}");
        let from_crate = PARSER.parse(sql).expect("parse")[0].to_string();
        assert!(!from_crate.contains("pg_get_expr"), "the crate's rule drops it: {from_crate}");
        // The crate's other rewrites still apply (`'x'::regclass` becomes a lookup).
        let cast = parse("SELECT 'pg_class'::regclass").expect("parse")[0].to_string();
        assert!(cast.contains("pg_class c JOIN"), "{cast}");
    }
}
