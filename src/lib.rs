//! Kairos Gateway: a small, fast WebSocket reverse proxy.
//!
//! One module per stage of a connection's life: [`server`] (listen, accept, one task per
//! connection) -> [`handshake`] (read and bound the upgrade request, answer it) -> [`route`]
//! (path -> route) -> [`admission`] (connection limits) -> [`auth`] (JWT) -> [`upstream`]
//! (backend connect and handshake) -> [`relay`] (frames both ways until both legs are
//! closed). [`config`] turns the JSON file into an immutable `Arc<Config>`; [`error`] is the
//! one error type and its status/close-code mapping. [`echo`] is the demo and test backend.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod admin;
pub mod admission;
pub mod auth;
pub mod balance;
pub mod bucket;
pub mod clock;
pub mod config;
pub mod connections;
pub mod control;
pub mod drain;
pub mod echo;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod headers;
pub mod health;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod plural;
pub mod reactor;
pub mod relay;
pub mod route;
pub mod server;
pub mod signals;
pub mod sockets;
pub mod upgrade;
pub mod upstream;
