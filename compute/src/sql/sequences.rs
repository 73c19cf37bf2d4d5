//! CREATE SEQUENCE, and the sequences SERIAL and IDENTITY columns draw
//! from: their options with PostgreSQL's defaults, their names, the
//! DEFAULT that reads them, and the option order sqlparser needs.

use std::borrow::Cow;

use datafusion::sql::sqlparser::ast::{DataType, Expr, SequenceOptions as AstOption, UnaryOperator, Value};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use ebb_proto::storage::{SequenceOptions, TypeKind};

use crate::error::{ComputeError, Result};

/// A sequence a new table's column owns (SERIAL or IDENTITY).
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedSequence {
    /// The sequence's name (`<table>_<column>_seq`).
    pub name: String,
    /// The column it fills.
    pub column: String,
    /// Its options (the owner's id is filled once the table exists).
    pub options: SequenceOptions,
}

/// The integer type of a SERIAL type name (`serial`, `bigserial`, …).
pub fn serial_type(name: &str) -> Option<TypeKind> {
    match name.to_lowercase().as_str() {
        "smallserial" | "serial2" => Some(TypeKind::Smallint),
        "serial" | "serial4" => Some(TypeKind::Integer),
        "bigserial" | "serial8" => Some(TypeKind::Bigint),
        _ => None,
    }
}

/// The integer type a sequence's `AS` clause names (bigint without one).
pub fn sequence_type(dt: Option<&DataType>) -> Result<TypeKind> {
    match dt {
        None => Ok(TypeKind::Bigint),
        Some(dt) => match super::ddl::column_type(dt)?.kind() {
            k @ (TypeKind::Smallint | TypeKind::Integer | TypeKind::Bigint) => Ok(k),
            _ => Err(ComputeError::invalid("22023", "sequence type must be smallint, integer, or bigint")),
        },
    }
}

/// The largest value of an integer type.
fn type_max(kind: TypeKind) -> i64 {
    match kind {
        TypeKind::Smallint => i16::MAX.into(),
        TypeKind::Integer => i32::MAX.into(),
        _ => i64::MAX,
    }
}

/// A constant integer of an option.
fn integer(what: &str, e: &Expr) -> Result<i64> {
    let bad = || ComputeError::invalid("22023", format!("{what} must be an integer constant, not {e}"));
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().map_err(|_| bad()),
            _ => Err(bad()),
        },
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => integer(what, expr)?.checked_neg().ok_or_else(bad),
        Expr::UnaryOp { op: UnaryOperator::Plus, expr } | Expr::Nested(expr) => integer(what, expr),
        _ => Err(bad()),
    }
}

/// A sequence's options: those given, PostgreSQL's defaults for the rest
/// (ascending from 1 to the type's maximum; descending from -1 to its
/// minimum), checked against the type's range.
pub fn sequence_options(kind: TypeKind, given: &[AstOption]) -> Result<SequenceOptions> {
    let (mut increment, mut min, mut max, mut start, mut cache, mut cycle) = (1, None, None, None, 1, false);
    for o in given {
        match o {
            AstOption::IncrementBy(e, _) => increment = integer("INCREMENT", e)?,
            AstOption::MinValue(e) => min = e.as_ref().map(|e| integer("MINVALUE", e)).transpose()?,
            AstOption::MaxValue(e) => max = e.as_ref().map(|e| integer("MAXVALUE", e)).transpose()?,
            AstOption::StartWith(e, _) => start = Some(integer("START", e)?),
            AstOption::Cache(e) => cache = integer("CACHE", e)?,
            // The flag is NO CYCLE.
            AstOption::Cycle(no) => cycle = !*no,
        }
    }
    if increment == 0 {
        return Err(ComputeError::invalid("22023", "INCREMENT must not be zero"));
    }
    let min = min.unwrap_or_else(|| default_min(kind, increment));
    let max = max.unwrap_or_else(|| default_max(kind, increment));
    check_bounds(kind, min, max)?;
    let start = start.unwrap_or(if increment > 0 { min } else { max });
    Ok(SequenceOptions {
        start,
        increment,
        min_value: min,
        max_value: max,
        cycle,
        cache,
        owned_by_table: 0,
        owned_by_column: String::new(),
        value_type: kind as i32,
    })
}

