//! Counts in messages and log lines: `1 route`, `2 routes`, never `1 routes` or `route(s)`.
//! Imports nothing of the crate; every stage may use it.

use std::fmt;

/// `n` and `noun`, the noun in the plural unless `n` is 1: `count(1, "route")` shows
/// `1 route`, `count(0, "route")` `0 routes`. For regular nouns (an `s` is added).
pub fn count(n: usize, noun: &str) -> Count<'_> {
    Count { n, noun }
}

/// A count and its noun, shown as `1 route` or `2 routes` (see [`count`]).
#[derive(Debug, Clone, Copy)]
pub struct Count<'a> {
    n: usize,
    noun: &'a str,
}

impl fmt::Display for Count<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.n == 1 { "" } else { "s" };
        write!(f, "{} {}{s}", self.n, self.noun)
    }
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn one_is_singular_every_other_count_plural() {
        for (n, noun, want) in [
            (0, "route", "0 routes"),
            (1, "route", "1 route"),
            (2, "route", "2 routes"),
            (1, "health check", "1 health check"),
            (3, "health check", "3 health checks"),
        ] {
            assert_eq!(count(n, noun).to_string(), want);
        }
    }
}
