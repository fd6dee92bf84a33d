//! The renderer through its public API: every seed format with hostile data, the vendors' payload
//! shapes, filters, errors and the sandbox.

use chrono::{TimeZone, Utc};
use outbox_core::{Event, WebhookSpec};
use outbox_renderer::{
    FUEL, MAX_OUTPUT, RenderContext, RenderError, Rendered, Templates, merge_fields,
};
use serde_json::{Map, Value, json};

/// Quotes of both kinds, markup, ampersands, commas, line breaks, tabs, backslashes, slashes and
/// non-ASCII text.
const HOSTILE: &str = "He said \"hi\" & <b>bye</b>, it's 5' 10\"\nnext line\r\n\ttabbed; Größe: 日本語 😀 \\back\\ /path?a=1&b=2#x";

fn spec(url: &str, content_type: &str, body: Option<&str>) -> WebhookSpec {
    let mut spec: WebhookSpec =
        toml::from_str("name = \"w\"\nevents = [\"*\"]\nurl = \"http://x\"").expect("spec");
    spec.url = url.into();
    spec.content_type = content_type.into();
    spec.body = body.map(str::to_string);
    spec
}

fn event(entity: &str, entity_id: &str, data: Value) -> Event {
    Event {
        id: 42,
        event_type: format!("{entity}.updated"),
        entity: entity.into(),
        entity_id: entity_id.into(),
        data,
        old: Some(json!({"status": "new"})),
        metadata: json!({"shop": "nl"}),
        created_at: Utc.with_ymd_and_hms(2024, 6, 10, 22, 30, 5).unwrap(),
    }
}

fn render_with(
    spec: &WebhookSpec,
    event: &Event,
    related: &Map<String, Value>,
) -> Result<Rendered, RenderError> {
    let templates = Templates::compile(spec).expect("templates compile");
    templates.render(&RenderContext {
        event,
        message_id: "msg_test_7",
        delivery_id: 7,
        attempt: 2,
        webhook: "carrier",
        related,
    })
}

fn body_of(content_type: &str, body: &str, data: Value) -> Result<String, RenderError> {
    let spec = spec("http://receiver.test/hook", content_type, Some(body));
    let rendered = render_with(&spec, &event("shipment", "7", data), &Map::new())?;
    Ok(String::from_utf8(rendered.body).expect("utf-8 body"))
}

fn hostile() -> Value {
    json!({"code": HOSTILE, "carrier": "dhl", "qty": 3, "price": 19.5, "note": null,
           "lines": [{"sku": "A,1", "name": HOSTILE}, {"sku": "B\"2", "name": "plain"}]})
}

#[test]
fn json_bodies_emit_values_as_json_whatever_they_hold() {
    let body = body_of(
        "application/json",
        r#"{"code": {{ event.data.code }}, "qty": {{ event.data.qty }}, "price": {{ event.data.price }},
            "note": {{ event.data.note }}, "lines": {{ event.data.lines }}, "first": {{ event.data.lines[0].sku }},
            "shop": {{ event.metadata.shop }}, "tojson": {{ event.data.code | tojson }}}"#,
        hostile(),
    )
    .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["code"], HOSTILE);
    assert_eq!(v["tojson"], HOSTILE);
    assert_eq!(v["qty"], 3);
    assert_eq!(v["price"], 19.5);
    assert_eq!(v["note"], Value::Null);
    assert_eq!(v["lines"], hostile()["lines"]);
    assert_eq!(v["first"], "A,1");
    assert_eq!(v["shop"], "nl");
}

