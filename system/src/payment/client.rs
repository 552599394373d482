//! The processor's client of the payment provider: every call bounded by `PAYMENT_TIMEOUT`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::ledger::{Charge, ChargeStatus};

/// What a charge attempt established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeAnswer {
    /// The money is taken.
    Captured,
    /// The key was cancelled earlier: this attempt can never capture.
    KeyCancelled,
    /// No clear answer — the charge may or may not have gone through. `reason` is the DLQ
    /// reason if it turns out it did not: `payment_timeout` or `payment_error`.
    Unknown { reason: &'static str, detail: String },
}

#[derive(Debug, Clone)]
pub struct PaymentClient {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

#[derive(Debug, Deserialize)]
struct StatusBody {
    status: ChargeStatus,
}

#[derive(Debug, Deserialize)]
struct LedgerBody {
    captures: Vec<Charge>,
}

impl PaymentClient {
    /// `base` like `http://127.0.0.1:8090`; `timeout` bounds each call.
    pub fn new(base: &str, timeout: Duration) -> Result<PaymentClient, reqwest::Error> {
        let http =
            reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).pool_max_idle_per_host(256).build()?;
        Ok(PaymentClient { http, base: base.trim_end_matches('/').to_string(), timeout })
    }

    /// `POST /charge`.
    pub async fn charge(&self, key: &str, user_id: &str, amount: u32) -> ChargeAnswer {
        // `bugs::PaymentFieldRenamed`: a release that renamed the field the provider reads.
        let body = if crate::bugs::active(crate::bugs::Bug::PaymentFieldRenamed) {
            json!({"request_id": key, "user_id": user_id, "price": amount})
        } else {
            json!({"request_id": key, "user_id": user_id, "amount": amount})
        };
        let request = self.http.post(format!("{}/charge", self.base)).json(&body);
        match request.send().await {
            Ok(response) => match response.status().as_u16() {
                200 => match response.json::<StatusBody>().await {
                    Ok(StatusBody { status: ChargeStatus::Captured }) => ChargeAnswer::Captured,
                    Ok(StatusBody { status: ChargeStatus::Cancelled }) => ChargeAnswer::KeyCancelled,
                    Err(e) if e.is_timeout() => {
                        ChargeAnswer::Unknown { reason: "payment_timeout", detail: e.to_string() }
                    }
                    Err(e) => ChargeAnswer::Unknown { reason: "payment_error", detail: e.to_string() },
                },
                409 => ChargeAnswer::KeyCancelled,
                status => ChargeAnswer::Unknown { reason: "payment_error", detail: format!("HTTP {status}") },
            },
            Err(e) if e.is_timeout() => ChargeAnswer::Unknown {
                reason: "payment_timeout",
                detail: format!("no answer within {:?}", self.timeout),
            },
            Err(e) => ChargeAnswer::Unknown { reason: "payment_error", detail: e.to_string() },
        }
    }

    /// `POST /charges/{key}/cancel`: after this the key never captures. Returns whether it had
    /// captured before.
    pub async fn cancel(&self, key: &str) -> Result<ChargeStatus, String> {
        let response = self
            .http
            .post(format!("{}/charges/{}/cancel", self.base, urlencode(key)))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        response.json::<StatusBody>().await.map(|b| b.status).map_err(|e| e.to_string())
    }

    /// `GET /ledger`: every capture.
    pub async fn ledger(&self) -> Result<Vec<Charge>, String> {
        let response = self.http.get(format!("{}/ledger", self.base)).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        response.json::<LedgerBody>().await.map(|b| b.captures).map_err(|e| e.to_string())
    }
}

/// Percent-encodes everything but unreserved characters (keys hold `/`).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
