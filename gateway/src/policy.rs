//! What a project-scoped caller (a Keystone token scoped to a project other than the service
//! project) may do, by Ironic's default policies (`ironic/common/policy.py`, scope enforced, new
//! defaults). Such a caller sees only the nodes whose `owner` or `lessee` is its project (any
//! other node is "not found", as in Ironic), and on those:
//!
//! | request | owner's project | lessee's project |
//! |---|---|---|
//! | read the node, its states, traits, VIFs, validate | reader | reader |
//! | history, inventory | reader | no |
//! | PATCH (field rules below), power | member | member |
//! | provision, maintenance, VIF attach/detach | member | manager |
//! | console | member | no |
//! | boot device, traits, interfaces, driver | manager | no |
//! | delete | admin | no |
//! | create or delete a port or port group; change one | manager | no |
//! | create or delete a volume connector or target | manager | manager |
//! | change a volume connector or target | member | manager |
//! | enroll, conductors, cluster events | no | no |
//!
//! PATCH by field: `owner`, `conductor_group`, `shard` and `chassis_uuid` only cluster-wide;
//! `lessee`, `driver_info`, `properties`, `instance_uuid`, `name`, `network_data`, `retired*` the
//! owner's members; `instance_info` the owner's members or the lessee's managers; every other
//! field (`extra`, `description`, ...) members of either.

use crate::auth::{Caller, Role};
use axum::http::Method;
use ferric_model::NodeSpec;

/// How the caller's project is related to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Owner,
    Lessee,
}

/// The caller's relation to the node: None for a cluster-wide caller (everything allowed here)
/// is not asked; Some(None) means the node is not the project's (it does not exist for it).
pub fn relation(project: &str, spec: &NodeSpec) -> Option<Relation> {
    if spec.owner.as_deref() == Some(project) {
        Some(Relation::Owner)
    } else if spec.lessee.as_deref() == Some(project) {
        Some(Relation::Lessee)
    } else {
        None
    }
}

/// The least role the owner's and the lessee's project need; None: not allowed to them.
type Need = (Option<Role>, Option<Role>);

const READ: Need = (Some(Role::Reader), Some(Role::Reader));
const OWNER_READ: Need = (Some(Role::Reader), None);
const MEMBER: Need = (Some(Role::Member), Some(Role::Member));
const OWNER_MEMBER_LESSEE_MANAGER: Need = (Some(Role::Member), Some(Role::Manager));
const OWNER_MEMBER: Need = (Some(Role::Member), None);
const OWNER_MANAGER: Need = (Some(Role::Manager), None);
const OWNER_ADMIN: Need = (Some(Role::Admin), None);
const NOBODY: Need = (None, None);

/// What a request on `/v1/nodes/{node}/<rest>` needs (`rest` empty for the node itself).
fn need(method: &Method, rest: &[&str]) -> Need {
    let reads = method == Method::GET || method == Method::HEAD;
    match (rest.first().copied().unwrap_or(""), reads) {
        ("history" | "inventory", true) => OWNER_READ,
        ("management", _) => OWNER_MANAGER,
        ("console", true) => OWNER_MEMBER,
        ("states", true) if rest.get(1) == Some(&"console") => OWNER_MEMBER,
        (_, true) => READ,
        ("", _) if method == Method::DELETE => OWNER_ADMIN,
        ("", _) if method == Method::PATCH => MEMBER,
        ("", _) => OWNER_ADMIN,
        ("states", false) => match rest.get(1).copied() {
            Some("power") => MEMBER,
            Some("provision") => OWNER_MEMBER_LESSEE_MANAGER,
            Some("console") => OWNER_MEMBER,
            _ => OWNER_MANAGER,
        },
        ("maintenance" | "vifs", false) => OWNER_MEMBER_LESSEE_MANAGER,
        ("console", false) => OWNER_MEMBER,
        ("traits", false) => OWNER_MANAGER,
        _ => NOBODY,
    }
}