/// NO MINVALUE: 1 ascending, the type's least value descending.
fn default_min(kind: TypeKind, increment: i64) -> i64 {
    if increment > 0 { 1 } else { -type_max(kind) - 1 }
}

/// NO MAXVALUE: the type's greatest value ascending, -1 descending.
fn default_max(kind: TypeKind, increment: i64) -> i64 {
    if increment > 0 { type_max(kind) } else { -1 }
}

/// Both bounds within the sequence's type (22023 otherwise).
fn check_bounds(kind: TypeKind, min: i64, max: i64) -> Result<()> {
    let top = type_max(kind);
    for (what, v) in [("MINVALUE", min), ("MAXVALUE", max)] {
        if v < -top - 1 || v > top {
            return Err(ComputeError::invalid("22023", format!("{what} ({v}) is out of range for sequence data type {}", type_name(kind))));
        }
    }
    Ok(())
}

fn type_name(kind: TypeKind) -> &'static str {
    match kind {
        TypeKind::Smallint => "smallint",
        TypeKind::Integer => "integer",
        _ => "bigint",
    }
}

/// The name PostgreSQL gives the sequence of a SERIAL or IDENTITY column,
/// cut to 63 bytes as identifiers are.
pub fn owned_sequence_name(table: &str, column: &str) -> String {
    let mut name = format!("{table}_{column}");
    while name.len() > 59 {
        name.pop();
    }
    name + "_seq"
}

/// The DEFAULT of a column filled from sequence `schema.name`:
/// `nextval('name'::regclass)`, as PostgreSQL shows it.
pub fn nextval_default(schema: &str, name: &str) -> String {
    let quoted = |s: &str| {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') && !s.starts_with(|c: char| c.is_ascii_digit()) {
            s.to_string()
        } else {
            format!("\"{}\"", s.replace('"', "\"\""))
        }
    };
    let relation = if schema.is_empty() || schema == "public" { quoted(name) } else { format!("{}.{}", quoted(schema), quoted(name)) };
    format!("nextval('{}'::regclass)", relation.replace('\'', "''"))
}

/// The sequence a DEFAULT draws from, if it is `nextval('…'[::regclass])`
/// (as SERIAL makes it, or as written by hand): its relation text.
pub fn nextval_source(default_expr: &str) -> Option<String> {
    let s = default_expr.trim();
    let inner = s.strip_prefix("nextval(")?.strip_suffix(')')?.trim();
    let cast = inner.len().checked_sub("::regclass".len()).filter(|&at| inner.is_char_boundary(at) && inner[at..].eq_ignore_ascii_case("::regclass"));
    let inner = cast.map_or(inner, |at| inner[..at].trim());
    let text = inner.strip_prefix('\'')?.strip_suffix('\'')?;
    if text.replace("''", "").contains('\'') {
        return None;
    }
    Some(text.replace("''", "'"))
}

/// A DEFAULT expression as stored: `nextval` of a sequence in PostgreSQL's
/// spelling (`nextval('s'::regclass)`, however it was written), others as
/// written.
pub fn default_expr_text(e: &Expr) -> Result<String> {
    let text = e.to_string();
    match nextval_source(&text) {
        Some(relation) => {
            let (schema, name) = parse_relation(&relation)?;
            Ok(nextval_default(&schema, &name))
        }
        None => Ok(text),
    }
}

/// Splits a relation's text as `regclass` reads it: `[schema.]name`,
/// unquoted parts folded to lower case.
pub fn parse_relation(text: &str) -> Result<(String, String)> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(ComputeError::invalid("42602", format!("invalid name syntax: {text}"))),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                part.extend(c.to_lowercase());
                chars.next();
            }
        }
        parts.push(part);
        match chars.next() {
            Some('.') => continue,
            None => break,
            Some(_) => return Err(ComputeError::invalid("42602", format!("invalid name syntax: {text}"))),
        }
    }
    match parts.as_slice() {
        [name] if !name.is_empty() => Ok((String::new(), name.clone())),
        [schema, name] | [_, schema, name] if !name.is_empty() => Ok((schema.clone(), name.clone())),
        _ => Err(ComputeError::invalid("42602", format!("invalid name syntax: {text}"))),
    }
}

