//! DDL statements translated into storage catalog requests:
//! CREATE / DROP / ALTER TABLE, CREATE / DROP DATABASE (indexes: `indexes`).

use datafusion::sql::sqlparser::ast::{
    AlterColumnOperation, AlterTable, AlterTableOperation, ColumnDef as AstColumn, ColumnOption, CreateTable, DataType, Expr,
    ExactNumberInfo, CharacterLength, GeneratedAs, Ident, ObjectName, ObjectNamePart, RenameTableNameKind, TableConstraint,
    TimezoneInfo, UnaryOperator, Value,
};
use ebb_proto::storage::{
    AlterColumn, AlterTableRequest, ColumnDef, ColumnDefault, ColumnType, CreateTableRequest, PrimaryKey, RenameColumn,
    SequenceOptions, TableDef, TypeKind, alter_column::Change, alter_table_request::Action,
};

use super::checks::{self, CheckSpec};
use super::foreign_keys::{self, ForeignKeySpec};
use super::indexes::{self, UniqueSpec};
use super::sequences::{self, OwnedSequence};
use crate::error::{ComputeError, Result};

/// An identifier as PostgreSQL sees it: unquoted names fold to lower case.
pub fn ident(i: &Ident) -> String {
    if i.quote_style.is_some() { i.value.clone() } else { i.value.to_lowercase() }
}

/// `[schema.]name` of an object name.
pub fn object_name(n: &ObjectName) -> Result<(Option<String>, String)> {
    let parts: Vec<String> = n
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Ok(ident(i)),
            other => Err(ComputeError::unsupported(format!("object name part {other}"))),
        })
        .collect::<Result<_>>()?;
    match parts.as_slice() {
        [name] => Ok((None, name.clone())),
        [schema, name] => Ok((Some(schema.clone()), name.clone())),
        [_db, schema, name] => Ok((Some(schema.clone()), name.clone())),
        _ => Err(ComputeError::Syntax(format!("improper qualified name: {n}"))),
    }
}

/// `base` with `n` appended, `base` cut (at a character boundary) so the
/// whole fits PostgreSQL's 63 bytes.
pub fn numbered(base: &str, n: usize) -> String {
    let suffix = n.to_string();
    let mut cut = base.len().min(63 - suffix.len());
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &base[..cut])
}

/// `base`, or `base1`, `base2`, … (see [`numbered`]): the first of them not
/// `taken`, as PostgreSQL picks names for unnamed constraints.
pub fn free_name(base: &str, taken: impl Fn(&str) -> bool) -> String {
    let mut name = base.to_string();
    let mut n = 0;
    while taken(&name) {
        n += 1;
        name = numbered(base, n);
    }
    name
}

/// The names of a table's constraints (and of its indexes, which share
/// their namespace): a new constraint's name must be none of them.
pub fn constraint_names(def: &TableDef) -> Vec<String> {
    let mut names: Vec<String> = def.checks.iter().map(|c| c.name.clone()).collect();
    names.extend(def.indexes.iter().map(|i| i.name.clone()));
    names.extend(def.foreign_keys.iter().map(|f| f.name.clone()));
    if !def.primary_key.is_empty() {
        names.push(format!("{}_pkey", def.name));
    }
    names
}

/// The column names of a PRIMARY KEY constraint.
fn key_columns(pk: &datafusion::sql::sqlparser::ast::PrimaryKeyConstraint) -> Result<Vec<String>> {
    pk.columns
        .iter()
        .map(|c| match &c.column.expr {
            Expr::Identifier(i) => Ok(ident(i)),
            other => Err(ComputeError::unsupported(format!("primary key expression {other}"))),
        })
        .collect()
}

fn ty(kind: TypeKind, length: u32, scale: u32) -> ColumnType {
    ColumnType { kind: kind as i32, length, scale }
}

fn char_len(l: &Option<CharacterLength>) -> Result<u32> {
    match l {
        None => Ok(0),
        Some(CharacterLength::IntegerLength { length, .. }) => {
            u32::try_from(*length).map_err(|_| ComputeError::invalid("22023", format!("length {length} is too large")))
        }
        Some(CharacterLength::Max) => Ok(0),
    }
}

