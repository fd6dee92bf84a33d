//! CEL filters as users write them: the seed vendors' examples, transitions, arithmetic, missing
//! fields, the CEL features filters rely on, and hostile expressions.

use chrono::{TimeZone, Utc};
use outbox_core::Event;
use outbox_matcher::{Filter, FilterError, MAX_FILTER_DEPTH, MAX_FILTER_NESTING, MAX_FILTER_TERMS};
use serde_json::{Value, json};

fn event(event_type: &str, data: Value, old: Option<Value>, metadata: Value) -> Event {
    Event {
        id: 42,
        event_type: event_type.into(),
        entity: event_type.split('.').next().unwrap_or("x").into(),
        entity_id: "7".into(),
        data,
        old,
        metadata,
        created_at: Utc.with_ymd_and_hms(2025, 3, 14, 15, 9, 26).unwrap(),
    }
}

fn data(data: Value) -> Event {
    event("shipment.updated", data, None, json!({}))
}

/// Compiles `filter` (which must compile) and evaluates it.
fn eval(filter: &str, event: &Event) -> Result<bool, FilterError> {
    Filter::compile(filter)
        .unwrap_or_else(|e| panic!("{filter:?} does not compile: {e}"))
        .matches(event, "carrier-shipments")
}

fn holds(filter: &str, event: &Event) -> bool {
    eval(filter, event).unwrap_or_else(|e| panic!("{filter:?} failed: {e}"))
}

// --- The seed vendors' examples -------------------------------------------------------------

/// Clougistic "filter by entity, if you have multiple e-commerce stores"; ShopCtrl "select a shop".
#[test]
fn multi_shop() {
    let nl = event(
        "order.created",
        json!({"id": 1}),
        None,
        json!({"shop": "nl"}),
    );
    let de = event(
        "order.created",
        json!({"id": 2}),
        None,
        json!({"shop": "de"}),
    );
    let f = r#"event.metadata.shop == "nl""#;
    assert!(holds(f, &nl));
    assert!(!holds(f, &de));
    let benelux = r#"event.metadata.shop in ["nl", "be", "lu"]"#;
    assert!(holds(benelux, &nl));
    assert!(!holds(benelux, &de));
    // ShopCtrl-style numeric shop ids in the data.
    let by_id = event("order.changed", json!({"ShopId": 3}), None, json!({}));
    assert!(holds("event.data.ShopId == 3", &by_id));
    assert!(holds("event.data.ShopId in [1, 3]", &by_id));
}

/// Clougistic "filter on parcel type, if there are multiple shipping platforms or carriers".
#[test]
fn carrier_and_parcel_type() {
    let f = r#"event.data.carrier == "dhl" && event.data.parcel.type in ["box", "pallet"]"#;
    let box_dhl = data(json!({"carrier": "dhl", "parcel": {"type": "box"}}));
    let letter_dhl = data(json!({"carrier": "dhl", "parcel": {"type": "letter"}}));
    let box_ups = data(json!({"carrier": "ups", "parcel": {"type": "box"}}));
    assert!(holds(f, &box_dhl));
    assert!(!holds(f, &letter_dhl));
    assert!(!holds(f, &box_ups));
    // Case-insensitive carrier codes, with a regular expression.
    assert!(holds(
        r#"event.data.carrier.matches("(?i)^DHL")"#,
        &data(json!({"carrier": "dhl-express"}))
    ));
}

/// Clougistic "filter on printertype, if a shipment document must be printed on a specific printer".
#[test]
fn printer_type() {
    let f = r#"event.data.document.printer_type == "label" && event.data.document.format.startsWith("ZPL")"#;
    let label = data(json!({"document": {"printer_type": "label", "format": "ZPL-203dpi"}}));
    let a4 = data(json!({"document": {"printer_type": "a4", "format": "PDF"}}));
    assert!(holds(f, &label));
    assert!(!holds(f, &a4));
}

