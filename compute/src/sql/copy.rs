//! `COPY … FROM STDIN`: the statement's options and the parser of the data
//! the client streams in (PostgreSQL's text and CSV formats).
//!
//! Data arrives in CopyData chunks that may split a row anywhere, so the
//! parser keeps the unfinished tail and hands out complete rows, each a list
//! of optional strings (None = NULL). Storage converts text to column types.

use datafusion::sql::sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget};

use crate::error::{ComputeError, Result};

/// How the data of one COPY is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    /// CSV rather than PostgreSQL's text format.
    pub csv: bool,
    /// Field separator (tab for text, comma for CSV).
    pub delimiter: u8,
    /// The string that means NULL (`\N` for text, the empty string for CSV).
    pub null: String,
    /// The first line is a header to skip.
    pub header: bool,
    /// CSV quote character.
    pub quote: u8,
    /// CSV escape character (defaults to the quote).
    pub escape: u8,
}

impl CopyFormat {
    fn text() -> Self {
        Self { csv: false, delimiter: b'\t', null: "\\N".into(), header: false, quote: b'"', escape: b'"' }
    }
}

/// What `COPY … FROM STDIN` asks for.
#[derive(Debug, Clone)]
pub struct CopyFrom {
    /// The target table (`[schema.]name` as written).
    pub table: datafusion::sql::sqlparser::ast::ObjectName,
    /// Target columns; empty = all, in table order.
    pub columns: Vec<String>,
    pub format: CopyFormat,
}

fn one_byte(what: &str, c: char) -> Result<u8> {
    if c.is_ascii() {
        Ok(c as u8)
    } else {
        Err(ComputeError::invalid("0A000", format!("COPY {what} must be a single one-byte character")))
    }
}

/// Reads the options of a `COPY` statement; only `FROM STDIN` of a table is served.
pub fn copy_from(
    source: &CopySource,
    to: bool,
    target: &CopyTarget,
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
) -> Result<CopyFrom> {
    if to {
        return Err(ComputeError::unsupported("COPY … TO"));
    }
    if !matches!(target, CopyTarget::Stdin) {
        return Err(ComputeError::invalid(
            "42501",
            "COPY from a file or program is not allowed on a compute node; use COPY … FROM STDIN (psql's \\copy)",
        ));
    }
    let CopySource::Table { table_name, columns } = source else {
        return Err(ComputeError::Syntax("COPY FROM needs a table, not a query".into()));
    };
    let mut fmt = CopyFormat::text();
    let mut explicit = (None, None, None);
    for o in options {
        match o {
            CopyOption::Format(f) => match f.value.to_lowercase().as_str() {
                "text" => fmt.csv = false,
                "csv" => fmt.csv = true,
                "binary" => return Err(ComputeError::unsupported("COPY in binary format")),
                other => return Err(ComputeError::invalid("22023", format!("COPY format \"{other}\" not recognized"))),
            },
            CopyOption::Freeze(_) => {}
            CopyOption::Delimiter(c) => explicit.0 = Some(one_byte("delimiter", *c)?),
            CopyOption::Null(s) => explicit.1 = Some(s.clone()),
            CopyOption::Header(h) => fmt.header = *h,
            CopyOption::Quote(c) => fmt.quote = one_byte("quote", *c)?,
            CopyOption::Escape(c) => explicit.2 = Some(one_byte("escape", *c)?),
            CopyOption::Encoding(e) if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
            other => return Err(ComputeError::unsupported(format!("COPY option {other}"))),
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Csv(csv_opts) => {
                fmt.csv = true;
                for c in csv_opts {
                    match c {
                        CopyLegacyCsvOption::Header => fmt.header = true,
                        CopyLegacyCsvOption::Quote(q) => fmt.quote = one_byte("quote", *q)?,
                        CopyLegacyCsvOption::Escape(e) => explicit.2 = Some(one_byte("escape", *e)?),
                        other => return Err(ComputeError::unsupported(format!("COPY option {other}"))),
                    }
                }
            }
            CopyLegacyOption::Delimiter(c) => explicit.0 = Some(one_byte("delimiter", *c)?),
            CopyLegacyOption::Null(s) => explicit.1 = Some(s.clone()),
            CopyLegacyOption::Header => fmt.header = true,
            CopyLegacyOption::Binary => return Err(ComputeError::unsupported("COPY in binary format")),
            other => return Err(ComputeError::unsupported(format!("COPY option {other}"))),
        }
    }
    if fmt.csv {
        fmt.delimiter = b',';
        fmt.null = String::new();
    }
    if let Some(d) = explicit.0 {
        fmt.delimiter = d;
    }
    if let Some(n) = explicit.1 {
        fmt.null = n;
    }
    fmt.escape = explicit.2.unwrap_or(fmt.quote);
    if matches!(fmt.delimiter, b'\r' | b'\n') || (!fmt.csv && fmt.delimiter == b'\\') {
        return Err(ComputeError::invalid("22023", "COPY delimiter cannot be newline, carriage return or backslash"));
    }
    let columns = columns.iter().map(crate::sql::ddl::ident).collect();
    Ok(CopyFrom { table: table_name.clone(), columns, format: fmt })
}

