//! The one long-lived thread that forks every console child.
//!
//! The parent-death signal (`sys::die_with_parent`) is tied to the thread that forked, not to
//! the process: a child forked from a tokio blocking-pool thread (or from a runtime worker that
//! `block_in_place` later retired) would be signalled as soon as that thread idled out, killing
//! a healthy console. This thread is started on first use and never exits, so the signal fires
//! only when the whole conductor process dies.

use std::io;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

fn spawner() -> io::Result<mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("ferric-console-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the console spawner thread");
        }
        Mutex::new(tx)
    });
    Ok(tx.lock().unwrap_or_else(|p| p.into_inner()).clone())
}

/// Spawns `cmd` from the spawner thread, registered with the caller's tokio runtime.
pub async fn spawn(mut cmd: tokio::process::Command) -> io::Result<tokio::process::Child> {
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawner()?
        .send(Box::new(move || {
            let _runtime = handle.enter();
            let _ = tx.send(cmd.spawn());
        }))
        .map_err(|_| io::Error::other("the console spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("the console spawner thread dropped a request"))?
}