/// Clougistic "filter on error, major errors are forwarded to IT-manager"; also the relay's own
/// dead-delivery alerts.
#[test]
fn error_severity_to_it() {
    let f = r#"event.type.startsWith("error.") && event.data.severity in ["major", "critical"]"#;
    let major = event(
        "error.raised",
        json!({"severity": "major"}),
        None,
        json!({}),
    );
    let minor = event(
        "error.raised",
        json!({"severity": "minor"}),
        None,
        json!({}),
    );
    assert!(holds(f, &major));
    assert!(!holds(f, &minor));
    // Numeric levels work as integers.
    let level = event("error.raised", json!({"level": 4}), None, json!({}));
    assert!(holds("event.data.level >= 3", &level));
    // Dead deliveries of one webhook, after many attempts.
    let dead = event(
        "relay.delivery.dead",
        json!({"webhook": "carrier-shipments", "attempts": 10, "last_status": 500}),
        None,
        json!({}),
    );
    assert!(holds(
        r#"event.data.webhook == "carrier-shipments" && event.data.attempts >= 10 && event.data.last_status >= 500"#,
        &dead
    ));
}

/// Extend "limit the hook to only handle balances for a specific warehouse".
#[test]
fn warehouse() {
    let f = r#"event.data.Warehouse == "GreenWarehouse""#;
    let green = event(
        "stock.available_balance_changed",
        json!({"Warehouse": "GreenWarehouse", "ProductNumber": "P-1", "Available": 5}),
        None,
        json!({}),
    );
    let red = event(
        "stock.available_balance_changed",
        json!({"Warehouse": "RedWarehouse", "ProductNumber": "P-1", "Available": 5}),
        None,
        json!({}),
    );
    assert!(holds(f, &green));
    assert!(!holds(f, &red));
    // A purchase delivered partly to several warehouses: any of its lines in the green one.
    let lines = r#"event.data.lines.exists(l, l.warehouse == "GreenWarehouse")"#;
    let purchase = data(json!({"lines": [{"warehouse": "Red"}, {"warehouse": "GreenWarehouse"}]}));
    assert!(holds(lines, &purchase));
    assert!(!holds(
        lines,
        &data(json!({"lines": [{"warehouse": "Red"}]}))
    ));
}

// --- Transitions, arithmetic, missing fields -----------------------------------------------------

/// Ongoing WMS "triggers every time an order reaches the status Sent".
#[test]
fn transition_with_old() {
    let became_shipped =
        r#"event.old != null && event.old.status != "shipped" && event.data.status == "shipped""#;
    let shipped = event(
        "order.updated",
        json!({"status": "shipped"}),
        Some(json!({"status": "packed"})),
        json!({}),
    );
    let still_shipped = event(
        "order.updated",
        json!({"status": "shipped", "note": "x"}),
        Some(json!({"status": "shipped"})),
        json!({}),
    );
    let created_shipped = event(
        "order.created",
        json!({"status": "shipped"}),
        None,
        json!({}),
    );
    assert!(holds(became_shipped, &shipped));
    assert!(!holds(became_shipped, &still_shipped));
    assert!(
        !holds(became_shipped, &created_shipped),
        "no old row: && short-circuits, no error"
    );

    // The design's example: on a create there is no old row, so `event.old.status` is an error,
    // which counts as no match (and is counted).
    let design = r#"event.data.carrier == "dhl" && event.old.status != event.data.status"#;
    let created = event(
        "shipment.created",
        json!({"carrier": "dhl", "status": "new"}),
        None,
        json!({}),
    );
    assert!(matches!(eval(design, &created), Err(FilterError::Eval(_))));
    let moved = event(
        "shipment.updated",
        json!({"carrier": "dhl", "status": "sent"}),
        Some(json!({"carrier": "dhl", "status": "new"})),
        json!({}),
    );
    assert!(holds(design, &moved));
    // Creates included: "new, or changed".
    let any = r#"event.old == null || event.old.status != event.data.status"#;
    assert!(holds(any, &created));
    assert!(holds(any, &moved));
}

#[test]
fn json_integers_are_cel_ints() {
    let e = data(
        json!({"qty": 5, "price": 12.5, "big": 9223372036854775807_i64, "huge": 18446744073709551615_u64}),
    );
    assert!(holds("event.data.qty + 1 > 5", &e));
    assert!(holds("event.data.qty * 2 == 10", &e));
    assert!(holds("event.data.qty % 2 == 1", &e));
    assert!(holds("event.data.qty / 2 == 2", &e), "integer division");
    assert!(holds("type(event.data.qty) == int", &e));
    assert!(holds("type(event.data.price) == double", &e));
    assert!(holds("event.data.price > 12.0", &e));
    assert!(holds("double(event.data.qty) < event.data.price", &e));
    assert!(holds("event.data.huge == 18446744073709551615u", &e));
    assert!(holds("event.id == 42", &e));
    // Overflow is an error, never a wrap-around or a crash.
    assert!(matches!(
        eval("event.data.big + 1 > 0", &e),
        Err(FilterError::Eval(_))
    ));
}

