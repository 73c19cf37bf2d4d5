//! Simple-protocol texts recognised without parsing them.
//!
//! `auto_params` runs a statement sent as text with its integer literals
//! bound as parameters of a plan made once per *shape*; but finding the
//! shape parses the text every time, and under pgbench's TPC-B parsing was
//! ~12 % of a compute's CPU. Here a text is cut at its integer literals
//! (its *skeleton*: the text with each literal replaced by a marker, and
//! where the literals are) by a scan that knows just enough SQL lexing to
//! find them: quoted strings and identifiers are skipped, and anything it
//! does not follow (comments, dollar quotes, escape strings, parameters,
//! several statements, numbers that are not plain integers) makes it give
//! up. A skeleton seen a second time is learnt: which of its literals
//! become which of the shape's parameters. Later texts with that skeleton
//! run the shape with their literals as values, without being parsed.
//!
//! Learning cannot rely on the values' order alone (two literals may be
//! equal, and the shape's parameters follow the syntax tree), so it parses
//! a probe: the text with every literal replaced by a distinct sentinel
//! number. Its shape must be the very shape of the text (every literal a
//! parameter, nothing else changed — a literal that is not a parameter
//! shows in the shape with its sentinel), and each parameter's value names
//! the literal it came from and whether it was negated (`- 5`). A skeleton
//! whose probe disagrees is marked and always parsed.

use std::ops::Range;
use std::sync::Arc;

use datafusion::sql::sqlparser::ast::Statement;

use crate::auto_params::{self, Shape};

/// The marker a literal leaves in a skeleton's key; a text holding it is
/// not cut.
const MARKER: char = '\u{1}';
/// The first sentinel a probe writes in place of a literal (far beyond
/// what an `integer` holds, so no rewrite treats it as small).
const SENTINEL: i64 = 7_000_000_000_000;

/// A text cut at its integer literals.
#[derive(Debug, PartialEq)]
pub struct Skeleton {
    /// The text with each literal replaced by [`MARKER`].
    pub key: String,
    /// Where the literals are in the text, in order.
    literals: Vec<Range<usize>>,
}

/// What a session knows of a skeleton.
#[derive(Clone, Debug)]
pub enum Sighting {
    /// Seen once (a text seen once is not learnt: most never repeat).
    Once,
    /// Learnt: texts with it run without being parsed.
    Learnt(Arc<KnownShape>),
    /// Its literals cannot all be told apart: always parsed.
    Unlearnable,
}

/// A skeleton's statement: the shape it runs as and, for each of the
/// shape's parameters, which literal gives its value and whether negated.
#[derive(Debug)]
pub struct KnownShape {
    /// The shape (see [`auto_params::Shape`]).
    pub stmt: Statement,
    /// Its text: the key of its plan cache.
    pub text: String,
    params: Vec<(usize, bool)>,
}

/// Cuts `sql` at its integer literals; `None` when it has none or holds
/// something this scan does not follow.
pub fn skeleton(sql: &str) -> Option<Skeleton> {
    if sql.len() > crate::session::plan_cache::MAX_KEPT_TEXT || sql.contains(MARKER) {
        return None;
    }
    let b = sql.as_bytes();
    // Allocated at the first literal: BEGIN, END and the like have none.
    let mut key = String::new();
    let mut literals = Vec::new();
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' => {
                // A prefixed string (E'…', B'…', X'…', N'…', U&'…') is not followed.
                if b[i] == b'\'' && i > 0 && (is_word(b[i - 1]) || b[i - 1] == b'&') {
                    return None;
                }
                i = after_quoted(b, i)?;
            }
            b'$' | b'\\' => return None,
            b'-' if b.get(i + 1) == Some(&b'-') => return None,
            b'/' if b.get(i + 1) == Some(&b'*') => return None,
            b';' => {
                if !sql[i + 1..].trim().is_empty() {
                    return None;
                }
                i += 1;
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                // 1.5, .5, 1e5, 0x1F, 1_000: not plain integers.
                if (start > 0 && b[start - 1] == b'.') || b.get(i).is_some_and(|&c| c == b'.' || is_word(c)) {
                    return None;
                }
                if key.capacity() == 0 {
                    key.reserve(sql.len());
                }
                key.push_str(&sql[copied..start]);
                key.push(MARKER);
                copied = i;
                literals.push(start..i);
            }
            c if is_word(c) => {
                // A keyword or identifier, digits in it included (t1).
                while i < b.len() && is_word(b[i]) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    if literals.is_empty() {
        return None;
    }
    key.push_str(&sql[copied..]);
    Some(Skeleton { key, literals })
}

