//! The commands besides serving, each a file named after it: `check` (what a valid config
//! means), `token` (fetch one token and describe it), `demo` (the simulator with the proxy in
//! front) and `client_key` (a key for a new `[[clients]]` entry). `service` has a folder of its
//! own (`src/service/`).

pub mod check;
pub mod client_key;
pub mod demo;
pub mod token;
