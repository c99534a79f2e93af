//! The commands besides serving, each a file named after it: `check` (what a valid config
//! means), `token` (fetch one token and describe it), `demo` (the simulator with the proxy in
//! front), `client_key` (a key for a new `[[clients]]` entry) and `status` (the running
//! proxy's status, from its admin listener). `service` has a folder of its own (`src/service/`).

pub mod check;
pub mod client_key;
pub mod demo;
pub mod status;
pub mod token;
