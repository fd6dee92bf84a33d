//! CEL filters: compiled once per webhook version under hard limits, evaluated per event.
//!
//! The `cel` crate parses and evaluates recursively. Its parser needs a lot of stack per level
//! (measured: about 1.5 KiB per chained operator in release builds and 38 KiB in debug builds;
//! a parenthesis costs ~5x that), and so does its evaluator, so an expression nested deeply
//! enough overflows any thread's stack and aborts the process. Filters are therefore:
//!
//! 1. checked lexically before parsing: at most [`MAX_FILTER_LEN`] bytes, [`MAX_FILTER_TERMS`]
//!    terms (names and literals; every level of a chain such as `a + b + c` or `a.b.c` adds one)
//!    and [`MAX_FILTER_NESTING`] levels of brackets — which bounds how deep the parser recurses;
//! 2. parsed on a dedicated thread with a [`COMPILER_STACK`] stack, ample for the worst input the
//!    lexical limits let through (the tests parse those on it; in debug builds they need between
//!    4 and 8 MiB, overflowing the 2 MiB default of threads and tokio's workers);
//! 3. checked on the syntax tree: at most [`MAX_FILTER_DEPTH`] levels deep and
//!    [`MAX_FILTER_LOOP_NESTING`] macros (`all`, `exists`, `map`, ...) inside each other, and no
//!    names other than `event` and `webhook`. A tree that fails is dropped on the compiler thread.
//!
//! 4. checked against the event's shape (see the `check` module): unknown functions and fields of
//!    `event`/`webhook`, and results that can never be a bool, are refused with their position.
//!
//! What is accepted then evaluates on any thread, with at least [`EVAL_STACK`] of stack (moving
//! to a fresh stack segment when the thread has less left; the relay's threads have more), and
//! within a budget of work and memory (see the `budget` module).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp,
    CelUInt, DYN_TYPE,
};
use cel::common::value::Val;
use cel::{Context, Env, ParseErrors, Value};
use outbox_core::Event;
use thiserror::Error;

use crate::budget::{self, MAX_FILTER_STEPS, STEPS_PER_EVENT_VALUE};
use crate::check;

/// Longest filter source accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// Most terms (names, field names and literals) a filter may have.
pub const MAX_FILTER_TERMS: usize = 500;
/// Deepest nesting of parentheses, brackets and braces accepted.
pub const MAX_FILTER_NESTING: usize = 32;
/// Deepest syntax tree accepted: operators, calls, field selections and macros each add a level.
pub const MAX_FILTER_DEPTH: usize = 32;
/// Most macros (`all`, `exists`, `exists_one`, `map`, `filter`) nested inside each other: each
/// one multiplies the cost of evaluation by the length of the list it walks.
pub const MAX_FILTER_LOOP_NESTING: usize = 2;
/// Stack of the thread filters are parsed on. Only the pages actually used are committed.
pub const COMPILER_STACK: usize = 64 * 1024 * 1024;
/// Stack an evaluation needs: the deepest accepted filters, with the budget's charges around
/// their calls, need about 3 MiB in debug builds and far less in release builds.
pub const EVAL_STACK: usize = 8 * 1024 * 1024;

/// Names a filter may use besides `event` and `webhook`: CEL's type names (as in
/// `type(event.data.qty) == int`) and the `optional` namespace.
const BUILTIN_NAMES: [&str; 10] = [
    "bool",
    "bytes",
    "double",
    "int",
    "list",
    "map",
    "null_type",
    "optional",
    "string",
    "uint",
];

/// The standard CEL environment, plus the budget's internal `@budget` function.
pub(crate) static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    env.add_overload(
        budget::CHARGE,
        "budget_charge",
        vec![DYN_TYPE],
        budget::charge,
    )
    .expect("@budget is not a standard function");
    Arc::new(env)
});

