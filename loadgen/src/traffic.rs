//! Who buys what: the user kinds, their mix, and the seeded generator that turns each arrival
//! into an order. The same seed gives the same orders in the same order.

use std::fmt;
use std::str::FromStr;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::schedule::Arrival;

/// The kinds of users of a flash sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    /// Buys once with a fresh `request_id`, then polls `GET /orders/{id}` a few times.
    Buyer,
    /// Resubmits the same `request_id` after a timeout or a 5xx, with exponential backoff and
    /// jitter (the runbook's double-click / network retry).
    Retrier,
    /// Hammers far past the per-user rate limit: a burst of orders from one user.
    Abuser,
    /// Sends a malformed order (validation must answer 400).
    Invalid,
}

impl UserKind {
    pub const ALL: [UserKind; 4] = [UserKind::Buyer, UserKind::Retrier, UserKind::Abuser, UserKind::Invalid];

    pub fn name(self) -> &'static str {
        match self {
            UserKind::Buyer => "buyer",
            UserKind::Retrier => "retrier",
            UserKind::Abuser => "abuser",
            UserKind::Invalid => "invalid",
        }
    }
}

impl fmt::Display for UserKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Weights of the user kinds, e.g. `buyer=90,retrier=5,abuser=4,invalid=1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserMix {
    pub weights: Vec<(UserKind, u32)>,
}

impl Default for UserMix {
    fn default() -> Self {
        "buyer=90,retrier=5,abuser=4,invalid=1".parse().expect("the default mix parses")
    }
}

impl UserMix {
    fn total(&self) -> u32 {
        self.weights.iter().map(|(_, w)| w).sum()
    }

    /// The kind a draw in `0..total` picks.
    fn pick(&self, mut draw: u32) -> UserKind {
        for &(kind, weight) in &self.weights {
            if draw < weight {
                return kind;
            }
            draw -= weight;
        }
        self.weights.last().map(|(k, _)| *k).unwrap_or(UserKind::Buyer)
    }
}

impl fmt::Display for UserMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.weights.iter().map(|(k, w)| format!("{k}={w}")).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for UserMix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut weights: Vec<(UserKind, u32)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| format!("{part:?}: expected KIND=WEIGHT"))?;
            let kind = UserKind::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .ok_or_else(|| format!("{name:?}: unknown user kind; valid: buyer, retrier, abuser, invalid"))?;
            let weight: u32 = weight.parse().map_err(|_| format!("{part:?}: the weight must be a whole number"))?;
            if weights.iter().any(|(k, _)| *k == kind) {
                return Err(format!("{name} is given twice"));
            }
            weights.push((kind, weight));
        }
        let mix = UserMix { weights };
        if mix.total() == 0 {
            return Err("the weights add up to 0; e.g. buyer=90,retrier=5,abuser=4,invalid=1".into());
        }
        Ok(mix)
    }
}

/// What the orders look like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalogue {
    /// The hot items, drawn uniformly.
    pub items: Vec<String>,
    /// How many distinct buyers (`user-0` .. `user-N-1`).
    pub buyers: u64,
    /// How many distinct abusers.
    pub abusers: u64,
    /// Amounts are drawn from `1..=max_amount`.
    pub max_amount: u32,
}

impl Default for Catalogue {
    fn default() -> Self {
        Catalogue { items: vec!["101".into()], buyers: 100_000, abusers: 10, max_amount: 2 }
    }
}

/// One arrival as an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub index: u64,
    pub phase: usize,
    pub kind: UserKind,
    pub user_id: String,
    pub item_id: String,
    pub amount: u32,
    pub request_id: String,
    /// Seeds this order's own randomness (retry jitter).
    pub seed: u64,
}

/// Turns arrivals into orders, deterministically from a seed.
#[derive(Debug, Clone)]
pub struct Traffic {
    pub mix: UserMix,
    pub catalogue: Catalogue,
    pub seed: u64,
}

impl Traffic {
    /// The order of `arrival`: a function of the seed and the arrival's number only.
    pub fn order(&self, arrival: &Arrival) -> Order {
        let seed = self.seed ^ arrival.index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // A small fast generator per order (seeding ChaCha per request showed in profiles).
        let mut rng = SmallRng::seed_from_u64(seed);
        let kind = self.mix.pick(rng.gen_range(0..self.mix.total()));
        let user_id = match kind {
            UserKind::Abuser => format!("abuser-{}", rng.gen_range(0..self.catalogue.abusers.max(1))),
            _ => format!("user-{}", rng.gen_range(0..self.catalogue.buyers.max(1))),
        };
        let items = &self.catalogue.items;
        let item_id = if items.is_empty() { "101".to_string() } else { items[rng.gen_range(0..items.len())].clone() };
        let amount = rng.gen_range(1..=self.catalogue.max_amount.max(1));
        Order {
            index: arrival.index,
            phase: arrival.phase,
            kind,
            user_id,
            item_id,
            amount,
            request_id: format!("lg{:x}-{}", self.seed, arrival.index),
            seed: rng.gen(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn mix_parses_and_refuses_with_reasons() {
        let mix: UserMix = "buyer=90,retrier=5,abuser=4,invalid=1".parse().unwrap();
        assert_eq!(mix.to_string(), "buyer=90,retrier=5,abuser=4,invalid=1");
        for (bad, says) in [
            ("buyer", "KIND=WEIGHT"),
            ("shopper=1", "valid: buyer, retrier"),
            ("buyer=x", "whole number"),
            ("buyer=0", "add up to 0"),
            ("buyer=1,buyer=2", "twice"),
        ] {
            let err = bad.parse::<UserMix>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn same_seed_same_orders_and_the_mix_holds() {
        let traffic = Traffic { mix: UserMix::default(), catalogue: Catalogue::default(), seed: 42 };
        let arrival = |i| Arrival { index: i, phase: 0, due: Duration::ZERO };
        let a: Vec<Order> = (0..10_000).map(|i| traffic.order(&arrival(i))).collect();
        let b: Vec<Order> = (0..10_000).map(|i| traffic.order(&arrival(i))).collect();
        assert_eq!(a, b);
        let other = Traffic { seed: 43, ..traffic.clone() };
        assert_ne!(other.order(&arrival(0)).request_id, a[0].request_id);
        let buyers = a.iter().filter(|o| o.kind == UserKind::Buyer).count();
        assert!((8_800..=9_200).contains(&buyers), "{buyers} buyers of 10,000 for a weight of 90%");
        let ids: std::collections::HashSet<_> = a.iter().map(|o| &o.request_id).collect();
        assert_eq!(ids.len(), a.len(), "every order has its own request_id");
    }
}
