//! The work and memory budget of one filter evaluation.
//!
//! The `cel` interpreter has no limit of its own: `l.map(x, l.map(y, x + y))` over a list of
//! 3,000 items builds nine million values. Within the lexical and tree limits a filter can still
//! do work quadratic in the size of the event, so every evaluation gets a budget of
//! [`MAX_FILTER_STEPS`] steps plus [`STEPS_PER_EVENT_VALUE`] per value in the event (work linear
//! in the event is always allowed; its decoding cost as much).
//!
//! The budget is charged by calls the compiled filter makes to the internal function `@budget`
//! (a name CEL source cannot spell), wrapped around what costs work: the arguments of every
//! function and operator (comparing, concatenating, matching or converting a value costs at most
//! linear in its size), every element of a list or map literal (building one copies its
//! elements), the range of every macro (iterating copies each element) and each of its
//! iterations. A charge weighs a value by its size: 1 per value inside it, plus 1 per 16 bytes of
//! text. Once the budget is spent, every further charge fails, so the evaluation stops within one
//! charge of the limit, and the caller reports the (event, webhook) pair as over budget.
//!
//! Memory follows: every value the interpreter builds is either the result of a charged call
//! (no standard function returns more than its arguments' size) or a copy of a charged value.

use std::cell::Cell;

use cel::ExecutionError;
use cel::common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, operators};
use cel::common::types::{CelBytes, CelList, CelMap, CelString};
use cel::common::value::{CowVal, Val};

/// Steps every evaluation may take whatever the event.
pub const MAX_FILTER_STEPS: u64 = 1_000_000;
/// Steps added to an evaluation's budget per value (JSON node) in the event.
pub const STEPS_PER_EVENT_VALUE: u64 = 8;

/// The internal function that charges the budget.
pub(crate) const CHARGE: &str = "@budget";

thread_local! {
    static LEFT: Cell<u64> = const { Cell::new(u64::MAX) };
    static EXHAUSTED: Cell<bool> = const { Cell::new(false) };
}

/// Starts the budget of one evaluation on this thread.
pub(crate) fn start(steps: u64) {
    LEFT.set(steps);
    EXHAUSTED.set(false);
}

/// Ends the evaluation on this thread: whether it ran out of budget.
pub(crate) fn finish() -> bool {
    LEFT.set(u64::MAX);
    EXHAUSTED.replace(false)
}

/// `@budget(x)`: charges the weight of `x` and returns it unchanged.
pub(crate) fn charge<'b, 'v>(
    mut args: Vec<CowVal<'b, 'v>>,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    if args.len() != 1 {
        return Err(ExecutionError::invalid_argument_count(1, args.len()));
    }
    let value = args.remove(0);
    let left = LEFT.get();
    match weight(value.as_ref(), left) {
        Some(w) => {
            LEFT.set(left - w);
            Ok(value)
        }
        None => {
            LEFT.set(0);
            EXHAUSTED.set(true);
            Err(ExecutionError::function_error(
                CHARGE,
                "the filter ran out of its evaluation budget",
            ))
        }
    }
}

/// The weight of `value`, or `None` if it is more than `limit` (found without looking further).
fn weight(value: &dyn Val, limit: u64) -> Option<u64> {
    let mut total: u64 = 0;
    let mut pending: Vec<&dyn Val> = vec![value];
    while let Some(v) = pending.pop() {
        total += 1;
        if let Some(s) = v.downcast_ref::<CelString>() {
            total += s.inner().len() as u64 / 16;
        } else if let Some(b) = v.downcast_ref::<CelBytes>() {
            total += b.inner().len() as u64 / 16;
        } else if let Some(list) = v.downcast_ref::<CelList>() {
            pending.extend(list.inner().iter().map(|item| &**item));
        } else if let Some(map) = v.downcast_ref::<CelMap>() {
            total += map.inner().len() as u64;
            pending.extend(map.inner().values().map(|item| &**item));
        }
        if total > limit {
            return None;
        }
    }
    Some(total)
}

/// Functions whose arguments are not charged: they only pick one of them (`?:`, `[]`, `.?`) or
/// combine booleans.
const UNCHARGED: [&str; 7] = [
    operators::CONDITIONAL,
    operators::LOGICAL_AND,
    operators::LOGICAL_OR,
    operators::INDEX,
    operators::OPT_INDEX,
    operators::OPT_SELECT,
    operators::NOT_STRICTLY_FALSE,
];

/// `expr` with the budget's charges added (see the module docs). Ids stay those of the
/// expressions they wrap, so errors still point at the source.
pub(crate) fn instrument(expr: &IdedExpr) -> IdedExpr {
    Instrumenter::default().expr(expr)
}

#[derive(Default)]
struct Instrumenter {
    /// Accumulator variables of the macros being walked: never wrapped, since the interpreter
    /// recognises the shapes of loop steps by them.
    accumulators: Vec<String>,
}

