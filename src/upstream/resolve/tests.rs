//! Unit tests of the resolver: coalescing, the cap on waiters, the cache and its expiry.
use super::*;
use futures_lite::future::{block_on, poll_once};
use std::sync::Condvar;

/// A lookup that counts calls per name, answers `10.0.0.1` (fails for names starting with
/// `fail`), and holds names starting with `stall` until [`Fake::release`].
#[derive(Default)]
struct Fake {
    calls: Mutex<HashMap<String, usize>>,
    released: (Mutex<bool>, Condvar),
}

impl Fake {
    fn resolver(max_waiting: usize, failure_ttl: Duration) -> (Arc<Fake>, Resolver) {
        let fake = Arc::new(Fake::default());
        let f = fake.clone();
        let lookup = move |host: &str, port| f.lookup(host, port);
        (fake, Resolver::new(lookup, max_waiting, failure_ttl))
    }

    fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        *self.calls.lock().unwrap().entry(host.into()).or_default() += 1;
        if host.starts_with("stall") {
            let (lock, cv) = &self.released;
            let _open = cv.wait_while(lock.lock().unwrap(), |r| !*r).unwrap();
        }
        if host.starts_with("fail") {
            return Err(io::Error::other("no such name"));
        }
        Ok(vec![SocketAddr::from(([10, 0, 0, 1], port))])
    }

    fn calls(&self, host: &str) -> usize {
        self.calls.lock().unwrap().get(host).copied().unwrap_or(0)
    }

    fn release(&self) {
        *self.released.0.lock().unwrap() = true;
        self.released.1.notify_all();
    }
}

const TTL: Duration = Duration::from_secs(60);

#[test]
fn ip_addresses_and_localhost_need_no_lookup() {
    let (fake, r) = Fake::resolver(4, FAILURE_TTL);
    for (host, first) in [
        ("10.1.2.3", "10.1.2.3:80"),
        ("::1", "[::1]:80"),
        ("localhost", "127.0.0.1:80"),
        ("LocalHost.", "127.0.0.1:80"),
    ] {
        let addrs = block_on(r.resolve(host, 80, TTL)).unwrap();
        assert_eq!(addrs[0].to_string(), first, "{host}");
        assert_eq!(fake.calls(host), 0, "{host}");
    }
}

#[test]
fn askers_share_one_lookup_and_past_the_cap_are_refused() {
    let (fake, r) = Fake::resolver(3, FAILURE_TTL);
    let mut waiting: Vec<_> = (0..3)
        .map(|_| Box::pin(r.resolve("stall.test", 80, TTL)))
        .collect();
    for w in &mut waiting {
        assert!(block_on(poll_once(w.as_mut())).is_none(), "answered early");
    }
    assert_eq!(
        block_on(r.resolve("stall.test", 80, TTL)),
        Err(Failure::Busy)
    );
    // Another name is not held by the stalled one.
    assert!(block_on(r.resolve("other.test", 80, TTL)).is_ok());
    // A waiter that leaves makes room for one more.
    waiting.pop();
    waiting.push(Box::pin(r.resolve("stall.test", 80, TTL)));
    assert!(block_on(poll_once(waiting[2].as_mut())).is_none());
    fake.release();
    for w in waiting {
        assert_eq!(block_on(w).unwrap()[0].to_string(), "10.0.0.1:80");
    }
    assert_eq!(fake.calls("stall.test"), 1, "one lookup for every asker");
}

#[test]
fn an_answer_is_reused_until_it_expires() {
    let (fake, r) = Fake::resolver(4, FAILURE_TTL);
    let ttl = Duration::from_millis(200);
    for _ in 0..5 {
        assert!(block_on(r.resolve("a.test", 80, ttl)).is_ok());
    }
    assert_eq!(fake.calls("a.test"), 1, "reused");
    // Another port is another lookup.
    assert!(block_on(r.resolve("a.test", 81, ttl)).is_ok());
    assert_eq!(fake.calls("a.test"), 2);
    // Waiting for the expiry itself, not for readiness.
    std::thread::sleep(ttl + Duration::from_millis(50));
    assert!(block_on(r.resolve("a.test", 80, ttl)).is_ok());
    assert_eq!(fake.calls("a.test"), 3, "expired: looked up again");
    // With no cache, every connection looks it up.
    assert!(block_on(r.resolve("a.test", 80, Duration::ZERO)).is_ok());
    assert_eq!(fake.calls("a.test"), 4);
}

#[test]
fn a_failure_is_remembered_briefly() {
    let (fake, r) = Fake::resolver(4, Duration::from_millis(200));
    for _ in 0..5 {
        match block_on(r.resolve("fail.test", 80, TTL)) {
            Err(Failure::Failed(why)) => assert!(why.contains("fail.test"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
    assert_eq!(fake.calls("fail.test"), 1, "remembered");
    std::thread::sleep(Duration::from_millis(250));
    assert!(block_on(r.resolve("fail.test", 80, TTL)).is_err());
    assert_eq!(
        fake.calls("fail.test"),
        2,
        "forgotten after the failure TTL"
    );
}
