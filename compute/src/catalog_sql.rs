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

/// Parses a catalog query (see the module documentation).
pub fn parse(sql: &str) -> Result<Vec<Statement>, ParserError> {
    let without_toast;
    let sql = if sql.contains(PSQL_TOAST_OPTIONS) {
        without_toast = sql.replace(PSQL_TOAST_OPTIONS, "c.reloptions");
        without_toast.as_str()
    } else {
        sql
    };
    let from_crate = PARSER.parse(sql)?;
    let Ok(plain) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else { return Ok(from_crate) };
    let same_as_crate = plain.len() == from_crate.len() && plain.iter().zip(&from_crate).all(|(p, c)| &rewritten(&ALL_RULES, p.clone()) == c);
    if !same_as_crate {
        // The crate replaced a known query: take its replacement.
        return Ok(from_crate);
    }
    Ok(plain.into_iter().map(|s| rewritten(&KEEPING_SUBQUERIES, s)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