#[test]
fn missing_fields() {
    let e = data(json!({"carrier": "dhl", "parcel": {}}));
    // Reading a missing field is an error (counted as no match by the matcher).
    assert!(matches!(
        eval("event.data.nope == 1", &e),
        Err(FilterError::Eval(_))
    ));
    assert!(matches!(
        eval("event.data.parcel.type == 'box'", &e),
        Err(FilterError::Eval(_))
    ));
    // has() tests for presence; && and || skip the error when the other side decides.
    assert!(!holds("has(event.data.nope)", &e));
    assert!(holds("has(event.data.carrier)", &e));
    assert!(!holds(
        "has(event.data.parcel.type) && event.data.parcel.type == 'box'",
        &e
    ));
    assert!(holds(
        "!has(event.data.weight) || event.data.weight > 30",
        &e
    ));
    assert!(holds("'nope' in event.data == false", &e));
    // Optional field access with a default.
    assert!(holds("event.data.?weight.orValue(0) == 0", &e));
    // JSON null is CEL null.
    assert!(holds("event.data.n == null", &data(json!({"n": null}))));
    // Not a bool: an error, not a match.
    assert!(matches!(
        eval("event.data.carrier", &e),
        Err(FilterError::NotBool(_))
    ));
}

// --- What filters rely on --------------------------------------------------------------------------

#[test]
fn strings_lists_maps_and_macros_work_on_event_data() {
    let e = event(
        "order.created",
        json!({
            "code": "NL-2025-0042",
            "email": "anna@example.com",
            "tags": ["b2b", "rush"],
            "lines": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 5}],
            "address": {"country": "NL"}
        }),
        None,
        json!({"shop": "nl"}),
    );
    for f in [
        r#"event.data.code.startsWith("NL-")"#,
        r#"event.data.code.endsWith("0042")"#,
        r#"event.data.code.contains("2025")"#,
        r#"event.data.email.matches("^[^@]+@example\\.com$")"#,
        r#"size(event.data.code) == 12"#,
        r#""rush" in event.data.tags"#,
        r#""country" in event.data.address"#,
        r#"has(event.data.address.country)"#,
        r#"size(event.data.lines) == 2"#,
        r#"event.data.lines.exists(l, l.qty > 4)"#,
        r#"event.data.lines.all(l, l.qty > 0)"#,
        r#"event.data.lines.exists_one(l, l.sku.startsWith("B"))"#,
        r#"event.data.lines.map(l, l.qty).exists(q, q == 5)"#,
        r#"size(event.data.lines.filter(l, l.qty >= 2)) == 2"#,
        r#"event.data.lines.map(l, l.sku) == ["A-1", "B-7"]"#,
        r#"event.data.lines.exists(l, event.data.tags.exists(t, t == "rush") && l.qty == 2)"#,
        r#"event.data.lines[1].sku == "B-7""#,
        r#"event.data.address["country"] == "NL""#,
        r#"event.type == "order.created" && event.entity == "order" && event.entity_id == "7""#,
        r#"event.metadata.shop == "nl" ? event.data.address.country == "NL" : false"#,
        r#"webhook.name == "carrier-shipments""#,
        r#"webhook.name.startsWith("carrier-")"#,
    ] {
        assert!(holds(f, &e), "{f}");
    }
}

#[test]
fn created_at_is_a_timestamp() {
    let e = data(json!({"due": "2025-03-15T00:00:00Z"}));
    for f in [
        r#"event.created_at > timestamp("2025-01-01T00:00:00Z")"#,
        r#"event.created_at < timestamp("2026-01-01T00:00:00Z")"#,
        r#"event.created_at.getFullYear() == 2025"#,
        r#"event.created_at.getHours() == 15"#,
        r#"event.created_at.getDayOfWeek() == 5"#,
        r#"timestamp(event.data.due) - event.created_at < duration("12h")"#,
        r#"event.created_at + duration("24h") > timestamp(event.data.due)"#,
        r#"string(event.created_at).startsWith("2025-03-14T15:09:26")"#,
    ] {
        assert!(holds(f, &e), "{f}");
    }
}

