//! `predict('churn@production', ...)` in SQL: registered models named in a statement are
//! resolved once, before it is planned, to the file of the version the alias points at, so every
//! executor scores with the same version even if the alias moves while the job runs; the
//! versions used are returned for the run's records.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Value, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use serde::Serialize;
use sluice_lake::delta::Lake;

use super::{ModelRef, Registry};
use crate::error::{Error, Result};

/// A registered model a statement used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelUse {
    /// As written: `churn@production`.
    pub reference: String,
    /// The model.
    pub name: String,
    /// The version it resolved to.
    pub version: u64,
    /// The module's id (`stem@sha256-prefix`).
    pub id: String,
    /// The file scored with.
    pub path: String,
}

/// The first argument of a `predict(...)` call, when it is a string literal.
fn model_arg(expr: &mut Expr) -> Option<&mut String> {
    let Expr::Function(function) = expr else { return None };
    if !function.name.to_string().eq_ignore_ascii_case("predict") {
        return None;
    }
    let FunctionArguments::List(list) = &mut function.args else { return None };
    match list.args.first_mut() {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &mut v.value {
            Value::SingleQuotedString(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `arg` names a registered model rather than a file: `name`, `name@7`, `name@alias`,
/// and no file of that name exists.
fn is_reference(arg: &str) -> bool {
    !arg.contains(['/', '\\']) && !arg.ends_with(".pt") && !arg.ends_with(".onnx") && ModelRef::parse(arg).is_ok() && !std::path::Path::new(arg).exists()
}

/// `sql` with its registered-model references replaced by their files, and the versions used.
/// A statement without any is returned as it was.
pub async fn resolve_sql(lake: &Lake, sql: &str) -> Result<(String, Vec<ModelUse>)> {
    if !sql.to_ascii_lowercase().contains("predict") {
        return Ok((sql.to_string(), Vec::new()));
    }
    let Ok(mut statements) = Parser::parse_sql(&GenericDialect {}, sql) else {
        // Let the engine report the syntax error with its own message.
        return Ok((sql.to_string(), Vec::new()));
    };
    let mut references: Vec<String> = Vec::new();
    let _ = visit_expressions_mut(&mut statements, |expr| {
        if let Some(arg) = model_arg(expr)
            && is_reference(arg)
            && !references.contains(arg)
        {
            references.push(arg.clone());
        }
        ControlFlow::<()>::Continue(())
    });
    if references.is_empty() {
        return Ok((sql.to_string(), Vec::new()));
    }
    let registry = Registry::open(lake)?;
    let mut uses = Vec::new();
    for reference in &references {
        let version = registry.resolve(&ModelRef::parse(reference)?).await?;
        let path = registry.scoring_path(&version)?;
        uses.push(ModelUse {
            reference: reference.clone(),
            name: version.name.clone(),
            version: version.version,
            id: version.id.clone(),
            path,
        });
    }
    let _ = visit_expressions_mut(&mut statements, |expr| {
        if let Some(arg) = model_arg(expr)
            && let Some(used) = uses.iter().find(|u| u.reference == *arg)
        {
            *arg = used.path.clone();
        }
        ControlFlow::<()>::Continue(())
    });
    if statements.len() != 1 {
        return Err(Error::Invalid(format!("expected one SQL statement, got {}", statements.len())));
    }
    Ok((statements[0].to_string(), uses))
}