/// A compiled CEL filter.
pub struct Filter {
    /// The expression, with the budget's charges added.
    expr: IdedExpr,
    /// Whether the expression mentions `webhook` (only then is it bound).
    uses_webhook: bool,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter").finish_non_exhaustive()
    }
}

/// Why a filter was refused, or failed for one event. Messages read well after "filter: ".
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum FilterError {
    #[error(
        "the expression is {len} bytes long; the limit is {MAX_FILTER_LEN} (test a list with `in [...]` instead of many `||`)"
    )]
    TooLong { len: usize },
    #[error(
        "the expression has {terms} terms; the limit is {MAX_FILTER_TERMS} (test a list with `in [...]` instead of many `||`)"
    )]
    TooManyTerms { terms: usize },
    #[error("the expression nests brackets {depth} levels deep; the limit is {MAX_FILTER_NESTING}")]
    TooDeep { depth: usize },
    #[error(
        "the expression is nested {depth} levels deep (operators, calls and field accesses count); the limit is {MAX_FILTER_DEPTH}"
    )]
    TooComplex { depth: usize },
    #[error(
        "the expression nests {depth} macros (all, exists, exists_one, map, filter) inside each other; the limit is {MAX_FILTER_LOOP_NESTING}"
    )]
    TooManyLoops { depth: usize },
    #[error(
        "line {line}, column {column}: the expression uses the unknown name `{name}`; a filter sees `event` (id, type, entity, entity_id, data, old, metadata, created_at) and `webhook.name`"
    )]
    UnknownName {
        name: String,
        line: u32,
        column: u32,
    },
    #[error(
        "line {line}, column {column}: `{path}` does not exist; a filter sees `event` (id, type, entity, entity_id, data, old, metadata, created_at) and `webhook.name`"
    )]
    UnknownField {
        path: String,
        line: u32,
        column: u32,
    },
    #[error(
        "line {line}, column {column}: `{name}` is not a function filters have (they have CEL's standard functions: size, contains, startsWith, endsWith, matches, int, uint, double, string, bytes, timestamp, duration, ...)"
    )]
    UnknownFunction {
        name: String,
        line: u32,
        column: u32,
    },
    #[error(
        "line {line}, column {column}: the expression returns {kind}, never a bool; compare it, e.g. `event.data.qty > 0`"
    )]
    NeverBool {
        kind: &'static str,
        line: u32,
        column: u32,
    },
    #[error("the expression does not compile as CEL: {0}")]
    Compile(String),
    #[error("evaluation failed: {0}")]
    Eval(String),
    #[error("the expression returned {0}, not a bool")]
    NotBool(String),
    #[error(
        "evaluation stopped after {steps} steps, the budget for this event ({MAX_FILTER_STEPS} plus {STEPS_PER_EVENT_VALUE} per value in the event); macros nested over large lists (`l.map(x, l.map(y, ...))`) cost the product of their lengths"
    )]
    OverBudget { steps: u64 },
}

impl Filter {
    /// Compiles a CEL expression, refusing any that is too large or too deep to handle safely.
    pub fn compile(source: &str) -> Result<Filter, FilterError> {
        if source.len() > MAX_FILTER_LEN {
            return Err(FilterError::TooLong { len: source.len() });
        }
        let shape = scan(source);
        if shape.nesting > MAX_FILTER_NESTING {
            return Err(FilterError::TooDeep {
                depth: shape.nesting,
            });
        }
        if shape.terms > MAX_FILTER_TERMS {
            return Err(FilterError::TooManyTerms { terms: shape.terms });
        }
        on_compiler_stack(|| {
            let program = ENV.compile(source).map_err(describe_parse_errors)?;
            let mut tree = Tree::default();
            tree.visit(program.expression(), 1, 0, &mut Vec::new());
            if tree.depth > MAX_FILTER_DEPTH {
                return Err(FilterError::TooComplex { depth: tree.depth });
            }
            if tree.loops > MAX_FILTER_LOOP_NESTING {
                return Err(FilterError::TooManyLoops { depth: tree.loops });
            }
            if let Some((name, id)) = tree.unknown {
                let (line, column) = check::position(program.source_info(), id, 0);
                return Err(FilterError::UnknownName { name, line, column });
            }
            check::check(program.expression(), program.source_info())?;
            Ok(Filter {
                expr: budget::instrument(program.expression()),
                uses_webhook: tree.uses_webhook,
            })
        })?
    }