#[test]
fn xml_bodies_escape_text_and_attributes() {
    let body = body_of(
        "application/xml; charset=utf-8",
        r#"<?xml version="1.0" encoding="UTF-8"?>
<shipment id="{{ event.data.code }}" carrier='{{ event.data.code }}'>
  <code>{{ event.data.code }}</code>
  <note>{{ event.data.note }}</note>
  {% for line in event.data.lines %}<line sku="{{ line.sku }}">{{ line.name }}</line>{% endfor %}
  <json>{{ event.data.lines[0] | tojson }}</json>
  <explicit>{{ event.data.code | xml_escape }}</explicit>
</shipment>"#,
        hostile(),
    )
    .unwrap();
    let doc = roxmltree::Document::parse(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let root = doc.root_element();
    assert_eq!(
        root.attribute("id"),
        Some(HOSTILE),
        "double-quoted attribute"
    );
    assert_eq!(
        root.attribute("carrier"),
        Some(HOSTILE),
        "single-quoted attribute"
    );
    let text = |name: &str| {
        root.children()
            .find(|n| n.has_tag_name(name))
            .and_then(|n| n.text())
            .map(str::to_string)
    };
    // XML parsers turn CR LF into LF in text; the character references keep it exact.
    assert_eq!(text("code").as_deref(), Some(HOSTILE));
    assert_eq!(
        text("explicit").as_deref(),
        Some(HOSTILE),
        "not escaped twice"
    );
    assert_eq!(text("note"), None, "null is empty, not \"none\"");
    let lines: Vec<_> = root.children().filter(|n| n.has_tag_name("line")).collect();
    assert_eq!(lines[0].attribute("sku"), Some("A,1"));
    assert_eq!(lines[0].text(), Some(HOSTILE));
    assert_eq!(lines[1].attribute("sku"), Some("B\"2"));
    let json: Value = serde_json::from_str(&text("json").unwrap()).unwrap();
    assert_eq!(json["name"], HOSTILE);
    assert!(!body.contains("&#x2f;"), "slashes stay readable: {body}");
}

#[test]
fn xml_bodies_replace_characters_xml_cannot_carry() {
    let body = body_of(
        "text/xml",
        "<a b=\"{{ event.data.v }}\">{{ event.data.v }}</a>",
        json!({"v": "bell\u{7}nul\u{0}"}),
    )
    .unwrap();
    let doc = roxmltree::Document::parse(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(doc.root_element().text(), Some("bell\u{fffd}nul\u{fffd}"));
}

#[test]
fn html_bodies_escape_markup_and_quotes() {
    let body = body_of(
        "text/html",
        r#"<p title="{{ event.data.code }}" data-x='{{ event.data.code }}'>{{ event.data.code }}</p>{{ event.data.note }}"#,
        hostile(),
    )
    .unwrap();
    let escaped = "He said &quot;hi&quot; &amp; &lt;b&gt;bye&lt;/b&gt;, it&#39;s 5&#39; 10&quot;\nnext line\r\n\ttabbed; Größe: 日本語 😀 \\back\\ /path?a=1&amp;b=2#x";
    assert_eq!(
        body,
        format!(r#"<p title="{escaped}" data-x='{escaped}'>{escaped}</p>"#)
    );
}

#[test]
fn csv_bodies_quote_fields_per_rfc_4180() {
    let body = body_of(
        "text/csv",
        "sku,name,qty\r\n{% for line in event.data.lines %}{{ line.sku | csv }},{{ line.name | csv }},{{ event.data.qty | csv }}\r\n{% endfor %}{{ [event.data.carrier, event.data.code, event.data.note] | csv }}\r\n",
        hostile(),
    )
    .unwrap();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(body.as_bytes());
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| {
            r.unwrap_or_else(|e| panic!("{e}: {body}"))
                .iter()
                .map(str::to_string)
                .collect()
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["A,1".to_string(), HOSTILE.into(), "3".into()],
            vec!["B\"2".into(), "plain".into(), "3".into()],
            vec!["dhl".into(), HOSTILE.into(), "".into()],
        ]
    );
}

#[test]
fn csv_filter_takes_another_separator() {
    let body = body_of("text/csv", "{{ ['a;b', 'c', 1.5] | csv(';') }}", json!({})).unwrap();
    assert_eq!(body, "\"a;b\";c;1.5");
}

#[test]
fn plain_text_is_raw() {
    let body = body_of(
        "text/plain",
        "Order {{ event.data.code }} ({{ event.data.qty }}){{ event.data.note }}",
        hostile(),
    )
    .unwrap();
    assert_eq!(body, format!("Order {HOSTILE} (3)"));
}

#[test]
fn kladana_url_percent_encodes_every_value() {
    let spec = spec(
        "http://mysite.com/webhook?id={{ id }}&type={{ type }}",
        "application/json",
        None,
    );
    let mut spec = spec;
    spec.method = "GET".into();
    for id in [
        "1111-22dddw-2w3ed-222e30",
        "a b&c=d/e?f#g",
        "ü€ 😀",
        "50%+1",
    ] {
        let ev = event("CustomerOrder", id, json!({}));
        let rendered = render_with(&spec, &ev, &Map::new()).unwrap();
        let url = url::Url::parse(&rendered.url).unwrap();
        assert_eq!(url.host_str(), Some("mysite.com"));
        assert_eq!(url.path(), "/webhook");
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("id".to_string(), id.to_string()),
                ("type".into(), "CustomerOrder".into())
            ],
            "{}",
            rendered.url
        );
        assert!(
            rendered.body.is_empty(),
            "a GET without a body template sends no body"
        );
    }
    let ev = event("CustomerOrder", "1111-22dddw-2w3ed-222e30", json!({}));
    assert_eq!(
        render_with(&spec, &ev, &Map::new()).unwrap().url,
        "http://mysite.com/webhook?id=1111-22dddw-2w3ed-222e30&type=CustomerOrder"
    );
}

