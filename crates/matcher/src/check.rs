//! Static checks of a parsed filter against what it sees: `event` with the fields
//! `id, type, entity, entity_id, data, old, metadata, created_at`, and `webhook.name`.
//!
//! What is knowable before any event arrives is refused when the filter is compiled, with the
//! position: a call to a function the interpreter does not have (`foo(event.id)`), a field
//! `event` or `webhook` does not have (`event.nope`), and an expression whose result can never be
//! a bool (`event.id`, `size(event.data.lines)`, `event.data.a + 1`). Everything under
//! `event.data`, `event.old` and `event.metadata` is dynamic: `event.data.x` may be a bool, so
//! only what the operators and functions around it say is used.

use std::panic::{AssertUnwindSafe, catch_unwind};

use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue, SourceInfo, operators};
use cel::{Context, ExecutionError};

use crate::filter::{ENV, FilterError};

/// What a sub-expression is known to evaluate to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    UInt,
    Double,
    String,
    Bytes,
    List,
    Map,
    Null,
    Timestamp,
    Duration,
    Type,
    /// A number, string, bytes, list, timestamp or duration: the result of arithmetic.
    Arithmetic,
    /// Not known before the event.
    Dyn,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Bool => "a bool",
            Kind::Int => "an int",
            Kind::UInt => "a uint",
            Kind::Double => "a double",
            Kind::String => "a string",
            Kind::Bytes => "bytes",
            Kind::List => "a list",
            Kind::Map => "a map",
            Kind::Null => "null",
            Kind::Timestamp => "a timestamp",
            Kind::Duration => "a duration",
            Kind::Type => "a type",
            Kind::Arithmetic => "the result of arithmetic (a number, string, list, ...)",
            Kind::Dyn => "a dynamic value",
        }
    }
}

const EVENT_FIELDS: [(&str, Kind); 8] = [
    ("id", Kind::Int),
    ("type", Kind::String),
    ("entity", Kind::String),
    ("entity_id", Kind::String),
    ("data", Kind::Dyn),
    ("old", Kind::Dyn),
    ("metadata", Kind::Dyn),
    ("created_at", Kind::Timestamp),
];

/// Names of CEL's types, usable as values (`type(x) == int`).
const TYPE_NAMES: [&str; 9] = [
    "bool",
    "bytes",
    "double",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "uint",
];

/// Checks `expr`, parsed from a source whose positions `info` knows.
pub(crate) fn check(expr: &IdedExpr, info: &SourceInfo) -> Result<(), FilterError> {
    let at = |id: u64| position(info, id, 0);
    let mut checker = Checker {
        scope: Vec::new(),
        found: None,
        at: &at,
        info,
    };
    let kind = checker.visit(expr);
    if let Some(error) = checker.found {
        return Err(error);
    }
    if !matches!(kind, Kind::Bool | Kind::Dyn) {
        let (line, column) = at(expr.id);
        return Err(FilterError::NeverBool {
            kind: kind.describe(),
            line,
            column,
        });
    }
    Ok(())
}

struct Checker<'a> {
    /// Macro variables in scope, with what they hold.
    scope: Vec<(String, Kind)>,
    /// The first problem found.
    found: Option<FilterError>,
    at: &'a dyn Fn(u64) -> (u32, u32),
    info: &'a SourceInfo,
}