/// Whether SQL (`lower`: in lower case) can hold options that
/// [`canonical_option_order`] sorts.
pub fn may_hold_options(lower: &str) -> bool {
    lower.contains("sequence") || lower.contains("identity")
}

/// Puts the options of CREATE SEQUENCE and of `AS IDENTITY (…)` in the one
/// order sqlparser accepts (INCREMENT, MINVALUE, MAXVALUE, START, CACHE,
/// CYCLE); PostgreSQL takes them in any order, and SQLAlchemy writes START
/// before MINVALUE. SQL without such a clause, or whose options are in that
/// order already or are not all understood, is returned as it is.
pub fn canonical_option_order(sql: &str) -> Cow<'_, str> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else { return Cow::Borrowed(sql) };
    let words: Vec<usize> = (0..tokens.len()).filter(|&i| !matches!(tokens[i], Token::Whitespace(_))).collect();
    let keyword = |at: usize, k: Keyword| words.get(at).is_some_and(|&i| matches!(&tokens[i], Token::Word(w) if w.keyword == k));
    let mut out: Vec<String> = tokens.iter().map(Token::to_string).collect();
    let mut changed = false;
    let mut at = 0;
    while at < words.len() {
        // Where a run of options starts, and the token that ends it.
        let run = if keyword(at, Keyword::IDENTITY) && words.get(at + 1).is_some_and(|&i| tokens[i] == Token::LParen) {
            Some(at + 2)
        } else if keyword(at, Keyword::SEQUENCE) && at > 0 && (keyword(at - 1, Keyword::CREATE) || keyword(at - 1, Keyword::TEMPORARY) || keyword(at - 1, Keyword::TEMP)) {
            let mut k = at + 1;
            if keyword(k, Keyword::IF) {
                k += 3;
            }
            // The name, possibly qualified.
            k += 1;
            while words.get(k).is_some_and(|&i| tokens[i] == Token::Period) {
                k += 2;
            }
            if keyword(k, Keyword::AS) {
                k += 2;
            }
            Some(k)
        } else {
            None
        };
        let Some(start) = run else {
            at += 1;
            continue;
        };
        let mut end = start;
        while end < words.len() && !matches!(tokens[words[end]], Token::RParen | Token::SemiColon) && !keyword(end, Keyword::OWNED) {
            end += 1;
        }
        // pg_dump names an identity column's sequence (`SEQUENCE NAME s`),
        // which sqlparser does not take: dropped when it is the name ebb
        // gives that sequence anyway, left for the parser to refuse otherwise.
        let mut start = start;
        if keyword(start, Keyword::SEQUENCE) && keyword(start + 1, Keyword::NAME) {
            let mut k = start + 2;
            let mut name = String::new();
            while let Some(Token::Word(w)) = words.get(k).map(|&i| &tokens[i]) {
                name = if w.quote_style.is_some() { w.value.clone() } else { w.value.to_lowercase() };
                k += 1;
                if words.get(k).is_none_or(|&i| tokens[i] != Token::Period) {
                    break;
                }
                k += 1;
            }
            if identity_column(&tokens, &words[..at]).is_some_and(|(table, column)| owned_sequence_name(&table, &column) == name) {
                for &i in &words[start..k] {
                    out[i].clear();
                }
                changed = true;
                start = k;
            }
        }
        if let Some(groups) = option_groups(&tokens, &words[start..end]) {
            let mut sorted = groups.clone();
            sorted.sort_by_key(|g| g.0);
            if sorted != groups {
                // The run's tokens (whitespace included) give way to the sorted options.
                let (first, last) = (words[start], words[end - 1]);
                for slot in &mut out[first..=last] {
                    slot.clear();
                }
                out[first] = sorted.iter().map(|g| g.1.as_str()).collect::<Vec<_>>().join(" ");
                changed = true;
            }
        }
        at = end.max(at + 1);
    }
    if changed { Cow::Owned(out.concat()) } else { Cow::Borrowed(sql) }
}