#[test]
fn url_filters_do_not_encode_twice() {
    let spec = spec(
        "https://h.example/{{ event.data.path | urlencode }}?{{ event.data.q | urlencode }}&raw={{ event.data.base | safe }}",
        "application/json",
        None,
    );
    let ev = event(
        "o",
        "1",
        json!({"path": "a b/c", "q": {"x y": "1&2", "z": "ü"}, "base": "v1/items"}),
    );
    let rendered = render_with(&spec, &ev, &Map::new()).unwrap();
    assert_eq!(
        rendered.url,
        "https://h.example/a%20b%2Fc?x%20y=1%262&z=%C3%BC&raw=v1/items"
    );
}

#[test]
fn extend_envelope_as_a_template() {
    let body = body_of(
        "application/json",
        r#"{
  "Id": {{ delivery.message_id }},
  "Attempt": {{ delivery.attempt }},
  "Properties": { "NotificationId": {{ event.metadata.notification_id }} },
  "Notifications": [
    {
      "Action": {{ event.data.action }},
      "Details": { "OrderNumber": {{ event.data.order_number }}, "Warehouse": {{ event.data.warehouse }} }
    }
  ]
}"#,
        json!({"action": "PurchasePartiallyDelivered", "order_number": "RP-101", "warehouse": "Green \"Main\" Warehouse"}),
    );
    // metadata.notification_id is missing: the render fails and says where.
    let err = body.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("body template failed at line 4"), "{text}");
    assert!(text.contains("event.metadata.notification_id"), "{text}");

    let spec = spec(
        "http://receiver.test/hook",
        "application/json",
        Some(
            r#"{"Id": {{ delivery.message_id }}, "Attempt": {{ delivery.attempt }},
 "Properties": {"NotificationId": {{ event.metadata.notification_id | default(event.id | string) }}},
 "Notifications": [{"Action": {{ event.data.action }}, "Details": {"OrderNumber": {{ event.data.order_number }}, "Warehouse": {{ event.data.warehouse }}}}]}"#,
        ),
    );
    let ev = event(
        "purchase",
        "RP-101",
        json!({"action": "PurchasePartiallyDelivered", "order_number": "RP-101", "warehouse": "Green \"Main\" Warehouse"}),
    );
    let rendered = render_with(&spec, &ev, &Map::new()).unwrap();
    let v: Value = serde_json::from_slice(&rendered.body).unwrap();
    assert_eq!(
        v,
        json!({"Id": "msg_test_7", "Attempt": 2, "Properties": {"NotificationId": "42"},
               "Notifications": [{"Action": "PurchasePartiallyDelivered",
                                  "Details": {"OrderNumber": "RP-101", "Warehouse": "Green \"Main\" Warehouse"}}]})
    );
}