/// The storage type of a SQL type name.
pub fn column_type(dt: &DataType) -> Result<ColumnType> {
    use DataType as D;
    Ok(match dt {
        D::SmallInt(_) | D::Int2(_) => ty(TypeKind::Smallint, 0, 0),
        D::Int(_) | D::Integer(_) | D::Int4(_) => ty(TypeKind::Integer, 0, 0),
        D::BigInt(_) | D::Int8(_) => ty(TypeKind::Bigint, 0, 0),
        D::Numeric(info) | D::Decimal(info) | D::Dec(info) => match info {
            ExactNumberInfo::None => ty(TypeKind::Numeric, 0, 0),
            ExactNumberInfo::Precision(p) => ty(TypeKind::Numeric, *p as u32, 0),
            ExactNumberInfo::PrecisionAndScale(p, s) if *s >= 0 => ty(TypeKind::Numeric, *p as u32, *s as u32),
            ExactNumberInfo::PrecisionAndScale(..) => return Err(ComputeError::unsupported("negative numeric scale")),
        },
        D::Real | D::Float4 => ty(TypeKind::Real, 0, 0),
        D::Float(ExactNumberInfo::Precision(p)) if *p <= 24 => ty(TypeKind::Real, 0, 0),
        D::Float(_) | D::Float8 | D::Double(_) | D::DoublePrecision => ty(TypeKind::Double, 0, 0),
        D::Text | D::String(None) => ty(TypeKind::Text, 0, 0),
        D::Varchar(l) | D::CharacterVarying(l) | D::CharVarying(l) => ty(TypeKind::Varchar, char_len(l)?, 0),
        D::Char(l) | D::Character(l) => ty(TypeKind::Char, char_len(l)?.max(1), 0),
        D::Boolean | D::Bool => ty(TypeKind::Boolean, 0, 0),
        D::Date => ty(TypeKind::Date, 0, 0),
        D::Timestamp(_, TimezoneInfo::Tz | TimezoneInfo::WithTimeZone) => ty(TypeKind::Timestamptz, 0, 0),
        D::Timestamp(_, _) => ty(TypeKind::Timestamp, 0, 0),
        D::Bytea => ty(TypeKind::Bytea, 0, 0),
        D::Uuid => ty(TypeKind::Uuid, 0, 0),
        D::JSON => ty(TypeKind::Json, 0, 0),
        D::JSONB => ty(TypeKind::Jsonb, 0, 0),
        D::Custom(name, _) => match name.to_string().to_lowercase().as_str() {
            "timestamptz" => ty(TypeKind::Timestamptz, 0, 0),
            serial if sequences::serial_type(serial).is_some() => {
                return Err(ComputeError::invalid("0A000", format!("the {name} type is only for columns of CREATE TABLE")));
            }
            other => return Err(ComputeError::invalid("42704", format!("type \"{other}\" does not exist"))),
        },
        other => return Err(ComputeError::unsupported(format!("the type {other}"))),
    })
}

/// A constant DEFAULT as PostgreSQL text, or `None` if it must be evaluated.
fn constant_default(e: &Expr) -> Option<Option<String>> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Null => Some(None),
            Value::Number(n, _) => Some(Some(n.to_string())),
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(Some(s.clone())),
            Value::Boolean(b) => Some(Some(b.to_string())),
            _ => None,
        },
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match constant_default(expr)? {
            Some(s) => Some(Some(format!("-{s}"))),
            None => Some(None),
        },
        Expr::Cast { expr, .. } | Expr::Nested(expr) => constant_default(expr),
        _ => None,
    }
}

/// A translated column definition.
struct Column {
    def: ColumnDef,
    /// PRIMARY KEY.
    pk: bool,
    /// SERIAL or IDENTITY: the options of the sequence it needs.
    sequence: Option<SequenceOptions>,
    /// UNIQUE.
    unique: Option<UniqueSpec>,
    /// CHECK constraints.
    checks: Vec<CheckSpec>,
    /// REFERENCES.
    foreign_key: Option<ForeignKeySpec>,
}

