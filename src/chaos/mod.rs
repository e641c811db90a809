//! `ferric chaos`: a cluster of test hosts in network namespaces (a 3-member etcd cluster, three
//! conductors, two gateways, a simulated fleet and a driver host running the workload, a compute
//! stand-in and the recorders), a seeded fault schedule against it, and the invariants of
//! DESIGN.md checked after each fault and at the end from independent records only (the
//! simulated BMCs' log, etcd's revision history, what the API answered).
//!
//! Two processes: the outer one (in the host's namespace) builds the lab (`lab`), adds the
//! blackhole route for its subnet, runs the inner one inside the driver host's namespace
//! (`ip netns exec`), and removes everything when the inner one ends, fails or the outer one is
//! told to stop. The outer process never sends traffic to a lab address; every client of a lab
//! host (workload, recorders, checks) runs inside the driver namespace.
//!
//! Modules:
//! - `lab`: namespaces, bridge, addresses, link faults, processes started in a host, clean-up.
//! - `etcd3`: the 3-member etcd cluster on three lab hosts: leader, kill, stop and restart, slow disk.
//! - `history`: the recorder of etcd's revision history (every change under the prefix with the
//!   time it was seen) and of leases.
//! - `lab_selftest`: the hidden `ferric chaos-lab-selftest`, which proves `lab` and `etcd3` on
//!   this machine (tests/chaos_lab.rs).
//! - `invariants`: the checks (a) to (f) over the records, pure functions with unit tests.
//! - `workload`, `schedule`, `run`, `report`: the workload through the API, the seeded fault
//!   schedule, the inner run, and the report.

pub mod etcd3;
pub mod history;
pub mod invariants;
pub mod lab;
pub mod lab_selftest;