/// Rewrites `FREEZE on` / `HEADER off` (PostgreSQL's boolean spellings,
/// which pgbench sends) in a COPY statement to `true` / `false`, the only
/// forms the SQL parser takes. Other statements are returned unchanged.
pub fn normalize_boolean_options(sql: &str) -> std::borrow::Cow<'_, str> {
    let is_copy = sql.trim_start().get(..4).is_some_and(|w| w.eq_ignore_ascii_case("copy"));
    if !is_copy {
        return std::borrow::Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut previous = String::new();
    let mut rest = sql;
    while !rest.is_empty() {
        let word_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if word_len == 0 {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let word = &rest[..word_len];
        let lower = word.to_ascii_lowercase();
        let boolean_option = matches!(previous.as_str(), "freeze" | "header");
        match lower.as_str() {
            "on" if boolean_option => out.push_str("true"),
            "off" if boolean_option => out.push_str("false"),
            _ => out.push_str(word),
        }
        previous = lower;
        rest = &rest[word_len..];
    }
    std::borrow::Cow::Owned(out)
}

/// Splits streamed COPY data into rows.
#[derive(Debug)]
pub struct CopyParser {
    fmt: CopyFormat,
    /// Bytes of a row not yet complete.
    pending: Vec<u8>,
    /// Whether the header line is still to be skipped.
    skip_header: bool,
    /// `\.` was seen: everything after it is ignored.
    ended: bool,
    /// Line number of the next row (for error messages).
    line: u64,
}

/// One parsed row: a value per field, None for NULL.
pub type Row = Vec<Option<String>>;

impl CopyParser {
    /// A parser for data in `fmt`.
    pub fn new(fmt: CopyFormat) -> Self {
        let skip_header = fmt.header;
        Self { fmt, pending: Vec::new(), skip_header, ended: false, line: 1 }
    }

    /// Feeds a chunk; complete rows are appended to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Row>) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(end) = self.record_end(start) {
            let record = self.pending[start..end].to_vec();
            start = end + 1;
            self.record(&record, out)?;
            if self.ended {
                break;
            }
        }
        self.pending.drain(..start);
        Ok(())
    }

    /// Ends the data; a last row without a newline still counts.
    pub fn finish(&mut self, out: &mut Vec<Row>) -> Result<()> {
        if !self.ended && !self.pending.is_empty() {
            if self.fmt.csv && self.record_end(0).is_none() && self.in_quotes(&self.pending) {
                return Err(self.error("unterminated CSV quoted field"));
            }
            let record = std::mem::take(&mut self.pending);
            self.record(&record, out)?;
        }
        self.ended = true;
        Ok(())
    }

    /// The position of the newline ending the record that starts at `start`.
    fn record_end(&self, start: usize) -> Option<usize> {
        let bytes = &self.pending[start..];
        if !self.fmt.csv {
            return bytes.iter().position(|&b| b == b'\n').map(|p| start + p);
        }
        let mut quoted = false;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if quoted {
                if b == self.fmt.escape && self.fmt.escape != self.fmt.quote && i + 1 < bytes.len() {
                    i += 2;
                    continue;
                }
                if b == self.fmt.quote {
                    quoted = false;
                }
            } else if b == self.fmt.quote {
                quoted = true;
            } else if b == b'\n' {
                return Some(start + i);
            }
            i += 1;
        }
        None
    }

    fn in_quotes(&self, bytes: &[u8]) -> bool {
        bytes.iter().filter(|&&b| b == self.fmt.quote).count() % 2 == 1
    }

    fn error(&self, msg: &str) -> ComputeError {
        ComputeError::invalid("22P04", format!("{msg} (COPY line {})", self.line))
    }

    fn record(&mut self, record: &[u8], out: &mut Vec<Row>) -> Result<()> {
        let record = record.strip_suffix(b"\r").unwrap_or(record);
        let line = self.line;
        self.line += 1;
        if record == b"\\." {
            self.ended = true;
            return Ok(());
        }
        if std::mem::take(&mut self.skip_header) {
            return Ok(());
        }
        let row = if self.fmt.csv { self.csv_fields(record) } else { self.text_fields(record) }
            .map_err(|m| ComputeError::invalid("22P04", format!("{m} (COPY line {line})")))?;
        out.push(row);
        Ok(())
    }

    fn utf8(bytes: Vec<u8>) -> std::result::Result<String, String> {
        String::from_utf8(bytes).map_err(|_| "invalid byte sequence for encoding \"UTF8\"".to_string())
    }

    /// Text format: delimiter-separated, backslash escapes, `\N` for NULL.
    fn text_fields(&self, record: &[u8]) -> std::result::Result<Row, String> {
        let mut row = Vec::new();
        for raw in record.split(|&b| b == self.fmt.delimiter) {
            if raw == self.fmt.null.as_bytes() {
                row.push(None);
                continue;
            }
            let mut v = Vec::with_capacity(raw.len());
            let mut i = 0;
            while i < raw.len() {
                let b = raw[i];
                if b != b'\\' || i + 1 == raw.len() {
                    v.push(b);
                    i += 1;
                    continue;
                }
                let e = raw[i + 1];
                i += 2;
                match e {
                    b'b' => v.push(8),
                    b'f' => v.push(12),
                    b'n' => v.push(b'\n'),
                    b'r' => v.push(b'\r'),
                    b't' => v.push(b'\t'),
                    b'v' => v.push(11),
                    b'0'..=b'7' => {
                        let mut n = u32::from(e - b'0');
                        let mut k = 0;
                        while k < 2 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                            n = n * 8 + u32::from(raw[i] - b'0');
                            i += 1;
                            k += 1;
                        }
                        v.push((n & 0xff) as u8);
                    }
                    b'x' if i < raw.len() && raw[i].is_ascii_hexdigit() => {
                        let mut n = 0u32;
                        let mut k = 0;
                        while k < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                            n = n * 16 + (raw[i] as char).to_digit(16).unwrap_or(0);
                            i += 1;
                            k += 1;
                        }
                        v.push(n as u8);
                    }
                    other => v.push(other),
                }
            }
            row.push(Some(Self::utf8(v)?));
        }
        Ok(row)
    }

    /// CSV: quoted fields may hold delimiters, quotes (doubled or escaped)
    /// and newlines; an unquoted field equal to the NULL string is NULL.
    fn csv_fields(&self, record: &[u8]) -> std::result::Result<Row, String> {
        let (q, esc, delim) = (self.fmt.quote, self.fmt.escape, self.fmt.delimiter);
        let mut row = Vec::new();
        let mut i = 0;
        loop {
            let mut v = Vec::new();
            let mut was_quoted = false;
            let mut quoted = false;
            while i < record.len() {
                let b = record[i];
                if quoted {
                    if b == esc && i + 1 < record.len() && (record[i + 1] == q || (esc != q && record[i + 1] == esc)) {
                        v.push(record[i + 1]);
                        i += 2;
                        continue;
                    }
                    if b == q {
                        quoted = false;
                    } else {
                        v.push(b);
                    }
                } else if b == q {
                    quoted = true;
                    was_quoted = true;
                } else if b == delim {
                    break;
                } else {
                    v.push(b);
                }
                i += 1;
            }
            if quoted {
                return Err("unterminated CSV quoted field".into());
            }
            if !was_quoted && v == self.fmt.null.as_bytes() {
                row.push(None);
            } else {
                row.push(Some(Self::utf8(v)?));
            }
            if i >= record.len() {
                break;
            }
            i += 1; // the delimiter
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(fmt: CopyFormat, chunks: &[&[u8]]) -> Result<Vec<Row>> {
        let mut p = CopyParser::new(fmt);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out)?;
        }
        p.finish(&mut out)?;
        Ok(out)
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn text_rows_split_across_chunks_with_escapes_and_nulls() {
        let rows = parse(CopyFormat::text(), &[b"1\ta\\tb\t\\N\n2\t", b"x\\\\y\\101\\x41\tz\r\n", b"\\.\nignored\n"]).unwrap();
        assert_eq!(rows, vec![vec![s("1"), s("a\tb"), None], vec![s("2"), s("x\\yAA"), s("z")]]);
    }

    #[test]
    fn text_last_row_without_newline_counts() {
        let rows = parse(CopyFormat::text(), &[b"1\n2"]).unwrap();
        assert_eq!(rows, vec![vec![s("1")], vec![s("2")]]);
    }

    #[test]
    fn csv_quotes_newlines_header_and_null() {
        let fmt = CopyFormat { csv: true, delimiter: b',', null: String::new(), header: true, quote: b'"', escape: b'"' };
        let rows = parse(fmt, &[b"id,name,note\n1,\"a, \"\"b\"\"\",\n2,\"multi\nli", b"ne\",\"\"\n"]).unwrap();
        assert_eq!(rows, vec![vec![s("1"), s("a, \"b\""), None], vec![s("2"), s("multi\nline"), s("")]]);
    }

    #[test]
    fn csv_unterminated_quote_is_an_error() {
        let fmt = CopyFormat { csv: true, delimiter: b',', null: String::new(), header: false, quote: b'"', escape: b'"' };
        let e = parse(fmt, &[b"1,\"open\n"]).unwrap_err();
        assert_eq!(e.sqlstate(), "22P04");
    }

    #[test]
    fn boolean_option_spellings_are_normalized() {
        assert_eq!(normalize_boolean_options("copy t from stdin with (freeze on)"), "copy t from stdin with (freeze true)");
        assert_eq!(normalize_boolean_options("COPY t FROM STDIN (FORMAT csv, HEADER OFF)"), "COPY t FROM STDIN (FORMAT csv, HEADER false)");
        assert_eq!(normalize_boolean_options("select 'freeze on'"), "select 'freeze on'");
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let e = parse(CopyFormat::text(), &[b"\xff\xfe\n"]).unwrap_err();
        assert_eq!(e.sqlstate(), "22P04");
    }
}
