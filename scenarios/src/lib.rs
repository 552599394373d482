//! flashlab's command line and, as they arrive, its drills.
//!
//! - [`up`]: `flashlab up` — the flash-sale system on loopback until Ctrl-C, with a fault
//!   injector behind a control socket.
//! - [`fault_cli`]: `flashlab fault ...` — inject, list and heal faults in a running `up`.
//! - [`load_cli`]: `flashlab load ...` — flash-sale traffic against a gateway, with a history.

pub mod fault_cli;
pub mod load_cli;
pub mod scenario;
pub mod up;
