//! The API listener served thread-per-core, the way nginx runs its workers: each worker
//! thread has its own `current_thread` runtime and its own listening socket on the same
//! address (`SO_REUSEPORT`: the kernel spreads connections over them), and a connection
//! lives on one thread from accept to close, its upstream connections too (see
//! `http::h1pool`). With tokio's work-stealing scheduler, tasks woke on the other core and
//! stole from each other's queues: on two cores under load, without policies, 13% more CPU
//! per request and 8% less throughput (benches/perf.sh; numbers in docs/BENCHMARKS.md).

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use super::conn::Conns;
use super::ConnLimits;
use crate::http::body::Body;
use crate::pipeline::ctx::ConnInfo;

/// `n` listening sockets on `addr`, all with `SO_REUSEPORT`. A plain bind first: with
/// `SO_REUSEPORT` alone, a second warden on the same port would not fail but share it.
pub(super) fn bind(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let at = std::net::TcpListener::bind(addr)?.local_addr()?;
    (0..n)
        .map(|_| {
            let socket = if at.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(at)?;
            socket.listen(1024)?.into_std()
        })
        .collect()
}

/// Serves the API on `listeners`, one worker thread each. Each worker stops accepting when
/// `conns` says stop (its receiver in the result then resolves) and ends once every
/// connection is closed, after the drain.
pub(super) fn spawn<F, Fut>(
    listeners: Vec<std::net::TcpListener>,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    conns: &Conns,
    handler: F,
) -> io::Result<Vec<oneshot::Receiver<()>>>
where
    F: Fn(ConnInfo, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let mut accepting = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stopped, rx) = oneshot::channel::<()>();
        let (tls, conns, handler) = (tls.clone(), conns.clone(), handler.clone());
        std::thread::Builder::new().name(format!("warden-worker-{i}")).spawn(move || {
            crate::http::h1pool::set_worker(i);
            rt.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => super::accept_loop(l, tls, limits, conns.clone(), handler).await,
                    Err(e) => tracing::error!(target: "warden", "API worker {i} cannot listen: {e}"),
                }
                drop(stopped);
                // This thread's connections live on its runtime: serve them until the drain
                // has closed them all.
                conns.closed().await;
            });
        })?;
        accepting.push(rx);
    }
    Ok(accepting)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn workers_share_a_port_that_nobody_else_can_take() {
        let ours = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let at = ours[0].local_addr().unwrap();
        assert_eq!(ours[1].local_addr().unwrap(), at);
        // A second warden (or anything else) on the same port fails, as without SO_REUSEPORT.
        let again = bind(at, 2).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AddrInUse, "{again}");
        // Both sockets are listening: the kernel hands connections to either.
        for _ in 0..8 {
            let _c = std::net::TcpStream::connect(at).unwrap();
        }
    }
}