/// The table and column of `ALTER TABLE [ONLY] [schema.]t ALTER [COLUMN] c
/// ADD GENERATED … AS` (the tokens before IDENTITY, whitespace left out).
fn identity_column(tokens: &[Token], words: &[usize]) -> Option<(String, String)> {
    let name = |i: usize| match words.get(i).map(|&t| &tokens[t]) {
        Some(Token::Word(w)) if w.quote_style.is_some() => Some(w.value.clone()),
        Some(Token::Word(w)) => Some(w.value.to_lowercase()),
        _ => None,
    };
    let is = |i: usize, k: Keyword| words.get(i).is_some_and(|&t| matches!(&tokens[t], Token::Word(w) if w.keyword == k));
    if !(is(0, Keyword::ALTER) && is(1, Keyword::TABLE)) {
        return None;
    }
    let mut i = 2;
    if is(i, Keyword::ONLY) {
        i += 1;
    }
    let mut table = name(i)?;
    while words.get(i + 1).is_some_and(|&t| tokens[t] == Token::Period) {
        i += 2;
        table = name(i)?;
    }
    i += 1;
    if !is(i, Keyword::ALTER) {
        return None;
    }
    i += 1;
    if is(i, Keyword::COLUMN) {
        i += 1;
    }
    Some((table, name(i)?))
}