/// Translates a column definition.
fn column(c: &AstColumn) -> Result<Column> {
    let serial = match &c.data_type {
        DataType::Custom(name, _) => sequences::serial_type(&name.to_string()),
        _ => None,
    };
    let kind = match serial {
        Some(k) => ColumnType { kind: k as i32, length: 0, scale: 0 },
        None => column_type(&c.data_type)?,
    };
    let mut sequence = serial.map(|k| sequences::sequence_options(k, &[])).transpose()?;
    let mut def = ColumnDef { name: ident(&c.name), r#type: Some(kind), not_null: serial.is_some(), ..Default::default() };
    let mut pk = false;
    let mut unique = None;
    let mut checks = Vec::new();
    let mut foreign_key = None;
    for o in &c.options {
        match &o.option {
            ColumnOption::Generated { generated_as: as_ @ (GeneratedAs::Always | GeneratedAs::ByDefault), sequence_options, generation_expr: None, .. } => {
                if sequence.is_some() {
                    return Err(ComputeError::invalid("42601", format!("both default and identity specified for column \"{}\"", def.name)));
                }
                let int = match def.r#type.as_ref().map(ColumnType::kind) {
                    Some(k @ (TypeKind::Smallint | TypeKind::Integer | TypeKind::Bigint)) => k,
                    _ => return Err(ComputeError::invalid("22023", "identity column type must be smallint, integer, or bigint")),
                };
                sequence = Some(sequences::sequence_options(int, sequence_options.as_deref().unwrap_or_default())?);
                def.identity = if matches!(as_, GeneratedAs::Always) { "a" } else { "d" }.into();
                def.not_null = true;
            }
            ColumnOption::Null => def.not_null = false,
            ColumnOption::NotNull => def.not_null = true,
            ColumnOption::Default(e) => match constant_default(e) {
                Some(Some(lit)) => def.default_literal = Some(lit),
                Some(None) => {}
                None => def.default_expr = Some(sequences::default_expr_text(e)?),
            },
            ColumnOption::PrimaryKey(_) => {
                pk = true;
                def.not_null = true;
            }
            ColumnOption::Unique(u) => {
                let mut spec = indexes::unique_spec(u, Some(&def.name))?;
                // `CONSTRAINT name UNIQUE` names the column option.
                spec.name = spec.name.or_else(|| o.name.as_ref().map(ident));
                unique = Some(spec);
            }
            ColumnOption::ForeignKey(fk) => {
                let mut spec = foreign_keys::foreign_key_spec(fk, Some(&def.name))?;
                spec.name = spec.name.or_else(|| o.name.as_ref().map(ident));
                foreign_key = Some(spec);
            }
            ColumnOption::Check(k) => {
                let mut spec = checks::check_spec(k)?;
                spec.name = spec.name.or_else(|| o.name.as_ref().map(ident));
                checks.push(spec);
            }
            other => return Err(ComputeError::unsupported(format!("column constraint \"{other}\""))),
        }
    }
    if sequence.is_some() && (def.default_expr.is_some() || def.default_literal.is_some()) {
        return Err(ComputeError::invalid("42601", format!("multiple default values specified for column \"{}\"", def.name)));
    }
    Ok(Column { def, pk, sequence, unique, checks, foreign_key })
}

/// What CREATE TABLE makes: the table, then what needs it to exist.
#[derive(Debug)]
pub struct NewTable {
    pub request: CreateTableRequest,
    /// The sequences its SERIAL and IDENTITY columns need.
    pub sequences: Vec<OwnedSequence>,
    pub uniques: Vec<UniqueSpec>,
    pub foreign_keys: Vec<ForeignKeySpec>,
}

/// CREATE TABLE: the table's request (with its CHECK constraints), and the
/// sequences, UNIQUE and FOREIGN KEY constraints to add once it exists.
pub fn create_table(database: &str, ct: &CreateTable) -> Result<NewTable> {
    if ct.temporary {
        return Err(ComputeError::unsupported("temporary tables"));
    }
    let (schema, name) = object_name(&ct.name)?;
    let mut columns = Vec::new();
    let mut primary_key = Vec::new();
    let mut owned = Vec::new();
    let mut uniques = Vec::new();
    let mut check_specs = Vec::new();
    let mut references = Vec::new();
    for c in &ct.columns {
        let Column { mut def, pk, sequence, unique, checks, foreign_key } = column(c)?;
        uniques.extend(unique);
        check_specs.extend(checks);
        references.extend(foreign_key);
        if pk {
            primary_key.push(def.name.clone());
        }
        if let Some(options) = sequence {
            let seq = sequences::owned_sequence_name(&name, &def.name);
            def.default_expr = Some(sequences::nextval_default(schema.as_deref().unwrap_or_default(), &seq));
            owned.push(OwnedSequence { name: seq, column: def.name.clone(), options });
        }
        columns.push(def);
    }
    for constraint in &ct.constraints {
        match constraint {
            TableConstraint::PrimaryKey(pk) => {
                if !primary_key.is_empty() {
                    return Err(ComputeError::invalid("42P16", format!("multiple primary keys for table \"{name}\" are not allowed")));
                }
                primary_key = key_columns(pk)?;
            }
            TableConstraint::Unique(u) => uniques.push(indexes::unique_spec(u, None)?),
            TableConstraint::Check(k) => check_specs.push(checks::check_spec(k)?),
            TableConstraint::ForeignKey(fk) => references.push(foreign_keys::foreign_key_spec(fk, None)?),
            other => return Err(ComputeError::unsupported(format!("table constraint \"{other}\""))),
        }
    }
    if primary_key.len() > 1 && ct.columns.iter().any(|c| c.options.iter().any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))) {
        return Err(ComputeError::invalid("42P16", format!("multiple primary keys for table \"{name}\" are not allowed")));
    }
    let checks = checks::named(&name, check_specs, &[]);
    let req = CreateTableRequest {
        database: database.into(),
        schema: schema.unwrap_or_default(),
        name,
        columns,
        primary_key,
        if_not_exists: ct.if_not_exists,
        sequence: None,
        checks,
    };
    if !req.checks.is_empty() {
        checks::validate(&TableDef { name: req.name.clone(), columns: req.columns.clone(), checks: req.checks.clone(), ..Default::default() })?;
    }
    // A UNIQUE constraint on exactly the primary key adds nothing.
    uniques.retain(|u| u.columns != req.primary_key);
    Ok(NewTable { request: req, sequences: owned, uniques, foreign_keys: references })
}