impl Checker<'_> {
    fn report(&mut self, error: impl FnOnce(u32, u32) -> FilterError, id: u64) {
        if self.found.is_none() {
            let (line, column) = (self.at)(id);
            self.found = Some(error(line, column));
        }
    }

    fn visit(&mut self, expr: &IdedExpr) -> Kind {
        match &expr.expr {
            Expr::Literal(literal) => match literal {
                LiteralValue::Boolean(_) => Kind::Bool,
                LiteralValue::Bytes(_) => Kind::Bytes,
                LiteralValue::Double(_) => Kind::Double,
                LiteralValue::Int(_) => Kind::Int,
                LiteralValue::Null => Kind::Null,
                LiteralValue::String(_) => Kind::String,
                LiteralValue::UInt(_) => Kind::UInt,
            },
            Expr::Ident(name) => {
                if let Some((_, kind)) = self.scope.iter().rev().find(|(n, _)| n == name) {
                    *kind
                } else if name == "event" || name == "webhook" {
                    Kind::Map
                } else if TYPE_NAMES.contains(&name.as_str()) {
                    Kind::Type
                } else {
                    Kind::Dyn
                }
            }
            Expr::Select(select) => {
                self.visit(&select.operand);
                let field = select.field.as_str();
                let kind = match &select.operand.expr {
                    Expr::Ident(name) if name == "event" && !self.in_scope(name) => EVENT_FIELDS
                        .iter()
                        .find(|(f, _)| *f == field)
                        .map(|(_, kind)| *kind),
                    Expr::Ident(name) if name == "webhook" && !self.in_scope(name) => {
                        (field == "name").then_some(Kind::String)
                    }
                    _ => Some(Kind::Dyn),
                };
                match kind {
                    None => {
                        let Expr::Ident(name) = &select.operand.expr else {
                            return Kind::Dyn;
                        };
                        let path = format!("{name}.{field}");
                        self.report(
                            |line, column| FilterError::UnknownField { path, line, column },
                            expr.id,
                        );
                        Kind::Dyn
                    }
                    Some(_) if select.test => Kind::Bool,
                    Some(kind) => kind,
                }
            }
            Expr::List(list) => {
                for e in &list.elements {
                    self.visit(e);
                }
                Kind::List
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(e) = &entry.expr {
                        self.visit(&e.key);
                        self.visit(&e.value);
                    }
                }
                Kind::Map
            }
            Expr::Struct(_) | Expr::Unspecified => Kind::Dyn,
            Expr::Comprehension(c) => {
                self.visit(&c.iter_range);
                let accu = self.visit(&c.accu_init);
                let bound = self.scope.len();
                self.scope.push((c.accu_var.clone(), accu));
                self.scope.push((c.iter_var.clone(), Kind::Dyn));
                if let Some(v) = &c.iter_var2 {
                    self.scope.push((v.clone(), Kind::Dyn));
                }
                self.visit(&c.loop_cond);
                self.visit(&c.loop_step);
                let kind = self.visit(&c.result);
                self.scope.truncate(bound);
                kind
            }
            Expr::Call(call) => self.call(expr.id, call),
        }
    }

    fn in_scope(&self, name: &str) -> bool {
        self.scope.iter().any(|(n, _)| n == name)
    }

    fn call(&mut self, id: u64, call: &CallExpr) -> Kind {
        if let Some(target) = &call.target {
            self.visit(target);
        }
        let args: Vec<Kind> = call.args.iter().map(|a| self.visit(a)).collect();
        let name = call.func_name.as_str();
        let operator = name.starts_with('_') || name.starts_with('@') || name.ends_with('_');
        if !operator && !self.known(call) && self.found.is_none() {
            let (line, column) = position(self.info, id, name.len());
            self.found = Some(FilterError::UnknownFunction {
                name: name.to_string(),
                line,
                column,
            });
        }
        match name {
            operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS
            | operators::IN
            | operators::LOGICAL_NOT
            | operators::LOGICAL_AND
            | operators::LOGICAL_OR
            | operators::NOT_STRICTLY_FALSE
            | "contains"
            | "startsWith"
            | "endsWith"
            | "matches"
            | "bool"
            | "hasValue" => Kind::Bool,
            operators::ADD
            | operators::SUBSTRACT
            | operators::MULTIPLY
            | operators::DIVIDE
            | operators::MODULO
            | operators::NEGATE => Kind::Arithmetic,
            "size" | "int" => Kind::Int,
            "uint" => Kind::UInt,
            "double" => Kind::Double,
            "string" => Kind::String,
            "bytes" => Kind::Bytes,
            "timestamp" => Kind::Timestamp,
            "duration" => Kind::Duration,
            "type" => Kind::Type,
            n if n.starts_with("get") => Kind::Int,
            operators::CONDITIONAL => match (args.get(1), args.get(2)) {
                (Some(a), Some(b)) if a == b => *a,
                (Some(Kind::Bool | Kind::Dyn), _) | (_, Some(Kind::Bool | Kind::Dyn)) => Kind::Dyn,
                (Some(a), Some(_)) => *a,
                _ => Kind::Dyn,
            },
            _ => Kind::Dyn,
        }
    }

    /// Whether the interpreter has the function `call` calls (as a method where it has a target).
    fn known(&self, call: &CallExpr) -> bool {
        match &call.target {
            None => probe(&call.func_name, false),
            Some(target) => {
                // `optional.of(x)` names the function `optional.of`.
                let qualified = match &target.expr {
                    Expr::Ident(ns) if !self.in_scope(ns) => {
                        probe(&format!("{ns}.{}", call.func_name), false)
                    }
                    _ => false,
                };
                qualified || probe(&call.func_name, true)
            }
        }
    }
}

/// The 1-based line and column (in characters) of the expression `id`, moved `back` bytes to the
/// left (a call's position is its opening parenthesis; its name is before it).
pub(crate) fn position(info: &SourceInfo, id: u64, back: usize) -> (u32, u32) {
    let start = info
        .offset_for(id)
        .map_or(0, |(start, _)| (start as usize).saturating_sub(back));
    let before = info.source.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line as u32, column as u32)
}

/// Whether calling `name` (as a method on null if `member`) finds a function, by asking the
/// interpreter itself: it answers "undeclared reference" for a name it has no function of.
fn probe(name: &str, member: bool) -> bool {
    let null = || IdedExpr {
        id: 0,
        expr: Expr::Literal(LiteralValue::Null),
    };
    let call = IdedExpr {
        id: 0,
        expr: Expr::Call(CallExpr {
            func_name: name.to_string(),
            target: member.then(|| Box::new(null())),
            args: Vec::new(),
        }),
    };
    let context = Context::with_env(ENV.clone());
    match catch_unwind(AssertUnwindSafe(|| context.resolve(&call))) {
        Ok(Err(ExecutionError::UndeclaredReference(_))) => false,
        Ok(_) | Err(_) => true,
    }
}