/// Whether `c` continues a word (keyword, identifier, number).
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// The position after the quoted string or identifier starting at `start`
/// (a doubled quote stands for itself); `None` when it is not closed.
fn after_quoted(b: &[u8], start: usize) -> Option<usize> {
    let quote = b[start];
    let mut i = start + 1;
    loop {
        if *b.get(i)? == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
}

impl Skeleton {
    /// The value of literal `i` in `sql` (the text this skeleton was cut from).
    fn literal(&self, sql: &str, i: usize) -> Option<i64> {
        sql.get(self.literals.get(i)?.clone())?.parse().ok()
    }

    /// `sql` with literal `i` replaced by `SENTINEL + i`.
    fn probe(&self, sql: &str) -> String {
        let mut probe = String::with_capacity(sql.len() + 16 * self.literals.len());
        let mut copied = 0;
        for (i, r) in self.literals.iter().enumerate() {
            probe.push_str(&sql[copied..r.start]);
            probe.push_str(&(SENTINEL + i as i64).to_string());
            copied = r.end;
        }
        probe.push_str(&sql[copied..]);
        probe
    }
}

impl KnownShape {
    /// Learns which literals of `sql` (cut as `skeleton`) give the
    /// parameters of `shape`, the shape of `sql`'s statement; `parse`
    /// parses a text as the session does. `None` when they cannot be told
    /// apart for certain (see the module documentation).
    pub fn learn(sql: &str, skeleton: &Skeleton, shape: &Shape, parse: impl Fn(&str) -> Option<Statement>) -> Option<Self> {
        let probed = auto_params::parameterise(&parse(&skeleton.probe(sql))?)?;
        if probed.text != shape.text || probed.values.len() != skeleton.literals.len() || shape.values.len() != probed.values.len() {
            return None;
        }
        let mut used = vec![false; skeleton.literals.len()];
        let mut params = Vec::with_capacity(probed.values.len());
        for (value, original) in probed.values.iter().zip(&shape.values) {
            let (offset, negated) = if *value >= SENTINEL { (value - SENTINEL, false) } else { (-value - SENTINEL, true) };
            let i = usize::try_from(offset).ok().filter(|&i| i < used.len() && !used[i])?;
            used[i] = true;
            // The text's own values follow the same mapping.
            let literal = skeleton.literal(sql, i)?;
            if *original != if negated { -literal } else { literal } {
                return None;
            }
            params.push((i, negated));
        }
        Some(Self { stmt: shape.stmt.clone(), text: shape.text.clone(), params })
    }

    /// The parameter values `sql`, a text with this shape's skeleton
    /// (cut as `skeleton`), gives; `None` if a literal does not fit an i64.
    pub fn values(&self, sql: &str, skeleton: &Skeleton) -> Option<Vec<i64>> {
        self.params.iter().map(|&(i, negated)| skeleton.literal(sql, i).map(|v| if negated { -v } else { v })).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Option<Statement> {
        let mut stmts = crate::session::parse(sql).ok()?;
        (stmts.len() == 1).then(|| stmts.remove(0))
    }

    fn learnt(sql: &str) -> Option<(Skeleton, KnownShape)> {
        let skeleton = skeleton(sql)?;
        let shape = auto_params::parameterise(&parse(sql)?)?;
        let known = KnownShape::learn(sql, &skeleton, &shape, parse)?;
        Some((skeleton, known))
    }

    #[test]
    fn literals_are_found_outside_strings_identifiers_and_words() {
        let s = skeleton("UPDATE t1 SET v = v + -12 WHERE \"k2\" = 7 AND s = 'a 3 ''4''';").expect("a skeleton");
        assert_eq!(s.key, "UPDATE t1 SET v = v + -\u{1} WHERE \"k2\" = \u{1} AND s = 'a 3 ''4''';");
        assert_eq!(s.literals, vec![23..25, 39..40]);
        assert!(skeleton("SELECT 1").is_some(), "a literal anywhere is cut");
        for refused in [
            "SELECT v FROM t WHERE k = 1.5",
            "SELECT v FROM t WHERE k = 1e5",
            "SELECT v FROM t WHERE k = .5",
            "SELECT v FROM t WHERE k = 0x1F",
            "SELECT v FROM t WHERE k = $1",
            "SELECT v FROM t WHERE k = 1 -- 2",
            "SELECT v FROM t WHERE k = 1 /* 2 */",
            "SELECT v FROM t WHERE s = E'\\n' AND k = 1",
            "SELECT v FROM t WHERE k = 1; SELECT 2",
            "SELECT v FROM t WHERE s = 'open AND k = 1",
            "SELECT v FROM t WHERE k = \u{1} AND j = 1",
        ] {
            assert_eq!(skeleton(refused), None, "{refused}");
        }
        assert_eq!(skeleton("SELECT v FROM t WHERE name = 'x'"), None, "no integer literal");
    }

    #[test]
    fn a_learnt_shape_takes_the_values_of_other_texts_with_its_skeleton() {
        let sql = "UPDATE pgbench_accounts SET abalance = abalance + -5 WHERE aid = 5";
        let (skeleton_1, known) = learnt(sql).expect("learnt");
        assert_eq!(known.values(sql, &skeleton_1), Some(vec![-5, 5]), "equal literals told apart");
        let other = "UPDATE pgbench_accounts SET abalance = abalance + -4021 WHERE aid = 77";
        let skeleton_2 = skeleton(other).expect("a skeleton");
        assert_eq!(skeleton_2.key, skeleton_1.key);
        assert_eq!(known.values(other, &skeleton_2), Some(vec![-4021, 77]));
        let (_, reversed) = learnt("SELECT v FROM t WHERE b = 2 AND a IN (3, 4)").expect("learnt");
        assert_eq!(reversed.params, vec![(0, false), (1, false), (2, false)]);
        let too_big = "UPDATE pgbench_accounts SET abalance = abalance + -4021 WHERE aid = 99999999999999999999";
        assert_eq!(known.values(too_big, &skeleton(too_big).expect("a skeleton")), None, "not an i64: parsed instead");
    }

    #[test]
    fn literals_that_are_not_parameters_are_not_learnt() {
        assert!(learnt("SELECT v FROM t WHERE k = 3 LIMIT 10").is_none(), "LIMIT stays a literal");
        assert!(learnt("SELECT v + 1 FROM t WHERE k = 3").is_none(), "select list");
        assert!(learnt("SELECT v FROM t WHERE k = 3::int").is_none(), "cast");
        assert!(learnt("SELECT v FROM t WHERE k = 3").is_some());
    }
}
