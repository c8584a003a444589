//! The `limits` block: what a peer can make the gateway do.

use std::time::Duration;

use super::fields::{Fields, Object};
use super::{ms, off_or_ms, DAY_MS};

/// Limits that bound what a peer can make the gateway do; each default is the reason it exists.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `handshake_timeout_ms` (10000): time from accept to a complete request head. Stops
    /// slowloris clients from holding sockets.
    pub handshake_timeout: Duration,
    /// `backend_connect_timeout_ms` (10000): TCP connect + TLS + WebSocket handshake with the
    /// backend. Past it the client gets 504.
    pub backend_connect_timeout: Duration,
    /// `max_message_bytes` (16 MiB): largest message (the sum of its frames' payloads), either direction.
    pub max_message_bytes: usize,
    /// `max_frame_bytes` (16 MiB): largest single frame payload, either direction.
    pub max_frame_bytes: usize,
    /// `max_request_head_bytes` (8192): largest HTTP request head (request line + headers).
    pub max_request_head_bytes: usize,
    /// `idle_timeout_ms` (0 = off): a relayed connection on which no frame arrives from
    /// either side for this long is closed with 1001 on both legs. Bounds clients that vanish
    /// without a FIN.
    pub idle_timeout: Option<Duration>,
    /// `ping_interval_ms` (0 = off): the gateway pings the client this often and closes both
    /// legs with 1001 when two pings in a row go unanswered.
    pub ping_interval: Option<Duration>,
    /// `max_connections` (unlimited when absent): open connections, all routes together.
    /// Past it: 503 with `Retry-After`.
    pub max_connections: Option<usize>,
    /// `dns_cache_ms` (10000, 0 to 3600000): how long a backend name's addresses are reused
    /// before it is looked up again (a failed lookup: at most 1 s). Without it, every
    /// connection would run a blocking lookup; 10 s follows a backend that moves (a container
    /// restarted elsewhere) within one health-check interval. 0: every connection looks it up
    /// (the connections asking at the same time still share one lookup).
    pub dns_cache: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: ms(10_000),
            backend_connect_timeout: ms(10_000),
            max_message_bytes: 16 << 20,
            max_frame_bytes: 16 << 20,
            max_request_head_bytes: 8192,
            idle_timeout: None,
            ping_interval: None,
            max_connections: None,
            dns_cache: ms(10_000),
        }
    }
}

impl Object for Limits {
    fn fields(&mut self, f: &mut Fields) {
        f.int("handshake_timeout_ms", 1, DAY_MS, |n| {
            self.handshake_timeout = ms(n)
        });
        f.int("backend_connect_timeout_ms", 1, DAY_MS, |n| {
            self.backend_connect_timeout = ms(n)
        });
        f.int("max_message_bytes", 16, 1 << 30, |n| {
            self.max_message_bytes = n as usize
        });
        f.int("max_frame_bytes", 16, 1 << 30, |n| {
            self.max_frame_bytes = n as usize
        });
        f.int("max_request_head_bytes", 256, 1 << 20, |n| {
            self.max_request_head_bytes = n as usize
        });
        f.int("idle_timeout_ms", 0, DAY_MS, |n| {
            self.idle_timeout = off_or_ms(n)
        });
        f.int("ping_interval_ms", 0, DAY_MS, |n| {
            self.ping_interval = off_or_ms(n)
        });
        f.int("max_connections", 1, 100_000_000, |n| {
            self.max_connections = Some(n as usize)
        });
        f.int("dns_cache_ms", 0, 3_600_000, |n| self.dns_cache = ms(n));
    }
}
