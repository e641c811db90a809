//! Free loopback ports (TCP and UDP) and unique key prefixes, unique across the test binaries
//! that cargo runs in parallel.
//!
//! A port is claimed by a file named after it in a shared directory, holding the claimer's pid;
//! a claim whose process is gone is stale and taken over. Within one process a set of handed
//! out ports keeps two tests apart even before the claim file exists.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A random-enough 64-bit value without a `rand` dependency: std's `RandomState` is seeded from
/// the OS once per process, and the counter makes every call differ.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// An etcd key prefix no other test (in this or another run) uses.
pub fn unique_prefix(test: &str) -> String {
    format!("/ferric-test/{test}-{:016x}/", random_u64())
}

/// Ports handed out in this process.
static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The kernel's ephemeral port range (`ip_local_port_range`).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

fn claims_dir() -> PathBuf {
    std::env::temp_dir().join("ferric-testkit-ports")
}

/// Claims `port` for this process across test binaries; false if a live process holds it.
fn claim(port: u16) -> bool {
    let dir = claims_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(port.to_string());
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                let _ = write!(f, "{}", std::process::id());
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                match holder {
                    // A claim being written, or one of a live process: not ours.
                    None => return false,
                    Some(pid) if std::path::Path::new(&format!("/proc/{pid}")).exists() => {
                        return false
                    }
                    // Stale: its process is gone. Remove and race for it once more.
                    Some(_) => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            // No shared directory (read-only tmp): the in-process set and the bind check remain.
            Err(_) => return true,
        }
    }
    false
}

#[derive(Clone, Copy)]
enum Proto {
    Tcp,
    Udp,
}

fn bindable(proto: Proto, port: u16) -> bool {
    match proto {
        Proto::Tcp => TcpListener::bind(("127.0.0.1", port)).is_ok(),
        Proto::Udp => UdpSocket::bind(("127.0.0.1", port)).is_ok(),
    }
}

fn pick(proto: Proto) -> u16 {
    let mut guard = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let taken = guard.get_or_insert_with(HashSet::new);
    let (low, _) = ephemeral_range();
    for _ in 0..1000 {
        let port = if low > 12_000 {
            10_000 + (random_u64() % u64::from(low - 10_000)) as u16
        } else {
            let bound = match proto {
                Proto::Tcp => TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()),
                Proto::Udp => UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()),
            };
            match bound {
                Ok(addr) => addr.port(),
                Err(_) => continue,
            }
        };
        if port == 2379 || port == 2380 || taken.contains(&port) {
            continue;
        }
        if bindable(proto, port) && claim(port) {
            taken.insert(port);
            return port;
        }
    }
    panic!("found no free loopback port in 1000 tries");
}

/// A free loopback TCP port, never 2379/2380.
///
/// Ports are taken from *below* the kernel's ephemeral range when there is room: the etcd of a
/// test is stopped and restarted on the same port, and while it is down a conductor's outgoing
/// connection could otherwise be given that very port as its local port (a TCP self-connect), or
/// hold it so that etcd cannot bind it again. The port is checked free by binding it. Where the
/// ephemeral range leaves no room, the kernel picks one (bind to port 0).
pub fn free_port() -> u16 {
    pick(Proto::Tcp)
}

/// A free loopback UDP port (for a simulated BMC), chosen like [`free_port`].
pub fn free_udp_port() -> u16 {
    pick(Proto::Udp)
}
