//! Where an order is validated: `POST /buy`'s body, field by field, per the runbook.
//!
//! - `user_id`, `item_id`: `[A-Za-z0-9_-]{1,100}`
//! - `amount`: an integer in `1..=1000`
//! - `request_id`: 1 to 200 characters, not only spaces, no control characters
//!
//! Every problem is reported, not only the first, so a client can fix its request in one go.

use serde::Serialize;
use serde_json::Value;

pub const ID_MAX_LEN: usize = 100;
pub const AMOUNT_MIN: i64 = 1;
pub const AMOUNT_MAX: i64 = 1000;
pub const REQUEST_ID_MAX_CHARS: usize = 200;

/// A valid order request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderRequest {
    pub user_id: String,
    pub item_id: String,
    pub amount: u32,
    pub request_id: String,
}

/// One field's problem, as the 400 body reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

fn field_error(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError { field, message: message.into() }
}

/// Checks a parsed JSON body.
pub fn validate(body: &Value) -> Result<OrderRequest, Vec<FieldError>> {
    let Some(object) = body.as_object() else {
        return Err(vec![field_error("body", "expected a JSON object")]);
    };
    let mut errors = Vec::new();
    let user_id = id_field(object.get("user_id"), "user_id", &mut errors);
    let item_id = id_field(object.get("item_id"), "item_id", &mut errors);
    let amount = amount_field(object.get("amount"), &mut errors);
    let request_id = request_id_field(object.get("request_id"), &mut errors);
    match (user_id, item_id, amount, request_id) {
        (Some(user_id), Some(item_id), Some(amount), Some(request_id)) if errors.is_empty() => {
            Ok(OrderRequest { user_id, item_id, amount, request_id })
        }
        _ => Err(errors),
    }
}

/// Whether `s` is a valid `user_id` or `item_id`.
pub fn is_valid_id(s: &str) -> bool {
    (1..=ID_MAX_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn id_field(value: Option<&Value>, field: &'static str, errors: &mut Vec<FieldError>) -> Option<String> {
    match value {
        None | Some(Value::Null) => errors.push(field_error(field, "is required")),
        Some(Value::String(s)) if is_valid_id(s) => return Some(s.clone()),
        Some(Value::String(_)) => errors
            .push(field_error(field, format!("must be 1 to {ID_MAX_LEN} characters of A-Z, a-z, 0-9, '_' or '-'"))),
        Some(_) => errors.push(field_error(field, "must be a string")),
    }
    None
}

fn amount_field(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<u32> {
    let range = format!("must be an integer from {AMOUNT_MIN} to {AMOUNT_MAX}");
    match value {
        None | Some(Value::Null) => errors.push(field_error("amount", "is required")),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(a) if (AMOUNT_MIN..=AMOUNT_MAX).contains(&a) => return Some(a as u32),
            _ => errors.push(field_error("amount", range)),
        },
        Some(_) => errors.push(field_error("amount", range)),
    }
    None
}

fn request_id_field(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<String> {
    match value {
        None | Some(Value::Null) => errors.push(field_error("request_id", "is required")),
        Some(Value::String(s)) => {
            let chars = s.chars().count();
            if s.trim().is_empty() && chars > 0 {
                errors.push(field_error("request_id", "must not be blank"));
            } else if chars == 0 || chars > REQUEST_ID_MAX_CHARS {
                errors.push(field_error("request_id", format!("must be 1 to {REQUEST_ID_MAX_CHARS} characters")));
            } else if s.chars().any(char::is_control) {
                errors.push(field_error("request_id", "must not contain control characters"));
            } else {
                return Some(s.clone());
            }
        }
        Some(_) => errors.push(field_error("request_id", "must be a string")),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn fields(body: Value) -> Vec<&'static str> {
        validate(&body).expect_err("invalid").into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_good_order_passes() {
        let order = validate(&json!({"user_id":"u-1","item_id":"101","amount":2,"request_id":"r 1"})).expect("valid");
        assert_eq!(order.amount, 2);
        assert_eq!(order.request_id, "r 1");
    }

    #[test]
    fn each_field_is_checked_and_all_errors_reported() {
        assert_eq!(fields(json!({})), ["user_id", "item_id", "amount", "request_id"]);
        assert_eq!(fields(json!([])), ["body"]);
        let base = json!({"user_id":"u","item_id":"i","amount":1,"request_id":"r"});
        for (field, bad) in [
            ("user_id", json!("")),
            ("user_id", json!("a b")),
            ("user_id", json!("x".repeat(101))),
            ("user_id", json!(7)),
            ("item_id", json!("é")),
            ("amount", json!(0)),
            ("amount", json!(1001)),
            ("amount", json!(-1)),
            ("amount", json!(1.5)),
            ("amount", json!("5")),
            ("amount", json!(u64::MAX)),
            ("request_id", json!("")),
            ("request_id", json!("r".repeat(201))),
            ("request_id", json!("a\nb")),
            ("request_id", json!(true)),
        ] {
            let mut body = base.clone();
            body[field] = bad.clone();
            assert_eq!(fields(body), [field], "{field}={bad}");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let ok = json!({"user_id":"u".repeat(100),"item_id":"i","amount":1000,"request_id":"é".repeat(200)});
        assert!(validate(&ok).is_ok());
    }

    proptest! {
        #[test]
        fn ids_accepted_exactly_when_they_match_the_pattern(s in "\\PC{0,120}") {
            let expected = !s.is_empty() && s.len() <= 100
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            prop_assert_eq!(is_valid_id(&s), expected);
        }
    }
}