fn charged(expr: IdedExpr) -> IdedExpr {
    IdedExpr {
        id: expr.id,
        expr: Expr::Call(CallExpr {
            func_name: CHARGE.into(),
            target: None,
            args: vec![expr],
        }),
    }
}

impl Instrumenter {
    fn is_accumulator(&self, expr: &IdedExpr) -> bool {
        matches!(&expr.expr, Expr::Ident(name) if self.accumulators.contains(name))
    }

    /// An argument, charged unless it is an accumulator or a literal list/map (whose elements
    /// are charged one by one, and whose shape the interpreter may look for).
    fn argument(&mut self, expr: &IdedExpr) -> IdedExpr {
        let walked = self.expr(expr);
        if self.is_accumulator(expr) || matches!(expr.expr, Expr::List(_) | Expr::Map(_)) {
            walked
        } else {
            charged(walked)
        }
    }

    fn expr(&mut self, expr: &IdedExpr) -> IdedExpr {
        let walked = match &expr.expr {
            Expr::Call(call) => {
                let uncharged = UNCHARGED.contains(&call.func_name.as_str());
                let arg = |this: &mut Self, e: &IdedExpr| {
                    if uncharged {
                        this.expr(e)
                    } else {
                        this.argument(e)
                    }
                };
                Expr::Call(CallExpr {
                    func_name: call.func_name.clone(),
                    target: call.target.as_ref().map(|t| Box::new(arg(self, t))),
                    args: call.args.iter().map(|a| arg(self, a)).collect(),
                })
            }
            Expr::Comprehension(c) => Expr::Comprehension(Box::new(self.comprehension(c))),
            Expr::List(list) => {
                let mut list = list.clone();
                list.elements = list
                    .elements
                    .iter()
                    .map(|e| charged(self.expr(e)))
                    .collect();
                Expr::List(list)
            }
            Expr::Map(map) => {
                let mut map = map.clone();
                for entry in &mut map.entries {
                    if let EntryExpr::MapEntry(e) = &mut entry.expr {
                        e.key = charged(self.expr(&e.key));
                        e.value = charged(self.expr(&e.value));
                    }
                }
                Expr::Map(map)
            }
            Expr::Select(select) => {
                let mut select = select.clone();
                select.operand = Box::new(self.expr(&select.operand));
                Expr::Select(select)
            }
            Expr::Struct(_) | Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {
                expr.expr.clone()
            }
        };
        IdedExpr {
            id: expr.id,
            expr: walked,
        }
    }

    fn comprehension(&mut self, c: &ComprehensionExpr) -> ComprehensionExpr {
        let iter_range = charged(self.expr(&c.iter_range));
        let accu_init = self.expr(&c.accu_init);
        self.accumulators.push(c.accu_var.clone());
        // One step per iteration: on the loop condition where the interpreter evaluates one per
        // iteration and does not need it to be a literal, else on the step.
        let (loop_cond, loop_step) = if matches!(c.loop_cond.expr, Expr::Literal(_)) {
            (c.loop_cond.clone(), self.step(&c.loop_step))
        } else {
            (charged(self.expr(&c.loop_cond)), self.expr(&c.loop_step))
        };
        let result = self.expr(&c.result);
        self.accumulators.pop();
        ComprehensionExpr {
            iter_range,
            iter_var: c.iter_var.clone(),
            iter_var2: c.iter_var2.clone(),
            accu_var: c.accu_var.clone(),
            accu_init,
            loop_cond,
            loop_step,
            result,
        }
    }

    /// The loop step of a macro whose condition is a literal, charged once per iteration in a
    /// way that keeps the shapes the interpreter recognises (`@result + [x]`, `c ? @result + [x]
    /// : @result`, `@result && x`): their list elements and guards are charged instead.
    fn step(&mut self, step: &IdedExpr) -> IdedExpr {
        let accumulates = matches!(&step.expr, Expr::Call(call)
            if call.args.first().is_some_and(|a| self.is_accumulator(a)));
        let mut walked = self.expr(step);
        if let Expr::Call(call) = &mut walked.expr {
            match call.func_name.as_str() {
                // `@result + [x]`: its element is charged already.
                operators::ADD
                    if accumulates
                        && matches!(call.args.get(1).map(|a| &a.expr), Some(Expr::List(_))) =>
                {
                    return walked;
                }
                operators::LOGICAL_AND | operators::LOGICAL_OR if accumulates => {
                    if let Some(last) = call.args.pop() {
                        call.args.push(charged(last));
                    }
                    return walked;
                }
                operators::CONDITIONAL if call.args.len() == 3 => {
                    let guard = call.args.remove(0);
                    call.args.insert(0, charged(guard));
                    return walked;
                }
                _ => {}
            }
        }
        charged(walked)
    }
}
