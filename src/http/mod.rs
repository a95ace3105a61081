//! Bytes and headers: body limits and adapters, header hygiene. No policy knowledge.

pub mod body;
pub mod client;
pub mod form;
pub mod h1pool;
pub mod headers;
pub mod json;
pub mod splice;
pub mod sse;
pub mod target;