fn allowed(need: Need, role: Role, rel: Relation) -> bool {
    let least = match rel {
        Relation::Owner => need.0,
        Relation::Lessee => need.1,
    };
    least.is_some_and(|least| role >= least)
}

fn refusal(caller: &Caller, rel: Relation, what: &str) -> String {
    let rel = match rel {
        Relation::Owner => "owner",
        Relation::Lessee => "lessee",
    };
    format!(
        "Access was denied to {what}: role {} of the node's {rel} project may not do this.",
        caller.role.as_str()
    )
}

/// A request of a project-scoped caller on one node it can see.
pub fn check_node_request(
    caller: &Caller,
    rel: Relation,
    method: &Method,
    rest: &[&str],
) -> Result<(), String> {
    if allowed(need(method, rest), caller.role, rel) {
        Ok(())
    } else {
        Err(refusal(
            caller,
            rel,
            &format!("{method} {}", rest.join("/")),
        ))
    }
}

/// What is done to a port, port group or volume record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildOp {
    Create,
    Update,
    Delete,
}

/// A project-scoped caller's write of a record (`kind`: `ports`, `portgroups`,
/// `volume-connectors`, `volume-targets`) of a node it can see, by Ironic's defaults:
/// `SYSTEM_ADMIN_OR_OWNER_ADMIN` (port and port group create and delete),
/// `SYSTEM_MEMBER_OR_OWNER_ADMIN` (their update; both also let the owner's managers),
/// `SYSTEM_MEMBER_OR_OWNER_LESSEE_ADMIN` (volume create and delete) and
/// `SYSTEM_OR_OWNER_MEMBER_AND_LESSEE_ADMIN` (volume update).
pub fn check_child_write(
    caller: &Caller,
    rel: Relation,
    kind: &str,
    op: ChildOp,
) -> Result<(), String> {
    let volume = kind.starts_with("volume");
    let need: Need = match (volume, op) {
        (false, _) => OWNER_MANAGER,
        (true, ChildOp::Update) => OWNER_MEMBER_LESSEE_MANAGER,
        (true, _) => (Some(Role::Manager), Some(Role::Manager)),
    };
    if allowed(need, caller.role, rel) {
        Ok(())
    } else {
        let what = match op {
            ChildOp::Create => "creating",
            ChildOp::Update => "changing",
            ChildOp::Delete => "deleting",
        };
        Err(refusal(caller, rel, &format!("{what} {kind} of the node")))
    }
}