/// The options of a run of tokens (`words`: their indices, whitespace left
/// out) as (rank in sqlparser's order, text); `None` if one is not known.
fn option_groups(tokens: &[Token], words: &[usize]) -> Option<Vec<(u8, String)>> {
    let word = |i: usize| match words.get(i).map(|&t| &tokens[t]) {
        Some(Token::Word(w)) => Some(w.keyword),
        _ => None,
    };
    // A group's tokens as written, whitespace inside it included.
    let text = |from: usize, to: usize| tokens[words[from]..=words[to - 1]].iter().map(Token::to_string).collect::<String>();
    // A number, possibly signed: how many tokens it takes.
    let number = |i: usize| match words.get(i).map(|&t| &tokens[t]) {
        Some(Token::Number(..)) => Some(1),
        Some(Token::Minus | Token::Plus) if matches!(words.get(i + 1).map(|&t| &tokens[t]), Some(Token::Number(..))) => Some(2),
        _ => None,
    };
    let mut groups = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let (rank, len) = match word(i)? {
            Keyword::INCREMENT => {
                let by = usize::from(word(i + 1) == Some(Keyword::BY));
                (0, 1 + by + number(i + 1 + by)?)
            }
            Keyword::MINVALUE => (1, 1 + number(i + 1)?),
            Keyword::MAXVALUE => (2, 1 + number(i + 1)?),
            Keyword::START => {
                let with = usize::from(word(i + 1) == Some(Keyword::WITH));
                (3, 1 + with + number(i + 1 + with)?)
            }
            Keyword::CACHE => (4, 1 + number(i + 1)?),
            Keyword::CYCLE => (5, 1),
            Keyword::NO => match word(i + 1)? {
                Keyword::MINVALUE => (1, 2),
                Keyword::MAXVALUE => (2, 2),
                Keyword::CYCLE => (5, 2),
                _ => return None,
            },
            _ => return None,
        };
        groups.push((rank, text(i, i + len)));
        i += len;
    }
    Some(groups)
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::ast::{SelectItem, SetExpr, Statement};

    use super::*;

    #[test]
    fn defaults_follow_postgres() {
        let up = sequence_options(TypeKind::Integer, &[]).unwrap();
        assert_eq!((up.start, up.increment, up.min_value, up.max_value, up.cycle), (1, 1, 1, i32::MAX as i64, false));
        let minus_one = Expr::UnaryOp { op: UnaryOperator::Minus, expr: Box::new(Expr::value(Value::Number("1".into(), false))) };
        let down = sequence_options(TypeKind::Smallint, &[AstOption::IncrementBy(minus_one, true)]).unwrap();
        assert_eq!((down.start, down.min_value, down.max_value), (-1, i16::MIN as i64, -1));
        let too_big = Expr::value(Value::Number("40000".into(), false));
        let e = sequence_options(TypeKind::Smallint, &[AstOption::MaxValue(Some(too_big))]).unwrap_err();
        assert_eq!(e.to_string(), "MAXVALUE (40000) is out of range for sequence data type smallint");
    }

    #[test]
    fn defaults_name_their_sequence_and_are_read_back() {
        assert_eq!(nextval_default("public", "items_id_seq"), "nextval('items_id_seq'::regclass)");
        assert_eq!(nextval_default("app", "Odd's"), "nextval('app.\"Odd''s\"'::regclass)");
        assert_eq!(nextval_source("nextval('items_id_seq'::regclass)").as_deref(), Some("items_id_seq"));
        assert_eq!(nextval_source("nextval('app.\"Odd''s\"'::regclass)").as_deref(), Some("app.\"Odd's\""));
        assert_eq!(nextval_source("now()"), None);
        assert_eq!(nextval_source("nextval('public.s'::REGCLASS)").as_deref(), Some("public.s"));
        let written = datafusion::sql::sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, "SELECT nextval('public.S'::REGCLASS)").unwrap();
        let Statement::Query(q) = &written[0] else { panic!("a query") };
        let SetExpr::Select(select) = q.body.as_ref() else { panic!("a select") };
        let SelectItem::UnnamedExpr(e) = &select.projection[0] else { panic!("an expression") };
        assert_eq!(default_expr_text(e).unwrap(), "nextval('s'::regclass)");
        assert_eq!(parse_relation("app.\"Odd's\"").unwrap(), ("app".to_string(), "Odd's".to_string()));
        assert_eq!(parse_relation("Items_ID_seq").unwrap(), (String::new(), "items_id_seq".to_string()));
        assert!(parse_relation("a.").is_err());
        assert_eq!(owned_sequence_name(&"t".repeat(70), "id").len(), 63);
    }

    #[test]
    fn options_are_put_in_the_order_sqlparser_takes() {
        let order = |sql| canonical_option_order(sql).into_owned();
        assert_eq!(
            order("CREATE TABLE t (id int GENERATED BY DEFAULT AS IDENTITY (INCREMENT BY 1 START WITH 10 MINVALUE -5 NO CYCLE), v text)"),
            "CREATE TABLE t (id int GENERATED BY DEFAULT AS IDENTITY (INCREMENT BY 1 MINVALUE -5 START WITH 10 NO CYCLE), v text)"
        );
        assert_eq!(
            order("create sequence if not exists app.s as integer start 5 increment -1 no maxvalue owned by t.id"),
            "create sequence if not exists app.s as integer increment -1 no maxvalue start 5 owned by t.id"
        );
        let sorted = "CREATE SEQUENCE s INCREMENT 2 START 3";
        assert!(matches!(canonical_option_order(sorted), Cow::Borrowed(_)));
        // Unknown options are left for the parser to report.
        assert_eq!(order("CREATE SEQUENCE s START 1 RESTART 2"), "CREATE SEQUENCE s START 1 RESTART 2");
        // pg_dump's identity clause: its SEQUENCE NAME is the one ebb gives.
        let dumped = "ALTER TABLE public.orders ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (\n    SEQUENCE NAME public.orders_id_seq\n    START WITH 1\n    INCREMENT BY 1\n    NO MINVALUE\n    NO MAXVALUE\n    CACHE 1\n)";
        let rewritten = order(dumped);
        assert!(!rewritten.contains("SEQUENCE NAME") && rewritten.contains("INCREMENT BY 1 NO MINVALUE NO MAXVALUE START WITH 1 CACHE 1"), "{rewritten}");
        let other = "ALTER TABLE orders ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (SEQUENCE NAME my_ids)";
        assert_eq!(order(other), other, "another name is left for the parser to refuse");
        for sql in ["CREATE SEQUENCE s START 3 INCREMENT 2", "CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY (START WITH 3 INCREMENT BY 2))", dumped] {
            let rewritten = order(sql);
            assert!(datafusion::sql::sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, &rewritten).is_ok(), "{rewritten}");
        }
    }
}