#[test]
fn shopctrl_entity_data_body() {
    let body = body_of(
        "application/json",
        r#"{"event": {{ event.type }}, "entityData": {
  "ParcelId": {{ event.data.parcel_id }}, "TrackingCode": {{ event.data.tracking }},
  "OrderShipmentId": {{ event.data.id }}, "OrderShipmentCode": {{ event.data.code }},
  "OrderId": {{ related.order.id }}, "OrderCode": {{ related.order.code }}}}"#,
        json!({}),
    );
    assert!(body.is_err(), "related.order is not loaded here");

    let spec = spec(
        "http://receiver.test/hook",
        "application/json",
        Some(
            r#"{"event": {{ event.type }}, "entityData": {
  "ParcelId": {{ event.data.parcel_id }}, "TrackingCode": {{ event.data.tracking }},
  "OrderShipmentId": {{ event.data.id }}, "OrderShipmentCode": {{ event.data.code }},
  "OrderId": {{ related.order.id }}, "OrderCode": {{ related.order.code }}}}"#,
        ),
    );
    let templates = Templates::compile(&spec).unwrap();
    assert_eq!(templates.relations(), ["order"]);
    let ev = event(
        "shipment",
        "7",
        json!({"id": 7, "parcel_id": null, "tracking": "3S<&>", "code": "SH-7"}),
    );
    let mut related = Map::new();
    related.insert("order".into(), json!({"id": 5, "code": "SO-\"5\""}));
    let rendered = render_with(&spec, &ev, &related).unwrap();
    let v: Value = serde_json::from_slice(&rendered.body).unwrap();
    assert_eq!(
        v,
        json!({"event": "shipment.updated", "entityData": {"ParcelId": null, "TrackingCode": "3S<&>",
               "OrderShipmentId": 7, "OrderShipmentCode": "SH-7", "OrderId": 5, "OrderCode": "SO-\"5\""}})
    );
}

#[test]
fn default_body_is_the_documented_envelope() {
    let spec = spec("http://receiver.test/hook", "application/json", None);
    let ev = event("order", "9", json!({"code": HOSTILE}));
    let rendered = render_with(&spec, &ev, &Map::new()).unwrap();
    let v: Value = serde_json::from_slice(&rendered.body).unwrap();
    assert_eq!(
        v,
        json!({"id": "msg_test_7", "type": "order.updated", "timestamp": "2024-06-10T22:30:05.000Z",
               "entity": "order", "entity_id": "9", "data": {"code": HOSTILE}, "old": {"status": "new"}})
    );
}

#[test]
fn headers_are_templates_and_refuse_line_breaks() {
    let mut s = spec("http://receiver.test/hook", "application/json", None);
    s.headers.insert(
        "X-Shop".into(),
        "{{ event.metadata.shop }}-{{ event.data.code }}".into(),
    );
    let ev = event("order", "9", json!({"code": "a b"}));
    let rendered = render_with(&s, &ev, &Map::new()).unwrap();
    assert_eq!(
        rendered.headers,
        vec![("X-Shop".to_string(), "nl-a b".to_string())]
    );
    let ev = event("order", "9", json!({"code": "a\r\nInjected: yes"}));
    assert_eq!(
        render_with(&s, &ev, &Map::new()).unwrap_err(),
        RenderError::BadHeader {
            name: "X-Shop".into()
        }
    );
}

#[test]
fn date_filter_reads_created_at_and_common_timestamp_shapes() {
    let body = body_of(
        "text/plain",
        "{{ event.created_at | date('%Y-%m-%d') }}|{{ event.created_at | date }}|{{ event.created_at | date('%d.%m.%Y %H:%M', tz='Europe/Amsterdam') }}|{{ event.data.pg | date('%H:%M %z') }}|{{ event.data.pg | date('%H:%M', 'UTC') }}|{{ event.data.naive | date('%d/%m %H:%M') }}|{{ event.data.day | date('%A %-d %B') }}|{{ event.data.unix | date('%Y-%m-%dT%H:%M:%S') }}|{{ event.data.none | date }}|{{ event.data.pg | date(tz='+05:30', format='%H:%M') }}",
        json!({"pg": "2024-06-10 12:34:56.123456+02", "naive": "2024-06-10T12:34:56", "day": "2024-06-10",
               "unix": 1718022896, "none": null}),
    )
    .unwrap();
    assert_eq!(
        body,
        "2024-06-10|2024-06-10|11.06.2024 00:30|12:34 +0200|10:34|10/06 12:34|Monday 10 June|2024-06-10T12:34:56||16:04"
    );
}

