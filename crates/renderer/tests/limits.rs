//! Hostile template sources: whatever a webhook's author writes, compiling and rendering it ends in
//! a result or an error, never in a stack overflow that aborts the relay.

use chrono::Utc;
use outbox_core::{Event, WebhookSpec};
use outbox_renderer::{MAX_OUTPUT, RenderContext, RenderError, Rendered, Templates};
use serde_json::{Map, Value, json};

fn spec(url: &str, content_type: &str, body: Option<&str>) -> WebhookSpec {
    let mut spec: WebhookSpec =
        toml::from_str("name = \"w\"\nevents = [\"*\"]\nurl = \"http://x\"").expect("spec");
    spec.url = url.into();
    spec.content_type = content_type.into();
    spec.body = body.map(str::to_string);
    spec
}

fn event(data: Value, metadata: Value) -> Event {
    Event {
        id: 1,
        event_type: "order.created".into(),
        entity: "order".into(),
        entity_id: "7".into(),
        data,
        old: None,
        metadata,
        created_at: Utc::now(),
    }
}

fn render(templates: &Templates, event: &Event) -> Result<Rendered, RenderError> {
    templates.render(&RenderContext {
        event,
        message_id: "msg_1",
        delivery_id: 1,
        attempt: 1,
        webhook: "w",
        related: &Map::new(),
    })
}

/// Runs `f` on a thread with a small stack, as a stand-in for any thread the relay might use.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .expect("thread")
        .join()
        .expect("no panic")
}

#[test]
fn long_chains_are_refused_when_compiled_instead_of_overflowing_the_stack() {
    let chains = [
        format!("{{{{ 1{} }}}}", " + 1".repeat(10_000)),
        format!("{{{{ event{} }}}}", ".data".repeat(10_000)),
        format!("{{{{ 'a'{} }}}}", " ~ 'a'".repeat(10_000)),
        format!("{{{{ {}1 }}}}", "not ".repeat(10_000)),
        format!("{{{{ 1{} }}}}", "|string".repeat(10_000)),
        format!("{{{{ {}1 }}}}", "- ".repeat(10_000)),
        format!(
            "{{% if false %}}{}{{% endif %}}",
            "{% elif false %}".repeat(10_000)
        ),
    ];
    for (i, body) in chains.into_iter().enumerate() {
        let errors = on_small_stack(move || {
            match Templates::compile(&spec("http://x/", "text/plain", Some(&body))) {
                Ok(_) => Vec::new(),
                Err(errors) => errors,
            }
        });
        assert_eq!(errors.len(), 1, "chain {i}: {errors:?}");
        assert_eq!(errors[0].field, "body", "chain {i}");
        assert!(
            errors[0].message.contains("the limit is"),
            "chain {i}: {}",
            errors[0].message
        );
    }
    // The same in a URL and a header.
    let mut s = spec("http://x/{{ 1 + 1 + 1 }}", "text/plain", None);
    s.url = format!("http://x/{{{{ 1{} }}}}", " + 1".repeat(10_000));
    s.headers
        .insert("X-A".into(), format!("{{{{ a{} }}}}", ".b".repeat(10_000)));
    let errors = on_small_stack(move || Templates::compile(&s).err().unwrap_or_default());
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["url", "headers.X-A"], "{errors:?}");
}

