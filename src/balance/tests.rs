//! Unit tests of the per-route balancing state.

use super::*;
use crate::config::CircuitBreaker;

/// Backends `ws://b{i}:80` with these weights.
pub(crate) fn slots(weights: &[u32]) -> Vec<Slot> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let id = format!("ws://b{i}:80");
            Slot {
                weight: u64::from(w),
                hash: fnv1a(id.as_bytes()),
                active: AtomicUsize::new(0),
                up: AtomicBool::new(true),
                drained: AtomicBool::new(false),
                circuit: Circuit::new(CircuitBreaker::default(), id),
            }
        })
        .collect()
}

fn balancer(strategy: Strategy, weights: &[u32]) -> Balancer {
    Balancer {
        strategy,
        health: None,
        current: Mutex::new(vec![0; weights.len()]),
        slots: slots(weights),
    }
}

#[test]
fn sticky_keys_come_from_where_the_config_says() {
    let req = Request {
        method: "GET".into(),
        target: "/ws?room=blue%20sky".into(),
        minor_version: 1,
        headers: [("X-Session", "abc"), ("Cookie", "a=1; sid=s-42 ; z=9")]
            .into_iter()
            .collect(),
    };
    let claims: Map<String, Value> =
        serde_json::from_str(r#"{"sub": "u7", "tenant": 12}"#).unwrap();
    let ip: IpAddr = "10.0.0.9".parse().unwrap();
    let key = |s: Sticky| sticky_key(&s, &req, Some("room=blue%20sky"), Some(&claims), ip);
    assert_eq!(key(Sticky::Ip), Some(vec![10, 0, 0, 9]));
    assert_eq!(
        key(Sticky::Header("x-session".into())),
        Some(b"abc".to_vec())
    );
    assert_eq!(key(Sticky::Cookie("sid".into())), Some(b"s-42".to_vec()));
    assert_eq!(key(Sticky::Cookie("nope".into())), None);
    assert_eq!(
        key(Sticky::Query("room".into())),
        Some(b"blue sky".to_vec())
    );
    assert_eq!(key(Sticky::Claim("sub".into())), Some(b"u7".to_vec()));
    assert_eq!(key(Sticky::Claim("tenant".into())), Some(b"12".to_vec()));
    assert_eq!(key(Sticky::Claim("role".into())), None);
}

#[test]
fn a_sticky_key_goes_to_its_next_backend_while_its_own_is_down() {
    let b = balancer(Strategy::RoundRobin, &[1, 1, 1, 1]);
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    let (order, _) = b.plan(ip, Some(b"session-7"));
    assert_eq!(order.len(), 4);
    b.slots[order[0]].up.store(false, Relaxed);
    let (down, _) = b.plan(ip, Some(b"session-7"));
    assert_eq!(down, order[1..], "the rest of the order is kept");
    b.slots[order[0]].up.store(true, Relaxed);
    assert_eq!(b.plan(ip, Some(b"session-7")).0, order);
}

#[test]
fn nothing_usable_gives_an_empty_plan_and_a_wait() {
    let mut b = balancer(Strategy::LeastConnections, &[1, 2]);
    b.health = Some(HealthCheck::default());
    for s in &b.slots {
        s.up.store(false, Relaxed);
    }
    let (order, wait) = b.plan("10.0.0.1".parse().unwrap(), None);
    assert!(order.is_empty());
    assert_eq!(wait, Duration::from_secs(20)); // 2 probes 10 s apart
}

#[test]
fn own_ln_matches_std_within_two_ulp_over_the_rendezvous_range() {
    let mut h = 1u64;
    for i in 0..200_000u64 {
        h = strategy::mix(h ^ i);
        let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        for x in [u, u * 1e-12, 1.0 - u * 1e-9] {
            let (ours, std) = (strategy::ln(x), x.ln());
            let ulp = f64::EPSILON * std.abs().max(f64::MIN_POSITIVE);
            assert!((ours - std).abs() <= 2.0 * ulp, "ln({x}): {ours} vs {std}");
        }
    }
    assert_eq!(strategy::ln(1.0), 0.0);
}
