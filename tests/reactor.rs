//! The worker threads' I/O driver on its own: timers, sockets, TLS over its sockets, wake-ups
//! from other threads, and the async-io fallback outside a worker thread. Real sockets on
//! 127.0.0.1:0.
// Helpers of the tests a build without every feature leaves out.
#![cfg_attr(not(full), allow(dead_code, unused_imports))]

mod common;

use std::future::poll_fn;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use kairos_gateway::net::Stream;
use kairos_gateway::reactor::{self, Listener, Timer};

/// Runs `fut` on a driver thread, failing if it takes longer than 10 s (a driver timer bounds it;
/// the watchdog thread bounds a driver that never wakes).
fn on_driver<T: Send + 'static>(fut: impl std::future::Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = reactor::block_on(fut.or(async {
            Timer::after(Duration::from_secs(10)).await;
            panic!("driver step did not finish within 10 s");
        }));
        let _ = tx.send(out);
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("driver thread hung or panicked")
}

#[test]
fn timers_fire_at_their_deadline_in_order_and_dropped_ones_never() {
    let (order, took) = on_driver(async {
        let start = Instant::now();
        // A dropped timer must not wake or break anything.
        drop(Timer::after(Duration::from_millis(5)));
        let mut first = Box::pin(Timer::after(Duration::from_millis(300)));
        let second = Timer::after(Duration::from_millis(100));
        let order = async {
            second.await;
            "100 ms first"
        }
        .or(async {
            (&mut first).await;
            "300 ms first"
        })
        .await;
        first.await;
        (order, start.elapsed())
    });
    assert_eq!(order, "100 ms first");
    assert!(took >= Duration::from_millis(300), "fired early: {took:?}");
}

#[test]
fn a_wake_from_another_thread_reaches_a_sleeping_driver() {
    let (tx, rx) = async_channel_pair();
    let sender = std::thread::spawn(move || {
        // Give the driver time to fall asleep in epoll_wait; correctness does not depend on it.
        std::thread::sleep(Duration::from_millis(50));
        tx.send_blocking(42u32).ok();
    });
    let got = on_driver(async move { rx.recv().await.ok() });
    sender.join().unwrap();
    assert_eq!(got, Some(42));
}

fn async_channel_pair() -> (smol::channel::Sender<u32>, smol::channel::Receiver<u32>) {
    smol::channel::bounded(1)
}

#[test]
fn sockets_on_the_driver_accept_connect_and_carry_a_megabyte_both_ways() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let payload: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let expected = payload.clone();
    let echoed = on_driver(async move {
        listener.set_nonblocking(true).unwrap();
        let listener = Listener::new(std::sync::Arc::new(listener)).unwrap();
        // Server side: echo everything until EOF.
        let server = async {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = Stream::accepted(tcp).unwrap();
            assert!(
                matches!(s, Stream::Driver(_)),
                "accepted socket is not on the driver"
            );
            let mut buf = vec![0u8; 4096];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    s.shutdown_write();
                    break;
                }
                s.write_all(&buf[..n]).await.unwrap();
            }
        };
        let client = async {
            let c = Stream::connect(addr).await.unwrap();
            assert!(
                matches!(c, Stream::Driver(_)),
                "connected socket is not on the driver"
            );
            // Write and read at once: 1 MiB does not fit the socket buffers.
            let (mut r, mut w) = futures_lite::io::split(c);
            let write = async {
                w.write_all(&payload).await.unwrap();
                w.close().await.unwrap();
            };
            let read = async {
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                got
            };
            futures_lite::future::zip(write, read).await.1
        };
        futures_lite::future::zip(server, client).await.1
    });
    assert_eq!(echoed.len(), expected.len());
    assert!(echoed == expected, "echoed bytes differ");
}

#[test]
fn outside_a_worker_thread_sockets_and_timers_use_the_shared_driver() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).unwrap();
        s.write_all(&b).unwrap();
    });
    let got = smol::block_on(async {
        let mut c = Stream::connect(addr).await.unwrap();
        assert!(matches!(c, Stream::Driver(_)));
        c.write_all(b"hello").await.unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).await.unwrap();
        // A timer armed from this thread fires although the shared driver's thread may be
        // asleep with no deadline (or a later one).
        let start = Instant::now();
        Timer::after(Duration::from_secs(3600))
            .or(Timer::after(Duration::from_millis(20)))
            .await;
        assert!(start.elapsed() < Duration::from_secs(5));
        b
    });
    peer.join().unwrap();
    assert_eq!(&got, b"hello");
}

/// Writes records of many sizes (up to 16 KiB, the largest) in one burst; returns the bytes.
#[cfg(all(feature = "tls-listener", feature = "tls-backend"))]
async fn burst(w: &mut Stream) -> Vec<u8> {
    let mut sent = Vec::new();
    for (i, len) in [1usize, 700, 5000, 16384, 3, 1200, 9000, 64, 16384, 2500]
        .into_iter()
        .cycle()
        .take(40)
        .enumerate()
    {
        let record: Vec<u8> = (0..len).map(|j| ((i * 31 + j) % 251) as u8).collect();
        w.write_all(&record).await.unwrap();
        sent.extend_from_slice(&record);
    }
    w.flush().await.unwrap();
    sent
}

/// Reads `n` bytes in small reads, each only once `poll_readable` says a read may find bytes
/// (as an idle relay leg does): a wait for an edge that will not come hangs here.
#[cfg(all(feature = "tls-listener", feature = "tls-backend"))]
async fn read_when_readable(r: &mut Stream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 700];
    while got.len() < n {
        poll_fn(|cx| r.poll_readable(cx)).await.unwrap();
        let k = r.read(&mut buf).await.unwrap();
        assert!(k > 0, "end of stream after {} of {n} bytes", got.len());
        got.extend_from_slice(&buf[..k]);
    }
    got
}

#[test]
#[cfg(all(feature = "tls-listener", feature = "tls-backend"))]
fn tls_on_the_driver_waits_for_readability_without_missing_what_a_read_left_behind() {
    let pki = common::pki();
    let acceptor = pki.acceptor();
    let client = common::tls::default_client(&pki.ca_pem);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    on_driver(async move {
        listener.set_nonblocking(true).unwrap();
        let listener = Listener::new(std::sync::Arc::new(listener)).unwrap();
        let accept = async {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = acceptor.accept(Stream::accepted(tcp).unwrap()).await;
            Stream::TlsServer(Box::new(tls.unwrap()))
        };
        let connect = async {
            let tcp = Stream::connect(addr).await.unwrap();
            let name = futures_rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = futures_rustls::TlsConnector::from(client)
                .connect(name, tcp)
                .await;
            Stream::TlsClient(Box::new(tls.unwrap()))
        };
        let (mut server, mut client) = futures_lite::future::zip(accept, connect).await;
        for tls in [&server, &client] {
            let inner = match tls {
                Stream::TlsServer(s) => s.get_ref().0,
                Stream::TlsClient(s) => s.get_ref().0,
                _ => panic!("not a TLS stream"),
            };
            assert!(matches!(inner, Stream::Driver(_)), "TLS not on the driver");
        }
        // Each way: the whole burst is sent (it sits in socket buffers, and in TLS records
        // larger than one read) before the reader begins.
        let sent = burst(&mut client).await;
        let got = read_when_readable(&mut server, sent.len()).await;
        assert!(
            got == sent,
            "the server read other bytes than the client sent"
        );
        let sent = burst(&mut server).await;
        let got = read_when_readable(&mut client, sent.len()).await;
        assert!(
            got == sent,
            "the client read other bytes than the server sent"
        );
    });
}