/// The option keys ALTER SEQUENCE becomes (see [`alter_sequence_as_table`]).
/// They start with a NUL, which no identifier a client sends can hold (the
/// wire protocol ends strings at NUL), so no ALTER TABLE a client writes is
/// taken for an ALTER SEQUENCE.
pub const SEQUENCE_OPTION_PREFIX: &str = "\0sequence_";
pub const OWNED_BY_OPTION: &str = "\0sequence_owned_by";
pub const RESTART_OPTION: &str = "\0sequence_restart";
pub const OWNER_OPTION: &str = "\0sequence_owner";
/// ALTER SEQUENCE's option clauses (see [`altered_options`]): an integer,
/// or `''` for NO MINVALUE / NO MAXVALUE.
pub const INCREMENT_OPTION: &str = "\0sequence_increment";
pub const MINVALUE_OPTION: &str = "\0sequence_minvalue";
pub const MAXVALUE_OPTION: &str = "\0sequence_maxvalue";
pub const START_OPTION: &str = "\0sequence_start";
pub const CACHE_OPTION: &str = "\0sequence_cache";
/// `true` (CYCLE) or `false` (NO CYCLE).
pub const CYCLE_OPTION: &str = "\0sequence_cycle";
/// `smallint`, `integer` or `bigint`.
pub const AS_OPTION: &str = "\0sequence_as";

/// Whether an ALTER SEQUENCE key is one of the option clauses below.
pub fn is_option_clause(key: &str) -> bool {
    [INCREMENT_OPTION, MINVALUE_OPTION, MAXVALUE_OPTION, START_OPTION, CACHE_OPTION, CYCLE_OPTION, AS_OPTION].contains(&key)
}

/// A sequence's options after ALTER SEQUENCE's option clauses (`changes`,
/// keyed as above), as PostgreSQL computes them: NO MINVALUE / NO MAXVALUE
/// give the defaults for the (new) increment's direction and type, and AS
/// moves a bound that was the old type's limit to the new type's.
pub fn altered_options(current: &SequenceOptions, changes: &[(String, String)]) -> Result<SequenceOptions> {
    let number = |what: &str, v: &str| v.parse::<i64>().map_err(|_| ComputeError::invalid("22023", format!("{what} must be an integer, not {v}")));
    let mut o = current.clone();
    let old_kind = TypeKind::try_from(o.value_type).unwrap_or(TypeKind::Bigint);
    let mut kind = old_kind;
    // Per bound: not given, NO …VALUE (None), or a value.
    let (mut min, mut max): (Option<Option<i64>>, Option<Option<i64>>) = (None, None);
    for (key, value) in changes {
        match key.as_str() {
            INCREMENT_OPTION => o.increment = number("INCREMENT", value)?,
            MINVALUE_OPTION => min = Some(if value.is_empty() { None } else { Some(number("MINVALUE", value)?) }),
            MAXVALUE_OPTION => max = Some(if value.is_empty() { None } else { Some(number("MAXVALUE", value)?) }),
            START_OPTION => o.start = number("START", value)?,
            CACHE_OPTION => o.cache = number("CACHE", value)?,
            CYCLE_OPTION => o.cycle = value == "true",
            AS_OPTION => {
                kind = match value.as_str() {
                    "smallint" => TypeKind::Smallint,
                    "integer" => TypeKind::Integer,
                    "bigint" => TypeKind::Bigint,
                    other => return Err(ComputeError::invalid("22023", format!("sequence type must be smallint, integer, or bigint, not {other}"))),
                }
            }
            _ => {}
        }
    }
    if o.increment == 0 {
        return Err(ComputeError::invalid("22023", "INCREMENT must not be zero"));
    }
    // A bound at the old type's limit follows the type (PostgreSQL's reset).
    if kind != old_kind {
        let old_top = type_max(old_kind);
        if max.is_none() && o.max_value == old_top {
            max = Some(None);
        }
        if min.is_none() && o.min_value == -old_top - 1 {
            min = Some(None);
        }
    }
    if let Some(m) = min {
        o.min_value = m.unwrap_or_else(|| default_min(kind, o.increment));
    }
    if let Some(m) = max {
        o.max_value = m.unwrap_or_else(|| default_max(kind, o.increment));
    }
    check_bounds(kind, o.min_value, o.max_value)?;
    o.value_type = kind as i32;
    Ok(o)
}