#[test]
fn evaluation_errors_are_errors_never_panics() {
    let e = data(json!({"s": "abc", "list": [1, 2], "m": {"a": 1}, "n": null}));
    for f in [
        "1 / (event.data.list[0] - 1) == 1",
        "1 % (event.data.list[0] - 1) == 1",
        "-9223372036854775807 - event.data.list[1] < 0",
        "int(event.data.s) == 1",
        "event.data.s.matches('(') ",
        "event.data.s.matches('a{1000}{1000}{1000}')",
        "timestamp(event.data.s) < event.created_at",
        "duration('99999999999999999h') > duration('1s')",
        "event.data.list[99] == 1",
        "event.data.list[-1] == 1",
        "event.data.s[0] == 'a'",
        "size(event.data.nope) == 1",
        "uint(-1 + event.data.list[0] - 1) == 1u",
        "int(1e300 * double(event.data.list[1])) == 1",
        "event.data.m.a.b == 1",
        "event.data.n.x == 1",
        "event.data.m + event.data.m == event.data.m",
        "event.data.list.all(x, x / 0 == 1)",
        "{'a': 1, 'a': 2} == event.data.m",
        "event.data.s > 1",
        "timestamp('9999-12-31T23:59:59Z') + duration('24h') > event.created_at",
        "event.created_at - timestamp('0001-01-01T00:00:00Z') > duration('1s')",
    ] {
        match eval(f, &e) {
            Ok(_) => {}
            Err(FilterError::Eval(msg)) => assert!(
                !msg.contains("internally"),
                "{f}: the interpreter panicked: {msg}"
            ),
            Err(FilterError::NotBool(_)) => {}
            Err(other) => panic!("{f}: unexpected {other:?}"),
        }
    }
}

// --- Compile-time checks ------------------------------------------------------------------------

