//! Property: no request body or header makes the gateway answer 5xx, panic, or answer without a
//! JSON body — on the real Redis and broker.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        (0i64..1200).prop_map(|n| json!(n)),
        "\\PC{0,40}".prop_map(Value::String),
        "[A-Za-z0-9_-]{1,110}".prop_map(Value::String),
        ".{0,250}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,12}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Order-shaped objects: each field present or not, well- or ill-typed.
fn order_like() -> impl Strategy<Value = Value> {
    let field = || prop::option::of(json_value());
    (field(), field(), field(), field(), prop::collection::btree_map("\\PC{0,8}", json_leaf(), 0..3)).prop_map(
        |(user, item, amount, request_id, extra)| {
            let mut object: Map<String, Value> = extra.into_iter().collect();
            for (name, value) in [("user_id", user), ("item_id", item), ("amount", amount), ("request_id", request_id)]
            {
                if let Some(v) = value {
                    object.insert(name.into(), v);
                }
            }
            Value::Object(object)
        },
    )
}

#[derive(Debug, Clone)]
struct Request {
    body: Vec<u8>,
    content_type: Option<String>,
    correlation_id: Option<String>,
}

fn request() -> impl Strategy<Value = Request> {
    let body = prop_oneof![
        4 => order_like().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        2 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        2 => prop::collection::vec(any::<u8>(), 0..512),
        1 => (16_000usize..17_500).prop_map(|n| vec![b'{'; n]),
    ];
    let content_type = prop::option::of(prop_oneof![
        6 => Just("application/json".to_string()),
        1 => Just("application/json; charset=utf-8".to_string()),
        1 => Just("text/plain".to_string()),
        1 => "[ -~]{0,40}",
    ]);
    (body, content_type, prop::option::of("[ -~]{0,120}")).prop_map(|(body, content_type, correlation_id)| Request {
        body,
        content_type,
        correlation_id,
    })
}

#[test]
fn no_input_yields_a_5xx_or_a_non_json_answer() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bed = runtime.block_on(testbed(&[]));
    let base = bed.gateway_url(0);
    let http = client();
    let mut runner = TestRunner::new(Config { cases: 300, failure_persistence: None, ..Config::default() });
    let result = runner.run(&request(), |req| {
        let (status, body) = runtime.block_on(async {
            let mut builder = http.post(format!("{base}/buy")).body(req.body.clone());
            if let Some(ct) = &req.content_type {
                builder = builder.header("content-type", ct.as_str());
            }
            if let Some(cid) = &req.correlation_id {
                builder = builder.header("x-correlation-id", cid.as_str());
            }
            let response = builder.send().await.expect("the gateway answers every request");
            let status = response.status().as_u16();
            (status, response.bytes().await.expect("body"))
        });
        prop_assert!([202, 400, 409, 413, 415].contains(&status), "status {} for {:?}", status, req);
        let parsed: Result<Value, _> = serde_json::from_slice(&body);
        prop_assert!(parsed.is_ok(), "non-JSON answer {:?}", String::from_utf8_lossy(&body));
        Ok(())
    });
    // The gateway is still alive and well after all of that.
    let alive = runtime.block_on(get_json(&http, &format!("{base}/health")));
    runtime.block_on(bed.stop()).unwrap();
    result.unwrap();
    assert_eq!(alive.0, 200, "{}", alive.1);
}

#[test]
fn order_status_lookups_never_fail_for_any_id() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bed = runtime.block_on(testbed(&[]));
    let base = bed.gateway_url(0);
    let http = client();
    let mut runner = TestRunner::new(Config { cases: 100, failure_persistence: None, ..Config::default() });
    let result = runner.run(&"\\PC{1,260}", |id| {
        let encoded: String = id.bytes().map(|b| format!("%{b:02X}")).collect();
        let status = runtime.block_on(async {
            http.get(format!("{base}/orders/{encoded}")).send().await.expect("answer").status().as_u16()
        });
        prop_assert!([400, 404].contains(&status), "status {} for {:?}", status, id);
        Ok(())
    });
    runtime.block_on(bed.stop()).unwrap();
    result.unwrap();
}
