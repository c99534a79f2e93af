//! The commands besides serving, each a file named after it: `check` (what a valid config
//! means), `token` (fetch one token and describe it) and `demo` (the simulator with the proxy in
//! front). `service` has a folder of its own (`src/service/`).

pub mod check;
pub mod demo;
pub mod token;