#[test]
fn syntax_errors_name_the_position() {
    let err = Filter::compile("event.data.carrier == ").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FilterError::Compile(_)), "{msg}");
    assert!(msg.contains("line 1, column"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn unknown_names_are_refused_but_macro_variables_are_not() {
    let err = Filter::compile("evnt.data.carrier == 'dhl'").unwrap_err();
    assert!(
        matches!(&err, FilterError::UnknownName { name, line: 1, .. } if name == "evnt"),
        "{err:?}"
    );
    assert!(err.to_string().contains("`evnt`"), "{err}");
    assert!(err.to_string().starts_with("line 1, column "), "{err}");
    assert!(Filter::compile("event.data.lines.exists(l, l.qty > 1)").is_ok());
    let err = Filter::compile("event.data.lines.exists(l, x.qty > 1)").unwrap_err();
    assert!(
        matches!(&err, FilterError::UnknownName { name, .. } if name == "x"),
        "{err:?}"
    );
}

#[test]
fn macros_nest_at_most_twice() {
    let two = "event.data.a.exists(x, x.b.exists(y, y == 1))";
    assert!(Filter::compile(two).is_ok());
    let three = "event.data.a.exists(x, x.b.exists(y, y.c.exists(z, z == 1)))";
    assert_eq!(
        Filter::compile(three).unwrap_err(),
        FilterError::TooManyLoops { depth: 3 }
    );
}

// --- Hostile expressions ---------------------------------------------------------------------------

fn refused(source: &str) -> FilterError {
    match Filter::compile(source) {
        Ok(_) => panic!("accepted a hostile filter of {} bytes", source.len()),
        Err(e) => e,
    }
}

#[test]
fn a_2000_term_expression_is_refused() {
    // Too long for the byte limit.
    let and = vec!["event.data.qty == 1"; 2000].join(" && ");
    assert!(matches!(refused(&and), FilterError::TooLong { .. }));
    // Short enough in bytes, but 2000 terms.
    let sum = format!("{} > 0", vec!["1"; 2000].join("+"));
    assert!(sum.len() <= outbox_matcher::MAX_FILTER_LEN);
    let err = refused(&sum);
    assert!(
        matches!(err, FilterError::TooManyTerms { terms } if terms >= 2000),
        "{err}"
    );
    assert!(err.to_string().contains("the limit is 500"), "{err}");
    let list = format!("event.data.qty in [{}]", vec!["1"; 2000].join(","));
    assert!(matches!(refused(&list), FilterError::TooManyTerms { .. }));
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let parens = format!("{}true{}", "(".repeat(500), ")".repeat(500));
    let err = refused(&parens);
    assert_eq!(err, FilterError::TooDeep { depth: 500 });
    assert!(err.to_string().contains("limit is 32"), "{err}");
    let lists = format!("{}1{} == []", "[".repeat(500), "]".repeat(500));
    assert!(matches!(refused(&lists), FilterError::TooDeep { .. }));
    let calls = format!(
        "{}event.data.s{} == 1",
        "size(".repeat(500),
        ")".repeat(500)
    );
    assert!(matches!(refused(&calls), FilterError::TooDeep { .. }));

    // Deep without brackets: each chain stays within the byte and term limits. Chains of `!`
    // and `-` are folded by the parser (`!!x` is `x`), so those are harmless.
    let nots = format!("{}true", "!".repeat(3001));
    assert_eq!(eval(&nots, &data(json!({}))), Ok(false));
    let negs = format!("{}1 == -1", "-".repeat(3001));
    assert_eq!(eval(&negs, &data(json!({}))), Ok(true));
    let members = format!("event{} == 1", ".a".repeat(400));
    assert!(matches!(refused(&members), FilterError::TooComplex { .. }));
    let indexes = format!("event.data{} == 1", "[0]".repeat(490));
    assert!(matches!(refused(&indexes), FilterError::TooComplex { .. }));
    let sum = format!("{} > 0", vec!["1"; MAX_FILTER_TERMS - 1].join("+"));
    assert!(matches!(refused(&sum), FilterError::TooComplex { .. }));
    let calls = format!("event.data.s{}", ".startsWith('a')".repeat(240));
    assert!(matches!(refused(&calls), FilterError::TooComplex { .. }));
    let ternary = format!("{}true", "true ? true : ".repeat(160));
    assert!(matches!(
        refused(&ternary),
        FilterError::Compile(_) | FilterError::TooComplex { .. }
    ));

    // The worst the lexical limits let through, all at once: brackets at the nesting limit,
    // each level holding a chain, terms at the limit.
    let per_level = MAX_FILTER_TERMS / MAX_FILTER_NESTING - 1;
    let mut worst = String::from("1");
    for _ in 0..MAX_FILTER_NESTING {
        worst = format!("({worst}{})", "+1".repeat(per_level));
    }
    assert!(
        worst.len() <= outbox_matcher::MAX_FILTER_LEN,
        "{}",
        worst.len()
    );
    assert!(matches!(
        refused(&format!("{worst} > 0")),
        FilterError::TooComplex { .. }
    ));
}

/// The largest `n` for which `shape(n)` compiles; `shape(n + 1)` must be refused as too deep.
fn deepest(shape: impl Fn(usize) -> String) -> (String, Filter) {
    let mut last = None;
    for n in 1..=MAX_FILTER_DEPTH + 1 {
        let source = shape(n);
        match Filter::compile(&source) {
            Ok(filter) => last = Some((source, filter)),
            Err(FilterError::TooComplex { depth }) => {
                assert_eq!(depth, MAX_FILTER_DEPTH + 1, "{source}");
                return last.unwrap_or_else(|| panic!("even {source:?} is refused"));
            }
            Err(e) => panic!("{source}: {e}"),
        }
    }
    panic!("{:?} is never refused", shape(MAX_FILTER_DEPTH + 1));
}

/// The deepest filters accepted evaluate within a 2 MiB stack (tokio's and Rust's default for
/// threads), even in debug builds, where the interpreter's frames are 20x larger.
#[test]
fn the_deepest_accepted_filters_evaluate_on_a_small_stack() {
    let e = data(json!({"qty": 1, "s": "abc", "a": [[1, 2], [3]], "m": {"a": 1}}));
    let qty = |n: usize, op: &str| vec!["event.data.qty"; n].join(op);
    let shapes: Vec<Box<dyn Fn(usize) -> String>> = vec![
        Box::new(|n| format!("{} > 0", qty(n, " + "))),
        Box::new(|n| format!("{} > 0", qty(n, " * "))),
        Box::new(|n| format!("{}1{} > 0", "(event.data.qty + ".repeat(n), ")".repeat(n))),
        Box::new(|n| format!("event.data.s{}", ".startsWith('a') == true".repeat(n))),
        Box::new(|n| format!("event.data{} == 1", "[\"m\"]".repeat(n))),
        Box::new(|n| format!("event.data.a.exists(x, x.exists(y, {} > 0))", qty(n, " - "))),
        Box::new(|n| {
            format!(
                "event.data.a.map(x, x.filter(y, {} > y)) != []",
                qty(n, " + ")
            )
        }),
        Box::new(|n| format!("{}true", "event.data.qty == 2 ? false : ".repeat(n))),
    ];
    let deepest: Vec<(String, Filter)> = shapes.into_iter().map(deepest).collect();
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn_scoped(s, || {
                for (source, filter) in &deepest {
                    match filter.matches(&e, "w") {
                        Ok(_) | Err(FilterError::Eval(_)) => {}
                        Err(other) => panic!("{source}: {other}"),
                    }
                }
            })
            .unwrap()
            .join()
            .unwrap();
    });
}