/// `ALTER SEQUENCE [IF EXISTS] name { OWNED BY table.column | NONE |
/// RESTART [[WITH] n] | OWNER TO role | AS type | INCREMENT [BY] n |
/// [NO] MINVALUE [n] | [NO] MAXVALUE [n] | START [WITH] n | CACHE n |
/// [NO] CYCLE } …`, which sqlparser 0.62 does not parse, as
/// `ALTER TABLE [IF EXISTS] name SET ("\0sequence_…" = '…', …)`, which it
/// does (`alter_table` runs it as ALTER SEQUENCE; a RESTART without a
/// value is `''`: the sequence's START).
pub fn alter_sequence_as_table(sql: &str) -> Result<String> {
    use datafusion::sql::sqlparser::parser::ParserError;
    let syntax = |e: ParserError| ComputeError::Syntax(format!("syntax error: {e}"));
    let dialect = PostgreSqlDialect {};
    let mut p = datafusion::sql::sqlparser::parser::Parser::new(&dialect).try_with_sql(sql).map_err(syntax)?;
    p.expect_keyword(Keyword::ALTER).map_err(syntax)?;
    p.expect_keyword(Keyword::SEQUENCE).map_err(syntax)?;
    let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let name = p.parse_object_name(false).map_err(syntax)?;
    let mut options: Vec<(&str, String)> = Vec::new();
    loop {
        if p.parse_keywords(&[Keyword::OWNED, Keyword::BY]) {
            options.push((OWNED_BY_OPTION, p.parse_object_name(false).map_err(syntax)?.to_string()));
        } else if p.parse_keyword(Keyword::RESTART) {
            let with = p.parse_keyword(Keyword::WITH);
            let value = if with || matches!(p.peek_token().token, Token::Number(..) | Token::Minus) {
                signed_number(&mut p).map_err(syntax)?
            } else {
                String::new()
            };
            options.push((RESTART_OPTION, value));
        } else if p.parse_keywords(&[Keyword::OWNER, Keyword::TO]) {
            options.push((OWNER_OPTION, p.parse_identifier().map_err(syntax)?.to_string()));
        } else if p.parse_keyword(Keyword::INCREMENT) {
            let _ = p.parse_keyword(Keyword::BY);
            options.push((INCREMENT_OPTION, signed_number(&mut p).map_err(syntax)?));
        } else if p.parse_keywords(&[Keyword::NO, Keyword::MINVALUE]) {
            options.push((MINVALUE_OPTION, String::new()));
        } else if p.parse_keywords(&[Keyword::NO, Keyword::MAXVALUE]) {
            options.push((MAXVALUE_OPTION, String::new()));
        } else if p.parse_keywords(&[Keyword::NO, Keyword::CYCLE]) {
            options.push((CYCLE_OPTION, "false".into()));
        } else if p.parse_keyword(Keyword::MINVALUE) {
            options.push((MINVALUE_OPTION, signed_number(&mut p).map_err(syntax)?));
        } else if p.parse_keyword(Keyword::MAXVALUE) {
            options.push((MAXVALUE_OPTION, signed_number(&mut p).map_err(syntax)?));
        } else if p.parse_keyword(Keyword::START) {
            let _ = p.parse_keyword(Keyword::WITH);
            options.push((START_OPTION, signed_number(&mut p).map_err(syntax)?));
        } else if p.parse_keyword(Keyword::CACHE) {
            options.push((CACHE_OPTION, signed_number(&mut p).map_err(syntax)?));
        } else if p.parse_keyword(Keyword::CYCLE) {
            options.push((CYCLE_OPTION, "true".into()));
        } else if p.parse_keyword(Keyword::AS) {
            options.push((AS_OPTION, p.parse_data_type().map_err(syntax)?.to_string().to_lowercase()));
        } else if matches!(p.peek_token().token, Token::EOF | Token::SemiColon) {
            break;
        } else {
            return Err(ComputeError::Syntax(format!("syntax error at or near \"{}\" in ALTER SEQUENCE", p.peek_token())));
        }
    }
    if options.is_empty() {
        return Err(ComputeError::Syntax("syntax error: ALTER SEQUENCE without an action".into()));
    }
    let list: Vec<String> = options.iter().map(|(k, v)| format!("\"{k}\" = '{}'", v.replace('\'', "''"))).collect();
    Ok(format!("ALTER TABLE {}{name} SET ({})", if if_exists { "IF EXISTS " } else { "" }, list.join(", ")))
}

/// An integer, with its sign, as text.
fn signed_number(p: &mut datafusion::sql::sqlparser::parser::Parser<'_>) -> std::result::Result<String, datafusion::sql::sqlparser::parser::ParserError> {
    let sign = if p.consume_token(&Token::Minus) { "-" } else { "" };
    Ok(format!("{sign}{}", p.parse_number_value()?))
}

