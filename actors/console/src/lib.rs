//! Serial consoles of bare-metal nodes: the [`ConsoleActor`] that owns a node's one console
//! session while its console is enabled, the sessions themselves (`ipmitool` SOL, `ferric sim`
//! serial websockets, an in-process `fake`), pid files and the start-up sweep of orphans, and the
//! conductor's console server that fans a session out to viewers.
//!
//! # Use from a conductor
//!
//! 1. At start, before any node actor runs:
//!    `let secret = cluster.console_secret().await?;`
//!    `let consoles = ConsoleService::start(ConsoleConfig { listen, secret, settings }).await?;`
//!    It sweeps what a previous run left (`consoles.swept()`), then serves. Advertise
//!    `consoles.local_addr()` as the membership record's `console_address`, and hand
//!    `consoles.context()` (an `Arc<ConsoleContext>`) to every node actor.
//! 2. A node actor whose spec has `console_enabled` (and that may command its BMC):
//!    `ConsoleTarget::from_spec(&spec)`; an error is the node's console error (no actor).
//!    Otherwise `ConsoleActor::spawn_linked(myself.get_cell(), ConsoleArgs { node, target, ctx,
//!    record: Some(RecordTo { cluster, lease, token }), notify })`. `notify` receives
//!    [`ConsoleEvent::State`] (connecting / active / reconnecting with the last error) to show
//!    in the node's status.
//! 3. Console disabled: `ConsoleActor::stop_and_wait(&actor, StopReason::Disabled, t)`.
//!    Driver or driver_info changed while enabled: stop (`Disabled` is fine; viewers reconnect)
//!    and spawn again with the new target.
//! 4. Node handed over or conductor stopping: `stop_and_wait(&actor, StopReason::OwnerChanged,
//!    t)` before releasing the reservation (the BMC payload is then free for the new owner at
//!    once). Being killed with the node actor does the same cleanup, in the background.
//! 5. At shutdown, after the node actors: `consoles.shutdown().await`.
//!
//! # Wire contract (gateway -> conductor)
//!
//! The codes, modes and control frames below are `ferric_model::console_wire`'s, shared with the
//! gateway.
//!
//! - `GET ws://<console_address>/console/{uuid}/ws?mode=rw|ro` (default `ro`), header
//!   `Authorization: Bearer <secret>`, the secret being etcd's `<prefix>config/console-secret`.
//!   Before the upgrade: 401 (missing or wrong secret; never logged), 400 (bad uuid or mode),
//!   404 (no console of this node runs here).
//! - Conductor -> viewer: binary frames are console output (raw bytes); text frames are JSON:
//!   first `{"type":"hello","node":"<uuid>","conductor":"<name>","writer":true|false,
//!   "mode":"rw|ro","state":"connecting|active|reconnecting"}`, then
//!   `{"type":"state","state":"...","error":null|"<last error>"[,"retry_in_ms":N]}` (at once, and
//!   on every change), then the replay (the last `replay_bytes` of output, binary), then live
//!   output. `{"type":"writer","writer":true}` when a waiting `rw` viewer gets the writer slot.
//! - Viewer -> conductor: binary or text frames are keystrokes, forwarded only from the writer
//!   (the first `rw` viewer; later ones wait read-only and are promoted in order). An empty
//!   frame is a keepalive. Any bytes are fine (ipmitool escapes are neutralised, see
//!   `escape.rs`). More than 64 KiB in one message: that viewer is closed with 1009.
//! - Close codes: 4001 owner changed (node moved, console restarted, conductor stopping:
//!   reconnect through the gateway), 4408 idle (no
//!   data frame for `idle_timeout`), 4410 console disabled, 4429 viewer too slow (its queue of
//!   `viewer_queue` events filled), 4503 too many viewers, 1009 message too big, 1011 internal.
//!   The close frame's reason says the same in words. A console that stops between the 404
//!   check and the upgrade closes the new viewer with that stop's code. (4404, "console not
//!   here", is reserved for the same meaning after an upgrade; the server answers 404 instead.)
//!
//! # Records
//!
//! `consoles/<uuid>` ([`ferric_model::ConsoleRecord`]) on the conductor's lease,
//! fenced by the reservation: conductor, console address, interface, pid, started/active times,
//! state, last error, a session description without secrets. Pid files:
//! `<runtime_dir>/consoles/<uuid>.pid` holding `<pid> <start time>`.
//!
//! Layout: `target` (which console a node has), `console_actor`, `runner` (reconnects),
//! `session/*` (one per interface), `escape`, `hub` (fan-out), `registry`, `server`, `pidfile`,
//! `spawner` and `sys` (forking with a parent-death signal; the crate's only `unsafe`).

pub mod console_actor;
pub mod context;
pub mod error;
pub mod escape;
pub mod hub;
pub mod pidfile;
pub mod registry;
pub mod runner;
pub mod server;
pub mod session;
pub mod spawner;
pub mod sys;
pub mod target;

pub use console_actor::{
    ConsoleActor, ConsoleArgs, ConsoleEvent, ConsoleMsg, ConsoleNotify, ConsoleStatus, StopReason,
};
pub use context::{ConsoleContext, ConsoleSettings};
pub use error::ConsoleError;
pub use hub::{Close, ConsoleHub, SessionState};
pub use pidfile::{sweep_orphans, SweepOutcome, Swept};
pub use registry::ConsoleRegistry;
pub use runner::RecordTo;
pub use server::{router, ConsoleConfig, ConsoleService};
pub use sys::die_with_parent;
pub use target::{ConsoleTarget, IpmitoolTarget, SimTarget};