#[test]
fn the_worst_templates_the_limits_accept_compile_and_render_on_a_small_stack() {
    // As long a chain as a tag may hold, the most elifs, and a value nested as deep as the
    // brackets a template may have allow, on top of event data nested as deep as JSON may be.
    let chain = format!("{{{{ 1{} }}}}", " + 1".repeat(120));
    let elifs = format!(
        "{{% if false %}}{}{{% else %}}e{{% endif %}}",
        "{% elif false %}".repeat(250)
    );
    let nest = format!("{{% set x = {}x{} %}}", "[".repeat(31), "]".repeat(31));
    let body = format!(
        "{chain}{elifs}{{% set x = event.data %}}{}{{{{ x }}}}{{{{ x | tojson }}}}{{{{ x == x }}}}",
        nest.repeat(60)
    );
    let mut deep = String::new();
    for _ in 0..127 {
        deep.push_str("{\"a\":");
    }
    deep.push('1');
    deep.push_str(&"}".repeat(127));
    let data: Value = serde_json::from_str(&deep).expect("127 levels parse");

    let rendered = on_small_stack(move || {
        let templates = Templates::compile(&spec("http://x/", "text/plain", Some(&body)))
            .expect("within the limits");
        let rendered = render(&templates, &event(data, json!({})));
        drop(templates);
        rendered
    })
    .expect("renders");
    let body = String::from_utf8(rendered.body).unwrap();
    assert!(body.starts_with("121e"), "{}", &body[..40]);
    assert!(
        body.to_lowercase().ends_with("true"),
        "{}",
        &body[body.len() - 40..]
    );
    assert_eq!(
        body.matches('[').count(),
        2 * 60 * 31,
        "printed and as JSON"
    );
}

#[test]
fn namespace_is_refused_because_it_can_build_a_value_that_contains_itself() {
    for body in [
        "{% set ns = namespace() %}{% set ns.x = ns %}{{ ns }}",
        "{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}",
    ] {
        let errors = Templates::compile(&spec("http://x/", "text/plain", Some(body)))
            .err()
            .expect("refused");
        assert_eq!(errors[0].field, "body");
        assert!(
            errors[0].message.contains("namespace() is not available"),
            "{errors:?}"
        );
    }
}

#[test]
fn literal_fields_are_held_to_the_output_cap() {
    let big = "x".repeat(MAX_OUTPUT + 1);
    let errors = Templates::compile(&spec("http://x/", "text/plain", Some(&big)))
        .err()
        .expect("a literal body over 1 MiB is refused");
    assert_eq!(errors[0].field, "body");
    assert!(
        errors[0].message.contains("at most 1048576 bytes (1 MiB)"),
        "{errors:?}"
    );
    let mut with_header = spec("http://x/", "text/plain", None);
    with_header.headers.insert("X-Big".into(), big.clone());
    let errors = Templates::compile(&with_header).err().expect("refused");
    assert_eq!(errors[0].field, "headers.X-Big");

    // Exactly the cap is fine, and sent as it is.
    let most = "x".repeat(MAX_OUTPUT);
    let templates = Templates::compile(&spec("http://x/", "text/plain", Some(&most))).unwrap();
    let rendered = render(&templates, &event(json!({}), json!({}))).unwrap();
    assert_eq!(rendered.body.len(), MAX_OUTPUT);
}

#[test]
fn a_url_whose_scheme_and_host_come_from_the_event_passes_the_sample_check() {
    // The example of docs/templates.md.
    let s = spec(
        "{{ event.metadata.callback | safe }}/orders",
        "application/json",
        None,
    );
    let templates = Templates::compile(&s).expect("compiles");
    templates
        .check_with_sample("w")
        .expect("the absolute part comes from the event");
    let rendered = render(
        &templates,
        &event(json!({}), json!({"callback": "https://cb.example/shop"})),
    )
    .unwrap();
    assert_eq!(rendered.url, "https://cb.example/shop/orders");
    // Checked on every render instead.
    let err = render(
        &templates,
        &event(json!({}), json!({"callback": "ftp://cb.example"})),
    )
    .unwrap_err();
    assert!(matches!(err, RenderError::BadUrl { .. }), "{err:?}");

    // A URL that starts with literal text is still checked on the sample.
    let templates =
        Templates::compile(&spec("/orders/{{ id }}", "application/json", None)).unwrap();
    assert!(matches!(
        templates.check_with_sample("w"),
        Err(RenderError::BadUrl { .. })
    ));
}
