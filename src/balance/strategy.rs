//! The strategies of `load_balancing_strategy`, each choosing among the backends usable now,
//! and the weighted rendezvous order used for `ip_hash`, `sticky` and failover.

use std::sync::atomic::Ordering::Relaxed;

use super::Slot;

/// nginx's smooth weighted round robin over `usable`: over `sum(weights)` picks, each backend
/// is chosen exactly `weight` times, interleaved. Unusable backends are skipped, as nginx skips
/// down peers.
pub fn round_robin(current: &mut [i64], slots: &[Slot], usable: &[usize]) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut total = 0i64;
    for &i in usable {
        let w = slots[i].weight as i64;
        current[i] += w;
        total += w;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    if let Some(b) = best {
        current[b] -= total;
    }
    best
}

/// Fewest open connections per unit of weight; ties go to the heavier, then the first.
pub fn least_connections(slots: &[Slot], usable: &[usize]) -> Option<usize> {
    let load = |i: usize| {
        (
            slots[i].active.load(Relaxed) as u128,
            slots[i].weight as u128,
        )
    };
    let mut best: Option<usize> = None;
    for &i in usable {
        let better = best.is_none_or(|b| {
            let ((a, wa), (c, wc)) = (load(i), load(b));
            a * wc < c * wa || (a * wc == c * wa && wa > wc)
        });
        if better {
            best = Some(i);
        }
    }
    best
}

/// Weighted random among `usable`.
pub fn weighted_random(slots: &[Slot], usable: &[usize]) -> Option<usize> {
    let total: u64 = usable.iter().map(|&i| slots[i].weight).sum();
    let mut r = rand::random::<u64>() % total.max(1);
    for &i in usable {
        if r < slots[i].weight {
            return Some(i);
        }
        r -= slots[i].weight;
    }
    None
}

/// All backends by decreasing weighted rendezvous score for `key`.
pub fn rendezvous(slots: &[Slot], key: u64) -> Vec<usize> {
    let score = |s: &Slot| {
        let h = mix(key ^ s.hash);
        // A uniform number in (0, 1]; the score -w / ln(u) is highest for the winner, and
        // each backend wins in proportion to its weight.
        let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        -(s.weight as f64) / ln(u)
    };
    let mut scored: Vec<(f64, usize)> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| (score(s), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

/// The natural logarithm of a positive, finite, normal `x`, within 2 ulp of libm's.
///
/// `f64::ln` is the only function of the gateway that needs libm: linking libm costs about
/// 0.5 MiB of resident memory (its pages mapped at start), so the rendezvous score computes
/// its own. x = m * 2^e with m in [sqrt(1/2), sqrt(2)); ln(m) = 2 atanh(s), s = (m-1)/(m+1),
/// |s| < 0.172, whose series converges to f64 precision in 12 terms.
pub fn ln(x: f64) -> f64 {
    const LN_2: f64 = std::f64::consts::LN_2;
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut sum = 0.0;
    for k in (0..12).rev() {
        sum = sum * s2 + 1.0 / f64::from(2 * k + 1);
    }
    e as f64 * LN_2 + 2.0 * s * sum
}

/// FNV-1a, 64 bits: fixed forever, so every gateway process hashes a key the same way.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's finalizer: spreads the bits of a combined hash.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::slots;

    #[test]
    fn smooth_round_robin_is_exact_and_interleaved() {
        let s = slots(&[5, 1, 1]);
        let mut current = vec![0; 3];
        let all = [0, 1, 2];
        let picks: Vec<usize> = (0..7)
            .filter_map(|_| round_robin(&mut current, &s, &all))
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]); // nginx's sequence for 5:1:1
    }

    #[test]
    fn strategies_only_pick_usable_backends() {
        let s = slots(&[5, 1, 1]);
        let mut current = vec![0; 3];
        for _ in 0..50 {
            assert_eq!(round_robin(&mut current, &s, &[1]), Some(1));
            assert!(matches!(weighted_random(&s, &[1, 2]), Some(1 | 2)));
        }
        assert_eq!(least_connections(&s, &[2]), Some(2));
        assert_eq!(round_robin(&mut current, &s, &[]), None);
        assert_eq!(least_connections(&s, &[]), None);
        assert_eq!(weighted_random(&s, &[]), None);
    }

    #[test]
    fn rendezvous_moves_only_the_removed_backends_keys() {
        let four = slots(&[1, 1, 1, 1]);
        let three = slots(&[1, 1, 1]);
        for key in 0..2000u64 {
            let k = mix(key);
            let before = rendezvous(&four, k)[0];
            let after = rendezvous(&three, k)[0];
            if before != 3 {
                assert_eq!(before, after, "key {key} moved without its backend going");
            }
        }
    }
}
