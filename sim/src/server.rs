//! The HTTP server: accepts connections on the caller's listener, serves the router over HTTP/1.1
//! and stops when the caller's shutdown future completes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{SimConfig, SimError};
use crate::fleet::SimState;

/// How long a stopping server lets requests in flight finish. Requests to unreachable systems
/// never finish by design; they are dropped (connection closed, still unanswered) after this.
const DRAIN: Duration = Duration::from_secs(2);

/// Builds the fleet from `cfg` and serves it on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    cfg: SimConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SimError> {
    let state = SimState::new(cfg)?;
    serve_state(listener, state, shutdown).await;
    Ok(())
}

/// Serves an existing fleet (the caller keeps a handle on it, e.g. to read its log).
pub async fn serve_state(
    listener: TcpListener,
    state: Arc<SimState>,
    shutdown: impl Future<Output = ()>,
) {
    if let Ok(addr) = listener.local_addr() {
        // Agents' default callback URLs point here.
        state.set_listen_addr(addr);
    }
    let app = crate::app(state.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Small answers must not wait for Nagle and delayed ACKs.
                    let _ = stream.set_nodelay(true);
                    let service = TowerToHyperService::new(app.clone());
                    let mut stop = stop_rx.clone();
                    conns.spawn(async move {
                        // Upgrades: the serial console is a websocket. An upgraded connection
                        // leaves this set; its session ends on the fleet's close.
                        let conn = http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades();
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            _ = stopped(&mut stop) => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    });
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow with every connection ever made.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    stop_tx.send_replace(true);
    let drained =
        tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::info!(
            connections = conns.len(),
            "closing connections whose requests are still unanswered"
        );
    }
    conns.shutdown().await;
    state.close();
}

/// Completes when the server stops (or is gone). Drops the watch guard before returning, so the
/// caller's future stays `Send`.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