/// ALTER TABLE: one storage request per operation.
pub fn alter_table(database: &str, at: &AlterTable) -> Result<Vec<AlterTableRequest>> {
    let (schema, name) = object_name(&at.name)?;
    let mut out = Vec::new();
    for op in &at.operations {
        let action = match op {
            AlterTableOperation::AddColumn { column_def, .. } => {
                let Column { def, pk, sequence, unique, checks, foreign_key } = column(column_def)?;
                if foreign_key.is_some() {
                    return Err(ComputeError::unsupported("ADD COLUMN … REFERENCES (add the column, then ADD CONSTRAINT … FOREIGN KEY)"));
                }
                if !checks.is_empty() {
                    return Err(ComputeError::unsupported("ADD COLUMN … CHECK (add the column, then ADD CONSTRAINT … CHECK)"));
                }
                if unique.is_some() {
                    return Err(ComputeError::unsupported("ADD COLUMN … UNIQUE (add the column, then ADD CONSTRAINT … UNIQUE)"));
                }
                if sequence.is_some() {
                    return Err(ComputeError::unsupported("ADD COLUMN of a SERIAL or IDENTITY column"));
                }
                if pk {
                    return Err(ComputeError::unsupported("adding a primary-key column"));
                }
                if def.default_expr.is_some() {
                    return Err(ComputeError::unsupported("ADD COLUMN with a non-constant DEFAULT"));
                }
                Action::AddColumn(def)
            }
            AlterTableOperation::AddConstraint { constraint: TableConstraint::PrimaryKey(pk), .. } => {
                Action::AddPrimaryKey(PrimaryKey { columns: key_columns(pk)? })
            }
            AlterTableOperation::DropColumn { column_names, .. } if column_names.len() == 1 => {
                Action::DropColumn(ident(&column_names[0]))
            }
            AlterTableOperation::RenameColumn { old_column_name, new_column_name } => {
                Action::RenameColumn(RenameColumn { from: ident(old_column_name), to: ident(new_column_name) })
            }
            AlterTableOperation::RenameTable { table_name: RenameTableNameKind::To(n) | RenameTableNameKind::As(n) } => {
                Action::RenameTable(object_name(n)?.1)
            }
            AlterTableOperation::AlterColumn { column_name, op } => {
                let change = match op {
                    AlterColumnOperation::SetDefault { value } => Some(Change::SetDefault(match constant_default(value) {
                        Some(literal) => ColumnDefault { literal, expr: None },
                        None => ColumnDefault { literal: None, expr: Some(sequences::default_expr_text(value)?) },
                    })),
                    AlterColumnOperation::DropDefault => None,
                    AlterColumnOperation::SetNotNull => Some(Change::NotNull(true)),
                    AlterColumnOperation::SetDataType { using: Some(_), .. } => {
                        return Err(ComputeError::unsupported("ALTER COLUMN … TYPE … USING"));
                    }
                    AlterColumnOperation::SetDataType { data_type, using: None, .. } => Some(Change::SetType(column_type(data_type)?)),
                    AlterColumnOperation::DropNotNull => Some(Change::NotNull(false)),
                    // Needs a sequence first: the session does it.
                    AlterColumnOperation::AddGenerated { .. } => continue,
                };
                Action::AlterColumn(AlterColumn { column: ident(column_name), change })
            }
            // Nothing to store: ebb's tables have no owners (the session checks the role).
            AlterTableOperation::OwnerTo { .. } => continue,
            // Indexes: the session does them.
            AlterTableOperation::AddConstraint { constraint: TableConstraint::Unique(_) | TableConstraint::Check(_) | TableConstraint::ForeignKey(_), .. }
            | AlterTableOperation::DropConstraint { .. } => continue,
            other => return Err(ComputeError::unsupported(format!("ALTER TABLE {other}"))),
        };
        out.push(AlterTableRequest {
            database: database.into(),
            schema: schema.clone().unwrap_or_default(),
            name: name.clone(),
            action: Some(action),
        });
    }
    Ok(out)
}