/// A PATCH's fields (the first element of each operation's path, and of `from`).
pub fn check_patch_fields<'a>(
    caller: &Caller,
    rel: Relation,
    fields: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    for field in fields {
        let need: Need = match field {
            "owner" | "conductor_group" | "shard" | "chassis_uuid" => NOBODY,
            "lessee" | "driver_info" | "properties" | "instance_uuid" | "name" | "network_data"
            | "retired" | "retired_reason" => OWNER_MEMBER,
            "instance_info" => OWNER_MEMBER_LESSEE_MANAGER,
            "driver" => OWNER_MANAGER,
            f if f.ends_with("_interface") => OWNER_MANAGER,
            _ => MEMBER,
        };
        if !allowed(need, caller.role, rel) {
            return Err(refusal(caller, rel, &format!("the field {field}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role) -> Caller {
        let mut c = Caller::new("alice", role);
        c.project = Some("p1".into());
        c
    }

    #[test]
    fn child_writes_follow_ironic_defaults() {
        use ChildOp::{Create, Delete, Update};
        use Relation::{Lessee, Owner};
        let ok = |role, rel, kind, op| check_child_write(&caller(role), rel, kind, op).is_ok();
        for op in [Create, Update, Delete] {
            assert!(ok(Role::Manager, Owner, "ports", op));
            assert!(ok(Role::Admin, Owner, "portgroups", op));
            assert!(!ok(Role::Member, Owner, "ports", op));
            assert!(!ok(Role::Admin, Lessee, "ports", op));
            assert!(ok(Role::Manager, Lessee, "volume-targets", op));
            assert!(!ok(Role::Member, Lessee, "volume-connectors", op));
        }
        assert!(ok(Role::Member, Owner, "volume-targets", Update));
        assert!(!ok(Role::Member, Owner, "volume-targets", Create));
        assert!(!ok(Role::Reader, Owner, "volume-targets", Update));
    }

    #[test]
    fn relation_by_owner_then_lessee() {
        let mut spec = NodeSpec::new(ferric_model::NodeId::new_random(), "fake-hardware", 0);
        assert_eq!(relation("p1", &spec), None);
        spec.lessee = Some("p1".into());
        assert_eq!(relation("p1", &spec), Some(Relation::Lessee));
        spec.owner = Some("p1".into());
        assert_eq!(relation("p1", &spec), Some(Relation::Owner));
        assert_eq!(relation("p2", &spec), None);
    }

    #[test]
    fn requests_follow_ironic_defaults() {
        use Relation::{Lessee, Owner};
        let ok = |role, rel, m: Method, rest: &[&str]| {
            check_node_request(&caller(role), rel, &m, rest).is_ok()
        };
        assert!(ok(Role::Reader, Lessee, Method::GET, &[]));
        assert!(ok(Role::Reader, Lessee, Method::GET, &["vifs"]));
        assert!(!ok(Role::Reader, Lessee, Method::GET, &["history"]));
        assert!(ok(Role::Reader, Owner, Method::GET, &["history"]));
        assert!(!ok(Role::Reader, Owner, Method::PATCH, &[]));
        assert!(ok(Role::Member, Lessee, Method::PUT, &["states", "power"]));
        assert!(!ok(
            Role::Member,
            Lessee,
            Method::PUT,
            &["states", "provision"]
        ));
        assert!(ok(
            Role::Manager,
            Lessee,
            Method::PUT,
            &["states", "provision"]
        ));
        assert!(ok(
            Role::Member,
            Owner,
            Method::PUT,
            &["states", "provision"]
        ));
        assert!(ok(Role::Member, Owner, Method::POST, &["vifs"]));
        assert!(!ok(Role::Member, Lessee, Method::DELETE, &["vifs", "v1"]));
        assert!(!ok(
            Role::Member,
            Owner,
            Method::PUT,
            &["management", "boot_device"]
        ));
        assert!(ok(
            Role::Manager,
            Owner,
            Method::PUT,
            &["management", "boot_device"]
        ));
        assert!(!ok(
            Role::Admin,
            Lessee,
            Method::PUT,
            &["states", "console"]
        ));
        assert!(!ok(Role::Manager, Owner, Method::DELETE, &[]));
        assert!(ok(Role::Admin, Owner, Method::DELETE, &[]));
        assert!(!ok(Role::Admin, Lessee, Method::DELETE, &[]));
    }

    #[test]
    fn patch_fields_follow_ironic_defaults() {
        use Relation::{Lessee, Owner};
        let ok = |role, rel, f: &[&str]| {
            check_patch_fields(&caller(role), rel, f.iter().copied()).is_ok()
        };
        assert!(ok(Role::Member, Lessee, &["extra", "description"]));
        assert!(!ok(Role::Member, Lessee, &["extra", "driver_info"]));
        assert!(ok(Role::Member, Owner, &["driver_info", "lessee"]));
        assert!(!ok(Role::Admin, Owner, &["owner"]));
        assert!(!ok(Role::Admin, Owner, &["conductor_group"]));
        assert!(!ok(Role::Member, Lessee, &["instance_info"]));
        assert!(ok(Role::Manager, Lessee, &["instance_info"]));
        assert!(!ok(Role::Member, Owner, &["deploy_interface"]));
        assert!(ok(Role::Manager, Owner, &["deploy_interface"]));
    }
}
