//! flashlab's command line and, as they arrive, its drills.
//!
//! - [`up`]: `flashlab up` — the flash-sale system on loopback until Ctrl-C.

pub mod up;
