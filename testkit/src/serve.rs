//! In-process servers: an entry point that takes its listener and a shutdown signal (the
//! mini-redis shape), run on a free loopback port and shut down when the handle goes.

use futures::future::BoxFuture;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// A server task on a loopback port. Dropping it signals shutdown (without waiting).
pub struct Served {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Served {
    /// Binds 127.0.0.1:0 and spawns `serve(listener, shutdown)`.
    pub async fn start<Fut>(
        serve: impl FnOnce(TcpListener, BoxFuture<'static, ()>) -> Fut,
    ) -> Served
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Box::pin(async {
                let _ = stopped.await;
            }),
        ));
        Served {
            addr,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Signals shutdown; does not wait.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the server task to end, at most `limit`; panics with `what` if it does not
    /// (or if it panicked).
    pub async fn stopped(&mut self, limit: Duration, what: &str) {
        if let Some(server) = self.server.take() {
            timeout(limit, server)
                .await
                .unwrap_or_else(|_| panic!("{what}: the server did not stop within {limit:?}"))
                .expect("the server task");
        }
    }

    /// Signals shutdown and waits for the server task to end (see [`Served::stopped`]).
    pub async fn stop(&mut self, limit: Duration, what: &str) {
        self.signal_stop();
        self.stopped(limit, what).await;
    }
}