    /// Evaluates the filter for one event. Errors count as "no match" for the caller.
    pub(crate) fn eval(&self, vars: &Activation<'_>, webhook: &str) -> Result<bool, FilterError> {
        let mut scope = vars.root.new_inner_scope();
        if self.uses_webhook {
            let fields: HashMap<CelMapKey<'_>, Box<dyn Val>> = HashMap::from([(
                CelMapKey::from("name"),
                Box::new(CelString::from(webhook.to_string())) as Box<dyn Val>,
            )]);
            scope.add_variable_as_val("webhook", Box::new(CelMap::from(fields)));
        }
        let steps =
            MAX_FILTER_STEPS.saturating_add(vars.weight.saturating_mul(STEPS_PER_EVENT_VALUE));
        budget::start(steps);
        // The interpreter is not ours: should it ever panic, that is this event's filter error,
        // not the router's.
        let result = stacker::maybe_grow(EVAL_STACK, 4 * EVAL_STACK, || {
            catch_unwind(AssertUnwindSafe(|| scope.resolve(&self.expr)))
        });
        if budget::finish() {
            return Err(FilterError::OverBudget { steps });
        }
        match result {
            Ok(Ok(Value::Bool(b))) => Ok(b),
            Ok(Ok(other)) => Err(FilterError::NotBool(clip(format!("{other:?}")))),
            Ok(Err(e)) => Err(FilterError::Eval(clip(e.to_string()))),
            Err(_) => Err(FilterError::Eval(
                "the CEL interpreter failed internally on this event".into(),
            )),
        }
    }

    /// Evaluates the filter against one event (tests and one-off checks; the [`crate::Matcher`]
    /// converts each event once for all the filters of its candidates).
    pub fn matches(&self, event: &Event, webhook: &str) -> Result<bool, FilterError> {
        self.eval(&Activation::new(event), webhook)
    }
}

/// Runs `f` on a thread with a [`COMPILER_STACK`] stack and waits for it.
fn on_compiler_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, FilterError> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("cel-compile".into())
            .stack_size(COMPILER_STACK)
            .spawn_scoped(scope, f)
            .map_err(|e| {
                FilterError::Compile(format!("cannot start the filter compiler thread: {e}"))
            })?;
        handle.join().map_err(|_| {
            FilterError::Compile(
                "the CEL parser failed internally on this expression; simplify it".into(),
            )
        })
    })
}

fn describe_parse_errors(errors: ParseErrors) -> FilterError {
    let Some(first) = errors.errors.first() else {
        return FilterError::Compile("unknown syntax error".into());
    };
    if first.msg.contains("Recursion limit") {
        return FilterError::Compile(
            "it is nested too deeply for the parser; flatten it (e.g. a list with `in [...]` instead of nested conditions)".into(),
        );
    }
    let mut message = format!(
        "line {}, column {}: {}",
        first.pos.0,
        first.pos.1,
        one_line(&first.msg)
    );
    if errors.errors.len() > 1 {
        message.push_str(&format!(" (and {} more)", errors.errors.len() - 1));
    }
    FilterError::Compile(message)
}

/// What the syntax tree looks like, found by walking it once after parsing.
#[derive(Default)]
struct Tree {
    depth: usize,
    loops: usize,
    uses_webhook: bool,
    /// The first unknown name, and the id of the expression that uses it.
    unknown: Option<(String, u64)>,
}