#[test]
fn date_filter_errors_name_the_problem() {
    for (template, expected) in [
        (
            "{{ event.data.v | date('%Q') }}",
            "not a valid strftime format",
        ),
        (
            "{{ event.data.v | date }}",
            "cannot read \"soon\" as a date",
        ),
        (
            "{{ event.created_at | date('%H', tz='Mars/Base') }}",
            "unknown time zone \"Mars/Base\"",
        ),
        (
            "{{ event.data.day | date('%H:%M') }}",
            "needs a time or offset",
        ),
    ] {
        let err = body_of(
            "text/plain",
            template,
            json!({"v": "soon", "day": "2024-06-10"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains(expected), "{template}: {err}");
    }
}

#[test]
fn default_filter_covers_missing_and_null() {
    let body = body_of(
        "application/json",
        r#"[{{ event.data.missing | default("n/a") }}, {{ event.data.note | default("n/a") }}, {{ event.data.empty | default("n/a") }}, {{ event.data.empty | default("n/a", true) }}, {{ event.data.qty | default(0) }}]"#,
        json!({"note": null, "empty": "", "qty": 3}),
    )
    .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!(["n/a", "n/a", "", "n/a", 3])
    );
}

#[test]
fn escape_filters_in_plain_text_do_not_mark_json_safe() {
    // xml_escape / urlencode / escape outside their context give ordinary strings, which the JSON
    // context then quotes: the body stays valid JSON.
    let body = body_of(
        "application/json",
        r#"{"x": {{ event.data.v | xml_escape }}, "u": {{ event.data.v | urlencode }}, "e": {{ event.data.v | e }}}"#,
        json!({"v": "<a & 'b'>"}),
    )
    .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        json!({"x": "&lt;a &amp; &#39;b&#39;&gt;", "u": "%3Ca%20%26%20%27b%27%3E", "e": "&lt;a &amp; &#39;b&#39;&gt;"})
    );
}