#[test]
fn brackets_in_strings_do_not_count() {
    let f = format!("event.data.s == '{}'", "(".repeat(MAX_FILTER_NESTING + 10));
    assert!(Filter::compile(&f).is_ok());
    let f = format!(
        "event.data.s == r\"\"\"{}\"\"\"",
        "[".repeat(MAX_FILTER_NESTING + 10)
    );
    assert!(Filter::compile(&f).is_ok());
}

/// Random token soup (deterministic) never crashes the compiler or the interpreter.
#[test]
fn random_token_soup_is_refused_or_evaluated_never_a_crash() {
    let tokens = [
        "(", ")", "[", "]", "{", "}", "!", "-", "+", "*", "/", "%", "&&", "||", "?", ":", ".", ",",
        "a", "event", "data", "1", "2.5", "'s'", "\"t\"", "==", "<", ">=", "in", "has(", "exists(",
        "x", " ", ".?", "[?", "true", "null", "r'", "\"\"\"", "\\", "b'", "1u", "0x1F", "map(",
        "all(x,", ";", "@", "#", "`",
    ];
    let mut seed: u64 = 0x1234_5678;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let e = data(json!({"a": [1, 2], "x": {"y": 1}}));
    for _ in 0..300 {
        let len = (next() % 1500) as usize;
        let mut source = String::new();
        while source.len() < len {
            source.push_str(tokens[(next() % tokens.len() as u64) as usize]);
        }
        if let Ok(filter) = Filter::compile(&source) {
            let _ = filter.matches(&e, "w");
        }
    }
}

// --- Static type checks (issue 14, item 9) ----------------------------------------------------

#[test]
fn unknown_functions_fields_and_results_that_are_never_bool_are_refused_with_their_position() {
    type Expect = fn(&FilterError) -> bool;
    let cases: [(&str, Expect); 12] = [
        (
            "foo(event.id)",
            |e| matches!(e, FilterError::UnknownFunction { name, line: 1, column: 1 } if name == "foo"),
        ),
        (
            "event.data.code.shout() == 'A'",
            |e| matches!(e, FilterError::UnknownFunction { name, .. } if name == "shout"),
        ),
        (
            "event.data.a.exists(x, frobnicate(x))",
            |e| matches!(e, FilterError::UnknownFunction { name, .. } if name == "frobnicate"),
        ),
        ("event.id", |e| matches!(e, FilterError::NeverBool { .. })),
        ("event.entity_id", |e| {
            matches!(e, FilterError::NeverBool { .. })
        }),
        ("size(event.data.lines)", |e| {
            matches!(e, FilterError::NeverBool { .. })
        }),
        ("event.data.qty + 1", |e| {
            matches!(e, FilterError::NeverBool { .. })
        }),
        ("event.data.lines.map(l, l.qty)", |e| {
            matches!(e, FilterError::NeverBool { .. })
        }),
        ("'yes'", |e| matches!(e, FilterError::NeverBool { .. })),
        (
            "event.nope == 1",
            |e| matches!(e, FilterError::UnknownField { path, .. } if path == "event.nope"),
        ),
        ("has(event.nope)", |e| {
            matches!(e, FilterError::UnknownField { .. })
        }),
        (
            "webhook.id == 1",
            |e| matches!(e, FilterError::UnknownField { path, .. } if path == "webhook.id"),
        ),
    ];
    for (source, expected) in cases {
        let err = Filter::compile(source).expect_err(source);
        assert!(expected(&err), "{source}: {err:?}");
        assert!(
            err.to_string().starts_with("line 1, column "),
            "{source}: {err}"
        );
    }
    let err = Filter::compile("event.data.ok &&\n  foo(1)").unwrap_err();
    assert!(
        matches!(
            err,
            FilterError::UnknownFunction {
                line: 2,
                column: 3,
                ..
            }
        ),
        "{err:?}"
    );
    // What may be a bool at run time is accepted; so are the standard functions and macros.
    for ok in [
        "event.data.flag",
        "event.old.paid",
        "event.data.flag ? true : event.data.other",
        "event.data.m['x']",
        "event.data.lines.exists(l, l.ok)",
        "event.data.lines.exists_one(l, l.qty > 1)",
        "size(event.data.lines.filter(l, l.qty > 1)) > 0",
        "'a'.contains('b') || 'a'.startsWith('b') || 'a'.endsWith('b') || 'a'.matches('b')",
        "int('1') + uint(1) > 0 || double('1.5') > 1.0 || string(1) == '1' || bytes('a') == b'a'",
        "type(event.data.qty) == int && dyn(event.data.qty) == 1",
        "timestamp(event.data.due) - event.created_at < duration('12h')",
        "event.created_at.getHours() == 15 && event.created_at.getDayOfWeek() == 5",
        "optional.of(1).hasValue() && event.data.?x.orValue(1) == 1",
        "has(event.data.x) && has(event.metadata.shop) && webhook.name == 'w'",
        "bool('true')",
    ] {
        if let Err(e) = Filter::compile(ok) {
            panic!("{ok}: {e}");
        }
    }
}