#[cfg(test)]
mod alter_sequence_tests {
    use super::*;

    #[test]
    fn alter_sequence_becomes_options_alter_table_carries() {
        assert_eq!(
            alter_sequence_as_table("ALTER SEQUENCE public.customers_id_seq OWNED BY public.customers.id").unwrap(),
            "ALTER TABLE public.customers_id_seq SET (\"\0sequence_owned_by\" = 'public.customers.id')"
        );
        assert_eq!(
            alter_sequence_as_table("alter sequence if exists s restart with -5 owner to \"Bob\";").unwrap(),
            "ALTER TABLE IF EXISTS s SET (\"\0sequence_restart\" = '-5', \"\0sequence_owner\" = '\"Bob\"')"
        );
        assert_eq!(alter_sequence_as_table("ALTER SEQUENCE s RESTART").unwrap(), "ALTER TABLE s SET (\"\0sequence_restart\" = '')");
        assert_eq!(
            alter_sequence_as_table("ALTER SEQUENCE s INCREMENT BY -2 NO MINVALUE MAXVALUE 9 START WITH 3 CACHE 1 NO CYCLE AS integer").unwrap(),
            concat!(
                "ALTER TABLE s SET (\"\0sequence_increment\" = '-2', \"\0sequence_minvalue\" = '', \"\0sequence_maxvalue\" = '9', ",
                "\"\0sequence_start\" = '3', \"\0sequence_cache\" = '1', \"\0sequence_cycle\" = 'false', \"\0sequence_as\" = 'integer')"
            )
        );
        assert_eq!(alter_sequence_as_table("ALTER SEQUENCE s INCREMENT 2 CYCLE").unwrap(), "ALTER TABLE s SET (\"\0sequence_increment\" = '2', \"\0sequence_cycle\" = 'true')");
        assert_eq!(alter_sequence_as_table("ALTER SEQUENCE s RENAME TO t").unwrap_err().sqlstate(), "42601");
        assert_eq!(alter_sequence_as_table("ALTER SEQUENCE s").unwrap_err().sqlstate(), "42601");
    }

    fn changes(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn altered_options_follow_postgresql() {
        let bigint = sequence_options(TypeKind::Bigint, &[]).unwrap();
        // AS smallint: the bound at bigint's limit becomes smallint's.
        let small = altered_options(&bigint, &changes(&[(AS_OPTION, "smallint")])).unwrap();
        assert_eq!((small.min_value, small.max_value, small.value_type), (1, 32767, TypeKind::Smallint as i32));
        // A bound set by hand stays.
        let capped = altered_options(&bigint, &changes(&[(MAXVALUE_OPTION, "100")])).unwrap();
        assert_eq!(altered_options(&capped, &changes(&[(AS_OPTION, "integer")])).unwrap().max_value, 100);
        // A descending increment alone keeps the bounds; with NO MINVALUE / NO MAXVALUE they turn.
        let down = altered_options(&bigint, &changes(&[(INCREMENT_OPTION, "-1")])).unwrap();
        assert_eq!((down.increment, down.min_value, down.max_value), (-1, 1, i64::MAX));
        let down = altered_options(&bigint, &changes(&[(INCREMENT_OPTION, "-1"), (MINVALUE_OPTION, ""), (MAXVALUE_OPTION, "")])).unwrap();
        assert_eq!((down.min_value, down.max_value), (i64::MIN, -1));
        assert_eq!(altered_options(&bigint, &changes(&[(INCREMENT_OPTION, "0")])).unwrap_err().sqlstate(), "22023");
        assert_eq!(altered_options(&bigint, &changes(&[(AS_OPTION, "smallint"), (MAXVALUE_OPTION, "40000")])).unwrap_err().sqlstate(), "22023");
        assert_eq!(altered_options(&bigint, &changes(&[(AS_OPTION, "text")])).unwrap_err().sqlstate(), "22023");
        let rest = altered_options(&bigint, &changes(&[(START_OPTION, "5"), (CACHE_OPTION, "3"), (CYCLE_OPTION, "true")])).unwrap();
        assert_eq!((rest.start, rest.cache, rest.cycle), (5, 3, true));
    }
}