impl Tree {
    /// Walks `expr`, at tree level `level` inside `loops` macros, with the macro variables of
    /// `scope` bound. Runs on the compiler thread: the recursion is as deep as the tree, which
    /// the lexical limits keep far from its stack's size.
    fn visit<'e>(
        &mut self,
        expr: &'e IdedExpr,
        level: usize,
        loops: usize,
        scope: &mut Vec<&'e str>,
    ) {
        self.depth = self.depth.max(level);
        self.loops = self.loops.max(loops);
        let next = level + 1;
        match &expr.expr {
            Expr::Ident(name) => {
                if name == "webhook" {
                    self.uses_webhook = true;
                } else if name != "event"
                    && !name.starts_with('@')
                    && !scope.contains(&name.as_str())
                    && !BUILTIN_NAMES.contains(&name.as_str())
                    && self.unknown.is_none()
                {
                    self.unknown = Some((name.clone(), expr.id));
                }
            }
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.visit(target, next, loops, scope);
                }
                for arg in &call.args {
                    self.visit(arg, next, loops, scope);
                }
            }
            Expr::Select(select) => self.visit(&select.operand, next, loops, scope),
            Expr::List(list) => {
                for e in &list.elements {
                    self.visit(e, next, loops, scope);
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    self.visit_entry(&entry.expr, next, loops, scope);
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    self.visit_entry(&entry.expr, next, loops, scope);
                }
            }
            Expr::Comprehension(c) => {
                self.visit(&c.iter_range, next, loops, scope);
                self.visit(&c.accu_init, next, loops, scope);
                let bound = scope.len();
                scope.push(&c.iter_var);
                scope.push(&c.accu_var);
                if let Some(v) = &c.iter_var2 {
                    scope.push(v);
                }
                for part in [&c.loop_cond, &c.loop_step, &c.result] {
                    self.visit(part, next, loops + 1, scope);
                }
                scope.truncate(bound);
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn visit_entry<'e>(
        &mut self,
        entry: &'e EntryExpr,
        level: usize,
        loops: usize,
        scope: &mut Vec<&'e str>,
    ) {
        match entry {
            EntryExpr::StructField(f) => self.visit(&f.value, level, loops, scope),
            EntryExpr::MapEntry(e) => {
                self.visit(&e.key, level, loops, scope);
                self.visit(&e.value, level, loops, scope);
            }
        }
    }
}

/// What a lexical pass over the source found.
struct Shape {
    /// Deepest bracket nesting.
    nesting: usize,
    /// Names and literals.
    terms: usize,
}

/// Counts terms and bracket nesting, skipping string literals (quoted with `'`, `"` or their
/// triple forms, with or without `r`/`b` prefixes). Errs on the side of counting more.
fn scan(source: &str) -> Shape {
    let bytes = source.as_bytes();
    let (mut depth, mut nesting, mut terms) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'(' | b'[' | b'{' => {
                depth += 1;
                nesting = nesting.max(depth);
                i += 1;
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'"' | b'\'' => {
                terms += 1;
                i = skip_string(bytes, i, false);
            }
            b'`' => {
                terms += 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &source[start..i];
                let prefix = word.len() <= 2 && word.bytes().all(|b| b"rRbB".contains(&b));
                if prefix && i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
                    terms += 1;
                    let raw = word.bytes().any(|b| b == b'r' || b == b'R');
                    i = skip_string(bytes, i, raw);
                } else if word != "in" {
                    terms += 1;
                }
            }
            c if c.is_ascii_digit() => {
                terms += 1;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    Shape { nesting, terms }
}

/// Returns the index just past the string literal whose opening quote is at `start`.
fn skip_string(bytes: &[u8], start: usize, raw: bool) -> usize {
    let quote = bytes[start];
    let triple = bytes.len() >= start + 3 && bytes[start + 1] == quote && bytes[start + 2] == quote;
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        if bytes[i] == b'\\' && !raw {
            i += 2;
            continue;
        }
        if bytes[i] == quote {
            if !triple {
                return i + 1;
            }
            if bytes.len() >= i + 3 && bytes[i + 1] == quote && bytes[i + 2] == quote {
                return i + 3;
            }
        }
        i += 1;
    }
    bytes.len()
}