#[test]
fn render_errors_name_the_template_field_and_line() {
    let mut s = spec(
        "http://receiver.test/{{ event.data.nope }}",
        "application/json",
        Some("{}"),
    );
    let err = render_with(&s, &event("o", "1", json!({})), &Map::new()).unwrap_err();
    match &err {
        RenderError::Template {
            field,
            line,
            message,
        } => {
            assert_eq!(field, "url");
            assert_eq!(*line, Some(1));
            assert!(message.contains("undefined value"), "{message}");
            assert!(message.contains("event.data.nope"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    s.url = "http://receiver.test/".into();
    s.headers.insert("X-A".into(), "{{ 1 / 0 }}".into());
    let err = render_with(&s, &event("o", "1", json!({})), &Map::new()).unwrap_err();
    assert_eq!(err.field(), "headers.X-A");
    s.headers.clear();
    s.body = Some("{\n  \"a\": 1,\n  \"b\": {{ event.data.lines[0].sku }}\n}".into());
    let err = render_with(&s, &event("o", "1", json!({"lines": []})), &Map::new()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("body template failed at line 3:"),
        "{err}"
    );
}

#[test]
fn compile_errors_name_every_broken_template() {
    let mut s = spec(
        "http://x/{{ id",
        "application/json",
        Some("{% for x in y %}"),
    );
    s.headers.insert("X-A".into(), "{{ }}".into());
    s.headers.insert("Bad Header".into(), "v".into());
    let errors = Templates::compile(&s).err().expect("errors");
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["url", "headers.X-A", "body", "headers.Bad Header"]);
    assert!(
        errors[0].message.contains("line 1") || errors[0].message.contains("unexpected"),
        "{errors:?}"
    );
}

#[test]
fn sandbox_stops_endless_loops() {
    let err = body_of(
        "text/plain",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        json!({}),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("stopped after {FUEL} template instructions")),
        "{err}"
    );
}

#[test]
fn sandbox_stops_runaway_recursion() {
    let err = body_of(
        "text/plain",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        json!({}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("recursion limit"), "{err}");
    let err = body_of("text/plain", "{% include 'body' %}", json!({})).unwrap_err();
    assert!(matches!(err, RenderError::Template { .. }), "{err}");
}

#[test]
fn sandbox_refuses_huge_output() {
    // A loop writing 100 MB stops at the cap instead of filling memory...
    let err = body_of(
        "text/plain",
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        json!({}),
    )
    .unwrap_err();
    assert_eq!(
        err,
        RenderError::TooLarge {
            field: "body".into()
        }
    );
    // ...and so does one value larger than the cap.
    let err = body_of(
        "text/plain",
        &format!("{{{{ 'y' * {} }}}}", MAX_OUTPUT + 1),
        json!({}),
    )
    .unwrap_err();
    assert_eq!(
        err,
        RenderError::TooLarge {
            field: "body".into()
        }
    );
    // Exactly at the cap is fine.
    let ok = body_of(
        "text/plain",
        &format!("{{{{ 'y' * {MAX_OUTPUT} }}}}"),
        json!({}),
    )
    .unwrap();
    assert_eq!(ok.len(), MAX_OUTPUT);
}

#[test]
fn sandbox_has_no_file_access() {
    for template in [
        "{% include '/etc/passwd' %}",
        "{% import '/etc/passwd' as p %}",
        "{% extends '../../etc/passwd' %}",
        "{% include 'file:///etc/hostname' %}",
    ] {
        let err = body_of("text/plain", template, json!({})).unwrap_err();
        assert!(
            err.to_string().contains("template not found")
                || err.to_string().contains("does not exist"),
            "{template}: {err}"
        );
    }
}

#[test]
fn relations_used_are_found_at_compile_time() {
    let templates = |body: &str| {
        Templates::compile(&spec(
            "http://x/{{ related.customer.id }}",
            "application/json",
            Some(body),
        ))
        .unwrap()
    };
    let t = templates(
        "{{ related.order.code }} {% if related.order.lines %}{{ related.invoice['no'] }}{% endif %}",
    );
    assert_eq!(t.relations(), ["customer", "invoice", "order"]);
    assert!(!t.uses_every_relation());
    let t = templates("{% for name, r in related | items %}{{ name }}{% endfor %}");
    assert!(t.uses_every_relation());
    assert!(t.needs_related());
    let t = Templates::compile(&spec(
        "http://x/{{ id }}",
        "application/json",
        Some("{{ event.data }}"),
    ))
    .unwrap();
    assert!(!t.needs_related());
}

#[test]
fn merge_fields_list_every_path_with_an_example() {
    let ev = event(
        "shipment",
        "7",
        json!({"carrier": "dhl", "lines": [{"sku": "A", "qty": null}, {"sku": "B", "qty": 2, "extra": true}],
               "odd key": 1, "empty": {}}),
    );
    let mut related = Map::new();
    related.insert("order".into(), json!({"code": "SO-5"}));
    let fields = merge_fields(&RenderContext {
        event: &ev,
        message_id: "msg_x_1",
        delivery_id: 1,
        attempt: 1,
        webhook: "w",
        related: &related,
    });
    let get = |path: &str| {
        fields
            .iter()
            .find(|f| f.path == path)
            .map(|f| f.example.clone())
            .unwrap_or_else(|| {
                panic!(
                    "{path} missing from {:?}",
                    fields.iter().map(|f| &f.path).collect::<Vec<_>>()
                )
            })
    };
    assert_eq!(get("event.data.carrier"), "dhl");
    assert_eq!(get("event.data.lines"), "[2 items]");
    assert_eq!(get("event.data.lines[].sku"), "A");
    assert_eq!(get("event.data.lines[].qty"), 2, "first non-null example");
    assert_eq!(get("event.data.lines[].extra"), true);
    assert_eq!(get("event.data[\"odd key\"]"), 1);
    assert_eq!(get("event.data.empty"), json!({}));
    assert_eq!(get("event.old.status"), "new");
    assert_eq!(get("event.created_at"), "2024-06-10T22:30:05.000Z");
    assert_eq!(get("related.order.code"), "SO-5");
    for path in [
        "id",
        "type",
        "entity_id",
        "event.id",
        "event.type",
        "event.entity",
        "event.entity_id",
        "event.metadata.shop",
        "delivery.id",
        "delivery.attempt",
        "delivery.message_id",
        "webhook.name",
    ] {
        get(path);
    }
}

#[test]
fn url_sample_check_needs_no_real_data_but_an_absolute_url() {
    let ok = Templates::compile(&spec(
        "https://carrier.example/{{ event.data.order_no }}/{{ related.order.code }}?id={{ id }}",
        "application/json",
        None,
    ))
    .unwrap();
    assert_eq!(
        ok.check_with_sample("w").unwrap(),
        "https://carrier.example//?id=1"
    );
    let relative = Templates::compile(&spec("/hooks/{{ id }}", "application/json", None)).unwrap();
    assert!(matches!(
        relative.check_with_sample("w"),
        Err(RenderError::BadUrl { .. })
    ));
}

#[test]
fn optional_fields_can_be_guarded() {
    let body = body_of(
        "text/plain",
        "{{ '%.2f' | format(event.data.price) }}|{% if event.data.customer is defined %}x{% else %}none{% endif %}|{{ (event.data.customer or {}).email | default('-') }}|{{ event.data.qty | string }}",
        json!({"price": 19.9, "qty": 3}),
    )
    .unwrap();
    assert_eq!(body, "19.90|none|-|3");
}
