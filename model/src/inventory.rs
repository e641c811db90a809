//! A node's inspection data (`inventory/<uuid>`): the inventory and plugin data its ramdisk
//! sent to `POST /v1/continue_inspection`, as the gateway received them, served by
//! `GET /v1/nodes/{id}/inventory`. Kept as JSON text: Ferric reads a few facts from it
//! (properties, NICs) and returns the rest as it came.

use crate::codec::Record;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryRecord {
    /// The `inventory` object, as JSON text.
    pub inventory: String,
    /// Everything else the ramdisk sent (Ironic's `plugin_data`), as JSON text.
    pub plugin_data: String,
    pub received_at_ms: u64,
    /// The gateway that received it.
    pub recorded_by: String,
}

impl Record for InventoryRecord {
    const KIND: &'static str = "inspection data";
    const VERSION: u8 = 1;
}