/// An event as CEL sees it, built once per event and shared by every filter evaluated for it.
/// Strings are borrowed from the event, not copied.
pub(crate) struct Activation<'e> {
    root: Context<'e, 'e>,
    /// Values (JSON nodes) in the event: the budget grows with it.
    weight: u64,
}

impl<'e> Activation<'e> {
    pub(crate) fn new(event: &'e Event) -> Activation<'e> {
        let mut weight = 8;
        let mut json = |v: &'e serde_json::Value| json(v, &mut weight);
        let mut m: HashMap<CelMapKey<'e>, Box<dyn Val + 'e>> = HashMap::with_capacity(8);
        m.insert("id".into(), Box::new(CelInt::from(event.id)));
        m.insert("type".into(), str_val(&event.event_type));
        m.insert("entity".into(), str_val(&event.entity));
        m.insert("entity_id".into(), str_val(&event.entity_id));
        m.insert("data".into(), json(&event.data));
        m.insert(
            "old".into(),
            match &event.old {
                Some(old) => json(old),
                None => Box::new(CelNull),
            },
        );
        m.insert("metadata".into(), json(&event.metadata));
        m.insert(
            "created_at".into(),
            Box::new(CelTimestamp::from(event.created_at.fixed_offset())),
        );
        let mut root = Context::with_env(ENV.clone());
        root.add_variable_as_val("event", Box::new(CelMap::from(m)));
        Activation { root, weight }
    }
}

fn str_val(s: &str) -> Box<dyn Val + '_> {
    Box::new(CelString::from(s))
}

/// JSON to CEL, with integers as `int` (so `event.data.qty + 1` works), integers above the `int`
/// range as `uint` and other numbers as `double`. The recursion is as deep as the JSON, which
/// serde_json limits to 128 levels when it parses.
fn json<'v>(v: &'v serde_json::Value, weight: &mut u64) -> Box<dyn Val + 'v> {
    *weight += 1;
    match v {
        serde_json::Value::Null => Box::new(CelNull),
        serde_json::Value::Bool(b) => Box::new(CelBool::from(*b)),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            (None, None) => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        serde_json::Value::String(s) => str_val(s),
        serde_json::Value::Array(a) => Box::new(CelList::from(
            a.iter().map(|v| json(v, weight)).collect::<Vec<_>>(),
        )),
        serde_json::Value::Object(o) => {
            let m: HashMap<CelMapKey<'_>, Box<dyn Val + '_>> = o
                .iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), json(v, weight)))
                .collect();
            Box::new(CelMap::from(m))
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Error texts end up in logs: keep them to one short line.
fn clip(s: String) -> String {
    const MAX: usize = 300;
    let s = one_line(&s);
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_the_interpreter_is_an_error_for_that_event_only() {
        // The interpreter panics on an expression the parser never produces.
        let broken = Filter {
            expr: IdedExpr {
                id: 1,
                expr: Expr::Unspecified,
            },
            uses_webhook: false,
        };
        let event = Event {
            id: 1,
            event_type: "order.created".into(),
            entity: "order".into(),
            entity_id: "1".into(),
            data: serde_json::json!({"qty": 2}),
            old: None,
            metadata: serde_json::json!({}),
            created_at: chrono::Utc::now(),
        };
        match broken.matches(&event, "w") {
            Err(FilterError::Eval(message)) => assert!(message.contains("internally"), "{message}"),
            other => panic!("{other:?}"),
        }
        let fine = Filter::compile("event.data.qty == 2").unwrap();
        assert_eq!(fine.matches(&event, "w"), Ok(true));
    }
}
