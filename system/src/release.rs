//! Which release a service runs: `FLASHSALE_RELEASE` (unset by default), set by whoever deploys
//! it. Shown on `/metrics` as `flashsale_build_info{version, release}` and stamped on every
//! outcome a processor publishes ([`crate::order::Outcome::release`]), so that after a bad
//! release the orders it decided can be named, as deployments label their builds.

use std::sync::OnceLock;

/// `FLASHSALE_RELEASE`, read once; `None` when unset or empty.
pub fn name() -> Option<&'static str> {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    NAME.get_or_init(|| std::env::var("FLASHSALE_RELEASE").ok().filter(|s| !s.trim().is_empty())).as_deref()
}

/// Registers `flashsale_build_info{version, release}` (always 1) on `registry`.
pub fn register(registry: &prometheus::Registry) {
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "flashsale_build_info",
            "The build this process runs: crate version and FLASHSALE_RELEASE",
        ),
        &["version", "release"],
    )
    .expect("valid metric");
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), name().unwrap_or("")]).set(1);
    // A fresh registry: registering it once cannot collide.
    let _ = registry.register(Box::new(info));
}