// --- The evaluation budget (issue 14, item 2) --------------------------------------------------

fn list_event(n: usize) -> Event {
    let items: Vec<i64> = (0..n as i64).collect();
    let lines: Vec<Value> = (0..n)
        .map(|i| json!({"sku": format!("S-{i}"), "qty": i, "tags": ["a", "b"]}))
        .collect();
    data(json!({"l": items, "lines": lines, "s": "x".repeat(100_000)}))
}

#[test]
fn filters_whose_work_grows_faster_than_the_event_stop_at_the_budget() {
    let e = list_event(3_000);
    let concatenation = format!("size({}) > 0", vec!["event.data.s"; 28].join(" + "));
    for source in [
        "event.data.l.map(x, event.data.l.map(y, x + y)).size() > 0",
        "event.data.l.map(x, event.data.l).size() > 0",
        "event.data.l.exists(x, event.data.l.exists(y, x + y < 0))",
        "event.data.l.all(x, event.data.lines.all(l, l.qty != x - 3000))",
        "event.data.l.filter(x, event.data.l.filter(y, y == x).size() == 1).size() == 0",
        concatenation.as_str(),
    ] {
        match eval(source, &e) {
            Err(FilterError::OverBudget { steps }) => assert!(steps > 1_000_000, "{steps}"),
            other => panic!("{source}: {other:?}"),
        }
    }
}

#[test]
fn filters_linear_in_a_large_event_fit_the_budget() {
    let e = list_event(3_000);
    for source in [
        "event.data.lines.exists(l, l.sku == 'S-2999')",
        "event.data.lines.all(l, l.tags.all(t, t in ['a', 'b']))",
        "event.data.lines.map(l, l.qty).filter(q, q > 2990).size() == 9",
        "event.data.l.exists(x, x == 2999) && size(event.data.s) == 100000",
        "event.data == event.data && event.data.lines[2999].qty == 2999",
        "event.data.lines.exists(l, l.tags.exists(t, t == 'b') && l.qty == 2999)",
    ] {
        assert!(holds(source, &e), "{source}");
    }
    // The budget is per evaluation: the same filter runs again afterwards.
    let heavy =
        Filter::compile("event.data.l.exists(x, event.data.l.exists(y, x + y < 0))").unwrap();
    let light = Filter::compile("event.data.l.exists(x, x == 5)").unwrap();
    for _ in 0..3 {
        assert!(matches!(
            heavy.matches(&e, "w"),
            Err(FilterError::OverBudget { .. })
        ));
        assert_eq!(light.matches(&e, "w"), Ok(true));
    }
    // A small event lets the same nested filter finish.
    assert_eq!(heavy.matches(&list_event(50), "w"), Ok(false));
}
